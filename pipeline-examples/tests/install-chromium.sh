#!/bin/sh
# Installs Debian's Chromium for the `service` test's headless page check, if absent.
# Called from .ci/run; safe to run again (does nothing when /usr/bin/chromium exists).
set -eu
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q chromium
/usr/bin/chromium --version
