#!/usr/bin/env bash
# Closed-loop throughput of the whole pipeline by send mode, record size
# and cores: `ringship bench --rate max` with the in-process receiver.
#
#   tools/bench-rate-max.sh [RUNS]     # default 3 runs per row; prints a markdown table
#
# Environment: DURABILITY (default none), DURATION (default 3), WARMUP (default 1).
# Each row is the median of RUNS runs by achieved rate; every run starts
# with fresh WALs (bench makes a new scratch directory), so all rows meet
# the same first-touch memory state (see docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
DURABILITY=${DURABILITY:-none}; DURATION=${DURATION:-3}; WARMUP=${WARMUP:-1}
cargo build --release -q
BIN=target/release/ringship
out=$(mktemp -d /tmp/ringship-rate-max-XXXXXX)
trap 'rm -rf "$out"' EXIT
echo "| send mode | record | cores | offered records/s | achieved records/s | achieved MB/s | append → acked p50 / p99 | drain | max RSS | sent by |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for bytes in 100 4096; do
  for cores in 1 2; do
    for mode in splice zc copy; do
      for k in $(seq "$runs"); do
        "$BIN" bench --rate max --durability "$DURABILITY" --duration "$DURATION" --warmup "$WARMUP" \
          --probe-rounds 0 --record-bytes "$bytes" --cores "$cores" --send-mode "$mode" \
          --out "$out/$mode-$bytes-$cores-$k" > /dev/null
      done
      python3 - "$out" "$mode" "$bytes" "$cores" "$runs" <<'PY'
import json, sys
out, mode, size, cores, runs = sys.argv[1:]
rs = [json.load(open(f"{out}/{mode}-{size}-{cores}-{k}/summary.json")) for k in range(1, int(runs) + 1)]
rs.sort(key=lambda r: r["results"]["achieved_records_per_s"])
r = rs[len(rs) // 2]; res = r["results"]; a = r["stages"]["append_to_acked"]
lo, hi = rs[0]["results"]["achieved_records_per_s"], rs[-1]["results"]["achieved_records_per_s"]
paths = " + ".join(f"{p} {res[p + '_bytes'] / 2**20:.0f} MiB" for p in ("splice", "zc", "copy") if res[p + "_bytes"])
print(f"| {mode} | {size} B | {cores} | {res['offered_records_per_s'] / 1e6:.2f} M "
      f"| {res['achieved_records_per_s'] / 1e6:.2f} M ({lo / 1e6:.2f}–{hi / 1e6:.2f}) "
      f"| {res['achieved_payload_bytes_per_s'] / 1e6:.0f} "
      f"| {a['p50_ns'] / 1e6:.1f} / {a['p99_ns'] / 1e6:.1f} ms | {res['drain_ns'] / 1e6:.0f} ms "
      f"| {res['max_rss_bytes'] / 2**20:.0f} MiB | {paths} |")
PY
    done
  done
done
