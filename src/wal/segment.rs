//! Segment files: naming, the header block, and creation.
//!
//! A WAL directory holds one sub-directory per shard, named by the shard
//! number in decimal (`DIR/0/`, `DIR/1/`, ...). Each shard directory holds
//! segments named by the seq of their first record, zero-padded so that a
//! lexical sort is a numeric one: `00000000000000000001.wal`.
//!
//! A segment is preallocated to [`SEGMENT_SIZE_BYTES`] with fallocate(2) and
//! starts with a one-page header; records follow back to back from
//! [`SEGMENT_HEADER_BYTES`]. The unwritten rest of the file reads as zeros.
//!
//! Header layout (little-endian), then zeros to the end of the page.
//! Version 2, which this build writes:
//!
//! ```text
//!  offset  size  field
//!  0       8     magic      b"RSHIPWAL"
//!  8       4     version    2
//!  12      4     shard
//!  16      8     first_seq  seq of the segment's first record
//!  24      16    wal_id     128 random bits made when the WAL was created
//!  40      8     salt       random per segment; every record's crc is seeded
//!                           with it (see frame.rs); 0 for none
//!  48      4     crc32c     over bytes 0 .. 48
//!  52      ..    zero padding, checked on read so that no stale bytes hide
//! ```
//!
//! Version 1, which this build reads: magic, version 1, shard, first_seq, then
//! the crc32c over bytes 0 .. 24 at offset 24; no WAL id, no salt. A version-1
//! build refuses a version-2 segment ("format version 2, this build reads 1").
//!
//! The WAL id tells two WALs apart that claim the same source name (two hosts
//! cloned from one image, a WAL recreated from nothing): a receiver never
//! merges them. The salt makes a reused segment's stale bytes unreadable.
//!
//! A segment is created as `NAME.tmp`, written, preallocated and synced, then
//! renamed into place and the directory synced: a segment under its final name
//! therefore always has a valid header, and a leftover `.tmp` is garbage from a
//! crash during creation.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::constants::{SEGMENT_HEADER_BYTES, SEGMENT_SIZE_BYTES, SEQ_FIRST, SEQ_MAX};
use crate::wal::WalError;

pub const SEGMENT_MAGIC: [u8; 8] = *b"RSHIPWAL";
/// The segment format this build writes.
pub const SEGMENT_VERSION: u32 = 2;
/// The formats this build reads.
pub const SEGMENT_VERSIONS_READ: [u32; 2] = [1, 2];
const SEGMENT_SUFFIX: &str = ".wal";
const SEGMENT_TMP_SUFFIX: &str = ".wal.tmp";
const V1_CRC_OFFSET: usize = 24;
const V2_CRC_OFFSET: usize = 48;

/// A WAL's identity: 128 random bits made when it is created. Zero means
/// none (a version-1 WAL before it was first opened by this build).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct WalId(pub u128);

impl WalId {
    /// No id.
    pub const NONE: WalId = WalId(0);

    /// A fresh, random id (from the kernel's random pool).
    pub fn random() -> std::io::Result<WalId> {
        Ok(WalId(u128::from_le_bytes(random_bytes()?)))
    }

    pub fn is_none(self) -> bool {
        self.0 == 0
    }
}

impl std::fmt::Display for WalId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Random bytes from getrandom(2) (the kernel's pool, never blocking once
/// it is seeded, which it is long before a WAL is opened).
pub fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    let mut file = File::open("/dev/urandom")?;
    std::io::Read::read_exact(&mut file, &mut bytes)?;
    Ok(bytes)
}

/// A fresh, non-zero segment salt.
pub fn random_salt() -> std::io::Result<u64> {
    loop {
        let salt = u64::from_le_bytes(random_bytes()?);
        if salt != 0 {
            return Ok(salt);
        }
    }
}

/// The decoded header of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// 1 or 2.
    pub version: u32,
    pub shard: u32,
    pub first_seq: u64,
    /// The WAL's id (version 2; none in version 1).
    pub wal_id: WalId,
    /// The crc salt of the segment's records (version 2; 0 for none).
    pub salt: u64,
}

impl SegmentHeader {
    /// A version-2 header.
    pub fn new(shard: u32, first_seq: u64, wal_id: WalId, salt: u64) -> SegmentHeader {
        SegmentHeader {
            version: SEGMENT_VERSION,
            shard,
            first_seq,
            wal_id,
            salt,
        }
    }

    /// The crc seed of the segment's records.
    pub fn seed(&self) -> crate::frame::Seed {
        crate::frame::Seed::of_salt(self.salt)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut block = vec![0u8; SEGMENT_HEADER_BYTES];
        block[0..8].copy_from_slice(&SEGMENT_MAGIC);
        block[8..12].copy_from_slice(&self.version.to_le_bytes());
        block[12..16].copy_from_slice(&self.shard.to_le_bytes());
        block[16..24].copy_from_slice(&self.first_seq.to_le_bytes());
        let crc_at = match self.version {
            1 => V1_CRC_OFFSET,
            2 => {
                block[24..40].copy_from_slice(&self.wal_id.0.to_le_bytes());
                block[40..48].copy_from_slice(&self.salt.to_le_bytes());
                V2_CRC_OFFSET
            }
            v => panic!("no segment format version {v}"),
        };
        let crc = crc32c::crc32c(&block[..crc_at]);
        block[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
        // Checked right before it goes to disk, as on every read.
        assert_eq!(SegmentHeader::decode(&block), Ok(*self));
        block
    }

    /// Decodes and checks a header block; the error says what is wrong. The
    /// magic, then the crc, then the fields: a damaged header is reported
    /// as damaged, not as a version from the future.
    pub fn decode(block: &[u8]) -> Result<SegmentHeader, String> {
        if block.len() < SEGMENT_HEADER_BYTES {
            return Err(format!(
                "file is {} bytes, shorter than the {SEGMENT_HEADER_BYTES}-byte header",
                block.len()
            ));
        }
        if block[0..8] != SEGMENT_MAGIC {
            return Err("bad magic: not a ringship segment".into());
        }
        let u32_at = |i: usize| u32::from_le_bytes(block[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(block[i..i + 8].try_into().expect("8 bytes"));
        let crc_ok = |at: usize| u32_at(at) == crc32c::crc32c(&block[..at]);
        let version = u32_at(8);
        let crc_at = match version {
            1 => V1_CRC_OFFSET,
            2 => V2_CRC_OFFSET,
            _ if crc_ok(V1_CRC_OFFSET) || crc_ok(V2_CRC_OFFSET) => {
                return Err(format!(
                    "format version {version}, this build reads versions {SEGMENT_VERSIONS_READ:?}: \
                     a newer ringship wrote it"
                ));
            }
            _ => return Err("the header is corrupt: its crc32c does not match".into()),
        };
        if !crc_ok(crc_at) {
            return Err(format!(
                "the header is corrupt: its crc32c is {:#010x}, {:#010x} stored",
                crc32c::crc32c(&block[..crc_at]),
                u32_at(crc_at)
            ));
        }
        if block[crc_at + 4..SEGMENT_HEADER_BYTES]
            .iter()
            .any(|&b| b != 0)
        {
            return Err("header padding is not zero".into());
        }
        let first_seq = u64_at(16);
        if !(SEQ_FIRST..=SEQ_MAX).contains(&first_seq) {
            return Err(format!("first seq {first_seq} is out of range"));
        }
        let (wal_id, salt) = if version == 2 {
            (
                WalId(u128::from_le_bytes(
                    block[24..40].try_into().expect("16 bytes"),
                )),
                u64_at(40),
            )
        } else {
            (WalId::default(), 0)
        };
        Ok(SegmentHeader {
            version,
            shard: u32_at(12),
            first_seq,
            wal_id,
            salt,
        })
    }
}

/// `DIR/<shard>`.
pub fn shard_dir(dir: &Path, shard: u32) -> PathBuf {
    dir.join(shard.to_string())
}

/// The file name of the segment whose first record is `first_seq`.
pub fn segment_file_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SEGMENT_SUFFIX}")
}

/// Parses a segment file name back to its first seq.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// True for the leftovers of a segment creation that did not finish.
pub fn is_tmp_segment_name(name: &str) -> bool {
    name.ends_with(SEGMENT_TMP_SUFFIX)
}

/// Creates, preallocates and syncs a new segment, and returns it open for
/// writing. When this returns, the segment and its directory entry are
/// durable, so recovery will always find a valid header.
///
/// A full disk shows up here, as ENOSPC from fallocate(2), and nowhere on the
/// append path: records only ever go into space reserved in advance.
pub fn create_segment(shard_dir: &Path, header: SegmentHeader) -> Result<File, WalError> {
    let name = segment_file_name(header.first_seq);
    let final_path = shard_dir.join(&name);
    let tmp_path = shard_dir.join(format!("{name}.tmp"));
    let io_err = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source: io::Error| WalError::Io { op, path, source }
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp_path)
        .map_err(io_err("create segment", &tmp_path))?;
    crate::wal::fsops::created(&tmp_path);
    let reserved = crate::wal::fsops::reserving_segment().map_err(|e| {
        if e.raw_os_error() == Some(libc::ENOSPC) {
            WalError::DiskFull {
                path: tmp_path.clone(),
                needed_bytes: SEGMENT_SIZE_BYTES,
            }
        } else {
            io_err("reserve segment", &tmp_path)(e)
        }
    });
    let prepared = reserved
        .and_then(|()| preallocate(&file, &tmp_path))
        .and_then(|()| {
            file.write_all_at(&header.encode(), 0)
                .map_err(io_err("write segment header", &tmp_path))?;
            // Synced in both durability modes: creation is rare, and a segment
            // whose header did not survive a power cut would make the WAL refuse
            // to open.
            file.sync_all()
                .map_err(io_err("fsync new segment", &tmp_path))
        });
    if let Err(e) = prepared {
        // Give the space back (a full disk is the usual cause); recovery
        // would remove the leftover anyway.
        let _ = std::fs::remove_file(&tmp_path);
        return Err(e);
    }
    crate::wal::fsops::rename(&tmp_path, &final_path)
        .map_err(io_err("rename segment", &final_path))?;
    sync_dir(shard_dir)?;
    Ok(file)
}

/// Reserves the whole segment on disk. ENOSPC becomes [`WalError::DiskFull`].
pub fn preallocate(file: &File, path: &Path) -> Result<(), WalError> {
    use nix::fcntl::{FallocateFlags, fallocate};
    match fallocate(file, FallocateFlags::empty(), 0, SEGMENT_SIZE_BYTES as i64) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::ENOSPC) => Err(WalError::DiskFull {
            path: path.to_path_buf(),
            needed_bytes: SEGMENT_SIZE_BYTES,
        }),
        Err(e) => Err(WalError::Io {
            op: "fallocate segment",
            path: path.to_path_buf(),
            source: e.into(),
        }),
    }
}

/// fsyncs a directory so that entries created or removed in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), WalError> {
    crate::wal::fsops::sync_dir(dir).map_err(|source| WalError::Io {
        op: "fsync directory",
        path: dir.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let header = SegmentHeader::new(3, 12345, WalId(0xfeed_beef << 64 | 7), 99);
        let block = header.encode();
        assert_eq!(SegmentHeader::decode(&block), Ok(header));
        for i in [0, 9, 13, 17, 25, 33, 41, 49, 100, SEGMENT_HEADER_BYTES - 1] {
            let mut bad = block.clone();
            bad[i] ^= 0x10;
            assert!(SegmentHeader::decode(&bad).is_err(), "byte {i}");
        }
    }

    #[test]
    fn version_1_headers_still_read() {
        let v1 = SegmentHeader {
            version: 1,
            shard: 0,
            first_seq: 1,
            wal_id: WalId::default(),
            salt: 0,
        };
        let block = v1.encode();
        assert_eq!(SegmentHeader::decode(&block), Ok(v1));
        // A version from the future whose crc checks is named as such; a
        // damaged version field is damage.
        let mut future = block.clone();
        future[8..12].copy_from_slice(&3u32.to_le_bytes());
        let crc = crc32c::crc32c(&future[..V1_CRC_OFFSET]);
        future[V1_CRC_OFFSET..V1_CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
        assert!(
            SegmentHeader::decode(&future)
                .unwrap_err()
                .contains("format version 3")
        );
        let mut damaged = block;
        damaged[9] ^= 0xaa;
        assert!(
            SegmentHeader::decode(&damaged)
                .unwrap_err()
                .contains("corrupt")
        );
    }

    #[test]
    fn names_sort_numerically() {
        assert_eq!(segment_file_name(1), "00000000000000000001.wal");
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert_eq!(parse_segment_file_name("1.wal"), None);
        assert_eq!(parse_segment_file_name("0000000000000000000x.wal"), None);
        assert!(segment_file_name(9) < segment_file_name(10));
    }
}
