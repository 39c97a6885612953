//! Recovery: scan a shard's segments, check them, and find where to continue.
//!
//! The same scan serves the writer (which then repairs a torn tail), `dump`
//! and `verify` (which only read). Each case has one test in
//! `tests/recovery.rs`:
//!
//! | case | what recovery does |
//! |---|---|
//! | clean | nothing |
//! | the last segment's cached pages hold records its disk lost (a failed fdatasync) | the writer drops its clean cached pages first ([`drop_cached_tail`]), so the scan sees the disk's bytes and, usually, a torn tail |
//! | torn tail: a partial record, a bad crc on the last record, a zeroed preallocated tail, or — within [`RECOVERY_TORN_WINDOW_BYTES`] of the end of the last segment — unwritten space followed by never-synced records | report it; the writer zeroes it in place (the segment keeps its size) |
//! | a corrupt record followed by valid ones (corrupt middle), damage deeper than that window, or any damage in a segment that is not the last | refuse, naming the segment and byte offset |
//! | a gap in the segment sequence, or a seq that does not follow its predecessor | refuse, naming the missing seqs |
//! | a version-2 segment shorter than its preallocated size (cut by hand: the writer never shortens one) | refuse, naming the seqs lost |
//! | fewer records than the durable seq the WAL recorded (`watermarks`): a torn tail that reaches into reported-durable records, a deleted last segment | refuse, naming the seqs lost |
//! | an oldest segment after the recorded acked seq + 1 (retention deletes only acked segments) | refuse, naming the seqs lost |
//! | segments of two WAL ids, or a watermarks file of another | refuse |
//! | a stale record of a reused segment's earlier life | never returned: its crc is seeded with another salt, so it reads as damage |
//!
//! Why damage at the end is a torn tail: the WAL writes in order and reports
//! a seq durable only when every byte before it is synced, so a crash can
//! leave damage only in the bytes that were still in flight, and at most
//! [`RECOVERY_TORN_WINDOW_BYTES`] (every commit chain, full) can be in flight.
//! The watermarks file bounds it from the other side: records at or below
//! the durable seq it recorded were reported durable, so damage there is
//! loss, never a tail to cut.
//!
//! Why a torn tail may have valid records *after* the damage: after a power
//! cut, pages reach the disk in any order, so an unsynced commit can leave a
//! hole with later, never-acknowledged records intact. Segments are
//! fallocated, so a hole reads as zeros: a zero record header, or an aligned
//! all-zero sector inside the damaged record. Damage with valid records after
//! it and without that mark (a flipped bit) is corruption and is refused.

//! Memory stays bounded whatever the segment size: records stream through a
//! window of [`SCAN_WINDOW_BYTES`], and damage is analysed on a read of at
//! most the in-flight window after it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::constants::{
    PAGE_SIZE_BYTES, RECORD_BYTES_MAX, RECORD_HEADER_BYTES, RECORD_PAYLOAD_BYTES_MAX,
    RECOVERY_TORN_WINDOW_BYTES, SCAN_WINDOW_BYTES, SECTOR_SIZE_BYTES, SEGMENT_HEADER_BYTES,
    SEGMENT_SIZE_BYTES, SEGMENTS_PER_SHARD_MAX, SEQ_FIRST, UNWRITTEN_RUN_BYTES_MIN,
};
use crate::frame::Seed;
use crate::frame::{self, DecodeError, RecordRef};
use crate::wal::lock::LOCK_FILE_NAME;
use crate::wal::segment::{
    SegmentHeader, WalId, is_tmp_segment_name, parse_segment_file_name, segment_file_name,
};
use crate::wal::watermarks::{self, Recorded, WATERMARKS_FILE_NAME};

/// What a scan found in one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub path: PathBuf,
    pub first_seq: u64,
    /// Its header: format version, WAL id, salt.
    pub header: SegmentHeader,
    pub records: u64,
    /// Seq of the last valid record, if any.
    pub last_seq: Option<u64>,
    /// File offset just past the last valid record.
    pub data_end_bytes: u64,
}

/// Damage at the end of the last segment that recovery may cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub segment: PathBuf,
    /// Offset of the first byte that is not part of a valid record.
    pub offset_bytes: u64,
    /// Non-zero bytes from `offset_bytes` on that the writer will cut.
    pub cut_bytes: u64,
    pub reason: String,
}

/// The result of scanning one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardScan {
    pub shard: u32,
    pub dir: PathBuf,
    pub segments: Vec<SegmentInfo>,
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The seq the next appended record gets.
    pub next_seq: u64,
    pub torn: Option<TornTail>,
    /// `.tmp` leftovers of an interrupted segment creation.
    pub tmp_files: Vec<PathBuf>,
    /// The WAL's id, from its version-2 segments (none if all are version 1).
    pub wal_id: WalId,
    /// What the WAL last recorded beside its segments, if anything.
    pub recorded: Option<Recorded>,
    /// Records of each kind other than data (checkpoints, seals).
    pub control_records: u64,
}

/// Why a shard cannot be opened. Every variant names the file and, where it
/// applies, the byte offset, so a person can act on it.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{}: bad segment header: {reason}", path.display())]
    BadHeader { path: PathBuf, reason: String },
    #[error(
        "{}: corrupt record at byte offset {offset_bytes} (expected seq {expected_seq}): {reason}. \
         A crash can leave damage only in the last commits' bytes, so this is not a torn tail and \
         the WAL refuses to open. Records before this offset are intact (`ringship dump` prints \
         them); move the shard directory aside to start over",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        offset_bytes: u64,
        expected_seq: u64,
        reason: String,
    },
    #[error(
        "{}: gap in the segment sequence: expected a segment starting at seq {expected_seq}, found seq {found_seq}: \
         seqs {expected_seq} ..= {} are missing (a segment was deleted by hand). The WAL refuses to open; \
         restore the segment, or move the shard directory aside to start over",
        path.display(),
        found_seq - 1
    )]
    Gap {
        path: PathBuf,
        expected_seq: u64,
        found_seq: u64,
    },
    #[error("{}: {reason}", path.display())]
    Unexpected { path: PathBuf, reason: String },
    #[error(
        "{}: the segment is {len_bytes} bytes, but a segment is preallocated to {SEGMENT_SIZE_BYTES}: \
         it was shortened, not torn. Its records end at seq {last_seq}; {}. The WAL refuses to open; \
         restore the segment, or move the shard directory aside to start over",
        path.display(),
        match missing_to {
            Some(to) => format!("seqs {} ..= {to} are lost", last_seq + 1),
            None => format!("the records after seq {last_seq} that it held are lost"),
        }
    )]
    Short {
        path: PathBuf,
        len_bytes: u64,
        /// The last record the short segment still holds (its first seq − 1
        /// if none).
        last_seq: u64,
        /// The last lost seq, where it is known: before the next segment,
        /// or the durable seq the WAL recorded.
        missing_to: Option<u64>,
    },
    #[error(
        "{}: the WAL recorded seq {recorded} durable, but its segments hold records only up to seq {found}: \
         seqs {} ..= {recorded} are lost (a segment was shortened or deleted). The WAL refuses to open; \
         restore the missing segments, or move the shard directory aside to start over",
        dir.display(),
        found + 1
    )]
    Lost {
        dir: PathBuf,
        recorded: u64,
        found: u64,
    },
    #[error(
        "{}: the oldest segment starts at seq {first_seq}, but the WAL recorded only seq {acked} \
         acknowledged, so retention cannot have deleted seqs {} ..= {}: they are lost. \
         The WAL refuses to open",
        dir.display(),
        acked + 1,
        first_seq - 1
    )]
    LostHead {
        dir: PathBuf,
        first_seq: u64,
        acked: u64,
    },
    #[error(
        "{}: segment {} belongs to WAL {found}, but {expected} is this WAL's id: \
         two WALs were mixed in one directory. The WAL refuses to open",
        dir.display(),
        path.display()
    )]
    MixedWals {
        dir: PathBuf,
        path: PathBuf,
        expected: WalId,
        found: WalId,
    },
    #[error("{}: {reason}", path.display())]
    Watermarks { path: PathBuf, reason: String },
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RecoveryError {
    let path = path.to_path_buf();
    move |source| RecoveryError::Io { op, path, source }
}

/// Lists the shard numbers present under a WAL directory, sorted.
pub fn list_shards(dir: &Path) -> Result<Vec<u32>, RecoveryError> {
    let mut shards = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error("read directory", dir))? {
        let entry = entry.map_err(io_error("read directory", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Ok(shard) = name.parse::<u32>()
            && entry.path().is_dir()
            && shard.to_string() == name
        {
            shards.push(shard);
        }
    }
    shards.sort_unstable();
    Ok(shards)
}

/// Scans the shard in `shard_dir`, calling `visit` for every valid record in
/// seq order. Reads only; see `repair` for the writer's side.
///
/// A missing directory is an empty shard.
pub fn scan_shard(
    shard_dir: &Path,
    shard: u32,
    mut visit: impl FnMut(RecordRef<'_>) -> io::Result<()>,
) -> Result<ShardScan, RecoveryError> {
    let mut scan = ShardScan {
        shard,
        dir: shard_dir.to_path_buf(),
        segments: Vec::new(),
        records: 0,
        first_seq: None,
        last_seq: None,
        next_seq: SEQ_FIRST,
        torn: None,
        tmp_files: Vec::new(),
        wal_id: WalId::default(),
        recorded: None,
        control_records: 0,
    };
    if !shard_dir.exists() {
        return Ok(scan);
    }
    scan.recorded = watermarks::read(shard_dir)
        .map_err(|(path, reason)| RecoveryError::Watermarks { path, reason })?;
    let mut names: Vec<(u64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(shard_dir).map_err(io_error("read directory", shard_dir))? {
        let entry = entry.map_err(io_error("read directory", shard_dir))?;
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(RecoveryError::Unexpected {
                path,
                reason: "file name is not UTF-8; not a ringship segment".into(),
            });
        };
        if is_tmp_segment_name(name) {
            scan.tmp_files.push(path);
        } else if [LOCK_FILE_NAME, WATERMARKS_FILE_NAME, "watermarks.tmp"].contains(&name) {
            // The writer's lock and its recorded watermarks.
        } else if let Some(first_seq) = parse_segment_file_name(name) {
            if names.len() == SEGMENTS_PER_SHARD_MAX {
                return Err(RecoveryError::Unexpected {
                    path: shard_dir.to_path_buf(),
                    reason: format!("more than {SEGMENTS_PER_SHARD_MAX} segments"),
                });
            }
            names.push((first_seq, path));
        } else {
            return Err(RecoveryError::Unexpected {
                path,
                reason:
                    "unexpected file in a shard directory (segments are named <20-digit seq>.wal)"
                        .into(),
            });
        }
    }
    names.sort_unstable();

    let mut window: Vec<u8> = Vec::with_capacity(SCAN_WINDOW_BYTES);
    let count = names.len();
    let next_firsts: Vec<u64> = names.iter().skip(1).map(|(seq, _)| *seq).collect();
    for (index, (first_seq, path)) in names.into_iter().enumerate() {
        let is_last = index + 1 == count;
        if index > 0 && first_seq != scan.next_seq {
            return Err(RecoveryError::Gap {
                path,
                expected_seq: scan.next_seq,
                found_seq: first_seq,
            });
        }
        let (file, len) = open_segment(&path)?;
        let mut header_block = vec![0u8; SEGMENT_HEADER_BYTES.min(len as usize)];
        file.read_exact_at(&mut header_block, 0)
            .map_err(io_error("read segment", &path))?;
        let header =
            SegmentHeader::decode(&header_block).map_err(|reason| RecoveryError::BadHeader {
                path: path.clone(),
                reason,
            })?;
        if header.shard != shard || header.first_seq != first_seq {
            return Err(RecoveryError::BadHeader {
                path,
                reason: format!(
                    "header says shard {} first seq {}, but the file is {} in shard {shard}",
                    header.shard,
                    header.first_seq,
                    segment_file_name(first_seq)
                ),
            });
        }
        // A version-2 segment is preallocated in full and never cut short
        // (a torn tail is zeroed in place): a shorter one lost its end.
        if header.version >= 2 && len < SEGMENT_SIZE_BYTES {
            // Say what is lost: the records the rest still holds end at
            // some seq; what follows it up to the next segment, or up to
            // the durable seq the WAL recorded, is gone.
            let segment = Segment {
                path: &path,
                file: &file,
                len,
                seed: header.seed(),
                recorded_durable: scan
                    .recorded
                    .filter(|r| !r.page_cache_only)
                    .map(|r| r.durable_seq),
            };
            let mut ignored = None;
            let last_seq = scan_segment(
                &segment,
                header,
                &mut window,
                first_seq,
                true,
                &mut ignored,
                &mut |_| Ok(()),
            )
            .ok()
            .and_then(|info| info.last_seq)
            .unwrap_or(first_seq - 1);
            let missing_to = next_firsts
                .get(index)
                .map(|next| next - 1)
                .or(scan.recorded.map(|r| r.durable_seq))
                .filter(|&to| to > last_seq);
            return Err(RecoveryError::Short {
                path,
                len_bytes: len,
                last_seq,
                missing_to,
            });
        }
        if !header.wal_id.is_none() {
            if scan.wal_id.is_none() {
                scan.wal_id = header.wal_id;
            } else if scan.wal_id != header.wal_id {
                return Err(RecoveryError::MixedWals {
                    dir: shard_dir.to_path_buf(),
                    path,
                    expected: scan.wal_id,
                    found: header.wal_id,
                });
            }
        }
        let segment = Segment {
            path: &path,
            file: &file,
            len,
            seed: header.seed(),
            recorded_durable: scan
                .recorded
                .filter(|r| !r.page_cache_only)
                .map(|r| r.durable_seq),
        };
        let mut control = 0u64;
        let info = scan_segment(
            &segment,
            header,
            &mut window,
            first_seq,
            is_last,
            &mut scan.torn,
            &mut |record: RecordRef<'_>| {
                if record.kind != crate::frame::Kind::Data {
                    control += 1;
                }
                visit(record)
            },
        )?;
        scan.control_records += control;

        if info.records > 0 {
            scan.first_seq.get_or_insert(first_seq);
            scan.last_seq = info.last_seq;
        }
        scan.records += info.records;
        scan.next_seq = info.last_seq.map_or(first_seq, |s| s + 1);
        scan.segments.push(info);
    }
    check_recorded(shard_dir, &scan)?;
    Ok(scan)
}

/// Checks the segments against what the WAL last recorded: a durable seq
/// the segments no longer reach, or a head that retention cannot have
/// deleted, is lost data, never a torn tail to cut.
fn check_recorded(shard_dir: &Path, scan: &ShardScan) -> Result<(), RecoveryError> {
    let Some(recorded) = scan.recorded else {
        return Ok(());
    };
    if !recorded.wal_id.is_none() && !scan.wal_id.is_none() && recorded.wal_id != scan.wal_id {
        return Err(RecoveryError::MixedWals {
            dir: shard_dir.to_path_buf(),
            path: shard_dir.join(WATERMARKS_FILE_NAME),
            expected: scan.wal_id,
            found: recorded.wal_id,
        });
    }
    let found = scan.next_seq - 1;
    if found < recorded.durable_seq && recorded.page_cache_only {
        // `--durability none` promised only a process crash's survival.
        tracing::warn!(
            dir = %shard_dir.display(),
            "the WAL recorded seq {} written with --durability none, but its segments end at seq {found}: \
             seqs {} ..= {} were lost (a machine crash loses what that mode never synced)",
            recorded.durable_seq,
            found + 1,
            recorded.durable_seq
        );
    } else if found < recorded.durable_seq {
        return Err(RecoveryError::Lost {
            dir: shard_dir.to_path_buf(),
            recorded: recorded.durable_seq,
            found,
        });
    }
    if let Some(first) = scan.segments.first().map(|s| s.first_seq)
        && first > recorded.acked_seq + 1
        && first <= recorded.durable_seq
    {
        return Err(RecoveryError::LostHead {
            dir: shard_dir.to_path_buf(),
            first_seq: first,
            acked: recorded.acked_seq,
        });
    }
    Ok(())
}

/// One segment file being scanned.
struct Segment<'a> {
    path: &'a Path,
    file: &'a File,
    len: u64,
    /// The crc seed of its records.
    seed: Seed,
    /// The durable seq the WAL recorded (synced: not a `--durability none`
    /// page-cache mark), if any: damage to records above it may be a torn
    /// commit, damage at or below it never is.
    recorded_durable: Option<u64>,
}

impl Segment<'_> {
    /// Reads `[from, from + want)` (clipped to the file) into `buf`.
    fn read(&self, from: u64, want: usize, buf: &mut Vec<u8>) -> Result<(), RecoveryError> {
        let n = (self.len.saturating_sub(from)).min(want as u64) as usize;
        buf.clear();
        buf.resize(n, 0);
        self.file
            .read_exact_at(buf, from)
            .map_err(io_error("read segment", self.path))
    }

    /// Offset just past the last non-zero byte at or after `from`, streamed
    /// through `buf` so that memory stays bounded.
    fn nonzero_end(&self, from: u64, buf: &mut Vec<u8>) -> Result<u64, RecoveryError> {
        let mut end = from;
        let mut at = from;
        while at < self.len {
            self.read(at, SCAN_WINDOW_BYTES, buf)?;
            // Whole pages compared to zeros first (memcmp, vectorised): a
            // byte-by-byte scan of a 64 MiB segment's unwritten rest costs
            // tens of milliseconds at every recovery that finds damage.
            const ZEROS: [u8; PAGE_SIZE_BYTES] = [0; PAGE_SIZE_BYTES];
            if let Some(page) = buf
                .chunks(PAGE_SIZE_BYTES)
                .rposition(|c| c != &ZEROS[..c.len()])
            {
                let from = page * PAGE_SIZE_BYTES;
                let to = (from + PAGE_SIZE_BYTES).min(buf.len());
                if let Some(i) = buf[from..to].iter().rposition(|&b| b != 0) {
                    end = at + (from + i) as u64 + 1;
                }
            }
            at += buf.len() as u64;
        }
        Ok(end)
    }
}

/// Drops the clean cached pages of a shard's last segment, so that the
/// writer's scan reads what the disk holds. After a failed fdatasync, Linux
/// marks the pages that did not reach the disk clean and keeps them cached:
/// a scan through the cache would find records the disk lost, and a
/// restarted writer would report them durable (and ship them). Dirty pages
/// (`--durability none`, not yet written back) stay, as they must.
///
/// - Only the last segment: rotation waits until every commit of the old
///   one is durable, and a failed fdatasync stops the WAL. (A `--durability
///   none` WAL whose background writeback failed can hold such pages in any
///   segment; nothing here notices that.)
/// - Only for the writer: `verify` and `dump` may run beside a live writer,
///   whose cached tail they must not take away from under it.
/// - Errors are left to the scan, and advice a filesystem refuses changes
///   nothing else, so both are only logged.
pub fn drop_cached_tail(shard_dir: &Path) {
    use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
    let Ok(entries) = std::fs::read_dir(shard_dir) else {
        return;
    };
    let last = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let first_seq = parse_segment_file_name(e.file_name().to_str()?)?;
            Some((first_seq, e.path()))
        })
        .max_by_key(|(first_seq, _)| *first_seq);
    let Some((_, path)) = last else {
        return;
    };
    let advised = File::open(&path).and_then(|file| {
        posix_fadvise(&file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED).map_err(io::Error::from)
    });
    if let Err(e) = advised {
        tracing::debug!(path = %path.display(), "dropping the cached tail: {e}");
    }
}

fn open_segment(path: &Path) -> Result<(File, u64), RecoveryError> {
    let file = File::open(path).map_err(io_error("open segment", path))?;
    let len = file
        .metadata()
        .map_err(io_error("stat segment", path))?
        .len();
    if len > SEGMENT_SIZE_BYTES {
        return Err(RecoveryError::Unexpected {
            path: path.to_path_buf(),
            reason: format!("segment is {len} bytes, over the {SEGMENT_SIZE_BYTES}-byte maximum"),
        });
    }
    Ok((file, len))
}

/// Scans one segment's records through a window of [`SCAN_WINDOW_BYTES`]
/// (which always holds a whole record), so memory stays bounded however
/// large the segment. Damage is analysed on a bounded read of the bytes
/// that could have been in flight after it.
#[allow(clippy::too_many_arguments)]
fn scan_segment(
    segment: &Segment<'_>,
    header: SegmentHeader,
    window: &mut Vec<u8>,
    first_seq: u64,
    is_last: bool,
    torn: &mut Option<TornTail>,
    visit: &mut impl FnMut(RecordRef<'_>) -> io::Result<()>,
) -> Result<SegmentInfo, RecoveryError> {
    let path = segment.path;
    let mut offset = SEGMENT_HEADER_BYTES as u64;
    let mut expected = first_seq;
    let mut records = 0u64;
    let damage: Option<(String, u64)> = 'scan: loop {
        if offset >= segment.len {
            break None;
        }
        // Refill so that a whole record (or the rest of the file) is in view.
        segment.read(offset, SCAN_WINDOW_BYTES, window)?;
        let window_end = offset + window.len() as u64;
        let mut walk = frame::Records::verified_seeded(window, segment.seed);
        loop {
            let at = offset;
            // Near the window's end with more file after it: read on from here.
            if window_end < segment.len && at + RECORD_BYTES_MAX as u64 > window_end {
                continue 'scan;
            }
            match walk.next() {
                None => break 'scan None,
                Some(Ok(record)) => {
                    if record.seq != expected {
                        return Err(corrupt(
                            path,
                            at,
                            expected,
                            format!("valid crc but seq {} breaks the sequence", record.seq),
                        ));
                    }
                    visit(record).map_err(io_error("visit record", path))?;
                    records += 1;
                    expected += 1;
                    offset += record.encoded_len_bytes() as u64;
                }
                Some(Err(e)) => {
                    // Everything after the damage, within what can be in
                    // flight (plus one record, to find a valid one that
                    // starts inside).
                    let mut tail = Vec::new();
                    segment.read(
                        at,
                        RECOVERY_TORN_WINDOW_BYTES + RECORD_BYTES_MAX + SECTOR_SIZE_BYTES,
                        &mut tail,
                    )?;
                    let mut scratch = Vec::new();
                    let nonzero_end = segment.nonzero_end(at, &mut scratch)?;
                    if nonzero_end == at {
                        // Zeros to the end: preallocated space, a clean end.
                        break 'scan None;
                    }
                    let within_window = nonzero_end - at <= RECOVERY_TORN_WINDOW_BYTES as u64;
                    let reason = classify_damage(
                        e,
                        &tail,
                        at,
                        expected,
                        is_last,
                        within_window,
                        nonzero_end,
                        segment.seed,
                        segment.recorded_durable,
                    )
                    .map_err(|reason| corrupt(path, at, expected, reason))?;
                    break 'scan Some((reason, nonzero_end));
                }
            }
        }
    };
    if let Some((reason, nonzero_end)) = damage {
        if !is_last {
            return Err(corrupt(
                path,
                offset,
                expected,
                format!("{reason}, in a segment that is not the last"),
            ));
        }
        *torn = Some(TornTail {
            segment: path.to_path_buf(),
            offset_bytes: offset,
            cut_bytes: nonzero_end.saturating_sub(offset),
            reason,
        });
    }
    Ok(SegmentInfo {
        path: path.to_path_buf(),
        first_seq,
        header,
        records,
        last_seq: (records > 0).then(|| expected - 1),
        data_end_bytes: offset,
    })
}

/// Decides whether damage at file offset `offset` (whose following bytes are
/// `tail`) is a torn tail — `Ok(reason)` — or corruption — `Err(reason)`.
#[allow(clippy::too_many_arguments)]
fn classify_damage(
    e: DecodeError,
    tail: &[u8],
    offset: u64,
    expected: u64,
    is_last: bool,
    within_window: bool,
    nonzero_end: u64,
    seed: Seed,
    recorded_durable: Option<u64>,
) -> Result<String, String> {
    let beyond = || {
        format!(
            "non-zero bytes follow up to byte offset {nonzero_end}, beyond the \
             {RECOVERY_TORN_WINDOW_BYTES} bytes a crash can leave unsynced"
        )
    };
    match e {
        // A record whose crc holds but whose kind this build does not know
        // was written by a newer ringship: never a torn tail to zero.
        DecodeError::UnknownKind { bits } => Err(format!(
            "a valid record of unknown kind {bits:#x}: written by a newer ringship, which this \
             build cannot read; upgrade ringship to open this WAL"
        )),
        // A synced record is never all zeros, so this record was never
        // durable, and nor was anything after it (durability is in order),
        // provided the data after it could still have been in flight.
        DecodeError::ZeroHeader if within_window => {
            Ok("unwritten space followed by data that was never synced".into())
        }
        DecodeError::ZeroHeader => Err(format!(
            "unwritten space in the middle of durable data: {}",
            beyond()
        )),
        DecodeError::Truncated { .. } if within_window => Ok(format!("partial record: {e}")),
        _ => match find_valid_record(tail, 1, expected, seed) {
            None if within_window => Ok(format!("last record damaged: {e}")),
            None => Err(format!(
                "{e}, and no valid record after it, but {}",
                beyond()
            )),
            // Valid records follow. After a power cut pages reach the disk in
            // any order, so an unsynced commit can leave a hole (an all-zero
            // sector) with later, never-acknowledged records intact. The hole
            // may be the sector the commit began in: its first bytes were the
            // synced data before, its rest is unwritten space, so the damaged
            // record is zeros up to that sector's end. Or the hole is the
            // end of a commit whose write was cut short (a short write, or a
            // kill -9 mid-write) while the next commit's write completed:
            // zeros up to the valid record. Both found by the
            // simulator (`crate::sim`). Without such a mark, or deeper than
            // the in-flight window, it is corruption of durable data.
            //
            // Above the durable seq the WAL recorded, a weaker mark is
            // enough: a power cut can tear an unsynced commit without a whole
            // zero sector (a sector whose first bytes were synced and whose
            // rest was not; a short write that ended mid-record), leaving a
            // run of zeros that ends at a sector boundary or at the next
            // valid record. At or below the recorded seq, damage is
            // corruption of durable data, whatever it looks like; a WAL with
            // no recorded seq (version 1) needs the whole zero sector.
            Some(at)
                if is_last
                    && within_window
                    && recorded_durable.map_or(
                        has_zero_sector(tail, offset, 0, at),
                        |durable| {
                            expected > durable
                                && (has_zero_sector(tail, offset, 0, at)
                                    || has_unwritten_run(tail, offset, at))
                        },
                    ) =>
            {
                Ok(format!(
                    "{e}, with unwritten sectors before the records at byte offset {}: a commit that was never synced",
                    offset + at as u64
                ))
            }
            Some(at) => Err(format!(
                "{e}; a valid record follows at byte offset {}",
                offset + at as u64
            )),
        },
    }
}

fn corrupt(path: &Path, offset: u64, expected_seq: u64, reason: String) -> RecoveryError {
    RecoveryError::Corrupt {
        path: path.to_path_buf(),
        offset_bytes: offset,
        expected_seq,
        reason,
    }
}

/// True if `buf[from..to]` holds an all-zero sector aligned in the file,
/// where `buf[0]` is at file offset `base`.
fn has_zero_sector(buf: &[u8], base: u64, from: usize, to: usize) -> bool {
    let sector = SECTOR_SIZE_BYTES as u64;
    let first = ((base + from as u64).div_ceil(sector) * sector - base) as usize;
    let to = to.min(buf.len());
    (first..to)
        .step_by(SECTOR_SIZE_BYTES)
        .take_while(|s| s + SECTOR_SIZE_BYTES <= to)
        .any(|s| buf[s..s + SECTOR_SIZE_BYTES].iter().all(|&b| b == 0))
}

/// True if `buf[..to]` (at file offset `base`; a valid record begins at
/// `to`) holds a run of at least [`UNWRITTEN_RUN_BYTES_MIN`] zeros that
/// ends at a sector boundary or at `to`: space a commit's write never
/// reached, before bytes that did land (the rest of its sector's
/// neighbours, or the next commit).
fn has_unwritten_run(buf: &[u8], base: u64, to: usize) -> bool {
    let sector = SECTOR_SIZE_BYTES as u64;
    let to = to.min(buf.len());
    let first_boundary = (base + 1).div_ceil(sector) * sector;
    let boundaries = (first_boundary..base + to as u64)
        .step_by(SECTOR_SIZE_BYTES)
        .map(|b| (b - base) as usize);
    boundaries.chain(std::iter::once(to)).any(|end| {
        end >= UNWRITTEN_RUN_BYTES_MIN
            && buf[end - UNWRITTEN_RUN_BYTES_MIN..end]
                .iter()
                .all(|&b| b == 0)
    })
}

/// Looks for any valid record at or after `from` whose seq could belong to
/// this segment (at or after `expected_seq`). Only used on damage, so a byte-
/// by-byte search is fine; the seq and length filters keep it cheap, and the
/// search stops past the torn window (anything found beyond it is
/// corruption either way, which the window check reports).
fn find_valid_record(buf: &[u8], from: usize, expected_seq: u64, seed: Seed) -> Option<usize> {
    let seq_max = expected_seq + (buf.len() / RECORD_HEADER_BYTES) as u64;
    let limit = buf.len();
    let mut at = from;
    while at + RECORD_HEADER_BYTES <= limit {
        let b = &buf[at..];
        let header = frame::Header::read(b).expect("a header's worth of bytes");
        if (expected_seq..=seq_max).contains(&header.seq)
            && header.len_bytes <= RECORD_PAYLOAD_BYTES_MAX
            && frame::decode_seeded(b, seed).is_ok()
        {
            return Some(at);
        }
        at += 1;
    }
    None
}

/// Makes a scanned shard writable: removes `.tmp` leftovers and cuts a torn
/// tail back to the last valid record, syncing both. Reports what it cut.
pub fn repair(scan: &ShardScan) -> Result<(), RecoveryError> {
    for tmp in &scan.tmp_files {
        std::fs::remove_file(tmp).map_err(io_error("remove leftover", tmp))?;
    }
    if let Some(torn) = &scan.torn {
        tracing::warn!(
            segment = %torn.segment.display(),
            offset_bytes = torn.offset_bytes,
            cut_bytes = torn.cut_bytes,
            "torn tail cut: {}",
            torn.reason
        );
        let file = OpenOptions::new()
            .write(true)
            .open(&torn.segment)
            .map_err(io_error("open segment", &torn.segment))?;
        // Punching a hole (rather than writing zeros) releases the damaged
        // blocks, so no stale bytes can ever be read back after later
        // records; keeping the size (rather than truncating) leaves a
        // segment that is never shorter than preallocated, which recovery
        // takes as a sign of lost data.
        let len = file
            .metadata()
            .map_err(io_error("stat segment", &torn.segment))?
            .len();
        if len > torn.offset_bytes {
            use nix::fcntl::{FallocateFlags, fallocate};
            let punched = fallocate(
                &file,
                FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
                torn.offset_bytes as i64,
                (len - torn.offset_bytes) as i64,
            );
            match punched {
                Ok(()) => {}
                // A filesystem without hole punching: write the zeros. Only
                // the non-zero bytes need them (the rest reads as zeros).
                Err(nix::errno::Errno::EOPNOTSUPP) => {
                    let end = (torn.offset_bytes + torn.cut_bytes).min(len);
                    let zeros = vec![0u8; SCAN_WINDOW_BYTES];
                    let mut at = torn.offset_bytes;
                    while at < end {
                        let n = (end - at).min(zeros.len() as u64) as usize;
                        file.write_all_at(&zeros[..n], at)
                            .map_err(io_error("zero torn tail", &torn.segment))?;
                        at += n as u64;
                    }
                }
                Err(e) => return Err(io_error("zero torn tail", &torn.segment)(e.into())),
            }
        }
        file.sync_all()
            .map_err(io_error("fsync the cut segment", &torn.segment))?;
    }
    if !scan.tmp_files.is_empty() && scan.dir.exists() {
        File::open(&scan.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error("fsync directory", &scan.dir))?;
    }
    Ok(())
}
