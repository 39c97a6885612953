use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use clap::ValueEnum;
use serde::Serialize;

use super::{EXIT_OK, Failure, shards_to_read};
use crate::frame::{Kind, RecordRef};
use crate::wal::recovery::{self};
use crate::wal::segment::shard_dir;
use crate::wal::{ReadError, WalReader};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum DumpFormat {
    /// The payload of each data record, one per line, byte-exact; a line
    /// stored as continued pieces is printed whole.
    Text,
    /// One JSON object per record, control records included: shard, seq,
    /// append_ts_ns, kind, continued (when set) and payload (`payload` when
    /// it is UTF-8, else `payload_hex`).
    Json,
}

/// Print the records of a WAL, in seq order, shard by shard.
///
/// Text prints data records only (control records, such as a followed
/// file's checkpoints, with --all); JSON prints every record with its kind.
/// Reads only, without the writer's lock: a torn tail is reported on
/// stderr and not printed.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    ringship dump --dir wal > lines.txt\n  \
    ringship dump --dir wal --shard 0 --from-seq 1000 --format json | head")]
pub(super) struct DumpArgs {
    /// The WAL directory (for a receiver's: DIR/<source>).
    #[arg(long)]
    dir: PathBuf,
    /// Only this shard (default: every shard, in order), 0 to 255.
    #[arg(long, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(0..crate::constants::SHARDS_MAX as i64))]
    shard: Option<u32>,
    /// Skip records below this seq.
    #[arg(long, default_value_t = 0)]
    from_seq: u64,
    #[arg(long, value_enum, default_value_t = DumpFormat::Text)]
    format: DumpFormat,
    /// Text: print control records too, each as one line
    /// `# <kind> seq <N>: <payload>` (JSON always prints them).
    #[arg(long)]
    all: bool,
}

pub(super) fn run(args: DumpArgs) -> Result<i32, Failure> {
    let shards = shards_to_read(&args.dir, args.shard)?;
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
    for shard in shards {
        // A piece of a split line was printed and its line not ended yet.
        let mut open_line = false;
        let visit = |record: RecordRef<'_>| -> io::Result<()> {
            match args.format {
                DumpFormat::Text if record.kind == Kind::Data => {
                    out.write_all(record.payload)?;
                    // A piece of a split line: the next record goes on with it.
                    open_line = record.continued;
                    if record.continued {
                        Ok(())
                    } else {
                        out.write_all(b"\n")
                    }
                }
                DumpFormat::Text if args.all => {
                    let kind = serde_json::to_value(record.kind).expect("serialises");
                    write!(
                        out,
                        "# {} seq {}: ",
                        kind.as_str().unwrap_or("?"),
                        record.seq
                    )?;
                    out.write_all(&escape_newlines(record.payload))?;
                    out.write_all(b"\n")
                }
                DumpFormat::Text => Ok(()),
                DumpFormat::Json => write_json_record(&mut out, shard, &record),
            }
        };
        // The reader stops at the end of the records, so a dump costs what
        // the data costs, not the preallocated rest of the segment. Only
        // when it meets damage does recovery read the segment to judge it.
        let reader = WalReader::new(&args.dir, shard);
        let read = reader.records(args.from_seq, visit);
        // A split line whose last piece never came (a crash between its
        // pieces) still ends its line, so it never joins the next one.
        if open_line && let Err(e) = out.write_all(b"\n") {
            if e.kind() == io::ErrorKind::BrokenPipe {
                return Ok(EXIT_OK);
            }
            return Err(Failure::operating(e));
        }
        match read {
            Ok(None) => {}
            Ok(Some(stopped)) => {
                let _ = out.flush();
                match recovery::scan_shard(&shard_dir(&args.dir, shard), shard, |_| Ok(())) {
                    Ok(scan) => match &scan.torn {
                        Some(torn) => eprintln!(
                            "ringship: shard {shard}: torn tail at {} byte {} not printed: {}",
                            torn.segment.display(),
                            torn.offset_bytes,
                            torn.reason
                        ),
                        None => eprintln!(
                            "ringship: shard {shard}: stopped at {} byte {}: {}",
                            stopped.path.display(),
                            stopped.offset_bytes,
                            stopped.reason
                        ),
                    },
                    Err(e) => return Err(Failure::operating(e)),
                }
            }
            Err(ReadError::Io { source, .. }) if source.kind() == io::ErrorKind::BrokenPipe => {
                return Ok(EXIT_OK);
            }
            Err(e) => {
                let _ = out.flush();
                return Err(Failure::operating(e));
            }
        }
    }
    match out.flush() {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Failure::operating(e)),
        _ => Ok(EXIT_OK),
    }
}

fn write_json_record(out: &mut impl Write, shard: u32, record: &RecordRef<'_>) -> io::Result<()> {
    #[derive(Serialize)]
    struct Line<'a> {
        shard: u32,
        seq: u64,
        append_ts_ns: u64,
        kind: Kind,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        continued: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        payload: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        payload_hex: Option<String>,
    }
    let text = std::str::from_utf8(record.payload).ok();
    let line = Line {
        shard,
        seq: record.seq,
        append_ts_ns: record.append_ts_ns,
        kind: record.kind,
        continued: record.continued,
        payload: text,
        payload_hex: text.is_none().then(|| hex(record.payload)),
    };
    serde_json::to_writer(&mut *out, &line)?;
    out.write_all(b"\n")
}

/// A control record's payload on one text line: `\n` and `\\` escaped.
fn escape_newlines(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b => out.push(b),
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}
