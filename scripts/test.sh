#!/usr/bin/env bash
# The whole test suite, from a fresh machine: venv and packages, Docker engine and the air-gapped base
# image (as root; built once, then reused from its content hash), PostgreSQL 15 binaries for the shared
# ledger tests (as root; the tests start their own cluster), R from Debian's packages for the local R
# recipe tests, Chromium from Debian's packages for the admin page's browser test, lint and types, then
# pytest.
# Extra arguments go to pytest, e.g. scripts/test.sh tests/unit -k quantity
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
"$ROOT/scripts/bootstrap.sh"
if ! "$ROOT/scripts/ensure-base-image.sh" >/dev/null; then
  if [ "${CI:-}" = "true" ]; then
    echo "test.sh: CI needs a Docker engine and the base image (see above)" >&2
    exit 1
  fi
  echo "test.sh: no Docker engine/base image here: Docker tests will be skipped with the reason" >&2
fi
if ! "$ROOT/scripts/ensure-postgres.sh"; then
  if [ "${CI:-}" = "true" ]; then
    echo "test.sh: CI needs the PostgreSQL 15 binaries (see above)" >&2
    exit 1
  fi
  echo "test.sh: no PostgreSQL binaries here: the PostgreSQL ledger tests will be skipped with the reason" >&2
fi
if ! "$ROOT/scripts/ensure-r.sh" >/dev/null; then
  if [ "${CI:-}" = "true" ]; then
    echo "test.sh: CI needs R on the worker for the local R recipe tests (see above)" >&2
    exit 1
  fi
  echo "test.sh: no R here: the local R recipe tests will be skipped with the reason" >&2
fi
if ! "$ROOT/scripts/ensure-chromium.sh" >/dev/null; then
  if [ "${CI:-}" = "true" ]; then
    echo "test.sh: CI needs Chromium for the admin page's browser test (see above)" >&2
    exit 1
  fi
  echo "test.sh: no Chromium here: the browser test will be skipped with the reason" >&2
fi
if ! "$ROOT/scripts/ensure-test-hosts.sh" >/dev/null; then
  if [ "${CI:-}" = "true" ]; then
    echo "test.sh: CI needs what the multihost tests use (see above)" >&2
    exit 1
  fi
  echo "test.sh: multihost tests will be skipped with the reason" >&2
fi
echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy dss_airflow
.venv/bin/mypy tests dags benchmarks
echo "== pytest"
exec .venv/bin/pytest "$@"
