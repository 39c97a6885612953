//! Exactly once under kills: stream 1,000,000 records from a `ship` process
//! to a `receive` process while SIGKILLing the receiver 3 times and the
//! shipper 3 times at seeded random points, restarting each. After a shipper
//! kill, feeding resumes from the first line its WAL does not hold (lines it
//! read but never made durable were never promised). At the end the
//! receiver holds exactly the input: nothing missing, nothing duplicated, in
//! order. Rerun a failure with RINGSHIP_SEED=<printed seed>.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{RecvProc, Rng, bin, child_stderr, dump_lines, line, run, stdout};

const N: u64 = 1_000_000;
const CHUNK: u64 = 5_000;

fn start_shipper(wal: &std::path::Path, peer: &str, send_mode: &str) -> Child {
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
        .args(["--ack-timeout", "60", "--send-mode", send_mode])
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
    let mut receiver = RecvProc::start(&recv_dir, "127.0.0.1:0", "fsync");
    let addr = receiver.addr.clone();
    // Each run draws its send mode from the seed, so runs cover all three;
    // RINGSHIP_SEND_MODE picks one.
    let drawn = ["splice", "copy", "zc"][rng.below(3) as usize];
    let chosen = std::env::var("RINGSHIP_SEND_MODE").ok();
    let send_mode = chosen.as_deref().unwrap_or(drawn);
    eprintln!("exactly_once: send mode {send_mode}");
    let mut shipper = start_shipper(&wal, &addr, send_mode);

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
                receiver.kill9();
                std::thread::sleep(Duration::from_millis(rng.below(200)));
                receiver = RecvProc::start(&recv_dir, &addr, "fsync");
            } else {
                shipper.kill().unwrap();
                shipper.wait().unwrap();
                let held = wal_last_seq(&wal);
                assert!(held < next, "the WAL holds more than was fed");
                next = held + 1;
                shipper = start_shipper(&wal, &addr, send_mode);
            }
        }
    }
    drop(shipper.stdin.take());
    let status = shipper.wait().unwrap();
    assert!(
        status.success(),
        "the last shipper did not get everything acked"
    );
    receiver.stop();

    let got = dump_lines(&recv_dir.join("src"));
    assert_eq!(got.len() as u64, N, "records at the receiver");
    for (i, l) in got.iter().enumerate() {
        assert!(*l == line(i as u64 + 1), "record {} differs", i + 1);
    }
}
