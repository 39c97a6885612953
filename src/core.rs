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
//! completes. There is no timer anywhere in it.

use std::path::PathBuf;

use crate::constants::{RING_ENTRIES, RING_SLOTS_MAX};
use crate::inbox::{Batch, InboxReceiver, Next};
use crate::io::{Completion, Ring, RingError, RingFlags, pin_current_thread};
use crate::wal::writer::WAL_TOKEN_BITS;
use crate::wal::{Durability, ShardScan, Stage, WalError, WalWriter};

/// Token owners, in the bits above [`WAL_TOKEN_BITS`].
const TOKEN_WAL: u64 = 1 << WAL_TOKEN_BITS;
const TOKEN_WAKE: u64 = 2 << WAL_TOKEN_BITS;

/// What a core tells its owner as it runs. The shipper hangs off
/// [`DurableListener::on_durable`].
pub trait DurableListener {
    /// The WAL is open and recovered; records handed over from now on are
    /// appended after `durable_seq`.
    fn on_ready(&mut self, durable_seq: u64) {
        let _ = durable_seq;
    }

    /// The durable watermark advanced. Called in the same loop iteration as
    /// the completion that advanced it, before the loop waits again.
    fn on_durable(&mut self, durable_seq: u64);
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
}

/// Opens the shard's WAL and runs the loop until the inbox is closed and
/// every record taken from it is durable.
pub fn run(
    config: &CoreConfig,
    inbox: InboxReceiver,
    listener: &mut dyn DurableListener,
) -> Result<CoreReport, CoreError> {
    if let Some(cpu) = config.cpu {
        pin_current_thread(cpu).map_err(|source| CoreError::Pin { cpu, source })?;
    }
    // The WAL is opened before the ring so that it is dropped after it: on an
    // error path the ring's drop waits for operations still in flight on the
    // segment's fd, which must stay open until then.
    let (mut wal, recovered) =
        WalWriter::open(&config.dir, config.shard, config.durability, TOKEN_WAL)?;
    let mut ring = Ring::new(config.cpu)?;
    listener.on_ready(wal.durable_seq());
    let mut wake_buf = Some(vec![0u8; 8]);
    let mut first_appended_seq = None;
    let result = run_loop(
        &mut ring,
        &mut wal,
        &inbox,
        listener,
        &mut wake_buf,
        &mut first_appended_seq,
    );
    // On every exit, success or error: the wake-up read is still in flight
    // and owns a buffer. Complete it by writing the eventfd ourselves, so the
    // ring's drop (which waits for every outstanding completion) returns,
    // all before the eventfd closes with the inbox.
    if wake_buf.is_none() {
        let _ = inbox.wake_fd().write(1);
    }
    let ring_flags = ring.flags();
    drop(ring);
    drop(inbox);
    result?;
    Ok(CoreReport {
        shard: wal.shard(),
        ring_flags,
        recovered,
        first_appended_seq,
        durable_seq: wal.durable_seq(),
        wal: wal.into_stats(),
    })
}

fn run_loop(
    ring: &mut Ring,
    wal: &mut WalWriter,
    inbox: &InboxReceiver,
    listener: &mut dyn DurableListener,
    wake_buf: &mut Option<Vec<u8>>,
    first_appended_seq: &mut Option<u64>,
) -> Result<(), CoreError> {
    let mut completions: Vec<Completion> = Vec::with_capacity(RING_SLOTS_MAX);
    let mut pending: Option<(Batch, usize)> = None;
    let mut inbox_open = true;
    debug_assert!(RING_SLOTS_MAX <= RING_ENTRIES as usize);

    loop {
        if let Some(buf) = wake_buf.take()
            && let Err((_, buf)) = ring.read(inbox.wake_fd(), buf, TOKEN_WAKE)
        {
            *wake_buf = Some(buf);
        }

        // 1 + 2: stage what the inbox holds, submitting as chains free up; a
        // rotation frees the segment, so stage again after one.
        loop {
            while inbox_open {
                if pending.is_none() {
                    match inbox.try_next() {
                        Next::Batch(batch) => pending = Some((batch, 0)),
                        Next::Empty => break,
                        Next::Closed => {
                            inbox_open = false;
                            break;
                        }
                    }
                }
                let (batch, cursor) = pending.as_mut().expect("set above");
                let mut blocked = false;
                while let Some((ts, payload, next)) = batch.entry_at(*cursor) {
                    match wal.stage(ts, payload)? {
                        Stage::Staged(seq) => {
                            first_appended_seq.get_or_insert(seq);
                            *cursor = next;
                        }
                        Stage::Full => {
                            blocked = true;
                            break;
                        }
                    }
                }
                if blocked {
                    break;
                }
                let (batch, _) = pending.take().expect("set above");
                inbox.give_back(batch);
            }
            if !wal.pump(ring)? {
                break;
            }
        }

        if !inbox_open && pending.is_none() && wal.is_idle() {
            return Ok(());
        }

        // 3 + 4: wait, collect, then handle.
        ring.submit_and_wait(1).map_err(CoreError::Enter)?;
        completions.clear();
        ring.reap(&mut completions);
        let mut advanced = None;
        for completion in completions.drain(..) {
            if wal.owns(completion.token) {
                if let Some(seq) = wal.on_completion(ring, completion)? {
                    advanced = Some(seq);
                }
            } else {
                assert_eq!(completion.token, TOKEN_WAKE, "unknown token");
                // An eventfd read only fails if the fd is broken, which is a bug.
                assert!(
                    completion.result >= 0,
                    "eventfd read: {}",
                    completion.result
                );
                *wake_buf = completion.buf;
            }
        }
        if let Some(seq) = advanced {
            listener.on_durable(seq);
        }
    }
}
