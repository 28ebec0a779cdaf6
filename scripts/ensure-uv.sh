#!/usr/bin/env bash
# The project's virtualenv (.venv) with the uv version uv.lock pins, pip-installed when missing or different
# (uv is a dependency too, so `uv sync` keeps it at that version). Used by bootstrap.sh and lock.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON_BIN="${PYTHON_BIN:-python3.11}"
command -v "$PYTHON_BIN" >/dev/null 2>&1 || PYTHON_BIN=python3

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON_BIN" -m venv "$VENV"
fi
# uv.lock lists each package as `name = "..."` followed by `version = "..."`; no lock yet: the newest uv.
locked="$(grep -s -A1 -x 'name = "uv"' "$ROOT/uv.lock" | sed -n 's/^version = "\(.*\)"$/\1/p' || true)"
have="$("$VENV/bin/uv" --version 2>/dev/null | cut -d' ' -f2 || true)"
if [ -z "$have" ] || { [ -n "$locked" ] && [ "$have" != "$locked" ]; }; then
  "$VENV/bin/python" -m pip install -q "uv${locked:+==$locked}"
fi
