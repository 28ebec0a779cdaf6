#!/usr/bin/env bash
# Make Debian's PostgreSQL 15 server binaries available for the shared-ledger tests (tests/services.py
# starts a private cluster from them on port 18432; no system cluster is created or started here).
# Idempotent; prints one line on success. Installing needs root.
set -euo pipefail

BIN=/usr/lib/postgresql/15/bin
APT_LOG=/var/log/dss-airflow-apt.log
LOCK_FILE=/var/lock/dss-airflow-ensure-postgres.lock

if [ -x "$BIN/initdb" ] && [ -x "$BIN/pg_ctl" ]; then
    echo "ensure-postgres: $BIN ready ($("$BIN/postgres" --version))"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-postgres: $BIN/initdb is missing and only root can install it (apt-get install postgresql)" >&2
    exit 1
fi
exec 9>"$LOCK_FILE"
flock 9
if [ ! -x "$BIN/initdb" ]; then
    # The tests run their own cluster: keep the package from creating (and starting) a main one on 5432.
    mkdir -p /etc/postgresql-common
    [ -e /etc/postgresql-common/createcluster.conf ] || echo "create_main_cluster = false" \
        > /etc/postgresql-common/createcluster.conf
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update && apt-get install -y --no-install-recommends postgresql-15; } >>"$APT_LOG" 2>&1 || {
        echo "ensure-postgres: apt-get install postgresql-15 failed; see $APT_LOG" >&2
        tail -n 15 "$APT_LOG" >&2
        exit 1
    }
fi
echo "ensure-postgres: $BIN ready ($("$BIN/postgres" --version))"
