//! A receiver connection's records: read with io_uring RECV on its core's
//! ring and checked straight out of the receive buffer, then staged into
//! the connection's WAL unchanged.

use std::io;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{ServeError, Shared};
use crate::constants::{RECORD_BYTES_MAX, RECORD_HEADER_BYTES, RECV_BUFFER_BYTES};
use crate::frame;
use crate::io::{Completion, Io, Token};
use crate::protocol::{self, ProtocolError};
use crate::wal::{Stage, WalError, WalWriter};

/// A connection's records, read with io_uring RECV on its core's ring and
/// checked straight out of the receive buffer: the length bound before
/// anything is read for it, the crc32c, and that the seq follows the
/// previous one exactly. Verified bytes are staged into the WAL unchanged.
pub(super) struct SocketSource {
    stream: TcpStream,
    shared: Arc<Shared>,
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
    pub(super) error: Option<ServeError>,
}

impl SocketSource {
    /// Reads `stream`, whose next record must be `durable_seq + 1`.
    pub(super) fn new(stream: TcpStream, shared: Arc<Shared>, durable_seq: u64) -> SocketSource {
        SocketSource {
            stream,
            shared,
            buf: Some(vec![0u8; RECV_BUFFER_BYTES]),
            start: 0,
            filled: 0,
            expected_seq: durable_seq + 1,
            blocked: false,
            ended: false,
            error: None,
        }
    }

    /// Posts a RECV with `token` if none is in flight and reading goes on.
    pub(super) fn arm(&mut self, ring: &mut impl Io, token: Token) {
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

    /// Stages verified records into the WAL until none are left or the WAL
    /// is full (backpressure: no read is posted while the buffer is full).
    pub(super) fn stage(
        &mut self,
        wal: &mut WalWriter,
        ring: &mut impl Io,
    ) -> Result<(), WalError> {
        let Some(buf) = self.buf.as_ref() else {
            return Ok(()); // the kernel holds it
        };
        self.blocked = false;
        let mut walk = frame::Records::verified(&buf[self.start..self.filled]);
        while self.error.is_none() {
            let at = self.start;
            let header = frame::Header::read(walk.rest());
            let record = match walk.next() {
                None => break,
                Some(Ok(record)) => record,
                // The rest of the record is still on its way.
                Some(Err(frame::DecodeError::Truncated { .. })) => break,
                // A valid frame with seq 0: the shipper's Abort (protocol.rs).
                Some(Err(frame::DecodeError::ZeroSeq))
                    if header.is_some_and(|h| h.len_bytes <= protocol::ABORT_REASON_BYTES_MAX) =>
                {
                    let len = header.expect("checked").record_len_bytes();
                    let reason = String::from_utf8_lossy(&buf[at + RECORD_HEADER_BYTES..at + len]);
                    self.fail(ServeError::Aborted(reason.into_owned()));
                    break;
                }
                // The length bound is checked before anything is read for
                // the record (frame::decode), so a huge length field is
                // refused here, not waited for.
                Some(Err(e)) => {
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
            let need = record.encoded_len_bytes();
            let payload_len = record.payload.len() as u64;
            // Verified: it goes to disk exactly as it came, with no second
            // encode.
            match wal.stage_encoded(ring, &buf[at..at + need])? {
                Stage::Staged(_) => {}
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

    /// The RECV's completion.
    pub(super) fn on_completion(&mut self, completion: Completion) {
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

    /// No record will come any more, none is held, and no read is in
    /// flight.
    pub(super) fn is_finished(&self) -> bool {
        self.ended && self.buf.is_some() && !self.blocked
    }

    /// Bad bytes: stop reading; what was verified before them is kept.
    fn fail(&mut self, e: ServeError) {
        self.error = Some(e);
        self.ended = true;
        self.start = self.filled;
    }
}
