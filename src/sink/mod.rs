//! Sinks: where a shard's durable records go.
//!
//! The shard's loop drives its sink through [`Sink`]. The sink is told the
//! durable tail every loop turn — in the very turn the watermark moved, so
//! a durable record never waits for a later one, a timer or a poll — and
//! reports the seq its destination acknowledged. The shard applies
//! retention from that seq; the sink never deletes anything.
//!
//! - [`tcp`]: a ringship receiver, over TCP (splice, SEND_ZC or copy).
//!
//! A sink reads what it sends through a [`WalReader`](crate::wal::WalReader)
//! and never reconfigures the WAL: buffered or O_DIRECT segments are the
//! WAL's configuration, chosen before the sink exists.

pub mod tcp;

use std::time::Instant;

use crate::io::{Completion, Io};
use crate::wal::{ReadError, WalWriter};

/// Why a sink stopped for good. Everything else (a refused connection, a
/// reset, a peer that went quiet) it retries on its own.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(
        "the peer asks for seq {wanted}, but this WAL's oldest record is seq {oldest}: \
         retention deleted what the peer lacks. Nothing was sent; the gap is not filled silently"
    )]
    RetentionGap { wanted: u64, oldest: u64 },
    #[error(
        "the peer already holds seq {peer_seq} for this source and shard, but this WAL only reaches \
         seq {durable_seq}: it is a different WAL for the same --source; use another --source or --dir"
    )]
    PeerAhead { peer_seq: u64, durable_seq: u64 },
    /// The receiver cannot take this WAL: it holds the source under another
    /// WAL id, or speaks an older protocol.
    #[error(transparent)]
    Refused(crate::protocol::ProtocolError),
    #[error(transparent)]
    Read(ReadError),
    #[error("creating a pipe: {0}")]
    Pipe(std::io::Error),
}

impl From<ReadError> for SinkError {
    fn from(e: ReadError) -> SinkError {
        match e {
            ReadError::Gap { wanted, oldest } => SinkError::RetentionGap { wanted, oldest },
            e => SinkError::Read(e),
        }
    }
}

/// What the shard's loop asks of a sink. Every method runs on the shard's
/// thread; operations go through the shard's ring (`Io`), and completions
/// owned by [`Owner::Sink`](crate::io::Owner::Sink) come back through
/// [`Sink::on_completion`].
pub trait Sink {
    /// Sizes of the registered buffers the sink wants on the shard's ring.
    /// The shard registers them after the WAL's and hands the first index
    /// to [`Sink::attach_fixed`].
    fn fixed_buffers(&self) -> Vec<usize> {
        Vec::new()
    }

    /// The registered buffers asked for start at `first_index`.
    fn attach_fixed(&mut self, first_index: usize) {
        let _ = first_index;
    }

    /// The durable tail is `wal`'s: connect if due, send what is durable
    /// and not sent yet, keep a read for acknowledgements posted. Called
    /// every loop turn, including the one whose completion advanced the
    /// watermark. Only bytes at or below the watermark are ever sent.
    fn ship(&mut self, io: &mut impl Io, wal: &mut WalWriter) -> Result<(), SinkError>;

    /// One of the sink's completions.
    fn on_completion(&mut self, io: &mut impl Io, completion: Completion) -> Result<(), SinkError>;

    /// The highest seq the destination holds durably (cumulative). After a
    /// reconnect it is what the destination said it holds: the seq the
    /// sink resumed after.
    fn acked_seq(&self) -> u64;

    /// When the loop must wake without a completion: a reconnect attempt.
    /// Never set while connected: shipping waits on nothing but completions.
    fn wake_at(&self) -> Option<Instant>;

    /// Ends the connection at the end of a run, so that its operations in
    /// flight complete and the ring can be dropped.
    fn close(&mut self);
}
