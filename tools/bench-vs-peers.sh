#!/usr/bin/env bash
# ringship bench beside the peer shippers and fio, on the same job, in one run (issue: bench and compare).
#
#   tools/bench-vs-peers.sh [SCRATCH_DIR]      # default /tmp/ringship-vs-peers
#
# The job (../shared/FIGURES.md): 100-byte lines at 10k lines/s shipped over loopback TCP.
#   1. ringship bench --rate 10000 --record-bytes 100, in --durability none and fsync
#   2. the peers, via ../shared/tools/limits.sh peers: the harness floor (writer straight to the
#      receiver), `tail -F | socat`, and rsyslog when it is installed
#      (../shared/tools/limits.sh setup installs socat and rsyslog)
#   3. fio: 4 KiB write + fdatasync at QD1 on a fallocated file, for the fsync target
# and prints the ratios behind the targets:
#   none:  append→acked p99 ≤ 100 µs, and below each peer's p99
#   fsync: append→acked p99 ≤ 1.5 × (2 × fio fdatasync p99)   (two fdatasyncs on the path)
#   idle tail p99 ≤ the steady-state p99
# Note the peers' figure is one way (written → arrived at the receiver, no durability); ringship's
# append→acked is a round trip, append→remote durable is the one-way figure. Both are printed.
# Every run is bounded. Env: LIMITS (path to limits.sh), DURATION (bench seconds, default 10),
# SEND_MODE (default splice), FIO_RUNTIME (default 10), SPIN_US (also run both modes with
# --spin-us SPIN_US, and print their rows and verdicts beside the default's), CPU_DMA_LATENCY
# (hold /dev/cpu_dma_latency at this many µs for the whole script, the peers and fio included,
# as cyclictest does; needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
S=${1:-/tmp/ringship-vs-peers}
LIMITS=${LIMITS:-../shared/tools/limits.sh}
DURATION=${DURATION:-10}
SEND_MODE=${SEND_MODE:-splice}
FIO_RUNTIME=${FIO_RUNTIME:-10}
SPIN_US=${SPIN_US:-}
[[ -z "$SPIN_US" || "$SPIN_US" =~ ^[0-9]+$ ]] || { echo "SPIN_US must be a number of µs" >&2; exit 2; }
CPU_DMA_LATENCY=${CPU_DMA_LATENCY:-}
[[ -z "$CPU_DMA_LATENCY" || "$CPU_DMA_LATENCY" =~ ^[0-9]+$ ]] || { echo "CPU_DMA_LATENCY must be a number of µs" >&2; exit 2; }
[ -x "$LIMITS" ] || { echo "peer harness not found at $LIMITS (set LIMITS=)" >&2; exit 2; }
command -v socat >/dev/null || { echo "socat not found: run $LIMITS setup" >&2; exit 2; }
command -v fio >/dev/null || { echo "fio not found: run $LIMITS setup" >&2; exit 2; }
rm -rf "$S"; mkdir -p "$S"
cargo build --release -q
BIN=target/release/ringship

if [ -n "$CPU_DMA_LATENCY" ]; then
  # The kernel keeps the limit while the file is open: one holder for every run below. It
  # ends with this script: on exit by the trap, and on SIGKILL by noticing it has a new parent.
  python3 -c 'import os, struct, sys, time
parent = os.getppid()
fd = os.open("/dev/cpu_dma_latency", os.O_WRONLY)
os.write(fd, struct.pack("i", int(sys.argv[1])))
while os.getppid() == parent:
    time.sleep(1)' "$CPU_DMA_LATENCY" &
  HOLDER=$!
  trap 'kill $HOLDER 2>/dev/null || true' EXIT
  sleep 0.5
  kill -0 "$HOLDER" 2>/dev/null || { echo "cannot hold /dev/cpu_dma_latency (needs root)" >&2; exit 2; }
  echo "[peers] holding /dev/cpu_dma_latency at $CPU_DMA_LATENCY µs for every run" >&2
fi

runs="none fsync"
[ -n "$SPIN_US" ] && runs="$runs none-spin fsync-spin"
for run in $runs; do
  d=${run%-spin}
  spin=()
  [ "$run" != "$d" ] && spin=(--spin-us "$SPIN_US")
  echo "[peers] ringship bench --durability $d ${spin[*]}" >&2
  sync
  "$BIN" bench --rate 10000 --record-bytes 100 --duration "$DURATION" --durability "$d" \
    --send-mode "$SEND_MODE" "${spin[@]}" --out "$S/ringship-$run" | tee "$S/ringship-$run.txt" >&2
done

peers="direct tail-socat"
command -v rsyslogd >/dev/null && peers="$peers rsyslog"
echo "[peers] $LIMITS peers with PEERS_ONLY=\"$peers\"" >&2
RAW=$S/peers-raw DIR=$S/peers-scratch REPS=1 PEERS_ONLY="$peers" PEER_TESTS=lat \
  LAT_N=$((DURATION * 10000)) LAT_RATE=10000 "$LIMITS" peers

echo "[peers] fio: 4 KiB write + fdatasync, fallocated file, QD1" >&2
F=$S/fio.dat; rm -f "$F"; sync
fio --name=dsync_prealloc --filename="$F" --ioengine=io_uring --percentile_list=50:99:99.9 \
  --output-format=json --rw=write --bs=4k --iodepth=1 --fdatasync=1 --size=1g \
  --runtime="$FIO_RUNTIME" --time_based > "$S/fio.json"
rm -f "$F"
# Context for the fsync target, not part of it: the embedded bench's shipper and receiver
# fdatasync two WALs on this one disk at once, so also time two such streams side by side
# (256 MiB files each: the run is bounded by FIO_RUNTIME, not by the size).
echo "[peers] fio: the same, two files at once" >&2
sync
fio --ioengine=io_uring --percentile_list=50:99:99.9 --output-format=json --rw=write --bs=4k \
  --iodepth=1 --fdatasync=1 --size=256m --runtime="$FIO_RUNTIME" --time_based \
  --name=ship --filename="$S/fio-a.dat" --name=recv --filename="$S/fio-b.dat" > "$S/fio2.json"
rm -f "$S/fio-a.dat" "$S/fio-b.dat"

python3 - "$S" "$SPIN_US" <<'PY'
import json, sys
S, spin_us = sys.argv[1], sys.argv[2]
runs = ["none", "fsync"] + (["none-spin", "fsync-spin"] if spin_us else [])
rs = {d: json.load(open(f"{S}/ringship-{d}/summary.json")) for d in runs}
name = lambda d: d.replace("-spin", f", --spin-us {spin_us}")
peers = [json.loads(l) for l in open(f"{S}/peers-raw/peers/results.jsonl") if l.strip()]
fio = json.load(open(f"{S}/fio.json"))["jobs"][0]["sync"]["lat_ns"]["percentile"]
fio_p99_ms = fio["99.000000"] / 1e6
fio2 = [j["sync"]["lat_ns"]["percentile"]["99.000000"] / 1e6 for j in json.load(open(f"{S}/fio2.json"))["jobs"]]
ms = lambda ns: ns / 1e6
print("| who (10k lines/s of 100 B, loopback) | p50 ms | p99 ms | p99.9 ms | last line / idle tail p99 ms |")
print("|---|---|---|---|---|")
for d, r in rs.items():
    for key in ("append_to_acked", "append_to_remote_durable"):
        s = r["stages"][key]
        it = r["idle_tail"]["p99_ns"]
        print(f"| ringship {name(d)}, {s['label']} | {ms(s['p50_ns']):.3f} | {ms(s['p99_ns']):.3f} | {ms(s['p999_ns']):.3f} | {ms(it):.3f} |")
for p in peers:
    print(f"| {p['shipper']} (written → arrived) | {p.get('p50_ms')} | {p.get('p99_ms')} | {p.get('p999_ms')} | {p.get('last_line_ms')} |")
print()
ok = lambda b: "✔" if b else "✘"
bound = 1.5 * 2 * fio_p99_ms
held = rs["none"]["environment"].get("cpu_dma_latency_us")
if held is not None:
    print(f"\nA /dev/cpu_dma_latency limit of {held} µs was in force for the ringship runs (CPU_DMA_LATENCY holds it for the peers and fio too).")
for suffix in ([""] + (["-spin"] if spin_us else [])):
    label = f" with --spin-us {spin_us}" if suffix else ""
    print(f"\nringship{label}:")
    none = rs["none" + suffix]["stages"]["append_to_acked"]["p99_ns"] / 1e6
    one_way = rs["none" + suffix]["stages"]["append_to_remote_durable"]["p99_ns"] / 1e6
    print(f"- none: append→acked p99 {none:.3f} ms vs target 0.100 ms {ok(none <= 0.1)}")
    for p in peers:
        if p.get("p99_ms") is None:
            continue
        if p["shipper"] == "direct":
            # One hop with no shipper at all: what this machine gives a single wake-up.
            print(f"  (harness floor, one hop, no shipper: p99 {p['p99_ms']} ms)")
            continue
        print(f"- none vs {p['shipper']} p99 {p['p99_ms']} ms: acked {none / p['p99_ms']:.2f}× {ok(none < p['p99_ms'])}, one-way (remote durable) {one_way / p['p99_ms']:.2f}×")
    f = rs["fsync" + suffix]["stages"]["append_to_acked"]["p99_ns"] / 1e6
    print(f"- fsync: append→acked p99 {f:.3f} ms vs 1.5 × 2 × fio fdatasync p99 {fio_p99_ms:.3f} ms = {bound:.3f} ms {ok(f <= bound)}")
    if not suffix:
        print(f"  (fio with two streams at once, as the shipper's and receiver's WALs share this disk: p99 {' / '.join(f'{p:.3f}' for p in fio2)} ms)")
    for d in ("none" + suffix, "fsync" + suffix):
        r = rs[d]
        it, st = r["idle_tail"]["p99_ns"] / 1e6, r["idle_tail"]["steady_p99_ns"] / 1e6
        print(f"- {name(d)}: idle tail p99 {it:.3f} ms vs steady-state p99 {st:.3f} ms {ok(it <= st)}")
    cpu = {d: rs[d]["results"]["cpu_ns"] / 1e9 for d in ("none" + suffix, "fsync" + suffix)}
    print("- CPU seconds, whole process: " + ", ".join(f"{name(d)} {c:.2f}" for d, c in cpu.items()))
PY
