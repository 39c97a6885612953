//! `bench` and `compare`: the histogram pipeline on known inputs, real
//! short runs that write every output, coordinated omission under real
//! stalls (a SIGSTOPped receiver, a SIGSTOPped bench), and the regression
//! gate's exit codes.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::serialization::Deserializer;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::{Histogram, serialization::interval_log::Tag};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use ringship::internals::latency::{INTERVAL_NS, Recorder, Window};
use ringship::internals::{write_hgrm, write_hlog};
use serde_json::Value;

use common::{RecvProc, bin, run, stderr, stdout};

const STAGE_KEYS: [&str; 4] = [
    "append_to_durable",
    "append_to_sent",
    "append_to_acked",
    "append_to_remote_durable",
];

/// (value ms, percentile, total count) rows and the three footers.
fn parse_hgrm(text: &str) -> (Vec<(f64, f64, u64)>, Vec<String>) {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
    );
    assert_eq!(lines.next(), Some(""), "a blank line after the header");
    let mut rows = Vec::new();
    let mut footers = Vec::new();
    for line in lines {
        if line.starts_with("#[") {
            footers.push(line.to_string());
            continue;
        }
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert!(cols.len() == 4 || cols.len() == 3, "row {line:?}");
        rows.push((
            cols[0].parse().unwrap(),
            cols[1].parse().unwrap(),
            cols[2].parse().unwrap(),
        ));
        if cols.len() == 4 {
            let inv: f64 = cols[3].parse().unwrap();
            let p: f64 = cols[1].parse().unwrap();
            assert!(
                (inv - 1.0 / (1.0 - p)).abs() <= 0.01 * inv.max(1.0),
                "{line}"
            );
        }
    }
    (rows, footers)
}

#[test]
fn hgrm_of_known_latencies() {
    // 1 µs .. 10 ms in 1 µs steps: p50 = 5 ms, p99 = 9.9 ms, max = 10 ms.
    let mut h = ringship::internals::latency::histogram();
    for us in 1..=10_000u64 {
        h.record(us * 1_000).unwrap();
    }
    let mut out = Vec::new();
    write_hgrm(&mut out, &h).unwrap();
    let text = String::from_utf8(out).unwrap();
    let (rows, footers) = parse_hgrm(&text);

    // Monotonic, ending at percentile 1 with every count.
    for pair in rows.windows(2) {
        assert!(pair[1].0 >= pair[0].0 && pair[1].1 >= pair[0].1 && pair[1].2 >= pair[0].2);
    }
    let last = rows.last().unwrap();
    assert_eq!(last.1, 1.0);
    assert_eq!(last.2, 10_000);
    assert!(
        text.lines()
            .nth(rows.len() + 1)
            .unwrap()
            .split_whitespace()
            .count()
            == 3,
        "the last row has no 1/(1-p) column"
    );
    let at = |p: f64| rows.iter().find(|r| r.1 >= p).unwrap().0;
    assert!((at(0.5) - 5.0).abs() < 0.01, "p50 {} ms", at(0.5));
    assert!((at(0.99) - 9.9).abs() < 0.02, "p99 {} ms", at(0.99));
    assert!((at(0.0) - 0.001).abs() < 0.0005, "min {} ms", at(0.0));

    assert_eq!(footers.len(), 3, "{footers:?}");
    let numbers = |line: &str| -> Vec<f64> {
        line.split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|s| !s.is_empty() && *s != ".")
            .map(|s| s.parse().unwrap())
            .collect()
    };
    assert!(footers[0].starts_with("#[Mean    = "));
    let mean_sd = numbers(&footers[0]);
    assert!((mean_sd[0] - 5.0005).abs() < 0.01, "{}", footers[0]);
    assert!((mean_sd[1] - 2.8868).abs() < 0.01, "{}", footers[0]); // sd of U(0, 10)
    assert!(footers[1].starts_with("#[Max     = "));
    let max_count = numbers(&footers[1]);
    assert!((max_count[0] - 10.0).abs() < 0.011, "{}", footers[1]);
    assert_eq!(max_count[1], 10_000.0);
    assert!(footers[2].starts_with("#[Buckets = "));
    assert_eq!(
        numbers(&footers[2])[1],
        2048.0,
        "3 digits: 2048 sub-buckets"
    );
}

#[test]
fn hlog_reads_back_to_the_same_counts() {
    let origin = 1_700_000_000 * INTERVAL_NS;
    let window = Arc::new(Window::default());
    window.open(origin, origin, origin + 10 * INTERVAL_NS);
    let mut a = Recorder::new();
    let mut b = Recorder::new();
    a.set_window(Some(window.clone()));
    b.set_window(Some(window));
    // Interval k gets k+1 values of (k+1) ms in stage a, and 7 in stage b.
    for k in 0..3u64 {
        for _ in 0..=k {
            let start = origin + k * INTERVAL_NS + 10;
            a.record(start, start + (k + 1) * 1_000_000);
        }
        for _ in 0..7 {
            let start = origin + k * INTERVAL_NS;
            b.record(start, start + 250_000);
        }
    }
    let mut log = Vec::new();
    write_hlog(&mut log, origin, &[("stage_a", &a), ("stage_b", &b)]).unwrap();
    let text = String::from_utf8(log.clone()).unwrap();
    assert!(text.contains("#[Histogram log format version 1.3]"));
    assert!(text.contains("#[StartTime: 1700000000.000"));

    let mut deserializer = Deserializer::new();
    let mut seen = Vec::new();
    let mut total_a: Histogram<u64> = ringship::internals::latency::histogram();
    for entry in IntervalLogIterator::new(&log) {
        let LogEntry::Interval(interval) = entry.expect("every line parses") else {
            continue;
        };
        let tag = interval.tag().map(|t: Tag| t.as_str().to_string()).unwrap();
        let bytes = base64_decode(interval.encoded_histogram());
        let h: Histogram<u64> = deserializer.deserialize(&mut &bytes[..]).unwrap();
        let k = interval.start_timestamp().as_secs();
        assert_eq!(interval.duration(), Duration::from_secs(1));
        if tag == "stage_a" {
            assert_eq!(h.len(), k + 1, "interval {k}");
            assert!(
                h.equivalent(h.max(), (k + 1) * 1_000_000),
                "max {} len {} k {k}",
                h.max(),
                h.len()
            );
            assert!((interval.max() - (k + 1) as f64).abs() < 0.01, "max in ms");
            total_a.add(&h).unwrap();
        } else {
            assert_eq!(tag, "stage_b");
            assert_eq!(h.len(), 7);
        }
        seen.push((k, tag));
    }
    assert_eq!(seen.len(), 6, "3 intervals × 2 tags: {seen:?}");
    assert_eq!(total_a.len(), a.total().len());
    assert_eq!(total_a.max(), a.total().max());
}

/// The hdrhistogram crate decodes base64 inside its own reader only; a
/// tiny decoder keeps the test free of another dependency.
fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let mut out = Vec::new();
    for chunk in s.trim_end_matches('=').as_bytes().chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_short_real_run_writes_every_output() {
    let out = tempfile::tempdir().unwrap();
    let o = run(&[
        "bench",
        "--duration",
        "2",
        "--warmup",
        "0.5",
        "--durability",
        "none",
        "--probe-rounds",
        "3",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    for label in [
        "append → durable",
        "append → acked",
        "idle tail",
        "records/s",
        "max RSS",
    ] {
        assert!(text.contains(label), "table lacks {label}:\n{text}");
    }

    let summary = read_json(&out.path().join("summary.json"));
    assert_eq!(summary["format"], "ringship-bench");
    assert_eq!(summary["config"]["durability"], "none");
    assert_eq!(summary["config"]["co_corrected"], true);
    // Without --spin-us the config is what it was before the flag, so old
    // baselines still compare.
    assert!(summary["config"].get("spin_ns").is_none());
    for key in STAGE_KEYS {
        let stage = &summary["stages"][key];
        let count = stage["count"].as_u64().unwrap();
        assert!(count > 0, "{key} has samples");
        for field in [
            "p50_ns", "p90_ns", "p99_ns", "p999_ns", "p9999_ns", "max_ns",
        ] {
            assert!(stage[field].as_u64().unwrap() > 0, "{key}.{field}");
        }
        let (rows, footers) =
            parse_hgrm(&std::fs::read_to_string(out.path().join(format!("{key}.hgrm"))).unwrap());
        assert_eq!(rows.last().unwrap().2, count, "{key}.hgrm total count");
        assert_eq!(footers.len(), 3);
    }
    // 10000/s for 2 s, all acked.
    assert_eq!(summary["stages"]["append_to_acked"]["count"], 20_000);
    // The pipeline kept up: every record due was offered, and about as
    // many were acknowledged in the window as were offered.
    let results = &summary["results"];
    assert_eq!(results["not_offered_records"], 0);
    assert_eq!(results["offered_records"], 25_000);
    let achieved = results["achieved_records_per_s"].as_f64().unwrap();
    assert!(
        (9_000.0..=11_000.0).contains(&achieved),
        "achieved {achieved}/s"
    );
    assert_eq!(results["records_per_s"], results["achieved_records_per_s"]);
    // The drain runs from the last record offered to its ack: at least a
    // loopback round trip through both WALs, and nowhere near a second.
    let drain_ns = results["drain_ns"].as_u64().unwrap();
    assert!(
        (20_000..1_000_000_000).contains(&drain_ns),
        "drain {drain_ns} ns"
    );
    // Small paced increments go by copy, and the table says so.
    assert!(results["copy_bytes"].as_u64().unwrap() > 0);
    assert_eq!(results["splice_bytes"], 0);
    assert!(
        text.contains("send mode splice") && text.contains("sent copy "),
        "{text}"
    );
    assert!(!text.contains("sent splice"), "{text}");
    assert_eq!(
        summary["idle_tail"]["samples_ns"].as_array().unwrap().len(),
        3
    );

    // The interval log has every stage, and its intervals add up to the
    // whole-run counts.
    let log = std::fs::read(out.path().join("latency.hlog")).unwrap();
    let mut counts = std::collections::HashMap::<String, u64>::new();
    let mut deserializer = Deserializer::new();
    for entry in IntervalLogIterator::new(&log) {
        if let LogEntry::Interval(i) = entry.unwrap() {
            let h: Histogram<u64> = deserializer
                .deserialize(&mut &base64_decode(i.encoded_histogram())[..])
                .unwrap();
            *counts
                .entry(i.tag().unwrap().as_str().to_string())
                .or_default() += h.len();
        }
    }
    for key in STAGE_KEYS {
        assert_eq!(
            counts.get(key).copied(),
            summary["stages"][key]["count"].as_u64(),
            "{key} in latency.hlog"
        );
    }
    let svg = std::fs::read_to_string(out.path().join("latency.svg")).unwrap();
    assert!(svg.starts_with("<svg"));
    assert!(svg.contains("99.9%") && svg.contains("append → acked"));

    // A report compared with itself does not regress.
    let path = out.path().join("summary.json");
    let p = path.to_str().unwrap();
    let o = run(&["compare", p, "--", p]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
}

/// `--cpu-dma-latency 0` holds the limit for the run, and the report says
/// so in its config and its environment; the kernel drops the limit when
/// the process ends. Without the right to write the device, the run fails
/// with exit 1 and names it.
#[test]
fn cpu_dma_latency_is_held_for_the_run_and_reported() {
    const DEVICE: &str = "/dev/cpu_dma_latency";
    let limit_now = || {
        std::fs::read(DEVICE)
            .ok()
            .map(|b| i32::from_ne_bytes(b[..4].try_into().unwrap()))
    };
    let before = limit_now();
    let out = tempfile::tempdir().unwrap();
    let o = run(&[
        "bench",
        "--duration",
        "0.5",
        "--warmup",
        "0",
        "--probe-rounds",
        "1",
        "--durability",
        "none",
        "--cpu-dma-latency",
        "0",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    let writable = std::fs::OpenOptions::new().write(true).open(DEVICE).is_ok();
    if !writable {
        eprintln!("{DEVICE} is not writable here: checking the refusal only");
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains(DEVICE), "{}", stderr(&o));
        return;
    }
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("cpu_dma_latency 0 µs"),
        "{}",
        stdout(&o)
    );
    let summary = read_json(&out.path().join("summary.json"));
    assert_eq!(summary["config"]["cpu_dma_latency_us"], 0);
    assert_eq!(summary["environment"]["cpu_dma_latency_us"], 0);
    // Nobody else held a limit before, so nobody holds one now.
    if before == Some(2_000_000_000) {
        assert_eq!(limit_now(), before, "the limit outlived the run");
    }
}

/// p99 of append → acked from a run's summary.json.
fn acked_p99_ns(out: &Path) -> u64 {
    read_json(&out.join("summary.json"))["stages"]["append_to_acked"]["p99_ns"]
        .as_u64()
        .unwrap()
}

fn stall(pid: u32, for_: Duration) {
    let pid = Pid::from_raw(pid as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    std::thread::sleep(for_);
    kill(pid, Signal::SIGCONT).unwrap();
}

fn bench_child(out: &Path, extra: &[&str]) -> std::process::Child {
    Command::new(bin())
        .args([
            "bench",
            "--rate",
            "2000",
            "--warmup",
            "0.5",
            "--duration",
            "3",
        ])
        .args(["--probe-rounds", "2", "--durability", "none"])
        .args(["--out", out.to_str().unwrap()])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_paused_receiver_shows_in_the_p99() {
    let recv_dir = tempfile::tempdir().unwrap();
    let receiver = RecvProc::start(recv_dir.path(), "127.0.0.1:0", "none");
    let out = tempfile::tempdir().unwrap();
    let child = bench_child(out.path(), &["--peer", &receiver.addr]);
    // Inside the measured window: 0.5 s warmup, then 3 s.
    std::thread::sleep(Duration::from_millis(1_500));
    stall(receiver.child.id(), Duration::from_millis(500));
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    receiver.stop();
    let p99 = acked_p99_ns(out.path());
    // ~1000 of 6000 records are due during the 500 ms stall.
    assert!(
        p99 >= 100_000_000,
        "append → acked p99 {p99} ns hides a 500 ms receiver stall"
    );
}

#[test]
fn a_stalled_generator_is_corrected_for_coordinated_omission() {
    // SIGSTOP the whole bench process: nothing is generated during the stall,
    // so only records stamped with their *intended* time can show it.
    let out = tempfile::tempdir().unwrap();
    let child = bench_child(out.path(), &[]);
    std::thread::sleep(Duration::from_millis(1_500));
    stall(child.id(), Duration::from_millis(500));
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let p99 = acked_p99_ns(out.path());
    assert!(
        p99 >= 100_000_000,
        "append → acked p99 {p99} ns: the 500 ms stall was omitted"
    );
}

#[test]
fn bad_bench_flags_exit_2_with_the_reason() {
    for (args, says) in [
        (&["--rate", "0"][..], "not a rate"),
        (&["--rate", "fast"][..], "not a rate"),
        (&["--duration=-1"][..], "--duration"),
        (&["--duration", "NaN"][..], "--duration"),
        (&["--record-bytes", "2000000"][..], "--record-bytes"),
        (&["--cores", "0"][..], "--cores"),
        (&["--probe-burst", "0"][..], "--probe-burst"),
        (&["--spin-us", "10001"][..], "--spin-us"),
        (&["--cpu-dma-latency", "10001"][..], "--cpu-dma-latency"),
        (&["--peer", "nowhere.invalid:1"][..], "--peer"),
    ] {
        let o = run(&[&["bench"][..], args].concat());
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
}

/// A minimal report of the current format.
fn report(p99_ns: u64, durability: &str) -> Value {
    serde_json::json!({
        "format": "ringship-bench",
        "format_version": 1,
        "config": { "rate_per_s": 10000.0, "durability": durability, "record_payload_bytes": 100 },
        "stages": {
            "append_to_acked": {
                "count": 1000, "p50_ns": 50_000, "p90_ns": 80_000, "p99_ns": p99_ns,
                "p999_ns": 200_000, "p9999_ns": 300_000, "max_ns": 400_000
            }
        }
    })
}

fn write(dir: &Path, name: &str, v: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec(v).unwrap()).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn compare_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = write(d, "base.json", &report(100_000, "fsync"));
    let same = write(d, "same.json", &report(100_000, "fsync"));
    let slower = write(d, "slower.json", &report(200_000, "fsync"));
    let other = write(d, "other.json", &report(100_000, "none"));
    let corrupt = d.join("corrupt.json");
    std::fs::write(&corrupt, b"{\"format\": \"ringship-bench\", \"form").unwrap();
    let corrupt = corrupt.to_str().unwrap();
    let mut v2 = report(100_000, "fsync");
    v2["format_version"] = 3.into();
    let v2 = write(d, "v2.json", &v2);
    // Percentiles that go down are no histogram's: refused.
    let mut inverted = report(100_000, "fsync");
    inverted["stages"]["append_to_acked"]["p99_ns"] = 45_000.into();
    let inverted = write(d, "inverted.json", &inverted);
    // The current version is read as well as version 1.
    let mut current_version = report(100_000, "fsync");
    current_version["format_version"] = 2.into();
    let current_version = write(d, "current.json", &current_version);

    let code = |args: &[&str]| {
        let o = run(&[&["compare"][..], args].concat());
        (o.status.code(), stdout(&o), stderr(&o))
    };
    let (c, out, _) = code(&[&base, "--", &same]);
    assert_eq!(c, Some(0), "{out}");
    assert!(out.contains("no regression"));
    assert!(!out.contains("environment."), "{out}");

    // An environment that differs is named, but does not refuse.
    let mut held = report(100_000, "fsync");
    held["environment"] = serde_json::json!({ "cpu_dma_latency_us": 0 });
    let held = write(d, "held.json", &held);
    let (c, out, _) = code(&[&base, "--", &held]);
    assert_eq!(c, Some(0), "{out}");
    assert!(
        out.contains("environment.cpu_dma_latency_us differs: (missing)"),
        "{out}"
    );

    let (c, out, _) = code(&[&base, "--", &slower]);
    assert_eq!(c, Some(1), "{out}");
    assert!(out.contains("append_to_acked p99 +100.0%"), "{out}");
    // Options after the `--`, and a generous threshold, pass.
    let (c, out, _) = code(&[&base, "--", &slower, "--max-regression-pct", "150"]);
    assert_eq!(c, Some(0), "{out}");
    // Tracking only p50 ignores the p99.
    let (c, _, _) = code(&[&base, "--", &slower, "--percentiles", "50"]);
    assert_eq!(c, Some(0));
    // A flag given a value after the `--` is a usage error naming the
    // flag, not a file that cannot be read.
    let (c, _, err) = code(&[&base, "--", &other, "--force=true"]);
    assert_eq!(c, Some(2), "{err}");
    assert!(err.contains("'--force'"), "{err}");

    // Medians: two of three current runs are fine.
    let (c, out, _) = code(&[&base, "--", &slower, &same, &same]);
    assert_eq!(c, Some(0), "{out}");

    let (c, _, err) = code(&[&base, "--", corrupt]);
    assert_eq!(c, Some(2));
    assert!(
        err.contains("corrupt.json") && err.contains("not valid JSON"),
        "{err}"
    );

    let (c, _, err) = code(&[&base, "--", &v2]);
    assert_eq!(c, Some(2));
    assert!(err.contains("format_version"), "{err}");

    let (c, _, err) = code(&[&base, "--", &inverted]);
    assert_eq!(c, Some(2), "{err}");
    assert!(
        err.contains("inverted.json") && err.contains("p99_ns") && err.contains("p50_ns"),
        "{err}"
    );
    let (c, out, err) = code(&[&base, "--", &current_version]);
    assert_eq!(c, Some(0), "{out}{err}");

    // The achieved rate, when tracked: a drop is a regression, and a
    // version 1 report (which has none) is refused naming the field.
    let rated = |per_s: f64| {
        let mut v = report(100_000, "fsync");
        v["format_version"] = 2.into();
        v["results"] = serde_json::json!({ "achieved_records_per_s": per_s });
        v
    };
    let fast = write(d, "fast.json", &rated(10_000.0));
    let slow = write(d, "slow.json", &rated(5_000.0));
    let (c, out, _) = code(&[&fast, "--", &fast, "--track-throughput"]);
    assert_eq!(c, Some(0), "{out}");
    assert!(out.contains("achieved records/s"), "{out}");
    let (c, out, _) = code(&[&fast, "--", &slow, "--track-throughput"]);
    assert_eq!(c, Some(1), "{out}");
    assert!(out.contains("achieved records/s -50.0%"), "{out}");
    let (c, _, _) = code(&[&fast, "--", &slow]);
    assert_eq!(c, Some(0), "throughput is tracked only when asked");
    let (c, _, err) = code(&[&base, "--", &fast, "--track-throughput"]);
    assert_eq!(c, Some(2), "{err}");
    assert!(err.contains("results.achieved_records_per_s"), "{err}");

    let (c, _, err) = code(&[&base, "--", &other]);
    assert_eq!(c, Some(2));
    assert!(
        err.contains("config.durability") && err.contains("--force"),
        "{err}"
    );
    let (c, out, _) = code(&[&base, "--", &other, "--force"]);
    assert_eq!(c, Some(0), "{out}");
    assert!(out.contains("warning (--force)"));

    let (c, _, err) = code(&[&base, "--", d.join("missing.json").to_str().unwrap()]);
    assert_eq!(c, Some(2));
    assert!(err.contains("missing.json"), "{err}");

    let (c, _, err) = code(&[&base, "--", &same, "--stage", "nope"]);
    assert_eq!(c, Some(2));
    assert!(err.contains("unknown stage"), "{err}");

    let (c, _, err) = code(&[&base, "--", &same, "--stage", "append_to_sent"]);
    assert_eq!(c, Some(2));
    assert!(err.contains("stages.append_to_sent"), "{err}");
}

#[test]
fn wal_bench_with_a_record_count_and_a_rate_ends_by_count() {
    // 2000 records at 2000/s outlast --duration 0.2: the count decides.
    let o = run(&[
        "wal-bench",
        "--records",
        "2000",
        "--rate",
        "2000",
        "--duration",
        "0.2",
        "--durability",
        "none",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["records"], 2000);
    let o = run(&["wal-bench", "--rate", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// A paced run that keeps up offers exactly the records due before the
/// deadline and reports none missing, even where rate × duration is whole
/// in decimal but not in binary (0.3 s × 10/s).
#[test]
fn a_paced_wal_bench_that_keeps_up_misses_nothing() {
    let o = run(&[
        "wal-bench",
        "--rate",
        "10",
        "--duration",
        "0.3",
        "--durability",
        "none",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["records"], 3, "{v}");
    assert_eq!(v["not_offered_records"], 0, "{v}");
}

/// `bench --rate max` with splice, repeated: every run keeps shipping while
/// the generator keeps the inbox full, and every acknowledged record of
/// the window is timed. Splice used to move a 64 KiB pipe per two loop
/// turns (each turn a full staging pass), so the shipper crawled while the
/// WAL raced ahead, and its latency table dropped all but the last 131,072
/// records: "112,348 records measured", whatever the duration. The bound is
/// liveness, far above that, not speed.
#[test]
fn splice_at_max_rate_keeps_shipping_and_times_every_record() {
    for round in 0..10 {
        let out = tempfile::tempdir().unwrap();
        let o = run(&[
            "bench",
            "--rate",
            "max",
            "--duration",
            "1",
            "--warmup",
            "0",
            "--probe-rounds",
            "0",
            "--durability",
            "none",
            "--send-mode",
            "splice",
            "--out",
            out.path().to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
        let summary = read_json(&out.path().join("summary.json"));
        let results = &summary["results"];
        let measured = results["measured_records"].as_u64().unwrap();
        let achieved = results["achieved_records_per_s"].as_f64().unwrap();
        let offered = results["offered_records"].as_u64().unwrap();
        let report = format!("round {round}: {}", stdout(&o));
        assert!(measured >= 524_288, "{measured} records measured; {report}");
        assert!(achieved >= 300_000.0, "achieved {achieved}/s; {report}");
        // Every record offered is acknowledged and, but for the few
        // stamped after the window closed, timed.
        assert!(measured <= offered, "{report}");
        assert!(results["splice_bytes"].as_u64().unwrap() > 0, "{report}");
    }
}

/// An open loop offered far more than the pipeline takes still ends on its
/// schedule: the records it could not offer are counted and said, and the
/// drain is short. `wal-bench` likewise.
#[test]
fn an_open_loop_beyond_the_pipeline_ends_on_its_schedule() {
    let out = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let o = run(&[
        "bench",
        "--rate",
        "1e12",
        "--duration",
        "1",
        "--warmup",
        "0",
        "--probe-rounds",
        "0",
        "--durability",
        "none",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    let took = started.elapsed();
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    assert!(took < Duration::from_secs(20), "ran {took:?}");
    assert!(stdout(&o).contains("could not keep up"), "{}", stdout(&o));
    let results = read_json(&out.path().join("summary.json"))["results"].clone();
    let offered = results["offered_records"].as_u64().unwrap();
    let not_offered = results["not_offered_records"].as_u64().unwrap();
    // Due times are whole nanoseconds, so at 1e12/s the last few hundred
    // records round onto the deadline itself and are not due before it.
    assert!(offered > 0);
    assert!(
        (999_999_999_000..=1_000_000_000_000).contains(&(offered + not_offered)),
        "{offered} offered + {not_offered} not offered"
    );
    assert!(results["achieved_records_per_s"].as_f64().unwrap() > 0.0);
    assert!(results["offered_records_per_s"].as_f64().unwrap() < 1e12);
    assert!(results["drain_ns"].as_u64().unwrap() < 10_000_000_000);

    let started = std::time::Instant::now();
    let o = run(&[
        "wal-bench",
        "--rate",
        "1e12",
        "--duration",
        "1",
        "--durability",
        "none",
        "--json",
    ]);
    let took = started.elapsed();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(took < Duration::from_secs(20), "ran {took:?}");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["not_offered_records"].as_u64().unwrap() > 0, "{v}");
}

/// SIGINT and SIGTERM during `bench` and `wal-bench` remove the scratch
/// directory (a CI timeout takes exactly this path) and exit 130 and 143.
#[test]
fn an_interrupted_bench_leaves_no_scratch_directory() {
    for (command, signal, code) in [
        ("bench", Signal::SIGINT, 130),
        ("bench", Signal::SIGTERM, 143),
        ("wal-bench", Signal::SIGTERM, 143),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let child = Command::new(bin())
            .args([command, "--duration", "10", "--durability", "none"])
            .env("TMPDIR", tmp.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let scratch = || std::fs::read_dir(tmp.path()).unwrap().count();
        let started = std::time::Instant::now();
        while scratch() == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{command} made no scratch directory"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(500));
        kill(Pid::from_raw(child.id() as i32), signal).unwrap();
        let o = child.wait_with_output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(code),
            "{command} {signal}: {}",
            stderr(&o)
        );
        assert_eq!(
            scratch(),
            0,
            "{command} {signal} left its scratch directory"
        );
    }
}
