"""Sensors: wait for code-env definitions (package lists, resources, base images) to change."""
