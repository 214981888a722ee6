#!/usr/bin/env bash
# Debian's Chromium for the service's page test (headless; no browser download of its own).
set -euo pipefail
command -v chromium >/dev/null && exit 0
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
chromium --version
