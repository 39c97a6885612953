//! A million lines through `ringship ship` and back out of `ringship dump`,
//! byte for byte, including empty lines, NUL, CR, invalid UTF-8 and lines of
//! exactly the maximum record size.

mod common;

use std::io::Write;

use common::{dump_lines, line, run, stderr, stdout};
use ringship::constants::RECORD_PAYLOAD_BYTES_MAX;

#[test]
fn a_million_lines_round_trip_byte_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("input.log");
    let wal = tmp.path().join("wal");
    let mut expected: Vec<Vec<u8>> = Vec::with_capacity(1_000_010);
    for i in 1..=1_000_000u64 {
        expected.push(if i % 1000 == 0 { Vec::new() } else { line(i) });
        if i % 333_333 == 0 {
            let mut max = vec![b'M'; RECORD_PAYLOAD_BYTES_MAX];
            max[0] = b'\0';
            max[RECORD_PAYLOAD_BYTES_MAX - 1] = b'\r';
            expected.push(max);
        }
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
    for l in &expected {
        f.write_all(l).unwrap();
        f.write_all(b"\n").unwrap();
    }
    f.into_inner().unwrap().sync_all().unwrap();

    let out = run(&[
        "ship",
        "--dir",
        wal.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "ship: {}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let n = expected.len() as u64;
    assert_eq!(summary["records"], n);
    assert_eq!(summary["last_durable_seq"], n);
    assert_eq!(summary["durability"], "fsync");

    let dumped = dump_lines(&wal);
    assert_eq!(dumped.len(), expected.len());
    for (i, (got, want)) in dumped.iter().zip(&expected).enumerate() {
        assert!(got == want, "record {} differs", i + 1);
    }
    let v = run(&["verify", "--dir", wal.to_str().unwrap()]);
    assert!(v.status.success(), "{}", stdout(&v));
    assert!(
        stdout(&v).contains(&format!("{n} records, seq 1..{n}")),
        "{}",
        stdout(&v)
    );
}

#[test]
fn a_line_over_the_maximum_is_refused_and_nothing_before_it_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("input.log");
    let wal = tmp.path().join("wal");
    let mut data = Vec::new();
    for i in 1..=100u64 {
        data.extend_from_slice(&line(i));
        data.push(b'\n');
    }
    data.extend(std::iter::repeat_n(b'L', RECORD_PAYLOAD_BYTES_MAX + 1));
    data.extend_from_slice(b"\nafter\n");
    std::fs::write(&input, &data).unwrap();

    let out = run(&[
        "ship",
        "--dir",
        wal.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "bad input exits 2");
    let err = stderr(&out);
    assert!(err.contains("input line 101"), "{err}");
    assert!(
        err.contains(&format!(
            "maximum record of {RECORD_PAYLOAD_BYTES_MAX} bytes"
        )),
        "{err}"
    );
    assert_eq!(dump_lines(&wal), (1..=100).map(line).collect::<Vec<_>>());
}

#[test]
fn a_final_line_without_newline_is_a_record_and_restart_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let wal = tmp.path().join("wal");
    for (input, last) in [("a\nb\nno-newline", 3), ("c\n", 4)] {
        let path = tmp.path().join("in");
        std::fs::write(&path, input).unwrap();
        let out = run(&[
            "ship",
            "--dir",
            wal.to_str().unwrap(),
            "--input",
            path.to_str().unwrap(),
            "--json",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(summary["last_durable_seq"], last);
    }
    let expected: Vec<Vec<u8>> = ["a", "b", "no-newline", "c"]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    assert_eq!(dump_lines(&wal), expected);
    let json = run(&[
        "dump",
        "--dir",
        wal.to_str().unwrap(),
        "--format",
        "json",
        "--from-seq",
        "3",
    ]);
    let rows: Vec<serde_json::Value> = json
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["seq"], 3);
    assert_eq!(rows[0]["payload"], "no-newline");
    assert!(rows[0]["append_ts_ns"].as_u64().unwrap() > 0);
}

#[test]
fn bad_flags_and_paths_get_clear_errors() {
    let out = run(&["ship"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--dir"), "{}", stderr(&out));
    let out = run(&["ship", "--dir", "/tmp/x", "--durability", "maybe"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["ship", "--dir", "/tmp/x", "--input", "/nonexistent/file"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/file"));
    // A negative timeout is refused up front, not a panic later.
    let out = run(&[
        "ship",
        "--dir",
        "/tmp/x",
        "--peer",
        "127.0.0.1:1",
        "--ack-timeout=-1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--ack-timeout"), "{}", stderr(&out));
    let out = run(&["verify", "--dir", "/nonexistent/dir"]);
    assert_eq!(out.status.code(), Some(2));
    let empty = tempfile::tempdir().unwrap();
    let out = run(&["dump", "--dir", empty.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no shard directories"),
        "{}",
        stderr(&out)
    );
    let out = run(&["--help"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("Examples"));
}

/// `--durability none` writes a small commit after an idle spell inline on
/// the core, and back-to-back commits through io_uring as usual: lines fed
/// slowly, then all at once, all come back in order.
#[test]
fn paced_and_burst_lines_in_durability_none_round_trip() {
    use std::process::{Command, Stdio};
    let tmp = tempfile::tempdir().unwrap();
    let wal = tmp.path().join("wal");
    let mut child = Command::new(common::bin())
        .args([
            "ship",
            "--dir",
            wal.to_str().unwrap(),
            "--durability",
            "none",
        ])
        .arg("--json")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for i in 1..=50u64 {
        stdin
            .write_all(&[line(i).as_slice(), b"\n"].concat())
            .unwrap();
        stdin.flush().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let burst: Vec<u8> = (51..=100_000u64)
        .flat_map(|i| [line(i), b"\n".to_vec()].concat())
        .collect();
    stdin.write_all(&burst).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["last_durable_seq"], 100_000);
    // The paced lines come one by one after idle spells: most are inline
    // commits (not only the very first, which always is).
    assert!(json["inline_commits"].as_u64().unwrap() >= 25, "{json}");
    assert!(dump_lines(&wal) == (1..=100_000).map(line).collect::<Vec<_>>());
}

/// A reader that goes away (`ringship verify | head -0`) costs the rest of
/// the report, not a panic: `ship` and `verify` keep the exit code their
/// work earned, and say nothing about the closed pipe. A stdout that fails
/// otherwise (`/dev/full`) is an error, exit 1.
#[test]
fn a_closed_stdout_drops_the_report_and_keeps_the_exit_code() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().to_str().unwrap();
    let closed_stdout = |args: &[&str], input: &[u8]| {
        let mut child = Command::new(common::bin())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The read end closes before the child writes its first line.
        drop(child.stdout.take());
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input).unwrap();
        drop(stdin);
        let o = child.wait_with_output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, err) = closed_stdout(
        &[
            "ship",
            "--dir",
            wal,
            "--durability",
            "none",
            "--report-durable",
        ],
        b"one\ntwo\nthree\n",
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let (code, err) = closed_stdout(&["verify", "--dir", wal], b"");
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("panicked") && err.is_empty(), "{err}");
    // A stdout that fails otherwise (a full disk) is not the reader's
    // choice: the report is dropped with one line on stderr, and the
    // command fails, since its output may be what a script reads.
    if let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") {
        let o = Command::new(common::bin())
            .args(["verify", "--dir", wal])
            .stdout(full)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains("writing the report to stdout"), "{err}");
    }
    // Nothing was lost for it.
    assert_eq!(
        dump_lines(dir.path()),
        vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
    );
}
