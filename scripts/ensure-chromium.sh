#!/usr/bin/env bash
# Chromium from Debian's packages, the browser the admin-page test drives through Playwright
# (tests/integration/test_admin_page.py; Playwright's own browser download is never used). Idempotent;
# prints one line on success. Installing needs root.
set -euo pipefail

BROWSER=/usr/bin/chromium
APT_LOG=/var/log/dss-airflow-apt.log
LOCK_FILE=/var/lock/dss-airflow-ensure-chromium.lock

ready() { [ -x "$BROWSER" ] && "$BROWSER" --version >/dev/null 2>&1; }
if ready; then
    echo "ensure-chromium: $("$BROWSER" --version) ready"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-chromium: $BROWSER is missing and only root can install it (apt-get install chromium)" >&2
    exit 1
fi
exec 9>"$LOCK_FILE"
flock 9
if ! ready; then
    export DEBIAN_FRONTEND=noninteractive
    # Other ensure-*.sh scripts may hold dpkg's lock: wait for it rather than fail.
    { apt-get -o DPkg::Lock::Timeout=600 update \
        && apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends chromium fonts-dejavu-core; } \
        >>"$APT_LOG" 2>&1 || {
        echo "ensure-chromium: apt-get install chromium failed; see $APT_LOG" >&2
        tail -n 15 "$APT_LOG" >&2
        exit 1
    }
fi
echo "ensure-chromium: $("$BROWSER" --version) ready"
