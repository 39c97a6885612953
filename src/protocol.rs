//! The wire protocol between a shipper and a receiver, over one TCP
//! connection per (source, shard). All integers are little-endian, and every
//! message but the data stream has a fixed size, so nothing is allocated on
//! a length read off the wire.
//!
//! ```text
//! shipper → receiver  Hello, HELLO_BYTES = 84
//!   0   8   magic          b"RSHIPNET"
//!   8   2   version        PROTOCOL_VERSION
//!   10  2   capabilities   0 (none defined yet; unknown bits are refused)
//!   12  4   shard          < SHARDS_MAX
//!   16  1   source_len     1 ..= SOURCE_NAME_BYTES_MAX
//!   17  64  source         [A-Za-z0-9._-], zero padded (not "." or "..")
//!   81  3   zero
//!
//! receiver → shipper  Welcome, WELCOME_BYTES = 24
//!   0   8   magic          b"RSHIPWLC"
//!   8   2   version
//!   10  2   status         0 ok; else a WelcomeStatus, and the receiver closes
//!   12  4   zero
//!   16  8   durable_seq    the last seq the receiver holds durably for
//!                          (source, shard); 0 for none
//!
//! shipper → receiver  Data: WAL records back to back, byte for byte as in the
//!   segments (see frame.rs), starting at durable_seq + 1 with no gap. The
//!   receiver checks each record's length bound before reading it, its
//!   crc32c, and that its seq is exactly the previous one + 1.
//!
//! shipper → receiver  Abort: a frame in the data stream with seq 0 (which no
//!   record has) and a valid crc; its payload (at most ABORT_REASON_BYTES_MAX)
//!   says why the shipper gives up, e.g. retention deleted what the receiver
//!   asked for. The receiver logs it and closes, so both sides say so.
//!
//! receiver → shipper  Ack, ACK_BYTES = 16, cumulative
//!   0   4   magic          b"RACK"
//!   4   4   zero
//!   8   8   durable_seq    every record up to here is durable at the receiver
//! ```

use crate::constants::{SHARDS_MAX, SOURCE_NAME_BYTES_MAX};

pub const HELLO_MAGIC: [u8; 8] = *b"RSHIPNET";
pub const WELCOME_MAGIC: [u8; 8] = *b"RSHIPWLC";
pub const ACK_MAGIC: [u8; 4] = *b"RACK";
pub const PROTOCOL_VERSION: u16 = 1;
pub const HELLO_BYTES: usize = 84;
pub const WELCOME_BYTES: usize = 24;
pub const ACK_BYTES: usize = 16;

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
}

impl WelcomeStatus {
    fn from_u16(v: u16) -> Option<WelcomeStatus> {
        Some(match v {
            0 => WelcomeStatus::Ok,
            1 => WelcomeStatus::BadHello,
            2 => WelcomeStatus::VersionMismatch,
            3 => WelcomeStatus::Busy,
            4 => WelcomeStatus::StorageError,
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
    #[error("protocol error: the {peer} speaks protocol version {theirs}, this side {ours}")]
    Version {
        peer: &'static str,
        theirs: u16,
        ours: u16,
    },
    #[error("protocol error: unknown capabilities {0:#06x}")]
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
    #[error("protocol error: unknown welcome status {0}")]
    UnknownStatus(u16),
    #[error("protocol error: bad ack")]
    BadAck,
    #[error("protocol error: ack for seq {seq} outside [{low}, {high}]")]
    AckOutOfRange { seq: u64, low: u64, high: u64 },
    #[error("protocol error: record expected at seq {seq}: {source}")]
    Record {
        seq: u64,
        source: crate::frame::DecodeError,
    },
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
    pub source: String,
    pub shard: u32,
}

impl Hello {
    pub fn encode(&self) -> [u8; HELLO_BYTES] {
        validate_source(&self.source).expect("callers validate the source first");
        assert!(self.shard < SHARDS_MAX);
        let mut b = [0u8; HELLO_BYTES];
        b[0..8].copy_from_slice(&HELLO_MAGIC);
        b[8..10].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.shard.to_le_bytes());
        b[16] = self.source.len() as u8;
        b[17..17 + self.source.len()].copy_from_slice(self.source.as_bytes());
        b
    }

    /// Decodes and checks a Hello; the error names the first thing wrong.
    pub fn decode(b: &[u8; HELLO_BYTES]) -> Result<Hello, (WelcomeStatus, ProtocolError)> {
        let bad = |e: ProtocolError| (WelcomeStatus::BadHello, e);
        if b[0..8] != HELLO_MAGIC {
            return Err(bad(ProtocolError::BadMagic {
                message: "hello",
                peer: "shipper",
            }));
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        if version != PROTOCOL_VERSION {
            return Err((
                WelcomeStatus::VersionMismatch,
                ProtocolError::Version {
                    peer: "shipper",
                    theirs: version,
                    ours: PROTOCOL_VERSION,
                },
            ));
        }
        let capabilities = u16::from_le_bytes([b[10], b[11]]);
        if capabilities != 0 {
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
        if b[17 + len..].iter().any(|&x| x != 0) {
            return Err(bad(ProtocolError::Padding));
        }
        let source = String::from_utf8_lossy(&b[17..17 + len]);
        validate_source(&source).map_err(bad)?;
        Ok(Hello {
            source: source.to_string(),
            shard,
        })
    }
}

pub fn encode_welcome(status: WelcomeStatus, durable_seq: u64) -> [u8; WELCOME_BYTES] {
    let mut b = [0u8; WELCOME_BYTES];
    b[0..8].copy_from_slice(&WELCOME_MAGIC);
    b[8..10].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    b[10..12].copy_from_slice(&(status as u16).to_le_bytes());
    b[16..24].copy_from_slice(&durable_seq.to_le_bytes());
    b
}

/// Decodes a Welcome: the receiver's durable seq, or why it refused.
pub fn decode_welcome(b: &[u8; WELCOME_BYTES]) -> Result<u64, ProtocolError> {
    if b[0..8] != WELCOME_MAGIC {
        return Err(ProtocolError::BadMagic {
            message: "welcome",
            peer: "receiver",
        });
    }
    let version = u16::from_le_bytes([b[8], b[9]]);
    if version != PROTOCOL_VERSION {
        return Err(ProtocolError::Version {
            peer: "receiver",
            theirs: version,
            ours: PROTOCOL_VERSION,
        });
    }
    let status = u16::from_le_bytes([b[10], b[11]]);
    match WelcomeStatus::from_u16(status) {
        Some(WelcomeStatus::Ok) => Ok(u64::from_le_bytes(b[16..24].try_into().expect("8 bytes"))),
        Some(other) => Err(ProtocolError::Refused(other)),
        None => Err(ProtocolError::UnknownStatus(status)),
    }
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
    let mut frame = vec![0u8; crate::frame::encoded_len_bytes(reason.len())];
    frame[4..8].copy_from_slice(&(reason.len() as u32).to_le_bytes());
    frame[24..].copy_from_slice(reason);
    let crc = crc32c::crc32c(&frame[4..]);
    frame[0..4].copy_from_slice(&crc.to_le_bytes());
    frame
}

pub fn encode_ack(durable_seq: u64) -> [u8; ACK_BYTES] {
    let mut b = [0u8; ACK_BYTES];
    b[0..4].copy_from_slice(&ACK_MAGIC);
    b[8..16].copy_from_slice(&durable_seq.to_le_bytes());
    b
}

pub fn decode_ack(b: &[u8]) -> Result<u64, ProtocolError> {
    assert_eq!(b.len(), ACK_BYTES);
    if b[0..4] != ACK_MAGIC || b[4..8] != [0; 4] {
        return Err(ProtocolError::BadAck);
    }
    Ok(u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips_and_rejects_hostile_names() {
        let h = Hello {
            source: "web-01.example_a".into(),
            shard: 3,
        };
        assert_eq!(Hello::decode(&h.encode()), Ok(h));
        for name in ["..", ".", "a/b", "a\0", "ä", ""] {
            assert!(validate_source(name).is_err(), "{name:?}");
        }
        let mut b = Hello {
            source: "ab".into(),
            shard: 0,
        }
        .encode();
        b[17] = b'/';
        assert!(Hello::decode(&b).is_err());
        b[17] = b'a';
        b[16] = 65;
        assert!(Hello::decode(&b).is_err());
    }

    #[test]
    fn welcome_and_ack_round_trip() {
        assert_eq!(
            decode_welcome(&encode_welcome(WelcomeStatus::Ok, 42)),
            Ok(42)
        );
        assert!(decode_welcome(&encode_welcome(WelcomeStatus::Busy, 0)).is_err());
        assert_eq!(decode_ack(&encode_ack(7)), Ok(7));
    }
}
