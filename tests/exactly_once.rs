//! Exactly once under kills: stream 1,000,000 records from a `ship` process
//! to a `receive` process while SIGKILLing the receiver 3 times and the
//! shipper 3 times at seeded random points, restarting each. After a shipper
//! kill, feeding resumes from the first line its WAL does not hold (lines it
//! read but never made durable were never promised). At the end the
//! receiver holds exactly the input: nothing missing, nothing duplicated, in
//! order. Rerun a failure with RINGSHIP_SEED=<printed seed>.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Rng, bin, dump_lines, line, run, stdout};

const N: u64 = 1_000_000;
const CHUNK: u64 = 5_000;

/// Where the children's stderr goes: RINGSHIP_TEST_LOGS=DIR keeps it (with
/// RINGSHIP_LOG=info for detail), otherwise it is discarded.
fn child_stderr(name: &str) -> Stdio {
    match std::env::var("RINGSHIP_TEST_LOGS") {
        Ok(dir) => {
            std::fs::create_dir_all(&dir).unwrap();
            let path = format!("{dir}/{name}-{}.log", ringship::frame::now_ns());
            Stdio::from(std::fs::File::create(path).unwrap())
        }
        Err(_) => Stdio::null(),
    }
}

fn start_receiver(dir: &std::path::Path, listen: &str) -> (Child, String) {
    let mut child = Command::new(bin())
        .args([
            "receive",
            "--listen",
            listen,
            "--dir",
            dir.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(child_stderr("receive"))
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first
        .strip_prefix("listening on ")
        .and_then(|r| r.split_whitespace().next())
        .expect("listening line")
        .to_string();
    (child, addr)
}

fn start_shipper(wal: &std::path::Path, peer: &str) -> Child {
    Command::new(bin())
        .args([
            "ship",
            "--dir",
            wal.to_str().unwrap(),
            "--peer",
            peer,
            "--source",
            "src",
        ])
        .args(["--ack-timeout", "60"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(child_stderr("ship"))
        .spawn()
        .unwrap()
}

/// The last seq a WAL holds, from `ringship verify`.
fn wal_last_seq(wal: &std::path::Path) -> u64 {
    if !wal.join("0").exists() {
        return 0;
    }
    let out = run(&["verify", "--dir", wal.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stdout(&out));
    let text = stdout(&out);
    text.lines()
        .next()
        .and_then(|l| l.rsplit_once(".."))
        .and_then(|(_, last)| last.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_million_records_arrive_exactly_once_through_six_kills() {
    let mut rng = Rng::from_env("exactly_once");
    let tmp = tempfile::tempdir().unwrap();
    let recv_dir = tmp.path().join("recv");
    let wal = tmp.path().join("wal");
    let (mut receiver, addr) = start_receiver(&recv_dir, "127.0.0.1:0");
    let mut shipper = start_shipper(&wal, &addr);

    // Six kills at distinct random chunks, three of each side, in random order.
    let chunks = N / CHUNK;
    let mut kills: Vec<(u64, bool)> = Vec::new();
    while kills.len() < 6 {
        let at = 1 + rng.below(chunks - 2);
        if kills.iter().all(|&(c, _)| c != at) {
            let receiver_side = kills.iter().filter(|k| k.1).count() < 3
                && (kills.iter().filter(|k| !k.1).count() >= 3 || rng.below(2) == 0);
            kills.push((at, receiver_side));
        }
    }
    kills.sort_unstable();
    eprintln!("exactly_once: kills at chunks (chunk, receiver?) {kills:?}");

    let mut next = 1u64;
    let mut chunk_index = 0u64;
    while next <= N {
        let end = (next + CHUNK - 1).min(N);
        let mut buf = Vec::with_capacity(CHUNK as usize * 160);
        for i in next..=end {
            buf.extend_from_slice(&line(i));
            buf.push(b'\n');
        }
        let wrote = shipper.stdin.as_mut().unwrap().write_all(&buf).is_ok();
        assert!(wrote, "the shipper died on its own before line {next}");
        next = end + 1;
        chunk_index += 1;
        if let Some(&(_, receiver_side)) = kills.iter().find(|k| k.0 == chunk_index) {
            std::thread::sleep(Duration::from_millis(rng.below(50)));
            if receiver_side {
                receiver.kill().unwrap();
                receiver.wait().unwrap();
                std::thread::sleep(Duration::from_millis(rng.below(200)));
                receiver = start_receiver(&recv_dir, &addr).0;
            } else {
                shipper.kill().unwrap();
                shipper.wait().unwrap();
                let held = wal_last_seq(&wal);
                assert!(held < next, "the WAL holds more than was fed");
                next = held + 1;
                shipper = start_shipper(&wal, &addr);
            }
        }
    }
    drop(shipper.stdin.take());
    let status = shipper.wait().unwrap();
    assert!(
        status.success(),
        "the last shipper did not get everything acked"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(receiver.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(receiver.wait().unwrap().success());

    let got = dump_lines(&recv_dir.join("src"));
    assert_eq!(got.len() as u64, N, "records at the receiver");
    for (i, l) in got.iter().enumerate() {
        assert!(*l == line(i as u64 + 1), "record {} differs", i + 1);
    }
}
