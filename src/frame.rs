//! The record format: encode, decode, verify.
//!
//! Every record, in a segment on disk and on the wire, is laid out as
//! follows. All integers are little-endian.
//!
//! ```text
//!  offset  size  field
//!  0       4     crc32c        Castagnoli CRC over bytes 4 .. 24 + len
//!  4       4     len           payload length in bytes, <= RECORD_PAYLOAD_BYTES_MAX
//!  8       8     seq           sequence number, SEQ_FIRST.. per shard, no gaps
//!  16      8     append_ts_ns  CLOCK_REALTIME ns when the record was accepted
//!  24      len   payload       opaque bytes: NUL, CR, invalid UTF-8 pass through
//! ```
//!
//! Records are packed back to back with no padding. The crc covers the length,
//! seq and timestamp as well as the payload, so a torn or shifted header never
//! passes. A header of 24 zero bytes is never valid (seq 0 is never used and
//! the crc of zeros is not zero): it marks preallocated space that was never
//! written, which recovery treats differently from a damaged record.

use crate::constants::{RECORD_HEADER_BYTES, RECORD_PAYLOAD_BYTES_MAX, SEQ_FIRST};

/// A decoded record borrowing its payload from the buffer it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub seq: u64,
    pub append_ts_ns: u64,
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
    /// Seq 0 is reserved for "nothing".
    #[error("seq 0 is reserved")]
    ZeroSeq,
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

/// Appends one encoded record to `out`.
///
/// The caller must have checked the payload with `check_payload` and must
/// have reserved room: this never grows `out` (asserted), because the WAL's
/// commit buffers are allocated once at start-up.
pub fn encode_into(out: &mut Vec<u8>, seq: u64, append_ts_ns: u64, payload: &[u8]) {
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
    seal(&mut out[start..], seq, append_ts_ns);
    debug_assert_eq!(out.capacity(), capacity);
}

/// Encodes one record at the start of `out` (a registered O_DIRECT commit
/// buffer) and returns the bytes it occupies. Same contract as
/// [`encode_into`]; `out` must have room (asserted).
pub fn encode_at(out: &mut [u8], seq: u64, append_ts_ns: u64, payload: &[u8]) -> usize {
    assert!(seq >= SEQ_FIRST, "seq {seq} is reserved");
    assert!(payload.len() <= RECORD_PAYLOAD_BYTES_MAX);
    let len = encoded_len_bytes(payload.len());
    let record = &mut out[..len];
    record[RECORD_HEADER_BYTES..].copy_from_slice(payload);
    seal(record, seq, append_ts_ns);
    len
}

/// Fills in the header of `record`, whose payload is already in place
/// after it: length, seq and timestamp, then the crc32c over all of it.
fn seal(record: &mut [u8], seq: u64, append_ts_ns: u64) {
    let payload_len = (record.len() - RECORD_HEADER_BYTES) as u32;
    record[4..8].copy_from_slice(&payload_len.to_le_bytes());
    record[8..16].copy_from_slice(&seq.to_le_bytes());
    record[16..24].copy_from_slice(&append_ts_ns.to_le_bytes());
    let crc = crc32c::crc32c(&record[4..]);
    record[..4].copy_from_slice(&crc.to_le_bytes());
}

/// The fixed fields of a record header, read in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub crc: u32,
    pub len_bytes: usize,
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
        Some(Header {
            crc: u32_at(0),
            len_bytes: u32_at(4) as usize,
            seq: u64_at(8),
            append_ts_ns: u64_at(16),
        })
    }

    /// Bytes the whole record occupies.
    pub fn record_len_bytes(&self) -> usize {
        encoded_len_bytes(self.len_bytes)
    }
}

/// Decodes the record at the start of `buf`, verifying its crc.
///
/// Every bound is checked before anything is trusted: the length field is
/// compared with the maximum before it is used to slice, and nothing is
/// allocated. Returns the record and the bytes it occupies.
pub fn decode(buf: &[u8]) -> Result<(RecordRef<'_>, usize), DecodeError> {
    decode_checked(buf, Check::Verify)
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

fn decode_checked(buf: &[u8], check: Check) -> Result<(RecordRef<'_>, usize), DecodeError> {
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
        let computed = crc32c::crc32c(&buf[4..total]);
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
    Ok((
        RecordRef {
            seq: header.seq,
            append_ts_ns: header.append_ts_ns,
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
    ended: bool,
}

impl<'a> Records<'a> {
    /// A walk that verifies every record's bounds and crc32c.
    pub fn verified(buf: &'a [u8]) -> Records<'a> {
        Records {
            buf,
            at: 0,
            check: Check::Verify,
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
        match decode_checked(&self.buf[self.at..], self.check) {
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
        let used = encode_at(&mut slab[3..], 9, 5, payload);
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
