#!/usr/bin/env bash
# Run HERE (a machine with Debian's package registry) before a GPU session: packs the Debian packages the
# build needs into .device-debs/ (git-ignored) together with the pack/unpack scripts from ../shared/device, so
# that the device tool can carry that folder to the GPU machine, which has no package registry.
#   bash tests/gpu/prepare.sh            then: run(command="bash tests/gpu/run.sh", carry=[".device-debs"])
set -euo pipefail
cd "$(dirname "$0")/../.."
shared=../shared/device
[ -f "$shared/pack-debs.sh" ] || { echo "prepare: $shared/pack-debs.sh not found (run from the checkout beside ../shared)"; exit 1; }
mkdir -p .device-debs
cp "$shared/pack-debs.sh" "$shared/unpack-debs.sh" .device-debs/
bash .device-debs/pack-debs.sh .device-debs
# what pack-debs.sh does not list but ztinfer links or builds with
(cd .device-debs && apt-get download libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 \
    libutf8proc-dev libutf8proc2 ninja-build 2>&1 | grep -v '^W:' | tail -1)
du -sh .device-debs
