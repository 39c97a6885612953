//! The command line. Command names, flags, output files and exit codes are a
//! contract that users' scripts rely on: add to them, never rename them.
//!
//! Exit codes: 0 success; 1 an operating error or corruption found;
//! 2 bad usage or bad input (clap's own code for bad flags).

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::constants::{RECORD_PAYLOAD_BYTES_MAX, SHARDS_MAX};
use crate::frame::{self, RecordRef};
use crate::receive::{Receiver, ReceiverConfig};
use crate::report::{LatencySummary, kernel_release};
use crate::shard::{DurableListener, InboxSender, Shard, ShardConfig, ShardReport, SinkConfig};
use crate::sink::tcp::{SendMode, TcpConfig};
use crate::source::lines::{self, IngestError};
use crate::wal::Durability;
use crate::wal::WalIo;
use crate::wal::recovery::{self, ShardScan};
use crate::wal::segment::shard_dir;

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "ringship",
    version,
    about = "io_uring write-ahead log and log shipper",
    long_about = "ringship appends records to a per-core write-ahead log with io_uring \
                  (crc32c framing, group commit with fdatasync, preallocated segments, crash \
                  recovery).\n\nExit codes: 0 success, 1 operating error or corruption, 2 bad usage or input.",
    after_help = "Examples:\n  \
        ringship bench                                      # the whole pipeline, in-process receiver, ~15 s\n  \
        ringship compare base/summary.json -- cur/summary.json  # latency regression gate\n  \
        ringship wal-bench                                  # WAL throughput and commit latency, temp dir\n  \
        seq 1000000 | ringship ship --dir /var/lib/ringship  # append stdin lines durably\n  \
        ringship dump --dir /var/lib/ringship --format json # print them back\n  \
        ringship verify --dir /var/lib/ringship             # check every segment"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Bench(BenchArgs),
    Compare(CompareArgs),
    Ship(ShipArgs),
    Receive(ReceiveArgs),
    Dump(DumpArgs),
    Verify(VerifyArgs),
    WalBench(WalBenchArgs),
}

/// Append each input line (without its newline) as one record to the WAL.
///
/// At EOF, waits until every record is durable, prints a summary and exits 0.
/// Restarting on the same --dir recovers the WAL (cutting a torn tail) and
/// continues the sequence. All lines of one input go to one shard, in order.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    tail -F app.log | ringship ship --dir /var/lib/ringship\n  \
    ringship ship --dir wal --input big.log --durability none --json\n  \
    ringship ship --dir wal --report-durable < lines.txt   # prints `durable SEQ` as it advances")]
struct ShipArgs {
    /// WAL directory; shard K lives in DIR/K/.
    #[arg(long)]
    dir: PathBuf,
    /// Input file, or - for stdin.
    #[arg(long, default_value = "-")]
    input: String,
    /// Shard (and core) this input goes to.
    #[arg(long, default_value_t = 0)]
    shard: u32,
    /// CPU to pin the core to (default: the shard number modulo the CPUs).
    #[arg(long)]
    cpu: Option<usize>,
    /// fsync: a record is durable once fdatasync'd. none: skip fdatasync, to
    /// measure the pipeline apart from the disk.
    #[arg(long, value_enum, default_value_t = Durability::Fsync)]
    durability: Durability,
    /// Print `durable SEQ` on stdout each time the durable watermark advances.
    #[arg(long)]
    report_durable: bool,
    /// With --peer: print `acked SEQ` on stdout each time the peer's
    /// acknowledged watermark advances.
    #[arg(long)]
    report_acked: bool,
    /// Print the summary as one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Ship the durable tail to the receiver at HOST:PORT. Without it, only
    /// the local WAL is written.
    #[arg(long)]
    peer: Option<String>,
    /// This source's name at the receiver, [A-Za-z0-9._-]{1,64}
    /// (default: the hostname).
    #[arg(long)]
    source: Option<String>,
    /// At EOF, how many seconds to keep trying to get every record
    /// acknowledged before exiting 1 (the rest stays in the WAL).
    #[arg(long, default_value_t = 30.0)]
    ack_timeout: f64,
    /// How bytes go from segment to socket: splice (page cache → pipe →
    /// socket, no copy to user memory), zc (O_DIRECT segments; SEND_ZC from
    /// the registered commit buffers), copy (pread + send, the baseline).
    #[arg(long, value_enum, default_value_t = SendMode::Splice)]
    send_mode: SendMode,
    /// With --peer: keep N sealed segments that the peer has fully
    /// acknowledged and delete older ones (default: keep every segment).
    /// Nothing unacknowledged is ever deleted.
    #[arg(long, value_name = "N")]
    retain_segments: Option<usize>,
    #[command(flatten)]
    spin: SpinArgs,
}

/// `--spin-us`, shared by `ship`, `receive` and `bench`.
#[derive(clap::Args, Debug)]
struct SpinArgs {
    /// Before a core sleeps, busy-poll its ring this many µs for a
    /// completion (0: sleep at once). Trades CPU for latency: on a VM, where
    /// every sleep and wake-up costs tens of µs, a short spin catches an ack
    /// or the next record without paying for either. Up to 10000.
    #[arg(long, value_name = "US", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=crate::constants::SPIN_US_MAX))]
    spin_us: u64,
}

impl SpinArgs {
    fn budget(&self) -> Duration {
        Duration::from_micros(self.spin_us)
    }
}

/// Receive records from shippers: verify, persist, acknowledge.
///
/// Each (source, shard) is stored in DIR/<source>/<shard>/ in the WAL's own
/// format, so `dump --dir DIR/<source>` and `verify` work on it. A seq is
/// acknowledged only once the receiver's fdatasync covers it (unless
/// --durability none). Runs until SIGINT or SIGTERM.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    ringship receive --dir /var/lib/ringship-recv\n  \
    ringship receive --listen 127.0.0.1:0 --dir recv   # prints the port it got")]
struct ReceiveArgs {
    /// Address to listen on. A non-loopback address needs --insecure until
    /// authentication is built.
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: String,
    #[arg(long)]
    dir: PathBuf,
    /// Serve connections on N cores, each a thread with its own io_uring,
    /// pinned (with its io-wq workers) to CPU k of those this process may
    /// use. A connection goes to the least loaded core; among equals, to
    /// the core counted from the last CPU (shard 0 → CPU N-1), away from
    /// the CPU a shipper on the same host pins that shard to. Default: one
    /// core per CPU.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=crate::constants::SHARDS_MAX as i64))]
    cores: Option<u32>,
    #[arg(long, value_enum, default_value_t = Durability::Fsync)]
    durability: Durability,
    /// Allow a non-loopback --listen without authentication.
    #[arg(long)]
    insecure: bool,
    #[command(flatten)]
    spin: SpinArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DumpFormat {
    /// The payload of each record, one per line, byte-exact.
    Text,
    /// One JSON object per line: shard, seq, append_ts_ns and payload
    /// (`payload` when it is UTF-8, else `payload_hex`).
    Json,
}

/// Print the records of a WAL, in seq order, shard by shard.
///
/// Reads only: a torn tail is reported on stderr and not printed.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    ringship dump --dir wal > lines.txt\n  \
    ringship dump --dir wal --shard 0 --from-seq 1000 --format json | head")]
struct DumpArgs {
    #[arg(long)]
    dir: PathBuf,
    /// Only this shard (default: every shard, in order).
    #[arg(long)]
    shard: Option<u32>,
    /// Skip records below this seq.
    #[arg(long, default_value_t = 0)]
    from_seq: u64,
    #[arg(long, value_enum, default_value_t = DumpFormat::Text)]
    format: DumpFormat,
}

/// Check every segment of every shard: headers, crc32c of every record, seq
/// continuity within and across segments.
///
/// Prints per shard the segments, record count, first and last seq and any
/// torn tail (which the writer cuts on its next start). Exits 1 on
/// corruption, with the segment and byte offset.
#[derive(clap::Args, Debug)]
#[command(after_help = "Example:\n  ringship verify --dir /var/lib/ringship")]
struct VerifyArgs {
    #[arg(long)]
    dir: PathBuf,
}

/// Benchmark the WAL alone: a generator thread appends fixed-size records as
/// fast as the WAL takes them (closed loop), on one core.
///
/// Prints its configuration, records/s, MB/s, commits and the commit and
/// append→durable latency percentiles. This is the main job until
/// `ringship bench` (end-to-end, with a receiver) exists.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    ringship wal-bench\n  \
    ringship wal-bench --record-bytes 4096 --durability none --json")]
struct WalBenchArgs {
    /// WAL directory (default: a fresh temporary directory, removed after).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the WAL directory afterwards.
    #[arg(long)]
    keep: bool,
    /// Payload bytes per record.
    #[arg(long, default_value_t = 100)]
    record_bytes: usize,
    /// Seconds to run (ignored when --records is given).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Append exactly this many records instead of running for --duration.
    #[arg(long)]
    records: Option<u64>,
    /// Open loop: offer this many records per second, each stamped with its
    /// intended time on the schedule (so a stall shows in the latency instead
    /// of hiding it). Default: closed loop, as fast as the WAL takes them.
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long, value_enum, default_value_t = Durability::Fsync)]
    durability: Durability,
    /// CPU to pin the WAL core to.
    #[arg(long, default_value_t = 0)]
    cpu: usize,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

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
struct BenchArgs {
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

impl ValueEnum for SendMode {
    fn value_variants<'a>() -> &'a [Self] {
        &[SendMode::Splice, SendMode::Zc, SendMode::Copy]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        let help = match self {
            SendMode::Splice => {
                "io_uring SPLICE, segment (page cache) → pipe → socket, for the segment being \
                 written; small increments and a backlog go by copy"
            }
            SendMode::Zc => {
                "O_DIRECT segments, and io_uring SEND_ZC from the registered commit buffers \
                 (a backlog: read into a registered buffer first). Pays off on a real NIC; \
                 loopback always copies"
            }
            SendMode::Copy => "pread into a buffer, then io_uring SEND: the baseline",
        };
        let name = match self {
            SendMode::Splice => "splice",
            SendMode::Zc => "zc",
            SendMode::Copy => "copy",
        };
        Some(clap::builder::PossibleValue::new(name).help(help))
    }
}

fn parse_rate(s: &str) -> Result<crate::bench::Rate, String> {
    if s == "max" {
        return Ok(crate::bench::Rate::Max);
    }
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 1.0 => Ok(crate::bench::Rate::PerSecond(r)),
        _ => Err(format!(
            "`{s}` is not a rate: give records per second (at least 1), or `max`"
        )),
    }
}

/// Compare bench reports: the latency regression gate for CI.
///
/// Give one or more base summary.json files, then `--`, then one or more
/// current ones. With several runs on a side, each figure's median is used.
/// Prints each tracked figure (base, current, change in %) and exits 0 when
/// none rose by more than --max-regression-pct, 1 when one did, and 2 on bad
/// input: an unreadable file, a report of another version, a missing
/// figure, or configurations that differ (unless --force). Options may come
/// before or after the `--`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    ringship compare baseline.json -- results/summary.json\n  \
    ringship compare base1.json base2.json base3.json -- cur1.json cur2.json cur3.json --max-regression-pct 20\n  \
    ringship compare a.json -- b.json --stage all --percentiles 50,99,99.9,max")]
struct CompareArgs {
    /// Base reports (summary.json from `bench --out`).
    #[arg(required = true)]
    base: Vec<PathBuf>,
    /// Current reports, after `--`.
    #[arg(last = true, required = true)]
    current: Vec<PathBuf>,
    /// A figure that rose by more than this percentage is a regression.
    #[arg(long, default_value_t = 10.0)]
    max_regression_pct: f64,
    /// Stage to track (repeatable; `all` for every stage). Default:
    /// append_to_acked.
    #[arg(long)]
    stage: Vec<String>,
    /// Percentiles to track, comma-separated, from 50, 90, 99, 99.9,
    /// 99.99, max. Default: 50,99,99.9.
    #[arg(long, value_delimiter = ',')]
    percentiles: Vec<String>,
    /// Compare even if the reports' configurations differ.
    #[arg(long)]
    force: bool,
    /// Also track the achieved rate (results.achieved_records_per_s): a
    /// drop of more than --max-regression-pct is a regression. Needs
    /// reports of format version 2.
    #[arg(long)]
    track_throughput: bool,
}

/// `compare`'s options may follow the `--` that starts the current
/// reports (`compare BASE -- CUR --max-regression-pct 5`); clap would take
/// them as file names there, so they are moved in front of it.
fn hoist_compare_options(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    const WITH_VALUE: [&str; 3] = ["--max-regression-pct", "--stage", "--percentiles"];
    const FLAGS: [&str; 2] = ["--force", "--track-throughput"];
    if args.get(1).and_then(|a| a.to_str()) != Some("compare") {
        return args;
    }
    let Some(dashes) = args.iter().position(|a| a == "--") else {
        return args;
    };
    let mut head: Vec<std::ffi::OsString> = args[..dashes].to_vec();
    let mut files = Vec::new();
    let mut tail = args[dashes + 1..].iter();
    while let Some(arg) = tail.next() {
        let text = arg.to_str().unwrap_or("");
        let name = text.split('=').next().unwrap_or("");
        if WITH_VALUE.contains(&name) {
            head.push(arg.clone());
            if !text.contains('=')
                && let Some(value) = tail.next()
            {
                head.push(value.clone());
            }
        } else if FLAGS.contains(&name) {
            head.push(arg.clone());
        } else {
            files.push(arg.clone());
        }
    }
    head.push("--".into());
    head.extend(files);
    head
}

/// Parses the arguments, runs the command, returns the exit code.
pub fn main() -> i32 {
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RINGSHIP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = match Cli::try_parse_from(hoist_compare_options(std::env::args_os().collect())) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
        }
    };
    let result = match cli.command {
        Command::Bench(args) => bench(args),
        Command::Compare(args) => compare(args),
        Command::Ship(args) => ship(args),
        Command::Receive(args) => receive(args),
        Command::Dump(args) => dump(args),
        Command::Verify(args) => verify(args),
        Command::WalBench(args) => wal_bench(args),
    };
    match result {
        // A report that could not be written (a full disk, not a closed
        // pipe) fails a command that otherwise succeeded: its output is
        // machine-read (`--json > r.json`).
        Ok(EXIT_OK) if crate::report::stdout_failed() => EXIT_FAILURE,
        Ok(code) => code,
        Err(Failure { code, message }) => {
            eprintln!("ringship: error: {message}");
            code
        }
    }
}

/// An error to print, with the exit code it maps to.
struct Failure {
    code: i32,
    message: String,
}

impl Failure {
    fn operating(e: impl std::fmt::Display) -> Failure {
        Failure {
            code: EXIT_FAILURE,
            message: e.to_string(),
        }
    }
    fn usage(e: impl std::fmt::Display) -> Failure {
        Failure {
            code: EXIT_USAGE,
            message: e.to_string(),
        }
    }
}

fn check_shard(shard: u32) -> Result<(), Failure> {
    if shard >= SHARDS_MAX {
        return Err(Failure::usage(format!(
            "--shard {shard} is out of range: at most {SHARDS_MAX} shards (0..{})",
            SHARDS_MAX - 1
        )));
    }
    Ok(())
}

/// The CLI's side of a shard: `durable SEQ` and `acked SEQ` lines on
/// request.
struct CliListener {
    report_durable: bool,
    report_acked: bool,
}

impl DurableListener for CliListener {
    fn on_durable(&mut self, durable_seq: u64) {
        if self.report_durable {
            crate::outln!("durable {durable_seq}");
        }
    }

    fn on_acked(&mut self, acked_seq: u64) {
        if self.report_acked {
            crate::outln!("acked {acked_seq}");
        }
    }
}

/// Runs one shard fed by `produce`, which runs here once the shard's WAL is
/// open (so a bad --dir fails before any input is read, and accept
/// timestamps do not include recovery), then closes it.
fn run_shard<T, E>(
    config: ShardConfig,
    (report_durable, report_acked): (bool, bool),
    produce: impl FnOnce(&InboxSender) -> Result<T, E>,
) -> Result<(ShardReport, Result<T, E>), Failure> {
    let listener = CliListener {
        report_durable,
        report_acked,
    };
    let handle = Shard::spawn_with_listener(config, listener).map_err(Failure::operating)?;
    let produced = produce(handle.inbox());
    let report = handle.close().map_err(Failure::operating)?;
    Ok((report, produced))
}

#[derive(Serialize)]
struct ShipSummary {
    shard: u32,
    dir: PathBuf,
    durability: Durability,
    ring_flags: String,
    kernel: String,
    records: u64,
    payload_bytes: u64,
    first_seq: Option<u64>,
    last_durable_seq: u64,
    commits: u64,
    short_writes: u64,
    /// Commits written inline on the core (`--durability none`, idle WAL).
    inline_commits: u64,
    segments_created: u64,
    recovered_records: u64,
    recovered_torn_tail: Option<String>,
    commit_latency: LatencySummary,
    append_to_durable: LatencySummary,
    peer: Option<String>,
    source: Option<String>,
    send_mode: Option<SendMode>,
    acked_seq: Option<u64>,
    sent_bytes: Option<u64>,
    connects: Option<u64>,
    copy_bytes: Option<u64>,
    splice_bytes: Option<u64>,
    zc_bytes: Option<u64>,
    zc_copied_bytes: Option<u64>,
    /// Of `zc_bytes`, those sent from the WAL's O_DIRECT commit buffers.
    zc_commit_bytes: Option<u64>,
    /// The WAL's segments were written with O_DIRECT (`--send-mode zc`).
    direct_io: bool,
    append_to_acked: Option<LatencySummary>,
}

fn resolve(addr: &str) -> Result<std::net::SocketAddr, Failure> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .map_err(|e| Failure::usage(format!("--peer {addr}: {e}")))?
        .next()
        .ok_or_else(|| Failure::usage(format!("--peer {addr}: no address")))
}

fn source_name(given: Option<&str>) -> Result<String, Failure> {
    let name = match given {
        Some(name) => name.to_string(),
        None => nix::unistd::gethostname()
            .map_err(Failure::operating)?
            .to_string_lossy()
            .into_owned(),
    };
    crate::protocol::validate_source(&name).map_err(|e| {
        Failure::usage(format!(
            "--source: {e}{}",
            if given.is_none() {
                " (from the hostname; pass --source)"
            } else {
                ""
            }
        ))
    })?;
    Ok(name)
}

fn ship(args: ShipArgs) -> Result<i32, Failure> {
    check_shard(args.shard)?;
    let input: Box<dyn Read + Send> = if args.input == "-" {
        Box::new(io::stdin())
    } else {
        Box::new(
            File::open(&args.input)
                .map_err(|e| Failure::usage(format!("cannot open --input {}: {e}", args.input)))?,
        )
    };
    if !(args.ack_timeout >= 0.0 && args.ack_timeout.is_finite()) {
        return Err(Failure::usage(
            "--ack-timeout must be a non-negative number of seconds",
        ));
    }
    let sink = match &args.peer {
        Some(peer) => Some(TcpConfig {
            peer: resolve(peer)?,
            source: source_name(args.source.as_deref())?,
            send_mode: args.send_mode,
        }),
        None => None,
    };
    let source = sink.as_ref().map(|s| s.source.clone());
    let config = ShardConfig {
        dir: args.dir.clone(),
        shard: args.shard,
        cpu: Some(args.cpu.unwrap_or(args.shard as usize)),
        durability: args.durability,
        // Zero-copy sends the durable tail from the WAL's O_DIRECT commit
        // buffers, so `--send-mode zc` opens the WAL with O_DIRECT.
        wal_io: if sink.is_some() && args.send_mode == SendMode::Zc {
            WalIo::Direct
        } else {
            WalIo::Buffered
        },
        sink: sink.map(SinkConfig::Tcp),
        retain_segments: args.retain_segments,
        ack_timeout: Duration::from_secs_f64(args.ack_timeout),
        latency_window: None,
        spin: args.spin.budget(),
    };
    let (report, fed) = run_shard(config, (args.report_durable, args.report_acked), |sender| {
        lines::feed_lines(input, sender)
    })?;

    let summary = ShipSummary {
        shard: report.shard,
        dir: args.dir.clone(),
        durability: args.durability,
        ring_flags: report.ring_flags.to_string(),
        kernel: kernel_release(),
        records: report.wal.records,
        payload_bytes: report.wal.payload_bytes,
        first_seq: report.first_appended_seq,
        last_durable_seq: report.durable_seq,
        commits: report.wal.commits,
        short_writes: report.wal.short_writes,
        inline_commits: report.wal.inline_commits,
        segments_created: report.wal.segments_created,
        recovered_records: report.recovered.records,
        recovered_torn_tail: report.recovered.torn.as_ref().map(|t| {
            format!(
                "{} at byte {}: {} ({} bytes cut)",
                t.segment.display(),
                t.offset_bytes,
                t.reason,
                t.cut_bytes
            )
        }),
        commit_latency: LatencySummary::of(&report.wal.commit_latency_ns),
        append_to_durable: LatencySummary::of(report.wal.append_to_durable_ns.total()),
        peer: args.peer.clone(),
        source,
        send_mode: args.peer.as_ref().map(|_| args.send_mode),
        acked_seq: report.acked_seq,
        sent_bytes: report.ship.as_ref().map(|s| s.sent_bytes),
        connects: report.ship.as_ref().map(|s| s.connects),
        copy_bytes: report.ship.as_ref().map(|s| s.copy_bytes),
        splice_bytes: report.ship.as_ref().map(|s| s.splice_bytes),
        zc_bytes: report.ship.as_ref().map(|s| s.zc_bytes),
        zc_copied_bytes: report.ship.as_ref().map(|s| s.zc_copied_bytes),
        zc_commit_bytes: report.ship.as_ref().map(|s| s.zc_commit_bytes),
        direct_io: report.wal.direct_io,
        append_to_acked: report
            .ship
            .as_ref()
            .map(|s| LatencySummary::of(s.append_to_acked_ns.total())),
    };
    if args.json {
        crate::outln!(
            "{}",
            serde_json::to_string(&summary).expect("summary serialises")
        );
    } else {
        print_ship_summary(&summary);
    }
    match fed {
        Ok(_) => Ok(EXIT_OK),
        Err(e @ IngestError::LineTooLong { .. }) => Err(Failure::usage(e)),
        Err(e) => Err(Failure::operating(e)),
    }
}

fn print_ship_summary(s: &ShipSummary) {
    let seqs = match s.first_seq {
        Some(first) => format!("seq {first}..{}", s.last_durable_seq),
        None => "nothing new".into(),
    };
    crate::outln!(
        "shipped {} records ({} payload bytes) to shard {} in {}: {seqs}; last durable seq {}",
        s.records,
        s.payload_bytes,
        s.shard,
        s.dir.display(),
        s.last_durable_seq
    );
    crate::outln!(
        "  durability {} · ring {} · kernel {} · {} commits · {} segments created",
        s.durability,
        s.ring_flags,
        s.kernel,
        s.commits,
        s.segments_created
    );
    crate::outln!("  commit latency     {}", s.commit_latency.human());
    crate::outln!("  append → durable   {}", s.append_to_durable.human());
    if let (Some(peer), Some(acked)) = (&s.peer, s.acked_seq) {
        crate::outln!(
            "  shipped to {peer} as {} ({:?}): acked seq {acked}, {} bytes sent \
             ({} spliced, {} sent zero-copy ({} from O_DIRECT commit buffers) of which the \
             kernel copied {}, {} copied), {} connects",
            s.source.as_deref().unwrap_or("?"),
            s.send_mode.unwrap_or(SendMode::Splice),
            s.sent_bytes.unwrap_or(0),
            s.splice_bytes.unwrap_or(0),
            s.zc_bytes.unwrap_or(0),
            s.zc_commit_bytes.unwrap_or(0),
            s.zc_copied_bytes.unwrap_or(0),
            s.copy_bytes.unwrap_or(0),
            s.connects.unwrap_or(0)
        );
    }
    if let Some(acked) = &s.append_to_acked {
        crate::outln!("  append → acked     {}", acked.human());
    }
    if s.recovered_records > 0 || s.recovered_torn_tail.is_some() {
        crate::outln!("  recovered {} records at start", s.recovered_records);
    }
    if let Some(torn) = &s.recovered_torn_tail {
        crate::outln!("  torn tail cut: {torn}");
    }
}

fn receive(args: ReceiveArgs) -> Result<i32, Failure> {
    use std::net::ToSocketAddrs;
    let addr = args
        .listen
        .to_socket_addrs()
        .map_err(|e| Failure::usage(format!("--listen {}: {e}", args.listen)))?
        .next()
        .ok_or_else(|| Failure::usage(format!("--listen {}: no address", args.listen)))?;
    if !addr.ip().is_loopback() && !args.insecure {
        return Err(Failure::usage(format!(
            "--listen {addr} is not a loopback address, and authentication is not built yet: \
             pass --insecure to accept unauthenticated shippers from the network"
        )));
    }
    if args.cores == Some(0) {
        return Err(Failure::usage("--cores must be at least 1"));
    }
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| Failure::operating(format!("creating {}: {e}", args.dir.display())))?;
    // SIGINT and SIGTERM are taken by one thread that stops the receiver
    // cleanly; block them everywhere else before any thread starts.
    let mut signals = nix::sys::signal::SigSet::empty();
    signals.add(nix::sys::signal::Signal::SIGINT);
    signals.add(nix::sys::signal::Signal::SIGTERM);
    signals.thread_block().map_err(Failure::operating)?;
    let receiver = Receiver::bind(
        addr,
        ReceiverConfig {
            dir: args.dir.clone(),
            durability: args.durability,
            cores: args.cores.map_or_else(
                || std::thread::available_parallelism().map_or(1, |n| n.get()),
                |n| n as usize,
            ),
            pin_first_cpu: Some(0),
            latency_window: None,
            spin: args.spin.budget(),
        },
    )
    .map_err(|e| Failure::operating(format!("listening on {addr}: {e}")))?;
    let local = receiver.local_addr().map_err(Failure::operating)?;
    crate::outln!(
        "listening on {local} · dir {} · durability {}",
        args.dir.display(),
        args.durability
    );
    let _ = io::stdout().flush();
    let stopper = receiver.stopper();
    std::thread::spawn(move || {
        if let Ok(signal) = signals.wait() {
            eprintln!("ringship: {signal:?}: finishing open connections");
        }
        stopper.stop();
    });
    let totals = receiver.run().map_err(Failure::operating)?;
    crate::outln!(
        "received {} records ({} payload bytes) over {} connections ({} refused)",
        totals.records,
        totals.payload_bytes,
        totals.connections,
        totals.refused
    );
    Ok(EXIT_OK)
}

fn shards_to_read(dir: &Path, only: Option<u32>) -> Result<Vec<u32>, Failure> {
    if !dir.is_dir() {
        return Err(Failure::usage(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    if let Some(shard) = only {
        check_shard(shard)?;
        if !shard_dir(dir, shard).is_dir() {
            return Err(Failure::usage(format!(
                "no shard {shard} under {}",
                dir.display()
            )));
        }
        return Ok(vec![shard]);
    }
    let shards = recovery::list_shards(dir).map_err(Failure::operating)?;
    if shards.is_empty() {
        return Err(Failure::usage(format!(
            "no shard directories (0, 1, ...) under {}; for a receiver's directory pass DIR/<source>",
            dir.display()
        )));
    }
    Ok(shards)
}

fn dump(args: DumpArgs) -> Result<i32, Failure> {
    let shards = shards_to_read(&args.dir, args.shard)?;
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
    for shard in shards {
        let visit = |record: RecordRef<'_>| -> io::Result<()> {
            if record.seq < args.from_seq {
                return Ok(());
            }
            match args.format {
                DumpFormat::Text => {
                    out.write_all(record.payload)?;
                    out.write_all(b"\n")
                }
                DumpFormat::Json => write_json_record(&mut out, shard, &record),
            }
        };
        match recovery::scan_shard(&shard_dir(&args.dir, shard), shard, visit) {
            Ok(scan) => {
                if let Some(torn) = &scan.torn {
                    eprintln!(
                        "ringship: shard {shard}: torn tail at {} byte {} not printed: {}",
                        torn.segment.display(),
                        torn.offset_bytes,
                        torn.reason
                    );
                }
            }
            Err(recovery::RecoveryError::Io { source, .. })
                if source.kind() == io::ErrorKind::BrokenPipe =>
            {
                return Ok(EXIT_OK);
            }
            Err(e) => {
                let _ = out.flush();
                return Err(Failure::operating(e));
            }
        }
    }
    match out.flush() {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Failure::operating(e)),
        _ => Ok(EXIT_OK),
    }
}

fn write_json_record(out: &mut impl Write, shard: u32, record: &RecordRef<'_>) -> io::Result<()> {
    #[derive(Serialize)]
    struct Line<'a> {
        shard: u32,
        seq: u64,
        append_ts_ns: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        payload: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        payload_hex: Option<String>,
    }
    let text = std::str::from_utf8(record.payload).ok();
    let line = Line {
        shard,
        seq: record.seq,
        append_ts_ns: record.append_ts_ns,
        payload: text,
        payload_hex: text.is_none().then(|| hex(record.payload)),
    };
    serde_json::to_writer(&mut *out, &line)?;
    out.write_all(b"\n")
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn verify(args: VerifyArgs) -> Result<i32, Failure> {
    let shards = shards_to_read(&args.dir, None)?;
    let mut corrupt = 0;
    for shard in shards {
        match recovery::scan_shard(&shard_dir(&args.dir, shard), shard, |_| Ok(())) {
            Ok(scan) => print_verify(&scan),
            Err(e) => {
                crate::outln!("shard {shard}: CORRUPT");
                eprintln!("ringship: error: shard {shard}: {e}");
                corrupt += 1;
            }
        }
    }
    if corrupt > 0 {
        crate::outln!("verify: {corrupt} shard(s) corrupt");
        return Ok(EXIT_FAILURE);
    }
    crate::outln!("verify: ok");
    Ok(EXIT_OK)
}

fn print_verify(scan: &ShardScan) {
    let seqs = match (scan.first_seq, scan.last_seq) {
        (Some(first), Some(last)) => format!("seq {first}..{last}"),
        _ => "no records".into(),
    };
    crate::outln!(
        "shard {}: {} segments, {} records, {seqs}",
        scan.shard,
        scan.segments.len(),
        scan.records
    );
    for seg in &scan.segments {
        let name = seg
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let seqs = match seg.last_seq {
            Some(last) => format!("seq {}..{last}", seg.first_seq),
            None => "empty".into(),
        };
        crate::outln!(
            "  {name}  {} records  {seqs}  {} data bytes",
            seg.records,
            seg.data_end_bytes - crate::constants::SEGMENT_HEADER_BYTES as u64
        );
    }
    if let Some(torn) = &scan.torn {
        crate::outln!(
            "  torn tail: {} at byte {}: {}; {} bytes will be cut when the WAL next opens",
            torn.segment.display(),
            torn.offset_bytes,
            torn.reason,
            torn.cut_bytes
        );
    }
    for tmp in &scan.tmp_files {
        crate::outln!(
            "  leftover of an interrupted segment creation: {} (removed when the WAL next opens)",
            tmp.display()
        );
    }
}

#[derive(Serialize)]
struct WalBenchSummary {
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

fn wal_bench(args: WalBenchArgs) -> Result<i32, Failure> {
    if args.record_bytes > RECORD_PAYLOAD_BYTES_MAX {
        return Err(Failure::usage(format!(
            "--record-bytes {} exceeds the maximum record of {RECORD_PAYLOAD_BYTES_MAX} bytes",
            args.record_bytes
        )));
    }
    if !(args.duration > 0.0 && args.duration <= crate::constants::BENCH_SECONDS_MAX) {
        return Err(Failure::usage(format!(
            "--duration {}: give seconds, above 0 and at most {}",
            args.duration,
            crate::constants::BENCH_SECONDS_MAX
        )));
    }
    if let Some(rate) = args.rate
        && !(rate.is_finite() && rate >= 1.0)
    {
        return Err(Failure::usage(format!(
            "--rate {rate}: give records per second, at least 1"
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
    let payload = vec![b'x'; args.record_bytes];
    let deadline = Duration::from_secs_f64(args.duration);
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
        record_payload_bytes: args.record_bytes,
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
        "  {} records in {:.2} s: {:.0} records/s · {:.1} MB/s payload · {:.1} MB/s WAL",
        s.records,
        secs,
        s.records_per_s,
        s.payload_bytes_per_s / 1e6,
        s.wal_bytes_per_s / 1e6
    );
    crate::outln!(
        "  {} commits · {:.0} records/commit · {} segments · {} short writes",
        s.commits,
        s.records_per_commit,
        s.segments_created,
        s.short_writes
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
            None => indicatif::ProgressBar::new((duration * 10.0) as u64),
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

fn bench(args: BenchArgs) -> Result<i32, Failure> {
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

fn compare(args: CompareArgs) -> Result<i32, Failure> {
    let config = crate::compare::CompareConfig {
        base: args.base,
        current: args.current,
        max_regression_pct: args.max_regression_pct,
        stages: args.stage,
        percentiles: args.percentiles,
        force: args.force,
        track_throughput: args.track_throughput,
    };
    let comparison = crate::compare::compare(&config).map_err(Failure::usage)?;
    crate::compare::print(&config, &comparison);
    Ok(if comparison.regressed() {
        EXIT_FAILURE
    } else {
        EXIT_OK
    })
}

/// The directory a benchmark works in: `dir` if given (created if need
/// be), else a fresh temporary one, removed when the returned guard drops
/// unless `keep`.
fn scratch_dir(
    dir: Option<&PathBuf>,
    keep: bool,
    prefix: &str,
) -> Result<(PathBuf, Option<tempfile::TempDir>), Failure> {
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| Failure::operating(format!("creating {}: {e}", dir.display())))?;
        return Ok((dir.clone(), None));
    }
    // Block SIGINT, SIGTERM and SIGHUP before the temporary directory exists and
    // before any thread starts (threads inherit the mask), so that one
    // thread takes them and removes it: an interrupted run (Ctrl-C, a CI
    // timeout) leaves no scratch directory behind.
    let signals = if keep {
        None
    } else {
        let mut set = nix::sys::signal::SigSet::empty();
        set.add(nix::sys::signal::Signal::SIGINT);
        set.add(nix::sys::signal::Signal::SIGTERM);
        set.add(nix::sys::signal::Signal::SIGHUP);
        set.thread_block().map_err(Failure::operating)?;
        Some(set)
    };
    let temp = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(Failure::operating)?;
    if keep {
        return Ok((temp.keep(), None));
    }
    let path = temp.path().to_path_buf();
    if let Some(set) = signals {
        let remove = path.clone();
        std::thread::Builder::new()
            .name("ringship-signals".into())
            .spawn(move || {
                if let Ok(signal) = set.wait() {
                    // The cores keep writing until the process exits: a
                    // segment created during the removal makes it fail, so
                    // try again. Once the directory is gone, a rotation
                    // cannot create anything in it.
                    for _ in 0..100 {
                        if std::fs::remove_dir_all(&remove).is_ok() || !remove.exists() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    eprintln!("ringship: {signal}: stopped; removed {}", remove.display());
                    std::process::exit(128 + signal as i32);
                }
            })
            .map_err(Failure::operating)?;
    }
    Ok((path, Some(temp)))
}
