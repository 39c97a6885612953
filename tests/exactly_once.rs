//! Exactly once under kills: stream 1,000,000 records from a `ship` process
//! to a `receive` process while SIGKILLing the shipper, the receiver or both
//! [`KILLS`] times (`RINGSHIP_KILLS` to change) at seeded random points,
//! restarting each. After a shipper
//! kill, feeding resumes from the first line its WAL does not hold (lines it
//! read but never made durable were never promised). At the end the
//! receiver holds exactly the input: nothing missing, nothing duplicated, in
//! order; the test prints the cycles and the records lost and duplicated
//! (both must be 0). Rerun a failure with RINGSHIP_SEED=<printed seed>.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{RecvProc, Rng, bin, child_stderr, dump_lines, line, run, stdout};

const N: u64 = 1_000_000;
const CHUNK: u64 = 5_000;
/// kill -9 cycles per run, at distinct chunks.
const KILLS: u64 = 50;

/// Who a cycle kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    Shipper,
    Receiver,
    Both,
}

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
fn a_million_records_arrive_exactly_once_through_fifty_kills() {
    let mut rng = Rng::from_env("exactly_once");
    let kills_wanted: u64 = std::env::var("RINGSHIP_KILLS")
        .ok()
        .map(|v| v.parse().expect("RINGSHIP_KILLS: a number"))
        .unwrap_or(KILLS);
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

    // Kills at distinct random chunks, each of the shipper, the receiver
    // or both.
    let chunks = N / CHUNK;
    assert!(kills_wanted < chunks - 2, "at most one kill per chunk");
    let mut kills: Vec<(u64, Victim)> = Vec::new();
    while (kills.len() as u64) < kills_wanted {
        let at = 1 + rng.below(chunks - 2);
        if kills.iter().all(|&(c, _)| c != at) {
            let victim = [Victim::Shipper, Victim::Receiver, Victim::Both][rng.below(3) as usize];
            kills.push((at, victim));
        }
    }
    kills.sort_unstable_by_key(|k| k.0);
    eprintln!("exactly_once: kills at chunks {kills:?}");

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
        if let Some(&(_, victim)) = kills.iter().find(|k| k.0 == chunk_index) {
            std::thread::sleep(Duration::from_millis(rng.below(50)));
            if victim != Victim::Receiver {
                shipper.kill().unwrap();
                shipper.wait().unwrap();
            }
            if victim != Victim::Shipper {
                receiver.kill9();
                std::thread::sleep(Duration::from_millis(rng.below(100)));
                receiver = RecvProc::start(&recv_dir, &addr, "fsync");
            }
            if victim != Victim::Receiver {
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
    let mut seen = vec![false; N as usize + 1];
    let mut duplicated = 0u64;
    let mut foreign = 0u64;
    for l in &got {
        // line(i) starts with "i:" (tests/common).
        let digits = l.split(|&b| b == b':').next().unwrap_or_default();
        let i: Option<usize> = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse().ok())
            .filter(|&i| (1..=N as usize).contains(&i) && *l == line(i as u64));
        match i {
            Some(i) if seen[i] => duplicated += 1,
            Some(i) => seen[i] = true,
            None => foreign += 1,
        }
    }
    let lost = seen[1..].iter().filter(|&&s| !s).count();
    let by = |v: Victim| kills.iter().filter(|k| k.1 == v).count();
    eprintln!(
        "exactly_once: {} kill -9 cycles (shipper {}, receiver {}, both {}): \
         records lost {lost}, duplicated {duplicated}, foreign {foreign}",
        kills.len(),
        by(Victim::Shipper),
        by(Victim::Receiver),
        by(Victim::Both),
    );
    assert_eq!(
        (lost, duplicated, foreign),
        (0, 0, 0),
        "lost, duplicated, foreign"
    );
    for (i, l) in got.iter().enumerate() {
        assert!(*l == line(i as u64 + 1), "record {} out of order", i + 1);
    }
}
