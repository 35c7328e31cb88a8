#!/usr/bin/env bash
# Installs every Debian package ztinfer builds and tests with (idempotent: skips apt when all are present).
set -euo pipefail
pkgs=(build-essential cmake ninja-build pkg-config git xz-utils procps python3
      libspdlog-dev libfmt-dev nlohmann-json3-dev libcli11-dev libboost-dev
      libopenblas-dev liburing-dev libopenmpi-dev openmpi-bin libgtest-dev
      libpcre2-dev libutf8proc-dev clang libclang-rt-14-dev)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -eq 0 ]; then echo "install-deps: all ${#pkgs[@]} packages present"; exit 0; fi
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
