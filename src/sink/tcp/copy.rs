//! The copy transport, and the chunk reading that zero-copy shares: read a
//! chunk of whole durable records at the cursor (pread), note each record
//! in the window, send it with io_uring SEND (or SEND_ZC, see [`super::zc`]).
//! A chunk never passes the durable watermark, the send window, or the
//! segment's end; at the end of a sealed segment the cursor moves on to the
//! next one.

use super::{SendMode, TcpSink};
use crate::constants::SEND_CHUNK_BYTES;
use crate::io::{Completion, Io, Kind};
use crate::sink::SinkError;
use crate::wal::{DurableTail, WalWriter, Walked};

impl TcpSink {
    /// Walks the records of `chunk` (bytes at the cursor), noting each in
    /// the window, until the window is full or the durable seq is reached.
    pub(super) fn walk_chunk(
        &mut self,
        chunk: &[u8],
        tail: DurableTail,
    ) -> Result<Walked, SinkError> {
        let window = &mut self.window;
        let mut room = window.room_records();
        let mut next = self.send_seq;
        let walked = self
            .reader
            .walk(chunk, tail, self.send_seq, |seq, ts, len| {
                if room == 0 || seq > tail.durable_seq {
                    return false;
                }
                window.push_record(seq, ts, len);
                room -= 1;
                next = seq + 1;
                true
            })?;
        self.counters.sent_records += next - self.send_seq;
        self.send_seq = next;
        Ok(walked)
    }

    /// Moves the cursor over a chunk of `used` bytes about to be sent, and
    /// counts it.
    pub(super) fn chunk_taken(&mut self, used: usize) {
        self.reader.advance(used as u64);
        self.chunk_last_seq = self.send_seq - 1;
        self.window.push_bytes(used as u64);
        self.counters.sent_bytes += used as u64;
        self.send_progress = Some((used, 0));
    }

    /// Reads the next chunk of durable records and sends it: with io_uring
    /// SEND from the sink's buffer (`copy`, and `splice` for a backlog or a
    /// small increment), or with SEND_ZC from a registered buffer (`zc`).
    pub(super) fn send_next_chunk(
        &mut self,
        io: &mut impl Io,
        wal: &WalWriter,
    ) -> Result<(), SinkError> {
        let zc = self.config.send_mode == SendMode::Zc;
        let tail = wal.durable_tail();
        let window_bytes = self.window.room_bytes();
        if window_bytes == 0 || self.window.room_records() == 0 || self.send_seq > tail.durable_seq
        {
            return Ok(());
        }
        let end = self.reader.readable_end(tail)?;
        let want = (end.saturating_sub(self.reader.offset_bytes()))
            .min(SEND_CHUNK_BYTES as u64)
            .min(window_bytes) as usize;
        if zc {
            match self.zc_from_commit_buffer(io, wal, want)? {
                Some(()) => return Ok(()),
                None if self.zc_buffer_busy(io) => {
                    // Its notification is a completion: ship runs again
                    // then.
                    return Ok(());
                }
                None => {}
            }
        }
        let mut copy_buf = if zc {
            None
        } else {
            let mut buf = self.send_buf.take().expect("checked by ship");
            buf.clear();
            buf.resize(want, 0);
            Some(buf)
        };
        let n = match copy_buf.as_mut() {
            Some(buf) => self.reader.read_at_cursor(buf)?,
            None => {
                let index = self.zc.buffer.expect("zc has its buffer");
                let buf = &mut io.fixed_buf_mut(index).expect("checked above")[..want];
                self.reader.read_at_cursor(buf)?
            }
        };
        let walked = match copy_buf.as_ref() {
            Some(buf) => self.walk_chunk(&buf[..n], tail)?,
            None => {
                let index = self.zc.buffer.expect("zc has its buffer");
                self.walk_chunk(&io.fixed_buf(index)[..n], tail)?
            }
        };
        if walked.bytes == 0 {
            if let Some(buf) = copy_buf {
                self.send_buf = Some(buf);
            }
            if self.reader.in_current_segment(tail) || !walked.end_of_segment {
                // Caught up with the durable tail, or the window cannot
                // take the next record until acks free it.
                return Ok(());
            }
            // The end of a sealed segment: the next one starts at
            // send_seq, and the peer hears of it first.
            tracing::trace!(next = self.send_seq, "end of a sealed segment");
            self.reader.next_segment(self.send_seq)?;
            self.send_segment_frame(io);
            return Ok(());
        }
        match copy_buf {
            Some(mut buf) => {
                self.chunk_taken(walked.bytes);
                buf.truncate(walked.bytes);
                self.counters.copy_bytes += walked.bytes as u64;
                let token = self.link.token(Kind::Send);
                if io.send(self.stream(), buf, 0, token).is_err() {
                    panic!("ring full: RING_SLOTS_MAX must cover the sink");
                }
            }
            None => {
                let index = self.zc.buffer.expect("zc has its buffer");
                self.send_zc_chunk(io, index, 0, walked.bytes);
            }
        }
        Ok(())
    }

    /// Accounts a send's result (copy or zero-copy): `Some(offset)` when
    /// the chunk's bytes from `offset` on must be sent again (a short
    /// send), `None` when the chunk is done or the connection was dropped
    /// on an error.
    pub(super) fn send_result(&mut self, result: i32) -> Option<usize> {
        if result < 0 {
            self.send_progress = None;
            self.disconnect(&std::io::Error::from_raw_os_error(-result).to_string());
            return None;
        }
        let (len, sent) = self.send_progress.expect("a send was in flight");
        let sent = sent + result as usize;
        if sent < len {
            self.send_progress = Some((len, sent));
            Some(sent)
        } else {
            self.send_progress = None;
            if !std::mem::take(&mut self.frame_in_flight) {
                self.window.note_sent(self.chunk_last_seq);
            }
            None
        }
    }

    /// A copy SEND's completion: resubmit the rest of a short send.
    pub(super) fn on_send(&mut self, io: &mut impl Io, c: Completion, current: bool) {
        let buf = c.buf.expect("a send hands its buffer back");
        if !current {
            self.send_progress = None;
            self.frame_in_flight = false;
            self.send_buf = Some(buf);
            return;
        }
        match self.send_result(c.result) {
            Some(sent) => {
                let token = self.link.token(Kind::Send);
                if io.send(self.stream(), buf, sent, token).is_err() {
                    panic!("ring full: RING_SLOTS_MAX must cover the sink");
                }
            }
            None => self.send_buf = Some(buf),
        }
    }
}
