#!/usr/bin/env bash
# The GPU check of the CUDA issue, one script, well inside 8 minutes on one H200: devices and
# memory, gpt-small-bench f32/bf16 x remat none/full, a GPT-2-small-shaped bf16 step with MFU
# against the bf16 peak, the main job end to end, and the SPMD path on one GPU. Results (JSON
# lines and logs) go to $OUT (default ./gpu-out). Run from the folder scripts/gpu-bundle.sh made.
set -uo pipefail
cd "$(dirname "$0")"
OUT="${OUT:-./gpu-out}"
mkdir -p "$OUT"
export RXLA_CACHE_DIR="$PWD/cache" TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
RX=./rxla
BACKEND="${BACKEND:-cuda}"
PEAK_BF16=7.9e14   # H200 dense bf16, for MFU
step() { # name, timeout seconds, command..
  local name=$1 t=$2; shift 2
  echo "== $name" | tee -a "$OUT/summary.txt"
  timeout "$t" "$@" > "$OUT/$name.json" 2> "$OUT/$name.log"
  echo "   exit $? ($(tail -c 300 "$OUT/$name.json" | tr '\n' ' '))" | tee -a "$OUT/summary.txt"
}
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
step devices 60 $RX devices --backend $BACKEND
for prec in f32 bf16; do
  for remat in none full; do
    step "bench-small-$prec-$remat" 90 $RX bench --backend $BACKEND --config configs/gpt-small-bench.toml \
      --steps 20 --warmup 3 --set train.precision=$prec --set train.remat=$remat
  done
done
step bench-gpt2-bf16 150 $RX bench --backend $BACKEND --config configs/gpt2-small-gpu.toml \
  --steps 10 --warmup 2 --peak-flops $PEAK_BF16
step bench-sharded-data1 90 $RX bench --backend $BACKEND --config configs/gpt-small-bench.toml \
  --steps 10 --warmup 2 --set parallel.data=1
step main-job 240 $RX train --backend $BACKEND --out "$OUT/main-job-run"
cp "$OUT/main-job-run/summary.json" "$OUT/main-job-summary.json" 2>/dev/null || true
echo "done; see $OUT/summary.txt" | tee -a "$OUT/summary.txt"
