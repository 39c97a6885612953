//! The command line's conventions, checked on the real binary: every
//! numeric flag has a range, named when refused (exit 2); flags that mean
//! nothing without another say so; a failed `--json` run still prints JSON;
//! logs carry colour only on a terminal; messages say what was found.

mod common;

use std::process::{Command, Stdio};

use common::{bin, run, stderr, stdout};

fn ship(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut child = Command::new(bin())
        .args([
            "ship",
            "--dir",
            dir.to_str().unwrap(),
            "--durability",
            "none",
        ])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    // A child refusing its flags may exit before it reads: a broken pipe
    // here is that, not a failure.
    let _ = child.stdin.take().unwrap().write_all(b"one\n");
    child.wait_with_output().unwrap()
}

#[test]
fn numeric_flags_out_of_range_exit_2_naming_the_range() {
    let tmp = tempfile::tempdir().unwrap();
    for (args, says) in [
        (&["--ack-timeout", "1e20"][..], "0 to 86400"),
        (&["--ack-timeout", "-1"][..], "0 to 86400"),
        (&["--ack-timeout=-1"][..], "0 to 86400"),
        (&["--ack-timeout", "soon"][..], "not a duration"),
        (&["--cpu", "99"][..], "not a CPU here"),
        (&["--cpu", "4294967296"][..], "not a CPU here"),
        (&["--shard", "256"][..], "0..256"),
        (&["--retain-segments", "-1"][..], "--retain-segments"),
        (&["--spin-us", "10001"][..], "--spin-us"),
        (&["--cores", "0"][..], "--cores"),
        (&["--cores", "2"][..], "goes to one shard"),
    ] {
        let o = ship(tmp.path(), args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{args:?}: {}", stderr(&o));
    }
    for (args, says) in [
        (&["wal-bench", "--cpu", "64"][..], "not a CPU here"),
        (
            &["wal-bench", "--record-bytes", "2000000"][..],
            "--record-bytes",
        ),
        (&["wal-bench", "--duration", "0"][..], "out of range"),
        (&["wal-bench", "--rate", "0"][..], "out of range"),
        (&["bench", "--warmup", "-1"][..], "out of range"),
        (
            &["compare", "a", "--", "b", "--max-regression-pct", "-5"][..],
            "0 to 1000000",
        ),
        (&["dump", "--dir", "x", "--shard", "999"][..], "0..256"),
        (
            &["receive", "--dir", "x", "--listen", "unix:/tmp/r.sock"][..],
            "TCP only",
        ),
        (
            &["receive", "--dir", "x", "--listen", "7070"][..],
            "not HOST:PORT",
        ),
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
        // clap's tip to pass a negative value after `--` is wrong where `--`
        // starts compare's current reports.
        assert!(!stderr(&o).contains("use '-- "), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn durations_take_units_and_say_them_back() {
    let tmp = tempfile::tempdir().unwrap();
    // A peer that is not there: the ack timeout of 500 ms runs out.
    let o = ship(
        tmp.path(),
        &["--peer", "127.0.0.1:9", "--ack-timeout", "500ms"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("after waiting 500ms"), "{}", stderr(&o));
}

#[test]
fn flags_that_need_a_peer_say_so_and_a_bad_source_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let o = ship(tmp.path(), &["--retain-segments", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--retain-segments has no effect without --peer"),
        "{}",
        stderr(&o)
    );
    let o = ship(tmp.path(), &["--source", "../etc"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--source"), "{}", stderr(&o));
}

#[test]
fn a_failed_json_run_prints_a_json_error() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run(&[
        "ship",
        "--dir",
        tmp.path().to_str().unwrap(),
        "--input",
        "/nonexistent/input",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["exit_code"], 2);
    assert!(v["error"].as_str().unwrap().contains("/nonexistent/input"));
}

#[test]
fn wal_bench_refuses_a_directory_that_holds_a_wal() {
    let tmp = tempfile::tempdir().unwrap();
    let o = ship(tmp.path(), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = tmp.path().to_str().unwrap();
    let o = run(&[
        "wal-bench",
        "--dir",
        dir,
        "--records",
        "10",
        "--durability",
        "none",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("already holds a WAL"), "{}", stderr(&o));
    // Nothing was appended.
    assert_eq!(common::dump_lines(tmp.path()), vec![b"one".to_vec()]);
    let o = run(&[
        "wal-bench",
        "--dir",
        dir,
        "--records",
        "10",
        "--durability",
        "none",
        "--reuse-wal",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(common::dump_lines(tmp.path()).len(), 11);
}

#[test]
fn logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin())
        .args(["ship", "--dir", tmp.path().to_str().unwrap()])
        .args(["--peer", "127.0.0.1:9", "--ack-timeout", "0.3"])
        .env("RINGSHIP_LOG", "debug")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"x\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(!o.stderr.is_empty(), "debug logging printed nothing");
    assert!(!o.stderr.contains(&0x1b), "{}", stderr(&o));
}

#[test]
fn counts_are_singular_when_they_are_one() {
    let tmp = tempfile::tempdir().unwrap();
    let o = ship(tmp.path(), &[]);
    let text = stdout(&o);
    assert!(
        text.contains("shipped 1 record ")
            && text.contains("1 commit ")
            && text.contains("1 segment created"),
        "{text}"
    );
    let o = run(&["verify", "--dir", tmp.path().to_str().unwrap()]);
    assert!(
        stdout(&o).contains("shard 0: 1 segment, 1 record,"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_damaged_segment_header_is_reported_as_damaged() {
    let tmp = tempfile::tempdir().unwrap();
    let o = ship(tmp.path(), &[]);
    assert!(o.status.success());
    let segment = std::fs::read_dir(tmp.path().join("0"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "wal"))
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[9] ^= 0xaa; // inside the version field
    std::fs::write(&segment, bytes).unwrap();
    let o = run(&["verify", "--dir", tmp.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("the header is corrupt"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("format version"), "{}", stderr(&o));
}

#[test]
fn help_texts_describe_the_directories() {
    for command in ["receive", "dump", "verify"] {
        let o = run(&[command, "--help"]);
        let text = stdout(&o);
        let line = text
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("--dir"))
            .nth(1)
            .unwrap_or("");
        assert!(
            !line.trim().is_empty() && !line.trim_start().starts_with("--"),
            "{command}: {text}"
        );
    }
    let o = run(&["wal-bench", "--help"]);
    assert!(!stdout(&o).contains("until"), "{}", stdout(&o));
}
