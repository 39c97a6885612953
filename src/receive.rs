//! The receiver: verifies what shippers send, persists it, acknowledges it.
//!
//! Each connection carries one (source, shard) and gets one thread, which
//! does the handshake and then becomes a core (see [`crate::core`]) whose
//! records come from the socket, read with io_uring RECV on the core's own
//! ring (`SocketSource`). Every record is checked straight out of the
//! receive buffer (its length bound before anything is read for it, its
//! crc32c, and that its seq follows the previous one exactly), staged into
//! `DIR/<source>/<shard>/` in the WAL's own format, and each time the
//! durable watermark advances a cumulative ack is written. So a seq is
//! acknowledged only once the receiver's own fdatasync covers it (unless
//! `--durability none`), and a record crosses no thread between the socket
//! and the WAL.
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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::constants::{
    ACCEPT_BACKOFF_MS, HANDSHAKE_TIMEOUT_MS, RECEIVER_CONNECTIONS_MAX, RECORD_BYTES_MAX,
    RECORD_HEADER_BYTES, RECORD_PAYLOAD_BYTES_MAX, RECV_BUFFER_BYTES, TAKEOVER_POLL_MS,
};
use crate::core::{self, CoreConfig, DurableListener, RecordSource};
use crate::frame;
use crate::io::{Completion, Ring};
use crate::latency::{Recorder, Window};
use crate::protocol::{self, HELLO_BYTES, Hello, ProtocolError, WelcomeStatus};
use crate::wal::{Durability, Stage, WalError, WalWriter};

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

/// The connection's side of its core: the welcome once the WAL is open,
/// then a cumulative ack each time the durable watermark advances.
struct AckWriter {
    stream: TcpStream,
    welcomed: bool,
}

impl DurableListener for AckWriter {
    fn on_ready(&mut self, durable_seq: u64) {
        // A failed write means the shipper went away; the read side sees it.
        let _ = self
            .stream
            .write_all(&protocol::encode_welcome(WelcomeStatus::Ok, durable_seq));
        self.welcomed = true;
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
    let ack_stream = stream.try_clone()?;
    // A peer that stops reading must not block the core (and shutdown) on a
    // full send buffer: an ack that cannot be written in time is dropped,
    // and the shipper resumes by seq.
    ack_stream.set_write_timeout(Some(Duration::from_millis(HANDSHAKE_TIMEOUT_MS)))?;
    stream.set_read_timeout(None)?;
    let mut acks = AckWriter {
        stream: ack_stream,
        welcomed: false,
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
    let mut source = SocketSource {
        stream: stream.try_clone()?,
        shared,
        buf: Some(vec![0u8; RECV_BUFFER_BYTES]),
        start: 0,
        filled: 0,
        expected_seq: 0,
        blocked: false,
        ended: false,
        error: None,
    };
    tracing::info!(source = %hello.source, shard = hello.shard, "serving");
    // This thread becomes the connection's core: the socket is read on its
    // ring, so a record goes from the socket to the WAL with no hand-off.
    match core::run_with_source(&core_config, &mut source, &mut acks) {
        Ok(report) => shared
            .remote_durable
            .lock()
            .expect("not poisoned")
            .merge(&report.wal.append_to_durable_ns),
        Err(e) => {
            if !acks.welcomed {
                let _ = stream.write_all(&protocol::encode_welcome(WelcomeStatus::StorageError, 0));
            }
            return Err(ServeError::Storage(e.to_string()));
        }
    }
    // Whatever ended the stream, what was verified was persisted and acked.
    match source.error.take() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// A connection's records, read with io_uring RECV on its core's ring and
/// checked straight out of the receive buffer: the length bound before
/// anything is read for it, the crc32c, and that the seq follows the
/// previous one exactly. Verified bytes are staged into the WAL unchanged.
struct SocketSource<'a> {
    stream: TcpStream,
    shared: &'a Shared,
    /// The receive buffer; `None` while a RECV owns it.
    buf: Option<Vec<u8>>,
    /// Bytes not staged yet are `buf[start..filled]`.
    start: usize,
    filled: usize,
    expected_seq: u64,
    /// The WAL was full with complete records still in the buffer: they
    /// are staged before anything more is read, so a full buffer never
    /// waits on a read that only the shipper's next send would complete.
    blocked: bool,
    /// Reading is over: EOF, a socket error, bad bytes, or close.
    ended: bool,
    /// Why reading ended early, if it did.
    error: Option<ServeError>,
}

impl RecordSource for SocketSource<'_> {
    fn start(&mut self, durable_seq: u64) {
        self.expected_seq = durable_seq + 1;
    }

    fn arm(&mut self, ring: &mut Ring, token: u64) {
        if self.ended || self.blocked {
            return;
        }
        let Some(mut buf) = self.buf.take() else {
            return; // a read is in flight
        };
        // Keep room for a whole record after the partial one held.
        if buf.len() - self.filled < RECORD_BYTES_MAX && self.start > 0 {
            buf.copy_within(self.start..self.filled, 0);
            self.filled -= self.start;
            self.start = 0;
        }
        if self.filled == buf.len() {
            // Only possible while complete records wait for the WAL.
            self.buf = Some(buf);
            return;
        }
        if let Err((_, buf)) = ring.recv_at(&self.stream, buf, self.filled, token) {
            self.buf = Some(buf);
        }
    }

    fn stage(
        &mut self,
        wal: &mut WalWriter,
        ring: &mut Ring,
        first_appended_seq: &mut Option<u64>,
    ) -> Result<(), WalError> {
        let Some(buf) = self.buf.as_ref() else {
            return Ok(()); // the kernel holds it
        };
        self.blocked = false;
        while self.error.is_none() && self.filled - self.start >= RECORD_HEADER_BYTES {
            let at = self.start;
            let header = &buf[at..at + RECORD_HEADER_BYTES];
            let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
            // The length bound comes before anything is read for it.
            if len > RECORD_PAYLOAD_BYTES_MAX {
                self.fail(ProtocolError(format!(
                    "record expected at seq {} claims {len} bytes, over the {RECORD_PAYLOAD_BYTES_MAX}-byte maximum",
                    self.expected_seq
                )).into());
                break;
            }
            let need = frame::encoded_len_bytes(len);
            if self.filled - at < need {
                break;
            }
            let bytes = &buf[at..at + need];
            let record = match frame::decode(bytes) {
                Ok((record, _)) => record,
                // A valid frame with seq 0: the shipper's Abort (protocol.rs).
                Err(frame::DecodeError::ZeroSeq) if len <= protocol::ABORT_REASON_BYTES_MAX => {
                    let reason = String::from_utf8_lossy(&bytes[RECORD_HEADER_BYTES..]);
                    self.fail(ServeError::Aborted(reason.into_owned()));
                    break;
                }
                Err(e) => {
                    self.fail(
                        ProtocolError(format!("record expected at seq {}: {e}", self.expected_seq))
                            .into(),
                    );
                    break;
                }
            };
            if record.seq != self.expected_seq {
                self.fail(
                    ProtocolError(format!(
                        "record seq {} where seq {} was expected",
                        record.seq, self.expected_seq
                    ))
                    .into(),
                );
                break;
            }
            let payload_len = record.payload.len() as u64;
            // Verified: it goes to disk exactly as it came, with no second
            // encode.
            match wal.stage_encoded(ring, bytes)? {
                Stage::Staged(seq) => {
                    first_appended_seq.get_or_insert(seq);
                }
                Stage::Full => {
                    self.blocked = true;
                    return Ok(());
                }
            }
            self.shared.stats.records.fetch_add(1, Ordering::Relaxed);
            self.shared
                .stats
                .payload_bytes
                .fetch_add(payload_len, Ordering::Relaxed);
            self.expected_seq += 1;
            self.start += need;
        }
        if self.start == self.filled {
            self.start = 0;
            self.filled = 0;
        }
        Ok(())
    }

    fn on_completion(&mut self, completion: Completion) {
        self.buf = Some(completion.buf.expect("recv hands its buffer back"));
        match completion.result {
            n if n > 0 => self.filled += n as usize,
            0 => {
                if !self.ended && self.filled > self.start {
                    tracing::info!(
                        "connection closed with {} bytes not yet a whole record",
                        self.filled - self.start
                    );
                }
                self.ended = true;
            }
            e => {
                if !self.ended {
                    self.error = Some(io::Error::from_raw_os_error(-e).into());
                }
                self.ended = true;
            }
        }
    }

    fn is_finished(&self) -> bool {
        self.ended && self.buf.is_some() && !self.blocked
    }

    fn close(&mut self) {
        self.ended = true;
        let _ = self.stream.shutdown(Shutdown::Read);
    }
}

impl SocketSource<'_> {
    /// Bad bytes: stop reading; what was verified before them is kept.
    fn fail(&mut self, e: ServeError) {
        self.error = Some(e);
        self.ended = true;
        self.start = self.filled;
    }
}
