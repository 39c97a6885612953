//! A full disk on either side, on a real tmpfs too small for a second
//! 64 MiB segment, then grown (`mount -o remount,size=`) as an operator
//! freeing space would.
//!
//! - The shipper's disk: `ship` says why and exits 1 (not a hang); every
//!   record it reported durable is there and the WAL verifies; once there
//!   is room, a restart ships every durable record.
//! - The receiver's disk: it stops storing, tells the shipper why with a
//!   Stop notice (both log it); the shipper keeps its records and retries
//!   with a growing backoff; both resume when there is room, and the
//!   receiver holds exactly the input.
//!
//! Mounting needs root: the tests skip without it, except where
//! RINGSHIP_REQUIRE_LOOP is set (CI), where they must run.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{RecvProc, bin, dump_lines, run, stderr, stdout};

/// Lines of 100 bytes with the newline: 800,000 of them (80 MB) overflow a
/// first 64 MiB segment.
const LINES: u64 = 800_000;

fn input_line(i: u64) -> Vec<u8> {
    let mut l = format!("{i:08}").into_bytes();
    l.resize(99, b'a' + (i % 26) as u8);
    l
}

fn write_input(path: &Path) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 1..=LINES {
        f.write_all(&input_line(i)).unwrap();
        f.write_all(b"\n").unwrap();
    }
    f.flush().unwrap();
}

/// A tmpfs mounted on a directory, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as mount(8) takes it) on `dir`; `None`
    /// (the test skips) without root, unless RINGSHIP_REQUIRE_LOOP is set.
    fn mount(dir: &Path, size: &str, test: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var_os("RINGSHIP_REQUIRE_LOOP").is_none(),
                "mounting a tmpfs failed, and RINGSHIP_REQUIRE_LOOP is set"
            );
            eprintln!("{test}: SKIPPED: cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(Tmpfs(dir.to_path_buf()))
    }

    /// Grows it: the operator freed space.
    fn grow(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success(), "remount {}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_under_the_shipper_exits_1_keeps_the_wal_and_a_restart_ships_it() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount(&tmp.path().join("disk"), "100M", "shipper full disk") else {
        return;
    };
    let input = tmp.path().join("input");
    write_input(&input);
    let wal = disk.0.join("wal");

    let out = run(&[
        "ship",
        "--dir",
        wal.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("disk full"), "{}", stderr(&out));
    let v = run(&["verify", "--dir", wal.to_str().unwrap()]);
    assert!(v.status.success(), "{}{}", stdout(&v), stderr(&v));
    let durable = dump_lines(&wal);
    assert!(
        durable.len() > 500_000 && (durable.len() as u64) < LINES,
        "{} records durable",
        durable.len()
    );
    for (i, l) in durable.iter().enumerate() {
        assert!(*l == input_line(i as u64 + 1), "record {} differs", i + 1);
    }

    disk.grow("300M");
    let recv_dir = tmp.path().join("recv");
    let receiver = RecvProc::start(&recv_dir, "127.0.0.1:0", "fsync");
    let out = run(&[
        "ship",
        "--dir",
        wal.to_str().unwrap(),
        "--peer",
        &receiver.addr,
        "--source",
        "s",
        "--input",
        "/dev/null",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    receiver.stop();
    assert!(
        dump_lines(&recv_dir.join("s")) == durable,
        "the receiver holds every durable record"
    );
}

#[test]
fn a_full_disk_under_the_receiver_stops_it_tells_the_shipper_and_both_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount(&tmp.path().join("disk"), "100M", "receiver full disk") else {
        return;
    };
    let input = tmp.path().join("input");
    write_input(&input);
    let recv_log = tmp.path().join("receive.log");
    let ship_log = tmp.path().join("ship.log");
    let receiver = RecvProc::start_logging(
        &disk.0.join("recv"),
        "127.0.0.1:0",
        "fsync",
        Stdio::from(std::fs::File::create(&recv_log).unwrap()),
    );
    let mut shipper = Command::new(bin())
        .args(["ship", "--dir"])
        .arg(tmp.path().join("wal"))
        .args(["--peer", &receiver.addr, "--source", "s", "--input"])
        .arg(&input)
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&ship_log).unwrap()))
        .spawn()
        .unwrap();

    // Both sides say why, and the shipper backs off rather than hammering.
    let told = "the receiver stopped storing this source: its disk is full";
    let deadline = Instant::now() + Duration::from_secs(120);
    let count = |path: &Path, what: &str| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .matches(what)
            .count()
    };
    while count(&ship_log, told) < 3 {
        assert!(
            Instant::now() < deadline,
            "the shipper was not told 3 times: {}",
            std::fs::read_to_string(&ship_log).unwrap_or_default()
        );
        assert!(shipper.try_wait().unwrap().is_none(), "the shipper exited");
        std::thread::sleep(Duration::from_millis(50));
    }
    let notices = Instant::now();
    assert!(count(&recv_log, "the shipper is told to retry later") >= 3);
    std::thread::sleep(Duration::from_secs(3));
    let in_3s = count(&ship_log, told);
    // At the shortest backoff (20 ms) it would be told about 40 more times
    // in those seconds; doubling to 2 s, a handful.
    assert!(
        in_3s - 3 <= 8,
        "told {in_3s} times within {:?}: no backoff",
        notices.elapsed()
    );

    disk.grow("300M");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = shipper.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the shipper did not finish");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&ship_log).unwrap_or_default()
    );
    receiver.stop();
    let got = dump_lines(&disk.0.join("recv").join("s"));
    assert_eq!(got.len() as u64, LINES);
    for (i, l) in got.iter().enumerate() {
        assert!(*l == input_line(i as u64 + 1), "record {} differs", i + 1);
    }
}

#[test]
fn full_disk_is_a_clear_error_and_loses_nothing_reported_durable() {
    let mnt = tempfile::tempdir().unwrap();
    // 80 MiB: room for one 64 MiB segment, not two.
    let Some(disk) = Tmpfs::mount(mnt.path(), "80M", "disk_full") else {
        return;
    };
    let wal = disk.0.join("wal");
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
    drop(disk);

    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("disk full"), "{err}");
    assert!(v.status.success(), "{}", stdout(&v));
    assert!(promised > 0);
    assert!(
        held >= promised,
        "reported {promised} durable, holds {held}"
    );
}
