//! Appends and group commit on the core's io_uring.
//!
//! Records are encoded into a *staging* buffer. Whenever a commit chain is
//! free and staging holds anything, staging is submitted at once as one chain:
//! a write of the whole buffer linked (IOSQE_IO_LINK) to an fdatasync
//! (IORING_FSYNC_DATASYNC). There is no timer and no minimum batch: the first
//! record after a quiet spell is committed alone, and everything that arrives
//! while [`COMMIT_CHAINS_MAX`] chains are in flight goes into the next commit.
//! In `--durability none`, a small commit after an idle spell is written
//! inline instead, with pwrite on the core ([`INLINE_COMMIT_BYTES_MAX`]):
//! [`WalWriter::submit`] then returns the advanced watermark itself.
//!
//! **The durability promise.** [`WalWriter::durable_seq`] is the highest seq
//! such that it and every record before it are on disk (their fdatasync
//! completed; in `--durability none` mode, their write completed). It only
//! moves forward, and it moves in the same loop iteration as the completion
//! (or inline commit) that advanced it: [`WalWriter::on_completion`] and
//! [`WalWriter::submit`] return the new value so the caller can wake a consumer
//! (the shipper) straight away.
//!
//! A commit never spans two segments. When the next record does not fit, the
//! writer stops staging, waits until every chain on the current segment has
//! completed (so a crash can never leave a later segment ahead of a torn
//! earlier one), and creates the next segment.
//!
//! A failed fdatasync is fatal: the kernel may already have dropped the dirty
//! pages, so retrying could report data durable that is gone ("Can
//! Applications Recover from fsync Failures?", ATC'20).
//!
//! **O_DIRECT segments** ([`WalWriter::enable_direct`], used by `--send-mode
//! zc`). Records are encoded straight into the ring's registered,
//! page-aligned buffers and written with WRITE_FIXED to a segment opened
//! O_DIRECT, so they never enter the page cache. O_DIRECT writes whole pages:
//! each commit begins with a copy of the partial page the previous one ended
//! in and is padded with zeros to a page boundary. Because consecutive
//! commits rewrite that shared page, only [`DIRECT_COMMIT_CHAINS_MAX`] (one)
//! chain is in flight at a time. A durable commit's buffer is then *kept*,
//! so the shipper can send the durable tail from it with SEND_ZC instead of
//! reading it back ([`WalWriter::retained`]); a kept buffer is reused for
//! filling once no send holds it.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::constants::{
    COMMIT_BUFFERS_COUNT, COMMIT_BYTES_MAX, COMMIT_CHAINS_MAX, DIRECT_COMMIT_BUFFERS_COUNT,
    DIRECT_COMMIT_CHAINS_MAX, DIRECT_SHIP_PINNED_MAX, INLINE_COMMIT_BYTES_MAX,
    INLINE_COMMIT_IDLE_US, PAGE_SIZE_BYTES, SEGMENT_SIZE_BYTES,
};
use crate::frame::{self, encoded_len_bytes};
use crate::frame::{Kind as RecordKind, Seed, Stamp};
use crate::io::{Completion, Io, Kind, Owner, Token};
use crate::latency::{Recorder, Window};
use crate::wal::lock::DirLock;
use crate::wal::recovery::{self, ShardScan};
use crate::wal::segment::{
    self, SEGMENT_VERSION, SegmentHeader, WalId, create_segment, preallocate, shard_dir,
};
use crate::wal::watermarks::{self, Marks, Recorded};
use crate::wal::{Durability, DurableTail, WalError};
use std::sync::Arc;

/// What [`WalWriter::submit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Submitted {
    /// The segment rotated: the caller may stage again.
    pub rotated: bool,
    /// A commit completed inline and moved the durable watermark here; the
    /// caller wakes consumers as for a completion that did.
    pub durable_seq: Option<u64>,
}

/// The outcome of [`WalWriter::stage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The record was given this seq and will be in the next commit.
    Staged(u64),
    /// No room until a commit completes or the segment rotates: call
    /// [`WalWriter::submit`] and retry after the next completions.
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChainState {
    Idle,
    /// Write (and linked sync) submitted.
    InFlight,
    /// A short write cancelled the linked sync; waiting for that sync's
    /// completion before resubmitting the rest.
    ShortWrite,
    Done,
}

struct Chain {
    state: ChainState,
    /// The commit's bytes: a heap buffer (page-cache writes; the kernel
    /// holds it between submit and the write's completion) or, for O_DIRECT
    /// segments, a registered buffer of the io.
    buf: Option<Vec<u8>>,
    fixed: Option<usize>,
    /// Set while the kernel holds the buffer (between submit and the write's
    /// completion).
    buf_in_kernel: bool,
    /// File offset of the buffer's first byte.
    file_offset_bytes: u64,
    /// Bytes to write from the buffer's start (O_DIRECT: padded to a page).
    write_bytes: usize,
    written_bytes: usize,
    /// Record data in the buffer: `[data_from, data_end)`. O_DIRECT commits
    /// start with `data_from` bytes carried from the previous commit's page.
    data_from: usize,
    data_end: usize,
    first_seq: u64,
    last_seq: u64,
    submitted: Instant,
}

impl Chain {
    fn idle() -> Chain {
        Chain {
            state: ChainState::Idle,
            buf: None,
            fixed: None,
            buf_in_kernel: false,
            file_offset_bytes: 0,
            write_bytes: 0,
            written_bytes: 0,
            data_from: 0,
            data_end: 0,
            first_seq: 0,
            last_seq: 0,
            submitted: Instant::now(),
        }
    }
}

/// O_DIRECT state: the WAL's commit buffers are registered buffers
/// `first..first + DIRECT_COMMIT_BUFFERS_COUNT` of the core's io.
struct Direct {
    /// The buffer being filled: `carried` bytes copied from the page the
    /// previous commit ended in, then staged records, `len` bytes in all.
    staging: usize,
    len: usize,
    carried: usize,
    /// Buffers no one uses.
    free: Vec<usize>,
    /// Durable commits kept for zero-copy sends, oldest first.
    kept: VecDeque<Kept>,
}

/// A durable commit still held in its registered buffer.
#[derive(Debug, Clone, Copy)]
struct Kept {
    index: usize,
    segment_first_seq: u64,
    /// File offset of the buffer's first byte (page-aligned).
    file_offset_bytes: u64,
    /// Bytes of record data from the buffer's start (carried bytes included).
    data_bytes: usize,
}

/// Durable bytes still in a registered commit buffer: bytes `[from, from +
/// len)` of buffer `index` are the segment's bytes at the offset asked for,
/// and end on a record boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retained {
    pub index: usize,
    pub from: usize,
    pub len: usize,
}

impl Direct {
    /// A buffer to fill next: a free one, else the oldest kept commit that no
    /// send holds. `None` only while sends hold every kept buffer, which
    /// [`WalWriter::retained`] keeps from happening.
    fn take_buffer(&mut self, io: &impl Io) -> Option<usize> {
        if let Some(index) = self.free.pop() {
            return Some(index);
        }
        let at = self.kept.iter().position(|k| !io.fixed_in_use(k.index))?;
        self.kept.remove(at).map(|k| k.index)
    }
}

/// Opens a segment for O_DIRECT writes.
fn open_direct(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

/// Counters and histograms of one WAL, merged into reports.
pub struct WalStats {
    pub commits: u64,
    pub records: u64,
    pub payload_bytes: u64,
    pub short_writes: u64,
    /// Of `commits`, those written inline (see [`INLINE_COMMIT_BYTES_MAX`]).
    pub inline_commits: u64,
    pub segments_created: u64,
    /// Acknowledged segments deleted by retention.
    pub segments_deleted: u64,
    /// Segments are written with O_DIRECT ([`WalWriter::enable_direct`]).
    pub direct_io: bool,
    /// Submit → fdatasync completion of each commit, ns.
    pub commit_latency_ns: Histogram<u64>,
    /// append_ts → durable of each record, ns.
    pub append_to_durable_ns: Recorder,
}

impl WalStats {
    fn new() -> WalStats {
        WalStats {
            commits: 0,
            records: 0,
            payload_bytes: 0,
            short_writes: 0,
            inline_commits: 0,
            segments_created: 0,
            segments_deleted: 0,
            direct_io: false,
            commit_latency_ns: crate::latency::histogram(),
            append_to_durable_ns: Recorder::new(),
        }
    }
}

/// The writer's directory lock, which closes the writer's watermarks (their
/// last write) before it is released: no write of this writer's may land
/// once another process owns the directory.
struct LockGuard {
    marks: Arc<Marks>,
    _lock: DirLock,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.marks.close();
    }
}

/// The WAL of one shard, driven by its core's io.
pub struct WalWriter {
    shard: u32,
    dir: PathBuf,
    durability: Durability,
    /// Who this WAL's completions go to.
    owner: Owner,
    file: File,
    segment_path: PathBuf,
    segment_first_seq: u64,
    /// File offset just past the last durable record of the current segment.
    durable_offset_bytes: u64,
    /// File offset where staging[0] will be written.
    write_offset_bytes: u64,
    next_seq: u64,
    staging: Vec<u8>,
    staging_first_seq: u64,
    spares: Vec<Vec<u8>>,
    chains: Vec<Chain>,
    /// Chain indices in submission order; the watermark advances from the
    /// front only.
    order: VecDeque<usize>,
    durable_seq: u64,
    rotate_pending: bool,
    /// First seqs of the shard's segments, oldest first, for retention.
    segments: VecDeque<u64>,
    /// This WAL's id.
    wal_id: WalId,
    /// The current segment's salt, and the crc seed it gives.
    salt: u64,
    seed: Seed,
    /// A receiver's replica: the salt the next records were sealed with on
    /// the source, which their segment here must have (the segment rotates
    /// to it once idle).
    wanted_salt: Option<u64>,
    /// A replica ([`WalWriter::follow_salt`] was called): its records carry
    /// crcs seeded with its source's salt, so a segment it rotates to by
    /// size keeps the salt rather than drawing a new one.
    follows: bool,
    /// The watermarks recorded beside the segments.
    marks: Arc<Marks>,
    /// One writer per shard directory; on drop it closes the marks (their
    /// last write) before it lets the lock go.
    _lock: LockGuard,
    /// (seq, append_ts_ns) of records as they become durable, for a
    /// consumer that does not read the records itself (the splice shipper
    /// measuring append → acked). Bounded; the oldest are dropped if the
    /// consumer falls behind.
    durable_feed: Option<VecDeque<(u64, u64)>>,
    /// Set once [`WalWriter::enable_direct`] switched to O_DIRECT segments;
    /// `staging` and `spares` are then unused.
    direct: Option<Direct>,
    /// When the last commit completed: an idle WAL may commit inline.
    last_commit_done: Option<Instant>,
    stats: WalStats,
}

impl WalWriter {
    /// Opens (recovering) or creates the WAL of `shard` under `dir`.
    ///
    /// Takes the shard directory's lock first: one process writes a WAL.
    /// Recovery cuts a torn tail and removes leftovers (see [`recovery`]),
    /// refuses lost data, then syncs what it kept, so every record it
    /// reports is durable. The returned scan says what was found.
    ///
    /// `identity` is the WAL id a receiver's replica must have, its
    /// source's: a WAL that exists under another id is refused before
    /// anything in it is repaired, and a new one is created with it.
    /// `Some(WalId::NONE)` is the replica of a version-1 shipper, which has
    /// no id to give: the replica keeps the id it has, or stays without one
    /// (so that the shipper's WAL id is taken once it is upgraded). `None`
    /// is a shipper's own WAL: it keeps its id, or makes a random one for a
    /// new WAL (or one a version-1 build wrote). Appends always go to a
    /// version-2 segment: a version-1 WAL gets a new segment when it is
    /// opened.
    pub fn open(
        dir: &Path,
        shard: u32,
        durability: Durability,
        owner: Owner,
    ) -> Result<(WalWriter, ShardScan), WalError> {
        WalWriter::open_as(dir, shard, durability, owner, None)
    }

    /// [`WalWriter::open`] with the WAL id it must have (see there).
    pub fn open_as(
        dir: &Path,
        shard: u32,
        durability: Durability,
        owner: Owner,
        identity: Option<WalId>,
    ) -> Result<(WalWriter, ShardScan), WalError> {
        let sdir = shard_dir(dir, shard);
        std::fs::create_dir_all(&sdir).map_err(|source| WalError::Io {
            op: "create shard directory",
            path: sdir.clone(),
            source,
        })?;
        let lock = DirLock::acquire(&sdir)?;
        if durability == Durability::Fsync {
            segment::sync_dir(dir)?;
        }
        recovery::drop_cached_tail(&sdir);
        let scan = recovery::scan_shard(&sdir, shard, |_| Ok(()))?;
        let known = [
            scan.wal_id,
            scan.recorded.map(|r| r.wal_id).unwrap_or_default(),
        ]
        .into_iter()
        .find(|id| !id.is_none());
        let wal_id = match (identity, known) {
            (Some(wanted), Some(found)) if !wanted.is_none() && wanted != found => {
                return Err(WalError::OtherWal {
                    path: sdir,
                    found,
                    wanted,
                });
            }
            (Some(wanted), _) if !wanted.is_none() => wanted,
            (_, Some(found)) => found,
            // A version-1 shipper's replica: no id to give it.
            (Some(_), None) => WalId::NONE,
            (None, None) => WalId::random().map_err(|source| WalError::Io {
                op: "make a WAL id",
                path: sdir.clone(),
                source,
            })?,
        };
        recovery::repair(&scan)?;

        if durability == Durability::Fsync {
            // Records that survived a process kill, or that a `--durability
            // none` run wrote, may be only in the page cache: make every
            // segment durable before reporting its records so. Syncing a
            // clean file costs next to nothing.
            for info in &scan.segments {
                File::open(&info.path)
                    .and_then(|f| f.sync_data())
                    .map_err(|source| WalError::SyncFailed {
                        path: info.path.clone(),
                        shard,
                        offset_bytes: 0,
                        durable_seq: 0,
                        source,
                    })?;
            }
        }
        let mut stats = WalStats::new();
        let new_salt = || {
            segment::random_salt().map_err(|source| WalError::Io {
                op: "make a segment salt",
                path: sdir.clone(),
                source,
            })
        };
        let (file, segment_path, segment_first_seq, write_offset_bytes, salt) =
            match scan.segments.last() {
                Some(last) if last.header.version >= SEGMENT_VERSION => {
                    let file = OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open(&last.path)
                        .map_err(|source| WalError::Io {
                            op: "open segment",
                            path: last.path.clone(),
                            source,
                        })?;
                    // Re-reserve the space a torn-tail cut released.
                    preallocate(&file, &last.path)?;
                    (
                        file,
                        last.path.clone(),
                        last.first_seq,
                        last.data_end_bytes,
                        last.header.salt,
                    )
                }
                // No segment yet, or a version-1 one: appends go to a new
                // version-2 segment (which replaces an empty version-1 one
                // of the same name).
                _ => {
                    let salt = new_salt()?;
                    let header = SegmentHeader::new(shard, scan.next_seq, wal_id, salt);
                    let file = create_segment(&sdir, header)?;
                    stats.segments_created += 1;
                    let path = sdir.join(segment::segment_file_name(scan.next_seq));
                    (
                        file,
                        path,
                        scan.next_seq,
                        crate::constants::SEGMENT_HEADER_BYTES as u64,
                        salt,
                    )
                }
            };
        // Record where the WAL stands now, before anything is appended: a
        // later recovery holds it to at least this.
        // The oldest segment starts after what retention deleted, which was
        // acknowledged: a WAL that recorded nothing yet (one a version-1
        // build wrote) gets that as its acked seq.
        let acked_floor = scan.segments.first().map_or(0, |s| s.first_seq - 1);
        let recorded = Recorded {
            wal_id,
            durable_seq: scan.next_seq - 1,
            acked_seq: scan.recorded.map_or(0, |r| r.acked_seq).max(acked_floor),
            page_cache_only: durability == Durability::None,
        };
        watermarks::write(&sdir, &recorded).map_err(|source| WalError::Io {
            op: "record the watermarks",
            path: sdir.clone(),
            source,
        })?;
        let marks = Marks::start(&sdir, recorded);
        let lock = LockGuard {
            marks: marks.clone(),
            _lock: lock,
        };

        let mut spares: Vec<Vec<u8>> = (0..COMMIT_BUFFERS_COUNT)
            .map(|_| Vec::with_capacity(COMMIT_BYTES_MAX))
            .collect();
        let staging = spares.pop().expect("COMMIT_BUFFERS_COUNT >= 1");
        let chains = (0..COMMIT_CHAINS_MAX).map(|_| Chain::idle()).collect();
        let writer = WalWriter {
            shard,
            dir: sdir,
            durability,
            owner,
            file,
            segment_path,
            segment_first_seq,
            durable_offset_bytes: write_offset_bytes,
            write_offset_bytes,
            next_seq: scan.next_seq,
            staging,
            staging_first_seq: scan.next_seq,
            spares,
            chains,
            order: VecDeque::with_capacity(COMMIT_CHAINS_MAX),
            durable_seq: scan.next_seq - 1,
            rotate_pending: false,
            segments: {
                let mut firsts: VecDeque<u64> = scan.segments.iter().map(|s| s.first_seq).collect();
                if firsts.back() != Some(&segment_first_seq) {
                    firsts.push_back(segment_first_seq);
                }
                firsts
            },
            wal_id,
            salt,
            seed: Seed::of_salt(salt),
            wanted_salt: None,
            follows: false,
            marks,
            _lock: lock,
            durable_feed: None,
            direct: None,
            last_commit_done: None,
            stats,
        };
        Ok((writer, scan))
    }

    /// Switches to O_DIRECT segments, with registered buffers `first_index
    /// ..first_index + DIRECT_COMMIT_BUFFERS_COUNT` of `ring` (each at least
    /// [`crate::constants::DIRECT_COMMIT_BUFFER_BYTES`]) as commit buffers.
    /// Call right after [`WalWriter::open`]. Returns false, leaving the WAL
    /// as it was, when the filesystem refuses O_DIRECT (tmpfs before Linux
    /// 6.6, for one); [`WalWriter::supports_direct`] asks first.
    pub fn enable_direct(
        &mut self,
        io: &mut impl Io,
        first_index: usize,
    ) -> Result<bool, WalError> {
        assert!(self.is_idle() && self.direct.is_none());
        let file = match open_direct(&self.segment_path) {
            Ok(file) => file,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(false),
            Err(source) => {
                return Err(WalError::Io {
                    op: "open segment (O_DIRECT)",
                    path: self.segment_path.clone(),
                    source,
                });
            }
        };
        // The first commit rewrites the page the data ends in: start the
        // buffer with that page's bytes so far.
        let carried = (self.write_offset_bytes % PAGE_SIZE_BYTES as u64) as usize;
        let buf = io.fixed_buf_mut(first_index).expect("unused at start-up");
        self.file
            .read_exact_at(
                &mut buf[..carried],
                self.write_offset_bytes - carried as u64,
            )
            .map_err(|source| WalError::Io {
                op: "read the segment's last page",
                path: self.segment_path.clone(),
                source,
            })?;
        self.file = file;
        self.direct = Some(Direct {
            staging: first_index,
            len: carried,
            carried,
            free: (first_index + 1..first_index + DIRECT_COMMIT_BUFFERS_COUNT)
                .rev()
                .collect(),
            kept: VecDeque::with_capacity(DIRECT_COMMIT_BUFFERS_COUNT),
        });
        self.staging = Vec::new();
        self.spares.clear();
        self.stats.direct_io = true;
        Ok(true)
    }

    /// Sends this WAL's completions to `owner` from now on (a receiver core
    /// gives each connection's WAL its own). Only while idle.
    pub fn set_owner(&mut self, owner: Owner) {
        assert!(
            self.is_idle(),
            "tokens of operations in flight would be lost"
        );
        self.owner = owner;
    }

    /// True if the current segment opens with O_DIRECT.
    pub fn supports_direct(&self) -> Result<bool, WalError> {
        match open_direct(&self.segment_path) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
            Err(source) => Err(WalError::Io {
                op: "open segment (O_DIRECT)",
                path: self.segment_path.clone(),
                source,
            }),
        }
    }

    /// Where the durable bytes at `offset_bytes` of the segment starting at
    /// `segment_first_seq` can be sent from without reading them back: a
    /// kept O_DIRECT commit buffer. `None` when no kept commit covers them,
    /// or when taking another buffer for a send would leave sends holding
    /// more than [`DIRECT_SHIP_PINNED_MAX`] (the caller reads them instead).
    pub fn retained(
        &self,
        io: &impl Io,
        segment_first_seq: u64,
        offset_bytes: u64,
    ) -> Option<Retained> {
        let direct = self.direct.as_ref()?;
        let pinned = direct
            .kept
            .iter()
            .filter(|k| io.fixed_in_use(k.index))
            .count();
        let kept = direct.kept.iter().rev().find(|k| {
            k.segment_first_seq == segment_first_seq
                && k.file_offset_bytes <= offset_bytes
                && offset_bytes < k.file_offset_bytes + k.data_bytes as u64
        })?;
        if !io.fixed_in_use(kept.index) && pinned >= DIRECT_SHIP_PINNED_MAX {
            return None;
        }
        let from = (offset_bytes - kept.file_offset_bytes) as usize;
        Some(Retained {
            index: kept.index,
            from,
            len: kept.data_bytes - from,
        })
    }

    /// Record bytes staged for the next commit.
    fn staged_bytes(&self) -> usize {
        match &self.direct {
            Some(d) => d.len - d.carried,
            None => self.staging.len(),
        }
    }

    /// Commit chains allowed in flight at once.
    fn chains_max(&self) -> usize {
        if self.direct.is_some() {
            DIRECT_COMMIT_CHAINS_MAX
        } else {
            COMMIT_CHAINS_MAX
        }
    }

    pub fn shard(&self) -> u32 {
        self.shard
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// The highest seq that is durable along with everything before it.
    pub fn durable_seq(&self) -> u64 {
        self.durable_seq
    }

    /// The seq the next staged record will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The segment currently appended to.
    pub fn segment_path(&self) -> &Path {
        &self.segment_path
    }

    /// The first seq of the segment currently appended to.
    pub fn segment_first_seq(&self) -> u64 {
        self.segment_first_seq
    }

    /// File offset just past the last durable record in the current segment:
    /// bytes below it may be read and shipped. Earlier segments are durable
    /// in full (rotation waits for them).
    pub fn durable_offset_bytes(&self) -> u64 {
        self.durable_offset_bytes
    }

    /// What a reader may read: see [`DurableTail`].
    pub fn durable_tail(&self) -> DurableTail {
        DurableTail {
            segment_first_seq: self.segment_first_seq,
            durable_seq: self.durable_seq,
            durable_offset_bytes: self.durable_offset_bytes,
        }
    }

    /// Deletes the oldest sealed segments whose every record the peer has
    /// acknowledged (`acked_seq` and below), keeping `keep` of them; returns
    /// how many it deleted. Progress never moves ahead of delivery: a record
    /// above `acked_seq` is never deleted, and neither is the segment being
    /// written. A segment that cannot be deleted is logged and kept.
    pub fn retain(&mut self, acked_seq: u64, keep: usize) -> u64 {
        // Segment i is fully acked when the next one starts at or below
        // acked + 1; the last segment is the one being written.
        let fully_acked = |segments: &VecDeque<u64>| {
            segments
                .iter()
                .skip(1)
                .take_while(|&&next_first| next_first <= acked_seq + 1)
                .count()
        };
        let mut deleted = 0;
        // The file must say these are acknowledged before they go, or a
        // crash right after would make them look lost to recovery.
        if fully_acked(&self.segments) > keep && !self.marks.persist_acked(acked_seq) {
            tracing::warn!(dir = %self.dir.display(), "retention waits: the acked seq could not be recorded");
            return 0;
        }
        while fully_acked(&self.segments) > keep {
            let first = self.segments[0];
            let path = self.dir.join(segment::segment_file_name(first));
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), "retention could not delete a segment: {e}");
                break;
            }
            tracing::info!(path = %path.display(), acked_seq, "retention deleted an acknowledged segment");
            self.segments.pop_front();
            deleted += 1;
        }
        if deleted > 0
            && let Err(e) = segment::sync_dir(&self.dir)
        {
            tracing::warn!("{e}");
        }
        self.stats.segments_deleted += deleted;
        deleted
    }

    /// Counts append → durable only inside `window` (see [`Window`]).
    pub fn set_latency_window(&mut self, window: Option<std::sync::Arc<Window>>) {
        self.stats.append_to_durable_ns.set_window(window);
    }

    pub fn stats(&self) -> &WalStats {
        &self.stats
    }

    /// Starts recording (seq, append_ts_ns) of each record as it becomes
    /// durable, keeping at most `capacity` (allocated here, once).
    pub fn enable_durable_feed(&mut self, capacity: usize) {
        self.durable_feed = Some(VecDeque::with_capacity(capacity));
    }

    /// Takes the records that became durable since the last call.
    pub fn drain_durable_feed(&mut self, mut f: impl FnMut(u64, u64)) {
        if let Some(feed) = self.durable_feed.as_mut() {
            for (seq, ts) in feed.drain(..) {
                f(seq, ts);
            }
        }
    }

    /// Consumes an idle writer, returning its statistics; records the
    /// final watermarks.
    pub fn into_stats(self) -> WalStats {
        assert!(self.is_idle(), "closing a WAL with commits in flight");
        self.stats
    }

    /// True when nothing is staged and no commit is in flight.
    pub fn is_idle(&self) -> bool {
        self.staged_bytes() == 0 && self.order.is_empty()
    }

    /// Encodes one data record into the next commit. Never allocates. `io`
    /// is the shard's: O_DIRECT commit buffers are its registered buffers.
    pub fn stage(
        &mut self,
        io: &mut impl Io,
        append_ts_ns: u64,
        payload: &[u8],
    ) -> Result<Stage, WalError> {
        self.stage_kind(io, append_ts_ns, RecordKind::Data, false, payload)
    }

    /// Encodes one record of `kind` into the next commit, marked `continued`
    /// when its payload goes on in the next record (a line split at the
    /// maximum record size). A control record takes a seq like any other.
    pub fn stage_kind(
        &mut self,
        io: &mut impl Io,
        append_ts_ns: u64,
        kind: RecordKind,
        continued: bool,
        payload: &[u8],
    ) -> Result<Stage, WalError> {
        frame::check_payload(payload)?;
        if let Some(full) = self.reserve(encoded_len_bytes(payload.len())) {
            return Ok(full);
        }
        let seq = self.next_seq;
        let stamp = Stamp {
            append_ts_ns,
            kind,
            continued,
            seed: self.seed,
        };
        match self.direct.as_mut() {
            None => frame::encode_stamped_into(&mut self.staging, seq, stamp, payload),
            Some(d) => {
                let buf = io
                    .fixed_buf_mut(d.staging)
                    .expect("staging is never in flight");
                d.len += frame::encode_at(&mut buf[d.len..], seq, stamp, payload);
            }
        }
        self.staged(payload.len())
    }

    /// Stages a record that is already encoded and verified (the receiver's
    /// path: the bytes go to disk exactly as they came off the wire). Its
    /// seq must be the next one, which the receiver checked.
    pub fn stage_encoded(&mut self, io: &mut impl Io, record: &[u8]) -> Result<Stage, WalError> {
        let header = frame::Header::read(record).expect("a verified record");
        let len = header.record_len_bytes();
        assert_eq!(len, record.len());
        assert_eq!(
            header.seq, self.next_seq,
            "the receiver checks seq continuity"
        );
        if let Some(full) = self.reserve(len) {
            return Ok(full);
        }
        match self.direct.as_mut() {
            None => self.staging.extend_from_slice(record),
            Some(d) => {
                let buf = io
                    .fixed_buf_mut(d.staging)
                    .expect("staging is never in flight");
                buf[d.len..d.len + len].copy_from_slice(record);
                d.len += len;
            }
        }
        self.staged(len - crate::constants::RECORD_HEADER_BYTES)
    }

    /// Checks there is room for `need` more bytes in this commit and this
    /// segment; `Some(Full)` if not.
    fn reserve(&mut self, need: usize) -> Option<Stage> {
        if self.rotate_pending {
            return Some(Stage::Full);
        }
        let staged = self.staged_bytes();
        let end = self.write_offset_bytes + (staged + need) as u64;
        if end > SEGMENT_SIZE_BYTES {
            self.rotate_pending = true;
            return Some(Stage::Full);
        }
        if staged + need > COMMIT_BYTES_MAX {
            return Some(Stage::Full);
        }
        if staged == 0 {
            self.staging_first_seq = self.next_seq;
        }
        None
    }

    fn staged(&mut self, payload_len: usize) -> Result<Stage, WalError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.stats.records += 1;
        self.stats.payload_bytes += payload_len as u64;
        Ok(Stage::Staged(seq))
    }

    /// Submits staged records if a chain is free (or, in `--durability
    /// none` after an idle spell, writes them inline: see
    /// [`INLINE_COMMIT_BYTES_MAX`]), and rotates the segment once a pending
    /// rotation's barrier is reached.
    pub fn submit(&mut self, io: &mut impl Io) -> Result<Submitted, WalError> {
        let mut submitted = Submitted::default();
        if self.staged_bytes() > 0
            && let Some(index) = self.chains[..self.chains_max()]
                .iter()
                .position(|c| c.state == ChainState::Idle)
        {
            if self.inline_ok() {
                submitted.durable_seq = self.commit_inline(io, index)?;
            } else {
                self.submit_chain(io, index);
            }
        }
        if self.rotate_pending && self.staged_bytes() == 0 && self.order.is_empty() {
            self.rotate()?;
            submitted.rotated = true;
        }
        Ok(submitted)
    }

    /// A small `--durability none` commit after an idle spell: nothing is in
    /// flight, so a write on the core beats a hand-off to io-wq.
    fn inline_ok(&self) -> bool {
        self.durability == Durability::None
            && self.direct.is_none()
            && self.order.is_empty()
            && self.staging.len() <= INLINE_COMMIT_BYTES_MAX
            && self
                .last_commit_done
                .is_none_or(|t| t.elapsed() >= Duration::from_micros(INLINE_COMMIT_IDLE_US))
    }

    /// Writes staging with pwrite on this thread, as chain `index`, and
    /// moves the watermark over it.
    fn commit_inline(&mut self, io: &mut impl Io, index: usize) -> Result<Option<u64>, WalError> {
        let submitted = Instant::now();
        let offset = self.write_offset_bytes;
        // Staging is swapped out only once written, so a failed write leaves
        // the WAL as it was: the records still staged, nothing durable.
        if let Err(source) = io.write_now(&self.file, &self.staging, offset) {
            if source.raw_os_error() == Some(libc::ENOSPC) {
                return Err(WalError::DiskFull {
                    path: self.segment_path.clone(),
                    needed_bytes: self.staging.len() as u64,
                });
            }
            return Err(WalError::WriteFailed {
                path: self.segment_path.clone(),
                shard: self.shard,
                offset_bytes: offset,
                source,
            });
        }
        let spare = self.spares.pop().expect("a spare buffer per idle chain");
        let buf = std::mem::replace(&mut self.staging, spare);
        self.stats.inline_commits += 1;
        self.chains[index] = Chain {
            state: ChainState::Done,
            submitted,
            file_offset_bytes: offset,
            write_bytes: buf.len(),
            written_bytes: buf.len(),
            data_end: buf.len(),
            first_seq: self.staging_first_seq,
            last_seq: self.next_seq - 1,
            buf: Some(buf),
            ..Chain::idle()
        };
        self.write_offset_bytes += self.chains[index].data_end as u64;
        self.order.push_back(index);
        self.stats.commits += 1;
        Ok(self.advance(io))
    }

    fn submit_chain(&mut self, io: &mut impl Io, index: usize) {
        let mut chain = Chain {
            state: ChainState::InFlight,
            buf_in_kernel: true,
            first_seq: self.staging_first_seq,
            last_seq: self.next_seq - 1,
            ..Chain::idle()
        };
        let buf = match self.direct.as_mut() {
            None => {
                let spare = self.spares.pop().expect("a spare buffer per idle chain");
                let buf = std::mem::replace(&mut self.staging, spare);
                chain.file_offset_bytes = self.write_offset_bytes;
                chain.write_bytes = buf.len();
                chain.data_end = buf.len();
                Some(buf)
            }
            Some(d) => {
                // Sends hold every kept buffer: submit once one is let go
                // (its notification is a completion, so the loop comes back).
                let Some(next) = d.take_buffer(io) else {
                    return;
                };
                let (index, data_end) = (d.staging, d.len);
                let write_bytes = data_end.next_multiple_of(PAGE_SIZE_BYTES);
                let buf = io.fixed_buf_mut(index).expect("staging is never in flight");
                buf[data_end..write_bytes].fill(0);
                // The next commit starts by rewriting this one's last page.
                let carried = data_end % PAGE_SIZE_BYTES;
                let mut page = [0u8; PAGE_SIZE_BYTES];
                page[..carried].copy_from_slice(&buf[data_end - carried..data_end]);
                io.fixed_buf_mut(next).expect("taken buffers are unused")[..carried]
                    .copy_from_slice(&page[..carried]);
                chain.fixed = Some(index);
                chain.file_offset_bytes = self.write_offset_bytes - d.carried as u64;
                chain.write_bytes = write_bytes;
                chain.data_from = d.carried;
                chain.data_end = data_end;
                (d.staging, d.len, d.carried) = (next, carried, carried);
                None
            }
        };
        self.write_offset_bytes += (chain.data_end - chain.data_from) as u64;
        self.chains[index] = chain;
        self.order.push_back(index);
        self.stats.commits += 1;
        self.push_chain(io, index, buf);
    }

    fn push_chain(&mut self, io: &mut impl Io, index: usize, buf: Option<Vec<u8>>) {
        let chain = &self.chains[index];
        let write_token = Token::new(self.owner, Kind::WalWrite, index as u32);
        let sync_token = (self.durability == Durability::Fsync).then_some(Token::new(
            self.owner,
            Kind::WalSync,
            index as u32,
        ));
        // Ring slots are sized for every chain at once (constants.rs), so a
        // full ring here is a programmer error.
        let pushed = match (buf, chain.fixed) {
            (Some(buf), None) => io
                .write_then_datasync(
                    &self.file,
                    buf,
                    chain.written_bytes,
                    chain.file_offset_bytes,
                    write_token,
                    sync_token,
                )
                .is_ok(),
            (None, Some(fixed)) => io
                .write_fixed_then_datasync(
                    &self.file,
                    fixed,
                    chain.written_bytes,
                    chain.write_bytes,
                    chain.file_offset_bytes,
                    write_token,
                    sync_token,
                )
                .is_ok(),
            _ => unreachable!("a chain has a heap or a registered buffer"),
        };
        assert!(
            pushed,
            "ring full: RING_SLOTS_MAX must cover every commit chain"
        );
    }

    /// True if `token` belongs to this WAL.
    pub fn owns(&self, token: Token) -> bool {
        token.owner == self.owner && matches!(token.kind, Kind::WalWrite | Kind::WalSync)
    }

    /// Handles one completion of this WAL. Returns the new durable seq when
    /// the watermark advanced, so the caller can wake consumers at once.
    pub fn on_completion(
        &mut self,
        io: &mut impl Io,
        completion: Completion,
    ) -> Result<Option<u64>, WalError> {
        assert!(self.owns(completion.token));
        let index = completion.token.index as usize;
        let kind = completion.token.kind;
        assert!(index < COMMIT_CHAINS_MAX);
        let result = completion.result;
        if kind == Kind::WalWrite {
            let chain = &mut self.chains[index];
            assert!(matches!(chain.state, ChainState::InFlight));
            assert!(chain.buf_in_kernel);
            // A heap buffer comes back with the completion; a registered one
            // was never given away.
            assert_eq!(completion.buf.is_some(), chain.fixed.is_none());
            chain.buf = completion.buf;
            chain.buf_in_kernel = false;
            let remaining = chain.write_bytes - chain.written_bytes;
            if result <= 0 {
                let source = if result == 0 {
                    io::Error::new(io::ErrorKind::WriteZero, "write made no progress")
                } else {
                    io::Error::from_raw_os_error(-result)
                };
                let offset_bytes = chain.file_offset_bytes + chain.written_bytes as u64;
                if result == -libc::ENOSPC {
                    return Err(WalError::DiskFull {
                        path: self.segment_path.clone(),
                        needed_bytes: remaining as u64,
                    });
                }
                return Err(WalError::WriteFailed {
                    path: self.segment_path.clone(),
                    shard: self.shard,
                    offset_bytes,
                    source,
                });
            }
            let n = result as usize;
            assert!(n <= remaining);
            chain.written_bytes += n;
            if n < remaining {
                self.stats.short_writes += 1;
                match self.durability {
                    // The linked sync was cancelled; its completion follows.
                    Durability::Fsync => chain.state = ChainState::ShortWrite,
                    Durability::None => self.resubmit(io, index),
                }
                return Ok(None);
            }
            if self.durability == Durability::None {
                self.chains[index].state = ChainState::Done;
            } else if broken::acks_before_sync() && self.order.front() == Some(&index) {
                // The broken variant: reports the commit durable now, its
                // fdatasync still to come.
                return Ok(Some(self.chains[index].last_seq));
            }
        } else {
            let chain = &mut self.chains[index];
            match chain.state {
                ChainState::ShortWrite if result == -libc::ECANCELED => {
                    self.resubmit(io, index);
                    return Ok(None);
                }
                ChainState::InFlight | ChainState::ShortWrite if result < 0 => {
                    // What the WAL reported may not all be on the disk any
                    // more: the recorded watermarks stay where they were.
                    self.marks.freeze();
                    return Err(WalError::SyncFailed {
                        path: self.segment_path.clone(),
                        shard: self.shard,
                        offset_bytes: chain.file_offset_bytes,
                        durable_seq: self.durable_seq,
                        source: io::Error::from_raw_os_error(-result),
                    });
                }
                ChainState::InFlight => {
                    // Links guarantee the write completed in full first.
                    assert!(!chain.buf_in_kernel);
                    assert_eq!(chain.written_bytes, chain.write_bytes);
                    chain.state = ChainState::Done;
                }
                state => panic!("sync completion in state {state:?}"),
            }
        }
        Ok(self.advance(io))
    }

    fn resubmit(&mut self, io: &mut impl Io, index: usize) {
        let chain = &mut self.chains[index];
        if chain.fixed.is_some() {
            // O_DIRECT takes whole pages: rewrite the partly written one
            // (its bytes are the same) rather than start mid-page.
            chain.written_bytes -= chain.written_bytes % PAGE_SIZE_BYTES;
        }
        let buf = chain.buf.take();
        chain.state = ChainState::InFlight;
        chain.buf_in_kernel = true;
        self.push_chain(io, index, buf);
    }

    /// Moves the watermark over every completed chain at the front.
    fn advance(&mut self, io: &impl Io) -> Option<u64> {
        let before = self.durable_seq;
        let now_ns = frame::now_ns();
        while let Some(&index) = self.order.front() {
            if self.chains[index].state != ChainState::Done {
                break;
            }
            self.order.pop_front();
            let chain = &mut self.chains[index];
            let heap = chain.buf.take();
            let buf = match (&heap, chain.fixed) {
                (Some(heap), None) => heap.as_slice(),
                (None, Some(fixed)) => io.fixed_buf(fixed),
                _ => unreachable!("a chain has a heap or a registered buffer"),
            };
            assert_eq!(
                chain.first_seq,
                self.durable_seq + 1,
                "commits complete in order"
            );
            let elapsed_ns = chain.submitted.elapsed().as_nanos() as u64;
            self.stats
                .commit_latency_ns
                .saturating_record(elapsed_ns.max(1));
            // This process encoded these records: their bounds are
            // checked, their crcs trusted.
            for record in frame::Records::trusted(&buf[chain.data_from..chain.data_end]) {
                let record = record.expect("a commit buffer holds whole records");
                let (seq, ts) = (record.seq, record.append_ts_ns);
                debug_assert!(seq >= chain.first_seq && seq <= chain.last_seq);
                self.stats.append_to_durable_ns.record(ts, now_ns);
                if let Some(feed) = self.durable_feed.as_mut() {
                    if feed.len() == feed.capacity() {
                        feed.pop_front();
                    }
                    feed.push_back((seq, ts));
                }
            }
            self.durable_seq = chain.last_seq;
            self.marks.set_durable(chain.last_seq);
            self.durable_offset_bytes = chain.file_offset_bytes + chain.data_end as u64;
            self.last_commit_done = Some(Instant::now());
            chain.state = ChainState::Idle;
            match (heap, self.direct.as_mut()) {
                (Some(mut heap), _) => {
                    heap.clear();
                    self.spares.push(heap);
                }
                (None, Some(direct)) => direct.kept.push_back(Kept {
                    index: chain.fixed.take().expect("a registered buffer"),
                    segment_first_seq: self.segment_first_seq,
                    file_offset_bytes: chain.file_offset_bytes,
                    data_bytes: chain.data_end,
                }),
                (None, None) => unreachable!("registered buffers only in O_DIRECT mode"),
            }
        }
        (self.durable_seq != before).then_some(self.durable_seq)
    }

    fn rotate(&mut self) -> Result<(), WalError> {
        assert!(self.order.is_empty() && self.staged_bytes() == 0);
        // Taken only once the new segment exists: a rotation that failed
        // (a full disk) leaves the WAL wanting the same salt.
        let salt = match self.wanted_salt {
            Some(salt) => salt,
            None if self.follows => self.salt,
            None => segment::random_salt().map_err(|source| WalError::Io {
                op: "make a segment salt",
                path: self.dir.clone(),
                source,
            })?,
        };
        // A segment that holds no record yet is replaced, not followed: its
        // name (its first seq) is the new one's too.
        let replaces = self.segment_first_seq == self.next_seq;
        let header = SegmentHeader::new(self.shard, self.next_seq, self.wal_id, salt);
        if replaces {
            // Deleted first, so that the replacement needs no more space
            // than it: a replica taking its source's salt on a disk with
            // room for one segment must not fail. (A crash in between
            // leaves no segment for a seq that has no record: nothing is
            // lost, and the next open creates one.) The open file goes
            // first, or its space would stay allocated.
            self.file = File::open(&self.dir).map_err(|source| WalError::Io {
                op: "open shard directory",
                path: self.dir.clone(),
                source,
            })?;
            match std::fs::remove_file(&self.segment_path) {
                // Gone already: an earlier attempt removed it, then failed.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                other => other.map_err(|source| WalError::Io {
                    op: "remove an empty segment",
                    path: self.segment_path.clone(),
                    source,
                })?,
            }
        }
        // The old file closes here; no operation on it is in flight.
        self.file = create_segment(&self.dir, header)?;
        self.wanted_salt = None;
        self.segment_path = self.dir.join(segment::segment_file_name(self.next_seq));
        if let Some(direct) = self.direct.as_mut() {
            // Record data starts page-aligned (SEGMENT_HEADER_BYTES): nothing
            // to carry.
            (direct.len, direct.carried) = (0, 0);
            self.file = open_direct(&self.segment_path).map_err(|source| WalError::Io {
                op: "open segment (O_DIRECT)",
                path: self.segment_path.clone(),
                source,
            })?;
        }
        self.segment_first_seq = self.next_seq;
        if !replaces {
            self.segments.push_back(self.next_seq);
        }
        self.salt = salt;
        self.seed = Seed::of_salt(salt);
        self.write_offset_bytes = crate::constants::SEGMENT_HEADER_BYTES as u64;
        self.durable_offset_bytes = self.write_offset_bytes;
        self.rotate_pending = false;
        self.stats.segments_created += 1;
        Ok(())
    }

    /// A receiver's replica: the records that follow were sealed on the
    /// source in a segment with `salt`, and go, byte for byte, into a
    /// segment with the same salt here. Once what is staged is durable, the
    /// WAL moves to a new segment with it (replacing the current one if it
    /// holds no record); until then [`WalWriter::stage_encoded`] says Full.
    pub fn follow_salt(&mut self, salt: u64) {
        self.follows = true;
        self.wanted_salt = (salt != self.salt).then_some(salt);
        if self.wanted_salt.is_some() {
            self.rotate_pending = true;
        }
    }

    /// This WAL's id.
    pub fn wal_id(&self) -> WalId {
        self.wal_id
    }

    /// The current segment's salt (0: none).
    pub fn salt(&self) -> u64 {
        self.salt
    }

    /// Records that the sink's destination acknowledged `seq`, for the
    /// watermarks file.
    pub fn note_acked(&self, seq: u64) {
        self.marks.set_acked(seq);
    }
}

/// The simulator's deliberately broken variant (`crate::sim`): a test
/// switch, per thread, that takes a commit as durable when its *write*
/// completes, before its fdatasync. The simulator must catch it; release
/// builds do not have the switch.
pub(crate) mod broken {
    #[cfg(test)]
    thread_local! {
        static ACK_BEFORE_SYNC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// True while the broken variant is on, on this thread.
    #[inline]
    pub(crate) fn acks_before_sync() -> bool {
        #[cfg(test)]
        return ACK_BEFORE_SYNC.with(|c| c.get());
        #[cfg(not(test))]
        false
    }

    /// Turns the broken variant on or off, on this thread.
    #[cfg(test)]
    pub(crate) fn set_acks_before_sync(on: bool) {
        ACK_BEFORE_SYNC.with(|c| c.set(on));
    }
}

impl WalWriter {
    /// Ends this writer as a kill -9 would: no last write of its
    /// watermarks (the simulator's crash).
    #[cfg(test)]
    pub(crate) fn crash(self) {
        self.marks.freeze();
    }
}

/// Group commit driven through the I/O seam by a fake that completes each
/// operation as the test says: the paths a real disk seldom takes.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::constants::DIRECT_COMMIT_BUFFER_BYTES;
    use crate::io::fake::{FakeIo, What};

    const WRITE0: Token = Token::new(Owner::Wal, Kind::WalWrite, 0);
    const SYNC0: Token = Token::new(Owner::Wal, Kind::WalSync, 0);

    fn open(dir: &Path, durability: Durability) -> WalWriter {
        WalWriter::open(dir, 0, durability, Owner::Wal).unwrap().0
    }

    /// Stages `n` records of `len` bytes and submits them as one commit.
    fn commit(wal: &mut WalWriter, io: &mut FakeIo, n: usize, len: usize) -> usize {
        let payload = vec![b'x'; len];
        for _ in 0..n {
            assert!(matches!(
                wal.stage(io, 1, &payload).unwrap(),
                Stage::Staged(_)
            ));
        }
        assert_eq!(wal.submit(io).unwrap(), Submitted::default());
        n * encoded_len_bytes(len)
    }

    fn write_of(io: &FakeIo, token: Token) -> (u64, usize) {
        match io.op(token).what {
            What::Write { offset, len } => (offset, len),
            ref other => panic!("{token:?} is {other:?}, not a write"),
        }
    }

    #[test]
    fn a_short_write_is_resubmitted_after_its_cancelled_sync() {
        let tmp = tempfile::tempdir().unwrap();
        let mut io = FakeIo::default();
        let mut wal = open(tmp.path(), Durability::Fsync);
        let bytes = commit(&mut wal, &mut io, 3, 100);
        let (offset, len) = write_of(&io, WRITE0);
        assert_eq!(len, bytes);
        assert_eq!(io.op(SYNC0).what, What::Sync, "a sync is linked");

        // The kernel writes part of it; the linked sync is cancelled.
        let short = (bytes / 2) as i32;
        let done = io.complete(WRITE0, short);
        assert_eq!(wal.on_completion(&mut io, done).unwrap(), None);
        assert_eq!(wal.stats().short_writes, 1);
        assert!(
            io.ops.iter().all(|o| o.token != WRITE0),
            "waits for the sync"
        );
        let done = io.complete(SYNC0, -libc::ECANCELED);
        assert_eq!(wal.on_completion(&mut io, done).unwrap(), None);

        // The rest is written, from where the short write stopped, with a
        // new linked sync; only then is anything durable.
        assert_eq!(
            write_of(&io, WRITE0),
            (offset + short as u64, bytes - short as usize)
        );
        assert_eq!(wal.durable_seq(), 0);
        let done = io.complete(WRITE0, bytes as i32 - short);
        assert_eq!(wal.on_completion(&mut io, done).unwrap(), None);
        let done = io.complete(SYNC0, 0);
        assert_eq!(wal.on_completion(&mut io, done).unwrap(), Some(3));
        assert_eq!(wal.durable_seq(), 3);
        assert!(wal.is_idle());
    }

    #[test]
    fn a_failed_fdatasync_is_fatal_and_reports_nothing_durable() {
        let tmp = tempfile::tempdir().unwrap();
        let mut io = FakeIo::default();
        let mut wal = open(tmp.path(), Durability::Fsync);
        commit(&mut wal, &mut io, 2, 10);
        let bytes = write_of(&io, WRITE0).1;
        let done = io.complete(WRITE0, bytes as i32);
        assert_eq!(wal.on_completion(&mut io, done).unwrap(), None);
        let done = io.complete(SYNC0, -libc::EIO);
        let err = wal.on_completion(&mut io, done).unwrap_err();
        assert!(
            matches!(err, WalError::SyncFailed { durable_seq: 0, .. }),
            "{err}"
        );
        assert_eq!(wal.durable_seq(), 0, "nothing became durable");
        assert!(io.ops.is_empty(), "the write is not retried");
    }

    #[test]
    fn commits_become_durable_in_order_whatever_order_they_complete_in() {
        let tmp = tempfile::tempdir().unwrap();
        let mut io = FakeIo::default();
        let mut wal = open(tmp.path(), Durability::Fsync);
        commit(&mut wal, &mut io, 1, 10);
        commit(&mut wal, &mut io, 2, 10);
        let write1 = Token::new(Owner::Wal, Kind::WalWrite, 1);
        let sync1 = Token::new(Owner::Wal, Kind::WalSync, 1);
        // The second commit completes first: nothing is durable yet.
        let len1 = write_of(&io, write1).1 as i32;
        let done = io.complete(write1, len1);
        assert_eq!(wal.on_completion(&mut io, done).unwrap(), None);
        let done = io.complete(sync1, 0);
        assert_eq!(wal.on_completion(&mut io, done).unwrap(), None);
        assert_eq!(wal.durable_seq(), 0);
        // The first one then carries the watermark over both.
        let len0 = write_of(&io, WRITE0).1 as i32;
        let done = io.complete(WRITE0, len0);
        assert_eq!(wal.on_completion(&mut io, done).unwrap(), None);
        let done = io.complete(SYNC0, 0);
        assert_eq!(wal.on_completion(&mut io, done).unwrap(), Some(3));
    }

    #[test]
    fn without_fdatasync_a_short_write_is_resubmitted_at_once() {
        let tmp = tempfile::tempdir().unwrap();
        let mut io = FakeIo::default();
        let mut wal = open(tmp.path(), Durability::None);
        // Larger than an inline commit, so it goes through the seam.
        let bytes = commit(&mut wal, &mut io, 1, INLINE_COMMIT_BYTES_MAX + 1);
        assert!(io.ops.iter().all(|o| o.what != What::Sync), "no sync");
        let (offset, _) = write_of(&io, WRITE0);
        let done = io.complete(WRITE0, 4096);
        assert_eq!(wal.on_completion(&mut io, done).unwrap(), None);
        assert_eq!(write_of(&io, WRITE0), (offset + 4096, bytes - 4096));
        let done = io.complete(WRITE0, (bytes - 4096) as i32);
        assert_eq!(wal.on_completion(&mut io, done).unwrap(), Some(1));
    }

    #[test]
    fn a_full_disk_is_a_clear_error_and_nothing_becomes_durable() {
        let tmp = tempfile::tempdir().unwrap();
        let mut io = FakeIo::default();
        let mut wal = open(tmp.path(), Durability::Fsync);
        commit(&mut wal, &mut io, 1, 10);
        let done = io.complete(WRITE0, -libc::ENOSPC);
        let err = wal.on_completion(&mut io, done).unwrap_err();
        assert!(matches!(err, WalError::DiskFull { .. }), "{err}");
        assert_eq!(wal.durable_seq(), 0);
    }

    #[test]
    fn an_idle_wal_without_fdatasync_commits_inline_through_the_seam() {
        let tmp = tempfile::tempdir().unwrap();
        let mut io = FakeIo::default();
        let mut wal = open(tmp.path(), Durability::None);
        wal.stage(&mut io, 1, b"one").unwrap();
        let submitted = wal.submit(&mut io).unwrap();
        assert_eq!(submitted.durable_seq, Some(1));
        assert_eq!(
            io.written_now,
            vec![(
                crate::constants::SEGMENT_HEADER_BYTES as u64,
                encoded_len_bytes(3)
            )]
        );
        assert!(io.ops.is_empty());
    }

    #[test]
    fn an_o_direct_short_write_rewrites_its_partial_page() {
        let tmp = tempfile::tempdir().unwrap();
        let mut io = FakeIo::with_fixed(&[DIRECT_COMMIT_BUFFER_BYTES; DIRECT_COMMIT_BUFFERS_COUNT]);
        let mut wal = open(tmp.path(), Durability::Fsync);
        if !wal.enable_direct(&mut io, 0).unwrap() {
            eprintln!("this filesystem refuses O_DIRECT: nothing to test");
            return;
        }
        commit(&mut wal, &mut io, 100, 100);
        let (offset, len) = write_of(&io, WRITE0);
        assert_eq!(
            offset % PAGE_SIZE_BYTES as u64,
            0,
            "O_DIRECT writes whole pages"
        );
        assert_eq!(len % PAGE_SIZE_BYTES, 0);
        assert!(io.fixed_in_use(0), "the commit buffer is the kernel's");
        let done = io.complete(WRITE0, PAGE_SIZE_BYTES as i32 + 100);
        assert_eq!(wal.on_completion(&mut io, done).unwrap(), None);
        let done = io.complete(SYNC0, -libc::ECANCELED);
        assert_eq!(wal.on_completion(&mut io, done).unwrap(), None);
        // The partly written page is written again, whole.
        assert_eq!(
            write_of(&io, WRITE0),
            (offset + PAGE_SIZE_BYTES as u64, len - PAGE_SIZE_BYTES)
        );
        let done = io.complete(WRITE0, (len - PAGE_SIZE_BYTES) as i32);
        assert_eq!(wal.on_completion(&mut io, done).unwrap(), None);
        let done = io.complete(SYNC0, 0);
        assert_eq!(wal.on_completion(&mut io, done).unwrap(), Some(100));
    }
}
