//! The receiver: verifies what shippers send, persists it, acknowledges it.
//!
//! A receiver runs N *cores* (`--cores`), each a thread with its own io_uring,
//! pinned with its io-wq workers to one CPU when asked. Each connection
//! carries one (source, shard) and is served by one core, the least loaded
//! when it arrives (see `receive/reactor.rs`):
//!
//! 1. **Admission**, on a short-lived thread per connection, since all of
//!    it may block: the hello, the take-over of a (source, shard) still held
//!    by an older connection, opening (recovering) `DIR/<source>/<shard>/`,
//!    and the welcome carrying the last durable seq. The connection then
//!    moves to its core.
//! 2. **Serving**, on the core's ring: RECV into the connection's buffer;
//!    every record checked straight out of it (its length bound before
//!    anything is read for it, its crc32c, and that its seq follows the
//!    previous one exactly; see `verify`); staged unchanged into the WAL;
//!    and each time the durable watermark advances, a cumulative ack sent
//!    with io_uring SEND. So a seq is acknowledged only once the receiver's
//!    own fdatasync covers it (unless `--durability none`), and a record
//!    crosses no thread between the socket and the WAL.
//!
//! Bad input closes that one connection with a log line naming the source,
//! shard, peer and reason. Records verified before the bad bytes are kept
//! (and acknowledged); the connection's other records, the other connections
//! and the data on disk are untouched.

mod admission;
mod connection;
mod reactor;

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use self::reactor::CoreHandle;
use crate::constants::{ACCEPT_BACKOFF_MS, RECEIVER_CONNECTIONS_MAX};
use crate::latency::{Recorder, Window};
use crate::protocol::ProtocolError;
use crate::wal::Durability;

/// How a receiver runs.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    pub dir: PathBuf,
    pub durability: Durability,
    /// Cores (threads, each with its own ring) that connections are spread
    /// over; at least one.
    pub cores: usize,
    /// Pin core k and its io-wq workers to the (first_cpu + k)-th CPU this
    /// process may use; `None` leaves them to the scheduler.
    pub pin_first_cpu: Option<usize>,
    /// Count append → durable (the records' own append timestamps, so
    /// append → *remote* durable) only inside this window (`bench`).
    #[doc(hidden)]
    pub latency_window: Option<Arc<Window>>,
    /// Before sleeping, each core busy-polls its ring this long for a
    /// completion (`--spin-us`; zero sleeps at once).
    pub spin: Duration,
}

impl ReceiverConfig {
    /// A receiver storing under `dir`: fsync, one core per CPU, unpinned,
    /// no spin.
    pub fn new(dir: impl Into<PathBuf>) -> ReceiverConfig {
        ReceiverConfig {
            dir: dir.into(),
            durability: Durability::Fsync,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            pin_first_cpu: None,
            latency_window: None,
            spin: Duration::ZERO,
        }
    }
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
    /// One receiver writes a data directory (each replica's shard
    /// directory is locked again by its WAL).
    _lock: crate::wal::lock::DirLock,
}

struct Shared {
    stop: AtomicBool,
    active: Mutex<Active>,
    /// Connections accepted and not yet finished (admitting or served).
    open: AtomicUsize,
    stats: ReceiverStats,
    /// append → durable here, merged from every connection as it finishes.
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
    /// Binds `addr` and serves on threads of its own until
    /// [`ReceiverHandle::stop`]. A seq is acknowledged only once the
    /// receiver's fdatasync covers it (unless [`Durability::None`]).
    pub fn spawn(addr: SocketAddr, config: ReceiverConfig) -> Result<ReceiverHandle, crate::Error> {
        let receiver = Receiver::bind(addr, config).map_err(crate::Error::Receiver)?;
        let local_addr = receiver.local_addr().map_err(crate::Error::Receiver)?;
        let stopper = receiver.stopper();
        let thread = std::thread::Builder::new()
            .name("ringship-receiver".into())
            .spawn(move || receiver.run())
            .map_err(crate::Error::Receiver)?;
        Ok(ReceiverHandle {
            local_addr,
            stopper,
            thread,
        })
    }

    /// Creates and locks the data directory, then binds the listener.
    /// Another receiver on the directory is an error of kind
    /// [`io::ErrorKind::ResourceBusy`] that names its pid.
    pub fn bind(addr: SocketAddr, config: ReceiverConfig) -> io::Result<Receiver> {
        std::fs::create_dir_all(&config.dir)?;
        let lock = crate::wal::lock::DirLock::acquire(&config.dir).map_err(|e| match e {
            e @ crate::wal::lock::LockError::Held { .. } => {
                io::Error::new(io::ErrorKind::ResourceBusy, e.to_string())
            }
            crate::wal::lock::LockError::Io { source, .. } => source,
        })?;
        Ok(Receiver {
            _lock: lock,
            listener: TcpListener::bind(addr)?,
            config,
            shared: Arc::new(Shared {
                stop: AtomicBool::new(false),
                active: Mutex::new(Active::default()),
                open: AtomicUsize::new(0),
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

    /// Starts the cores, then accepts and admits connections until stopped;
    /// returns once every connection has finished. Fails only if a core
    /// cannot start (io_uring refused, pinning refused).
    pub fn run(self) -> io::Result<ReceiverTotals> {
        let mut cores: Vec<CoreHandle> = Vec::with_capacity(self.config.cores.max(1));
        for k in 0..self.config.cores.max(1) {
            // A CPU *index* (allowed_cpu maps it to a CPU of our mask).
            let cpu = self.config.pin_first_cpu.map(|first| first + k);
            match self::reactor::start(k, cpu, self.config.spin, self.shared.clone()) {
                Ok(core) => cores.push(core),
                Err(why) => {
                    cores.into_iter().for_each(CoreHandle::finish);
                    return Err(io::Error::other(why));
                }
            }
        }
        let cores = Arc::new(cores);
        let mut admitting: Vec<std::thread::JoinHandle<()>> = Vec::new();
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
            admitting.retain(|h| !h.is_finished());
            if self.shared.open.load(Ordering::SeqCst) >= RECEIVER_CONNECTIONS_MAX {
                tracing::warn!(%peer, "refusing connection: {RECEIVER_CONNECTIONS_MAX} already open");
                self.shared.stats.refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.shared.open.fetch_add(1, Ordering::SeqCst);
            let registration = Registration {
                shared: self.shared.clone(),
                key: None,
            };
            self.shared
                .stats
                .connections
                .fetch_add(1, Ordering::Relaxed);
            let config = self.config.clone();
            let cores = cores.clone();
            match std::thread::Builder::new()
                .name(format!("ringship-admit-{peer}"))
                .spawn(move || admission::admit(stream, peer, &config, registration, &cores))
            {
                Ok(handle) => admitting.push(handle),
                // The connection is dropped; the others go on being served.
                Err(e) => tracing::warn!(%peer, "cannot start a thread for the handshake: {e}"),
            }
        }
        for h in admitting {
            let _ = h.join();
        }
        // No more admissions: each core finishes its connections and stops.
        let cores = Arc::try_unwrap(cores)
            .unwrap_or_else(|_| unreachable!("every admission thread has been joined"));
        cores.into_iter().for_each(CoreHandle::finish);
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

/// A running receiver (see [`Receiver::spawn`]).
pub struct ReceiverHandle {
    local_addr: SocketAddr,
    stopper: Stopper,
    thread: JoinHandle<io::Result<ReceiverTotals>>,
}

impl ReceiverHandle {
    /// The address it listens on (with the port it got, for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets every connection persist and acknowledge what
    /// it verified, and returns the totals.
    pub fn stop(self) -> Result<ReceiverTotals, crate::Error> {
        self.stopper.stop();
        match self.thread.join() {
            Ok(totals) => totals.map_err(crate::Error::Receiver),
            Err(_) => Err(crate::Error::Panicked),
        }
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

/// Why a connection was closed early.
#[derive(Debug, thiserror::Error)]
enum ServeError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    #[error("the shipper gave up: {0}")]
    Aborted(String),
}

/// Keeps a (source, shard) marked as served, and the connection counted,
/// until dropped: when its connection is retired, or fails to be admitted.
pub(crate) struct Registration {
    shared: Arc<Shared>,
    key: Option<(String, u32)>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(key) = &self.key
            && let Ok(mut active) = self.shared.active.lock()
        {
            active.serving.remove(key);
        }
        self.shared.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What the simulator (`crate::sim`) needs of a receiver connection: the
/// real connection state machine, built without an acceptor, admission
/// thread or core, and driven through its `Io`.
#[cfg(test)]
pub(crate) mod simulated {
    use std::net::TcpStream;
    use std::sync::Arc;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    use super::connection::Conn;
    use super::reactor::Admitted;
    use super::{Active, ReceiverStats, Registration, Shared};
    use crate::io::{Completion, Io, Owner};
    use crate::latency::Recorder;
    use crate::protocol::Hello;
    use crate::wal::WalWriter;

    /// One admitted connection of a receiver, as its core runs it.
    pub(crate) struct SimConn(Conn);

    impl SimConn {
        /// The connection `stream` (whose hello was `hello`) served into
        /// `wal`, its completions tagged `owner`.
        pub fn new(stream: TcpStream, hello: Hello, wal: WalWriter, owner: Owner) -> SimConn {
            let shared = Arc::new(Shared {
                stop: AtomicBool::new(false),
                active: Mutex::new(Active::default()),
                open: AtomicUsize::new(1),
                stats: ReceiverStats::default(),
                remote_durable: Mutex::new(Recorder::new()),
            });
            let admitted = Admitted {
                reader: stream.try_clone().expect("clone a socket"),
                stream,
                peer: "127.0.0.1:1".parse().expect("an address"),
                hello,
                wal,
                registration: Registration {
                    shared: shared.clone(),
                    key: None,
                },
            };
            SimConn(Conn::new(admitted, owner, shared))
        }

        pub fn step(&mut self, io: &mut impl Io) {
            self.0.step(io);
        }

        pub fn on_completion(&mut self, io: &mut impl Io, c: Completion) {
            self.0.on_completion(io, c);
        }

        /// Nothing more will happen, with `in_flight` operations of its own
        /// still in flight.
        pub fn is_done(&self, in_flight: usize) -> bool {
            self.0.is_done_with(in_flight)
        }

        pub fn shut_down(&self) {
            self.0.shut_down();
        }

        /// The replica's durable seq.
        pub fn durable_seq(&self) -> u64 {
            self.0.durable_seq()
        }

        /// The process dies: no last write of anything.
        pub fn crash(self) {
            self.0.crash();
        }

        /// The connection ends normally.
        pub fn retire(self) {
            self.0.retire_quietly();
        }
    }
}
