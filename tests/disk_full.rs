//! A full disk: `ship` into a small tmpfs until a segment cannot be
//! reserved. It must exit 1 with a clear error (not hang), and everything it
//! reported durable must still be there and verify.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::{bin, dump_lines, run, stderr, stdout};

#[test]
fn full_disk_is_a_clear_error_and_loses_nothing_reported_durable() {
    let mnt = tempfile::tempdir().unwrap();
    let m = mnt.path().to_str().unwrap();
    // 80 MiB: room for one 64 MiB segment, not two.
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=80M", "tmpfs", m])
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("disk_full: SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    }
    let wal = mnt.path().join("wal");
    let mut child = Command::new(bin())
        .args(["ship", "--dir", wal.to_str().unwrap(), "--report-durable"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let line = b"a line of about forty bytes xxxxxxxxxxxx\n".repeat(1000);
        // ~100 MB, more than the tmpfs holds; stops when the child exits.
        for _ in 0..2500 {
            if stdin.write_all(&line).is_err() {
                break;
            }
        }
    });
    let mut promised = 0u64;
    for l in BufReader::new(child.stdout.take().unwrap()).lines() {
        if let Some(seq) = l.unwrap().strip_prefix("durable ") {
            promised = seq.parse().unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    let err = stderr(&out);

    let v = run(&["verify", "--dir", wal.to_str().unwrap()]);
    let held = dump_lines(&wal).len() as u64;
    let _ = Command::new("umount").arg(m).status();

    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("disk full"), "{err}");
    assert!(v.status.success(), "{}", stdout(&v));
    assert!(promised > 0);
    assert!(
        held >= promised,
        "reported {promised} durable, holds {held}"
    );
}
