//! The TCP sink's send window: what was sent and not acknowledged, the
//! acknowledgements, and the latency of each record (append → sent,
//! append → acked).
//!
//! At most [`SEND_INFLIGHT_BYTES_MAX`] bytes and [`SEND_INFLIGHT_RECORDS_MAX`]
//! records are unacknowledged at once; the rest of any backlog stays on
//! disk. A record sent by copy (or zero-copy) carries its timestamp in the
//! window, read from its header. A spliced record is never read, so its
//! timestamp comes from the WAL's durable feed, kept in `latency_pending`
//! only while contiguous and within capacity: a record the table does not
//! hold is never spliced ([`Window::splice_timed`]) but sent by copy. Each
//! record is timed exactly once.

use std::collections::VecDeque;

use crate::constants::{
    SEND_INFLIGHT_BYTES_MAX, SEND_INFLIGHT_RECORDS_MAX, SPLICE_UNITS_INFLIGHT_MAX,
};
use crate::frame;
use crate::latency::Recorder;
use crate::protocol::{self, ACK_BYTES, ProtocolError};
use crate::wal::WalWriter;

pub(super) struct Window {
    /// (seq, append_ts_ns, encoded bytes) of records sent and not acked. A
    /// splice unit is one entry, with no timestamp, ending at its last seq.
    inflight: VecDeque<(u64, u64, u32)>,
    inflight_bytes: u64,
    /// The highest seq the peer acknowledged.
    pub acked_seq: u64,
    /// Highest seq counted in append → sent; never moves back, so records
    /// sent again after a reconnect are not counted twice.
    sent_noted_seq: u64,
    /// An ack split across reads.
    ack_partial: Vec<u8>,
    /// Splice mode: (seq, append_ts_ns) of durable records from the WAL's
    /// feed, contiguous.
    latency_pending: VecDeque<(u64, u64)>,
    /// Splice mode: (first, last) seqs of each splice unit sent and not
    /// acked, so that only spliced records are timed from `latency_pending`.
    splice_ranges: VecDeque<(u64, u64)>,
    pub acked_records: u64,
    pub append_to_sent_ns: Recorder,
    pub append_to_acked_ns: Recorder,
}

impl Window {
    /// A window; with `splice`, the latency tables splicing needs.
    pub fn new(splice: bool) -> Window {
        Window {
            inflight: VecDeque::with_capacity(SEND_INFLIGHT_RECORDS_MAX),
            inflight_bytes: 0,
            acked_seq: 0,
            sent_noted_seq: 0,
            ack_partial: Vec::with_capacity(ACK_BYTES),
            latency_pending: VecDeque::with_capacity(if splice {
                SEND_INFLIGHT_RECORDS_MAX
            } else {
                0
            }),
            splice_ranges: VecDeque::with_capacity(if splice {
                SPLICE_UNITS_INFLIGHT_MAX
            } else {
                0
            }),
            acked_records: 0,
            append_to_sent_ns: Recorder::new(),
            append_to_acked_ns: Recorder::new(),
        }
    }

    /// Bytes that may be sent before acks free more.
    pub fn room_bytes(&self) -> u64 {
        SEND_INFLIGHT_BYTES_MAX.saturating_sub(self.inflight_bytes)
    }

    /// Records that may be sent before acks free more.
    pub fn room_records(&self) -> usize {
        SEND_INFLIGHT_RECORDS_MAX - self.inflight.len()
    }

    /// Notes one record about to be sent by copy or zero-copy.
    pub fn push_record(&mut self, seq: u64, append_ts_ns: u64, len: usize) {
        self.inflight.push_back((seq, append_ts_ns, len as u32));
    }

    /// Counts a chunk's bytes as in flight.
    pub fn push_bytes(&mut self, bytes: u64) {
        self.inflight_bytes += bytes;
    }

    /// Notes a splice unit of `bytes` covering seqs `first..=last`.
    pub fn push_splice(&mut self, first: u64, last: u64, bytes: u64) {
        self.inflight.push_back((last, 0, bytes as u32));
        self.splice_ranges.push_back((first, last));
        self.inflight_bytes += bytes;
    }

    /// True if another splice unit may be started.
    pub fn splice_room(&self) -> bool {
        self.inflight_bytes < SEND_INFLIGHT_BYTES_MAX
            && self.inflight.len() < SEND_INFLIGHT_RECORDS_MAX
            && self.splice_ranges.len() < SPLICE_UNITS_INFLIGHT_MAX
    }

    /// Takes the records that became durable from the WAL's feed into
    /// `latency_pending`, while they follow on and fit; once the table
    /// empties it starts again.
    pub fn take_durable_feed(&mut self, wal: &mut WalWriter) {
        let pending = &mut self.latency_pending;
        wal.drain_durable_feed(|seq, ts| {
            let follows = pending.back().is_none_or(|&(last, _)| last + 1 == seq);
            if follows && pending.len() < pending.capacity() {
                pending.push_back((seq, ts));
            }
        });
    }

    /// True if the records `send_seq..=durable_seq` are all in
    /// `latency_pending`, so that a splice, which never reads them, can
    /// still time each one.
    pub fn splice_timed(&self, send_seq: u64, durable_seq: u64) -> bool {
        match (self.latency_pending.front(), self.latency_pending.back()) {
            (Some(&(first, _)), Some(&(last, _))) => first <= send_seq && last == durable_seq,
            _ => false,
        }
    }

    /// Counts append → sent for every record up to `upto` not counted yet.
    /// Records sent by copy carry their timestamps in the window; spliced
    /// ones find theirs in `latency_pending`. Both are ordered by seq, and
    /// a record is in exactly one of the two.
    pub fn note_sent(&mut self, upto: u64) {
        if upto <= self.sent_noted_seq {
            return;
        }
        let now_ns = frame::now_ns();
        let from = self.sent_noted_seq + 1;
        self.sent_noted_seq = upto;
        let recorder = &mut self.append_to_sent_ns;
        let skip = self.inflight.partition_point(|&(seq, _, _)| seq < from);
        for &(seq, ts, _) in self.inflight.range(skip..) {
            if seq > upto {
                break;
            }
            // A splice unit's window entry has no timestamp.
            if ts != 0 {
                recorder.record(ts, now_ns);
            }
        }
        let skip = self.splice_ranges.partition_point(|&(_, last)| last < from);
        for &(first, last) in self.splice_ranges.range(skip..) {
            if first > upto {
                break;
            }
            let (lo, hi) = (first.max(from), last.min(upto));
            if lo > hi {
                continue;
            }
            let skip = self.latency_pending.partition_point(|&(seq, _)| seq < lo);
            for &(seq, ts) in self.latency_pending.range(skip..) {
                if seq > hi {
                    break;
                }
                recorder.record(ts, now_ns);
            }
        }
    }

    /// Parses acks (which may arrive split across reads); returns the
    /// highest, and why the bytes stopped being a valid ack stream if they
    /// did: a Stop notice, or an ack below the last one or above the last
    /// seq sent (`send_seq - 1`). Acks before that still count.
    pub fn parse_acks(&mut self, data: &[u8], send_seq: u64) -> (u64, Option<ProtocolError>) {
        let mut acked = self.acked_seq;
        for &byte in data {
            self.ack_partial.push(byte);
            if self.ack_partial.len() == ACK_BYTES {
                let decoded = protocol::decode_ack(&self.ack_partial);
                self.ack_partial.clear();
                let seq = match decoded {
                    Ok(seq) => seq,
                    Err(e) => return (acked, Some(e)),
                };
                if seq < acked || seq >= send_seq {
                    let e = ProtocolError::AckOutOfRange {
                        seq,
                        low: acked,
                        high: send_seq - 1,
                    };
                    return (acked, Some(e));
                }
                acked = seq;
            }
        }
        (acked, None)
    }

    /// The peer holds everything up to `acked`: free the window and time
    /// each record acknowledged.
    pub fn on_acked(&mut self, acked: u64) {
        // An ack can be handled before the completion of the send it
        // covers (both in one reap): those records were sent, too.
        self.note_sent(acked);
        let now_ns = frame::now_ns();
        while let Some(&(seq, ts, len)) = self.inflight.front() {
            if seq > acked {
                break;
            }
            self.inflight.pop_front();
            self.inflight_bytes -= len as u64;
            // A splice unit's entry has no timestamp: its records are timed
            // from `latency_pending` below.
            if ts != 0 {
                self.acked_records += 1;
                self.append_to_acked_ns.record(ts, now_ns);
            }
        }
        // Spliced records are timed from the durable feed; entries of
        // records that went by copy were timed above and are only dropped.
        while let Some(&(seq, ts)) = self.latency_pending.front() {
            if seq > acked {
                break;
            }
            self.latency_pending.pop_front();
            while self
                .splice_ranges
                .front()
                .is_some_and(|&(_, last)| last < seq)
            {
                self.splice_ranges.pop_front();
            }
            if self
                .splice_ranges
                .front()
                .is_some_and(|&(first, _)| first <= seq)
            {
                self.acked_records += 1;
                self.append_to_acked_ns.record(ts, now_ns);
            }
        }
        while self
            .splice_ranges
            .front()
            .is_some_and(|&(_, last)| last <= acked)
        {
            self.splice_ranges.pop_front();
        }
        self.acked_seq = acked;
    }

    /// The connection is gone: nothing is in flight any more. Durable
    /// records' timestamps stay, for the next connection's splices.
    pub fn reset(&mut self) {
        self.splice_ranges.clear();
        self.inflight.clear();
        self.inflight_bytes = 0;
        self.ack_partial.clear();
    }
}
