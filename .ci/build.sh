#!/usr/bin/env bash
# Configures and builds ztinfer into build/ (binary: build/ztinfer). CUDA and MPI are AUTO: compiled where found.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=${ZT_BUILD_TYPE:-Release} ${ZT_CMAKE_ARGS:-} >/dev/null
ninja -C build ${ZT_NINJA_ARGS:-} | grep -vE '^\[[0-9]+/[0-9]+\] ' || true
test -x build/ztinfer || { echo "build failed: build/ztinfer is missing" >&2; exit 1; }
