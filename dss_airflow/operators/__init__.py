"""Thin operators: resolve the config, build a spec, hand it to a backend."""
