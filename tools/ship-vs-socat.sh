#!/usr/bin/env bash
# End-to-end shipping throughput beside a raw `cat | socat` pipe, same run.
#
#   tools/ship-vs-socat.sh [REPS]      # needs socat (apt-get install socat); ~2 min with REPS=3
#
# For 100 B and 4 KiB lines (500 MB / 1 GB files in $S), each rep runs:
#   - ringship: `ship --input FILE --peer` into `receive` on loopback, both
#     --durability none, then both fsync; wall time from start until every
#     record is acknowledged (ship exits only then); CPU of both processes.
#   - socat:    `cat FILE | socat -u - TCP:...` into `socat -u TCP-LISTEN:... /dev/null`:
#     a raw byte pipe with no framing, no WAL, no durability, no acks.
# Prints the median of each and the ratios. Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-3}
S=${S:-/tmp/ringship-vs-socat}
PORT=${PORT:-17171}
mkdir -p "$S"
command -v socat >/dev/null || { echo "socat not found: apt-get install socat" >&2; exit 2; }
cargo build --release -q
B=$PWD/target/release/ringship
[ -f "$S/l100.txt" ] || python3 -c "open('$S/l100.txt','wb').write((b'x'*99+b'\n')*5_000_000)"
[ -f "$S/l4k.txt" ]  || python3 -c "open('$S/l4k.txt','wb').write((b'y'*4095+b'\n')*250_000)"

now() { date +%s.%N; }
cpu_of() { awk '{print ($14+$15)/100}' "/proc/$1/stat" 2>/dev/null || echo 0; }   # utime+stime, s (USER_HZ=100)

ringship_run() {  # file durability send_mode -> prints "seconds shipper_cpu_s receiver_cpu_s"
  local f=$1 d=$2 m=$3
  rm -rf "$S/recv" "$S/wal"; sync   # every run starts with no dirty pages (see README)
  "$B" receive --listen 127.0.0.1:$PORT --dir "$S/recv" --durability "$d" > "$S/recv.log" 2>&1 &
  local rp=$!
  for _ in $(seq 50); do grep -q listening "$S/recv.log" 2>/dev/null && break; sleep 0.05; done
  local t0; t0=$(now)
  "$B" ship --dir "$S/wal" --peer 127.0.0.1:$PORT --source bench --input "$S/$f" --durability "$d" --send-mode "$m" --json > "$S/ship.json" &
  local sp=$! scpu=0
  while kill -0 $sp 2>/dev/null; do scpu=$(cpu_of $sp); sleep 0.05; done
  wait $sp
  local t1; t1=$(now)
  local rcpu; rcpu=$(cpu_of $rp)
  kill -TERM $rp; wait $rp || true
  echo "$(echo "$t1 - $t0" | bc) $scpu $rcpu"
}

socat_run() {  # file -> prints seconds
  local f=$1; sync
  socat -u TCP-LISTEN:$PORT,reuseaddr OPEN:/dev/null & local lp=$!
  sleep 0.2
  local t0; t0=$(now)
  cat "$S/$f" | socat -u - TCP:127.0.0.1:$PORT
  wait $lp
  local t1; t1=$(now)
  echo "$t1 - $t0" | bc
}

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

printf "| lines | durability | send mode | ringship s (median of %s) | lines/s | MB/s | CPU s per GB, shipper / receiver | socat s | ringship / socat bytes/s |\n" "$REPS"
printf "|---|---|---|---|---|---|---|---|---|\n"
for f in l100.txt l4k.txt; do
  bytes=$(stat -c %s "$S/$f"); lines=$(wc -l < "$S/$f")
  for dm in "none splice" "none copy" "none zc" "fsync splice"; do
    set -- $dm; d=$1; m=$2
    : > "$S/r.txt"; : > "$S/c.txt"; : > "$S/rc.txt"; : > "$S/s.txt"
    for _ in $(seq "$REPS"); do
      read -r secs scpu rcpu < <(ringship_run "$f" "$d" "$m")
      echo "$secs" >> "$S/r.txt"; echo "$scpu" >> "$S/c.txt"; echo "$rcpu" >> "$S/rc.txt"
      socat_run "$f" >> "$S/s.txt"
    done
    r=$(median < "$S/r.txt"); c=$(median < "$S/c.txt"); rc=$(median < "$S/rc.txt"); s=$(median < "$S/s.txt")
    gb=$(echo "$bytes/1000000000" | bc -l)
    printf "| %s | %s | %s | %.2f | %.2f M | %.0f | %.2f / %.2f | %.2f | %.2f |\n" "$f" "$d" "$m" "$r" \
      "$(echo "$lines/$r/1000000" | bc -l)" "$(echo "$bytes/$r/1000000" | bc -l)" \
      "$(echo "$c/$gb" | bc -l)" "$(echo "$rc/$gb" | bc -l)" "$s" "$(echo "$s/$r" | bc -l)"
  done
done
