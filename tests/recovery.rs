//! Recovery, one test per case of the table in `src/wal/recovery.rs`.
//!
//! Each test writes a real WAL through the io_uring core loop, damages the
//! segment file the way a crash or a bad disk would, then checks what the
//! scan reports, what `ringship verify` says and exits with, and that a
//! writer reopening the WAL continues (or refuses) correctly.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::{append, dump_lines, line, run, stderr, stdout};
use ringship::constants::SEGMENT_HEADER_BYTES;
use ringship::internals::frame;
use ringship::internals::wal::recovery::{RecoveryError, ShardScan, scan_shard};
use ringship::internals::wal::segment::{SegmentHeader, WalId, create_segment, shard_dir};
use ringship::internals::wal::{Durability, WalWriter, watermarks};

const N: u64 = 1000;

fn lines(range: std::ops::RangeInclusive<u64>) -> Vec<Vec<u8>> {
    range.map(line).collect()
}

fn scan(dir: &Path) -> Result<ShardScan, RecoveryError> {
    scan_shard(&shard_dir(dir, 0), 0, |_| Ok(()))
}

/// A fresh WAL holding records 1..=N in one segment; returns its path.
fn wal_with_n(dir: &Path) -> PathBuf {
    assert_eq!(append(dir, Durability::Fsync, &lines(1..=N)), N);
    let s = scan(dir).unwrap();
    assert_eq!(s.records, N);
    s.segments[0].path.clone()
}

/// Offset and length of record `seq` in a single-segment WAL of `line`s.
fn record_span(seq: u64) -> (u64, u64) {
    let mut at = SEGMENT_HEADER_BYTES as u64;
    for i in 1..seq {
        at += frame::encoded_len_bytes(line(i).len()) as u64;
    }
    (at, frame::encoded_len_bytes(line(seq).len()) as u64)
}

fn verify(dir: &Path) -> std::process::Output {
    run(&["verify", "--dir", dir.to_str().unwrap()])
}

/// Sets the durable seq the WAL recorded back to `seq`, as a crash leaves
/// it: the watermarks file trails the commits (it is written at most once
/// a second), so the records of the last commits may be torn without any
/// having been recorded durable. Damage at or below the recorded seq is
/// lost data instead (see `torn_records_the_wal_recorded_durable_are_lost`).
fn crash_with_recorded_durable(dir: &Path, seq: u64) {
    let sdir = shard_dir(dir, 0);
    let mut recorded = watermarks::read(&sdir).unwrap().expect("recorded");
    recorded.durable_seq = seq;
    recorded.acked_seq = recorded.acked_seq.min(seq);
    watermarks::write(&sdir, &recorded).unwrap();
}

/// After a torn tail (of records the WAL had not recorded durable yet):
/// verify passes and names it, a writer cuts it and continues from
/// `last + 1`, and dump shows exactly the survivors plus the new records.
fn assert_torn_then_continues(dir: &Path, last: u64, reason_part: &str) {
    crash_with_recorded_durable(dir, last);
    let s = scan(dir).unwrap();
    let torn = s.torn.as_ref().expect("a torn tail");
    assert!(torn.reason.contains(reason_part), "reason: {}", torn.reason);
    assert_eq!(s.last_seq, Some(last));
    let v = verify(dir);
    assert!(v.status.success(), "verify: {}{}", stdout(&v), stderr(&v));
    assert!(stdout(&v).contains("torn tail"), "{}", stdout(&v));

    assert_eq!(
        append(dir, Durability::Fsync, &lines(last + 1..=last + 10)),
        last + 10
    );
    let after = scan(dir).unwrap();
    assert!(after.torn.is_none(), "the writer cut the tail: {after:?}");
    assert_eq!(dump_lines(dir), lines(1..=last + 10));
}

#[test]
fn clean() {
    let tmp = tempfile::tempdir().unwrap();
    wal_with_n(tmp.path());
    let s = scan(tmp.path()).unwrap();
    assert!(s.torn.is_none());
    assert_eq!(
        (s.first_seq, s.last_seq, s.next_seq),
        (Some(1), Some(N), N + 1)
    );
    let v = verify(tmp.path());
    assert!(v.status.success());
    assert!(
        stdout(&v).contains(&format!("{N} records, seq 1..{N}")),
        "{}",
        stdout(&v)
    );
    // Reopening continues the sequence.
    let (writer, _) = WalWriter::open(
        tmp.path(),
        0,
        Durability::Fsync,
        ringship::internals::Owner::Wal,
    )
    .unwrap();
    assert_eq!(writer.next_seq(), N + 1);
    assert_eq!(writer.durable_seq(), N);
}

/// A segment is preallocated in full and a torn tail is zeroed in place,
/// never cut: a segment shorter than its size lost its end, even by a
/// byte. Refused (ship exits 3), naming the seqs lost.
#[test]
fn a_segment_cut_short_by_one_byte_is_refused_naming_the_lost_seqs() {
    let tmp = tempfile::tempdir().unwrap();
    let seg = wal_with_n(tmp.path());
    let (at, len) = record_span(N);
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(at + len - 1)
        .unwrap();
    match scan(tmp.path()) {
        Err(RecoveryError::Short {
            last_seq,
            missing_to,
            ..
        }) => assert_eq!((last_seq, missing_to), (N - 1, Some(N))),
        other => panic!("expected Short, got {other:?}"),
    }
    let before = std::fs::read(&seg).unwrap();
    let out = ship_nothing(tmp.path());
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("seqs {N} ..= {N} are lost")),
        "{}",
        stderr(&out)
    );
    let v = verify(tmp.path());
    assert_eq!(v.status.code(), Some(1), "{}", stdout(&v));
    assert_eq!(std::fs::read(&seg).unwrap(), before, "nothing was touched");
}

/// The case: most of a 1000-record segment cut away. What remains
/// is intact, but seqs past it were durable; they are named.
#[test]
fn a_segment_truncated_far_below_its_data_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let seg = wal_with_n(tmp.path());
    let (at, _) = record_span(301);
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(at + 10)
        .unwrap();
    let out = ship_nothing(tmp.path());
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("seqs 301 ..= {N} are lost")),
        "{}",
        stderr(&out)
    );
}

/// Deleting the only (last) segment leaves nothing to scan, but the WAL
/// recorded seqs durable: refused, naming them, and not restarted at seq 1.
#[test]
fn a_deleted_last_segment_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let seg = wal_with_n(tmp.path());
    std::fs::remove_file(&seg).unwrap();
    match scan(tmp.path()) {
        Err(RecoveryError::Lost {
            recorded, found, ..
        }) => assert_eq!((recorded, found), (N, 0)),
        other => panic!("expected Lost, got {other:?}"),
    }
    let out = ship_nothing(tmp.path());
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("seqs 1 ..= {N} are lost")),
        "{}",
        stderr(&out)
    );
    assert_eq!(verify(tmp.path()).status.code(), Some(1));
}

/// Records the WAL recorded durable that then read back damaged are lost,
/// not a torn tail: refused, naming them.
#[test]
fn torn_records_the_wal_recorded_durable_are_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let seg = wal_with_n(tmp.path());
    let (at, len) = record_span(N);
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(&vec![0; (len / 2) as usize], at + len - len / 2)
        .unwrap();
    let out = ship_nothing(tmp.path());
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("seqs {N} ..= {N} are lost")),
        "{}",
        stderr(&out)
    );
}

/// `ship` of no input on `dir`: opens (recovers) the WAL and exits.
fn ship_nothing(dir: &Path) -> std::process::Output {
    run(&[
        "ship",
        "--dir",
        dir.to_str().unwrap(),
        "--input",
        "/dev/null",
    ])
}

#[test]
fn torn_tail_bad_crc_on_last_record() {
    let tmp = tempfile::tempdir().unwrap();
    let seg = wal_with_n(tmp.path());
    let (at, len) = record_span(N);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&seg)
        .unwrap();
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, at + len - 1).unwrap();
    f.write_all_at(&[byte[0] ^ 0x01], at + len - 1).unwrap();
    assert_torn_then_continues(tmp.path(), N - 1, "crc32c mismatch");
}

#[test]
fn torn_tail_zeroed_second_half_of_last_record() {
    let tmp = tempfile::tempdir().unwrap();
    let seg = wal_with_n(tmp.path());
    let (at, len) = record_span(N);
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(&vec![0; (len / 2) as usize], at + len - len / 2)
        .unwrap();
    assert_torn_then_continues(tmp.path(), N - 1, "last record damaged");
}

#[test]
fn zeroed_preallocated_tail_ends_the_data_cleanly() {
    // The last record never reached the disk: its bytes read back as the
    // preallocated zeros. Nothing is damaged, so nothing is reported torn.
    let tmp = tempfile::tempdir().unwrap();
    let seg = wal_with_n(tmp.path());
    let (at, len) = record_span(N);
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(&vec![0; len as usize], at).unwrap();
    crash_with_recorded_durable(tmp.path(), N - 1);
    let s = scan(tmp.path()).unwrap();
    assert!(s.torn.is_none());
    assert_eq!(s.last_seq, Some(N - 1));
    assert_eq!(append(tmp.path(), Durability::Fsync, &lines(N..=N)), N);
    assert_eq!(dump_lines(tmp.path()), lines(1..=N));
}

#[test]
fn unsynced_data_after_unwritten_space_is_cut() {
    // A power cut with two commit chains in flight can persist the second
    // chain's pages but not the first's: zeros, then valid-looking records.
    // Nothing past the zeros was ever reported durable, so it is cut.
    let tmp = tempfile::tempdir().unwrap();
    let seg = wal_with_n(tmp.path());
    let (at, len) = record_span(N - 5);
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(&vec![0; len as usize], at).unwrap();
    assert_torn_then_continues(tmp.path(), N - 6, "never synced");
}

#[test]
fn corrupt_middle_is_refused_with_segment_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let seg = wal_with_n(tmp.path());
    let (at, _) = record_span(N / 2);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&seg)
        .unwrap();
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, at + 30).unwrap();
    f.write_all_at(&[byte[0] ^ 0x40], at + 30).unwrap();

    match scan(tmp.path()) {
        Err(RecoveryError::Corrupt {
            path,
            offset_bytes,
            expected_seq,
            ..
        }) => {
            assert_eq!((path, offset_bytes, expected_seq), (seg.clone(), at, N / 2));
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let v = verify(tmp.path());
    assert_eq!(v.status.code(), Some(1));
    let msg = stderr(&v);
    assert!(msg.contains(&seg.display().to_string()), "{msg}");
    assert!(msg.contains(&format!("byte offset {at}")), "{msg}");
    // The writer refuses too, and leaves the file untouched.
    let before = std::fs::read(&seg).unwrap();
    assert!(
        WalWriter::open(
            tmp.path(),
            0,
            Durability::Fsync,
            ringship::internals::Owner::Wal
        )
        .is_err()
    );
    let out = ship_nothing(tmp.path());
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(std::fs::read(&seg).unwrap(), before);
}

#[test]
fn valid_crc_with_wrong_seq_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut buf = Vec::with_capacity(1024);
    for seq in [1, 2, 4] {
        frame::encode_into(&mut buf, seq, 0, b"x");
    }
    write_segment(tmp.path(), 1, &buf);
    assert!(matches!(
        scan(tmp.path()),
        Err(RecoveryError::Corrupt {
            expected_seq: 3,
            ..
        })
    ));
}

/// Writes a segment holding records `seqs` by hand (for multi-segment cases
/// that would otherwise need 64 MiB of data each).
fn craft_segment(dir: &Path, first_seq: u64, seqs: std::ops::RangeInclusive<u64>) -> PathBuf {
    let mut buf = Vec::with_capacity(1 << 16);
    for seq in seqs {
        frame::encode_into(&mut buf, seq, 0, &line(seq));
    }
    write_segment(dir, first_seq, &buf)
}

/// Creates a real segment starting at `first_seq` and writes `records`
/// (already encoded) after its header.
fn write_segment(dir: &Path, first_seq: u64, records: &[u8]) -> PathBuf {
    let sdir = shard_dir(dir, 0);
    std::fs::create_dir_all(&sdir).unwrap();
    // Salt 0: the crafted records are unsalted; one WAL id for them all.
    let f = create_segment(&sdir, SegmentHeader::new(0, first_seq, WalId(7), 0)).unwrap();
    f.write_all_at(records, SEGMENT_HEADER_BYTES as u64)
        .unwrap();
    sdir.join(ringship::internals::wal::segment::segment_file_name(
        first_seq,
    ))
}

#[test]
fn gap_in_segment_sequence_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    craft_segment(tmp.path(), 1, 1..=10);
    craft_segment(tmp.path(), 11, 11..=20);
    let third = craft_segment(tmp.path(), 21, 21..=30);
    assert_eq!(scan(tmp.path()).unwrap().records, 30);
    assert_eq!(dump_lines(tmp.path()), lines(1..=30));

    std::fs::remove_file(shard_dir(tmp.path(), 0).join("00000000000000000011.wal")).unwrap();
    match scan(tmp.path()) {
        Err(RecoveryError::Gap {
            path,
            expected_seq,
            found_seq,
        }) => assert_eq!((path, expected_seq, found_seq), (third, 11, 21)),
        other => panic!("expected Gap, got {other:?}"),
    }
    let v = verify(tmp.path());
    assert_eq!(v.status.code(), Some(1));
    assert!(
        stderr(&v).contains("gap in the segment sequence"),
        "{}",
        stderr(&v)
    );
    assert!(
        WalWriter::open(
            tmp.path(),
            0,
            Durability::Fsync,
            ringship::internals::Owner::Wal
        )
        .is_err()
    );
}

#[test]
fn damage_in_a_segment_that_is_not_the_last_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let first = craft_segment(tmp.path(), 1, 1..=10);
    craft_segment(tmp.path(), 11, 11..=20);
    // Zero the first segment's last record's second half: in the last
    // segment this would be a torn tail, here it is loss of durable data.
    let (at, len) = record_span(10);
    OpenOptions::new()
        .write(true)
        .open(&first)
        .unwrap()
        .write_all_at(&vec![0; (len / 2) as usize], at + len - len / 2)
        .unwrap();
    assert!(matches!(
        scan(tmp.path()),
        Err(RecoveryError::Corrupt { .. })
    ));
    assert_eq!(verify(tmp.path()).status.code(), Some(1));
}

/// A middle segment cut short: the seqs up to the next segment are lost.
#[test]
fn a_middle_segment_cut_short_names_the_seqs_up_to_the_next() {
    let tmp = tempfile::tempdir().unwrap();
    let first = craft_segment(tmp.path(), 1, 1..=10);
    craft_segment(tmp.path(), 11, 11..=20);
    let (at, _) = record_span(4);
    OpenOptions::new()
        .write(true)
        .open(&first)
        .unwrap()
        .set_len(at + 3)
        .unwrap();
    match scan(tmp.path()) {
        Err(RecoveryError::Short {
            last_seq,
            missing_to,
            ..
        }) => assert_eq!((last_seq, missing_to), (3, Some(10))),
        other => panic!("expected Short, got {other:?}"),
    }
    let out = ship_nothing(tmp.path());
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("seqs 4 ..= 10 are lost"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_segment_header_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let seg = craft_segment(tmp.path(), 1, 1..=10);
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(b"X", 0).unwrap();
    assert!(matches!(
        scan(tmp.path()),
        Err(RecoveryError::BadHeader { .. })
    ));
    let v = verify(tmp.path());
    assert_eq!(v.status.code(), Some(1));
    assert!(stderr(&v).contains("bad magic"), "{}", stderr(&v));
}

#[test]
fn leftover_tmp_segment_is_removed_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    craft_segment(tmp.path(), 1, 1..=10);
    let leftover = shard_dir(tmp.path(), 0).join("00000000000000000011.wal.tmp");
    std::fs::write(&leftover, b"half-created").unwrap();
    let v = verify(tmp.path());
    assert!(v.status.success());
    assert!(stdout(&v).contains("leftover"), "{}", stdout(&v));
    assert_eq!(append(tmp.path(), Durability::Fsync, &lines(11..=12)), 12);
    assert!(!leftover.exists());
    assert_eq!(dump_lines(tmp.path()), lines(1..=12));
}

#[test]
fn rotation_across_real_segments_keeps_every_record() {
    // ~150 MiB of 64 KiB records: three segments written by the real writer.
    let tmp = tempfile::tempdir().unwrap();
    let payloads: Vec<Vec<u8>> = (0..2300u32)
        .map(|i| {
            let mut p = vec![(i % 251) as u8; 65536];
            p[..4].copy_from_slice(&i.to_le_bytes());
            p
        })
        .collect();
    assert_eq!(append(tmp.path(), Durability::None, &payloads), 2300);
    let s = scan(tmp.path()).unwrap();
    assert!(s.segments.len() >= 3, "{} segments", s.segments.len());
    assert_eq!(s.records, 2300);
    for pair in s.segments.windows(2) {
        assert_eq!(pair[0].last_seq.unwrap() + 1, pair[1].first_seq);
    }
    let mut seen = 0u32;
    scan_shard(&shard_dir(tmp.path(), 0), 0, |r| {
        assert_eq!(r.payload, &payloads[seen as usize][..]);
        seen += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, 2300);
}

#[test]
fn power_cut_hole_inside_the_last_commit_is_a_torn_tail() {
    // Pages of an unsynced commit reached the disk out of order: one aligned
    // sector near the end never arrived (reads as zeros), the records after
    // it did. None of them was ever acknowledged, so all are cut.
    let tmp = tempfile::tempdir().unwrap();
    let seg = wal_with_n(tmp.path());
    let (at, _) = record_span(N - 20);
    let sector = (at + 100).div_ceil(512) * 512;
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(&[0u8; 512], sector).unwrap();
    crash_with_recorded_durable(tmp.path(), N - 20);
    let s = scan(tmp.path()).unwrap();
    let torn = s.torn.clone().expect("torn");
    assert!(torn.reason.contains("never synced"), "{}", torn.reason);
    assert!(torn.offset_bytes <= sector);
    let last = s.last_seq.unwrap();
    assert!((N - 20..N - 10).contains(&last), "last {last}");
    assert_torn_then_continues(tmp.path(), last, "never synced");
}

/// Two tears of an unsynced commit that the seeded simulator (`src/sim`)
/// found recovery refusing, with no zero sector to mark them: a sector
/// whose first bytes were synced and whose rest never reached the disk
/// (zeros from inside a record to the sector's end, then the rest of the
/// commit), and a write cut short mid-record while the next commit landed
/// (zeros from inside a record to its end). Above the durable seq the WAL
/// recorded they are torn tails; at or below it, the same bytes are
/// corruption of durable data, refused.
#[test]
fn unsynced_tears_without_a_zero_sector_are_torn_above_the_recorded_durable_seq() {
    // A record near the end that crosses a sector boundary.
    let seq = (N - 40..N - 5)
        .find(|&seq| {
            let (at, len) = record_span(seq);
            let boundary = (at + 1).div_ceil(512) * 512;
            boundary < at + len && boundary - at >= 16
        })
        .expect("a record across a sector boundary");
    let (at, len) = record_span(seq);
    let boundary = (at + 1).div_ceil(512) * 512;
    // (case, zeroed byte range)
    let cases = [
        // Its sector's new version never arrived: zeros from inside the
        // record to the boundary; the rest of the commit did arrive.
        ("sector half synced", (at + (boundary - at) / 2, boundary)),
        // The write was cut short mid-record; the next commit landed.
        ("write cut short", (at + len / 2, at + len)),
    ];
    for (case, (from, to)) in cases {
        for recorded in [seq - 1, N] {
            let tmp = tempfile::tempdir().unwrap();
            let seg = wal_with_n(tmp.path());
            let f = OpenOptions::new().write(true).open(&seg).unwrap();
            f.write_all_at(&vec![0; (to - from) as usize], from)
                .unwrap();
            if recorded < N {
                assert_torn_then_continues(tmp.path(), seq - 1, "");
            } else {
                match scan(tmp.path()) {
                    Err(RecoveryError::Corrupt { expected_seq, .. }) => {
                        assert_eq!(expected_seq, seq, "{case}")
                    }
                    other => panic!("{case}: expected Corrupt, got {other:?}"),
                }
            }
        }
    }
}

#[test]
fn damage_deeper_than_the_in_flight_window_is_refused() {
    // Unwritten space followed by more than RECOVERY_TORN_WINDOW_BYTES of
    // data cannot be an unsynced tail: that much is never in flight.
    use ringship::constants::RECOVERY_TORN_WINDOW_BYTES;
    let tmp = tempfile::tempdir().unwrap();
    let payload = vec![b'p'; 4000];
    let count = (RECOVERY_TORN_WINDOW_BYTES / 4000 + 100) as u64;
    let mut buf = Vec::with_capacity(count as usize * 4100);
    for seq in 1..=count {
        frame::encode_into(&mut buf, seq, 0, &payload);
    }
    // Zero record 10 entirely.
    let rec = frame::encoded_len_bytes(payload.len());
    buf[9 * rec..10 * rec].fill(0);
    write_segment(tmp.path(), 1, &buf);
    match scan(tmp.path()) {
        Err(RecoveryError::Corrupt { expected_seq, .. }) => assert_eq!(expected_seq, 10),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// Runs a command, true if it exited 0.
fn sh(cmd: &str, args: &[&str]) -> bool {
    std::process::Command::new(cmd)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Unmounts on drop, so a failed assertion does not leave a mount behind.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = sh("umount", &[self.0.to_str().unwrap()]);
    }
}

/// After a failed fdatasync, Linux keeps the pages that never reached the
/// disk cached and clean, so a restart reading through the cache would
/// trust records the disk lost. There is no failing disk here, so this
/// makes the same state: a WAL on an ext4 loop mount, fully synced and
/// cached, whose records are then zeroed in the backing image underneath
/// the filesystem. Recovery must read the disk's zeros (a torn tail at the
/// first record), not the cache's records.
#[test]
fn records_only_the_page_cache_holds_are_not_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("ext4.img");
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    // Room for one 64 MiB segment.
    std::fs::File::create(&image)
        .unwrap()
        .set_len(160 << 20)
        .unwrap();
    let (img, m) = (image.to_str().unwrap(), mnt.to_str().unwrap());
    // 4 KiB blocks, as filefrag -b4096 counts them (mke2fs would pick 1 KiB
    // for a filesystem this small).
    if !sh("mkfs.ext4", &["-q", "-F", "-b", "4096", img]) || !sh("mount", &["-o", "loop", img, m]) {
        // CI sets RINGSHIP_REQUIRE_LOOP, so that there this is never skipped.
        assert!(
            std::env::var_os("RINGSHIP_REQUIRE_LOOP").is_none(),
            "mkfs.ext4 or the loop mount failed, and RINGSHIP_REQUIRE_LOOP is set"
        );
        eprintln!(
            "records_only_the_page_cache_holds: SKIPPED: no mkfs.ext4 or loop mount here (needs root)"
        );
        return;
    }
    let _mounted = Mount(mnt.clone());
    let wal = mnt.join("wal");
    let segment = wal_with_n(&wal);

    // Where the segment's first extent lies in the image (filefrag counts
    // in 4 KiB blocks of the loop device, which are the image's).
    let out = std::process::Command::new("filefrag")
        .args(["-v", "-b4096", segment.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let first_extent = text
        .lines()
        .find(|l| l.trim_start().starts_with("0:"))
        .unwrap_or_else(|| panic!("no first extent in filefrag's output:\n{text}"));
    // "   0:        0..    16383:      34816..     51199:  16384: ..."
    let physical_block: u64 = first_extent
        .split(':')
        .nth(2)
        .unwrap()
        .trim()
        .split("..")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Zero the first 4 KiB of records on the "disk", under the
    // filesystem's cache: record 1 then starts with a zero header. The
    // extent must cover that block, or the offset is wrong.
    let extent_blocks: u64 = first_extent
        .split(':')
        .nth(3)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        extent_blocks * 4096 >= SEGMENT_HEADER_BYTES as u64 + 4096,
        "{first_extent}"
    );
    let backing = OpenOptions::new().write(true).open(&image).unwrap();
    let at = physical_block * 4096 + SEGMENT_HEADER_BYTES as u64;
    backing.write_all_at(&[0u8; 4096], at).unwrap();
    backing.sync_all().unwrap();

    // Through the cache the records are still all there...
    let cached = std::fs::read(&segment).unwrap();
    assert_ne!(
        &cached[SEGMENT_HEADER_BYTES..SEGMENT_HEADER_BYTES + 64],
        &[0u8; 64][..],
        "the cache was dropped before the test could check anything"
    );
    // ...and a read-only scan (verify, dump) still reads through it: it
    // may run beside a live writer, whose cached tail it must not drop.
    assert_eq!(scan(&wal).unwrap().records, N);
    // But a writer reopening the WAL reads the disk: nothing valid after
    // the header, so a torn tail, cut. (The fdatasync that failed would
    // have recorded nothing durable.)
    crash_with_recorded_durable(&wal, 0);
    let (writer, recovered) =
        WalWriter::open(&wal, 0, Durability::Fsync, ringship::internals::Owner::Wal).unwrap();
    assert_eq!(
        recovered.records, 0,
        "the writer trusted records only the page cache held"
    );
    assert!(recovered.torn.is_some());
    assert_eq!(writer.durable_seq(), 0);
    drop(writer);
    assert!(dump_lines(&wal).is_empty());
}

/// `--durability none` promises only a process crash's survival: after a
/// machine crash its recorded durable seq may be ahead of the disk. That
/// shortfall is the loss the mode accepts, not a refusal.
#[test]
fn a_durability_none_wal_may_end_below_what_it_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(append(tmp.path(), Durability::None, &lines(1..=N)), N);
    let recorded = watermarks::read(&shard_dir(tmp.path(), 0))
        .unwrap()
        .unwrap();
    assert!(recorded.page_cache_only);
    assert_eq!(recorded.durable_seq, N);
    // The last 10 records never reached the disk: zeros.
    let seg = scan(tmp.path()).unwrap().segments[0].path.clone();
    let (at, _) = record_span(N - 9);
    let (end, len) = record_span(N);
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .write_all_at(&vec![0; (end + len - at) as usize], at)
        .unwrap();
    assert_eq!(scan(tmp.path()).unwrap().last_seq, Some(N - 10));
    assert_eq!(
        append(tmp.path(), Durability::Fsync, &lines(N - 9..=N)),
        N,
        "the WAL opens and continues"
    );
    assert_eq!(dump_lines(tmp.path()), lines(1..=N));
}

/// A record whose crc holds but whose kind this build does not know was
/// written by a newer ringship: refused, never zeroed as a torn tail.
#[test]
fn a_record_of_an_unknown_kind_is_refused_not_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let mut buf = Vec::with_capacity(1024);
    for seq in 1..=3 {
        frame::encode_into(&mut buf, seq, 0, b"x");
    }
    // Record 3 with kind 5 in its length field, crc recomputed.
    let at = 2 * frame::encoded_len_bytes(1);
    buf[at + 7] = 5;
    let crc = crc32c::crc32c(&buf[at + 4..]);
    buf[at..at + 4].copy_from_slice(&crc.to_le_bytes());
    let seg = write_segment(tmp.path(), 1, &buf);
    match scan(tmp.path()) {
        Err(RecoveryError::Corrupt { reason, .. }) => {
            assert!(reason.contains("newer ringship"), "{reason}")
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let before = std::fs::read(&seg).unwrap();
    assert_eq!(ship_nothing(tmp.path()).status.code(), Some(3));
    assert_eq!(std::fs::read(&seg).unwrap(), before);
}

/// Retention records the acked seq before it deletes anything: at the
/// moment a segment is gone, the watermarks file already says it was
/// acknowledged, so a crash then cannot make the WAL's head look lost.
#[test]
fn retention_records_the_acked_seq_before_it_deletes() {
    let tmp = tempfile::tempdir().unwrap();
    craft_segment(tmp.path(), 1, 1..=10);
    craft_segment(tmp.path(), 11, 11..=20);
    craft_segment(tmp.path(), 21, 21..=30);
    let (mut wal, _) = WalWriter::open(
        tmp.path(),
        0,
        Durability::Fsync,
        ringship::internals::Owner::Wal,
    )
    .unwrap();
    let sdir = shard_dir(tmp.path(), 0);
    assert_eq!(watermarks::read(&sdir).unwrap().unwrap().acked_seq, 0);
    wal.note_acked(25);
    assert_eq!(wal.retain(25, 0), 2);
    // Still open: only retention can have written this.
    let recorded = watermarks::read(&sdir).unwrap().unwrap();
    assert!(recorded.acked_seq >= 20, "{recorded:?}");
    // What a crash now leaves opens: the head was acknowledged.
    let s = scan(tmp.path()).unwrap();
    assert_eq!(s.first_seq, Some(21));
    drop(wal);
}

/// A version-1 WAL whose head retention deleted has recorded nothing: the
/// first version-2 open takes the oldest segment's start as acknowledged,
/// so the next open does not take the head for lost.
#[test]
fn a_version_1_wal_with_its_head_deleted_opens_twice() {
    let tmp = tempfile::tempdir().unwrap();
    craft_segment(tmp.path(), 11, 11..=20);
    for _ in 0..2 {
        let (wal, found) = WalWriter::open(
            tmp.path(),
            0,
            Durability::Fsync,
            ringship::internals::Owner::Wal,
        )
        .unwrap();
        assert_eq!(found.first_seq, Some(11));
        drop(wal);
    }
    assert!(verify(tmp.path()).status.success());
}
