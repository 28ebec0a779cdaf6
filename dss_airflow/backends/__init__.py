"""Backends turn a ContainerSpec into a run: local (venv subprocess), docker, kubernetes."""
