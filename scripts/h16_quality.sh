#!/bin/bash
# One kernel after another (never two at once), uptime before and after each.
cd /work/h16
run() {
  name=$1; shift
  echo "== $name start $(date -u +%T) $(uptime)" >> /tmp/h16-q/log
  /usr/bin/time -f "%e s wall" -o /tmp/h16-q/$name.time ./target/release/rxla train \
    --config configs/gpt-sotu-2k.toml --out /tmp/h16-q/$name "$@" > /tmp/h16-q/$name.out 2>&1
  echo "== $name end $(date -u +%T) rc=$? $(uptime)" >> /tmp/h16-q/log
}
mkdir -p /tmp/h16-q
run dense
run lsh --set 'model.attention={kind="lsh",bucket_size=64,n_hashes=2}'
run local --set 'model.attention={kind="local",window=256}'
run axial --set 'model.attention={kind="axial",shape=[32,64]}'
