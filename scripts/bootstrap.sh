#!/usr/bin/env bash
# Create (or refresh) the project's virtualenv in .venv with exactly the versions uv.lock pins: dss_airflow
# (editable) with its dev extra, nothing else. Re-running is cheap: the install is skipped while
# pyproject.toml and uv.lock are unchanged. A pyproject.toml whose dependencies changed without a refreshed
# lock (scripts/lock.sh) fails here, so CI cannot test versions other than the committed ones.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
export UV_PROJECT_ENVIRONMENT="$VENV"

"$ROOT/scripts/ensure-uv.sh"
if ! "$VENV/bin/uv" lock --check --offline --quiet --project "$ROOT"; then
  echo "bootstrap: uv.lock does not match pyproject.toml: run scripts/lock.sh and commit uv.lock with it" >&2
  exit 1
fi
stamp="$VENV/.dss-installed"
# Bytecode is compiled whatever $PYTHONDONTWRITEBYTECODE says (some CI images and sandboxes set it): without
# it every process recompiles Airflow's imports in memory, ~2.5x slower to start (`images plan` 5.4 s vs 2.1 s).
want="$(cat "$ROOT/pyproject.toml" "$ROOT/uv.lock" | sha256sum | cut -d' ' -f1) locked-1 bytecode-1"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # --locked: install the lock as it is (never re-resolve); sync is exact, so what the lock lost is removed.
  "$VENV/bin/uv" sync --locked --extra dev --compile-bytecode --quiet --project "$ROOT"
  # uv compiles what it installs; a venv made before this line (or by hand) is compiled here, once.
  PYTHONDONTWRITEBYTECODE= "$VENV/bin/python" -m compileall -q -j 0 \
    "$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null || true
  echo "$want" > "$stamp"
fi
# The project's own sources (an editable install, so not in site-packages): cheap when nothing changed.
PYTHONDONTWRITEBYTECODE= "$VENV/bin/python" -m compileall -q -j 0 "$ROOT/dss_airflow" >/dev/null
echo "venv ready: $VENV ($("$VENV/bin/python" -c 'import airflow; print("airflow", airflow.__version__)'))"
