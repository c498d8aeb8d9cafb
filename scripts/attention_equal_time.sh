#!/bin/bash
# Long-context kernels at equal training time (README, "Long sequences"): for each kernel,
# time 5 train steps with `rxla bench`, then train configs/gpt-sotu-2k.toml for
# BUDGET seconds' worth of those steps (its own linear schedule), one kernel after another.
# Usage: BUDGET=240 scripts/attention_equal_time.sh [OUT_DIR] (default runs/sotu-2k-time).
set -u
cd "$(dirname "$0")/.."
out=${1:-runs/sotu-2k-time}
budget=${BUDGET:-240}
rxla=./target/release/rxla
mkdir -p "$out"
declare -A K=(
  [dense]='model.attention={kind="dense"}'
  [lsh]='model.attention={kind="lsh",bucket_size=64,n_hashes=2}'
  [local]='model.attention={kind="local",window=256}'
  [axial]='model.attention={kind="axial",shape=[32,64]}'
)
for k in dense lsh local axial; do
  ms=$($rxla bench --config configs/gpt-sotu-2k.toml --set "${K[$k]}" --steps 5 --warmup 2 \
    2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["step_ms_median"])')
  steps=$(python3 -c "print(int($budget * 1000 / $ms))")
  echo "== $k bench $ms ms/step -> $steps steps; start $(date -u +%T) $(uptime)" >> "$out/log"
  start=$(date +%s)
  $rxla train --config configs/gpt-sotu-2k.toml --out "$out/$k" --set "${K[$k]}" \
    --set train.steps="$steps" --set train.eval_every=$((steps / 4)) > "$out/$k.out" 2>&1
  echo "== $k end $(date -u +%T) rc=$? wall $(( $(date +%s) - start )) s $(uptime)" >> "$out/log"
done
