#!/usr/bin/env bash
# WAL figures beside fio's, in one run, on the same disk (issue: Foundation).
#
#   tools/wal-vs-fio.sh [SCRATCH_DIR]     # default /tmp/ringship-vs-fio; needs fio (apt-get install fio)
#
# Runs the fio jobs of ../shared/tools/limits.sh that bound the WAL, then
# `ringship wal-bench` on the same filesystem, and prints the ratios:
#   throughput: fsync-mode wal-bench MB/s vs fio sequential buffered write + final fsync
#   latency:    wal-bench commit p50/p99 (open loop, 4 KiB records, 1 per commit)
#               vs fio 4 KiB write + fdatasync p50/p99 (QD1, fallocated file and overwrite)
# Every run is bounded by --runtime / --duration. Raw JSON is kept in SCRATCH_DIR/raw.
set -euo pipefail
cd "$(dirname "$0")/.."
S=${1:-/tmp/ringship-vs-fio}
RUNTIME=${RUNTIME:-10}
RATE=${RATE:-2000}
mkdir -p "$S/raw"
command -v fio >/dev/null || { echo "fio not found: apt-get install fio" >&2; exit 2; }
cargo build --release -q
BIN=target/release/ringship
F=$S/fio.dat
C="--ioengine=io_uring --percentile_list=50:99:99.9 --output-format=json"
fresh() { rm -f "$1"; sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }

echo "[1/7] fio: sequential buffered write 1 MiB blocks + final fsync" >&2
fresh $F; fio --name=seq --filename=$F $C --rw=write --bs=1m --iodepth=4 --size=4g --end_fsync=1 --runtime=20 > "$S/raw/fio_seq.json"
echo "[2/7] fio: 4 KiB write + fdatasync, fallocated file, QD1" >&2
fresh $F; fio --name=dsync_prealloc --filename=$F $C --rw=write --bs=4k --iodepth=1 --fdatasync=1 --size=1g --runtime=$RUNTIME --time_based > "$S/raw/fio_dsync_prealloc.json"
echo "[3/7] fio: 4 KiB write + fdatasync, overwrite, QD1" >&2
fresh $F; fio --name=dsync_overwrite --filename=$F $C --rw=write --bs=4k --iodepth=1 --fdatasync=1 --size=1g --overwrite=1 --runtime=$RUNTIME --time_based > "$S/raw/fio_dsync_overwrite.json"
rm -f $F
W=$S/wal; run() { rm -rf "$W"; sync; "$BIN" wal-bench --dir "$W" --json "$@"; rm -rf "$W"; }
echo "[4/7] ringship: 4 KiB records, fsync, closed loop" >&2
run --record-bytes 4096 --duration $RUNTIME > "$S/raw/wal_4k_fsync.json"
echo "[5/7] ringship: 100 B records, fsync, closed loop" >&2
run --record-bytes 100 --duration $RUNTIME > "$S/raw/wal_100_fsync.json"
echo "[6/7] ringship: 4 KiB records, fsync, open loop at $RATE/s (commit latency)" >&2
run --record-bytes 4096 --duration $RUNTIME --rate $RATE > "$S/raw/wal_4k_rate.json"
echo "[7/7] ringship: none mode, 100 B and 4 KiB, closed loop" >&2
run --record-bytes 100 --duration $RUNTIME --durability none > "$S/raw/wal_100_none.json"
run --record-bytes 4096 --duration $RUNTIME --durability none > "$S/raw/wal_4k_none.json"

python3 - "$S/raw" <<'PY'
import json, sys
raw = sys.argv[1]
def load(n): return json.load(open(f"{raw}/{n}.json"))
def fio_bw(j): return j["jobs"][0]["write"]["bw_bytes"] / 1e6
def fio_sync(j, p): return j["jobs"][0]["sync"]["lat_ns"]["percentile"][p] / 1e3
seq = fio_bw(load("fio_seq")); pre = load("fio_dsync_prealloc"); ovr = load("fio_dsync_overwrite")
w4, w100, rate = load("wal_4k_fsync"), load("wal_100_fsync"), load("wal_4k_rate")
n100, n4 = load("wal_100_none"), load("wal_4k_none")
print(f"kernel {w4['kernel']}  ring {w4['ring_flags']}  segment {w4['segment_size_bytes']>>20} MiB  commit <= {w4['commit_bytes_max']>>20} MiB  chains {w4['commit_chains_max']}")
print()
print("| what | ringship | fio (same run) | ratio |")
print("|---|---|---|---|")
for name, w in (("4 KiB records, fsync", w4), ("100 B records, fsync", w100)):
    mb = w["wal_bytes_per_s"] / 1e6
    print(f"| WAL MB/s, {name} ({w['records_per_s']/1e6:.2f} M records/s) | {mb:.0f} | seq write+fsync {seq:.0f} | {mb/seq:.2f} |")
cl = rate["commit_latency"]
for label, j in (("fallocated", pre), ("overwrite", ovr)):
    p50, p99 = fio_sync(j, "50.000000"), fio_sync(j, "99.000000")
    print(f"| commit p50 µs vs fdatasync p50, {label} | {cl['p50_ns']/1e3:.0f} | {p50:.0f} | {cl['p50_ns']/1e3/p50:.2f} |")
    print(f"| commit p99 µs vs fdatasync p99, {label} | {cl['p99_ns']/1e3:.0f} | {p99:.0f} | {cl['p99_ns']/1e3/p99:.2f} |")
print()
print(f"open loop {rate['records_per_s']:.0f} records/s of 4 KiB: {rate['records_per_commit']:.2f} records/commit; append->durable p50 {rate['append_to_durable']['p50_ns']/1e3:.0f} µs p99 {rate['append_to_durable']['p99_ns']/1e3:.0f} µs")
for name, w in (("100 B", w100), ("4 KiB", w4), ("100 B none", n100), ("4 KiB none", n4)):
    c = w["commit_latency"]
    print(f"closed loop {name}: {w['records_per_s']/1e6:.2f} M records/s, {w['wal_bytes_per_s']/1e6:.0f} MB/s, {w['records_per_commit']:.0f} records/commit, commit p50 {c['p50_ns']/1e3:.0f} µs p99 {c['p99_ns']/1e3:.0f} µs")
PY
