use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::time::Duration;

use super::{EXIT_OK, Failure, SpinArgs, duration_in, parse_rate, resolve, scratch_dir};
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
    #[arg(long, allow_negative_numbers = true, default_value = "10000", value_parser = parse_rate)]
    rate: crate::bench::Rate,
    /// How long to measure, after the warmup: seconds, or 500ms, 2s, 1m;
    /// at most 3000 s.
    #[arg(long, default_value = "10", allow_negative_numbers = true, value_parser = duration_in(0.001, crate::constants::BENCH_SECONDS_MAX))]
    duration: Duration,
    /// Load before measuring starts: seconds, or 500ms, 2s, 1m; at most
    /// 3000 s with --duration.
    #[arg(long, default_value = "2", allow_negative_numbers = true, value_parser = duration_in(0.0, crate::constants::BENCH_SECONDS_MAX))]
    warmup: Duration,
    /// Payload bytes per record, 0 to 1048576.
    #[arg(long, allow_negative_numbers = true, default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=crate::constants::RECORD_PAYLOAD_BYTES_MAX as i64))]
    record_bytes: u32,
    /// Shipper cores (shards), each with its own ring, WAL and connection;
    /// 1 to 256.
    #[arg(long, allow_negative_numbers = true, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=crate::constants::SHARDS_MAX as i64))]
    cores: u32,
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
    /// Idle-tail probe rounds (0 skips the probe), up to 10000.
    #[arg(long, allow_negative_numbers = true, default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=crate::constants::PROBE_ROUNDS_MAX as i64))]
    probe_rounds: u32,
    /// Records per idle-tail burst, 1 to 100000.
    #[arg(long, allow_negative_numbers = true, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=crate::constants::PROBE_BURST_MAX as i64))]
    probe_burst: u32,
    /// Milliseconds of silence before each idle-tail burst, up to 600000.
    #[arg(long, allow_negative_numbers = true, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=crate::constants::PROBE_SILENCE_MS_MAX))]
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
    #[arg(long, allow_negative_numbers = true, value_name = "US", value_parser = clap::value_parser!(u32).range(0..=crate::constants::CPU_DMA_LATENCY_US_MAX as i64))]
    cpu_dma_latency: Option<u32>,
}

pub(super) fn run(args: BenchArgs) -> Result<i32, Failure> {
    use crate::constants::BENCH_SECONDS_MAX;
    let (duration, warmup) = (args.duration, args.warmup);
    if (duration + warmup).as_secs_f64() > BENCH_SECONDS_MAX {
        return Err(Failure::usage(format!(
            "--duration plus --warmup is at most {BENCH_SECONDS_MAX} s"
        )));
    }
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
        record_bytes: args.record_bytes as usize,
        cores: args.cores as usize,
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
