//! Segment recovery: a shard directory holding one segment whose bytes
//! are the input, after a valid header or in place of one. The scan never
//! panics: it reports records, a torn tail, or why it refuses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringship::internals::wal::recovery::scan_shard;
use ringship::internals::wal::segment::{SegmentHeader, WalId, segment_file_name, shard_dir};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = shard_dir(tmp.path(), 0);
    std::fs::create_dir_all(&dir).unwrap();
    let mut bytes = Vec::new();
    if mode & 1 == 1 {
        // A valid header, so the records themselves are what is fuzzed.
        let salt = if mode & 2 == 2 { 0x5eed } else { 0 };
        bytes.extend_from_slice(&SegmentHeader::new(0, 1, WalId(7), salt).encode());
    }
    bytes.extend_from_slice(body);
    std::fs::write(dir.join(segment_file_name(1)), &bytes).unwrap();
    let _ = scan_shard(&dir, 0, |_| Ok(()));
});
