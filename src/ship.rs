//! The shipper: sends the durable tail of a shard's WAL to a receiver, on
//! the shard's own ring, and counts the receiver's cumulative acks.
//!
//! **What triggers a send.** The core calls [`Shipper::pump`] in the same
//! loop iteration as every completion it handles: a commit whose fdatasync
//! advanced the durable watermark, a finished send, an ack. `pump` sends
//! `[shipped, durable)` at once. No timer, poll interval, heartbeat or later
//! record is ever needed for a durable record to leave; the only timer is the
//! reconnect backoff while the peer is unreachable.
//!
//! **What is sent.** Only bytes at or below the WAL's durable offset (earlier
//! segments are durable in full), read from the segment files and sent as
//! they are on disk. A crash of the source therefore never leaves the peer
//! with records the source forgot. Chunks end on record boundaries; at most
//! [`SEND_INFLIGHT_BYTES_MAX`] bytes and [`SEND_INFLIGHT_RECORDS_MAX`]
//! records are unacknowledged at once, and the rest of any backlog stays on
//! disk.
//!
//! **Resume.** On every (re)connect the receiver reports the last seq it
//! holds durably; the shipper finds the record after it in its segments and
//! continues there, so restarts lose and duplicate nothing. If that record
//! is no longer held (retention deleted it) or the receiver is ahead of this
//! WAL, that is a loud, fatal error, never a silent gap.
//!
//! Send modes: `copy` reads a chunk (pread) and sends it with io_uring SEND;
//! `splice` moves the current segment's durable bytes page cache → pipe →
//! socket with io_uring SPLICE, so they are never copied into user memory,
//! and falls back to `copy` for sealed segments (a backlog); `zc` switches
//! the WAL to O_DIRECT segments written from registered buffers
//! ([`WalWriter::enable_direct`]) and sends the durable tail with SEND_ZC
//! straight from the commit buffer that wrote it, so the bytes touch neither
//! the page cache nor a second buffer. What is no longer in a commit buffer
//! (a backlog), or would pin more than
//! [`DIRECT_SHIP_PINNED_MAX`](crate::constants::DIRECT_SHIP_PINNED_MAX) of them,
//! is read into a registered buffer of the shipper's and sent with SEND_ZC
//! from there. The kernel's report of bytes it copied anyway is
//! counted.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::constants::{
    CONNECT_TIMEOUT_MS, DIRECT_COMMIT_BUFFER_BYTES, DIRECT_COMMIT_BUFFERS_COUNT,
    HANDSHAKE_TIMEOUT_MS, RECONNECT_BACKOFF_MAX_MS, RECONNECT_BACKOFF_MIN_MS, RECORD_HEADER_BYTES,
    SEGMENT_HEADER_BYTES, SEND_CHUNK_BYTES, SEND_INFLIGHT_BYTES_MAX, SEND_INFLIGHT_RECORDS_MAX,
    SEND_ZC_IN_FLIGHT_MAX, SPLICE_MIN_BYTES, SPLICE_UNITS_INFLIGHT_MAX,
};
use crate::frame;
use crate::io::{Completion, Io, Kind, Owner, Ring, Token};
use crate::latency::{Recorder, Window};
use crate::protocol::{self, ACK_BYTES, Hello, WELCOME_BYTES};
use crate::wal::WalWriter;
use crate::wal::segment::{parse_segment_file_name, segment_file_name, shard_dir};

/// How the shipper moves bytes from segment to socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SendMode {
    /// io_uring SPLICE, segment (page cache) → pipe → socket, for the
    /// segment being written; sealed segments (a backlog) go by `copy`.
    Splice,
    /// O_DIRECT segments, and io_uring SEND_ZC from the registered commit
    /// buffers (a backlog: pread into a registered buffer first); the
    /// buffer is the kernel's until the notification completion. Pays off
    /// on a real NIC; loopback always copies (and reports it).
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
pub struct ShipConfig {
    pub peer: SocketAddr,
    pub source: String,
    pub send_mode: SendMode,
    /// Keep this many fully acknowledged sealed segments and delete older
    /// ones; `None` keeps everything.
    pub retain_segments: Option<usize>,
}

/// Errors that stop shipping for good (everything else is retried).
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
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
    #[error("reading {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: record at byte offset {offset_bytes} does not decode while shipping: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        offset_bytes: u64,
        reason: String,
    },
    #[error("registering the zero-copy buffers: {0}")]
    Register(io::Error),
    #[error(transparent)]
    Wal(#[from] crate::wal::WalError),
    #[error("creating a pipe or an eventfd: {0}")]
    Pipe(io::Error),
}

/// Shipping counters and latency, merged into reports.
pub struct ShipStats {
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
    pub segments_deleted: u64,
    /// append_ts → handed to the socket (the send or splice completed).
    pub append_to_sent_ns: Recorder,
    /// append_ts → ack received, per record: the headline latency.
    pub append_to_acked_ns: Recorder,
}

/// The ring's registered buffer that `zc` mode reads chunks into.
const ZC_BUFFER: usize = 0;
/// The first of the WAL's O_DIRECT commit buffers, registered after it.
const ZC_WAL_FIRST_BUFFER: usize = 1;
const ACK_RECV_BYTES: usize = ACK_BYTES * 64;

/// A splice of `[start, end)` of the current segment in progress, a
/// pipe-full at a time: file → pipe linked to pipe → socket in one
/// submission, and after a short read into the pipe, pipe → socket until
/// the pipe is empty.
struct SpliceUnit {
    /// Offset of the next byte to move into the pipe.
    next_bytes: u64,
    end_bytes: u64,
    /// Bytes moved into the pipe, and out of it into the socket, so far:
    /// the pipe holds the difference.
    piped_bytes: u64,
    sent_bytes: u64,
    /// Splices of the unit in flight (two for a linked pair).
    ops: usize,
}

/// The off-loop connect: a thread per attempt hands its result back through
/// a channel and wakes the core with an eventfd read kept on the ring.
struct Connector {
    wake: std::sync::Arc<nix::sys::eventfd::EventFd>,
    tx: std::sync::mpsc::Sender<Result<(TcpStream, u64), String>>,
    rx: std::sync::mpsc::Receiver<Result<(TcpStream, u64), String>>,
    /// An attempt is running (and the eventfd read is on the ring).
    pending: bool,
    read_buf: Option<Vec<u8>>,
    /// A finished attempt, for `pump` (which has the WAL) to complete.
    done: Option<Result<(TcpStream, u64), String>>,
}

/// Connects and handshakes, blocking, bounded by the connect and handshake
/// timeouts. Runs on the connect thread.
fn handshake(peer: SocketAddr, hello: &Hello) -> Result<(TcpStream, u64), String> {
    let mut stream = TcpStream::connect_timeout(&peer, Duration::from_millis(CONNECT_TIMEOUT_MS))
        .map_err(|e| format!("connect: {e}"))?;
    let timeout = Some(Duration::from_millis(HANDSHAKE_TIMEOUT_MS));
    stream
        .set_read_timeout(timeout)
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(timeout)
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    protocol::set_keepalive(&stream);
    stream
        .write_all(&hello.encode())
        .map_err(|e| format!("hello: {e}"))?;
    let mut welcome = [0u8; WELCOME_BYTES];
    stream
        .read_exact(&mut welcome)
        .map_err(|e| format!("welcome: {e}"))?;
    let peer_seq = protocol::decode_welcome(&welcome).map_err(|e| e.to_string())?;
    stream.set_read_timeout(None).map_err(|e| e.to_string())?;
    stream.set_write_timeout(None).map_err(|e| e.to_string())?;
    Ok((stream, peer_seq))
}

/// What a dead connection leaves open until its operations complete.
#[allow(dead_code)] // held only for the fds it keeps open
struct Held {
    stream: TcpStream,
    position: Option<Position>,
    pipe: Option<(OwnedFd, OwnedFd, usize)>,
}

struct Position {
    segment_first_seq: u64,
    file: File,
    path: PathBuf,
    offset_bytes: u64,
}

/// One shard's shipper.
pub struct Shipper {
    config: ShipConfig,
    shard: u32,
    dir: PathBuf,
    stream: Option<TcpStream>,
    generation: u64,
    backoff_ms: u64,
    retry_at: Option<Instant>,
    jitter: u64,
    position: Option<Position>,
    /// Seq of the next record to send.
    send_seq: u64,
    /// Last seq of the send or splice in flight.
    chunk_last_seq: u64,
    /// Highest seq counted in append → sent; never moves back, so records
    /// sent again after a reconnect are not counted twice.
    sent_noted_seq: u64,
    acked_seq: u64,
    /// (seq, append_ts_ns, encoded bytes) of records sent and not acked.
    inflight: VecDeque<(u64, u64, u32)>,
    inflight_bytes: u64,
    send_buf: Option<Vec<u8>>,
    /// Bytes of the send in flight, and how many of them have gone.
    send_progress: Option<(usize, usize)>,
    recv_buf: Option<Vec<u8>>,
    ack_partial: Vec<u8>,
    /// First seqs of this shard's segments, oldest first, for retention.
    segments: VecDeque<u64>,
    /// Splice mode: the pipe (read end, write end, capacity), recreated on
    /// every connection so no stale bytes from a dead one can leak.
    pipe: Option<(OwnedFd, OwnedFd, usize)>,
    splice: Option<SpliceUnit>,
    /// Splice mode: (seq, append_ts_ns) of records sent, from the WAL's
    /// durable feed, for append → acked.
    latency_pending: VecDeque<(u64, u64)>,
    /// Splice mode: (first, last) seqs of each splice unit sent and not
    /// acked, so that only spliced records take their latency from
    /// `latency_pending` (records sent by copy carry theirs in `inflight`).
    splice_ranges: VecDeque<(u64, u64)>,
    /// Splices of a dead connection whose completion is still due.
    stale_ops: usize,
    /// Zero-copy sends whose last completion (the notification) is still
    /// due: the registered buffer is the kernel's until then.
    zc_ops: usize,
    /// Bytes of each zero-copy send awaiting its notification, in order.
    zc_pending: VecDeque<u32>,
    /// The registered buffer and offset the current zero-copy chunk is sent
    /// from (a short send resumes there).
    zc_from: (usize, usize),
    /// A dead connection's socket, segment file and pipe, kept open (though
    /// shut down) until every operation that names their fds has completed:
    /// SPLICE looks its fds up when it runs, so closing them earlier could
    /// let a reused fd number (a new segment, another socket) receive bytes.
    held: Option<Held>,
    connector: Connector,
    stats: ShipStats,
}

impl Shipper {
    /// A shipper for `wal` (open, nothing staged yet). In `zc` mode this
    /// registers the ring's buffers and switches `wal` to O_DIRECT segments.
    pub fn new(
        config: ShipConfig,
        dir: &Path,
        shard: u32,
        ring: &mut Ring,
        wal: &mut WalWriter,
    ) -> Result<Shipper, ShipError> {
        if config.send_mode == SendMode::Zc {
            Shipper::set_up_zc(ring, wal, dir)?;
        }
        protocol::validate_source(&config.source).expect("the CLI validates --source");
        let sdir = shard_dir(dir, shard);
        let mut segments: Vec<u64> = std::fs::read_dir(&sdir)
            .map_err(|source| ShipError::Read {
                path: sdir.clone(),
                source,
            })?
            .filter_map(|e| {
                e.ok()?
                    .file_name()
                    .to_str()
                    .and_then(parse_segment_file_name)
            })
            .collect();
        segments.sort_unstable();
        let splice_mode = config.send_mode == SendMode::Splice;
        Ok(Shipper {
            segments: segments.into(),
            pipe: None,
            splice: None,
            latency_pending: VecDeque::with_capacity(if splice_mode {
                SEND_INFLIGHT_RECORDS_MAX
            } else {
                0
            }),
            splice_ranges: VecDeque::with_capacity(if splice_mode {
                SPLICE_UNITS_INFLIGHT_MAX
            } else {
                0
            }),
            stale_ops: 0,
            zc_ops: 0,
            zc_pending: VecDeque::with_capacity(SEND_ZC_IN_FLIGHT_MAX),
            zc_from: (ZC_BUFFER, 0),
            held: None,
            connector: {
                let (tx, rx) = std::sync::mpsc::channel();
                Connector {
                    wake: std::sync::Arc::new(
                        nix::sys::eventfd::EventFd::from_flags(
                            nix::sys::eventfd::EfdFlags::EFD_CLOEXEC,
                        )
                        .map_err(|e| ShipError::Pipe(e.into()))?,
                    ),
                    tx,
                    rx,
                    pending: false,
                    read_buf: Some(vec![0u8; 8]),
                    done: None,
                }
            },
            config,
            shard,
            dir: shard_dir(dir, shard),
            stream: None,
            generation: 0,
            backoff_ms: RECONNECT_BACKOFF_MIN_MS,
            retry_at: None,
            jitter: frame::now_ns() | 1,
            position: None,
            send_seq: 0,
            chunk_last_seq: 0,
            sent_noted_seq: 0,
            acked_seq: 0,
            inflight: VecDeque::with_capacity(SEND_INFLIGHT_RECORDS_MAX),
            inflight_bytes: 0,
            send_buf: Some(Vec::with_capacity(SEND_CHUNK_BYTES)),
            send_progress: None,
            recv_buf: Some(vec![0u8; ACK_RECV_BYTES]),
            ack_partial: Vec::with_capacity(ACK_BYTES),
            stats: ShipStats {
                sent_bytes: 0,
                sent_records: 0,
                acked_records: 0,
                connects: 0,
                disconnects: 0,
                copy_bytes: 0,
                splice_bytes: 0,
                zc_bytes: 0,
                zc_copied_bytes: 0,
                zc_commit_bytes: 0,
                segments_deleted: 0,
                append_to_sent_ns: Recorder::new(),
                append_to_acked_ns: Recorder::new(),
            },
        })
    }

    pub fn stats(&self) -> &ShipStats {
        &self.stats
    }

    pub fn into_stats(self) -> ShipStats {
        self.stats
    }

    /// Closes the connection (at the end of a run): its reads in flight on
    /// the ring complete, so the ring can be dropped.
    pub fn close(&mut self) {
        if let Some(stream) = self.stream.take() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        if self.connector.pending {
            // Complete the wake-up read now, so the ring can be dropped; the
            // connect thread's late result goes nowhere.
            let _ = self.connector.wake.write(1);
        }
        self.generation += 1;
    }

    /// The highest seq the peer has acknowledged as durable.
    pub fn acked_seq(&self) -> u64 {
        self.acked_seq
    }

    pub fn is_connected(&self) -> bool {
        self.stream.is_some()
    }

    /// When the core must wake up even without a completion: the next
    /// reconnect attempt.
    pub fn wake_at(&self) -> Option<Instant> {
        if self.stream.is_none() && !self.connector.pending && self.connector.done.is_none() {
            self.retry_at
        } else {
            None
        }
    }

    /// True if `token` belongs to this shipper.
    pub fn owns(&self, token: Token) -> bool {
        token.owner == Owner::Sink
    }

    /// Connects if due, then sends whatever is durable and not yet sent, and
    /// keeps a read for acks posted. Called every loop iteration.
    pub fn pump(&mut self, ring: &mut impl Io, wal: &mut WalWriter) -> Result<(), ShipError> {
        if self.config.send_mode == SendMode::Splice {
            // Kept only while contiguous and within capacity: a record the
            // table cannot hold is never spliced (see `splice_timed`) but
            // read back and sent by copy, which takes its timestamp from its
            // header. Once the table empties it starts again.
            let pending = &mut self.latency_pending;
            wal.drain_durable_feed(|seq, ts| {
                let follows = pending.back().is_none_or(|&(last, _)| last + 1 == seq);
                if follows && pending.len() < pending.capacity() {
                    pending.push_back((seq, ts));
                }
            });
        }
        let wal: &WalWriter = wal;
        if self
            .segments
            .back()
            .is_none_or(|&last| wal.segment_first_seq() > last)
        {
            self.segments.push_back(wal.segment_first_seq());
        }
        if self.stream.is_none() {
            self.finish_connect(wal)?;
        }
        if self.stream.is_none() {
            if self.retry_at.is_some_and(|t| Instant::now() < t) {
                return Ok(());
            }
            self.connect(ring);
            return Ok(());
        }
        if let Some(buf) = self.recv_buf.take() {
            let stream = self.stream.as_ref().expect("connected");
            if let Err((_, buf)) = ring.recv_at(stream, buf, 0, self.token(Kind::AckRecv)) {
                self.recv_buf = Some(buf);
            }
        }
        // Zero-copy sends awaiting their notification do not hold the next
        // one back: each names its own buffer, and `send_next_chunk` only
        // reuses one that no send holds.
        let idle = self.send_progress.is_none()
            && self.send_buf.is_some()
            && self.splice.is_none()
            && self.stale_ops == 0
            && self.zc_ops < SEND_ZC_IN_FLIGHT_MAX;
        if idle {
            let in_current = self
                .position
                .as_ref()
                .is_some_and(|p| p.segment_first_seq == wal.segment_first_seq());
            // A small durable increment (the steady trickle of a paced
            // source) goes by copy: one inline send beats splice's two
            // io-wq round trips, and there is little to save by not copying.
            let small = self.position.as_ref().is_some_and(|p| {
                wal.durable_offset_bytes().saturating_sub(p.offset_bytes) < SPLICE_MIN_BYTES
            });
            if self.config.send_mode == SendMode::Splice
                && in_current
                && !small
                && self.splice_timed(wal)
            {
                self.start_splice(ring, wal);
            } else {
                self.send_next_chunk(ring, wal)?;
            }
        }
        Ok(())
    }

    /// True if the durable, unsent records are all in `latency_pending`, so
    /// that a splice, which never reads them, can still time each one.
    fn splice_timed(&self, wal: &WalWriter) -> bool {
        match (self.latency_pending.front(), self.latency_pending.back()) {
            (Some(&(first, _)), Some(&(last, _))) => {
                first <= self.send_seq && last == wal.durable_seq()
            }
            _ => false,
        }
    }

    /// Splices the durable, unsent part of the current segment.
    fn start_splice(&mut self, ring: &mut impl Io, wal: &WalWriter) {
        if self.inflight_bytes >= SEND_INFLIGHT_BYTES_MAX
            || self.inflight.len() == SEND_INFLIGHT_RECORDS_MAX
            || self.splice_ranges.len() == SPLICE_UNITS_INFLIGHT_MAX
            || self.send_seq > wal.durable_seq()
        {
            return;
        }
        let position = self
            .position
            .as_ref()
            .expect("connected implies positioned");
        let end = wal.durable_offset_bytes();
        if end <= position.offset_bytes {
            return;
        }
        // The range ends exactly at the durable watermark, so its last record
        // is the durable seq: acks map back to it without reading a header.
        // It counts as sent from now on, as a copy chunk does once read, so
        // that an ack racing the splice's own completion is in range. One
        // window entry covers it all; its records' timestamps are in
        // `latency_pending` (checked by `splice_timed`).
        let end_seq = wal.durable_seq();
        let bytes = end - position.offset_bytes;
        tracing::trace!(
            segment = position.segment_first_seq,
            from = position.offset_bytes,
            to = end,
            first_seq = self.send_seq,
            end_seq,
            "splice"
        );
        self.inflight.push_back((end_seq, 0, bytes as u32));
        self.splice_ranges.push_back((self.send_seq, end_seq));
        self.inflight_bytes += bytes;
        self.stats.sent_records += end_seq + 1 - self.send_seq;
        self.send_seq = end_seq + 1;
        self.chunk_last_seq = end_seq;
        self.splice = Some(SpliceUnit {
            next_bytes: position.offset_bytes,
            end_bytes: end,
            piped_bytes: 0,
            sent_bytes: 0,
            ops: 0,
        });
        self.splice_pair(ring);
    }

    /// Moves the next pipe-full of the unit: file → pipe linked to pipe →
    /// socket, one submission.
    fn splice_pair(&mut self, ring: &mut impl Io) {
        let token_in = self.token(Kind::SpliceIn);
        let token_out = self.token(Kind::SpliceOut);
        let unit = self.splice.as_mut().expect("a unit in progress");
        let (pipe_read, pipe_write, capacity) = self.pipe.as_ref().expect("splice mode has a pipe");
        let len = (unit.end_bytes - unit.next_bytes).min(*capacity as u64) as u32;
        let file = &self.position.as_ref().expect("positioned").file;
        let stream = self.stream.as_ref().expect("connected");
        ring.splice_file_to_socket(
            file,
            unit.next_bytes as i64,
            pipe_write,
            pipe_read,
            stream,
            len,
            token_in,
            token_out,
        )
        .expect("ring slots cover the shipper");
        unit.ops = 2;
    }

    /// Sends the `in_pipe` bytes the pipe holds (after a short file → pipe
    /// splice, or a short pipe → socket one).
    fn splice_out_of_pipe(&mut self, ring: &mut impl Io, in_pipe: u32) {
        let token = self.token(Kind::SpliceOut);
        let unit = self.splice.as_mut().expect("a unit in progress");
        let (pipe_read, _, _) = self.pipe.as_ref().expect("splice mode has a pipe");
        let stream = self.stream.as_ref().expect("connected");
        ring.splice(pipe_read, -1, stream, in_pipe, token)
            .expect("ring slots cover the shipper");
        unit.ops = 1;
    }

    /// One completion of the unit in progress. The next pipe-full starts
    /// once both halves of the current one have completed, in whichever
    /// order their completions are handled.
    fn on_splice(&mut self, ring: &mut impl Io, kind: Kind, result: i32) -> Result<(), ShipError> {
        let unit = self.splice.as_mut().expect("a unit in progress");
        unit.ops -= 1;
        match (kind, result) {
            (Kind::SpliceIn, n) if n > 0 => {
                // A short read into the pipe cancels the linked send; what
                // the pipe holds goes out on its own below.
                unit.next_bytes += n as u64;
                unit.piped_bytes += n as u64;
            }
            (Kind::SpliceIn, n) if n < 0 && n != -libc::EPIPE => {
                let path = self
                    .position
                    .as_ref()
                    .map(|p| p.path.clone())
                    .unwrap_or_default();
                return Err(ShipError::Read {
                    path,
                    source: io::Error::from_raw_os_error(-n),
                });
            }
            // Cancelled because the read into the pipe was short (or
            // failed, which its own completion reports): nothing was sent.
            (Kind::SpliceOut, n) if n == -libc::ECANCELED => {}
            (Kind::SpliceOut, n) if n > 0 => {
                unit.sent_bytes += n as u64;
                self.stats.splice_bytes += n as u64;
                self.stats.sent_bytes += n as u64;
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
        let unit = self.splice.as_ref().expect("a unit in progress");
        if unit.ops > 0 {
            return Ok(());
        }
        let Some(in_pipe) = unit.piped_bytes.checked_sub(unit.sent_bytes) else {
            // More left the pipe than entered it: the pipe is not ours alone.
            self.disconnect("the splice pipe sent more than it was given");
            return Ok(());
        };
        if in_pipe > 0 {
            self.splice_out_of_pipe(ring, in_pipe as u32);
        } else if unit.next_bytes < unit.end_bytes {
            self.splice_pair(ring);
        } else {
            let unit = self.splice.take().expect("checked");
            self.position.as_mut().expect("positioned").offset_bytes = unit.end_bytes;
            self.note_sent(self.chunk_last_seq);
        }
        Ok(())
    }

    /// A token of this connection's generation, so that completions of a
    /// dead connection are recognised and only their buffers taken back.
    fn token(&self, kind: Kind) -> Token {
        Token::new(Owner::Sink, kind, self.generation as u32)
    }

    fn schedule_retry(&mut self) {
        // xorshift jitter: up to half the backoff again, so many shippers
        // that lost one receiver do not return in lockstep.
        self.jitter ^= self.jitter << 13;
        self.jitter ^= self.jitter >> 7;
        self.jitter ^= self.jitter << 17;
        let jitter_ms = self.jitter % (self.backoff_ms / 2 + 1);
        self.retry_at = Some(Instant::now() + Duration::from_millis(self.backoff_ms + jitter_ms));
        self.backoff_ms = (self.backoff_ms * 2).min(RECONNECT_BACKOFF_MAX_MS);
    }

    fn disconnect(&mut self, why: &str) {
        if let Some(stream) = self.stream.take() {
            tracing::warn!(peer = %self.config.peer, shard = self.shard, "connection lost: {why}");
            // Shutting down completes the reads and sends still in flight on
            // the ring; their buffers come back as stale completions. The fds
            // stay open until they have (see `held`).
            let _ = stream.shutdown(Shutdown::Both);
            self.held = Some(Held {
                stream,
                position: self.position.take(),
                pipe: self.pipe.take(),
            });
            self.stats.disconnects += 1;
        }
        self.generation += 1;
        if let Some(unit) = self.splice.take() {
            // Its splices still complete, as stale operations.
            self.stale_ops += unit.ops;
        }
        self.splice_ranges.clear();
        self.position = None;
        self.inflight.clear();
        self.inflight_bytes = 0;
        self.ack_partial.clear();
        self.schedule_retry();
    }

    /// Registers `zc` mode's buffers and switches `wal` to O_DIRECT segments,
    /// falling back (with a warning) to segments in the page cache when the
    /// filesystem refuses O_DIRECT or RLIMIT_MEMLOCK is too low to pin the
    /// commit buffers: zc then reads every chunk back before sending it.
    fn set_up_zc(ring: &mut Ring, wal: &mut WalWriter, dir: &Path) -> Result<(), ShipError> {
        let fallback = |why: &str| {
            tracing::warn!(
                dir = %dir.display(),
                "{why}: segments go through the page cache, and zc sends read them back first"
            );
        };
        let direct = wal.supports_direct()?;
        if !direct {
            fallback("the filesystem refuses O_DIRECT");
        }
        let mut sizes = vec![SEND_CHUNK_BYTES];
        if direct {
            sizes.extend([DIRECT_COMMIT_BUFFER_BYTES; DIRECT_COMMIT_BUFFERS_COUNT]);
        }
        match ring.register_fixed_buffers(&sizes) {
            Ok(()) if direct => {
                if !wal.enable_direct(ring, ZC_WAL_FIRST_BUFFER)? {
                    fallback("the filesystem refuses O_DIRECT");
                }
                Ok(())
            }
            Ok(()) => Ok(()),
            Err(e) if direct && e.kind() == io::ErrorKind::OutOfMemory => {
                fallback(&format!(
                    "cannot pin {} MiB of commit buffers ({e})",
                    sizes.iter().sum::<usize>() >> 20
                ));
                ring.register_fixed_buffers(&[SEND_CHUNK_BYTES])
                    .map_err(ShipError::Register)
            }
            Err(e) => Err(ShipError::Register(e)),
        }
    }

    /// Connects and handshakes synchronously (bounded by the connect and
    /// handshake timeouts), then positions the read cursor after the peer's
    /// durable seq. Transient failures schedule a retry; only a gap or a
    /// diverged peer is an error.
    fn connect(&mut self, ring: &mut impl Io) {
        if self.connector.pending {
            return;
        }
        let ops_in_flight = self.stale_ops > 0
            || self.zc_ops > 0
            || self.send_progress.is_some()
            || self.send_buf.is_none()
            || self.recv_buf.is_none();
        if ops_in_flight {
            // The dead connection's operations complete first; its fds are
            // released after them, and only then is a new one opened.
            self.schedule_retry();
            return;
        }
        self.held = None;
        // The connect and handshake block (up to CONNECT_TIMEOUT_MS +
        // HANDSHAKE_TIMEOUT_MS against a peer that drops packets), so they run
        // on a short-lived thread; the core keeps committing, and the thread's
        // eventfd write wakes it with the result.
        let Some(buf) = self.connector.read_buf.take() else {
            return;
        };
        if let Err((_, buf)) = ring.read(
            &*self.connector.wake,
            buf,
            Token::new(Owner::Sink, Kind::Connected, 0),
        ) {
            self.connector.read_buf = Some(buf);
            self.schedule_retry();
            return;
        }
        self.connector.pending = true;
        let peer = self.config.peer;
        let hello = Hello {
            source: self.config.source.clone(),
            shard: self.shard,
        };
        let tx = self.connector.tx.clone();
        let wake = self.connector.wake.clone();
        let spawned = std::thread::Builder::new()
            .name("ringship-connect".into())
            .spawn(move || {
                let _ = tx.send(handshake(peer, &hello));
                let _ = wake.write(1);
            });
        if let Err(e) = spawned {
            // Complete the read ourselves; the failure is reported with it.
            let _ = self
                .connector
                .tx
                .send(Err(format!("cannot start a connect thread: {e}")));
            let _ = self.connector.wake.write(1);
        }
    }

    /// Takes the connect thread's result once its wake-up completed, and on
    /// success positions the read cursor after the peer's durable seq.
    /// Transient failures schedule a retry; only a gap or a diverged peer is
    /// an error.
    fn finish_connect(&mut self, wal: &WalWriter) -> Result<(), ShipError> {
        let Some(result) = self.connector.done.take() else {
            return Ok(());
        };
        let (stream, peer_seq) = match result {
            Ok(ok) => ok,
            Err(why) => {
                tracing::debug!(peer = %self.config.peer, "cannot reach the peer: {why}");
                self.schedule_retry();
                return Ok(());
            }
        };
        // A fatal mismatch is told to the receiver too (an Abort frame), so
        // that both sides log it.
        let abort = |mut stream: TcpStream, e: ShipError| {
            let _ = stream.write_all(&protocol::encode_abort(&e.to_string()));
            let _ = stream.shutdown(Shutdown::Write);
            e
        };
        if peer_seq > wal.durable_seq() {
            let e = ShipError::PeerAhead {
                peer_seq,
                durable_seq: wal.durable_seq(),
            };
            return Err(abort(stream, e));
        }
        let position = match self.locate(peer_seq + 1, wal) {
            Ok(position) => position,
            Err(e @ ShipError::RetentionGap { .. }) => return Err(abort(stream, e)),
            Err(e) => return Err(e),
        };
        if self.config.send_mode == SendMode::Splice {
            self.pipe =
                Some(crate::io::pipe::splice_pipe(SEND_CHUNK_BYTES).map_err(ShipError::Pipe)?);
        }
        self.position = Some(position);
        self.send_seq = peer_seq + 1;
        self.acked_seq = peer_seq;
        self.generation += 1;
        self.stream = Some(stream);
        self.backoff_ms = RECONNECT_BACKOFF_MIN_MS;
        self.retry_at = None;
        self.stats.connects += 1;
        tracing::info!(peer = %self.config.peer, shard = self.shard, peer_seq, "connected");
        Ok(())
    }

    /// Finds the file offset of record `seq` (or of the end of the durable
    /// data, if `seq` is the next to be written).
    fn locate(&self, seq: u64, wal: &WalWriter) -> Result<Position, ShipError> {
        let read_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ShipError::Read { path, source }
        };
        let mut best: Option<u64> = None;
        let mut oldest: Option<u64> = None;
        for entry in std::fs::read_dir(&self.dir).map_err(read_err(&self.dir))? {
            let entry = entry.map_err(read_err(&self.dir))?;
            let Some(first) = entry.file_name().to_str().and_then(parse_segment_file_name) else {
                continue;
            };
            oldest = Some(oldest.map_or(first, |o| o.min(first)));
            if first <= seq && best.is_none_or(|b| first > b) {
                best = Some(first);
            }
        }
        let Some(first) = best else {
            return Err(ShipError::RetentionGap {
                wanted: seq,
                oldest: oldest.unwrap_or(wal.next_seq()),
            });
        };
        let path = self.dir.join(segment_file_name(first));
        let file = File::open(&path).map_err(read_err(&path))?;
        let mut position = Position {
            segment_first_seq: first,
            file,
            path,
            offset_bytes: SEGMENT_HEADER_BYTES as u64,
        };
        // Walk records from the segment start up to `seq`.
        let mut at_seq = first;
        let mut buf = vec![0u8; SEND_CHUNK_BYTES];
        while at_seq < seq {
            let end = self.readable_end(&position, wal)?;
            let want = (end - position.offset_bytes).min(SEND_CHUNK_BYTES as u64) as usize;
            let n = position
                .file
                .read_at(&mut buf[..want], position.offset_bytes)
                .map_err(read_err(&position.path))?;
            let mut at = 0;
            while at_seq < seq {
                match frame::decode(&buf[at..n]) {
                    Ok((record, used)) => {
                        debug_assert_eq!(record.seq, at_seq);
                        at += used;
                        at_seq += 1;
                    }
                    Err(_) => break,
                }
            }
            if at == 0 {
                // seq lies past this segment's data: the next segment starts
                // there (or nothing durable exists yet beyond it).
                let next = self.dir.join(segment_file_name(at_seq));
                if at_seq == seq || !next.exists() {
                    break;
                }
                position.file = File::open(&next).map_err(read_err(&next))?;
                position.path = next;
                position.segment_first_seq = at_seq;
                position.offset_bytes = SEGMENT_HEADER_BYTES as u64;
                continue;
            }
            position.offset_bytes += at as u64;
        }
        Ok(position)
    }

    /// The offset up to which `position`'s segment may be read: the WAL's
    /// durable offset for the segment being written, else the file's end.
    fn readable_end(&self, position: &Position, wal: &WalWriter) -> Result<u64, ShipError> {
        if position.segment_first_seq == wal.segment_first_seq() {
            Ok(wal.durable_offset_bytes())
        } else {
            position
                .file
                .metadata()
                .map(|m| m.len())
                .map_err(|source| ShipError::Read {
                    path: position.path.clone(),
                    source,
                })
        }
    }

    /// Reads the next chunk of durable records and sends it: with io_uring
    /// SEND from the shipper's buffer (`copy`, and `splice` for a backlog),
    /// or with SEND_ZC from the ring's registered buffer (`zc`).
    fn send_next_chunk(&mut self, ring: &mut impl Io, wal: &WalWriter) -> Result<(), ShipError> {
        let zc = self.config.send_mode == SendMode::Zc;
        loop {
            let window_bytes = SEND_INFLIGHT_BYTES_MAX.saturating_sub(self.inflight_bytes);
            let window_records = SEND_INFLIGHT_RECORDS_MAX - self.inflight.len();
            if window_bytes == 0 || window_records == 0 || self.send_seq > wal.durable_seq() {
                return Ok(());
            }
            let position = self
                .position
                .as_ref()
                .expect("connected implies positioned");
            let end = self.readable_end(position, wal)?;
            let want = (end.saturating_sub(position.offset_bytes))
                .min(SEND_CHUNK_BYTES as u64)
                .min(window_bytes) as usize;
            if zc {
                // The durable tail is still in the commit buffer that wrote
                // it: send from there, reading nothing.
                if let Some(kept) =
                    wal.retained(ring, position.segment_first_seq, position.offset_bytes)
                {
                    let chunk = &ring.fixed_buf(kept.index)[kept.from..][..want.min(kept.len)];
                    let (used, _) = self.walk_records(chunk, end, wal)?;
                    if used > 0 {
                        self.stats.zc_commit_bytes += used as u64;
                        self.send_zc_chunk(ring, kept.index, kept.from, used);
                    }
                    // Otherwise the window is full until acks free it.
                    return Ok(());
                }
                if ring.fixed_in_use(ZC_BUFFER) {
                    // Its notification is a completion: pump runs again then.
                    return Ok(());
                }
            }
            let mut copy_buf = if zc {
                None
            } else {
                let mut buf = self.send_buf.take().expect("checked by pump");
                buf.clear();
                buf.resize(want, 0);
                Some(buf)
            };
            let buf: &mut [u8] = match copy_buf.as_mut() {
                Some(b) => b,
                None => &mut ring.fixed_buf_mut(ZC_BUFFER).expect("checked by pump")[..want],
            };
            let (used, end_of_data) = self.frame_chunk(buf, end, wal)?;
            if used == 0 {
                if let Some(b) = copy_buf {
                    self.send_buf = Some(b);
                }
                let position = self.position.as_ref().expect("positioned");
                if position.segment_first_seq == wal.segment_first_seq() || !end_of_data {
                    // Caught up with the durable tail, or the window cannot
                    // take the next record until acks free it.
                    return Ok(());
                }
                // The end of a sealed segment: the next one starts at send_seq.
                tracing::trace!(next = self.send_seq, "end of a sealed segment");
                let path = self.dir.join(segment_file_name(self.send_seq));
                let file = File::open(&path).map_err(|source| ShipError::Read {
                    path: path.clone(),
                    source,
                })?;
                self.position = Some(Position {
                    segment_first_seq: self.send_seq,
                    file,
                    path,
                    offset_bytes: SEGMENT_HEADER_BYTES as u64,
                });
                continue;
            }
            match copy_buf {
                Some(mut buf) => {
                    self.chunk_taken(used);
                    buf.truncate(used);
                    self.stats.copy_bytes += used as u64;
                    let stream = self.stream.as_ref().expect("connected");
                    if ring.send(stream, buf, 0, self.token(Kind::Send)).is_err() {
                        panic!("ring full: RING_SLOTS_MAX must cover the shipper");
                    }
                }
                None => self.send_zc_chunk(ring, ZC_BUFFER, 0, used),
            }
            return Ok(());
        }
    }

    /// Moves the read position over a chunk of `used` bytes about to be
    /// sent, and counts it.
    fn chunk_taken(&mut self, used: usize) {
        self.position.as_mut().expect("positioned").offset_bytes += used as u64;
        self.chunk_last_seq = self.send_seq - 1;
        self.inflight_bytes += used as u64;
        self.stats.sent_bytes += used as u64;
        self.send_progress = Some((used, 0));
    }

    /// Sends bytes `[from, from + used)` of registered buffer `index` with
    /// SEND_ZC; the buffer is the kernel's until the notification.
    fn send_zc_chunk(&mut self, ring: &mut impl Io, index: usize, from: usize, used: usize) {
        self.chunk_taken(used);
        self.stats.zc_bytes += used as u64;
        self.zc_from = (index, from);
        let stream = self.stream.as_ref().expect("connected");
        ring.send_zc_fixed(stream, index, from, used, self.token(Kind::SendZc))
            .expect("ring slots cover the shipper");
        self.zc_ops += 1;
    }

    /// Reads `buf.len()` bytes at the read position into `buf` and walks the
    /// records there, noting each for the acks. Returns the bytes of whole
    /// records (the chunk to send) and whether the segment's data ended.
    fn frame_chunk(
        &mut self,
        buf: &mut [u8],
        end: u64,
        wal: &WalWriter,
    ) -> Result<(usize, bool), ShipError> {
        let position = self
            .position
            .as_ref()
            .expect("connected implies positioned");
        let n = position
            .file
            .read_at(buf, position.offset_bytes)
            .map_err(|source| ShipError::Read {
                path: position.path.clone(),
                source,
            })?;
        self.walk_records(&buf[..n], end, wal)
    }

    /// Walks the records of `chunk`, the segment's bytes at the read
    /// position, noting each for the acks. Returns the bytes of whole
    /// records (the chunk to send) and whether the segment's data ended.
    fn walk_records(
        &mut self,
        chunk: &[u8],
        end: u64,
        wal: &WalWriter,
    ) -> Result<(usize, bool), ShipError> {
        let position = self
            .position
            .as_ref()
            .expect("connected implies positioned");
        let n = chunk.len();
        let mut used = 0;
        let mut end_of_data = n == 0;
        while self.inflight.len() < SEND_INFLIGHT_RECORDS_MAX && self.send_seq <= wal.durable_seq()
        {
            // Segments were crc-checked by recovery when the WAL opened, and
            // the WAL wrote everything since: only the framing is read here.
            // The receiver verifies every crc again.
            let rest = &chunk[used..];
            let (seq, ts, len) = match frame::Records::trusted(rest).next() {
                Some(Ok(record)) => (record.seq, record.append_ts_ns, record.encoded_len_bytes()),
                Some(Err(frame::DecodeError::TooLong { .. })) => {
                    return Err(ShipError::Corrupt {
                        path: position.path.clone(),
                        offset_bytes: position.offset_bytes + used as u64,
                        reason: "length field over the maximum".into(),
                    });
                }
                stop => {
                    // Preallocated space, or the last few bytes of a full
                    // segment (fewer than a header): the end of its data.
                    // Otherwise the next record continues past what was
                    // read: the chunk or the window ends here.
                    let zeros = |b: &[u8]| b.iter().all(|&x| x == 0);
                    let at_file_end = position.offset_bytes + n as u64 >= end;
                    // (A zero header, not fewer zero bytes than a header at
                    // the end of a read: a record's crc may start with them.)
                    let zero_header = matches!(stop, Some(Err(frame::DecodeError::ZeroHeader)))
                        && rest.len() >= RECORD_HEADER_BYTES;
                    if zero_header || (at_file_end && zeros(rest)) {
                        end_of_data = true;
                    }
                    break;
                }
            };
            if seq != self.send_seq {
                return Err(ShipError::Corrupt {
                    path: position.path.clone(),
                    offset_bytes: position.offset_bytes + used as u64,
                    reason: format!("seq {seq} where {} was due", self.send_seq),
                });
            }
            self.inflight.push_back((seq, ts, len as u32));
            self.send_seq += 1;
            self.stats.sent_records += 1;
            used += len;
        }
        Ok((used, end_of_data))
    }

    /// A zero-copy send's completions: first its result (`more` set when a
    /// notification follows), then the notification, which frees the buffer
    /// and says whether the kernel copied after all.
    fn on_send_zc(
        &mut self,
        ring: &mut impl Io,
        c: &Completion,
        current: bool,
    ) -> Result<(), ShipError> {
        if c.notif {
            self.zc_ops -= 1;
            let bytes = self.zc_pending.pop_front().unwrap_or(0);
            if crate::io::zc_copied(c.result) {
                self.stats.zc_copied_bytes += u64::from(bytes);
            }
            return Ok(());
        }
        if c.more {
            if self.zc_pending.len() < SEND_ZC_IN_FLIGHT_MAX {
                self.zc_pending.push_back(c.result.max(0) as u32);
            }
        } else {
            // No notification follows (the send failed): the op is over.
            self.zc_ops -= 1;
        }
        if !current {
            self.send_progress = None;
            return Ok(());
        }
        if let Some(sent) = self.send_result(c.result) {
            let len = self.send_progress.expect("more to send").0;
            let stream = self.stream.as_ref().expect("current implies connected");
            let (index, from) = self.zc_from;
            ring.send_zc_fixed(
                stream,
                index,
                from + sent,
                len - sent,
                self.token(Kind::SendZc),
            )
            .expect("ring slots cover the shipper");
            self.zc_ops += 1;
        }
        Ok(())
    }

    /// Accounts a send's result (copy or zero-copy): `Some(offset)` when
    /// the chunk's bytes from `offset` on must be sent again (a short
    /// send), `None` when the chunk is done or the connection was dropped
    /// on an error.
    fn send_result(&mut self, result: i32) -> Option<usize> {
        if result < 0 {
            self.send_progress = None;
            self.disconnect(&io::Error::from_raw_os_error(-result).to_string());
            return None;
        }
        let (len, sent) = self.send_progress.expect("a send was in flight");
        let sent = sent + result as usize;
        if sent < len {
            self.send_progress = Some((len, sent));
            Some(sent)
        } else {
            self.send_progress = None;
            self.note_sent(self.chunk_last_seq);
            None
        }
    }

    /// Counts append → sent for every record up to `upto` not counted yet.
    /// Records sent by copy carry their timestamps in the send window;
    /// spliced ones find theirs in `latency_pending`. Both are ordered by
    /// seq, and a record is in exactly one of the two.
    fn note_sent(&mut self, upto: u64) {
        if upto <= self.sent_noted_seq {
            return;
        }
        let now_ns = frame::now_ns();
        let from = self.sent_noted_seq + 1;
        self.sent_noted_seq = upto;
        let recorder = &mut self.stats.append_to_sent_ns;
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

    /// Counts latency only inside `window` (see [`Window`]).
    pub fn set_latency_window(&mut self, window: Option<std::sync::Arc<Window>>) {
        self.stats.append_to_sent_ns.set_window(window.clone());
        self.stats.append_to_acked_ns.set_window(window);
    }

    /// Handles one of this shipper's completions.
    pub fn on_completion(&mut self, ring: &mut impl Io, c: Completion) -> Result<(), ShipError> {
        let kind = c.token.kind;
        let current = c.token.index == self.generation as u32 && self.stream.is_some();
        if kind == Kind::Connected {
            self.connector.read_buf = c.buf;
            self.connector.pending = false;
            self.connector.done = Some(
                self.connector
                    .rx
                    .try_recv()
                    .unwrap_or_else(|_| Err("the connect thread left no result".into())),
            );
            return Ok(());
        }
        if kind == Kind::SendZc {
            return self.on_send_zc(ring, &c, current);
        }
        if kind == Kind::SpliceIn || kind == Kind::SpliceOut {
            if !current {
                self.stale_ops -= 1;
                return Ok(());
            }
            return self.on_splice(ring, kind, c.result);
        }
        let buf = c.buf.expect("send and recv hand their buffer back");
        match kind {
            Kind::Send => {
                if !current {
                    self.send_progress = None;
                    self.send_buf = Some(buf);
                    return Ok(());
                }
                match self.send_result(c.result) {
                    Some(sent) => {
                        let stream = self.stream.as_ref().expect("current implies connected");
                        if ring
                            .send(stream, buf, sent, self.token(Kind::Send))
                            .is_err()
                        {
                            panic!("ring full: RING_SLOTS_MAX must cover the shipper");
                        }
                    }
                    None => self.send_buf = Some(buf),
                }
            }
            Kind::AckRecv => {
                let n = c.result;
                let parsed = if current && n > 0 {
                    Some(self.parse_acks(&buf[..n as usize]))
                } else {
                    None
                };
                self.recv_buf = Some(buf);
                if !current {
                    return Ok(());
                }
                match parsed {
                    Some(Ok(acked)) => self.on_acked(acked),
                    Some(Err(why)) => self.disconnect(&why),
                    None if n == 0 => self.disconnect("the peer closed the connection"),
                    None => self.disconnect(&io::Error::from_raw_os_error(-n).to_string()),
                }
            }
            other => panic!("unknown shipper completion kind {other:?}"),
        }
        Ok(())
    }

    /// Parses acks (which may arrive split across reads); returns the
    /// highest, or why the bytes are not a valid ack stream.
    fn parse_acks(&mut self, data: &[u8]) -> Result<u64, String> {
        let mut acked = self.acked_seq;
        for &byte in data {
            self.ack_partial.push(byte);
            if self.ack_partial.len() == ACK_BYTES {
                let seq = protocol::decode_ack(&self.ack_partial).map_err(|e| e.to_string())?;
                self.ack_partial.clear();
                if seq < acked || seq >= self.send_seq {
                    return Err(format!(
                        "ack for seq {seq} outside [{acked}, {}]",
                        self.send_seq - 1
                    ));
                }
                acked = seq;
            }
        }
        Ok(acked)
    }

    fn on_acked(&mut self, acked: u64) {
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
                self.stats.acked_records += 1;
                self.stats.append_to_acked_ns.record(ts, now_ns);
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
                self.stats.acked_records += 1;
                self.stats.append_to_acked_ns.record(ts, now_ns);
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
        self.apply_retention();
    }

    /// Deletes the oldest sealed segments whose every record the peer has
    /// acknowledged, keeping `retain_segments` of them. Progress never moves
    /// ahead of delivery: an unacknowledged record is never deleted.
    fn apply_retention(&mut self) {
        let Some(keep) = self.config.retain_segments else {
            return;
        };
        // Segment i is fully acked when the next one starts at or below
        // acked + 1; the last segment is the one being written, never deleted.
        let fully_acked = |segments: &VecDeque<u64>, acked: u64| {
            segments
                .iter()
                .skip(1)
                .take_while(|&&next_first| next_first <= acked + 1)
                .count()
        };
        let mut deleted = false;
        while fully_acked(&self.segments, self.acked_seq) > keep {
            let first = self.segments[0];
            let path = self.dir.join(segment_file_name(first));
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), "retention could not delete a segment: {e}");
                return;
            }
            tracing::info!(path = %path.display(), acked_seq = self.acked_seq, "retention deleted an acknowledged segment");
            self.segments.pop_front();
            self.stats.segments_deleted += 1;
            deleted = true;
        }
        if deleted && let Err(e) = crate::wal::segment::sync_dir(&self.dir) {
            tracing::warn!("{e}");
        }
    }
}
