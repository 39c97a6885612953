#!/usr/bin/env bash
# A/B of two ringship binaries, interleaved (A, B, A, B, ...), both sides'
# WALs deleted before every run (a fair first-touch memory state; see
# docs/benchmarks.md):
#
#   tools/ab.sh OLD_BIN NEW_BIN [PAIRS]      # default 5 pairs
#
# Jobs, all --durability none:
#   ship100   `ship --input` of 1M x 100 B lines to a `receive` (lines/s)
#   ship4k    `ship --input` of 250k x 4 KiB lines to a `receive` (lines/s)
#   bench     `bench --durability none` (achieved records/s, append -> acked p50)
# Prints every pair, then the medians and new/old ratios.
set -euo pipefail
old=${1:?old binary}; new=${2:?new binary}; pairs=${3:-5}
work=$(mktemp -d /tmp/ringship-ab-XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
python3 - "$work" <<'PY'
import sys
w = sys.argv[1]
with open(f"{w}/in100", "wb") as f:
    for i in range(1_000_000):
        f.write(b"%099d\n" % i)
with open(f"{w}/in4k", "wb") as f:
    line = b"x" * 4095 + b"\n"
    for i in range(250_000):
        f.write(line)
PY
ship_run() {  # BIN INPUT LINES -> lines/s
  local bin=$1 input=$2 lines=$3
  rm -rf "$work/recv" "$work/wal"
  "$bin" receive --listen 127.0.0.1:0 --dir "$work/recv" --durability none > "$work/recv.out" 2>/dev/null &
  local rpid=$!
  for _ in $(seq 100); do grep -q listening "$work/recv.out" 2>/dev/null && break; sleep 0.05; done
  local addr; addr=$(awk '/listening on/ {print $3}' "$work/recv.out")
  local t0 t1
  t0=$(date +%s.%N)
  "$bin" ship --dir "$work/wal" --input "$input" --peer "$addr" --source ab --durability none --json > "$work/ship.json"
  t1=$(date +%s.%N)
  kill -TERM $rpid; wait $rpid 2>/dev/null || true
  python3 -c "import json,sys; j=json.load(open('$work/ship.json')); assert j['acked_seq']==$lines, j; print($lines/($t1-$t0))"
}
bench_run() {  # BIN -> "achieved p50_ns"
  rm -rf "$work/bench"
  "$1" bench --durability none --out "$work/bench" > /dev/null
  python3 -c "import json; j=json.load(open('$work/bench/summary.json')); r=j['results']; print(r.get('achieved_records_per_s', r['records_per_s']), j['stages']['append_to_acked']['p50_ns'])"
}
: > "$work/results"
for k in $(seq "$pairs"); do
  for side in old new; do
    bin=$old; [ $side = new ] && bin=$new
    a=$(ship_run "$bin" "$work/in100" 1000000)
    b=$(ship_run "$bin" "$work/in4k" 250000)
    c=$(bench_run "$bin")
    echo "$k $side $a $b $c" | tee -a "$work/results"
  done
done
python3 - "$work/results" <<'PY'
import sys, statistics as st
rows = [l.split() for l in open(sys.argv[1])]
def med(side, col): return st.median(float(r[col]) for r in rows if r[1] == side)
print("| job | old (median) | new (median) | new/old |")
print("|---|---|---|---|")
for name, col, unit, scale in [("ship 1M x 100 B, lines/s", 2, "", 1), ("ship 250k x 4 KiB, lines/s", 3, "", 1),
                                ("bench none, achieved records/s", 4, "", 1), ("bench none, append->acked p50 us", 5, "", 1e-3)]:
    o, n = med("old", col) * scale, med("new", col) * scale
    print(f"| {name} | {o:.1f} | {n:.1f} | {n/o:.3f} |")
PY
