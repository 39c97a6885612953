use std::io::{self, Write};
use std::path::PathBuf;

use super::{EXIT_OK, Failure, ListenAddr, SpinArgs, counted, listen_addr};
use crate::receive::{Receiver, ReceiverConfig};
use crate::wal::Durability;

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
pub(super) struct ReceiveArgs {
    /// Address to listen on, HOST:PORT. A non-loopback address needs
    /// --insecure (plaintext off loopback) until TLS is built. (unix:PATH,
    /// the other listen form, is not served by receive yet.)
    #[arg(long, default_value = "127.0.0.1:7070", value_parser = listen_addr)]
    listen: ListenAddr,
    /// Where to store what shippers send: DIR/<source>/<shard>/, each a WAL
    /// in the shipper's own format.
    #[arg(long)]
    dir: PathBuf,
    /// Serve connections on N cores, each a thread with its own io_uring,
    /// pinned (with its io-wq workers) to CPU k of those this process may
    /// use. A connection goes to the least loaded core; among equals, to
    /// the core counted from the last CPU (shard 0 → CPU N-1), away from
    /// the CPU a shipper on the same host pins that shard to. Default: one
    /// core per CPU.
    #[arg(long, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=crate::constants::SHARDS_MAX as i64))]
    cores: Option<u32>,
    #[arg(long, value_enum, default_value_t = Durability::Fsync)]
    durability: Durability,
    /// Allow a non-loopback --listen without authentication.
    #[arg(long)]
    insecure: bool,
    #[command(flatten)]
    spin: SpinArgs,
}

pub(super) fn run(args: ReceiveArgs) -> Result<i32, Failure> {
    use std::net::ToSocketAddrs;
    let listen = match &args.listen {
        ListenAddr::Tcp(addr) => addr,
        ListenAddr::Unix(_) => {
            return Err(Failure::usage(format!(
                "--listen {}: receive serves TCP only for now (shippers connect with --peer \
                 HOST:PORT); pass HOST:PORT",
                args.listen
            )));
        }
    };
    let addr = listen
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
    .map_err(|e| match e.kind() {
        io::ErrorKind::ResourceBusy => Failure::usage(e),
        _ => Failure::operating(format!("listening on {addr}: {e}")),
    })?;
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
        "received {} ({} payload bytes) over {} ({} refused)",
        counted(totals.records, "record"),
        totals.payload_bytes,
        counted(totals.connections, "connection"),
        totals.refused
    );
    Ok(EXIT_OK)
}
