//! One receiver connection on its core: its records, read with io_uring RECV
//! and checked straight out of the receive buffer ([`SocketSource`]), then
//! staged into the connection's WAL unchanged; and its acks, sent once the
//! WAL's own fdatasync covers them ([`Conn`]).

use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::reactor::Admitted;
use super::{Registration, ServeError, Shared};
use crate::constants::ACK_SEND_TIMEOUT_MS;
use crate::constants::{RECORD_BYTES_MAX, RECORD_HEADER_BYTES, RECV_BUFFER_BYTES};
use crate::frame::{self, Seed};
use crate::io::{Completion, Io, Kind, Owner, Ring, Timespec, Token};
use crate::protocol::{self, ACK_BYTES, Hello, ProtocolError};
use crate::wal::{Stage, WalError, WalWriter};

/// A connection's records, read with io_uring RECV on its core's ring and
/// checked straight out of the receive buffer: the length bound before
/// anything is read for it, the crc32c, and that the seq follows the
/// previous one exactly. Verified bytes are staged into the WAL unchanged.
struct SocketSource {
    stream: TcpStream,
    shared: Arc<Shared>,
    /// The receive buffer; `None` while a RECV owns it.
    buf: Option<Vec<u8>>,
    /// Bytes not staged yet are `buf[start..filled]`.
    start: usize,
    filled: usize,
    expected_seq: u64,
    /// The protocol version the shipper speaks.
    version: u16,
    /// The crc seed of the segment the records come from: known from a
    /// version-2 shipper's Segment frame; none (unsalted) for version 1.
    seed: Option<Seed>,
    /// The WAL was full with complete records still in the buffer: they
    /// are staged before anything more is read, so a full buffer never
    /// waits on a read that only the shipper's next send would complete.
    blocked: bool,
    /// Reading is over: EOF, a socket error, bad bytes, or close.
    ended: bool,
    /// Why reading ended early, if it did.
    error: Option<ServeError>,
}

impl SocketSource {
    /// Reads `stream`, whose next record must be `durable_seq + 1`.
    fn new(stream: TcpStream, shared: Arc<Shared>, durable_seq: u64, version: u16) -> SocketSource {
        SocketSource {
            stream,
            shared,
            buf: Some(vec![0u8; RECV_BUFFER_BYTES]),
            start: 0,
            filled: 0,
            expected_seq: durable_seq + 1,
            version,
            seed: (version < 2).then_some(Seed::NONE),
            blocked: false,
            ended: false,
            error: None,
        }
    }

    /// Posts a RECV with `token` if none is in flight and reading goes on.
    fn arm(&mut self, ring: &mut impl Io, token: Token) {
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
    fn stage(&mut self, wal: &mut WalWriter, ring: &mut impl Io) -> Result<(), WalError> {
        let Some(buf) = self.buf.as_ref() else {
            return Ok(()); // the kernel holds it
        };
        self.blocked = false;
        while self.error.is_none() {
            let at = self.start;
            let rest = &buf[at..self.filled];
            // The rest of the header is still on its way.
            let Some(header) = frame::Header::read(rest) else {
                break;
            };
            if header.seq == 0 {
                // A frame that is not a record (protocol.rs): an unsalted
                // crc, a length bounded before anything is read for it.
                match frame::decode_seeded(rest, Seed::NONE) {
                    Err(frame::DecodeError::ZeroSeq) => {}
                    Err(frame::DecodeError::Truncated { .. }) => break,
                    Err(e) => {
                        self.fail(protocol_record_error(self.expected_seq, e));
                        break;
                    }
                    Ok(_) => unreachable!("seq 0 never decodes as a record"),
                }
                let len = header.record_len_bytes();
                let payload = &rest[RECORD_HEADER_BYTES..len];
                match header.kind_bits {
                    0 if payload.len() <= protocol::ABORT_REASON_BYTES_MAX => {
                        let reason = String::from_utf8_lossy(payload).into_owned();
                        self.fail(ServeError::Aborted(reason));
                        break;
                    }
                    frame::WIRE_FRAME_KIND_BITS if self.version >= 2 => {
                        match protocol::decode_segment_frame(payload) {
                            Ok((_, first_seq)) if first_seq != self.expected_seq => {
                                self.fail(
                                    ProtocolError::Seq {
                                        got: first_seq,
                                        expected: self.expected_seq,
                                    }
                                    .into(),
                                );
                                break;
                            }
                            Ok((salt, _)) => {
                                // The records that follow were written
                                // under this salt; they go to a segment of
                                // the same salt here.
                                self.seed = Some(Seed::of_salt(salt));
                                wal.follow_salt(salt);
                                self.start += len;
                            }
                            Err(e) => {
                                self.fail(e.into());
                                break;
                            }
                        }
                        continue;
                    }
                    bits => {
                        let e = frame::DecodeError::UnknownKind { bits };
                        self.fail(protocol_record_error(self.expected_seq, e));
                        break;
                    }
                }
            }
            let Some(seed) = self.seed else {
                self.fail(
                    ProtocolError::NoSegmentFrame {
                        seq: self.expected_seq,
                    }
                    .into(),
                );
                break;
            };
            // The length bound is checked before anything is read for the
            // record (frame::decode), so a huge length field is refused
            // here, not waited for.
            let record = match frame::decode_seeded(rest, seed) {
                Ok((record, _)) => record,
                Err(frame::DecodeError::Truncated { .. }) => break,
                Err(e) => {
                    self.fail(protocol_record_error(self.expected_seq, e));
                    break;
                }
            };
            if record.seq != self.expected_seq {
                self.fail(
                    ProtocolError::Seq {
                        got: record.seq,
                        expected: self.expected_seq,
                    }
                    .into(),
                );
                break;
            }
            let need = record.encoded_len_bytes();
            let payload_len = record.payload.len() as u64;
            // Verified: it goes to disk exactly as it came, with no second
            // encode.
            match wal.stage_encoded(ring, &rest[..need])? {
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
    fn on_completion(&mut self, completion: Completion) {
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
    fn is_finished(&self) -> bool {
        self.ended && self.buf.is_some() && !self.blocked
    }

    /// Bad bytes: stop reading; what was verified before them is kept.
    fn fail(&mut self, e: ServeError) {
        self.error = Some(e);
        self.ended = true;
        self.start = self.filled;
    }
}

fn protocol_record_error(seq: u64, source: frame::DecodeError) -> ServeError {
    ProtocolError::Record { seq, source }.into()
}

/// See [`ACK_SEND_TIMEOUT_MS`]; static because the kernel reads it at submit.
static ACK_SEND_TIMEOUT: Timespec = Timespec::new()
    .sec(ACK_SEND_TIMEOUT_MS / 1000)
    .nsec((ACK_SEND_TIMEOUT_MS % 1000) as u32 * 1_000_000);

/// One connection on a core: its socket, its WAL and its acks.
pub(super) struct Conn {
    /// Who this connection's completions (its WAL's included) go to.
    owner: Owner,
    peer: SocketAddr,
    hello: Hello,
    stream: TcpStream,
    wal: WalWriter,
    source: SocketSource,
    /// The ack SEND's buffer while none is in flight.
    ack_buf: Option<Vec<u8>>,
    /// A durable seq not yet acknowledged.
    ack_due: Option<u64>,
    /// The socket can take no more acks.
    ack_dead: bool,
    /// The ack SEND's linked timeout has not completed yet.
    ack_timeout_pending: bool,
    /// Bytes of the ack in flight already sent by earlier, short SENDs.
    ack_sent_bytes: usize,
    /// The WAL failed: the connection is shut down and waits for its
    /// operations to complete before it is dropped.
    failed: Option<String>,
    /// The shipper reads a Stop notice (it announced CAP_STOP_NOTICE).
    stop_notice: bool,
    /// A Stop notice to send once the ack in flight is out.
    stop_pending: Option<[u8; ACK_BYTES]>,
    _registration: Registration,
}

impl Conn {
    pub(super) fn new(admitted: Admitted, owner: Owner, shared: Arc<Shared>) -> Conn {
        let Admitted {
            stream,
            reader,
            peer,
            hello,
            mut wal,
            registration,
        } = admitted;
        wal.set_owner(owner);
        let durable_seq = wal.durable_seq();
        let version = hello.version;
        let stop_notice = version >= 2 && hello.capabilities & protocol::CAP_STOP_NOTICE != 0;
        let conn = Conn {
            owner,
            peer,
            hello,
            source: SocketSource::new(reader, shared, durable_seq, version),
            stream,
            wal,
            ack_buf: Some(Vec::with_capacity(ACK_BYTES)),
            ack_due: None,
            ack_dead: false,
            ack_timeout_pending: false,
            ack_sent_bytes: 0,
            failed: None,
            stop_notice,
            stop_pending: None,
            _registration: registration,
        };
        tracing::info!(source = %conn.hello.source, shard = conn.hello.shard, peer = %conn.peer, "serving");
        conn
    }

    /// One turn of the loop for this connection.
    pub(super) fn step(&mut self, ring: &mut impl Io) {
        if self.failed.is_none() {
            let staged = loop {
                if let Err(e) = self.source.stage(&mut self.wal, ring) {
                    break Err(e);
                }
                match self.wal.submit(ring) {
                    Ok(submitted) => {
                        if let Some(seq) = submitted.durable_seq {
                            self.ack_due = Some(seq);
                        }
                        // A rotation makes room: stage again.
                        if !submitted.rotated {
                            break Ok(());
                        }
                    }
                    Err(e) => break Err(e),
                }
            };
            match staged {
                Ok(()) => self
                    .source
                    .arm(ring, Token::new(self.owner, Kind::RecordRecv, 0)),
                Err(e) => self.fail_storage(ring, e),
            }
        }
        self.send_ack(ring);
    }

    /// Sends the latest durable seq if it moved and no ack is in flight.
    fn send_ack(&mut self, ring: &mut impl Io) {
        if self.ack_dead || self.ack_buf.is_none() {
            return;
        }
        let Some(seq) = self.ack_due else {
            return;
        };
        let mut buf = self.ack_buf.take().expect("checked above");
        buf.clear();
        buf.extend_from_slice(&protocol::encode_ack(seq));
        self.ack_due = None;
        self.push_ack(ring, buf, 0);
    }

    /// Sends `buf[from..]`, the rest of an ack. A shipper that stops reading
    /// must not hold the connection (and the receiver's stop) forever: the
    /// send gives up after ACK_SEND_TIMEOUT_MS.
    fn push_ack(&mut self, ring: &mut impl Io, buf: Vec<u8>, from: usize) {
        self.ack_sent_bytes = from;
        match ring.send_with_timeout(
            &self.stream,
            buf,
            from,
            Token::new(self.owner, Kind::AckSend, 0),
            &ACK_SEND_TIMEOUT,
            Token::new(self.owner, Kind::AckTimeout, 0),
        ) {
            Ok(()) => self.ack_timeout_pending = true,
            Err(_) => panic!("ring full: RECEIVER_SLOTS_PER_CONNECTION covers the ack"),
        }
    }

    pub(super) fn on_completion(&mut self, ring: &mut impl Io, completion: Completion) {
        let kind = completion.token.kind;
        if kind == Kind::RecordRecv {
            self.source.on_completion(completion);
        } else if kind == Kind::AckTimeout {
            self.ack_timeout_pending = false;
        } else if kind == Kind::AckSend {
            let buf = completion.buf.expect("a send hands its buffer back");
            let sent = self.ack_sent_bytes + completion.result.max(0) as usize;
            if completion.result > 0 && sent >= ACK_BYTES && self.failed.is_some() {
                match self.stop_pending.take() {
                    // The ack before it is out: now the Stop notice.
                    Some(notice) => {
                        let mut buf = buf;
                        buf.clear();
                        buf.extend_from_slice(&notice);
                        self.push_ack(ring, buf, 0);
                    }
                    // The Stop notice is out: now the connection closes.
                    None => {
                        let _ = self.stream.shutdown(Shutdown::Both);
                        self.ack_buf = Some(buf);
                    }
                }
            } else if completion.result <= 0 {
                // The shipper is gone or stopped reading (the send timed
                // out): no more acks; it resumes by seq on reconnect.
                self.ack_dead = true;
                let _ = self.stream.shutdown(Shutdown::Both);
                self.ack_buf = Some(buf);
            } else if sent < ACK_BYTES {
                // A nearly full socket buffer took part of it: send the rest
                // before any later ack, or the stream would desync.
                self.push_ack(ring, buf, sent);
            } else {
                self.ack_buf = Some(buf);
            }
        } else if self.failed.is_some() {
            // The WAL is done for; its remaining operations only complete.
        } else {
            match self.wal.on_completion(ring, completion) {
                Ok(Some(seq)) => self.ack_due = Some(seq),
                Ok(None) => {}
                Err(e) => self.fail_storage(ring, e),
            }
        }
    }

    /// The WAL cannot store more (a full disk, a failed write or sync):
    /// tells the shipper why with a Stop notice in place of the next ack,
    /// if it reads one and no ack is in flight, and closes the connection
    /// once the notice is sent. The shipper keeps its records and retries
    /// with backoff; nothing acknowledged is touched.
    fn fail_storage(&mut self, ring: &mut impl Io, e: WalError) {
        let reason = match e {
            WalError::DiskFull { .. } => protocol::StopReason::DiskFull,
            _ => protocol::StopReason::Storage,
        };
        let why = e.to_string();
        if !self.stop_notice || self.ack_dead {
            return self.fail(why);
        }
        tracing::warn!(source = %self.hello.source, shard = self.hello.shard, peer = %self.peer,
            "closing connection: storage: {why}; the shipper is told to retry later");
        let notice = protocol::encode_stop(reason, self.wal.durable_seq());
        self.ack_due = None;
        self.failed = Some(why);
        // Reading stops now (its RECV completes); the socket closes once
        // the notice is sent, after the ack in flight if there is one.
        let _ = self.stream.shutdown(Shutdown::Read);
        match self.ack_buf.take() {
            Some(mut buf) => {
                buf.clear();
                buf.extend_from_slice(&notice);
                self.push_ack(ring, buf, 0);
            }
            None => self.stop_pending = Some(notice),
        }
    }

    fn fail(&mut self, why: String) {
        tracing::warn!(source = %self.hello.source, shard = self.hello.shard, peer = %self.peer,
            "closing connection: storage: {why}");
        self.failed = Some(why);
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Nothing more will happen on this connection and nothing of its is in
    /// flight: everything verified is durable and acknowledged (or the
    /// shipper is gone, or the WAL failed).
    /// Shuts the socket down (the core is stopping after an error): its
    /// operations in flight complete.
    pub(super) fn shut_down(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    pub(super) fn is_done(&self, ring: &Ring) -> bool {
        self.is_done_with(ring.in_flight_for(self.owner))
    }

    /// [`Conn::is_done`], given how many of its operations are in flight.
    pub(super) fn is_done_with(&self, in_flight: usize) -> bool {
        if self.failed.is_some() {
            return in_flight == 0;
        }
        self.source.is_finished()
            && self.wal.is_idle()
            && self.ack_buf.is_some()
            && !self.ack_timeout_pending
            && (self.ack_due.is_none() || self.ack_dead)
    }

    /// The replica's durable seq (the simulator's check).
    #[cfg(test)]
    pub(super) fn durable_seq(&self) -> u64 {
        self.wal.durable_seq()
    }

    /// The process dies (the simulator's crash).
    #[cfg(test)]
    pub(super) fn crash(self) {
        self.wal.crash();
    }

    /// Ends without merging statistics anywhere (the simulator's).
    #[cfg(test)]
    pub(super) fn retire_quietly(self) {
        if self.failed.is_none() && self.wal.is_idle() {
            let _ = self.wal.into_stats();
        }
    }

    pub(super) fn retire(mut self, shared: &Shared) {
        if self.failed.is_some() {
            return;
        }
        if let Some(e) = self.source.error.take() {
            tracing::warn!(source = %self.hello.source, shard = self.hello.shard, peer = %self.peer,
                "closing connection: {e}");
        }
        let stats = self.wal.into_stats();
        shared
            .remote_durable
            .lock()
            .expect("not poisoned")
            .merge(&stats.append_to_durable_ns);
    }
}
