//! The write-ahead log of one shard: segments, group commit, recovery.
//!
//! - [`segment`]: file naming, the segment header, creation and preallocation.
//! - [`writer`]: appends and group commit on the core's io_uring; its output is
//!   the durable watermark. It also deletes acknowledged segments
//!   ([`WalWriter::retain`]).
//! - [`reader`]: a cursor by seq over the segments, for sinks and `dump`.
//! - [`recovery`]: the scan shared by the writer, `dump` and `verify`.

pub(crate) mod fsops;
pub mod lock;
pub mod reader;
pub mod recovery;
pub mod segment;
pub mod watermarks;
pub mod writer;

use std::io;
use std::path::PathBuf;

pub use reader::{DurableTail, ReadError, WalReader, Walked};
pub use recovery::{RecoveryError, ShardScan};
pub use writer::{Stage, WalWriter};

/// Whether a commit waits for fdatasync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Every commit is a write linked to an fdatasync; a record is durable
    /// when its fdatasync completes. The default.
    #[default]
    Fsync,
    /// No fdatasync: a record counts as "durable" once written to the page
    /// cache. For measuring the pipeline apart from the disk; a crash of the
    /// machine (not of the process) can lose records.
    None,
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Durability::Fsync => "fsync",
            Durability::None => "none",
        })
    }
}

/// True if `dir` holds a WAL: a shard directory with a segment in it.
pub fn holds_wal(dir: &std::path::Path) -> bool {
    recovery::list_shards(dir).is_ok_and(|shards| {
        shards.iter().any(|&shard| {
            std::fs::read_dir(segment::shard_dir(dir, shard)).is_ok_and(|entries| {
                entries.filter_map(Result::ok).any(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(segment::parse_segment_file_name)
                        .is_some()
                })
            })
        })
    })
}

/// How the WAL writes its segments: WAL configuration, chosen when it
/// opens, before any sink exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WalIo {
    /// Through the page cache. The default.
    #[default]
    Buffered,
    /// O_DIRECT, from registered, page-aligned commit buffers on the
    /// shard's ring, which a zero-copy sink can send the durable tail from.
    /// Falls back to buffered, with a warning, where the filesystem refuses
    /// O_DIRECT or RLIMIT_MEMLOCK is too low to pin the buffers.
    Direct,
}

/// An operating error of the WAL, with the operation and file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "disk full: could not reserve {needed_bytes} bytes for {}; free space, then restart: everything acknowledged as durable is intact",
        path.display()
    )]
    DiskFull { path: PathBuf, needed_bytes: u64 },
    #[error(
        "fdatasync failed on {} (shard {shard}, commit at byte offset {offset_bytes}): {source}. \
         This is fatal for the WAL: the kernel may have dropped the dirty pages, so the write is \
         not retried. Records up to seq {durable_seq} are durable",
        path.display()
    )]
    SyncFailed {
        path: PathBuf,
        shard: u32,
        offset_bytes: u64,
        durable_seq: u64,
        source: io::Error,
    },
    #[error("write failed on {} (shard {shard}, byte offset {offset_bytes}): {source}", path.display())]
    WriteFailed {
        path: PathBuf,
        shard: u32,
        offset_bytes: u64,
        source: io::Error,
    },
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
    #[error(transparent)]
    Locked(#[from] lock::LockError),
    #[error(
        "{}: this copy belongs to WAL {found}, but the source's WAL is {wanted}: two WALs claim the \
         same source and shard. Nothing was written; move {} aside to take the new WAL, or give \
         the source another name",
        path.display(),
        path.display()
    )]
    OtherWal {
        path: PathBuf,
        found: segment::WalId,
        wanted: segment::WalId,
    },
    #[error(transparent)]
    Frame(#[from] crate::frame::TooLarge),
}
