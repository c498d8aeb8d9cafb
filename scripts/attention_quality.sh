#!/bin/bash
# Long-context quality of the attention kernels (README, "Long sequences"): byte GPT on sotu
# at T = 2048, one kernel after another (never two at once: they share the CPU), with the
# load before and after each. Usage: scripts/attention_quality.sh [OUT_DIR] (default runs/sotu-2k).
set -u
cd "$(dirname "$0")/.."
out=${1:-runs/sotu-2k}
mkdir -p "$out"
run() {
  name=$1; shift
  echo "== $name start $(date -u +%T) $(uptime)" >> "$out/log"
  start=$(date +%s)
  ./target/release/rxla train --config configs/gpt-sotu-2k.toml --out "$out/$name" "$@" \
    > "$out/$name.out" 2>&1
  rc=$?
  echo "== $name end $(date -u +%T) rc=$rc wall $(( $(date +%s) - start )) s $(uptime)" >> "$out/log"
}
run dense
run lsh --set 'model.attention={kind="lsh",bucket_size=64,n_hashes=2}'
run local --set 'model.attention={kind="local",window=256}'
run axial --set 'model.attention={kind="axial",shape=[32,64]}'
# Equal wall time: the fast kernels trained for about dense's training seconds.
run local-450 --set 'model.attention={kind="local",window=256}' --set train.steps=450 \
  --set train.eval_every=90
run axial-700 --set 'model.attention={kind="axial",shape=[32,64]}' --set train.steps=700 \
  --set train.eval_every=140
