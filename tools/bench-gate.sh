#!/usr/bin/env bash
# Latency regression gate for CI (issue: bench and compare).
#
#   tools/bench-gate.sh record BASELINE_DIR [RUNS]       # store RUNS bench reports as the baseline
#   tools/bench-gate.sh check  BASELINE_DIR [RUNS]       # run RUNS benches, compare with the baseline
#
# Environment:
#   BENCH_ARGS   arguments for every `ringship bench` run (default: a short, --durability none run)
#   COMPARE_ARGS arguments for `ringship compare` (default: --max-regression-pct 25)
#   OUT          where the current runs' reports go (default: a fresh temporary directory)
#
# `check` exits with compare's code: 0 no regression, 1 a regression, 2 bad input (a missing baseline,
# reports of another version, or a different configuration). Medians over RUNS on each side absorb
# single noisy runs; on shared CI machines keep the threshold generous and the run count odd.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}; base=${2:-}; runs=${3:-3}
case $mode in record|check) ;; *) sed -n '2,15p' "$0" >&2; exit 2;; esac
[ -n "$base" ] || { echo "give the baseline directory" >&2; exit 2; }
BENCH_ARGS=${BENCH_ARGS:---durability none --duration 5 --warmup 1 --probe-rounds 5}
COMPARE_ARGS=${COMPARE_ARGS:---max-regression-pct 25}
cargo build --release -q
BIN=target/release/ringship

bench_into() {  # DIR: RUNS bench reports into DIR/run-K/summary.json
  for k in $(seq "$runs"); do
    echo "[bench-gate] run $k/$runs: ringship bench $BENCH_ARGS" >&2
    # shellcheck disable=SC2086
    "$BIN" bench $BENCH_ARGS --out "$1/run-$k" > "$1/run-$k.txt"
    grep "append → acked" "$1/run-$k.txt" >&2 || true
  done
}

if [ "$mode" = record ]; then
  rm -rf "$base"; mkdir -p "$base"
  bench_into "$base"
  echo "[bench-gate] baseline of $runs runs stored in $base" >&2
  exit 0
fi

ls "$base"/run-*/summary.json >/dev/null 2>&1 || { echo "no baseline in $base: run \`$0 record $base\` first" >&2; exit 2; }
out=${OUT:-$(mktemp -d /tmp/ringship-gate-XXXXXX)}
mkdir -p "$out"
bench_into "$out"
set +e
# shellcheck disable=SC2086
"$BIN" compare "$base"/run-*/summary.json -- "$out"/run-*/summary.json $COMPARE_ARGS
code=$?
echo "[bench-gate] current reports kept in $out" >&2
exit $code
