use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{EXIT_OK, Failure, counted, cpu_index, duration_in, number_in, run_shard, scratch_dir};
use crate::frame::{self};
use crate::report::{LatencySummary, kernel_release};
use crate::shard::ShardConfig;
use crate::wal::Durability;
use crate::wal::WalIo;

/// Benchmark the WAL alone: a generator thread appends fixed-size records as
/// fast as the WAL takes them (closed loop), on one core.
///
/// Prints its configuration, records/s, MB/s, commits and the commit and
/// append→durable latency percentiles. `ringship bench` measures the whole
/// pipeline, receiver included; this measures the WAL apart from it.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    ringship wal-bench\n  \
    ringship wal-bench --record-bytes 4096 --durability none --json")]
pub(super) struct WalBenchArgs {
    /// WAL directory (default: a fresh temporary directory, removed after).
    /// A directory that already holds a WAL is refused, unless --reuse-wal:
    /// the synthetic records would join its records, and a shipper would
    /// ship them later (a live one holds the directory's lock, and
    /// wal-bench exits 2).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Append to the WAL already in --dir.
    #[arg(long, requires = "dir")]
    reuse_wal: bool,
    /// Keep the WAL directory afterwards.
    #[arg(long)]
    keep: bool,
    /// Payload bytes per record, 0 to 1048576.
    #[arg(long, allow_negative_numbers = true, default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=crate::constants::RECORD_PAYLOAD_BYTES_MAX as i64))]
    record_bytes: u32,
    /// How long to run (ignored when --records is given): seconds, or
    /// 500ms, 2s, 1m; at most 3000 s.
    #[arg(long, allow_negative_numbers = true, default_value = "5", value_parser = duration_in(0.001, crate::constants::BENCH_SECONDS_MAX))]
    duration: Duration,
    /// Append exactly this many records instead of running for --duration.
    #[arg(long, allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(1..))]
    records: Option<u64>,
    /// Open loop: offer this many records per second, each stamped with its
    /// intended time on the schedule (so a stall shows in the latency instead
    /// of hiding it). Default: closed loop, as fast as the WAL takes them.
    #[arg(long, allow_negative_numbers = true, value_parser = number_in(1.0, crate::constants::RATE_PER_S_MAX))]
    rate: Option<f64>,
    #[arg(long, value_enum, default_value_t = Durability::Fsync)]
    durability: Durability,
    /// CPU to pin the WAL core to, counted among those this process may use.
    #[arg(long, allow_negative_numbers = true, default_value = "0", value_parser = cpu_index)]
    cpu: usize,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
pub(super) struct WalBenchSummary {
    record_payload_bytes: usize,
    durability: Durability,
    ring_flags: String,
    kernel: String,
    segment_size_bytes: u64,
    commit_bytes_max: usize,
    commit_chains_max: usize,
    records: u64,
    /// `--rate`: records due before `--duration` ended that the WAL did not
    /// take in time, so they were not offered.
    not_offered_records: u64,
    elapsed_ns: u64,
    records_per_s: f64,
    payload_bytes_per_s: f64,
    wal_bytes_per_s: f64,
    commits: u64,
    records_per_commit: f64,
    short_writes: u64,
    /// Commits written inline on the core (`--durability none`, idle WAL).
    inline_commits: u64,
    segments_created: u64,
    commit_latency: LatencySummary,
    append_to_durable: LatencySummary,
}

pub(super) fn run(args: WalBenchArgs) -> Result<i32, Failure> {
    if let Some(dir) = &args.dir
        && !args.reuse_wal
        && crate::wal::holds_wal(dir)
    {
        return Err(Failure::usage(format!(
            "--dir {} already holds a WAL: its synthetic records would join that WAL's records \
             (and a live shipper would ship them); give an empty directory, or --reuse-wal",
            dir.display()
        )));
    }
    let (dir, _temp) = scratch_dir(args.dir.as_ref(), args.keep, "ringship-wal-bench-")?;
    let config = ShardConfig {
        dir: dir.clone(),
        shard: 0,
        cpu: Some(args.cpu),
        durability: args.durability,
        wal_io: WalIo::Buffered,
        sink: None,
        retain_segments: None,
        ack_timeout: Duration::ZERO,
        latency_window: None,
        spin: Duration::ZERO,
    };
    let produced = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let progress = progress_bar(&args, produced.clone(), done.clone());
    let payload = vec![b'x'; args.record_bytes as usize];
    let deadline = args.duration;
    let limit = args.records;
    let rate = args.rate;
    let started = Instant::now();
    let counter = produced.clone();

    let (report, fed) = run_shard(config, (false, false), move |sender| {
        let schedule = crate::bench::Schedule {
            started: Instant::now(),
            started_ns: frame::now_ns(),
            rate,
            limit,
            deadline,
        };
        crate::bench::generate(sender, &payload, schedule, &counter, None)
    })?;
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    if let Some(handle) = progress {
        let _ = handle.join();
    }
    let generated = fed.map_err(Failure::operating)?;

    let records = report.wal.records;
    let secs = elapsed.as_secs_f64();
    let summary = WalBenchSummary {
        record_payload_bytes: args.record_bytes as usize,
        durability: args.durability,
        ring_flags: report.ring_flags.to_string(),
        kernel: kernel_release(),
        segment_size_bytes: crate::constants::SEGMENT_SIZE_BYTES,
        commit_bytes_max: crate::constants::COMMIT_BYTES_MAX,
        commit_chains_max: crate::constants::COMMIT_CHAINS_MAX,
        records,
        not_offered_records: generated.not_offered,
        elapsed_ns: elapsed.as_nanos() as u64,
        records_per_s: records as f64 / secs,
        payload_bytes_per_s: report.wal.payload_bytes as f64 / secs,
        wal_bytes_per_s: (report.wal.payload_bytes
            + records * crate::constants::RECORD_HEADER_BYTES as u64)
            as f64
            / secs,
        commits: report.wal.commits,
        records_per_commit: records as f64 / report.wal.commits.max(1) as f64,
        short_writes: report.wal.short_writes,
        inline_commits: report.wal.inline_commits,
        segments_created: report.wal.segments_created,
        commit_latency: LatencySummary::of(&report.wal.commit_latency_ns),
        append_to_durable: LatencySummary::of(report.wal.append_to_durable_ns.total()),
    };
    if args.dir.is_none() && !args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if args.json {
        crate::outln!(
            "{}",
            serde_json::to_string(&summary).expect("summary serialises")
        );
        return Ok(EXIT_OK);
    }
    let s = &summary;
    crate::outln!(
        "wal-bench: {} B records · durability {} · ring {} · kernel {} · segment {} MiB · commit ≤ {} MiB · {} chains",
        s.record_payload_bytes,
        s.durability,
        s.ring_flags,
        s.kernel,
        s.segment_size_bytes >> 20,
        s.commit_bytes_max >> 20,
        s.commit_chains_max
    );
    crate::outln!(
        "  {} in {:.2} s: {:.0} records/s · {:.1} MB/s payload · {:.1} MB/s WAL",
        counted(s.records, "record"),
        secs,
        s.records_per_s,
        s.payload_bytes_per_s / 1e6,
        s.wal_bytes_per_s / 1e6
    );
    crate::outln!(
        "  {} · {:.0} records/commit · {} · {}",
        counted(s.commits, "commit"),
        s.records_per_commit,
        counted(s.segments_created, "segment"),
        counted(s.short_writes, "short write")
    );
    if s.not_offered_records > 0 {
        crate::outln!(
            "  warning: the WAL could not keep up: {} records due before the deadline were not offered",
            s.not_offered_records
        );
    }
    crate::outln!("  commit latency     {}", s.commit_latency.human());
    crate::outln!("  append → durable   {}", s.append_to_durable.human());
    if args.keep || args.dir.is_some() {
        crate::outln!("  WAL kept in {}", dir.display());
    }
    Ok(EXIT_OK)
}

/// A progress bar on a terminal; nothing when stderr is not one.
fn progress_bar(
    args: &WalBenchArgs,
    produced: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
) -> Option<std::thread::JoinHandle<()>> {
    if !io::stderr().is_terminal() || args.json {
        return None;
    }
    let records = args.records;
    let duration = args.duration;
    Some(std::thread::spawn(move || {
        let bar = match records {
            Some(n) => indicatif::ProgressBar::new(n),
            None => indicatif::ProgressBar::new((duration.as_secs_f64() * 10.0) as u64),
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
                .expect("static template"),
        );
        let started = Instant::now();
        // The bar is cosmetic and runs on its own thread: redrawing it on a
        // 100 ms tick gates nothing in the data path.
        while !done.load(Ordering::Relaxed) {
            let n = produced.load(Ordering::Relaxed);
            match records {
                Some(_) => bar.set_position(n),
                None => bar.set_position((started.elapsed().as_secs_f64() * 10.0) as u64),
            }
            bar.set_message(format!("{n} records"));
            std::thread::sleep(Duration::from_millis(100));
        }
        bar.finish_and_clear();
    }))
}
