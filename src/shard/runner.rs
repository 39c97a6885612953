//! A shard's thread: the loop that ties its inbox, WAL, sink and ring.
//!
//! Each turn ([`io::event_loop`](crate::io::event_loop)):
//!
//! 1. take records from the inbox into the WAL's next commit, until the
//!    inbox is empty or the WAL is full (backpressure: the producer blocks);
//! 2. let the WAL submit a commit if a chain is free;
//! 3. tell the sink the durable tail, so what became durable in the last
//!    turn's completions leaves now;
//! 4. wait, collect every ready completion, *then* hand each to its owner;
//!    a WAL completion that advances the durable watermark tells the
//!    [`DurableListener`] in this same turn.
//!
//! The only thing that wakes the loop is a completion: a commit's write or
//! fdatasync, a send, an ack, or the read on the inbox's eventfd that a
//! producer's send completes. There is no timer in it but the reconnect
//! backoff and the ack deadline at the end of a run. With a spin the loop
//! busy-polls for that completion before it sleeps.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::inbox::{Batch, InboxReceiver, Next as InboxNext};
use super::{DurableListener, ShardConfig, SinkConfig};
use crate::constants::{DIRECT_COMMIT_BUFFER_BYTES, DIRECT_COMMIT_BUFFERS_COUNT};
use crate::io::cpu::pin_current_thread;
use crate::io::event_loop::{self, Next, Reactor};
use crate::io::{Completion, Io, Kind, Owner, Ring, RingError, RingFlags, Token};
use crate::latency::Window;
use crate::sink::tcp::{TcpSink, TcpStats};
use crate::sink::{Sink, SinkError};
use crate::wal::{ShardScan, Stage, WalError, WalIo, WalWriter};

/// The inbox wake-up read's token.
const TOKEN_WAKE: Token = Token::new(Owner::Inbox, Kind::Wake, 0);

/// What a shard did, returned when its inbox closed and everything was
/// durable (and, with a sink, acknowledged).
pub struct ShardReport {
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

/// Why a shard stopped early, or could not start.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error(transparent)]
    Ring(#[from] RingError),
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("io_uring_enter failed: {0}")]
    Enter(#[from] std::io::Error),
    #[error("pinning to CPU {cpu}: {source}")]
    Pin { cpu: usize, source: std::io::Error },
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("registering buffers on the ring: {0}")]
    Register(std::io::Error),
    #[error("setting up the sink: {0}")]
    SinkSetup(std::io::Error),
    #[error("creating the inbox: {0}")]
    Inbox(std::io::Error),
    #[error("the sink's source name: {0}")]
    Source(crate::protocol::ProtocolError),
    #[error("starting the shard's thread: {0}")]
    Thread(std::io::Error),
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
/// shard through an eventfd read posted on the ring.
struct Intake<'a> {
    inbox: &'a InboxReceiver,
    /// The eventfd read's buffer while no read is in flight.
    wake_buf: Option<Vec<u8>>,
    /// A batch taken from the inbox and the cursor into it, while the WAL is
    /// full.
    pending: Option<(Batch, usize)>,
    open: bool,
}

impl Intake<'_> {
    fn arm(&mut self, ring: &mut Ring) {
        if let Some(buf) = self.wake_buf.take()
            && let Err((_, buf)) = ring.read(self.inbox.wake_fd(), buf, TOKEN_WAKE)
        {
            self.wake_buf = Some(buf);
        }
    }

    /// Moves what the inbox holds into the WAL's next commit, until it is
    /// empty or the WAL is full.
    fn take_into(
        &mut self,
        wal: &mut WalWriter,
        ring: &mut Ring,
        first_appended_seq: &mut Option<u64>,
    ) -> Result<(), WalError> {
        while self.open {
            if self.pending.is_none() {
                match self.inbox.try_next() {
                    InboxNext::Batch(batch) => self.pending = Some((batch, 0)),
                    InboxNext::Empty => break,
                    InboxNext::Closed => {
                        self.open = false;
                        break;
                    }
                }
            }
            let (batch, cursor) = self.pending.as_mut().expect("set above");
            while let Some((e, next)) = batch.entry_at(*cursor) {
                match wal.stage_kind(ring, e.append_ts_ns, e.kind, e.continued, e.payload)? {
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
/// every record taken from it is durable (and, with a sink, acknowledged).
pub(super) fn run(
    config: &ShardConfig,
    inbox: InboxReceiver,
    listener: &mut dyn DurableListener,
) -> Result<ShardReport, ShardError> {
    let intake = Intake {
        inbox: &inbox,
        wake_buf: Some(vec![0u8; 8]),
        pending: None,
        open: true,
    };
    let report = match &config.sink {
        Some(SinkConfig::Tcp(tcp)) => {
            let sink = TcpSink::new(tcp.clone(), &config.dir, config.shard)
                .map_err(ShardError::SinkSetup)?;
            run_with_sink(config, intake, listener, Some(sink))
        }
        None => run_with_sink::<TcpSink>(config, intake, listener, None),
    };
    // The eventfd closes with the inbox, after the ring is gone.
    drop(inbox);
    report
}

/// The registered buffers of a shard's ring: the WAL's O_DIRECT commit
/// buffers (first) when it asked for them, then the sink's. Registration
/// happens once, before the loop; a WAL that cannot have its buffers (a
/// filesystem without O_DIRECT, RLIMIT_MEMLOCK too low) stays buffered,
/// with a warning, and the sink is told where its own buffers are.
fn set_up_buffers(
    config: &ShardConfig,
    ring: &mut Ring,
    wal: &mut WalWriter,
    sink: Option<&mut impl Sink>,
) -> Result<(), ShardError> {
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
    // Where the sink's buffers were registered: after the WAL's, or first
    // when the WAL's could not be had.
    let mut sink_first = if direct { wal_sizes.len() } else { 0 };
    match ring.register_fixed_buffers(&sizes) {
        Ok(()) => {}
        Err(e) if direct && e.kind() == std::io::ErrorKind::OutOfMemory => {
            fallback(&format!(
                "cannot pin {} MiB of commit buffers ({e})",
                sizes.iter().sum::<usize>() >> 20
            ));
            direct = false;
            sink_first = 0;
            if !sink_sizes.is_empty() {
                ring.register_fixed_buffers(&sink_sizes)
                    .map_err(ShardError::Register)?;
            }
        }
        Err(e) => return Err(ShardError::Register(e)),
    }
    if direct && !wal.enable_direct(ring, 0)? {
        // Its registered buffers stay unused.
        fallback("the filesystem refuses O_DIRECT");
    }
    if let Some(sink) = sink
        && !sink_sizes.is_empty()
    {
        sink.attach_fixed(sink_first);
    }
    Ok(())
}

fn run_with_sink<S: Sink + Shipped>(
    config: &ShardConfig,
    intake: Intake<'_>,
    listener: &mut dyn DurableListener,
    mut sink: Option<S>,
) -> Result<ShardReport, ShardError> {
    if let Some(cpu) = config.cpu {
        pin_current_thread(cpu).map_err(|source| ShardError::Pin { cpu, source })?;
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
    let mut turns = Turns {
        acked_reported: sink.as_ref().map(Sink::acked_seq),
        wal,
        sink,
        intake,
        listener,
        config,
        first_appended_seq: None,
        ack_deadline: None,
        advanced: None,
    };
    // A panic in the loop must still reach the cleanup below: without it
    // the ring's drop would wait forever for reads on sockets nobody shuts
    // down. The panic resumes once the ring is gone.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        event_loop::run(&mut ring, config.spin, &mut turns)
    }));
    // The sink's socket reads are in flight too: closing the socket
    // completes them.
    if let Some(s) = turns.sink.as_mut() {
        s.close();
    }
    // On every exit, success or error, the intake's read is still in
    // flight and owns a buffer: make it complete before the ring is dropped.
    turns.intake.close();
    let ring_flags = ring.flags();
    drop(ring);
    match result {
        Ok(result) => result?,
        Err(panic) => std::panic::resume_unwind(panic),
    }
    let Turns {
        wal,
        sink,
        first_appended_seq,
        ..
    } = turns;
    Ok(ShardReport {
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

/// The shard's state between turns of the loop.
struct Turns<'a, 'l, S> {
    wal: WalWriter,
    sink: Option<S>,
    intake: Intake<'a>,
    listener: &'l mut dyn DurableListener,
    config: &'a ShardConfig,
    first_appended_seq: Option<u64>,
    /// Once the inbox closed and everything is durable: when to give up
    /// waiting for the acknowledgements.
    ack_deadline: Option<Instant>,
    /// The acked seq last told to the listener. It moves on an ack, and
    /// also when a reconnect's welcome says the peer already holds more;
    /// each move applies retention.
    acked_reported: Option<u64>,
    /// The durable seq a batch of completions advanced to.
    advanced: Option<u64>,
}

impl<S: Sink> Turns<'_, '_, S> {
    fn report_acked(&mut self) {
        let now = self.sink.as_ref().map(Sink::acked_seq);
        if let Some(acked) = now.filter(|&a| Some(a) != self.acked_reported) {
            self.acked_reported = now;
            self.wal.note_acked(acked);
            if let Some(keep) = self.config.retain_segments {
                self.wal.retain(acked, keep);
            }
            self.listener.on_acked(acked);
        }
    }
}

impl<S: Sink> Reactor for Turns<'_, '_, S> {
    type Error = ShardError;

    fn turn(&mut self, ring: &mut Ring) -> Result<Next, ShardError> {
        // Take what the inbox holds into commits as chains free up; a
        // rotation frees the segment, so take again after one.
        loop {
            self.intake
                .take_into(&mut self.wal, ring, &mut self.first_appended_seq)?;
            let submitted = self.wal.submit(ring)?;
            if let Some(seq) = submitted.durable_seq {
                self.listener.on_durable(seq);
            }
            // (An inline commit happens only once the inbox is drained into
            // the commit, and whatever came since has signalled the eventfd,
            // so it needs no second round.)
            if !submitted.rotated {
                break;
            }
        }
        // Only then post the inbox's next read. (An eventfd read posted late
        // still completes for a write made before it.)
        self.intake.arm(ring);

        // Ship whatever became durable in the last turn's completions,
        // before waiting again.
        if let Some(s) = self.sink.as_mut() {
            s.ship(ring, &mut self.wal)?;
        }
        self.report_acked();

        if self.intake.is_finished() && self.wal.is_idle() {
            let Some(s) = self.sink.as_ref() else {
                return Ok(Next::Stop);
            };
            if s.acked_seq() >= self.wal.durable_seq() {
                return Ok(Next::Stop);
            }
            let ack_timeout = self.config.ack_timeout;
            let deadline = *self
                .ack_deadline
                .get_or_insert_with(|| Instant::now() + ack_timeout);
            if Instant::now() >= deadline {
                return Err(ShardError::AckTimeout {
                    acked_seq: s.acked_seq(),
                    durable_seq: self.wal.durable_seq(),
                    waited: ack_timeout,
                });
            }
        }
        // Only the reconnect backoff and the ack deadline bound the wait; a
        // durable record never does.
        let wake_at = [
            self.sink.as_ref().and_then(Sink::wake_at),
            self.ack_deadline,
        ]
        .into_iter()
        .flatten()
        .min();
        Ok(Next::Wait(wake_at))
    }

    fn dispatch(&mut self, ring: &mut Ring, completion: Completion) -> Result<(), ShardError> {
        match completion.token.owner {
            Owner::Wal => {
                if let Some(seq) = self.wal.on_completion(ring, completion)? {
                    self.advanced = Some(seq);
                }
            }
            Owner::Sink => self
                .sink
                .as_mut()
                .expect("sink completions come from a sink")
                .on_completion(ring, completion)?,
            _ => {
                assert_eq!(completion.token, TOKEN_WAKE, "unknown token");
                self.intake.on_completion(completion);
            }
        }
        Ok(())
    }

    fn dispatched(&mut self) {
        if let Some(seq) = self.advanced.take() {
            self.listener.on_durable(seq);
        }
        self.report_acked();
    }
}
