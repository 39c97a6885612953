//! Lines: each line of an input stream becomes one record in a shard's
//! inbox.
//!
//! [`feed_lines`] makes each line, without its `\n`, one record. A line is
//! bytes, not text: NUL, CR and invalid UTF-8 pass through byte-exact. A final
//! line without a newline is still a record (Filebeat never ships one).
//!
//! Whatever one read(2) returns is handed to the core at once: there is no
//! timer and no minimum batch, so a lone line typed at a terminal is appended
//! as soon as it arrives, and a fast pipe still yields large batches.

use std::io::{self, Read};

use crate::constants::{INPUT_READ_BYTES, RECORD_PAYLOAD_BYTES_MAX};
use crate::frame::now_ns;
use crate::shard::{Batch, CoreGone, InboxSender};

/// What a producer handed over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestReport {
    pub lines: u64,
    pub payload_bytes: u64,
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
}

impl Feeder<'_> {
    fn push(&mut self, ts: u64, line: &[u8]) -> Result<(), IngestError> {
        if self.batch.as_ref().is_some_and(|b| !b.has_room(line.len())) {
            self.flush()?;
        }
        if self.batch.is_none() {
            self.batch = Some(self.sender.take()?);
        }
        let batch = self.batch.as_mut().expect("taken above");
        batch.push(ts, line).expect("lines are bounded before push");
        self.report.lines += 1;
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
    let mut feeder = Feeder {
        sender,
        batch: None,
        report: IngestReport::default(),
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
            if carry.is_empty() {
                check_len(line.len(), feeder)?;
                feeder.push(ts, line)?;
            } else {
                check_len(carry.len() + line.len(), feeder)?;
                carry.extend_from_slice(line);
                feeder.push(ts, &carry)?;
                carry.clear();
            }
            rest = &rest[nl + 1..];
        }
        check_len(carry.len() + rest.len(), feeder)?;
        carry.extend_from_slice(rest);
        feeder.flush()?;
    }
    if !carry.is_empty() {
        feeder.push(now_ns(), &carry)?;
    }
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
