#!/usr/bin/env bash
# Installs, from Debian's packages, whatever the build needs and this machine lacks.
# Debian 12's default Boost is 1.74, too old: plinth needs libboost1.81-dev.
# Usage: cmake/bootstrap.sh [extra Debian packages...]
set -euo pipefail

wanted=(g++ cmake ninja-build libboost1.81-dev catch2 "$@")
missing=()
for p in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "bootstrap: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
