//! One core: a pinned thread that owns a ring, a shard's WAL, and an inbox.
//!
//! The loop is the whole scheduler:
//!
//! 1. take records from the inbox into the WAL's staging buffer, until the
//!    inbox is empty or the WAL is full (backpressure: the producer blocks);
//! 2. let the WAL submit a commit if a chain is free;
//! 3. submit and wait for at least one completion;
//! 4. reap every ready completion, *then* handle them one by one; a WAL
//!    completion that advances the durable watermark calls the core's
//!    [`DurableListener`] in this same iteration.
//!
//! The only thing that wakes the loop is a completion: a commit's write or
//! fdatasync, or the read on the inbox's eventfd that a producer's send
//! completes. There is no timer anywhere in it. With `--spin-us` the loop
//! busy-polls for that completion before step 3 sleeps, which saves the
//! wake-up. It ends at the first completion or once the budget is spent,
//! and is skipped while a reconnect or the ack deadline is due.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::constants::{DIRECT_COMMIT_BUFFER_BYTES, DIRECT_COMMIT_BUFFERS_COUNT, RING_SLOTS_MAX};
use crate::inbox::{Batch, InboxReceiver, Next};
use crate::io::cpu::pin_current_thread;
use crate::io::{Completion, Io, Kind, Owner, Ring, RingError, RingFlags, Token};
use crate::latency::Window;
use crate::sink::tcp::{TcpConfig, TcpSink, TcpStats};
use crate::sink::{Sink, SinkError};
use crate::wal::{Durability, ShardScan, Stage, WalError, WalIo, WalWriter};

/// The inbox wake-up read's token.
const TOKEN_WAKE: Token = Token::new(Owner::Inbox, Kind::Wake, 0);

/// What a core tells its owner as it runs. The shipper hangs off
/// [`DurableListener::on_durable`].
pub trait DurableListener {
    /// The WAL is open and recovered; records handed over from now on are
    /// appended after `durable_seq`.
    fn on_ready(&mut self, durable_seq: u64) {
        let _ = durable_seq;
    }

    /// The durable watermark advanced. Called in the same loop iteration as
    /// the completion (or inline commit) that advanced it, before the loop
    /// waits again.
    fn on_durable(&mut self, durable_seq: u64);

    /// The peer acknowledged everything up to `acked_seq` (when shipping).
    fn on_acked(&mut self, acked_seq: u64) {
        let _ = acked_seq;
    }
}

/// What a core is to do.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub dir: PathBuf,
    pub shard: u32,
    /// CPU to pin the thread and its io-wq workers to; `None` leaves both
    /// unpinned.
    pub cpu: Option<usize>,
    pub durability: Durability,
    /// Buffered or O_DIRECT segments.
    pub wal_io: WalIo,
    /// Ship the durable tail to a peer, if set.
    pub sink: Option<TcpConfig>,
    /// With a sink: keep this many fully acknowledged sealed segments and
    /// delete older ones; `None` keeps everything.
    pub retain_segments: Option<usize>,
    /// Once the inbox is closed and everything is durable, how long to keep
    /// trying to get it acknowledged before giving up.
    pub ack_timeout: Duration,
    /// Count latency only inside this window, by interval (`bench`); `None`
    /// counts every record.
    pub latency_window: Option<Arc<Window>>,
    /// Before sleeping, busy-poll the ring this long for a completion
    /// (`--spin-us`; zero sleeps at once). See [`Ring::submit_and_spin`].
    pub spin: Duration,
}

/// What a core did, returned when its inbox closes and everything is durable.
pub struct CoreReport {
    pub shard: u32,
    pub ring_flags: RingFlags,
    /// What recovery found when the WAL opened.
    pub recovered: ShardScan,
    /// The seq of the first record appended in this run, if any.
    pub first_appended_seq: Option<u64>,
    pub durable_seq: u64,
    pub wal: crate::wal::writer::WalStats,
    /// The peer's acknowledged seq and the shipping statistics, if shipping.
    pub acked_seq: Option<u64>,
    pub ship: Option<TcpStats>,
}

/// Why a core stopped early.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error(transparent)]
    Ring(#[from] RingError),
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("io_uring_enter failed: {0}")]
    Enter(std::io::Error),
    #[error("pinning to CPU {cpu}: {source}")]
    Pin { cpu: usize, source: std::io::Error },
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("registering buffers on the ring: {0}")]
    Register(std::io::Error),
    #[error("setting up the sink: {0}")]
    SinkSetup(std::io::Error),
    #[error(
        "the peer has acknowledged up to seq {acked_seq} of {durable_seq} after waiting {waited:?} (--ack-timeout); seqs {} ..= {durable_seq} stay in the WAL and ship on the next run",
        acked_seq + 1
    )]
    AckTimeout {
        acked_seq: u64,
        durable_seq: u64,
        waited: Duration,
    },
}

/// Where the loop's records come from: the inbox, whose producer wakes the
/// core through an eventfd read posted on the ring.
struct Feed<'a> {
    inbox: &'a InboxReceiver,
    /// The eventfd read's buffer while no read is in flight.
    wake_buf: Option<Vec<u8>>,
    /// A batch taken from the inbox and the cursor into it, while the WAL is
    /// full.
    pending: Option<(Batch, usize)>,
    open: bool,
}

impl Feed<'_> {
    fn arm(&mut self, ring: &mut Ring) {
        if let Some(buf) = self.wake_buf.take()
            && let Err((_, buf)) = ring.read(self.inbox.wake_fd(), buf, TOKEN_WAKE)
        {
            self.wake_buf = Some(buf);
        }
    }

    /// Stages what the feed holds, until it is empty or the WAL is full.
    fn stage(
        &mut self,
        wal: &mut WalWriter,
        ring: &mut Ring,
        first_appended_seq: &mut Option<u64>,
    ) -> Result<(), WalError> {
        while self.open {
            if self.pending.is_none() {
                match self.inbox.try_next() {
                    Next::Batch(batch) => self.pending = Some((batch, 0)),
                    Next::Empty => break,
                    Next::Closed => {
                        self.open = false;
                        break;
                    }
                }
            }
            let (batch, cursor) = self.pending.as_mut().expect("set above");
            while let Some((ts, payload, next)) = batch.entry_at(*cursor) {
                match wal.stage(ring, ts, payload)? {
                    Stage::Staged(seq) => {
                        first_appended_seq.get_or_insert(seq);
                        *cursor = next;
                    }
                    Stage::Full => return Ok(()),
                }
            }
            let (batch, _) = self.pending.take().expect("set above");
            self.inbox.give_back(batch);
        }
        Ok(())
    }

    fn is_finished(&self) -> bool {
        !self.open && self.pending.is_none()
    }

    fn on_completion(&mut self, completion: Completion) {
        // An eventfd read only fails if the fd is broken, which is a bug.
        assert!(
            completion.result >= 0,
            "eventfd read: {}",
            completion.result
        );
        self.wake_buf = completion.buf;
    }

    /// Makes the read still in flight complete, so the ring's drop (which
    /// waits for every outstanding completion) returns, all before the fd
    /// it reads closes.
    fn close(&mut self) {
        if self.wake_buf.is_none() {
            let _ = self.inbox.wake_fd().write(1);
        }
    }
}

/// Opens the shard's WAL and runs the loop until the inbox is closed and
/// every record taken from it is durable.
pub fn run(
    config: &CoreConfig,
    inbox: InboxReceiver,
    listener: &mut dyn DurableListener,
) -> Result<CoreReport, CoreError> {
    let feed = Feed {
        inbox: &inbox,
        wake_buf: Some(vec![0u8; 8]),
        pending: None,
        open: true,
    };
    let report = run_fed(config, feed, listener);
    // The eventfd closes with the inbox, after the ring is gone.
    drop(inbox);
    report
}

fn run_fed(
    config: &CoreConfig,
    feed: Feed<'_>,
    listener: &mut dyn DurableListener,
) -> Result<CoreReport, CoreError> {
    match &config.sink {
        Some(tcp) => {
            let sink = TcpSink::new(tcp.clone(), &config.dir, config.shard)
                .map_err(CoreError::SinkSetup)?;
            run_with_sink(config, feed, listener, Some(sink))
        }
        None => run_with_sink::<TcpSink>(config, feed, listener, None),
    }
}

/// The registered buffers of a shard's ring: the WAL's O_DIRECT commit
/// buffers (first) when it asked for them, then the sink's. Registration
/// happens once, before the loop; a WAL that cannot have its buffers (a
/// filesystem without O_DIRECT, RLIMIT_MEMLOCK too low) stays buffered,
/// with a warning, and the sink is told where its own buffers are.
fn set_up_buffers(
    config: &CoreConfig,
    ring: &mut Ring,
    wal: &mut WalWriter,
    sink: Option<&mut impl Sink>,
) -> Result<(), CoreError> {
    let fallback = |why: &str| {
        tracing::warn!(
            dir = %config.dir.display(),
            "{why}: segments go through the page cache"
        );
    };
    let mut direct = config.wal_io == WalIo::Direct && wal.supports_direct()?;
    if config.wal_io == WalIo::Direct && !direct {
        fallback("the filesystem refuses O_DIRECT");
    }
    let sink_sizes = sink.as_ref().map(|s| s.fixed_buffers()).unwrap_or_default();
    let wal_sizes = [DIRECT_COMMIT_BUFFER_BYTES; DIRECT_COMMIT_BUFFERS_COUNT];
    let mut sizes: Vec<usize> = if direct {
        wal_sizes.to_vec()
    } else {
        Vec::new()
    };
    sizes.extend(&sink_sizes);
    if sizes.is_empty() {
        return Ok(());
    }
    match ring.register_fixed_buffers(&sizes) {
        Ok(()) => {}
        Err(e) if direct && e.kind() == std::io::ErrorKind::OutOfMemory => {
            fallback(&format!(
                "cannot pin {} MiB of commit buffers ({e})",
                sizes.iter().sum::<usize>() >> 20
            ));
            direct = false;
            if !sink_sizes.is_empty() {
                ring.register_fixed_buffers(&sink_sizes)
                    .map_err(CoreError::Register)?;
            }
        }
        Err(e) => return Err(CoreError::Register(e)),
    }
    if direct && !wal.enable_direct(ring, 0)? {
        fallback("the filesystem refuses O_DIRECT");
        direct = false;
    }
    if let Some(sink) = sink
        && !sink_sizes.is_empty()
    {
        sink.attach_fixed(if direct { wal_sizes.len() } else { 0 });
    }
    Ok(())
}

fn run_with_sink<S: Sink + Shipped>(
    config: &CoreConfig,
    mut feed: Feed<'_>,
    listener: &mut dyn DurableListener,
    mut sink: Option<S>,
) -> Result<CoreReport, CoreError> {
    if let Some(cpu) = config.cpu {
        pin_current_thread(cpu).map_err(|source| CoreError::Pin { cpu, source })?;
    }
    // The WAL is opened before the ring so that it is dropped after it: on an
    // error path the ring's drop waits for operations still in flight on the
    // segment's fd, which must stay open until then.
    let (mut wal, recovered) =
        WalWriter::open(&config.dir, config.shard, config.durability, Owner::Wal)?;
    wal.set_latency_window(config.latency_window.clone());
    let mut ring = Ring::new(config.cpu)?;
    set_up_buffers(config, &mut ring, &mut wal, sink.as_mut())?;
    if let Some(s) = sink.as_mut() {
        if s.wants_durable_feed() {
            wal.enable_durable_feed(crate::constants::SEND_INFLIGHT_RECORDS_MAX);
        }
        s.set_latency_window(config.latency_window.clone());
    }
    listener.on_ready(wal.durable_seq());
    let mut first_appended_seq = None;
    // A panic in the loop must still reach the cleanup below: without it
    // the ring's drop would wait forever for reads on sockets nobody shuts
    // down. The panic resumes once the ring is gone.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_loop(
            &mut ring,
            &mut wal,
            sink.as_mut(),
            &mut feed,
            listener,
            &mut first_appended_seq,
            config,
        )
    }));
    // The sink's socket reads are in flight too: closing the socket
    // completes them.
    if let Some(s) = sink.as_mut() {
        s.close();
    }
    // On every exit, success or error, the feed's read is still in flight
    // and owns a buffer: make it complete before the ring is dropped.
    feed.close();
    let ring_flags = ring.flags();
    drop(ring);
    match result {
        Ok(result) => result?,
        Err(panic) => std::panic::resume_unwind(panic),
    }
    Ok(CoreReport {
        shard: wal.shard(),
        ring_flags,
        recovered,
        first_appended_seq,
        durable_seq: wal.durable_seq(),
        wal: wal.into_stats(),
        acked_seq: sink.as_ref().map(Sink::acked_seq),
        ship: sink.map(Shipped::into_tcp_stats),
    })
}

/// What the shard asks of its sink beyond [`Sink`], until a second sink
/// gives reports their own shape.
trait Shipped {
    fn wants_durable_feed(&self) -> bool;
    fn set_latency_window(&mut self, window: Option<Arc<Window>>);
    fn into_tcp_stats(self) -> TcpStats;
}

impl Shipped for TcpSink {
    fn wants_durable_feed(&self) -> bool {
        self.wants_durable_feed()
    }
    fn set_latency_window(&mut self, window: Option<Arc<Window>>) {
        TcpSink::set_latency_window(self, window);
    }
    fn into_tcp_stats(self) -> TcpStats {
        self.into_stats()
    }
}

fn run_loop<S: Sink>(
    ring: &mut Ring,
    wal: &mut WalWriter,
    mut sink: Option<&mut S>,
    feed: &mut Feed<'_>,
    listener: &mut dyn DurableListener,
    first_appended_seq: &mut Option<u64>,
    config: &CoreConfig,
) -> Result<(), CoreError> {
    let CoreConfig {
        ack_timeout, spin, ..
    } = *config;
    let mut ack_deadline: Option<Instant> = None;
    let mut completions: Vec<Completion> = Vec::with_capacity(RING_SLOTS_MAX);
    // The acked seq last told to the listener. It moves on an ack, and also
    // when a reconnect's welcome says the peer already holds more; each
    // move applies retention.
    let mut reported_acked = sink.as_deref().map(Sink::acked_seq);
    let mut report_acked =
        |sink: Option<&S>, wal: &mut WalWriter, listener: &mut dyn DurableListener| {
            let now = sink.map(Sink::acked_seq);
            if let Some(acked) = now.filter(|&a| Some(a) != reported_acked) {
                reported_acked = now;
                if let Some(keep) = config.retain_segments {
                    wal.retain(acked, keep);
                }
                listener.on_acked(acked);
            }
        };

    loop {
        // 1 + 2: stage what the feed holds, submitting as chains free up; a
        // rotation frees the segment, so stage again after one.
        loop {
            feed.stage(wal, ring, first_appended_seq)?;
            let pumped = wal.pump(ring)?;
            if let Some(seq) = pumped.durable_seq {
                listener.on_durable(seq);
            }
            // A rotation makes room: stage again. (An inline commit happens
            // only once the feed is drained into staging, and whatever came
            // since has signalled the eventfd, so it needs no second round.)
            if !pumped.rotated {
                break;
            }
        }
        // Only then post the feed's next read: a socket's buffer must be
        // staged from before the kernel takes it again. (An eventfd read
        // posted late still completes for a write made before it.)
        feed.arm(ring);

        // Ship whatever became durable in the previous iteration's
        // completions, before waiting again.
        if let Some(s) = sink.as_deref_mut() {
            s.ship(ring, wal)?;
        }
        report_acked(sink.as_deref(), wal, listener);

        if feed.is_finished() && wal.is_idle() {
            let Some(s) = sink.as_deref() else {
                return Ok(());
            };
            if s.acked_seq() >= wal.durable_seq() {
                return Ok(());
            }
            let deadline = *ack_deadline.get_or_insert_with(|| Instant::now() + ack_timeout);
            if Instant::now() >= deadline {
                return Err(CoreError::AckTimeout {
                    acked_seq: s.acked_seq(),
                    durable_seq: wal.durable_seq(),
                    waited: ack_timeout,
                });
            }
        }

        // 3 + 4: wait, collect, then handle. Only the reconnect backoff and
        // the ack deadline bound the wait; a durable record never does.
        let wake_at = [sink.as_deref().and_then(Sink::wake_at), ack_deadline]
            .into_iter()
            .flatten()
            .min();
        match wake_at {
            Some(at) => ring
                .submit_and_wait_timeout(1, at.saturating_duration_since(Instant::now()))
                .map_err(CoreError::Enter)?,
            // With a reconnect or an ack deadline due, sleep at once: the
            // timed wait above is what ends those.
            None if !spin.is_zero() && ring.submit_and_spin(spin).map_err(CoreError::Enter)? => {}
            None => ring.submit_and_wait(1).map_err(CoreError::Enter)?,
        }
        completions.clear();
        ring.reap(&mut completions);
        let mut advanced = None;
        for completion in completions.drain(..) {
            match completion.token.owner {
                Owner::Wal => {
                    if let Some(seq) = wal.on_completion(ring, completion)? {
                        advanced = Some(seq);
                    }
                }
                Owner::Sink => sink
                    .as_deref_mut()
                    .expect("sink completions come from a sink")
                    .on_completion(ring, completion)?,
                _ => {
                    assert_eq!(completion.token, TOKEN_WAKE, "unknown token");
                    feed.on_completion(completion);
                }
            }
        }
        if let Some(seq) = advanced {
            listener.on_durable(seq);
        }
        report_acked(sink.as_deref(), wal, listener);
    }
}
