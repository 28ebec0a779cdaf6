#!/usr/bin/env bash
# Refresh uv.lock, the exact versions that bootstrap.sh, CI and the wheel test install, then install them.
# Run it after changing dependencies in pyproject.toml and commit uv.lock with it. Pins that still satisfy
# pyproject.toml are kept; arguments go to `uv lock`:
#   scripts/lock.sh                            # after editing pyproject.toml's dependencies
#   scripts/lock.sh --upgrade                  # every pin to the newest version pyproject.toml allows
#   scripts/lock.sh --upgrade-package pandas   # one package
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/ensure-uv.sh"
"$ROOT/.venv/bin/uv" lock --project "$ROOT" "$@"
"$ROOT/scripts/bootstrap.sh"
