//! The receiver: verifies what shippers send, persists it, acknowledges it.
//!
//! Each connection carries one (source, shard) and gets two threads: a
//! reader that checks every record straight off the socket (its length bound
//! before anything is read into memory, its crc32c, and that its seq follows
//! the previous one exactly), and a core (see [`crate::core`]) that appends
//! the records to `DIR/<source>/<shard>/` in the WAL's own format and, each
//! time its durable watermark advances, writes a cumulative ack. So a seq is
//! acknowledged only once the receiver's own fdatasync covers it (unless
//! `--durability none`).
//!
//! Bad input closes that one connection with a log line naming the source,
//! shard, peer and reason. Records verified before the bad bytes are kept
//! (and acknowledged); the connection's other records, the other connections
//! and the data on disk are untouched.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use crate::constants::{
    ACCEPT_BACKOFF_MS, HANDSHAKE_TIMEOUT_MS, RECEIVER_CONNECTIONS_MAX, RECORD_HEADER_BYTES,
    RECORD_PAYLOAD_BYTES_MAX, RECV_BUFFER_BYTES, TAKEOVER_POLL_MS,
};
use crate::core::{self, CoreConfig, DurableListener};
use crate::frame;
use crate::inbox::{self, Batch, InboxSender};
use crate::latency::{Recorder, Window};
use crate::protocol::{self, HELLO_BYTES, Hello, ProtocolError, WelcomeStatus};
use crate::wal::Durability;

/// How a receiver runs.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    pub dir: PathBuf,
    pub durability: Durability,
    /// Cores to spread connections over (connection k's core is pinned to
    /// CPU first_cpu + shard % cores); `None` leaves them unpinned.
    pub cores: Option<usize>,
    pub first_cpu: usize,
    /// Count append → durable (the records' own append timestamps, so
    /// append → *remote* durable) only inside this window (`bench`).
    pub latency_window: Option<Arc<Window>>,
}

/// Totals over a receiver's life, for its summary line.
#[derive(Debug, Default)]
pub struct ReceiverStats {
    pub connections: AtomicU64,
    pub refused: AtomicU64,
    pub records: AtomicU64,
    pub payload_bytes: AtomicU64,
}

/// A bound receiver; [`Receiver::run`] serves until [`Stopper::stop`].
pub struct Receiver {
    listener: TcpListener,
    config: ReceiverConfig,
    shared: Arc<Shared>,
}

struct Shared {
    stop: AtomicBool,
    active: Mutex<Active>,
    stats: ReceiverStats,
    /// append → durable here, merged from every connection's core as it
    /// finishes.
    remote_durable: Mutex<Recorder>,
}

/// The (source, shard) pairs being served, so that two connections never
/// write one WAL, each with a handle on its socket so that stop can close it.
#[derive(Default)]
struct Active {
    serving: HashMap<(String, u32), Option<TcpStream>>,
}

/// Stops a running receiver from another thread (a signal handler thread,
/// a test, or `bench`).
#[derive(Clone)]
pub struct Stopper {
    shared: Arc<Shared>,
    listener_fd: i32,
}

impl Stopper {
    /// Stops accepting, closes every connection's read side so that each
    /// finishes persisting and acknowledging what it verified, then lets
    /// [`Receiver::run`] return.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let guard = self.shared.active.lock().expect("not poisoned");
        for stream in guard.serving.values().flatten() {
            let _ = stream.shutdown(Shutdown::Read);
        }
        drop(guard);
        // shutdown(2) on a listening socket wakes a blocked accept(2) on Linux.
        let _ = nix::sys::socket::shutdown(self.listener_fd, nix::sys::socket::Shutdown::Both);
    }
}

impl Receiver {
    pub fn bind(addr: SocketAddr, config: ReceiverConfig) -> io::Result<Receiver> {
        Ok(Receiver {
            listener: TcpListener::bind(addr)?,
            config,
            shared: Arc::new(Shared {
                stop: AtomicBool::new(false),
                active: Mutex::new(Active::default()),
                stats: ReceiverStats::default(),
                remote_durable: Mutex::new(Recorder::new()),
            }),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn stopper(&self) -> Stopper {
        Stopper {
            shared: self.shared.clone(),
            listener_fd: self.listener.as_raw_fd(),
        }
    }

    /// Accepts and serves connections until stopped; returns once every
    /// connection has finished.
    pub fn run(self) -> io::Result<ReceiverTotals> {
        let mut handles = Vec::new();
        loop {
            let (stream, peer) = match self.listener.accept() {
                Ok(conn) => conn,
                Err(_) if self.shared.stop.load(Ordering::SeqCst) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and the like: back off rather than spin.
                    tracing::warn!("accept: {e}");
                    std::thread::sleep(Duration::from_millis(ACCEPT_BACKOFF_MS));
                    continue;
                }
            };
            if self.shared.stop.load(Ordering::SeqCst) {
                break;
            }
            handles.retain(|h: &std::thread::JoinHandle<()>| !h.is_finished());
            if handles.len() >= RECEIVER_CONNECTIONS_MAX {
                tracing::warn!(%peer, "refusing connection: {RECEIVER_CONNECTIONS_MAX} already open");
                self.shared.stats.refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.shared
                .stats
                .connections
                .fetch_add(1, Ordering::Relaxed);
            let shared = self.shared.clone();
            let config = self.config.clone();
            match std::thread::Builder::new()
                .name(format!("ringship-recv-{peer}"))
                .spawn(move || serve(stream, peer, &config, &shared))
            {
                Ok(handle) => handles.push(handle),
                // The connection is dropped; the others go on being served.
                Err(e) => tracing::warn!(%peer, "cannot start a thread for the connection: {e}"),
            }
        }
        for h in handles {
            let _ = h.join();
        }
        Ok(ReceiverTotals {
            connections: self.shared.stats.connections.load(Ordering::Relaxed),
            refused: self.shared.stats.refused.load(Ordering::Relaxed),
            records: self.shared.stats.records.load(Ordering::Relaxed),
            payload_bytes: self.shared.stats.payload_bytes.load(Ordering::Relaxed),
            append_to_durable_ns: std::mem::take(
                &mut *self.shared.remote_durable.lock().expect("not poisoned"),
            ),
        })
    }
}

/// A receiver's totals once it has stopped.
#[derive(Debug, Clone)]
pub struct ReceiverTotals {
    pub connections: u64,
    pub refused: u64,
    pub records: u64,
    pub payload_bytes: u64,
    /// Each record's append (on the shipper) → durable here; meaningful
    /// only when both share a clock.
    pub append_to_durable_ns: Recorder,
}

/// Sends acks from the connection's core, and tells the reader when the WAL
/// is open.
struct AckWriter {
    stream: TcpStream,
    ready: Option<mpsc::Sender<u64>>,
}

impl DurableListener for AckWriter {
    fn on_ready(&mut self, durable_seq: u64) {
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(durable_seq);
        }
    }

    fn on_durable(&mut self, durable_seq: u64) {
        // A failed ack write means the shipper went away; it will resume by
        // seq when it reconnects, so there is nothing else to do here.
        let _ = self.stream.write_all(&protocol::encode_ack(durable_seq));
    }
}

fn serve(mut stream: TcpStream, peer: SocketAddr, config: &ReceiverConfig, shared: &Shared) {
    let _ = stream.set_nodelay(true);
    protocol::set_keepalive(&stream);
    let mut hello = [0u8; HELLO_BYTES];
    let _ = stream.set_read_timeout(Some(Duration::from_millis(HANDSHAKE_TIMEOUT_MS)));
    if let Err(e) = stream.read_exact(&mut hello) {
        tracing::warn!(%peer, "closing connection: no hello: {e}");
        return;
    }
    let hello = match Hello::decode(&hello) {
        Ok(h) => h,
        Err((status, e)) => {
            tracing::warn!(%peer, "closing connection: {e}");
            let _ = stream.write_all(&protocol::encode_welcome(status, 0));
            return;
        }
    };
    let key = (hello.source.clone(), hello.shard);
    // A new connection for a (source, shard) that is still being served takes
    // over: the old one is most likely dead without having said so (its
    // shipper restarted, or a partition). Its read side is shut down, it
    // persists and acks what it verified, and it unregisters.
    let mut waited_ms = 0;
    loop {
        let mut active = shared.active.lock().expect("not poisoned");
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        match active.serving.get(&key) {
            None => {
                active.serving.insert(key.clone(), stream.try_clone().ok());
                break;
            }
            Some(old) => {
                if waited_ms == 0 {
                    tracing::warn!(%peer, source = %hello.source, shard = hello.shard,
                        "a new connection takes over this source and shard from an older one");
                    if let Some(old) = old {
                        let _ = old.shutdown(Shutdown::Both);
                    }
                }
            }
        }
        drop(active);
        if waited_ms >= HANDSHAKE_TIMEOUT_MS {
            tracing::warn!(%peer, source = %hello.source, shard = hello.shard,
                "closing connection: the older connection for this source and shard did not finish");
            let _ = stream.write_all(&protocol::encode_welcome(WelcomeStatus::Busy, 0));
            return;
        }
        // Waiting here is part of the handshake, never of the data path.
        std::thread::sleep(Duration::from_millis(TAKEOVER_POLL_MS));
        waited_ms += TAKEOVER_POLL_MS;
    }
    // Unregisters even if serving panics, so the source can reconnect.
    struct Registration<'a> {
        shared: &'a Shared,
        key: (String, u32),
    }
    impl Drop for Registration<'_> {
        fn drop(&mut self) {
            if let Ok(mut active) = self.shared.active.lock() {
                active.serving.remove(&self.key);
            }
        }
    }
    let _registration = Registration { shared, key };
    let result = serve_source(&mut stream, &hello, config, shared);
    if let Err(e) = result {
        tracing::warn!(%peer, source = %hello.source, shard = hello.shard, "closing connection: {e}");
    }
}

#[derive(Debug, thiserror::Error)]
enum ServeError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    #[error("storage: {0}")]
    Storage(String),
    #[error("the shipper gave up: {0}")]
    Aborted(String),
}

fn serve_source(
    stream: &mut TcpStream,
    hello: &Hello,
    config: &ReceiverConfig,
    shared: &Shared,
) -> Result<(), ServeError> {
    let (sender, receiver) = inbox::inbox()?;
    let (ready_tx, ready_rx) = mpsc::channel();
    let ack_stream = stream.try_clone()?;
    // A peer that stops reading must not block the core (and shutdown) on a
    // full send buffer: an ack that cannot be written in time is dropped,
    // and the shipper resumes by seq.
    ack_stream.set_write_timeout(Some(Duration::from_millis(HANDSHAKE_TIMEOUT_MS)))?;
    let mut acks = AckWriter {
        stream: ack_stream,
        ready: Some(ready_tx),
    };
    let core_config = CoreConfig {
        dir: config.dir.join(&hello.source),
        shard: hello.shard,
        cpu: config
            .cores
            .map(|n| config.first_cpu + hello.shard as usize % n.max(1)),
        durability: config.durability,
        ship: None,
        ack_timeout: Duration::ZERO,
        latency_window: config.latency_window.clone(),
    };
    let core = std::thread::Builder::new()
        .name(format!("ringship-rcore-{}-{}", hello.source, hello.shard))
        .spawn(move || core::run(&core_config, receiver, &mut acks))?;
    let Ok(durable_seq) = ready_rx.recv() else {
        let _ = stream.write_all(&protocol::encode_welcome(WelcomeStatus::StorageError, 0));
        let e = match core.join() {
            Ok(Err(e)) => e.to_string(),
            _ => "the core stopped".into(),
        };
        return Err(ServeError::Storage(e));
    };
    stream.write_all(&protocol::encode_welcome(WelcomeStatus::Ok, durable_seq))?;
    stream.set_read_timeout(None)?;
    tracing::info!(source = %hello.source, shard = hello.shard, durable_seq, "serving");

    let read = read_records(stream, durable_seq + 1, &sender, shared);
    // Whatever ended the stream, what was verified is persisted and acked.
    sender.close();
    match core.join() {
        Ok(Ok(report)) => shared
            .remote_durable
            .lock()
            .expect("not poisoned")
            .merge(&report.wal.append_to_durable_ns),
        Ok(Err(e)) => return Err(ServeError::Storage(e.to_string())),
        Err(_) => return Err(ServeError::Storage("the core panicked".into())),
    }
    read
}

/// Reads, checks and forwards records until EOF or the first bad byte.
fn read_records(
    stream: &mut TcpStream,
    mut expected_seq: u64,
    sender: &InboxSender,
    shared: &Shared,
) -> Result<(), ServeError> {
    let mut buf = vec![0u8; RECV_BUFFER_BYTES];
    let mut filled = 0usize;
    let mut batch: Option<Batch> = None;
    loop {
        let n = match stream.read(&mut buf[filled..]) {
            Ok(0) => {
                if filled > 0 {
                    tracing::info!("connection closed with {filled} bytes of a partial record");
                }
                return Ok(());
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        filled += n;
        let mut at = 0usize;
        let parsed = parse_records(
            &buf[..filled],
            &mut at,
            &mut expected_seq,
            &mut batch,
            sender,
            shared,
        );
        // Whatever this read completed goes to the core now (no timer), and
        // so do the records verified before a bad one.
        if let Some(b) = batch.take() {
            sender
                .send(b)
                .map_err(|e| ServeError::Storage(e.to_string()))?;
        }
        parsed?;
        buf.copy_within(at..filled, 0);
        filled -= at;
    }
}

/// Checks the complete records in `buf[*at..]` and stages them in `batch`.
fn parse_records(
    buf: &[u8],
    at: &mut usize,
    expected_seq: &mut u64,
    batch: &mut Option<Batch>,
    sender: &InboxSender,
    shared: &Shared,
) -> Result<(), ServeError> {
    while buf.len() - *at >= RECORD_HEADER_BYTES {
        let header = &buf[*at..*at + RECORD_HEADER_BYTES];
        let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
        // The length bound comes before anything is read for it.
        if len > RECORD_PAYLOAD_BYTES_MAX {
            return Err(ProtocolError(format!(
                "record expected at seq {expected_seq} claims {len} bytes, over the {RECORD_PAYLOAD_BYTES_MAX}-byte maximum"
            ))
            .into());
        }
        let need = frame::encoded_len_bytes(len);
        if buf.len() - *at < need {
            return Ok(());
        }
        let (record, _) = match frame::decode(&buf[*at..*at + need]) {
            Ok(decoded) => decoded,
            // A valid frame with seq 0: the shipper's Abort (protocol.rs).
            Err(frame::DecodeError::ZeroSeq) if len <= protocol::ABORT_REASON_BYTES_MAX => {
                let reason = String::from_utf8_lossy(&buf[*at + RECORD_HEADER_BYTES..*at + need]);
                return Err(ServeError::Aborted(reason.into_owned()));
            }
            Err(e) => {
                return Err(
                    ProtocolError(format!("record expected at seq {expected_seq}: {e}")).into(),
                );
            }
        };
        if record.seq != *expected_seq {
            return Err(ProtocolError(format!(
                "record seq {} where seq {expected_seq} was expected",
                record.seq
            ))
            .into());
        }
        if batch.as_ref().is_some_and(|b| !b.has_room_for_record(need)) {
            sender
                .send(batch.take().expect("checked"))
                .map_err(|e| ServeError::Storage(e.to_string()))?;
        }
        if batch.is_none() {
            *batch = Some(
                sender
                    .take()
                    .map_err(|e| ServeError::Storage(e.to_string()))?,
            );
        }
        // Verified: it goes to disk exactly as it came, with no second encode.
        batch
            .as_mut()
            .expect("taken above")
            .push_record(&buf[*at..*at + need]);
        shared.stats.records.fetch_add(1, Ordering::Relaxed);
        shared
            .stats
            .payload_bytes
            .fetch_add(record.payload.len() as u64, Ordering::Relaxed);
        *expected_seq += 1;
        *at += need;
    }
    Ok(())
}
