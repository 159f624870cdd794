#!/bin/sh
# bootstrap.sh -- installs the Debian packages objstore's build, tests and
# benchmarks need, only those that are missing.  Idempotent; quick when
# nothing is missing.  Run as root (or with sudo) on Debian 12.
set -e
PKGS="gcc scons pkg-config liblmdb-dev lmdb-utils libxxhash-dev check python3
      libpmemobj-dev libboost-dev g++ libjansson-dev"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
        missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "bootstrap: installing$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $missing
