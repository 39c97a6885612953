//! Appends and group commit on the core's io_uring.
//!
//! Records are encoded into a *staging* buffer. Whenever a commit chain is
//! free and staging holds anything, staging is submitted at once as one chain:
//! a write of the whole buffer linked (IOSQE_IO_LINK) to an fdatasync
//! (IORING_FSYNC_DATASYNC). There is no timer and no minimum batch: the first
//! record after a quiet spell is committed alone, and everything that arrives
//! while [`COMMIT_CHAINS_MAX`] chains are in flight goes into the next commit.
//!
//! **The durability promise.** [`WalWriter::durable_seq`] is the highest seq
//! such that it and every record before it are on disk (their fdatasync
//! completed; in `--durability none` mode, their write completed). It only
//! moves forward, and it moves in the same loop iteration as the completion
//! that advanced it: [`WalWriter::on_completion`] returns the new value so the
//! caller can wake a consumer (the shipper) straight away.
//!
//! A commit never spans two segments. When the next record does not fit, the
//! writer stops staging, waits until every chain on the current segment has
//! completed (so a crash can never leave a later segment ahead of a torn
//! earlier one), and creates the next segment.
//!
//! A failed fdatasync is fatal: the kernel may already have dropped the dirty
//! pages, so retrying could report data durable that is gone ("Can
//! Applications Recover from fsync Failures?", ATC'20).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use hdrhistogram::Histogram;

use crate::constants::{
    COMMIT_BUFFERS_COUNT, COMMIT_BYTES_MAX, COMMIT_CHAINS_MAX, SEGMENT_SIZE_BYTES,
};
use crate::frame::{self, encoded_len_bytes};
use crate::io::{Completion, Ring};
use crate::latency::{Recorder, Window};
use crate::wal::recovery::{self, ShardScan};
use crate::wal::segment::{self, SegmentHeader, create_segment, preallocate, shard_dir};
use crate::wal::{Durability, WalError};

/// The outcome of [`WalWriter::stage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The record was given this seq and will be in the next commit.
    Staged(u64),
    /// No room until a commit completes or the segment rotates: call
    /// [`WalWriter::pump`] and retry after the next completions.
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
    buf: Option<Vec<u8>>,
    /// Set while the kernel holds the buffer (between submit and the write's
    /// completion).
    buf_in_kernel: bool,
    file_offset_bytes: u64,
    written_bytes: usize,
    first_seq: u64,
    last_seq: u64,
    submitted: Instant,
}

/// Counters and histograms of one WAL, merged into reports.
pub struct WalStats {
    pub commits: u64,
    pub records: u64,
    pub payload_bytes: u64,
    pub short_writes: u64,
    pub segments_created: u64,
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
            segments_created: 0,
            commit_latency_ns: crate::latency::histogram(),
            append_to_durable_ns: Recorder::new(),
        }
    }
}

/// The WAL of one shard, driven by its core's ring.
pub struct WalWriter {
    shard: u32,
    dir: PathBuf,
    durability: Durability,
    token_base: u64,
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
    /// (seq, append_ts_ns) of records as they become durable, for a
    /// consumer that does not read the records itself (the splice shipper
    /// measuring append → acked). Bounded; the oldest are dropped if the
    /// consumer falls behind.
    durable_feed: Option<VecDeque<(u64, u64)>>,
    stats: WalStats,
}

/// Tokens are `token_base | chain << 1 | kind`.
const TOKEN_KIND_WRITE: u64 = 0;
const TOKEN_KIND_SYNC: u64 = 1;
/// Low bits of a token the WAL uses; the caller tags the rest.
pub const WAL_TOKEN_BITS: u32 = 8;
const _: () = assert!((COMMIT_CHAINS_MAX as u64) << 1 < 1 << WAL_TOKEN_BITS);

impl WalWriter {
    /// Opens (recovering) or creates the WAL of `shard` under `dir`.
    ///
    /// Recovery cuts a torn tail and removes leftovers (see
    /// [`recovery`]), then syncs what it kept, so every record it reports is
    /// durable. The returned scan says what was found.
    pub fn open(
        dir: &Path,
        shard: u32,
        durability: Durability,
        token_base: u64,
    ) -> Result<(WalWriter, ShardScan), WalError> {
        assert_eq!(token_base & ((1 << WAL_TOKEN_BITS) - 1), 0);
        let sdir = shard_dir(dir, shard);
        std::fs::create_dir_all(&sdir).map_err(|source| WalError::Io {
            op: "create shard directory",
            path: sdir.clone(),
            source,
        })?;
        if durability == Durability::Fsync {
            segment::sync_dir(dir)?;
        }
        let scan = recovery::scan_shard(&sdir, shard, |_| Ok(()))?;
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
        let (file, segment_path, segment_first_seq, write_offset_bytes) = match scan.segments.last()
        {
            Some(last) => {
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
                (file, last.path.clone(), last.first_seq, last.data_end_bytes)
            }
            None => {
                let header = SegmentHeader {
                    shard,
                    first_seq: scan.next_seq,
                };
                let file = create_segment(&sdir, header)?;
                stats.segments_created += 1;
                let path = sdir.join(segment::segment_file_name(scan.next_seq));
                (
                    file,
                    path,
                    scan.next_seq,
                    crate::constants::SEGMENT_HEADER_BYTES as u64,
                )
            }
        };

        let mut spares: Vec<Vec<u8>> = (0..COMMIT_BUFFERS_COUNT)
            .map(|_| Vec::with_capacity(COMMIT_BYTES_MAX))
            .collect();
        let staging = spares.pop().expect("COMMIT_BUFFERS_COUNT >= 1");
        let chains = (0..COMMIT_CHAINS_MAX)
            .map(|_| Chain {
                state: ChainState::Idle,
                buf: None,
                buf_in_kernel: false,
                file_offset_bytes: 0,
                written_bytes: 0,
                first_seq: 0,
                last_seq: 0,
                submitted: Instant::now(),
            })
            .collect();
        let writer = WalWriter {
            shard,
            dir: sdir,
            durability,
            token_base,
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
            durable_feed: None,
            stats,
        };
        Ok((writer, scan))
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

    /// Consumes an idle writer, returning its statistics.
    pub fn into_stats(self) -> WalStats {
        assert!(self.is_idle(), "closing a WAL with commits in flight");
        self.stats
    }

    /// True when nothing is staged and no commit is in flight.
    pub fn is_idle(&self) -> bool {
        self.staging.is_empty() && self.order.is_empty()
    }

    /// Encodes one record into the next commit. Never allocates.
    pub fn stage(&mut self, append_ts_ns: u64, payload: &[u8]) -> Result<Stage, WalError> {
        frame::check_payload(payload)?;
        if let Some(full) = self.reserve(encoded_len_bytes(payload.len())) {
            return Ok(full);
        }
        let seq = self.next_seq;
        frame::encode_into(&mut self.staging, seq, append_ts_ns, payload);
        self.staged(payload.len())
    }

    /// Stages a record that is already encoded and verified (the receiver's
    /// path: the bytes go to disk exactly as they came off the wire). Its
    /// seq must be the next one, which the receiver checked.
    pub fn stage_encoded(&mut self, record: &[u8]) -> Result<Stage, WalError> {
        let (seq, _, len) = frame::header_unverified(record).expect("a verified record");
        assert_eq!(len, record.len());
        assert_eq!(seq, self.next_seq, "the receiver checks seq continuity");
        if let Some(full) = self.reserve(len) {
            return Ok(full);
        }
        self.staging.extend_from_slice(record);
        self.staged(len - crate::constants::RECORD_HEADER_BYTES)
    }

    /// Checks there is room for `need` more bytes in this commit and this
    /// segment; `Some(Full)` if not.
    fn reserve(&mut self, need: usize) -> Option<Stage> {
        if self.rotate_pending {
            return Some(Stage::Full);
        }
        let end = self.write_offset_bytes + (self.staging.len() + need) as u64;
        if end > SEGMENT_SIZE_BYTES {
            self.rotate_pending = true;
            return Some(Stage::Full);
        }
        if self.staging.len() + need > COMMIT_BYTES_MAX {
            return Some(Stage::Full);
        }
        if self.staging.is_empty() {
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

    /// Submits staged records if a chain is free, and rotates the segment
    /// once a pending rotation's barrier is reached. Returns true if it
    /// rotated (the caller may then stage again).
    pub fn pump(&mut self, ring: &mut Ring) -> Result<bool, WalError> {
        if !self.staging.is_empty()
            && let Some(index) = self.chains.iter().position(|c| c.state == ChainState::Idle)
        {
            self.submit(ring, index);
        }
        if self.rotate_pending && self.staging.is_empty() && self.order.is_empty() {
            self.rotate()?;
            return Ok(true);
        }
        Ok(false)
    }

    fn submit(&mut self, ring: &mut Ring, index: usize) {
        let spare = self.spares.pop().expect("a spare buffer per idle chain");
        let buf = std::mem::replace(&mut self.staging, spare);
        let len = buf.len();
        let chain = &mut self.chains[index];
        *chain = Chain {
            state: ChainState::InFlight,
            buf: None,
            buf_in_kernel: true,
            file_offset_bytes: self.write_offset_bytes,
            written_bytes: 0,
            first_seq: self.staging_first_seq,
            last_seq: self.next_seq - 1,
            submitted: Instant::now(),
        };
        self.write_offset_bytes += len as u64;
        self.order.push_back(index);
        self.stats.commits += 1;
        self.push_chain(ring, index, buf);
    }

    fn push_chain(&mut self, ring: &mut Ring, index: usize, buf: Vec<u8>) {
        let chain = &self.chains[index];
        let write_token = self.token_base | (index as u64) << 1 | TOKEN_KIND_WRITE;
        let sync_token = (self.durability == Durability::Fsync)
            .then_some(self.token_base | (index as u64) << 1 | TOKEN_KIND_SYNC);
        // Ring slots are sized for every chain at once (constants.rs), so a
        // full ring here is a programmer error.
        if ring
            .write_then_datasync(
                &self.file,
                buf,
                chain.written_bytes,
                chain.file_offset_bytes,
                write_token,
                sync_token,
            )
            .is_err()
        {
            panic!("ring full: RING_SLOTS_MAX must cover every commit chain");
        }
    }

    /// True if `token` belongs to this WAL.
    pub fn owns(&self, token: u64) -> bool {
        token & !((1 << WAL_TOKEN_BITS) - 1) == self.token_base
    }

    /// Handles one completion of this WAL. Returns the new durable seq when
    /// the watermark advanced, so the caller can wake consumers at once.
    pub fn on_completion(
        &mut self,
        ring: &mut Ring,
        completion: Completion,
    ) -> Result<Option<u64>, WalError> {
        let low = completion.token & ((1 << WAL_TOKEN_BITS) - 1);
        let index = (low >> 1) as usize;
        let kind = low & 1;
        assert!(index < COMMIT_CHAINS_MAX);
        let result = completion.result;
        if kind == TOKEN_KIND_WRITE {
            let chain = &mut self.chains[index];
            assert!(matches!(chain.state, ChainState::InFlight));
            assert!(chain.buf_in_kernel);
            let buf = completion.buf.expect("a write hands its buffer back");
            chain.buf_in_kernel = false;
            let remaining = buf.len() - chain.written_bytes;
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
            chain.buf = Some(buf);
            if n < remaining {
                self.stats.short_writes += 1;
                match self.durability {
                    // The linked sync was cancelled; its completion follows.
                    Durability::Fsync => chain.state = ChainState::ShortWrite,
                    Durability::None => self.resubmit(ring, index),
                }
                return Ok(None);
            }
            if self.durability == Durability::None {
                self.chains[index].state = ChainState::Done;
            }
        } else {
            let chain = &mut self.chains[index];
            match chain.state {
                ChainState::ShortWrite if result == -libc::ECANCELED => {
                    self.resubmit(ring, index);
                    return Ok(None);
                }
                ChainState::InFlight | ChainState::ShortWrite if result < 0 => {
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
                    assert_eq!(
                        chain.written_bytes,
                        chain.buf.as_ref().map_or(0, |b| b.len())
                    );
                    chain.state = ChainState::Done;
                }
                state => panic!("sync completion in state {state:?}"),
            }
        }
        Ok(self.advance())
    }

    fn resubmit(&mut self, ring: &mut Ring, index: usize) {
        let chain = &mut self.chains[index];
        let buf = chain.buf.take().expect("buffer back from the short write");
        chain.state = ChainState::InFlight;
        chain.buf_in_kernel = true;
        self.push_chain(ring, index, buf);
    }

    /// Moves the watermark over every completed chain at the front.
    fn advance(&mut self) -> Option<u64> {
        let before = self.durable_seq;
        let now_ns = frame::now_ns();
        while let Some(&index) = self.order.front() {
            if self.chains[index].state != ChainState::Done {
                break;
            }
            self.order.pop_front();
            let chain = &mut self.chains[index];
            let mut buf = chain.buf.take().expect("done chain holds its buffer");
            assert_eq!(
                chain.first_seq,
                self.durable_seq + 1,
                "commits complete in order"
            );
            let elapsed_ns = chain.submitted.elapsed().as_nanos() as u64;
            self.stats
                .commit_latency_ns
                .saturating_record(elapsed_ns.max(1));
            let mut at = 0;
            while at < buf.len() {
                let (seq, ts, used) = frame::peek_header(&buf[at..]);
                debug_assert!(seq >= chain.first_seq && seq <= chain.last_seq);
                self.stats.append_to_durable_ns.record(ts, now_ns);
                if let Some(feed) = self.durable_feed.as_mut() {
                    if feed.len() == feed.capacity() {
                        feed.pop_front();
                    }
                    feed.push_back((seq, ts));
                }
                at += used;
            }
            self.durable_seq = chain.last_seq;
            self.durable_offset_bytes = chain.file_offset_bytes + buf.len() as u64;
            chain.state = ChainState::Idle;
            buf.clear();
            self.spares.push(buf);
        }
        (self.durable_seq != before).then_some(self.durable_seq)
    }

    fn rotate(&mut self) -> Result<(), WalError> {
        assert!(self.order.is_empty() && self.staging.is_empty());
        let header = SegmentHeader {
            shard: self.shard,
            first_seq: self.next_seq,
        };
        // The old file closes here; no operation on it is in flight.
        self.file = create_segment(&self.dir, header)?;
        self.segment_path = self.dir.join(segment::segment_file_name(self.next_seq));
        self.segment_first_seq = self.next_seq;
        self.write_offset_bytes = crate::constants::SEGMENT_HEADER_BYTES as u64;
        self.durable_offset_bytes = self.write_offset_bytes;
        self.rotate_pending = false;
        self.stats.segments_created += 1;
        Ok(())
    }
}
