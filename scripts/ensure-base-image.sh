#!/usr/bin/env bash
# Make sure a Docker engine runs and the air-gapped Debian base image exists (built once, then cached by content).
# Usage: scripts/ensure-base-image.sh [TAG]   (PYTHON=/path/to/python overrides the interpreter)
# Prints the base image id on stdout.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TAG="${1:-dss-airflow-base:bookworm-py311}"

if [ -z "${PYTHON:-}" ]; then
    if [ -x "$REPO_ROOT/.venv/bin/python" ]; then
        PYTHON="$REPO_ROOT/.venv/bin/python"
    else
        PYTHON="$(command -v python3 || true)"
    fi
fi
if [ -z "$PYTHON" ]; then
    echo "ensure-base-image: no Python found: create $REPO_ROOT/.venv, install python3, or set PYTHON=" >&2
    exit 1
fi

"$REPO_ROOT/scripts/ensure-docker.sh" >&2
cd "$REPO_ROOT"
# The repo root on sys.path lets this work from a checkout that is not pip-installed.
PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}" exec "$PYTHON" -m dss_airflow.images.bootstrap --tag "$TAG"
