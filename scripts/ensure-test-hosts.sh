#!/usr/bin/env bash
# What the multihost tests need: tests/hosts.py's "remote" Docker hosts inside this machine (network
# namespaces, a TLS dockerd in each, a TLS registry: iproute2, util-linux (nsenter), openssl,
# docker-registry) and the Celery broker of the several-workers test (redis-server). As root it installs
# what is missing; otherwise it only reports (the multihost tests then skip, with the reason). No service
# of these packages is left running: the tests start their own, on their own ports.
set -euo pipefail
missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nsenter >/dev/null 2>&1 || missing+=(util-linux)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -eq 0 ]; then
  echo "ensure-test-hosts: ready"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "ensure-test-hosts: missing ${missing[*]} (run as root to install)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
policy=/usr/sbin/policy-rc.d  # keep the packages' services from starting during the install
created=""
if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created=1; fi
trap '[ -n "$created" ] && rm -f "$policy"' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts the registry as a service on :5000; the tests run their own on a 10.231.x address.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now docker-registry >/dev/null 2>&1 || true; fi
echo "ensure-test-hosts: installed ${missing[*]}"
