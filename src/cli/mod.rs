//! The command line. Command names, flags, output files and exit codes are a
//! contract that users' scripts rely on: add to them, never rename them.
//!
//! Exit codes (docs/cli.md): 0 done; 1 an operating error a retry may fix
//! (and the corruption `verify` reports); 2 bad usage or bad input (clap's
//! own code for bad flags), or a directory another process holds; 3 a
//! condition no restart can fix, for a person to look at: a retention gap,
//! a peer ahead of this WAL, a WAL id mismatch, a protocol version the peer
//! refuses, a WAL that recovery refuses.

use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::constants::SHARDS_MAX;
use crate::shard::{DurableListener, InboxSender, Shard, ShardConfig, ShardReport};
use crate::wal::recovery::{self};
use crate::wal::segment::shard_dir;

mod args;
mod bench;
mod compare;
mod dump;
mod receive;
mod ship;
mod verify;
mod wal_bench;

pub(crate) use self::args::*;
use self::bench::BenchArgs;
use self::compare::CompareArgs;
use self::dump::DumpArgs;
use self::receive::ReceiveArgs;
use self::ship::ShipArgs;
use self::verify::VerifyArgs;
use self::wal_bench::WalBenchArgs;

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_REFUSED: i32 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "ringship",
    version,
    about = "io_uring write-ahead log and log shipper",
    long_about = "ringship appends records to a per-core write-ahead log with io_uring \
                  (crc32c framing, group commit with fdatasync, preallocated segments, crash \
                  recovery).\n\nExit codes: 0 success; 1 an operating error a retry may fix, or corruption \
                  `verify` found; 2 bad usage or input, or a --dir another process holds; 3 a \
                  condition no restart can fix (a retention gap, a peer ahead of this WAL, another \
                  WAL under the same source, a WAL that recovery refuses): see docs/cli.md.",
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
        // Colour codes only where a person reads them: a log file or a
        // journal gets plain text.
        .with_ansi(io::stderr().is_terminal())
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
        Command::Bench(args) => bench::run(args),
        Command::Compare(args) => compare::run(args),
        Command::Ship(args) => ship::run(args),
        Command::Receive(args) => receive::run(args),
        Command::Dump(args) => dump::run(args),
        Command::Verify(args) => verify::run(args),
        Command::WalBench(args) => wal_bench::run(args),
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

/// `1 record`, `2 records`: a count with its noun, plural where it must be.
pub(super) fn counted(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// An error to print, with the exit code it maps to.
pub(super) struct Failure {
    pub(super) code: i32,
    pub(super) message: String,
}

impl Failure {
    pub(super) fn operating(e: impl std::fmt::Display) -> Failure {
        Failure {
            code: EXIT_FAILURE,
            message: e.to_string(),
        }
    }
    pub(super) fn usage(e: impl std::fmt::Display) -> Failure {
        Failure {
            code: EXIT_USAGE,
            message: e.to_string(),
        }
    }

    /// A shard that stopped or could not start, with the exit code its
    /// cause maps to.
    pub(super) fn shard(e: crate::shard::Error) -> Failure {
        let code = match &e {
            crate::shard::Error::Shard(e) => shard_exit_code(e),
            _ => EXIT_FAILURE,
        };
        Failure {
            code,
            message: e.to_string(),
        }
    }
}

/// The exit code of a shard's failure (see the module docs).
pub(super) fn shard_exit_code(e: &crate::shard::ShardError) -> i32 {
    use crate::shard::ShardError;
    use crate::sink::SinkError;
    use crate::wal::WalError;
    match e {
        ShardError::Wal(WalError::Locked(_)) => EXIT_USAGE,
        ShardError::Wal(WalError::OtherWal { .. }) => EXIT_REFUSED,
        ShardError::Wal(WalError::Recovery(e)) => recovery_exit_code(e),
        ShardError::Sink(
            SinkError::RetentionGap { .. } | SinkError::PeerAhead { .. } | SinkError::Refused(_),
        ) => EXIT_REFUSED,
        _ => EXIT_FAILURE,
    }
}

/// The exit code of a WAL that recovery refused: 3, unless it could not
/// be read at all (1: a retry may fix it).
pub(super) fn recovery_exit_code(e: &recovery::RecoveryError) -> i32 {
    match e {
        recovery::RecoveryError::Io { .. } => EXIT_FAILURE,
        _ => EXIT_REFUSED,
    }
}

pub(super) fn check_shard(shard: u32) -> Result<(), Failure> {
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
pub(super) fn run_shard<T, E>(
    config: ShardConfig,
    (report_durable, report_acked): (bool, bool),
    produce: impl FnOnce(&InboxSender) -> Result<T, E>,
) -> Result<(ShardReport, Result<T, E>), Failure> {
    let listener = CliListener {
        report_durable,
        report_acked,
    };
    let handle = Shard::spawn_with_listener(config, listener).map_err(Failure::shard)?;
    let produced = produce(handle.inbox());
    let report = handle.close().map_err(Failure::shard)?;
    Ok((report, produced))
}

pub(super) fn resolve(addr: &str) -> Result<std::net::SocketAddr, Failure> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .map_err(|e| Failure::usage(format!("--peer {addr}: {e}")))?
        .next()
        .ok_or_else(|| Failure::usage(format!("--peer {addr}: no address")))
}

pub(super) fn source_name(given: Option<&str>) -> Result<String, Failure> {
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

pub(super) fn shards_to_read(dir: &Path, only: Option<u32>) -> Result<Vec<u32>, Failure> {
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

/// The directory a benchmark works in: `dir` if given (created if need
/// be), else a fresh temporary one, removed when the returned guard drops
/// unless `keep`.
pub(super) fn scratch_dir(
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
