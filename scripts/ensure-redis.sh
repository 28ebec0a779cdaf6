#!/usr/bin/env bash
# Install Debian's redis-server (the Celery broker of the several-workers tests) when it is missing.
# The tests start their own server on a port of their own and stop it by pid; the package's service is
# never started (policy-rc.d refuses it during the install).
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-redis: redis-server is missing; as root: apt-get install -y redis-server" >&2
    exit 1
fi
policy=/usr/sbin/policy-rc.d
created=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created=1
fi
trap '[ -n "$created" ] && rm -f "$policy"' EXIT
(apt-get install -y -q redis-server || { apt-get update -q && apt-get install -y -q redis-server; }) \
    >>/var/log/dss-airflow-apt.log 2>&1
command -v redis-server >/dev/null
