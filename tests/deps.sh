#!/usr/bin/env bash
# Installs the Debian packages cdnode needs to build and test, skipping those already present.
set -euo pipefail
# chromium renders the admin status page in its test; clang builds the fuzz targets; valgrind
# runs the unit tests (tests/valgrind.sh); iproute2's ss reads a connection's congestion control
# back in test_options.
pkgs=(build-essential cmake pkg-config iproute2 libmicrohttpd-dev liblmdb-dev libcurl4-openssl-dev
      libssl-dev zlib1g-dev libcmocka-dev curl openssl ca-certificates procps
      chromium fonts-dejavu-core clang libclang-rt-14-dev valgrind)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The conformance suite runs on Node.js; a NodeSource nodejs ships its own npm.
{ command -v node && command -v npm; } >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
