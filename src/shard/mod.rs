//! A shard: one pinned thread that owns an io_uring, a WAL and its sink,
//! fed through a bounded inbox. [`Shard::spawn`] starts one and returns
//! its [`ShardHandle`]: the way into the WAL for the CLI, `bench`, the
//! tests and any program built on ringship.
//!
//! ```no_run
//! use ringship::{Durability, Shard, ShardConfig};
//!
//! let mut config = ShardConfig::new("/var/lib/ringship", 0);
//! config.durability = Durability::Fsync;
//! let mut shard = Shard::spawn(config)?;
//! let ticket = shard.append(b"hello")?;
//! ticket.wait_durable()?; // fdatasync'd
//! let report = shard.close()?;
//! assert_eq!(report.durable_seq, ticket.seq());
//! # Ok::<(), ringship::Error>(())
//! ```

pub(crate) mod inbox;
mod runner;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use self::inbox::{Batch, CoreGone, InboxSender};
pub use self::runner::{ShardError, ShardReport};
use crate::frame;
use crate::latency::Window;
use crate::sink::tcp::TcpConfig;
use crate::wal::{Durability, WalIo};

/// What a shard's thread tells its owner as it runs, on that thread.
pub trait DurableListener: Send {
    /// The WAL is open and recovered; records handed over from now on are
    /// appended after `durable_seq`.
    fn on_ready(&mut self, durable_seq: u64) {
        let _ = durable_seq;
    }

    /// The durable watermark advanced. Called in the same loop turn as the
    /// completion (or inline commit) that advanced it.
    fn on_durable(&mut self, durable_seq: u64) {
        let _ = durable_seq;
    }

    /// The sink's destination acknowledged everything up to `acked_seq`.
    fn on_acked(&mut self, acked_seq: u64) {
        let _ = acked_seq;
    }
}

/// A listener that does nothing.
struct Silent;
impl DurableListener for Silent {}

/// Where a shard ships its durable records.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    /// A `ringship receive`, over TCP.
    Tcp(TcpConfig),
}

/// What a shard is to do. [`ShardConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// The WAL directory; shard K lives in `dir/K/`.
    pub dir: PathBuf,
    pub shard: u32,
    /// CPU index to pin the thread and its io-wq workers to (see
    /// `io::cpu::allowed_cpu`); `None` leaves both unpinned.
    pub cpu: Option<usize>,
    pub durability: Durability,
    /// Buffered or O_DIRECT segments.
    pub wal_io: WalIo,
    /// Ship the durable tail, if set.
    pub sink: Option<SinkConfig>,
    /// With a sink: keep this many fully acknowledged sealed segments and
    /// delete older ones; `None` keeps everything.
    pub retain_segments: Option<usize>,
    /// Once the inbox is closed and everything is durable, how long to keep
    /// trying to get it acknowledged before [`ShardHandle::close`] fails.
    pub ack_timeout: Duration,
    /// Before sleeping, busy-poll the ring this long for a completion;
    /// zero sleeps at once.
    pub spin: Duration,
    /// Count latency only inside this window (`bench`); `None` counts every
    /// record.
    #[doc(hidden)]
    pub latency_window: Option<Arc<Window>>,
}

impl ShardConfig {
    /// Shard `shard` of the WAL in `dir`: fsync, buffered, no sink,
    /// unpinned, a 30 s ack timeout, no spin.
    pub fn new(dir: impl Into<PathBuf>, shard: u32) -> ShardConfig {
        ShardConfig {
            dir: dir.into(),
            shard,
            cpu: None,
            durability: Durability::Fsync,
            wal_io: WalIo::Buffered,
            sink: None,
            retain_segments: None,
            ack_timeout: Duration::from_secs(30),
            spin: Duration::ZERO,
            latency_window: None,
        }
    }
}

/// Why a call on a shard failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The shard stopped, or could not start: why.
    #[error(transparent)]
    Shard(#[from] ShardError),
    #[error(transparent)]
    TooLarge(#[from] frame::TooLarge),
    /// The shard's thread has stopped; [`ShardHandle::close`] says why.
    #[error("the shard has stopped")]
    Stopped,
    /// [`Ticket::wait_acked`] on a shard without a sink.
    #[error("this shard has no sink: nothing is ever acknowledged")]
    NoSink,
    #[error("not acknowledged within {0:?}")]
    Timeout(Duration),
    #[error("the receiver: {0}")]
    Receiver(std::io::Error),
    #[error("the shard's thread panicked")]
    Panicked,
}

impl From<CoreGone> for Error {
    fn from(_: CoreGone) -> Error {
        Error::Stopped
    }
}

/// The watermarks a shard's thread publishes, for tickets to wait on.
/// Updating them costs two atomic stores on the data path; the lock and
/// the condvar are touched only while someone waits.
struct Progress {
    durable: AtomicU64,
    acked: AtomicU64,
    ended: AtomicBool,
    waiters: AtomicUsize,
    lock: Mutex<()>,
    changed: Condvar,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            durable: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            ended: AtomicBool::new(false),
            waiters: AtomicUsize::new(0),
            lock: Mutex::new(()),
            changed: Condvar::new(),
        }
    }

    fn wake(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            let _guard = self.lock.lock().expect("not poisoned");
            self.changed.notify_all();
        }
    }

    fn set(&self, watermark: &AtomicU64, seq: u64) {
        watermark.fetch_max(seq, Ordering::SeqCst);
        self.wake();
    }

    /// Waits until `watermark` reaches `seq`, the shard stops, or
    /// `deadline` passes.
    fn wait(
        &self,
        watermark: &AtomicU64,
        seq: u64,
        deadline: Option<Instant>,
    ) -> Result<(), Error> {
        let reached = || watermark.load(Ordering::SeqCst) >= seq;
        if reached() {
            return Ok(());
        }
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let mut guard = self.lock.lock().expect("not poisoned");
        let result = loop {
            if reached() {
                break Ok(());
            }
            if self.ended.load(Ordering::SeqCst) {
                break Err(Error::Stopped);
            }
            match deadline {
                None => guard = self.changed.wait(guard).expect("not poisoned"),
                Some(at) => {
                    let now = Instant::now();
                    if now >= at {
                        break Err(Error::Timeout(Duration::ZERO));
                    }
                    guard = self
                        .changed
                        .wait_timeout(guard, at - now)
                        .expect("not poisoned")
                        .0;
                }
            }
        };
        drop(guard);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        result
    }
}

/// Marks the shard ended and wakes every waiter, whatever it waits for,
/// when the shard's thread ends: by returning, or by a panic.
struct Ended(Arc<Progress>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.ended.store(true, Ordering::SeqCst);
        // A poisoned lock still wakes: the waiters only need the notify.
        let _guard = self.0.lock.lock();
        self.0.changed.notify_all();
    }
}

/// Publishes the watermarks, then tells the caller's listener.
struct Publishing<L> {
    progress: Arc<Progress>,
    ready: Option<mpsc::Sender<u64>>,
    inner: L,
}

impl<L: DurableListener> DurableListener for Publishing<L> {
    fn on_ready(&mut self, durable_seq: u64) {
        self.progress.set(&self.progress.durable, durable_seq);
        self.inner.on_ready(durable_seq);
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(durable_seq);
        }
    }

    fn on_durable(&mut self, durable_seq: u64) {
        self.progress.set(&self.progress.durable, durable_seq);
        self.inner.on_durable(durable_seq);
    }

    fn on_acked(&mut self, acked_seq: u64) {
        self.progress.set(&self.progress.acked, acked_seq);
        self.inner.on_acked(acked_seq);
    }
}

/// Starts shards.
pub struct Shard;

impl Shard {
    /// Starts a shard on its own thread: opens (recovering) its WAL, builds
    /// its ring, and returns once it is ready to take records. A WAL that
    /// cannot be opened, or a ring the kernel refuses, fails here.
    pub fn spawn(config: ShardConfig) -> Result<ShardHandle, Error> {
        Shard::spawn_with_listener(config, Silent)
    }

    /// Like [`Shard::spawn`], with a listener told of every watermark
    /// advance on the shard's thread.
    pub fn spawn_with_listener(
        config: ShardConfig,
        listener: impl DurableListener + 'static,
    ) -> Result<ShardHandle, Error> {
        let (sender, receiver) = inbox::inbox().map_err(|e| Error::Shard(ShardError::Inbox(e)))?;
        let progress = Arc::new(Progress::new());
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut listener = Publishing {
            progress: progress.clone(),
            ready: Some(ready_tx),
            inner: listener,
        };
        if let Some(SinkConfig::Tcp(tcp)) = &config.sink {
            crate::protocol::validate_source(&tcp.source)
                .map_err(|e| Error::Shard(ShardError::Source(e)))?;
        }
        let has_sink = config.sink.is_some();
        let shard = config.shard;
        let on_exit = Ended(progress.clone());
        let thread = std::thread::Builder::new()
            .name(format!("ringship-shard-{shard}"))
            .spawn(move || {
                // Dropped when the thread ends, by returning or by a panic.
                let _on_exit = on_exit;
                runner::run(&config, receiver, &mut listener)
            })
            .map_err(|e| Error::Shard(ShardError::Thread(e)))?;
        match ready_rx.recv() {
            Ok(base_seq) => Ok(ShardHandle {
                sender: Some(sender),
                base_seq,
                has_sink,
                progress,
                thread: Some(thread),
            }),
            // The thread failed while opening: its error says why.
            Err(_) => Err(match thread.join() {
                Ok(Err(e)) => Error::Shard(e),
                Ok(Ok(_)) => Error::Stopped,
                Err(_) => Error::Panicked,
            }),
        }
    }
}

/// A running shard. Records appended through it are durable, in order,
/// after the WAL's last record when the shard started.
///
/// Dropping the handle closes the inbox: the shard makes what it was
/// given durable (and, with a sink, waits up to the ack timeout for it to
/// be acknowledged) on its own thread. [`ShardHandle::close`] does the
/// same and waits for it.
pub struct ShardHandle {
    sender: Option<InboxSender>,
    base_seq: u64,
    has_sink: bool,
    progress: Arc<Progress>,
    thread: Option<JoinHandle<Result<ShardReport, ShardError>>>,
}

impl ShardHandle {
    /// The durable seq when the shard started: the first record appended
    /// gets the seq after it.
    pub fn base_seq(&self) -> u64 {
        self.base_seq
    }

    /// The highest seq durable with everything before it.
    pub fn durable_seq(&self) -> u64 {
        self.progress.durable.load(Ordering::SeqCst)
    }

    /// The highest seq the sink's destination holds durably (0 before the
    /// first acknowledgement, or without a sink).
    pub fn acked_seq(&self) -> u64 {
        self.progress.acked.load(Ordering::SeqCst)
    }

    fn sender(&self) -> &InboxSender {
        self.sender.as_ref().expect("open until close")
    }

    /// Appends one record and hands it to the shard at once; the ticket
    /// waits for it. Blocks while the inbox is full (the shard is behind):
    /// memory stays bounded whatever the backlog.
    pub fn append(&mut self, payload: &[u8]) -> Result<Ticket, Error> {
        frame::check_payload(payload)?;
        let sender = self.sender();
        let mut batch = sender.take()?;
        batch.push(frame::now_ns(), payload)?;
        sender.send(batch)?;
        Ok(self.ticket())
    }

    /// Appends records in order, handing them over a batch at a time;
    /// the ticket is the last one's (`None` if there were none). A payload
    /// over the maximum record fails the call; the records before it are
    /// appended.
    pub fn append_all<'a>(
        &mut self,
        payloads: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Option<Ticket>, Error> {
        let sender = self.sender();
        let mut batch: Option<Batch> = None;
        let mut any = false;
        for payload in payloads {
            if let Err(e) = frame::check_payload(payload) {
                // The records before it are handed over (a batch taken
                // from the pool must go back to it); the call fails.
                if let Some(b) = batch {
                    sender.send(b)?;
                }
                return Err(e.into());
            }
            if batch.as_ref().is_some_and(|b| !b.has_room(payload.len())) {
                sender.send(batch.take().expect("checked"))?;
            }
            let b = match batch.as_mut() {
                Some(b) => b,
                None => batch.insert(sender.take()?),
            };
            b.push(frame::now_ns(), payload)?;
            any = true;
        }
        if let Some(b) = batch {
            sender.send(b)?;
        }
        Ok(any.then(|| self.ticket()))
    }

    /// A ticket for the last record handed over.
    fn ticket(&self) -> Ticket {
        Ticket {
            seq: self.base_seq + self.sender().records_sent(),
            has_sink: self.has_sink,
            progress: self.progress.clone(),
        }
    }

    /// The inbox, for producers that fill batches themselves (the line
    /// reader, the bench's generators). Tickets count what they send too.
    #[doc(hidden)]
    pub fn inbox(&self) -> &InboxSender {
        self.sender()
    }

    /// Closes the inbox and waits until the shard has made everything
    /// durable (and, with a sink, acknowledged, or the ack timeout passed);
    /// returns what it did.
    pub fn close(mut self) -> Result<ShardReport, Error> {
        drop(self.sender.take());
        let thread = self.thread.take().expect("closed once");
        match thread.join() {
            Ok(Ok(report)) => Ok(report),
            Ok(Err(e)) => Err(Error::Shard(e)),
            Err(_) => Err(Error::Panicked),
        }
    }
}

/// One appended record: its seq, and waits on its fate.
#[derive(Clone)]
pub struct Ticket {
    seq: u64,
    has_sink: bool,
    progress: Arc<Progress>,
}

impl Ticket {
    /// The record's seq.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Waits until the record is durable: it and every record before it
    /// are fdatasync'd (with [`Durability::None`], written to the page
    /// cache). Fails if the shard stops first.
    pub fn wait_durable(&self) -> Result<(), Error> {
        self.progress.wait(&self.progress.durable, self.seq, None)
    }

    /// Waits until the sink's destination acknowledged the record: for a
    /// ringship receiver, its own fdatasync covers it. Fails if the shard
    /// stops first, or has no sink.
    pub fn wait_acked(&self) -> Result<(), Error> {
        if !self.has_sink {
            return Err(Error::NoSink);
        }
        self.progress.wait(&self.progress.acked, self.seq, None)
    }

    /// Like [`Ticket::wait_acked`], giving up after `timeout`.
    pub fn wait_acked_timeout(&self, timeout: Duration) -> Result<(), Error> {
        if !self.has_sink {
            return Err(Error::NoSink);
        }
        self.progress
            .wait(
                &self.progress.acked,
                self.seq,
                Some(Instant::now() + timeout),
            )
            .map_err(|e| match e {
                Error::Timeout(_) => Error::Timeout(timeout),
                e => e,
            })
    }
}
