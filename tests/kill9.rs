//! SIGKILL a real `ringship ship` process at seeded random points while it
//! appends, 20 times over the same WAL. After every kill `verify` passes, and
//! every record the child had reported durable (`--report-durable`) is there,
//! in order, with no gap; the next run continues from the first line the WAL
//! does not hold. Rerun a failure with RINGSHIP_SEED=<printed seed>.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{Rng, bin, dump_lines, line, run, stdout};

const KILLS: usize = 20;

#[test]
fn kill_9_mid_append_loses_nothing_reported_durable() {
    let mut rng = Rng::from_env("kill9");
    let tmp = tempfile::tempdir().unwrap();
    let wal = tmp.path().join("wal");
    let wal_s = wal.to_str().unwrap().to_string();
    let mut next_line = 1u64;
    let mut total_reported = 0u64;

    for round in 0..KILLS {
        let durability = if rng.below(4) == 0 { "none" } else { "fsync" };
        let mut child = Command::new(bin())
            .args([
                "ship",
                "--dir",
                &wal_s,
                "--report-durable",
                "--durability",
                durability,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let reported = Arc::new(AtomicU64::new(0));
        let reader = {
            let reported = reported.clone();
            let out = child.stdout.take().unwrap();
            std::thread::spawn(move || {
                for l in BufReader::new(out).lines() {
                    let Ok(l) = l else { break };
                    if let Some(seq) = l.strip_prefix("durable ") {
                        reported.fetch_max(seq.parse().unwrap(), Ordering::SeqCst);
                    }
                }
            })
        };
        let writer = {
            let mut stdin = child.stdin.take().unwrap();
            let first = next_line;
            let chunk = 1 + rng.below(2000);
            std::thread::spawn(move || {
                let mut i = first;
                loop {
                    let mut buf = Vec::new();
                    for _ in 0..chunk {
                        buf.extend_from_slice(&line(i));
                        buf.push(b'\n');
                        i += 1;
                    }
                    if stdin.write_all(&buf).is_err() {
                        return;
                    }
                }
            })
        };
        std::thread::sleep(Duration::from_millis(rng.below(400)));
        let seen_before_kill = reported.load(Ordering::SeqCst);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        writer.join().unwrap();
        reader.join().unwrap();
        // Every "durable N" the child printed before it died must hold; take
        // the final value (a line may have been read just after the kill but
        // written before it).
        let promised = reported.load(Ordering::SeqCst).max(seen_before_kill);

        // A child killed before it created the directory promised nothing.
        if !wal.exists() {
            assert_eq!(promised, 0, "round {round}: no WAL, yet durable {promised}");
            continue;
        }
        let v = run(&["verify", "--dir", &wal_s]);
        assert!(
            v.status.success(),
            "round {round}: verify failed: {}",
            stdout(&v)
        );
        let held = if wal.join("0").exists() {
            dump_lines(&wal)
        } else {
            Vec::new()
        };
        let n = held.len() as u64;
        assert!(
            n >= promised,
            "round {round}: child reported seq {promised} durable but the WAL holds {n}"
        );
        for (i, got) in held.iter().enumerate() {
            assert!(
                *got == line(i as u64 + 1),
                "round {round}: record {} is wrong",
                i + 1
            );
        }
        total_reported = total_reported.max(promised);
        // Lines the child read but never made durable were never promised:
        // feed again from the first line the WAL does not hold.
        next_line = n + 1;
    }
    eprintln!(
        "kill9: {KILLS} kills, {} records held, {total_reported} reported durable",
        next_line - 1
    );
    assert!(
        total_reported > 0,
        "no round got as far as a durable record"
    );
}
