use std::path::PathBuf;

use super::{EXIT_FAILURE, EXIT_OK, Failure, counted, shards_to_read};
use crate::wal::recovery::{self, ShardScan};
use crate::wal::segment::shard_dir;

/// Check every segment of every shard: headers, crc32c of every record, seq
/// continuity within and across segments.
///
/// Prints per shard the segments, record count, first and last seq and any
/// torn tail (which the writer cuts on its next start). Exits 1 on
/// corruption, with the segment and byte offset.
#[derive(clap::Args, Debug)]
#[command(after_help = "Example:\n  ringship verify --dir /var/lib/ringship")]
pub(super) struct VerifyArgs {
    /// The WAL directory (for a receiver's: DIR/<source>).
    #[arg(long)]
    dir: PathBuf,
}

pub(super) fn run(args: VerifyArgs) -> Result<i32, Failure> {
    let shards = shards_to_read(&args.dir, None)?;
    let mut corrupt = 0;
    for shard in shards {
        match recovery::scan_shard(&shard_dir(&args.dir, shard), shard, |_| Ok(())) {
            Ok(scan) => print_verify(&scan),
            Err(e) => {
                crate::outln!("shard {shard}: CORRUPT");
                eprintln!("ringship: error: shard {shard}: {e}");
                corrupt += 1;
            }
        }
    }
    if corrupt > 0 {
        crate::outln!("verify: {corrupt} shard(s) corrupt");
        return Ok(EXIT_FAILURE);
    }
    crate::outln!("verify: ok");
    Ok(EXIT_OK)
}

fn print_verify(scan: &ShardScan) {
    let seqs = match (scan.first_seq, scan.last_seq) {
        (Some(first), Some(last)) => format!("seq {first}..{last}"),
        _ => "no records".into(),
    };
    let control = if scan.control_records > 0 {
        format!(" ({} of them control)", scan.control_records)
    } else {
        String::new()
    };
    crate::outln!(
        "shard {}: {}, {}{control}, {seqs}",
        scan.shard,
        counted(scan.segments.len() as u64, "segment"),
        counted(scan.records, "record")
    );
    if !scan.wal_id.is_none() {
        crate::outln!("  WAL id {}", scan.wal_id);
    }
    if let Some(recorded) = scan.recorded {
        crate::outln!(
            "  recorded durable seq {}, acked seq {}",
            recorded.durable_seq,
            recorded.acked_seq
        );
    }
    for seg in &scan.segments {
        let name = seg
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let seqs = match seg.last_seq {
            Some(last) => format!("seq {}..{last}", seg.first_seq),
            None => "empty".into(),
        };
        crate::outln!(
            "  {name}  {}  {seqs}  {} data bytes",
            counted(seg.records, "record"),
            seg.data_end_bytes - crate::constants::SEGMENT_HEADER_BYTES as u64
        );
    }
    if let Some(torn) = &scan.torn {
        crate::outln!(
            "  torn tail: {} at byte {}: {}; {} bytes will be cut when the WAL next opens",
            torn.segment.display(),
            torn.offset_bytes,
            torn.reason,
            torn.cut_bytes
        );
    }
    for tmp in &scan.tmp_files {
        crate::outln!(
            "  leftover of an interrupted segment creation: {} (removed when the WAL next opens)",
            tmp.display()
        );
    }
}
