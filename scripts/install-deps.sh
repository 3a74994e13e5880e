#!/usr/bin/env bash
# Install every build, test and tool dependency of posp2p from Debian 12
# packages, by name. Idempotent: packages already present are left alone and
# `apt-get update` runs at most once per invocation, only when something is
# missing.
set -euo pipefail

PKGS=(
  build-essential cmake ninja-build pkg-config clang llvm libclang-rt-14-dev
  protobuf-c-compiler libprotobuf-c-dev
  protobuf-compiler libprotobuf-dev python3-protobuf
  libuv1-dev libsqlite3-dev uuid-dev libjansson-dev libcjson-dev
  python3-pytest python3-scapy python3-matplotlib
  iproute2 tcpdump
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
