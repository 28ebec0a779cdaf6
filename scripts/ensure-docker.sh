#!/usr/bin/env bash
# Make a Docker engine reachable for dss_airflow (tests, image builds), starting one when we can.
#
# Idempotent and safe to run concurrently: a flock serialises the install/start phase and a running
# dockerd (pid file or process) is waited for instead of started twice. Prints one line on success.
# As root it also installs debootstrap, which the base image bootstrap (dss_airflow.images.bootstrap) needs.
set -euo pipefail

DOCKERD_LOG=/var/log/dss-airflow-dockerd.log
APT_LOG=/var/log/dss-airflow-apt.log
LOCK_FILE=/var/lock/dss-airflow-ensure-docker.lock
SOCKET=/var/run/docker.sock
PID_FILE=/var/run/docker.pid
WAIT_SECONDS=60

docker_ok() {
    command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1
}

say_ok() {
    echo "ensure-docker: engine ready ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
}

if docker_ok && { [ "$(id -u)" -ne 0 ] || { command -v debootstrap && command -v docker-registry; } >/dev/null 2>&1; }; then
    say_ok
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    if docker_ok; then
        # Docker works; only the (root-only) base image bootstrap will be unavailable.
        say_ok
        exit 0
    fi
    cat >&2 <<'EOF'
ensure-docker: no Docker engine is reachable and this script can only start one as root.
  Either: run it as root (sudo scripts/ensure-docker.sh), which installs docker.io + debootstrap and starts dockerd;
  or:     install Docker Engine (https://docs.docker.com/engine/install/), start it, and add yourself to the
          'docker' group (sudo usermod -aG docker "$USER", then log in again);
  or:     point DOCKER_HOST at a reachable engine (e.g. DOCKER_HOST=unix:///run/user/$UID/docker.sock for rootless).
EOF
    exit 1
fi

mkdir -p "$(dirname "$LOCK_FILE")"
exec 9>"$LOCK_FILE"
if ! flock -w 600 9; then
    echo "ensure-docker: timed out waiting for another ensure-docker run (lock $LOCK_FILE)" >&2
    exit 1
fi

apt_updated=0
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    if [ "$apt_updated" -eq 0 ]; then
        if ! apt-get update -q >>"$APT_LOG" 2>&1; then
            echo "ensure-docker: apt-get update failed; last lines of $APT_LOG:" >&2
            tail -n 30 "$APT_LOG" >&2
            exit 1
        fi
        apt_updated=1
    fi
    if ! apt-get install -y -q "$@" >>"$APT_LOG" 2>&1; then
        echo "ensure-docker: apt-get install $* failed; last lines of $APT_LOG:" >&2
        tail -n 30 "$APT_LOG" >&2
        exit 1
    fi
}

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)  # registry tests, on loopback
if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
fi

if docker_ok; then
    say_ok
    exit 0
fi

dockerd_running() {
    if [ -s "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
        return 0
    fi
    pgrep -x dockerd >/dev/null 2>&1
}

if ! dockerd_running; then
    # The lock is not inherited by the daemon (fd 9 closed) so later runs are not blocked by it.
    nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null 9>&- &
    disown || true
fi

deadline=$((SECONDS + WAIT_SECONDS))
until [ -S "$SOCKET" ] && docker_ok; do
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "ensure-docker: dockerd did not become ready within ${WAIT_SECONDS}s; last lines of $DOCKERD_LOG:" >&2
        tail -n 30 "$DOCKERD_LOG" >&2 || true
        exit 1
    fi
    if ! dockerd_running; then
        echo "ensure-docker: dockerd exited during startup; last lines of $DOCKERD_LOG:" >&2
        tail -n 30 "$DOCKERD_LOG" >&2 || true
        exit 1
    fi
    sleep 1
done
say_ok
