use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::{
    EXIT_OK, Failure, SpinArgs, check_shard, counted, cpu_index, duration_in, resolve, run_shard,
    source_name,
};
use crate::report::{LatencySummary, kernel_release};
use crate::shard::{ShardConfig, SinkConfig};
use crate::sink::tcp::{SendMode, TcpConfig};
use crate::source::lines::{self, IngestError};
use crate::wal::Durability;
use crate::wal::WalIo;

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
pub(super) struct ShipArgs {
    /// WAL directory; shard K lives in DIR/K/.
    #[arg(long)]
    dir: PathBuf,
    /// Input file, or - for stdin.
    #[arg(long, default_value = "-")]
    input: String,
    /// Shard (and core) this input goes to, 0 to 255.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..crate::constants::SHARDS_MAX as i64))]
    shard: u32,
    /// Shards (cores) this process runs. An --input stream is one ordered
    /// sequence, so it takes one shard: 1, the default, is all --input
    /// allows. (Sources that can be spread over cores, followed files and
    /// the ingest socket, come later.)
    #[arg(long, allow_negative_numbers = true, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=crate::constants::SHARDS_MAX as i64))]
    cores: u32,
    /// CPU to pin the core to, counted among those this process may use
    /// (default: the shard number modulo the CPUs).
    #[arg(long, allow_negative_numbers = true, value_parser = cpu_index)]
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
    /// At EOF, how long to keep trying to get every record acknowledged
    /// before exiting 1 (the rest stays in the WAL): seconds, or 500ms, 2s,
    /// 1m; 0 to 86400 s.
    #[arg(long, default_value = "30", allow_negative_numbers = true, value_parser = duration_in(0.0, crate::constants::ACK_TIMEOUT_S_MAX))]
    ack_timeout: Duration,
    /// How bytes go from segment to socket: splice (page cache → pipe →
    /// socket, no copy to user memory), zc (O_DIRECT segments; SEND_ZC from
    /// the registered commit buffers), copy (pread + send, the baseline).
    #[arg(long, value_enum, default_value_t = SendMode::Splice)]
    send_mode: SendMode,
    /// With --peer: keep N sealed segments that the peer has fully
    /// acknowledged and delete older ones (default: keep every segment).
    /// Nothing unacknowledged is ever deleted.
    #[arg(long, allow_negative_numbers = true, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=crate::constants::SEGMENTS_PER_SHARD_MAX as i64))]
    retain_segments: Option<u32>,
    #[command(flatten)]
    spin: SpinArgs,
}

#[derive(Serialize)]
pub(super) struct ShipSummary {
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

pub(super) fn run(args: ShipArgs) -> Result<i32, Failure> {
    let json = args.json;
    let result = ship(args);
    // With --json, a failure is a JSON object too: a script reading stdout
    // gets an answer either way.
    if json && let Err(failure) = &result {
        #[derive(Serialize)]
        struct Error<'a> {
            error: &'a str,
            exit_code: i32,
        }
        let line = Error {
            error: &failure.message,
            exit_code: failure.code,
        };
        crate::outln!("{}", serde_json::to_string(&line).expect("serialises"));
    }
    result
}

fn ship(args: ShipArgs) -> Result<i32, Failure> {
    check_shard(args.shard)?;
    if args.cores != 1 {
        return Err(Failure::usage(format!(
            "--cores {}: an --input stream is one ordered sequence and goes to one shard; \
             --cores must be 1 (use --shard to choose which)",
            args.cores
        )));
    }
    if args.peer.is_none() {
        // A bad name is a mistake whether or not it is used.
        if let Some(name) = &args.source {
            crate::protocol::validate_source(name)
                .map_err(|e| Failure::usage(format!("--source: {e}")))?;
        }
        for (flag, given) in [
            ("--retain-segments", args.retain_segments.is_some()),
            ("--source", args.source.is_some()),
            ("--report-acked", args.report_acked),
        ] {
            if given {
                eprintln!(
                    "ringship: warning: {flag} has no effect without --peer: nothing is shipped, \
                     so nothing is acknowledged or deleted"
                );
            }
        }
    }
    let input: Box<dyn Read + Send> = if args.input == "-" {
        Box::new(io::stdin())
    } else {
        Box::new(
            File::open(&args.input)
                .map_err(|e| Failure::usage(format!("cannot open --input {}: {e}", args.input)))?,
        )
    };
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
        retain_segments: args.retain_segments.map(|n| n as usize),
        ack_timeout: args.ack_timeout,
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
        "shipped {} ({} payload bytes) to shard {} in {}: {seqs}; last durable seq {}",
        counted(s.records, "record"),
        s.payload_bytes,
        s.shard,
        s.dir.display(),
        s.last_durable_seq
    );
    crate::outln!(
        "  durability {} · ring {} · kernel {} · {} · {} created",
        s.durability,
        s.ring_flags,
        s.kernel,
        counted(s.commits, "commit"),
        counted(s.segments_created, "segment")
    );
    crate::outln!("  commit latency     {}", s.commit_latency.human());
    crate::outln!("  append → durable   {}", s.append_to_durable.human());
    if let (Some(peer), Some(acked)) = (&s.peer, s.acked_seq) {
        crate::outln!(
            "  shipped to {peer} as {} ({}): acked seq {acked}, {} bytes sent \
             ({} spliced, {} sent zero-copy ({} from O_DIRECT commit buffers) of which the \
             kernel copied {}, {} copied), {}",
            s.source.as_deref().unwrap_or("?"),
            s.send_mode.unwrap_or(SendMode::Splice),
            s.sent_bytes.unwrap_or(0),
            s.splice_bytes.unwrap_or(0),
            s.zc_bytes.unwrap_or(0),
            s.zc_commit_bytes.unwrap_or(0),
            s.zc_copied_bytes.unwrap_or(0),
            s.copy_bytes.unwrap_or(0),
            counted(s.connects.unwrap_or(0), "connect")
        );
    }
    if let Some(acked) = &s.append_to_acked {
        crate::outln!("  append → acked     {}", acked.human());
    }
    if s.recovered_records > 0 || s.recovered_torn_tail.is_some() {
        crate::outln!(
            "  recovered {} at start",
            counted(s.recovered_records, "record")
        );
    }
    if let Some(torn) = &s.recovered_torn_tail {
        crate::outln!("  torn tail cut: {torn}");
    }
}
