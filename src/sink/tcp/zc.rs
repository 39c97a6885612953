//! The zero-copy transport: io_uring SEND_ZC from registered buffers.
//!
//! When the WAL writes O_DIRECT segments from registered commit buffers,
//! the durable tail is still in the buffer that wrote it, and is sent from
//! there without being read back ([`WalWriter::retained`]). Anything else
//! (a backlog, a WAL in the page cache) is read into the sink's own
//! registered buffer first. A SEND_ZC completes twice: its result (`more`
//! set), then its notification, until which the buffer is the kernel's —
//! the ring counts it in use, so nothing refills it early.

use std::collections::VecDeque;

use super::TcpSink;
use crate::constants::SEND_ZC_IN_FLIGHT_MAX;
use crate::io::{Completion, Io, Kind};
use crate::sink::SinkError;
use crate::wal::WalWriter;

/// Zero-copy sends in flight.
#[derive(Default)]
pub(super) struct ZcState {
    /// The sink's registered buffer, for chunks read back.
    pub buffer: Option<usize>,
    /// Sends whose last completion (the notification) is still due.
    pub ops: usize,
    /// Bytes of each send awaiting its notification, in order.
    pending: VecDeque<u32>,
    /// The registered buffer and offset the current chunk is sent from (a
    /// short send resumes there).
    from: (usize, usize),
}

impl TcpSink {
    /// Sends the durable bytes at the cursor straight from the WAL's
    /// commit buffer that still holds them. `Ok(None)` when none does.
    pub(super) fn zc_from_commit_buffer(
        &mut self,
        io: &mut impl Io,
        wal: &WalWriter,
        want: usize,
    ) -> Result<Option<()>, SinkError> {
        let tail = wal.durable_tail();
        let Some(kept) = wal.retained(
            io,
            self.reader.segment_first_seq(),
            self.reader.offset_bytes(),
        ) else {
            return Ok(None);
        };
        let chunk = &io.fixed_buf(kept.index)[kept.from..][..want.min(kept.len)];
        let walked = self.walk_chunk(chunk, tail)?;
        if walked.bytes > 0 {
            self.counters.zc_commit_bytes += walked.bytes as u64;
            self.send_zc_chunk(io, kept.index, kept.from, walked.bytes);
        }
        // Otherwise the window is full until acks free it.
        Ok(Some(()))
    }

    /// True while the sink's own buffer waits for a notification.
    pub(super) fn zc_buffer_busy(&self, io: &impl Io) -> bool {
        self.zc.buffer.is_some_and(|index| io.fixed_in_use(index))
    }

    /// Sends bytes `[from, from + used)` of registered buffer `index` with
    /// SEND_ZC; the buffer is the kernel's until the notification.
    pub(super) fn send_zc_chunk(
        &mut self,
        io: &mut impl Io,
        index: usize,
        from: usize,
        used: usize,
    ) {
        self.chunk_taken(used);
        self.counters.zc_bytes += used as u64;
        self.zc.from = (index, from);
        let token = self.link.token(Kind::SendZc);
        io.send_zc_fixed(self.stream(), index, from, used, token)
            .expect("ring slots cover the sink");
        self.zc.ops += 1;
    }

    /// A zero-copy send's completions: first its result (`more` set when a
    /// notification follows), then the notification, which frees the buffer
    /// and says whether the kernel copied after all.
    pub(super) fn on_send_zc(&mut self, io: &mut impl Io, c: &Completion, current: bool) {
        if c.notif {
            self.zc.ops -= 1;
            let bytes = self.zc.pending.pop_front().unwrap_or(0);
            if crate::io::zc_copied(c.result) {
                self.counters.zc_copied_bytes += u64::from(bytes);
            }
            return;
        }
        if c.more {
            if self.zc.pending.len() < SEND_ZC_IN_FLIGHT_MAX {
                self.zc.pending.push_back(c.result.max(0) as u32);
            }
        } else {
            // No notification follows (the send failed): the op is over.
            self.zc.ops -= 1;
        }
        if !current {
            self.send_progress = None;
            return;
        }
        if let Some(sent) = self.send_result(c.result) {
            let len = self.send_progress.expect("more to send").0;
            let (index, from) = self.zc.from;
            let token = self.link.token(Kind::SendZc);
            io.send_zc_fixed(self.stream(), index, from + sent, len - sent, token)
                .expect("ring slots cover the sink");
            self.zc.ops += 1;
        }
    }
}
