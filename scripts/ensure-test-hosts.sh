#!/usr/bin/env bash
# What tests/hosts.py needs to make "remote" Docker hosts inside this machine (network namespaces, a TLS
# dockerd in each, a TLS registry): iproute2, util-linux (nsenter), openssl, docker-registry. As root it
# installs what is missing; otherwise it only reports (the multihost tests then skip, with the reason).
set -euo pipefail
missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nsenter >/dev/null 2>&1 || missing+=(util-linux)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
if [ ${#missing[@]} -eq 0 ]; then
  echo "ensure-test-hosts: ready"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "ensure-test-hosts: missing ${missing[*]} (run as root to install)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts the registry as a service on :5000; the tests run their own on a 10.231.x address.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now docker-registry >/dev/null 2>&1 || true; fi
echo "ensure-test-hosts: installed ${missing[*]}"
