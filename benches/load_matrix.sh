#!/usr/bin/env bash
# Dynamic batching measured: examples/load.rs with 1, 8, 64 and 512 async callers, batching on and
# off, then 10 000 callers with batching on; one markdown table. `make load-matrix`.
set -euo pipefail
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
cargo build --release --quiet --example load
LOAD=target/release/examples/load
echo "| callers | batching | predictions/s | p50 ms | p95 ms | p99 ms | mean batch | ok | failed |"
echo "|---:|:---:|---:|---:|---:|---:|---:|---:|---:|"
run() {
  "$LOAD" --concurrency "$1" --seconds "$SECONDS_PER_RUN" --batching "$2" --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
print("| {} | {} | {:,.0f} | {:.3f} | {:.3f} | {:.3f} | {:.1f} | {} | {} |".format(
    d["concurrency"], "on" if d["batching"] else "off", d["throughput"], d["p50_ms"], d["p95_ms"],
    d["p99_ms"], d["mean_batch"], d["ok"], d["failed"]))'
}
for callers in 1 8 64 512; do
  for batching in on off; do
    run "$callers" "$batching"
  done
done
run 10000 on
