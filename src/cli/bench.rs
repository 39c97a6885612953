use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::time::Duration;

use super::{EXIT_OK, Failure, SpinArgs, parse_rate, resolve, scratch_dir};
use crate::constants::{RECORD_PAYLOAD_BYTES_MAX, SHARDS_MAX};
use crate::sink::tcp::SendMode;
use crate::wal::Durability;

/// Benchmark the whole pipeline: WAL → ship → receive, with latency at
/// every hop.
///
/// Without --peer, a receiver runs in-process on an ephemeral 127.0.0.1
/// port, on the CPUs after the shipper's. Each shipper core gets a generator
/// that offers --rate records/s in total (open loop): every record is
/// stamped with the time it was *due*, so a stall shows in the latency
/// instead of hiding in a slower load (coordinated omission corrected, as
/// wrk2 does). --rate max runs closed loop, and its latencies are not
/// CO-corrected. The first --warmup seconds are not counted.
///
/// After the load drains, an idle-tail probe runs --probe-rounds rounds of
/// silence then a burst, and reports append → acked of each burst's last
/// record: the record that a heartbeat- or next-write-driven shipper
/// strands.
///
/// Prints a table (stage × p50 … max, records/s, MB/s, CPU, RSS). With
/// --out DIR, also writes summary.json, one <stage>.hgrm per stage,
/// latency.hlog (HdrHistogram V2 interval log, 1 s intervals, one tag per
/// stage) and latency.svg (percentile plot). Exit 0, or 1 if the run failed
/// (a peer that stops acknowledging for 30 s, a full disk).
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    ringship bench                                        # 10000 records/s of 100 B, fsync, ~15 s\n  \
    ringship bench --durability none --out results/none   # write summary.json, .hgrm, .hlog, .svg\n  \
    ringship bench --rate max --record-bytes 4096 --duration 5\n  \
    ringship bench --peer 10.0.0.2:7070 --rate 50000      # against a running `ringship receive`")]
pub(super) struct BenchArgs {
    /// Records per second offered over all cores (open loop), or `max`
    /// (closed loop: as fast as the pipeline takes them).
    #[arg(long, default_value = "10000", value_parser = parse_rate)]
    rate: crate::bench::Rate,
    /// Seconds measured, after the warmup.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Payload bytes per record.
    #[arg(long, default_value_t = 100)]
    record_bytes: usize,
    /// Shipper cores (shards), each with its own ring, WAL and connection.
    #[arg(long, default_value_t = 1)]
    cores: usize,
    /// On both the shipper and the in-process receiver.
    #[arg(long, value_enum, default_value_t = Durability::Fsync)]
    durability: Durability,
    #[arg(long, value_enum, default_value_t = SendMode::Splice)]
    send_mode: SendMode,
    /// Ship to this running `ringship receive` instead of an in-process one
    /// (append → remote durable is then not measured).
    #[arg(long)]
    peer: Option<String>,
    /// Directory for the WALs (DIR/ship, DIR/recv); kept afterwards.
    /// Default: a fresh temporary directory, removed afterwards.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the temporary directory.
    #[arg(long)]
    keep: bool,
    /// Write summary.json, <stage>.hgrm, latency.hlog and latency.svg here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Idle-tail probe rounds (0 skips the probe).
    #[arg(long, default_value_t = 20)]
    probe_rounds: u32,
    /// Records per idle-tail burst.
    #[arg(long, default_value_t = 100)]
    probe_burst: u32,
    /// Milliseconds of silence before each idle-tail burst.
    #[arg(long, default_value_t = 100)]
    probe_silence_ms: u64,
    /// (`--spin-us` applies to the shipper's cores and the in-process
    /// receiver's.)
    #[command(flatten)]
    spin: SpinArgs,
    /// Hold /dev/cpu_dma_latency at US for the run (needs root), as
    /// cyclictest does: idle CPUs then poll instead of entering idle states
    /// that are slow to leave. 0 is the value that matters (a haltpoll VM
    /// guest honours nothing else). System-wide, so everything else on the
    /// machine gets it too; the report records it, and the limit in force
    /// whoever held it. Up to 10000.
    #[arg(long, value_name = "US", value_parser = clap::value_parser!(u32).range(0..=crate::constants::CPU_DMA_LATENCY_US_MAX as i64))]
    cpu_dma_latency: Option<u32>,
}

pub(super) fn run(args: BenchArgs) -> Result<i32, Failure> {
    use crate::constants::{
        BENCH_SECONDS_MAX, PROBE_BURST_MAX, PROBE_ROUNDS_MAX, PROBE_SILENCE_MS_MAX,
    };
    let seconds = |flag: &str, v: f64, zero_ok: bool| {
        if v.is_finite() && (v > 0.0 || (zero_ok && v == 0.0)) && v <= BENCH_SECONDS_MAX {
            Ok(Duration::from_secs_f64(v))
        } else {
            Err(Failure::usage(format!(
                "{flag} {v}: give seconds, {} {BENCH_SECONDS_MAX}",
                if zero_ok {
                    "from 0 to"
                } else {
                    "above 0 and at most"
                }
            )))
        }
    };
    let duration = seconds("--duration", args.duration, false)?;
    let warmup = seconds("--warmup", args.warmup, true)?;
    if args.duration + args.warmup > BENCH_SECONDS_MAX {
        return Err(Failure::usage(format!(
            "--duration plus --warmup is at most {BENCH_SECONDS_MAX} s"
        )));
    }
    if args.record_bytes > RECORD_PAYLOAD_BYTES_MAX {
        return Err(Failure::usage(format!(
            "--record-bytes {} exceeds the maximum record of {RECORD_PAYLOAD_BYTES_MAX} bytes",
            args.record_bytes
        )));
    }
    let within = |flag: &str, value: u64, low: u64, high: u64| {
        if (low..=high).contains(&value) {
            Ok(())
        } else {
            Err(Failure::usage(format!(
                "{flag} {value}: give {low} to {high}"
            )))
        }
    };
    within("--cores", args.cores as u64, 1, u64::from(SHARDS_MAX))?;
    within(
        "--probe-rounds",
        args.probe_rounds.into(),
        0,
        PROBE_ROUNDS_MAX.into(),
    )?;
    within(
        "--probe-burst",
        args.probe_burst.into(),
        1,
        PROBE_BURST_MAX.into(),
    )?;
    within(
        "--probe-silence-ms",
        args.probe_silence_ms,
        0,
        PROBE_SILENCE_MS_MAX,
    )?;
    let peer = args.peer.as_deref().map(resolve).transpose()?;
    if let Some(out) = &args.out
        && out.exists()
        && !out.is_dir()
    {
        return Err(Failure::usage(format!(
            "--out {}: exists and is not a directory",
            out.display()
        )));
    }
    let (dir, _temp) = scratch_dir(args.dir.as_ref(), args.keep, "ringship-bench-")?;
    let config = crate::bench::BenchConfig {
        rate: args.rate,
        duration,
        warmup,
        record_bytes: args.record_bytes,
        cores: args.cores,
        durability: args.durability,
        send_mode: args.send_mode,
        peer,
        dir: dir.clone(),
        probe_rounds: args.probe_rounds,
        probe_burst: args.probe_burst,
        probe_silence: Duration::from_millis(args.probe_silence_ms),
        spin: args.spin.budget(),
        cpu_dma_latency_us: args.cpu_dma_latency,
        progress: io::stderr().is_terminal(),
    };
    let result = crate::bench::run(&config);
    if args.dir.is_none() && !args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let run = result.map_err(Failure::operating)?;
    crate::bench::report::print_table(&run.report);
    if let Some(out) = &args.out {
        let written = crate::bench::output::write_all(out, &run)
            .map_err(|e| Failure::operating(format!("writing to {}: {e}", out.display())))?;
        crate::outln!();
        crate::outln!("  wrote {}", out.display());
        for path in written {
            crate::outln!(
                "    {}",
                path.file_name().unwrap_or_default().to_string_lossy()
            );
        }
    }
    if args.keep || args.dir.is_some() {
        crate::outln!("  WALs kept in {}", dir.display());
    }
    Ok(EXIT_OK)
}
