//! Reading a WAL back: a cursor by seq over one shard's segments.
//!
//! A sink reads the durable tail through a [`WalReader`]: it seeks to the
//! first record the peer lacks, reads chunks that end on record boundaries
//! and never pass the durable watermark ([`DurableTail`]), and moves on to
//! the next segment at the end of a sealed one. `dump` reads every record
//! of a shard through [`WalReader::records`]. Nothing outside `wal` lists,
//! opens or parses segment files.
//!
//! Segments were checked record by record when the writer opened the WAL
//! (recovery), and the writer wrote the rest itself, so the sink's walk
//! checks bounds only (`frame::Check::Trust`); the receiver verifies every
//! crc again. `dump`, which may read a WAL no writer opened, verifies.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::constants::{RECORD_HEADER_BYTES, SCAN_WINDOW_BYTES, SEGMENT_HEADER_BYTES};
use crate::frame::{self, DecodeError, RecordRef};
use crate::wal::segment::{SegmentHeader, parse_segment_file_name, segment_file_name, shard_dir};

/// What the writer has made durable, as a reader needs it: earlier segments
/// are durable in full, the current one up to `durable_offset_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurableTail {
    /// First seq of the segment being written.
    pub segment_first_seq: u64,
    /// The highest seq durable with everything before it.
    pub durable_seq: u64,
    /// File offset just past the last durable record of that segment.
    pub durable_offset_bytes: u64,
}

/// Why a read failed. A gap (the record asked for was deleted) is for a
/// person to look at; the rest are operating errors.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(
        "seq {wanted} is no longer in this WAL, whose oldest record is seq {oldest}: \
         retention deleted it"
    )]
    Gap { wanted: u64, oldest: u64 },
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{}: record at byte offset {offset_bytes} does not decode: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        offset_bytes: u64,
        reason: String,
    },
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ReadError {
    let path = path.to_path_buf();
    move |source| ReadError::Io { op, path, source }
}

/// Where a reader is: the next record to read.
#[derive(Debug)]
struct Cursor {
    segment_first_seq: u64,
    file: File,
    path: PathBuf,
    offset_bytes: u64,
    /// The segment's header: its salt seeds the crc of its records.
    header: SegmentHeader,
}

/// What [`WalReader::walk`] found in a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Walked {
    /// Bytes of whole records, from the chunk's start.
    pub bytes: usize,
    /// The chunk ends the segment's data (its unwritten space, or its end).
    pub end_of_segment: bool,
}

/// A cursor by seq over one shard's segments.
#[derive(Debug)]
pub struct WalReader {
    dir: PathBuf,
    cursor: Option<Cursor>,
}

impl WalReader {
    /// A reader of shard `shard` of the WAL in `dir`, not positioned yet.
    pub fn new(dir: &Path, shard: u32) -> WalReader {
        WalReader {
            dir: shard_dir(dir, shard),
            cursor: None,
        }
    }

    /// The first seqs of the shard's segments, in order.
    fn segments(&self) -> Result<Vec<u64>, ReadError> {
        let mut firsts = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io_error("read directory", &self.dir))? {
            let entry = entry.map_err(io_error("read directory", &self.dir))?;
            if let Some(first) = entry.file_name().to_str().and_then(parse_segment_file_name) {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        Ok(firsts)
    }

    fn open(&self, first_seq: u64) -> Result<Cursor, ReadError> {
        let path = self.dir.join(segment_file_name(first_seq));
        let file = File::open(&path).map_err(io_error("open segment", &path))?;
        let mut block = vec![0u8; SEGMENT_HEADER_BYTES];
        let n = file
            .read_at(&mut block, 0)
            .map_err(io_error("read segment", &path))?;
        let header = SegmentHeader::decode(&block[..n]).map_err(|reason| ReadError::Corrupt {
            path: path.clone(),
            offset_bytes: 0,
            reason: format!("bad segment header: {reason}"),
        })?;
        Ok(Cursor {
            segment_first_seq: first_seq,
            file,
            path,
            offset_bytes: SEGMENT_HEADER_BYTES as u64,
            header,
        })
    }

    /// Puts the cursor on record `seq`, or on the end of the durable data
    /// when `seq` is the next to be written. A seq older than every segment
    /// is a [`ReadError::Gap`].
    pub fn seek(&mut self, seq: u64, tail: DurableTail) -> Result<(), ReadError> {
        self.cursor = None;
        let segments = self.segments()?;
        let Some(&first) = segments.iter().rev().find(|&&first| first <= seq) else {
            return Err(ReadError::Gap {
                wanted: seq,
                oldest: segments.first().copied().unwrap_or(tail.durable_seq + 1),
            });
        };
        let mut cursor = self.open(first)?;
        let mut at_seq = first;
        let mut buf = vec![0u8; SCAN_WINDOW_BYTES];
        while at_seq < seq {
            let end = readable_end(&cursor, tail)?;
            let want = (end - cursor.offset_bytes).min(buf.len() as u64) as usize;
            let n = cursor
                .file
                .read_at(&mut buf[..want], cursor.offset_bytes)
                .map_err(io_error("read segment", &cursor.path))?;
            let mut walk = frame::Records::verified_seeded(&buf[..n], cursor.header.seed());
            while at_seq < seq {
                match walk.next() {
                    Some(Ok(record)) => {
                        debug_assert_eq!(record.seq, at_seq);
                        at_seq += 1;
                    }
                    _ => break,
                }
            }
            let walked = walk.offset();
            if walked == 0 {
                // `seq` lies past this segment's data: the next segment
                // starts there (or nothing durable exists yet beyond it).
                if at_seq == seq || !segments.contains(&at_seq) {
                    break;
                }
                cursor = self.open(at_seq)?;
                continue;
            }
            cursor.offset_bytes += walked as u64;
        }
        self.cursor = Some(cursor);
        Ok(())
    }

    /// Forgets the position, handing back the segment file so that a caller
    /// whose operations still name its fd can keep it open until they end.
    pub fn close(&mut self) -> Option<File> {
        self.cursor.take().map(|c| c.file)
    }

    fn cursor(&self) -> &Cursor {
        self.cursor.as_ref().expect("seek first")
    }

    /// First seq of the segment the cursor is in.
    pub fn segment_first_seq(&self) -> u64 {
        self.cursor().segment_first_seq
    }

    /// File offset of the cursor.
    pub fn offset_bytes(&self) -> u64 {
        self.cursor().offset_bytes
    }

    /// The segment file under the cursor (for splicing from it).
    pub fn file(&self) -> &File {
        &self.cursor().file
    }

    /// The salt of the segment under the cursor (0: none).
    pub fn segment_salt(&self) -> u64 {
        self.cursor().header.salt
    }

    /// The segment file's path, for errors.
    pub fn path(&self) -> &Path {
        &self.cursor().path
    }

    /// True if the cursor is in the segment being written.
    pub fn in_current_segment(&self, tail: DurableTail) -> bool {
        self.cursor
            .as_ref()
            .is_some_and(|c| c.segment_first_seq == tail.segment_first_seq)
    }

    /// How far the cursor's segment may be read: the durable offset for the
    /// segment being written, else the file's end.
    pub fn readable_end(&self, tail: DurableTail) -> Result<u64, ReadError> {
        readable_end(self.cursor(), tail)
    }

    /// Reads bytes at the cursor into `buf`; returns how many.
    pub fn read_at_cursor(&self, buf: &mut [u8]) -> Result<usize, ReadError> {
        let cursor = self.cursor();
        cursor
            .file
            .read_at(buf, cursor.offset_bytes)
            .map_err(io_error("read segment", &cursor.path))
    }

    /// Walks the records of `chunk` (bytes read at the cursor, which may
    /// end inside a record), the first of which must be `first_seq`, calling
    /// `take(seq, append_ts_ns, len)` for each until it returns false.
    /// Checks bounds and seq continuity only (see the module docs).
    pub fn walk(
        &self,
        chunk: &[u8],
        tail: DurableTail,
        first_seq: u64,
        mut take: impl FnMut(u64, u64, usize) -> bool,
    ) -> Result<Walked, ReadError> {
        let mut expected = first_seq;
        let cursor = self.cursor();
        let at_file_end = cursor.offset_bytes + chunk.len() as u64 >= readable_end(cursor, tail)?;
        let mut walk = frame::Records::trusted(chunk);
        loop {
            let rest = walk.rest();
            match walk.next() {
                None => {
                    return Ok(Walked {
                        bytes: chunk.len(),
                        end_of_segment: at_file_end,
                    });
                }
                Some(Ok(record)) => {
                    if record.seq != expected {
                        return Err(ReadError::Corrupt {
                            path: cursor.path.clone(),
                            offset_bytes: cursor.offset_bytes
                                + (walk.offset() - record.encoded_len_bytes()) as u64,
                            reason: format!("seq {} where {expected} was due", record.seq),
                        });
                    }
                    expected += 1;
                    if !take(record.seq, record.append_ts_ns, record.encoded_len_bytes()) {
                        let bytes = walk.offset() - record.encoded_len_bytes();
                        return Ok(Walked {
                            bytes,
                            end_of_segment: false,
                        });
                    }
                }
                Some(Err(DecodeError::TooLong { len_bytes })) => {
                    return Err(ReadError::Corrupt {
                        path: cursor.path.clone(),
                        offset_bytes: cursor.offset_bytes + walk.offset() as u64,
                        reason: format!("length field {len_bytes} over the maximum"),
                    });
                }
                Some(Err(stop)) => {
                    // Unwritten space (a zero header: not fewer zero bytes
                    // than a header, which may start a record's crc), or the
                    // few bytes left at a full segment's end: the segment's
                    // data ends. Otherwise the next record continues past
                    // what was read.
                    let zero_header =
                        stop == DecodeError::ZeroHeader && rest.len() >= RECORD_HEADER_BYTES;
                    let zeros_to_end = at_file_end && rest.iter().all(|&b| b == 0);
                    return Ok(Walked {
                        bytes: walk.offset(),
                        end_of_segment: zero_header || zeros_to_end,
                    });
                }
            }
        }
    }

    /// Moves the cursor over `bytes` bytes that were sent.
    pub fn advance(&mut self, bytes: u64) {
        self.cursor.as_mut().expect("seek first").offset_bytes += bytes;
    }

    /// Moves the cursor to the start of the segment that begins at
    /// `next_seq`, after the end of a sealed one.
    pub fn next_segment(&mut self, next_seq: u64) -> Result<(), ReadError> {
        let cursor = self.open(next_seq)?;
        self.cursor = Some(cursor);
        Ok(())
    }

    /// Visits every record from `from_seq` on, verifying each (its crc, its
    /// segment's header, seq continuity), in seq order across segments, and
    /// stops at the end of the valid data: unwritten space, or the end of the
    /// last segment. It reads what the records occupy, not the preallocated
    /// rest of a segment (`verify` checks that). Returns where and why it
    /// stopped early if the bytes there are neither records nor clean
    /// unwritten space, for the caller to have recovery judge them. Memory
    /// stays within one read window.
    pub fn records(
        &self,
        from_seq: u64,
        mut visit: impl FnMut(RecordRef<'_>) -> io::Result<()>,
    ) -> Result<Option<Stopped>, ReadError> {
        if !self.dir.exists() {
            return Ok(None);
        }
        let segments = self.segments()?;
        let mut buf = vec![0u8; SCAN_WINDOW_BYTES];
        let mut expected: Option<u64> = None;
        for (index, &first) in segments.iter().enumerate() {
            let stopped = |path: &Path, offset_bytes: u64, reason: String| {
                Ok(Some(Stopped {
                    path: path.to_path_buf(),
                    offset_bytes,
                    reason,
                }))
            };
            let cursor = self.open(first)?;
            if expected.is_some_and(|seq| seq != first) {
                return stopped(
                    &cursor.path,
                    0,
                    format!("the segment starts at seq {first}"),
                );
            }
            let skip = segments
                .get(index + 1)
                .is_some_and(|&next| next <= from_seq);
            let len = cursor
                .file
                .metadata()
                .map_err(io_error("stat segment", &cursor.path))?
                .len();
            let header_len = (SEGMENT_HEADER_BYTES as u64).min(len) as usize;
            cursor
                .file
                .read_exact_at(&mut buf[..header_len], 0)
                .map_err(io_error("read segment", &cursor.path))?;
            let seed = match SegmentHeader::decode(&buf[..header_len]) {
                Ok(header) if header.first_seq == first => header.seed(),
                Ok(header) => {
                    return stopped(
                        &cursor.path,
                        0,
                        format!("its header says first seq {}", header.first_seq),
                    );
                }
                Err(reason) => return stopped(&cursor.path, 0, reason),
            };
            expected = Some(first);
            if skip {
                // Its records are all below from_seq: the next segment says
                // where they end.
                expected = segments.get(index + 1).copied();
                continue;
            }
            let mut offset = cursor.offset_bytes;
            'segment: while offset < len {
                let want = (len - offset).min(buf.len() as u64) as usize;
                cursor
                    .file
                    .read_exact_at(&mut buf[..want], offset)
                    .map_err(io_error("read segment", &cursor.path))?;
                let at_file_end = offset + want as u64 == len;
                let mut walk = frame::Records::verified_seeded(&buf[..want], seed);
                loop {
                    let before = walk.offset();
                    match walk.next() {
                        None => {
                            offset += walk.offset() as u64;
                            break;
                        }
                        Some(Ok(record)) => {
                            let want_seq = expected.expect("set above");
                            if record.seq != want_seq {
                                return stopped(
                                    &cursor.path,
                                    offset + before as u64,
                                    format!("seq {} where {want_seq} was due", record.seq),
                                );
                            }
                            expected = Some(want_seq + 1);
                            if record.seq >= from_seq {
                                visit(record).map_err(io_error("write record", &cursor.path))?;
                            }
                        }
                        Some(Err(DecodeError::Truncated { .. })) if !at_file_end => {
                            // The record continues past this read.
                            offset += before as u64;
                            break;
                        }
                        Some(Err(e)) => {
                            // Clean unwritten space: zeros to the end of
                            // this read (or of the file).
                            if buf[before..want].iter().all(|&b| b == 0) {
                                break 'segment;
                            }
                            return stopped(&cursor.path, offset + before as u64, e.to_string());
                        }
                    }
                }
            }
        }
        Ok(None)
    }
}

/// Where and why [`WalReader::records`] stopped before the end of the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    pub path: PathBuf,
    pub offset_bytes: u64,
    pub reason: String,
}

fn readable_end(cursor: &Cursor, tail: DurableTail) -> Result<u64, ReadError> {
    if cursor.segment_first_seq == tail.segment_first_seq {
        Ok(tail.durable_offset_bytes)
    } else {
        cursor
            .file
            .metadata()
            .map(|m| m.len())
            .map_err(io_error("stat segment", &cursor.path))
    }
}
