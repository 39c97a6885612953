//! The record format: encode, decode, verify.
//!
//! Every record, in a segment on disk and on the wire, is laid out as
//! follows. All integers are little-endian.
//!
//! ```text
//!  offset  size  field
//!  0       4     crc32c        Castagnoli CRC, seeded with the segment's salt
//!                              (see below), over bytes 4 .. 24 + len
//!  4       4     len_kind      bits 0..24: payload length, <= RECORD_PAYLOAD_BYTES_MAX
//!                              bits 24..28: kind (0 data, 1 checkpoint, 2 seal)
//!                              bit 28: continued (the payload goes on in the next record)
//!                              bits 29..32: zero
//!  8       8     seq           sequence number, SEQ_FIRST.. per shard, no gaps
//!  16      8     append_ts_ns  CLOCK_REALTIME ns when the record was accepted
//!  24      len   payload       opaque bytes: NUL, CR, invalid UTF-8 pass through
//! ```
//!
//! Records are packed back to back with no padding. The crc covers the length,
//! kind, seq and timestamp as well as the payload, so a torn or shifted header
//! never passes. A header of 24 zero bytes is never valid (seq 0 is never used
//! and the crc of zeros is not zero): it marks preallocated space that was
//! never written, which recovery treats differently from a damaged record.
//!
//! **Kinds.** A payload is at most 1 MiB, which takes 21 bits, so the kind and
//! the continuation flag live in the length field's spare high bits rather
//! than in a new, longer header: every record keeps its 24 bytes, and a
//! version-1 record (whose high bits are zero) reads as a data record. A
//! control record (a source position checkpoint, a seal) takes a seq like any
//! other, so ordering, acks and resume cover it. A line longer than the
//! maximum record can be stored as pieces, each but the last marked
//! continued; readers join them.
//!
//! **Salt.** Version-2 segments carry a random 64-bit salt in their header,
//! and every record's crc is seeded with it ([`Seed::of_salt`]): the stale
//! bytes of a reused segment can never read back as records of its new
//! life. Version-1 segments have no salt (seed 0: a plain crc32c).

use crate::constants::{RECORD_HEADER_BYTES, RECORD_PAYLOAD_BYTES_MAX, SEQ_FIRST};

/// What a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A record appended by a producer: a line, an event. The default.
    #[default]
    Data,
    /// A source's position (a followed file's offset), so a restart
    /// resumes reading where the records end.
    Checkpoint,
    /// A seal: "synced through N, digest D".
    Seal,
}

impl Kind {
    fn bits(self) -> u32 {
        match self {
            Kind::Data => 0,
            Kind::Checkpoint => 1,
            Kind::Seal => 2,
        }
    }

    fn from_bits(bits: u32) -> Option<Kind> {
        Some(match bits {
            0 => Kind::Data,
            1 => Kind::Checkpoint,
            2 => Kind::Seal,
            _ => return None,
        })
    }
}

/// The kind of a frame on the wire that is not a record (its seq is 0):
/// see `protocol.rs`. Never in a segment.
pub const WIRE_FRAME_KIND_BITS: u32 = 0xE;

/// Bits of the length field that hold the payload length.
const LEN_MASK: u32 = 0x00FF_FFFF;
const KIND_SHIFT: u32 = 24;
const KIND_MASK: u32 = 0xF;
const CONTINUED_BIT: u32 = 1 << 28;
/// Bits that must be zero.
const RESERVED_MASK: u32 = 0xE000_0000;

/// A payload length with a kind and the continuation flag, packed as in a
/// record's length field (the inbox's entries use it too).
pub(crate) fn pack_len_kind(len_bytes: usize, kind: Kind, continued: bool) -> u32 {
    debug_assert!(len_bytes <= RECORD_PAYLOAD_BYTES_MAX);
    len_bytes as u32 | kind.bits() << KIND_SHIFT | if continued { CONTINUED_BIT } else { 0 }
}

/// The reverse of [`pack_len_kind`], for a field this process packed.
pub(crate) fn unpack_len_kind(field: u32) -> (usize, Kind, bool) {
    let kind = Kind::from_bits(field >> KIND_SHIFT & KIND_MASK).expect("packed by this process");
    (
        (field & LEN_MASK) as usize,
        kind,
        field & CONTINUED_BIT != 0,
    )
}
const _: () = assert!(RECORD_PAYLOAD_BYTES_MAX as u32 <= LEN_MASK);

/// The crc seed of a segment: 0 for version 1 (no salt), else derived from
/// the segment's salt, so that the crc of every record covers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seed(pub u32);

impl Seed {
    /// No salt: version-1 segments, and frames on the wire.
    pub const NONE: Seed = Seed(0);

    /// The seed of a segment with `salt` (0: no salt).
    pub fn of_salt(salt: u64) -> Seed {
        if salt == 0 {
            Seed::NONE
        } else {
            Seed(crc32c::crc32c(&salt.to_le_bytes()))
        }
    }

    fn crc(self, bytes: &[u8]) -> u32 {
        crc32c::crc32c_append(self.0, bytes)
    }
}

/// A decoded record borrowing its payload from the buffer it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub seq: u64,
    pub append_ts_ns: u64,
    pub kind: Kind,
    /// The payload goes on in the next record (a line split at the maximum
    /// record size).
    pub continued: bool,
    pub payload: &'a [u8],
}

impl RecordRef<'_> {
    /// Bytes this record occupies once encoded.
    pub fn encoded_len_bytes(&self) -> usize {
        encoded_len_bytes(self.payload.len())
    }
}

/// Why bytes did not decode as a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The buffer ends inside the header or the payload.
    #[error("truncated record: {need_bytes} bytes needed, {have_bytes} present")]
    Truncated {
        need_bytes: usize,
        have_bytes: usize,
    },
    /// All 24 header bytes are zero: space that was never written. (Fewer
    /// than 24 bytes are [`DecodeError::Truncated`], zeros or not.)
    #[error("zero header (unwritten space)")]
    ZeroHeader,
    /// The length field exceeds the maximum payload size.
    #[error(
        "length field {len_bytes} exceeds the maximum payload of {RECORD_PAYLOAD_BYTES_MAX} bytes"
    )]
    TooLong { len_bytes: u64 },
    /// The stored crc does not match the bytes.
    #[error("crc32c mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc { stored: u32, computed: u32 },
    /// Seq 0 is reserved for "nothing" (and for frames on the wire that are
    /// not records).
    #[error("seq 0 is reserved")]
    ZeroSeq,
    /// The kind bits name no kind this build knows, or reserved bits are set.
    #[error("unknown record kind {bits:#x} in the length field")]
    UnknownKind { bits: u32 },
}

/// A payload that cannot become a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "record payload of {len_bytes} bytes exceeds the maximum of {RECORD_PAYLOAD_BYTES_MAX} bytes"
)]
pub struct TooLarge {
    pub len_bytes: usize,
}

/// Bytes a record with a payload of `payload_len_bytes` occupies once encoded.
pub const fn encoded_len_bytes(payload_len_bytes: usize) -> usize {
    RECORD_HEADER_BYTES + payload_len_bytes
}

/// Checks that a payload may become a record.
pub fn check_payload(payload: &[u8]) -> Result<(), TooLarge> {
    if payload.len() > RECORD_PAYLOAD_BYTES_MAX {
        return Err(TooLarge {
            len_bytes: payload.len(),
        });
    }
    Ok(())
}

/// What is stamped on a record besides its seq and payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stamp {
    pub append_ts_ns: u64,
    pub kind: Kind,
    pub continued: bool,
    /// The segment's crc seed.
    pub seed: Seed,
}

impl Stamp {
    /// A data record at `append_ts_ns` in a segment without salt.
    pub fn data(append_ts_ns: u64) -> Stamp {
        Stamp {
            append_ts_ns,
            ..Stamp::default()
        }
    }
}

/// Appends one encoded data record, unsalted, to `out` (tests and tools).
///
/// The caller must have checked the payload with `check_payload` and must
/// have reserved room: this never grows `out` (asserted), because the WAL's
/// commit buffers are allocated once at start-up.
pub fn encode_into(out: &mut Vec<u8>, seq: u64, append_ts_ns: u64, payload: &[u8]) {
    encode_stamped_into(out, seq, Stamp::data(append_ts_ns), payload);
}

/// Appends one encoded record to `out`; same contract as [`encode_into`].
pub fn encode_stamped_into(out: &mut Vec<u8>, seq: u64, stamp: Stamp, payload: &[u8]) {
    assert!(seq >= SEQ_FIRST, "seq {seq} is reserved");
    assert!(payload.len() <= RECORD_PAYLOAD_BYTES_MAX);
    let capacity = out.capacity();
    assert!(
        out.len() + encoded_len_bytes(payload.len()) <= capacity,
        "encode_into would grow a preallocated buffer"
    );
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_HEADER_BYTES]);
    out.extend_from_slice(payload);
    seal(&mut out[start..], seq, stamp);
    debug_assert_eq!(out.capacity(), capacity);
}

/// Encodes one record at the start of `out` (a registered O_DIRECT commit
/// buffer) and returns the bytes it occupies. Same contract as
/// [`encode_into`]; `out` must have room (asserted).
pub fn encode_at(out: &mut [u8], seq: u64, stamp: Stamp, payload: &[u8]) -> usize {
    assert!(seq >= SEQ_FIRST, "seq {seq} is reserved");
    assert!(payload.len() <= RECORD_PAYLOAD_BYTES_MAX);
    let len = encoded_len_bytes(payload.len());
    let record = &mut out[..len];
    record[RECORD_HEADER_BYTES..].copy_from_slice(payload);
    seal(record, seq, stamp);
    len
}

/// Encodes a frame for the wire that is not a record: seq 0, no salt, the
/// given kind bits. See `protocol.rs`.
pub fn encode_wire_frame(kind_bits: u32, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() <= RECORD_PAYLOAD_BYTES_MAX && kind_bits <= KIND_MASK);
    let mut frame = vec![0u8; encoded_len_bytes(payload.len())];
    frame[RECORD_HEADER_BYTES..].copy_from_slice(payload);
    let len_kind = payload.len() as u32 | kind_bits << KIND_SHIFT;
    frame[4..8].copy_from_slice(&len_kind.to_le_bytes());
    let crc = Seed::NONE.crc(&frame[4..]);
    frame[..4].copy_from_slice(&crc.to_le_bytes());
    frame
}

/// Fills in the header of `record`, whose payload is already in place
/// after it: length and kind, seq and timestamp, then the seeded crc32c over
/// all of it.
fn seal(record: &mut [u8], seq: u64, stamp: Stamp) {
    let payload_len = (record.len() - RECORD_HEADER_BYTES) as u32;
    let mut len_kind = payload_len | stamp.kind.bits() << KIND_SHIFT;
    if stamp.continued {
        len_kind |= CONTINUED_BIT;
    }
    record[4..8].copy_from_slice(&len_kind.to_le_bytes());
    record[8..16].copy_from_slice(&seq.to_le_bytes());
    record[16..24].copy_from_slice(&stamp.append_ts_ns.to_le_bytes());
    let crc = stamp.seed.crc(&record[4..]);
    record[..4].copy_from_slice(&crc.to_le_bytes());
}

/// The fixed fields of a record header, read in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub crc: u32,
    /// The payload length (the length field's low 24 bits).
    pub len_bytes: usize,
    /// The length field's high 8 bits: kind, continuation, reserved.
    pub kind_bits: u32,
    pub seq: u64,
    pub append_ts_ns: u64,
}

impl Header {
    /// Reads the header at the start of `buf`; `None` when fewer than
    /// [`RECORD_HEADER_BYTES`] bytes are there. Nothing is checked.
    pub fn read(buf: &[u8]) -> Option<Header> {
        let h = buf.get(..RECORD_HEADER_BYTES)?;
        let u32_at = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().expect("8 bytes"));
        let len_kind = u32_at(4);
        Some(Header {
            crc: u32_at(0),
            len_bytes: (len_kind & LEN_MASK) as usize,
            kind_bits: len_kind >> KIND_SHIFT,
            seq: u64_at(8),
            append_ts_ns: u64_at(16),
        })
    }

    /// Bytes the whole record occupies.
    pub fn record_len_bytes(&self) -> usize {
        encoded_len_bytes(self.len_bytes)
    }

    /// The kind bits alone (without the continuation flag).
    pub fn kind_code(&self) -> u32 {
        self.kind_bits & KIND_MASK
    }
}

/// Decodes the record at the start of `buf`, verifying its crc.
///
/// Every bound is checked before anything is trusted: the length field is
/// compared with the maximum before it is used to slice, and nothing is
/// allocated. Returns the record and the bytes it occupies.
pub fn decode(buf: &[u8]) -> Result<(RecordRef<'_>, usize), DecodeError> {
    decode_checked(buf, Check::Verify, Seed::NONE)
}

/// Like [`decode`], for a record of a segment whose crc seed is `seed`.
pub fn decode_seeded(buf: &[u8], seed: Seed) -> Result<(RecordRef<'_>, usize), DecodeError> {
    decode_checked(buf, Check::Verify, seed)
}

/// What a [`Records`] walk checks of each record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Bounds and crc32c: for bytes from a disk or a socket.
    Verify,
    /// Bounds only: for bytes this process encoded itself, or that were
    /// verified when the WAL opened (recovery checks every crc).
    Trust,
}

fn decode_checked(
    buf: &[u8],
    check: Check,
    seed: Seed,
) -> Result<(RecordRef<'_>, usize), DecodeError> {
    // Fewer bytes than a header are a truncation even when they are zeros:
    // a record's crc may start with zero bytes, and the rest of it may be
    // in the next read. Only a whole zero header marks unwritten space.
    let Some(header) = Header::read(buf) else {
        return Err(DecodeError::Truncated {
            need_bytes: RECORD_HEADER_BYTES,
            have_bytes: buf.len(),
        });
    };
    if buf[..RECORD_HEADER_BYTES].iter().all(|&b| b == 0) {
        return Err(DecodeError::ZeroHeader);
    }
    if header.len_bytes > RECORD_PAYLOAD_BYTES_MAX {
        return Err(DecodeError::TooLong {
            len_bytes: header.len_bytes as u64,
        });
    }
    let total = header.record_len_bytes();
    if buf.len() < total {
        return Err(DecodeError::Truncated {
            need_bytes: total,
            have_bytes: buf.len(),
        });
    }
    if check == Check::Verify {
        let computed = seed.crc(&buf[4..total]);
        if computed != header.crc {
            return Err(DecodeError::BadCrc {
                stored: header.crc,
                computed,
            });
        }
    }
    if header.seq == 0 {
        return Err(DecodeError::ZeroSeq);
    }
    let kind = Kind::from_bits(header.kind_code())
        .filter(|_| header.kind_bits << KIND_SHIFT & RESERVED_MASK == 0)
        .ok_or(DecodeError::UnknownKind {
            bits: header.kind_bits,
        })?;
    Ok((
        RecordRef {
            seq: header.seq,
            append_ts_ns: header.append_ts_ns,
            kind,
            continued: header.kind_bits << KIND_SHIFT & CONTINUED_BIT != 0,
            payload: &buf[RECORD_HEADER_BYTES..total],
        },
        total,
    ))
}

/// The one record walker: steps over the records packed in a byte range,
/// in order, checking each as `Check` says. Every reader of records
/// (recovery, the WAL writer and reader, the receiver) walks with it.
///
/// The walk ends at the first bytes that are not a whole record, and
/// yields why ([`DecodeError::Truncated`] where the range ends inside a
/// record, [`DecodeError::ZeroHeader`] at unwritten space, or damage);
/// [`Records::offset`] is then where those bytes start.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    buf: &'a [u8],
    at: usize,
    check: Check,
    seed: Seed,
    ended: bool,
}

impl<'a> Records<'a> {
    /// A walk that verifies every record's bounds and (unsalted) crc32c.
    pub fn verified(buf: &'a [u8]) -> Records<'a> {
        Records::verified_seeded(buf, Seed::NONE)
    }

    /// A walk that verifies every record's bounds and crc32c, seeded with
    /// its segment's salt.
    pub fn verified_seeded(buf: &'a [u8], seed: Seed) -> Records<'a> {
        Records {
            buf,
            at: 0,
            check: Check::Verify,
            seed,
            ended: false,
        }
    }

    /// A walk that checks bounds only (see [`Check::Trust`]).
    pub fn trusted(buf: &'a [u8]) -> Records<'a> {
        Records {
            check: Check::Trust,
            ..Records::verified(buf)
        }
    }

    /// Offset in the range of the next record: just past the last one
    /// yielded, which is where the bytes that ended a walk start.
    pub fn offset(&self) -> usize {
        self.at
    }

    /// The bytes not walked yet.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.at..]
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<RecordRef<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ended || self.at == self.buf.len() {
            return None;
        }
        match decode_checked(&self.buf[self.at..], self.check, self.seed) {
            Ok((record, used)) => {
                self.at += used;
                Some(Ok(record))
            }
            Err(e) => {
                self.ended = true;
                Some(Err(e))
            }
        }
    }
}

/// Nanoseconds since the Unix epoch, from CLOCK_REALTIME.
///
/// Realtime rather than monotonic because timestamps cross processes and, with
/// PTP, hosts; latency between two stamps taken on one host is still valid.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(seq: u64, ts: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(encoded_len_bytes(payload.len()));
        encode_into(&mut out, seq, ts, payload);
        out
    }

    #[test]
    fn round_trip_keeps_bytes_exact() {
        let payload = b"a\0b\r\n\xff\xfe";
        let buf = encode(7, 42, payload);
        let (rec, used) = decode(&buf).unwrap();
        assert_eq!(used, buf.len());
        assert_eq!(rec.seq, 7);
        assert_eq!(rec.append_ts_ns, 42);
        assert_eq!(rec.payload, payload);
    }

    #[test]
    fn encode_at_writes_the_same_bytes_as_encode_into() {
        let payload = b"direct";
        let mut slab = [0xeeu8; 64];
        let used = encode_at(&mut slab[3..], 9, Stamp::data(5), payload);
        assert_eq!(&slab[3..3 + used], encode(9, 5, payload).as_slice());
        assert!(
            slab[3 + used..].iter().all(|&b| b == 0xee),
            "wrote past the record"
        );
    }

    #[test]
    fn empty_and_maximum_payloads_round_trip() {
        for len in [0, 1, RECORD_PAYLOAD_BYTES_MAX] {
            let payload = vec![0xa5; len];
            let buf = encode(1, 1, &payload);
            assert_eq!(decode(&buf).unwrap().0.payload.len(), len);
        }
        assert!(check_payload(&vec![0; RECORD_PAYLOAD_BYTES_MAX + 1]).is_err());
    }

    #[test]
    fn every_single_bit_flip_is_caught() {
        let buf = encode(3, 99, b"hello world");
        for bit in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&bad).is_err(), "flip of bit {bit} went unnoticed");
        }
    }

    #[test]
    fn every_truncation_is_reported() {
        let buf = encode(3, 99, b"hello world");
        for cut in 0..buf.len() {
            match decode(&buf[..cut]) {
                Err(DecodeError::Truncated { .. }) => {}
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn zero_header_is_distinguished() {
        assert_eq!(
            decode(&[0u8; 64]).unwrap_err(),
            DecodeError::ZeroHeader,
            "preallocated space must read as unwritten"
        );
    }

    #[test]
    fn oversized_length_is_refused_before_slicing() {
        let mut buf = encode(1, 1, b"x");
        buf[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&buf), Err(DecodeError::TooLong { .. })));
    }

    #[test]
    fn a_walk_yields_every_record_then_why_it_stopped() {
        let mut buf = encode(1, 10, b"one");
        buf.extend_from_slice(&encode(2, 20, b"two"));
        let whole = buf.len();
        buf.extend_from_slice(&encode(3, 30, b"three")[..10]);
        let mut walk = Records::verified(&buf);
        assert_eq!(walk.next().unwrap().unwrap().payload, b"one");
        assert_eq!(walk.next().unwrap().unwrap().seq, 2);
        assert!(matches!(
            walk.next(),
            Some(Err(DecodeError::Truncated { .. }))
        ));
        assert_eq!(walk.offset(), whole, "the partial record starts here");
        assert!(walk.next().is_none(), "a walk ends at the first error");
    }

    #[test]
    fn a_trusted_walk_skips_the_crc_but_not_the_bounds() {
        let mut buf = encode(1, 10, b"one");
        buf[RECORD_HEADER_BYTES] ^= 1;
        assert!(matches!(
            Records::verified(&buf).next(),
            Some(Err(DecodeError::BadCrc { .. }))
        ));
        assert_eq!(Records::trusted(&buf).next().unwrap().unwrap().seq, 1);
        buf[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Records::trusted(&buf).next(),
            Some(Err(DecodeError::TooLong { .. }))
        ));
        assert!(matches!(
            Records::trusted(&[0u8; 40]).next(),
            Some(Err(DecodeError::ZeroHeader))
        ));
    }

    #[test]
    fn a_header_cut_short_is_truncated_even_when_its_bytes_are_zero() {
        // A record whose crc begins with zero bytes, split by a read after
        // them, must wait for the rest, not read as unwritten space.
        for cut in 1..RECORD_HEADER_BYTES {
            assert!(
                matches!(decode(&vec![0u8; cut]), Err(DecodeError::Truncated { .. })),
                "{cut} zero bytes"
            );
        }
        assert_eq!(
            decode(&[0u8; RECORD_HEADER_BYTES]).unwrap_err(),
            DecodeError::ZeroHeader
        );
    }
}
