//! The splice transport: the durable, unsent part of the segment being
//! written goes page cache → pipe → socket with io_uring SPLICE, and never
//! enters user memory.
//!
//! A unit covers `[cursor, durable offset)` and ends exactly at the
//! watermark, so its last record is the durable seq: acks map back to it
//! without a header being read. It moves a pipe-full per loop turn: file →
//! pipe linked (IOSQE_IO_LINK) to pipe → socket, one submission. A short
//! read into the pipe cancels the linked send, and the pipe's content then
//! goes out alone; what the pipe holds is what went in minus what came out,
//! whatever order the two completions are handled in. The pipe is as large
//! as the system allows (see [`crate::io::pipe::splice_pipe`]) and is made
//! anew for every connection, so no stale bytes of a dead one can leak.

use std::io;

use super::TcpSink;
use super::conn::Pipe;
use crate::io::{Io, Kind};
use crate::sink::SinkError;
use crate::wal::DurableTail;

/// A unit in progress.
struct Unit {
    /// Offset of the next byte to move into the pipe.
    next_bytes: u64,
    end_bytes: u64,
    /// Bytes moved into the pipe, and out of it into the socket, so far.
    piped_bytes: u64,
    sent_bytes: u64,
    /// Splices of the unit in flight (two for a linked pair).
    ops: usize,
}

/// The pipe and the unit in progress.
#[derive(Default)]
pub(super) struct SpliceState {
    /// The connection's pipe (splice mode only).
    pub pipe: Option<Pipe>,
    unit: Option<Unit>,
}

impl SpliceState {
    /// True while a unit is in progress.
    pub fn busy(&self) -> bool {
        self.unit.is_some()
    }

    /// Drops the unit of a dead connection; returns its splices still in
    /// flight, which complete as stale operations.
    pub fn abandon(&mut self) -> Option<usize> {
        self.unit.take().map(|unit| unit.ops)
    }
}

impl TcpSink {
    /// Splices the durable, unsent part of the segment being written.
    pub(super) fn start_splice(&mut self, io: &mut impl Io, tail: DurableTail) {
        if !self.window.splice_room() || self.send_seq > tail.durable_seq {
            return;
        }
        let from = self.reader.offset_bytes();
        let end = tail.durable_offset_bytes;
        if end <= from {
            return;
        }
        // It counts as sent from now on, as a copy chunk does once read, so
        // that an ack racing the splice's own completion is in range.
        let end_seq = tail.durable_seq;
        tracing::trace!(
            segment = self.reader.segment_first_seq(),
            from,
            to = end,
            first_seq = self.send_seq,
            end_seq,
            "splice"
        );
        self.window.push_splice(self.send_seq, end_seq, end - from);
        self.counters.sent_records += end_seq + 1 - self.send_seq;
        self.send_seq = end_seq + 1;
        self.chunk_last_seq = end_seq;
        self.splice.unit = Some(Unit {
            next_bytes: from,
            end_bytes: end,
            piped_bytes: 0,
            sent_bytes: 0,
            ops: 0,
        });
        self.splice_pair(io);
    }

    /// Moves the next pipe-full of the unit.
    fn splice_pair(&mut self, io: &mut impl Io) {
        let token_in = self.link.token(Kind::SpliceIn);
        let token_out = self.link.token(Kind::SpliceOut);
        let stream = self.link.stream.as_ref().expect("connected");
        let unit = self.splice.unit.as_mut().expect("a unit in progress");
        let (pipe_read, pipe_write, capacity) =
            self.splice.pipe.as_ref().expect("splice mode has a pipe");
        let len = (unit.end_bytes - unit.next_bytes).min(*capacity as u64) as u32;
        io.splice_file_to_socket(
            self.reader.file(),
            unit.next_bytes as i64,
            pipe_write,
            pipe_read,
            stream,
            len,
            token_in,
            token_out,
        )
        .expect("ring slots cover the sink");
        unit.ops = 2;
    }

    /// Sends the `in_pipe` bytes the pipe holds.
    fn splice_out_of_pipe(&mut self, io: &mut impl Io, in_pipe: u32) {
        let token = self.link.token(Kind::SpliceOut);
        let stream = self.link.stream.as_ref().expect("connected");
        let unit = self.splice.unit.as_mut().expect("a unit in progress");
        let (pipe_read, _, _) = self.splice.pipe.as_ref().expect("splice mode has a pipe");
        io.splice(pipe_read, -1, stream, in_pipe, token)
            .expect("ring slots cover the sink");
        unit.ops = 1;
    }

    /// One completion of the unit in progress. The next pipe-full starts
    /// once both halves of the current one have completed.
    pub(super) fn on_splice(
        &mut self,
        io: &mut impl Io,
        kind: Kind,
        result: i32,
    ) -> Result<(), SinkError> {
        let unit = self.splice.unit.as_mut().expect("a unit in progress");
        unit.ops -= 1;
        match (kind, result) {
            (Kind::SpliceIn, n) if n > 0 => {
                unit.next_bytes += n as u64;
                unit.piped_bytes += n as u64;
            }
            (Kind::SpliceIn, n) if n < 0 && n != -libc::EPIPE => {
                return Err(SinkError::Read(crate::wal::ReadError::Io {
                    op: "splice from segment",
                    path: self.reader.path().to_path_buf(),
                    source: io::Error::from_raw_os_error(-n),
                }));
            }
            // Cancelled because the read into the pipe was short (or
            // failed, which its own completion reports): nothing was sent.
            (Kind::SpliceOut, n) if n == -libc::ECANCELED => {}
            (Kind::SpliceOut, n) if n > 0 => {
                unit.sent_bytes += n as u64;
                self.counters.splice_bytes += n as u64;
                self.counters.sent_bytes += n as u64;
            }
            (_, n) => {
                let why = if n == 0 {
                    "splice moved nothing".to_string()
                } else {
                    io::Error::from_raw_os_error(-n).to_string()
                };
                self.disconnect(&why);
                return Ok(());
            }
        }
        let unit = self.splice.unit.as_ref().expect("a unit in progress");
        if unit.ops > 0 {
            return Ok(());
        }
        let Some(in_pipe) = unit.piped_bytes.checked_sub(unit.sent_bytes) else {
            // More left the pipe than entered it: the pipe is not ours alone.
            self.disconnect("the splice pipe sent more than it was given");
            return Ok(());
        };
        if in_pipe > 0 {
            self.splice_out_of_pipe(io, in_pipe as u32);
        } else if unit.next_bytes < unit.end_bytes {
            self.splice_pair(io);
        } else {
            let unit = self.splice.unit.take().expect("checked");
            let moved = unit.end_bytes - self.reader.offset_bytes();
            self.reader.advance(moved);
            self.window.note_sent(self.chunk_last_seq);
        }
        Ok(())
    }
}
