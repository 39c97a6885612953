//! Lines: each line of an input stream becomes one record in a shard's
//! inbox.
//!
//! [`feed_lines`] makes each line, without its `\n`, one record. A line is
//! bytes, not text: NUL, CR and invalid UTF-8 pass through byte-exact. A final
//! line without a newline is still a record (Filebeat never ships one).
//!
//! A line longer than the maximum record is refused ([`IngestError::LineTooLong`])
//! unless [`LineOptions::split_long_lines`] is set: then it is stored as
//! pieces of at most the maximum record, each but the last marked
//! continued, and `ringship dump` prints it back whole. `ship --input`
//! refuses (a pipe of lines that long is more likely a mistake); a followed
//! log file, which cannot be asked to change, splits.
//!
//! Whatever one read(2) returns is handed to the core at once: there is no
//! timer and no minimum batch, so a lone line typed at a terminal is appended
//! as soon as it arrives, and a fast pipe still yields large batches.

use std::io::{self, Read};

use crate::constants::{INPUT_READ_BYTES, RECORD_PAYLOAD_BYTES_MAX};
use crate::frame::{Kind, now_ns};
use crate::shard::{Batch, CoreGone, InboxSender};

/// What a producer handed over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Lines (a split line counts once).
    pub lines: u64,
    pub payload_bytes: u64,
    /// Records that hold a piece of a split line other than its last.
    pub continued_pieces: u64,
}

/// How lines become records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineOptions {
    /// Store a line longer than the maximum record as continued pieces
    /// instead of refusing it.
    pub split_long_lines: bool,
}

/// Why a producer stopped. Every line before the failing one was handed to
/// the core, which makes it durable before it stops.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("reading input: {0}")]
    Read(io::Error),
    #[error(
        "input line {line} is longer than the maximum record of {RECORD_PAYLOAD_BYTES_MAX} bytes \
         (at least {len_bytes} bytes without a newline); the {lines_before} lines before it were accepted"
    )]
    LineTooLong {
        line: u64,
        len_bytes: usize,
        lines_before: u64,
    },
    #[error(transparent)]
    CoreGone(#[from] CoreGone),
}

struct Feeder<'a> {
    sender: &'a InboxSender,
    batch: Option<Batch>,
    report: IngestReport,
    options: LineOptions,
}

impl Feeder<'_> {
    fn push(&mut self, ts: u64, line: &[u8]) -> Result<(), IngestError> {
        self.push_piece(ts, false, line)
    }

    /// One record: a whole line, or (`continued`) a piece of one.
    fn push_piece(&mut self, ts: u64, continued: bool, line: &[u8]) -> Result<(), IngestError> {
        if self.batch.as_ref().is_some_and(|b| !b.has_room(line.len())) {
            self.flush()?;
        }
        if self.batch.is_none() {
            self.batch = Some(self.sender.take()?);
        }
        let batch = self.batch.as_mut().expect("taken above");
        batch
            .push_kind(ts, Kind::Data, continued, line)
            .expect("lines are bounded before push");
        if continued {
            self.report.continued_pieces += 1;
        } else {
            self.report.lines += 1;
        }
        self.report.payload_bytes += line.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), IngestError> {
        if let Some(batch) = self.batch.take() {
            if batch.is_empty() {
                self.batch = Some(batch);
            } else {
                self.sender.send(batch)?;
            }
        }
        Ok(())
    }
}

/// Reads `input` to EOF, one record per line, into a shard's inbox.
/// Lines accepted before a failure are still handed over: nothing is lost.
pub fn feed_lines(input: impl Read, sender: &InboxSender) -> Result<IngestReport, IngestError> {
    feed_lines_with(input, sender, LineOptions::default())
}

/// [`feed_lines`] with options.
pub fn feed_lines_with(
    input: impl Read,
    sender: &InboxSender,
    options: LineOptions,
) -> Result<IngestReport, IngestError> {
    let mut feeder = Feeder {
        sender,
        batch: None,
        report: IngestReport::default(),
        options,
    };
    let result = feed_lines_inner(input, &mut feeder);
    let flushed = feeder.flush();
    result?;
    flushed?;
    Ok(feeder.report)
}

fn feed_lines_inner(mut input: impl Read, feeder: &mut Feeder<'_>) -> Result<(), IngestError> {
    let mut chunk = vec![0u8; INPUT_READ_BYTES];
    // The start of a line whose newline has not arrived yet.
    let mut carry: Vec<u8> = Vec::with_capacity(RECORD_PAYLOAD_BYTES_MAX);
    loop {
        let n = match input.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(IngestError::Read(e)),
        };
        let ts = now_ns();
        let mut rest = &chunk[..n];
        while let Some(nl) = memchr::memchr(b'\n', rest) {
            let line = &rest[..nl];
            if carry.is_empty() && line.len() <= RECORD_PAYLOAD_BYTES_MAX {
                feeder.push(ts, line)?;
            } else {
                extend_line(&mut carry, line, ts, feeder)?;
                feeder.push(ts, &carry)?;
                carry.clear();
            }
            rest = &rest[nl + 1..];
        }
        extend_line(&mut carry, rest, ts, feeder)?;
        feeder.flush()?;
    }
    if !carry.is_empty() {
        feeder.push(now_ns(), &carry)?;
    }
    Ok(())
}

/// Adds `more` to the line held in `carry` (at most the maximum record):
/// when it would not fit, either refuses the line or, when splitting, hands
/// over full pieces marked continued, keeping the rest. `carry` is never
/// left empty after a piece was handed over, so the line's last piece
/// (continued unset) always has bytes.
fn extend_line(
    carry: &mut Vec<u8>,
    mut more: &[u8],
    ts: u64,
    feeder: &mut Feeder<'_>,
) -> Result<(), IngestError> {
    if !feeder.options.split_long_lines {
        check_len(carry.len() + more.len(), feeder)?;
        carry.extend_from_slice(more);
        return Ok(());
    }
    while carry.len() + more.len() > RECORD_PAYLOAD_BYTES_MAX {
        let take = RECORD_PAYLOAD_BYTES_MAX - carry.len();
        carry.extend_from_slice(&more[..take]);
        feeder.push_piece(ts, true, carry)?;
        carry.clear();
        more = &more[take..];
    }
    carry.extend_from_slice(more);
    Ok(())
}

fn check_len(len_bytes: usize, feeder: &Feeder<'_>) -> Result<(), IngestError> {
    if len_bytes > RECORD_PAYLOAD_BYTES_MAX {
        return Err(IngestError::LineTooLong {
            line: feeder.report.lines + 1,
            len_bytes,
            lines_before: feeder.report.lines,
        });
    }
    Ok(())
}
