#!/usr/bin/env bash
# R on the worker, from Debian's packages (CRAN is out of reach): r-base-core and r-cran-jsonlite, what
# the local backend's R recipes need (tests/integration/test_recipe_local.py). Idempotent; prints one
# line on success. Installing needs root.
set -euo pipefail

APT_LOG=/var/log/dss-airflow-apt.log
LOCK_FILE=/var/lock/dss-airflow-ensure-r.lock

ready() { command -v Rscript >/dev/null && Rscript -e 'quit(status = !requireNamespace("jsonlite", quietly = TRUE))' >/dev/null 2>&1; }
if ready; then
    echo "ensure-r: $(Rscript --version 2>&1 | head -n 1), jsonlite ready"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-r: Rscript/jsonlite missing and only root can install them (apt-get install r-base-core r-cran-jsonlite)" >&2
    exit 1
fi
exec 9>"$LOCK_FILE"
flock 9
if ! ready; then
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update && apt-get install -y --no-install-recommends r-base-core r-cran-jsonlite; } >>"$APT_LOG" 2>&1 || {
        echo "ensure-r: apt-get install r-base-core r-cran-jsonlite failed; see $APT_LOG" >&2
        tail -n 15 "$APT_LOG" >&2
        exit 1
    }
fi
echo "ensure-r: $(Rscript --version 2>&1 | head -n 1), jsonlite ready"
