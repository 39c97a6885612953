//! The TCP sink: ships a shard's durable tail to a ringship receiver and
//! counts its cumulative acks.
//!
//! **What triggers a send.** The shard's loop calls [`Sink::ship`] in the
//! same turn as every completion it handles: a commit that advanced the
//! durable watermark, a finished send, an ack. It sends `[sent, durable)` at
//! once. No timer, poll interval, heartbeat or later record is ever needed
//! for a durable record to leave; the only timer is the reconnect backoff
//! while the peer is unreachable.
//!
//! **What is sent.** Only bytes at or below the WAL's durable watermark,
//! read through a [`WalReader`] and sent as they are on disk, on record
//! boundaries, within the send window ([`window`]). A crash of the source
//! therefore never leaves the peer with records the source forgot.
//!
//! **Resume.** On every (re)connect the receiver reports the last seq it
//! holds durably (the handshake, [`conn`]); the sink seeks the record after
//! it and continues there, so restarts lose and duplicate nothing. A record
//! no longer held (retention deleted it), or a peer ahead of this WAL, is a
//! loud, fatal [`SinkError`], never a silent gap.
//!
//! **Three transports**, chosen by [`SendMode`]:
//! - [`copy`]: pread a chunk, io_uring SEND it: the baseline, and what the
//!   other two fall back to for a backlog or a small increment;
//! - [`splice`]: the segment being written, page cache → pipe → socket with
//!   io_uring SPLICE, never copied into user memory;
//! - [`zc`]: SEND_ZC straight from the WAL's O_DIRECT commit buffers (when
//!   the WAL was opened with O_DIRECT), else from a registered buffer of
//!   the sink's; the buffer is the kernel's until the notification.

mod conn;
#[cfg(test)]
pub(crate) use conn::{HandshakeError, SimAttempt};
mod copy;
mod splice;
mod window;
mod zc;

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use self::conn::Link;
use self::splice::SpliceState;
use self::window::Window;
use self::zc::ZcState;
use super::{Sink, SinkError};
use crate::constants::{SEND_CHUNK_BYTES, SEND_ZC_IN_FLIGHT_MAX, SPLICE_MIN_BYTES};
use crate::io::{Completion, Io, Kind, Owner};
use crate::latency::{Recorder, Window as LatencyWindow};
use crate::protocol::{self, ACK_BYTES, Hello};
use crate::wal::segment::WalId;
use crate::wal::{DurableTail, WalReader, WalWriter};

/// How the sink moves bytes from segment to socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SendMode {
    /// io_uring SPLICE, segment (page cache) → pipe → socket, for the
    /// segment being written; small increments and a backlog go by copy.
    Splice,
    /// io_uring SEND_ZC from registered buffers: the WAL's O_DIRECT commit
    /// buffers for the durable tail, else the sink's own (a backlog is read
    /// into it first). Pays off on a real NIC; loopback always copies, and
    /// says so.
    Zc,
    /// pread into a buffer, then io_uring SEND: the baseline.
    Copy,
}

impl std::fmt::Display for SendMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SendMode::Splice => "splice",
            SendMode::Zc => "zc",
            SendMode::Copy => "copy",
        })
    }
}

/// Where and how to ship.
#[derive(Debug, Clone)]
pub struct TcpConfig {
    pub peer: SocketAddr,
    /// This source's name at the receiver (validated by
    /// `protocol::validate_source`).
    pub source: String,
    pub send_mode: SendMode,
}

/// Shipping counters and latency, merged into reports.
pub struct TcpStats {
    pub sent_bytes: u64,
    pub sent_records: u64,
    pub acked_records: u64,
    pub connects: u64,
    pub disconnects: u64,
    /// Bytes sent by each path.
    pub copy_bytes: u64,
    pub splice_bytes: u64,
    pub zc_bytes: u64,
    /// Of `zc_bytes`, those the kernel reported it copied after all
    /// (IORING_NOTIF_USAGE_ZC_COPIED; always all of them on loopback).
    pub zc_copied_bytes: u64,
    /// Of `zc_bytes`, those sent straight from the WAL's O_DIRECT commit
    /// buffers, never read back from the segment.
    pub zc_commit_bytes: u64,
    /// append_ts → handed to the socket (the send or splice completed).
    pub append_to_sent_ns: Recorder,
    /// append_ts → ack received, per record: the headline latency.
    pub append_to_acked_ns: Recorder,
}

/// Byte counters by path (the latency lives in the window).
#[derive(Default)]
struct Counters {
    sent_bytes: u64,
    sent_records: u64,
    connects: u64,
    disconnects: u64,
    copy_bytes: u64,
    splice_bytes: u64,
    zc_bytes: u64,
    zc_copied_bytes: u64,
    zc_commit_bytes: u64,
}

/// Bytes of acks one RECV takes at most.
const ACK_RECV_BYTES: usize = ACK_BYTES * 64;

/// One shard's TCP sink.
pub struct TcpSink {
    config: TcpConfig,
    shard: u32,
    link: Link,
    reader: WalReader,
    /// Seq of the next record to send.
    send_seq: u64,
    /// Last seq of the send or splice in flight.
    chunk_last_seq: u64,
    window: Window,
    /// The copy send's buffer while none is in flight.
    send_buf: Option<Vec<u8>>,
    /// Bytes of the send in flight (copy or zero-copy), and how many of
    /// them have gone.
    send_progress: Option<(usize, usize)>,
    /// The ack RECV's buffer while none is in flight.
    recv_buf: Option<Vec<u8>>,
    /// A Segment frame (protocol.rs) must go before the next record: the
    /// cursor moved to a segment the peer has not been told about.
    segment_frame_due: bool,
    /// The send in flight is a Segment frame, not records.
    frame_in_flight: bool,
    splice: SpliceState,
    zc: ZcState,
    counters: Counters,
}

impl TcpSink {
    /// A sink for shard `shard` of the WAL in `dir`.
    pub fn new(config: TcpConfig, dir: &std::path::Path, shard: u32) -> std::io::Result<TcpSink> {
        protocol::validate_source(&config.source).expect("the caller validates the source");
        let splice_mode = config.send_mode == SendMode::Splice;
        Ok(TcpSink {
            link: Link::new(config.peer)?,
            reader: WalReader::new(dir, shard),
            config,
            shard,
            send_seq: 0,
            chunk_last_seq: 0,
            window: Window::new(splice_mode),
            send_buf: Some(Vec::with_capacity(SEND_CHUNK_BYTES)),
            send_progress: None,
            recv_buf: Some(vec![0u8; ACK_RECV_BYTES]),
            segment_frame_due: false,
            frame_in_flight: false,
            splice: SpliceState::default(),
            zc: ZcState::default(),
            counters: Counters::default(),
        })
    }

    /// True if the sink times spliced records from the WAL's durable feed,
    /// which the shard then enables.
    pub fn wants_durable_feed(&self) -> bool {
        self.config.send_mode == SendMode::Splice
    }

    /// Counts latency only inside `window` (`bench`).
    pub fn set_latency_window(&mut self, window: Option<Arc<LatencyWindow>>) {
        self.window.append_to_sent_ns.set_window(window.clone());
        self.window.append_to_acked_ns.set_window(window);
    }

    pub fn into_stats(self) -> TcpStats {
        let c = self.counters;
        TcpStats {
            sent_bytes: c.sent_bytes,
            sent_records: c.sent_records,
            acked_records: self.window.acked_records,
            connects: c.connects,
            disconnects: c.disconnects,
            copy_bytes: c.copy_bytes,
            splice_bytes: c.splice_bytes,
            zc_bytes: c.zc_bytes,
            zc_copied_bytes: c.zc_copied_bytes,
            zc_commit_bytes: c.zc_commit_bytes,
            append_to_sent_ns: self.window.append_to_sent_ns,
            append_to_acked_ns: self.window.append_to_acked_ns,
        }
    }

    /// The live connection's stream.
    fn stream(&self) -> &TcpStream {
        self.link.stream.as_ref().expect("connected")
    }

    /// Drops the connection: what was in flight goes again after the next
    /// connect, from the seq the peer then holds.
    fn disconnect(&mut self, why: &str) {
        let file = self.reader.close();
        let pipe = self.splice.pipe.take();
        if self.link.drop_connection(file, pipe) {
            tracing::warn!(peer = %self.config.peer, shard = self.shard, "connection lost: {why}");
            self.counters.disconnects += 1;
        }
        if let Some(ops) = self.splice.abandon() {
            // Its splices still complete, as stale operations.
            self.link.stale_ops += ops;
        }
        self.window.reset();
        self.frame_in_flight = false;
    }

    /// Sends the Segment frame that announces the cursor's segment (its
    /// salt, and the seq the next record has) before any of its records:
    /// one small copy SEND per segment.
    fn send_segment_frame(&mut self, io: &mut impl Io) {
        let frame = protocol::encode_segment_frame(self.reader.segment_salt(), self.send_seq);
        let mut buf = self.send_buf.take().expect("checked by ship");
        buf.clear();
        buf.extend_from_slice(&frame);
        self.segment_frame_due = false;
        self.frame_in_flight = true;
        self.send_progress = Some((buf.len(), 0));
        let token = self.link.token(Kind::Send);
        if io.send(self.stream(), buf, 0, token).is_err() {
            panic!("ring full: RING_SLOTS_MAX must cover the sink");
        }
    }

    /// Starts a connect attempt, once the dead connection's operations are
    /// over (its fds are released only after them).
    fn connect(&mut self, io: &mut impl Io, wal_id: WalId) {
        let ops_in_flight = self.link.stale_ops > 0
            || self.zc.ops > 0
            || self.send_progress.is_some()
            || self.send_buf.is_none()
            || self.recv_buf.is_none();
        if ops_in_flight {
            self.link.schedule_retry();
            return;
        }
        let hello = Hello::new(self.config.source.clone(), self.shard, wal_id);
        self.link.start_connect(io, hello);
    }

    /// Takes a finished connect attempt: on success, seeks the record after
    /// the peer's durable seq. Transient failures schedule a retry; only a
    /// gap or a diverged peer is an error, told to the receiver too (an
    /// Abort frame) so that both sides log it.
    fn finish_connect(&mut self, tail: DurableTail) -> Result<(), SinkError> {
        let Some(result) = self.link.take_result() else {
            return Ok(());
        };
        let (stream, peer_seq) = match result {
            Ok(ok) => ok,
            Err(conn::HandshakeError::Fatal(e)) => return Err(SinkError::Refused(e)),
            Err(why @ conn::HandshakeError::Refused(_)) => {
                // The receiver answered but turned this attempt away (its
                // storage failed, another connection still holds the
                // source): worth a line in the log, and a retry.
                tracing::warn!(peer = %self.config.peer, shard = self.shard, "{why}; retrying");
                self.link.schedule_retry();
                return Ok(());
            }
            Err(why) => {
                tracing::debug!(peer = %self.config.peer, "cannot reach the peer: {why}");
                self.link.schedule_retry();
                return Ok(());
            }
        };
        let abort = |mut stream: TcpStream, e: SinkError| {
            let _ = stream.write_all(&protocol::encode_abort(&e.to_string()));
            let _ = stream.shutdown(Shutdown::Write);
            e
        };
        if peer_seq > tail.durable_seq {
            let e = SinkError::PeerAhead {
                peer_seq,
                durable_seq: tail.durable_seq,
            };
            return Err(abort(stream, e));
        }
        match self
            .reader
            .seek(peer_seq + 1, tail)
            .map_err(SinkError::from)
        {
            Ok(()) => {}
            Err(e @ SinkError::RetentionGap { .. }) => return Err(abort(stream, e)),
            Err(e) => return Err(e),
        }
        if self.config.send_mode == SendMode::Splice {
            self.splice.pipe =
                Some(crate::io::pipe::splice_pipe(SEND_CHUNK_BYTES).map_err(SinkError::Pipe)?);
        }
        self.send_seq = peer_seq + 1;
        self.segment_frame_due = true;
        self.window.acked_seq = peer_seq;
        self.link.connected(stream);
        self.counters.connects += 1;
        tracing::info!(peer = %self.config.peer, shard = self.shard, peer_seq, "connected");
        Ok(())
    }

    /// The ack RECV's completion.
    fn on_ack_recv(&mut self, c: Completion, current: bool) {
        let buf = c.buf.expect("recv hands its buffer back");
        let n = c.result;
        let parsed =
            (current && n > 0).then(|| self.window.parse_acks(&buf[..n as usize], self.send_seq));
        self.recv_buf = Some(buf);
        if !current {
            return;
        }
        match parsed {
            Some((acked, error)) => {
                if acked > self.window.acked_seq {
                    self.link.progressed();
                    self.window.on_acked(acked);
                }
                if let Some(why) = error {
                    // A receiver that stopped storing is retried with a
                    // growing backoff, however long it was connected.
                    if matches!(why, protocol::ProtocolError::ReceiverStopped { .. }) {
                        self.link.stopped_by_peer();
                    }
                    self.disconnect(&why.to_string());
                }
            }
            None if n == 0 => self.disconnect("the peer closed the connection"),
            None => self.disconnect(&std::io::Error::from_raw_os_error(-n).to_string()),
        }
    }
}

#[cfg(test)]
impl TcpSink {
    /// Connects through the simulator (`crate::sim`): attempts go on
    /// `attempts` for it to answer.
    pub(crate) fn simulated(
        &mut self,
        attempts: Arc<std::sync::Mutex<std::collections::VecDeque<SimAttempt>>>,
    ) {
        self.link.connector = conn::Connector::Sim(attempts);
    }
}

impl Sink for TcpSink {
    fn fixed_buffers(&self) -> Vec<usize> {
        if self.config.send_mode == SendMode::Zc {
            vec![SEND_CHUNK_BYTES]
        } else {
            Vec::new()
        }
    }

    fn attach_fixed(&mut self, first_index: usize) {
        self.zc.buffer = Some(first_index);
    }

    fn ship(&mut self, io: &mut impl Io, wal: &mut WalWriter) -> Result<(), SinkError> {
        if self.config.send_mode == SendMode::Splice {
            self.window.take_durable_feed(wal);
        }
        let wal: &WalWriter = wal;
        let tail = wal.durable_tail();
        if self.link.stream.is_none() {
            self.finish_connect(tail)?;
        }
        if self.link.stream.is_none() {
            if !self.link.backing_off() {
                self.connect(io, wal.wal_id());
            }
            return Ok(());
        }
        if let Some(buf) = self.recv_buf.take() {
            let token = self.link.token(Kind::AckRecv);
            if let Err((_, buf)) = io.recv_at(self.stream(), buf, 0, token) {
                self.recv_buf = Some(buf);
            }
        }
        // Zero-copy sends awaiting their notification do not hold the next
        // one back: each names its own buffer, and a buffer is only reused
        // once no send holds it.
        let idle = self.send_progress.is_none()
            && self.send_buf.is_some()
            && !self.splice.busy()
            && self.link.stale_ops == 0
            && self.zc.ops < SEND_ZC_IN_FLIGHT_MAX;
        if idle && self.segment_frame_due {
            self.send_segment_frame(io);
        } else if idle {
            // A small durable increment (the steady trickle of a paced
            // source) goes by copy: one inline send beats splice's io-wq
            // round trip, and there is little to save by not copying.
            let small = tail
                .durable_offset_bytes
                .saturating_sub(self.reader.offset_bytes())
                < SPLICE_MIN_BYTES;
            if self.config.send_mode == SendMode::Splice
                && self.reader.in_current_segment(tail)
                && !small
                && self.window.splice_timed(self.send_seq, tail.durable_seq)
            {
                self.start_splice(io, tail);
            } else {
                self.send_next_chunk(io, wal)?;
            }
        }
        Ok(())
    }

    fn on_completion(&mut self, io: &mut impl Io, c: Completion) -> Result<(), SinkError> {
        debug_assert_eq!(c.token.owner, Owner::Sink);
        let current = self.link.is_current(c.token);
        match c.token.kind {
            Kind::Connected => self.link.on_connected(c.buf),
            Kind::SendZc => self.on_send_zc(io, &c, current),
            Kind::SpliceIn | Kind::SpliceOut if !current => self.link.stale_ops -= 1,
            Kind::SpliceIn | Kind::SpliceOut => return self.on_splice(io, c.token.kind, c.result),
            Kind::Send => self.on_send(io, c, current),
            Kind::AckRecv => self.on_ack_recv(c, current),
            other => panic!("unknown sink completion kind {other:?}"),
        }
        Ok(())
    }

    fn acked_seq(&self) -> u64 {
        self.window.acked_seq
    }

    fn wake_at(&self) -> Option<Instant> {
        self.link.wake_at()
    }

    fn close(&mut self) {
        self.link.close();
    }
}
