//! The wire protocol between a shipper and a receiver, over one TCP
//! connection per (source, shard). All integers are little-endian, and every
//! message but the data stream has a fixed size, so nothing is allocated on
//! a length read off the wire.
//!
//! Version 2, which this build speaks; a version-2 receiver also serves a
//! version-1 shipper (see below).
//!
//! ```text
//! shipper → receiver  Hello, HELLO_V2_BYTES = 104 (version 1: the first 84)
//!   0   8   magic          b"RSHIPNET"
//!   8   2   version        2
//!   10  2   capabilities   CAP_* bits: what the shipper supports (see below)
//!   12  4   shard          < SHARDS_MAX
//!   16  1   source_len     1 ..= SOURCE_NAME_BYTES_MAX
//!   17  64  source         [A-Za-z0-9._-], zero padded (not "." or "..")
//!   81  3   zero
//!   84  16  wal_id         the shipper's WAL id (see wal/segment.rs)
//!   100 4   zero
//!
//! receiver → shipper  Welcome, WELCOME_V2_BYTES = 40 (version 1: the first 24)
//!   0   8   magic          b"RSHIPWLC"
//!   8   2   version        2 (1 when answering a version-1 hello)
//!   10  2   status         0 ok; else a WelcomeStatus, and the receiver closes
//!   12  2   capabilities   the receiver's CAP_* bits (version 2)
//!   14  2   zero
//!   16  8   durable_seq    the last seq the receiver holds durably for
//!                          (source, shard); 0 for none
//!   24  16  wal_id         the WAL id the receiver holds (source, shard) under;
//!                          0 for none (version 2)
//!
//! shipper → receiver  Data: WAL records back to back, byte for byte as in the
//!   segments (see frame.rs), starting at durable_seq + 1 with no gap. The
//!   receiver checks each record's length bound before reading it, its
//!   crc32c (seeded with its segment's salt), and that its seq is exactly
//!   the previous one + 1.
//!
//! shipper → receiver  Segment (version 2): a frame in the data stream with
//!   seq 0, kind WIRE_FRAME_KIND_BITS, no salt, and a 16-byte payload
//!   { salt: u64, first_seq: u64 }: the records that follow come from a
//!   segment with this salt. It precedes the first record sent from each
//!   segment; the receiver stores those records, unchanged, in a segment of
//!   its own with the same salt, so that the replica's bytes are the
//!   source's.
//!
//! shipper → receiver  Abort: a frame in the data stream with seq 0, kind 0
//!   and a valid unsalted crc; its payload (at most ABORT_REASON_BYTES_MAX)
//!   says why the shipper gives up, e.g. retention deleted what the receiver
//!   asked for. The receiver logs it and closes, so both sides say so.
//!
//! receiver → shipper  Ack, ACK_BYTES = 16, cumulative
//!   0   4   magic          b"RACK"
//!   4   4   zero
//!   8   8   durable_seq    every record up to here is durable at the receiver
//! ```
//!
//! **Versions.** A version-2 receiver answers a version-1 hello with a
//! version-1 welcome and takes version-1 data: records without kinds or
//! salts, and no WAL id to check. A version-1 receiver answers a version-2
//! hello with a version-1 welcome of status VersionMismatch, and the
//! version-2 shipper stops, naming both versions: it cannot send its salted
//! segments to a receiver that cannot verify them.
//!
//! **Capabilities.** Within a version, each side announces what it
//! supports and uses only what both do. Version 2's baseline,
//! [`CAP_RECORD_KINDS`] and [`CAP_SALTED_SEGMENTS`], must be set in a
//! version-2 hello; bits this build does not know (a newer peer's features,
//! such as TLS or digests to come) are ignored rather than refused, so that
//! adding a feature does not need a new version. A version-1 hello has
//! none.

use crate::constants::{SHARDS_MAX, SOURCE_NAME_BYTES_MAX};

pub const HELLO_MAGIC: [u8; 8] = *b"RSHIPNET";
pub const WELCOME_MAGIC: [u8; 8] = *b"RSHIPWLC";
pub const ACK_MAGIC: [u8; 4] = *b"RACK";
/// A receiver's Stop notice on the ack stream, in place of an ack.
pub const STOP_MAGIC: [u8; 4] = *b"RSTP";
/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 2;
/// A version-1 hello, and the part every hello starts with.
pub const HELLO_BYTES: usize = 84;
pub const HELLO_V2_BYTES: usize = 104;
/// A version-1 welcome, and the part every welcome starts with.
pub const WELCOME_BYTES: usize = 24;
pub const WELCOME_V2_BYTES: usize = 40;
pub const ACK_BYTES: usize = 16;

/// Capability: record kinds (control records may follow in the stream).
pub const CAP_RECORD_KINDS: u16 = 1 << 0;
/// Capability: salted segments, announced by Segment frames.
pub const CAP_SALTED_SEGMENTS: u16 = 1 << 1;
/// Capability: the shipper reads a receiver's Stop notice on the ack
/// stream ([`encode_stop`]); a receiver sends it only to a shipper that
/// announced this.
pub const CAP_STOP_NOTICE: u16 = 1 << 2;
/// What this build supports.
pub const CAPABILITIES: u16 = CAP_RECORD_KINDS | CAP_SALTED_SEGMENTS | CAP_STOP_NOTICE;
/// What every version-2 peer must support.
pub const CAPABILITIES_V2_BASELINE: u16 = CAP_RECORD_KINDS | CAP_SALTED_SEGMENTS;

/// A Segment frame's payload: salt, first seq.
pub const SEGMENT_FRAME_PAYLOAD_BYTES: usize = 16;

/// Why a receiver turned a shipper away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum WelcomeStatus {
    Ok = 0,
    BadHello = 1,
    VersionMismatch = 2,
    /// An older connection still serves this (source, shard) and did not
    /// let go within the handshake timeout of being taken over.
    Busy = 3,
    /// The receiver could not open its copy of the WAL.
    StorageError = 4,
    /// The receiver holds this (source, shard) under another WAL id: two
    /// WALs claim one source. The welcome names the id it holds.
    OtherWal = 5,
}

impl WelcomeStatus {
    fn from_u16(v: u16) -> Option<WelcomeStatus> {
        Some(match v {
            0 => WelcomeStatus::Ok,
            1 => WelcomeStatus::BadHello,
            2 => WelcomeStatus::VersionMismatch,
            3 => WelcomeStatus::Busy,
            4 => WelcomeStatus::StorageError,
            5 => WelcomeStatus::OtherWal,
            _ => return None,
        })
    }
}

/// A protocol violation: what was wrong, as a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("protocol error: bad {message} magic: not a ringship {peer}")]
    BadMagic {
        message: &'static str,
        peer: &'static str,
    },
    #[error("the {peer} speaks protocol version {theirs}, this {us} version {ours}{hint}")]
    Version {
        peer: &'static str,
        us: &'static str,
        theirs: u16,
        ours: u16,
        hint: &'static str,
    },
    #[error(
        "protocol error: capabilities {0:#06x} (a version-1 hello has none; a version-2 hello has at least {CAPABILITIES_V2_BASELINE:#06x})"
    )]
    Capabilities(u16),
    #[error("protocol error: shard {0} is out of range")]
    ShardOutOfRange(u32),
    #[error("protocol error: source name length {0} is out of range")]
    SourceLength(usize),
    #[error("protocol error: hello padding is not zero")]
    Padding,
    #[error(
        "protocol error: source name {0:?} is not [A-Za-z0-9._-]{{1,{SOURCE_NAME_BYTES_MAX}}} (and not . or ..)"
    )]
    SourceName(String),
    #[error("the receiver refused the connection: {0:?}")]
    Refused(WelcomeStatus),
    #[error(
        "the receiver holds this source and shard under WAL {theirs}, but this WAL is {ours}: \
         two WALs claim the same source. Nothing was sent; give this WAL another --source, or \
         move the receiver's copy aside (see docs/operating.md)"
    )]
    OtherWal {
        theirs: crate::wal::segment::WalId,
        ours: crate::wal::segment::WalId,
    },
    #[error("protocol error: a Segment frame of {0} bytes (it has 16)")]
    SegmentFrame(usize),
    #[error("protocol error: unknown welcome status {0}")]
    UnknownStatus(u16),
    #[error("protocol error: bad ack")]
    BadAck,
    #[error(
        "the receiver stopped storing this source: {}; it holds it through seq {durable_seq}. \
         The records stay in this WAL, and the shipper retries with backoff",
        if *disk_full { "its disk is full" } else { "a storage error (see the receiver's log)" }
    )]
    ReceiverStopped { disk_full: bool, durable_seq: u64 },
    #[error("protocol error: ack for seq {seq} outside [{low}, {high}]")]
    AckOutOfRange { seq: u64, low: u64, high: u64 },
    #[error("protocol error: record expected at seq {seq}: {source}")]
    Record {
        seq: u64,
        source: crate::frame::DecodeError,
    },
    #[error("protocol error: record seq {seq} came before any Segment frame")]
    NoSegmentFrame { seq: u64 },
    #[error("protocol error: record seq {got} where seq {expected} was expected")]
    Seq { got: u64, expected: u64 },
}

/// Checks a source name: `[A-Za-z0-9._-]{1,64}`, and not `.` or `..`, so it
/// can never name anything outside the receiver's data directory.
pub fn validate_source(name: &str) -> Result<(), ProtocolError> {
    let ok = !name.is_empty()
        && name.len() <= SOURCE_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(ProtocolError::SourceName(name.to_string()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// 1 or 2.
    pub version: u16,
    pub capabilities: u16,
    pub source: String,
    pub shard: u32,
    /// The shipper's WAL id (none from a version-1 shipper).
    pub wal_id: crate::wal::segment::WalId,
}

impl Hello {
    /// A version-2 hello from the WAL `wal_id`.
    pub fn new(source: String, shard: u32, wal_id: crate::wal::segment::WalId) -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            capabilities: CAPABILITIES,
            source,
            shard,
            wal_id,
        }
    }

    /// The bytes of the hello (104 for version 2, 84 for version 1).
    pub fn encode(&self) -> Vec<u8> {
        validate_source(&self.source).expect("callers validate the source first");
        assert!(self.shard < SHARDS_MAX);
        let mut b = vec![
            0u8;
            if self.version >= 2 {
                HELLO_V2_BYTES
            } else {
                HELLO_BYTES
            }
        ];
        b[0..8].copy_from_slice(&HELLO_MAGIC);
        b[8..10].copy_from_slice(&self.version.to_le_bytes());
        b[10..12].copy_from_slice(&self.capabilities.to_le_bytes());
        b[12..16].copy_from_slice(&self.shard.to_le_bytes());
        b[16] = self.source.len() as u8;
        b[17..17 + self.source.len()].copy_from_slice(self.source.as_bytes());
        if self.version >= 2 {
            b[84..100].copy_from_slice(&self.wal_id.0.to_le_bytes());
        }
        b
    }

    /// The version a hello starting with `prefix` (its first HELLO_BYTES)
    /// claims, and how many more bytes it has: 0 for version 1, 20 for 2.
    /// Any other version is refused, naming both.
    pub fn rest_bytes(prefix: &[u8; HELLO_BYTES]) -> Result<usize, (WelcomeStatus, ProtocolError)> {
        if prefix[0..8] != HELLO_MAGIC {
            return Err((
                WelcomeStatus::BadHello,
                ProtocolError::BadMagic {
                    message: "hello",
                    peer: "shipper",
                },
            ));
        }
        match u16::from_le_bytes([prefix[8], prefix[9]]) {
            1 => Ok(0),
            2 => Ok(HELLO_V2_BYTES - HELLO_BYTES),
            theirs => Err((
                WelcomeStatus::VersionMismatch,
                ProtocolError::Version {
                    peer: "shipper",
                    us: "receiver",
                    theirs,
                    ours: PROTOCOL_VERSION,
                    hint: " (it reads versions 1 and 2)",
                },
            )),
        }
    }

    /// Decodes and checks a whole hello (version 1 or 2); the error names
    /// the first thing wrong.
    pub fn decode(b: &[u8]) -> Result<Hello, (WelcomeStatus, ProtocolError)> {
        let bad = |e: ProtocolError| (WelcomeStatus::BadHello, e);
        let prefix: &[u8; HELLO_BYTES] = b
            .get(..HELLO_BYTES)
            .and_then(|p| p.try_into().ok())
            .ok_or(bad(ProtocolError::Padding))?;
        let rest = Hello::rest_bytes(prefix)?;
        if b.len() != HELLO_BYTES + rest {
            return Err(bad(ProtocolError::Padding));
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        let capabilities = u16::from_le_bytes([b[10], b[11]]);
        let baseline_missing = capabilities & CAPABILITIES_V2_BASELINE != CAPABILITIES_V2_BASELINE;
        if version == 1 && capabilities != 0 || version >= 2 && baseline_missing {
            return Err(bad(ProtocolError::Capabilities(capabilities)));
        }
        let shard = u32::from_le_bytes(b[12..16].try_into().expect("4 bytes"));
        if shard >= SHARDS_MAX {
            return Err(bad(ProtocolError::ShardOutOfRange(shard)));
        }
        let len = b[16] as usize;
        if len == 0 || len > SOURCE_NAME_BYTES_MAX {
            return Err(bad(ProtocolError::SourceLength(len)));
        }
        if b[17 + len..HELLO_BYTES].iter().any(|&x| x != 0)
            || b.get(100..).is_some_and(|z| z.iter().any(|&x| x != 0))
        {
            return Err(bad(ProtocolError::Padding));
        }
        let source = String::from_utf8_lossy(&b[17..17 + len]);
        validate_source(&source).map_err(bad)?;
        let wal_id = if version >= 2 {
            crate::wal::segment::WalId(u128::from_le_bytes(
                b[84..100].try_into().expect("16 bytes"),
            ))
        } else {
            crate::wal::segment::WalId::default()
        };
        Ok(Hello {
            version,
            capabilities,
            source: source.to_string(),
            shard,
            wal_id,
        })
    }
}

/// What a welcome says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Welcome {
    pub version: u16,
    pub status: WelcomeStatus,
    pub capabilities: u16,
    pub durable_seq: u64,
    /// The WAL id the receiver holds the (source, shard) under (none: a new
    /// copy, or a version-1 welcome).
    pub wal_id: crate::wal::segment::WalId,
}

/// Encodes a welcome in `version` (that of the hello it answers).
pub fn encode_welcome(welcome: &Welcome) -> Vec<u8> {
    let mut b = vec![
        0u8;
        if welcome.version >= 2 {
            WELCOME_V2_BYTES
        } else {
            WELCOME_BYTES
        }
    ];
    b[0..8].copy_from_slice(&WELCOME_MAGIC);
    b[8..10].copy_from_slice(&welcome.version.to_le_bytes());
    b[10..12].copy_from_slice(&(welcome.status as u16).to_le_bytes());
    b[16..24].copy_from_slice(&welcome.durable_seq.to_le_bytes());
    if welcome.version >= 2 {
        b[12..14].copy_from_slice(&welcome.capabilities.to_le_bytes());
        b[24..40].copy_from_slice(&welcome.wal_id.0.to_le_bytes());
    }
    b
}

/// A welcome's version, from its first WELCOME_BYTES: how many more bytes
/// follow (0 for version 1, 16 for 2).
pub fn welcome_rest_bytes(prefix: &[u8; WELCOME_BYTES]) -> Result<usize, ProtocolError> {
    if prefix[0..8] != WELCOME_MAGIC {
        return Err(ProtocolError::BadMagic {
            message: "welcome",
            peer: "receiver",
        });
    }
    Ok(match u16::from_le_bytes([prefix[8], prefix[9]]) {
        2 => WELCOME_V2_BYTES - WELCOME_BYTES,
        _ => 0,
    })
}

/// Decodes a welcome (version 1 or 2).
pub fn decode_welcome(b: &[u8]) -> Result<Welcome, ProtocolError> {
    if b.len() < WELCOME_BYTES || b[0..8] != WELCOME_MAGIC {
        return Err(ProtocolError::BadMagic {
            message: "welcome",
            peer: "receiver",
        });
    }
    let version = u16::from_le_bytes([b[8], b[9]]);
    let raw_status = u16::from_le_bytes([b[10], b[11]]);
    let status =
        WelcomeStatus::from_u16(raw_status).ok_or(ProtocolError::UnknownStatus(raw_status))?;
    let v2 = version >= 2 && b.len() >= WELCOME_V2_BYTES;
    Ok(Welcome {
        version,
        status,
        capabilities: if v2 {
            u16::from_le_bytes([b[12], b[13]])
        } else {
            0
        },
        durable_seq: u64::from_le_bytes(b[16..24].try_into().expect("8 bytes")),
        wal_id: if v2 {
            crate::wal::segment::WalId(u128::from_le_bytes(b[24..40].try_into().expect("16 bytes")))
        } else {
            crate::wal::segment::WalId::default()
        },
    })
}

/// What a shipper makes of a welcome: the receiver's durable seq, or why
/// it cannot go on. `ours` is the shipper's WAL id.
pub fn accept_welcome(
    welcome: &Welcome,
    ours: crate::wal::segment::WalId,
) -> Result<u64, ProtocolError> {
    match welcome.status {
        WelcomeStatus::Ok if welcome.version == PROTOCOL_VERSION => Ok(welcome.durable_seq),
        WelcomeStatus::Ok | WelcomeStatus::VersionMismatch => Err(ProtocolError::Version {
            peer: "receiver",
            us: "shipper",
            theirs: welcome.version,
            ours: PROTOCOL_VERSION,
            hint: ": it cannot verify this WAL's salted segments, so upgrade the receiver",
        }),
        WelcomeStatus::OtherWal => Err(ProtocolError::OtherWal {
            theirs: welcome.wal_id,
            ours,
        }),
        other => Err(ProtocolError::Refused(other)),
    }
}

/// Encodes a Segment frame (see the module docs).
pub fn encode_segment_frame(salt: u64, first_seq: u64) -> Vec<u8> {
    let mut payload = [0u8; SEGMENT_FRAME_PAYLOAD_BYTES];
    payload[0..8].copy_from_slice(&salt.to_le_bytes());
    payload[8..16].copy_from_slice(&first_seq.to_le_bytes());
    crate::frame::encode_wire_frame(crate::frame::WIRE_FRAME_KIND_BITS, &payload)
}

/// Decodes a Segment frame's payload: (salt, first seq).
pub fn decode_segment_frame(payload: &[u8]) -> Result<(u64, u64), ProtocolError> {
    if payload.len() != SEGMENT_FRAME_PAYLOAD_BYTES {
        return Err(ProtocolError::SegmentFrame(payload.len()));
    }
    Ok((
        u64::from_le_bytes(payload[0..8].try_into().expect("8 bytes")),
        u64::from_le_bytes(payload[8..16].try_into().expect("8 bytes")),
    ))
}

/// Turns on TCP keepalive with ringship's timings (see the constants), so a
/// peer that vanished silently is noticed. Best effort: a failure only loses
/// the early notice.
pub fn set_keepalive(stream: &std::net::TcpStream) {
    use crate::constants::{TCP_KEEPALIVE_COUNT, TCP_KEEPALIVE_IDLE_S, TCP_KEEPALIVE_INTERVAL_S};
    use nix::sys::socket::{setsockopt, sockopt};
    let _ = setsockopt(stream, sockopt::KeepAlive, &true);
    let _ = setsockopt(stream, sockopt::TcpKeepIdle, &TCP_KEEPALIVE_IDLE_S);
    let _ = setsockopt(stream, sockopt::TcpKeepInterval, &TCP_KEEPALIVE_INTERVAL_S);
    let _ = setsockopt(stream, sockopt::TcpKeepCount, &TCP_KEEPALIVE_COUNT);
    let _ = setsockopt(
        stream,
        sockopt::TcpUserTimeout,
        &crate::constants::TCP_USER_TIMEOUT_MS,
    );
}

/// Longest reason an Abort frame carries.
pub const ABORT_REASON_BYTES_MAX: usize = 1024;

/// Encodes an Abort frame (see the module docs): the record format with
/// seq 0 and the reason as payload.
pub fn encode_abort(reason: &str) -> Vec<u8> {
    let mut reason = reason.as_bytes();
    if reason.len() > ABORT_REASON_BYTES_MAX {
        reason = &reason[..ABORT_REASON_BYTES_MAX];
    }
    crate::frame::encode_wire_frame(0, reason)
}

pub fn encode_ack(durable_seq: u64) -> [u8; ACK_BYTES] {
    let mut b = [0u8; ACK_BYTES];
    b[0..4].copy_from_slice(&ACK_MAGIC);
    b[8..16].copy_from_slice(&durable_seq.to_le_bytes());
    b
}

/// Why a receiver stops storing a connection's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    DiskFull = 1,
    Storage = 2,
}

/// The Stop notice a receiver sends, in place of an ack, when it can store
/// no more of a connection's records (its disk is full, its WAL failed),
/// before it closes the connection: the shipper logs why and retries with
/// backoff instead of at once. Layout (16 bytes, as an ack): `b"RSTP"`, the
/// reason (u32: 1 disk full, 2 another storage error), the durable seq the
/// receiver holds (u64).
pub fn encode_stop(reason: StopReason, durable_seq: u64) -> [u8; ACK_BYTES] {
    let mut b = [0u8; ACK_BYTES];
    b[0..4].copy_from_slice(&STOP_MAGIC);
    b[4..8].copy_from_slice(&(reason as u32).to_le_bytes());
    b[8..16].copy_from_slice(&durable_seq.to_le_bytes());
    b
}

/// Decodes an ack; a Stop notice is `ProtocolError::ReceiverStopped`.
pub fn decode_ack(b: &[u8]) -> Result<u64, ProtocolError> {
    if b.len() == ACK_BYTES && b[0..4] == STOP_MAGIC {
        let reason = u32::from_le_bytes(b[4..8].try_into().expect("4 bytes"));
        return Err(ProtocolError::ReceiverStopped {
            disk_full: reason == StopReason::DiskFull as u32,
            durable_seq: u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")),
        });
    }
    if b.len() != ACK_BYTES || b[0..4] != ACK_MAGIC || b[4..8] != [0; 4] {
        return Err(ProtocolError::BadAck);
    }
    Ok(u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::segment::WalId;

    #[test]
    fn hello_round_trips_and_rejects_hostile_names() {
        let h = Hello::new("web-01.example_a".into(), 3, WalId(77));
        assert_eq!(Hello::decode(&h.encode()), Ok(h));
        for name in ["..", ".", "a/b", "a\0", "ä", ""] {
            assert!(validate_source(name).is_err(), "{name:?}");
        }
        let mut b = Hello::new("ab".into(), 0, WalId(1)).encode();
        b[17] = b'/';
        assert!(Hello::decode(&b).is_err());
        b[17] = b'a';
        b[16] = 65;
        assert!(Hello::decode(&b).is_err());
    }

    /// A version-1 hello, byte for byte as a version-1 shipper sends it
    /// (84 bytes, no capabilities, no WAL id), is served.
    #[test]
    fn a_version_1_hello_is_read() {
        let mut v1 = [0u8; HELLO_BYTES];
        v1[0..8].copy_from_slice(b"RSHIPNET");
        v1[8..10].copy_from_slice(&1u16.to_le_bytes());
        v1[12..16].copy_from_slice(&2u32.to_le_bytes());
        v1[16] = 3;
        v1[17..20].copy_from_slice(b"old");
        assert_eq!(Hello::rest_bytes(&v1), Ok(0));
        let hello = Hello::decode(&v1).unwrap();
        assert_eq!(
            (hello.version, hello.shard, hello.source.as_str()),
            (1, 2, "old")
        );
        assert!(hello.wal_id.is_none());
        // Answered in version 1: 24 bytes a version-1 shipper can read.
        let welcome = Welcome {
            version: 1,
            status: WelcomeStatus::Ok,
            capabilities: 0,
            durable_seq: 9,
            wal_id: WalId::default(),
        };
        let bytes = encode_welcome(&welcome);
        assert_eq!(bytes.len(), WELCOME_BYTES);
        assert_eq!(&bytes[8..10], &1u16.to_le_bytes());
    }

    /// A future version is refused naming both versions.
    #[test]
    fn a_hello_from_a_future_version_is_refused_naming_both() {
        let mut b = Hello::new("x".into(), 0, WalId(1)).encode();
        b[8..10].copy_from_slice(&3u16.to_le_bytes());
        let (status, e) = Hello::decode(&b).unwrap_err();
        assert_eq!(status, WelcomeStatus::VersionMismatch);
        let text = e.to_string();
        assert!(
            text.contains("version 3") && text.contains("version 2"),
            "{text}"
        );
    }

    /// What a version-1 receiver answers a version-2 hello with (it checks
    /// the version first): the shipper stops, naming both versions.
    #[test]
    fn a_version_1_receiver_is_refused_naming_both() {
        let mut v1 = [0u8; WELCOME_BYTES];
        v1[0..8].copy_from_slice(b"RSHIPWLC");
        v1[8..10].copy_from_slice(&1u16.to_le_bytes());
        v1[10..12].copy_from_slice(&(WelcomeStatus::VersionMismatch as u16).to_le_bytes());
        assert_eq!(welcome_rest_bytes(&v1), Ok(0));
        let welcome = decode_welcome(&v1).unwrap();
        let text = accept_welcome(&welcome, WalId(1)).unwrap_err().to_string();
        assert!(
            text.contains("version 1") && text.contains("version 2"),
            "{text}"
        );
    }

    #[test]
    fn welcome_segment_frame_and_ack_round_trip() {
        let w = Welcome {
            version: 2,
            status: WelcomeStatus::Ok,
            capabilities: CAPABILITIES,
            durable_seq: 42,
            wal_id: WalId(5),
        };
        let decoded = decode_welcome(&encode_welcome(&w)).unwrap();
        assert_eq!(decoded, w);
        assert_eq!(accept_welcome(&decoded, WalId(5)), Ok(42));
        let other = Welcome {
            status: WelcomeStatus::OtherWal,
            ..w
        };
        assert!(matches!(
            accept_welcome(&other, WalId(6)),
            Err(ProtocolError::OtherWal { .. })
        ));
        let frame = encode_segment_frame(0xabc, 17);
        assert_eq!(
            decode_segment_frame(&frame[crate::constants::RECORD_HEADER_BYTES..]),
            Ok((0xabc, 17))
        );
        assert_eq!(decode_ack(&encode_ack(7)), Ok(7));
    }

    #[test]
    fn unknown_capabilities_are_ignored_and_the_baseline_is_required() {
        let mut newer = Hello::new("cap".into(), 0, WalId(5));
        newer.capabilities |= 0x8000;
        assert_eq!(Hello::decode(&newer.encode()), Ok(newer));
        let mut bare = Hello::new("cap".into(), 0, WalId(5));
        bare.capabilities = CAP_RECORD_KINDS;
        assert!(matches!(
            Hello::decode(&bare.encode()),
            Err((WelcomeStatus::BadHello, ProtocolError::Capabilities(_)))
        ));
    }

    /// Property tests of every decoder a peer's bytes reach: arbitrary
    /// bytes never panic, and what is encoded decodes to itself (the fuzz
    /// targets in `fuzz/` search the same decoders for longer).
    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn source() -> impl Strategy<Value = String> {
            "[a-zA-Z0-9._-]{1,64}"
                .prop_filter("a valid source name", |s| validate_source(s).is_ok())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn hostile_bytes_never_panic_a_decoder(
                bytes in proptest::collection::vec(any::<u8>(), 0..160),
            ) {
                let _ = Hello::decode(&bytes);
                if let Some(prefix) = bytes.get(..HELLO_BYTES) {
                    let _ = Hello::rest_bytes(prefix.try_into().unwrap());
                }
                let _ = decode_welcome(&bytes);
                if let Some(prefix) = bytes.get(..WELCOME_BYTES) {
                    let _ = welcome_rest_bytes(prefix.try_into().unwrap());
                }
                let _ = decode_segment_frame(&bytes);
                let _ = decode_ack(&bytes);
            }

            #[test]
            fn a_hello_with_a_valid_prefix_and_hostile_rest_never_panics(
                version in 0u16..4,
                caps: u16,
                name_len: u8,
                rest in proptest::collection::vec(any::<u8>(), 0..120),
            ) {
                let mut b = HELLO_MAGIC.to_vec();
                b.extend_from_slice(&version.to_le_bytes());
                b.extend_from_slice(&caps.to_le_bytes());
                b.extend_from_slice(&0u32.to_le_bytes());
                b.push(name_len);
                b.extend_from_slice(&rest);
                if let Ok(hello) = Hello::decode(&b) {
                    prop_assert!(validate_source(&hello.source).is_ok());
                    prop_assert!(hello.shard < SHARDS_MAX);
                }
            }

            #[test]
            fn a_hello_round_trips(
                name in source(),
                shard in 0u32..SHARDS_MAX,
                id: u128,
                v1: bool,
            ) {
                let mut hello = Hello::new(name, shard, WalId(id));
                if v1 {
                    hello.version = 1;
                    hello.capabilities = 0;
                    hello.wal_id = WalId::NONE;
                }
                prop_assert_eq!(Hello::decode(&hello.encode()), Ok(hello));
            }

            #[test]
            fn a_welcome_round_trips(
                status in 0u16..6,
                durable_seq in 0u64..crate::constants::SEQ_MAX,
                id: u128,
                v1: bool,
            ) {
                let welcome = Welcome {
                    version: if v1 { 1 } else { PROTOCOL_VERSION },
                    status: WelcomeStatus::from_u16(status).unwrap(),
                    capabilities: if v1 { 0 } else { CAPABILITIES },
                    durable_seq,
                    wal_id: if v1 { WalId::NONE } else { WalId(id) },
                };
                prop_assert_eq!(decode_welcome(&encode_welcome(&welcome)), Ok(welcome));
            }

            #[test]
            fn acks_and_segment_frames_round_trip(seq: u64, salt: u64, first_seq: u64) {
                prop_assert_eq!(decode_ack(&encode_ack(seq)), Ok(seq));
                prop_assert_eq!(
                    decode_ack(&encode_stop(StopReason::DiskFull, seq)),
                    Err(ProtocolError::ReceiverStopped { disk_full: true, durable_seq: seq })
                );
                let frame = encode_segment_frame(salt, first_seq);
                let payload = &frame[crate::constants::RECORD_HEADER_BYTES..];
                prop_assert_eq!(decode_segment_frame(payload), Ok((salt, first_seq)));
            }
        }
    }
}
