#!/usr/bin/env bash
# Create (or refresh) the project's virtualenv in .venv with dss_airflow and its dev tools.
# Re-running is cheap: the install is skipped while pyproject.toml is unchanged.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON_BIN="${PYTHON_BIN:-python3.11}"
command -v "$PYTHON_BIN" >/dev/null 2>&1 || PYTHON_BIN=python3

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON_BIN" -m venv "$VENV"
fi
stamp="$VENV/.dss-installed"
want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade uv
  "$VENV/bin/uv" pip install -q --python "$VENV/bin/python" -e "$ROOT[dev]"
  echo "$want" > "$stamp"
fi
echo "venv ready: $VENV ($("$VENV/bin/python" -c 'import airflow; print("airflow", airflow.__version__)'))"
