//! Helpers shared by the integration tests: real files, real io_uring, real
//! processes.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use ringship::{Durability, Shard, ShardConfig};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ringship"))
}

pub fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("spawn ringship")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Appends `payloads` to shard 0 of `dir` through the real shard loop
/// (io_uring group commit); returns the durable seq afterwards.
pub fn append(dir: &Path, durability: Durability, payloads: &[Vec<u8>]) -> u64 {
    let mut config = ShardConfig::new(dir, 0);
    config.durability = durability;
    let mut shard = Shard::spawn(config).unwrap();
    shard
        .append_all(payloads.iter().map(Vec::as_slice))
        .unwrap();
    shard.close().unwrap().durable_seq
}

/// The payload of line `i` in the generated streams: varied lengths, and
/// bytes that are not text.
pub fn line(i: u64) -> Vec<u8> {
    let mut l = format!("{i}:").into_bytes();
    match i % 7 {
        0 => {}
        1 => l.extend_from_slice(b"\r"),
        2 => l.extend_from_slice(b"\0nul\xff\xfe"),
        _ => l.extend(std::iter::repeat_n(
            b'a' + (i % 26) as u8,
            (i % 300) as usize,
        )),
    }
    l
}

/// Every record payload of `dir` (all shards), via `ringship dump`.
pub fn dump_lines(dir: &Path) -> Vec<Vec<u8>> {
    let out = run(&["dump", "--dir", dir.to_str().unwrap()]);
    assert!(out.status.success(), "dump failed: {}", stderr(&out));
    let mut lines: Vec<Vec<u8>> = out
        .stdout
        .split(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    assert_eq!(lines.pop(), Some(Vec::new()), "dump ends with a newline");
    lines
}

/// A small deterministic generator (xorshift64*) for seeded tests.
pub struct Rng(u64);

impl Rng {
    /// Seeds from RINGSHIP_SEED, or the clock; prints the seed.
    pub fn from_env(test: &str) -> Rng {
        let seed = std::env::var("RINGSHIP_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| ringship::internals::frame::now_ns() | 1);
        eprintln!("{test}: seed {seed} (rerun with RINGSHIP_SEED={seed})");
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Where the children's stderr goes: RINGSHIP_TEST_LOGS=DIR keeps it (with
/// RINGSHIP_LOG=info for detail), otherwise it is discarded.
pub fn child_stderr(name: &str) -> Stdio {
    match std::env::var("RINGSHIP_TEST_LOGS") {
        Ok(dir) => {
            std::fs::create_dir_all(&dir).unwrap();
            let path = format!("{dir}/{name}-{}.log", ringship::internals::frame::now_ns());
            Stdio::from(std::fs::File::create(path).unwrap())
        }
        Err(_) => Stdio::null(),
    }
}

/// A `ringship receive` child process.
pub struct RecvProc {
    pub child: Child,
    pub addr: String,
}

impl RecvProc {
    pub fn start(dir: &std::path::Path, listen: &str, durability: &str) -> RecvProc {
        RecvProc::start_logging(dir, listen, durability, child_stderr("receive"))
    }

    /// Like `start`, with the receiver's stderr (its log) sent to `stderr`.
    pub fn start_logging(
        dir: &std::path::Path,
        listen: &str,
        durability: &str,
        stderr: Stdio,
    ) -> RecvProc {
        RecvProc::spawn(dir, listen, durability, &[], stderr)
    }

    /// Like `start`, with more command-line arguments.
    pub fn start_with(
        dir: &std::path::Path,
        listen: &str,
        durability: &str,
        extra: &[&str],
    ) -> RecvProc {
        RecvProc::spawn(dir, listen, durability, extra, child_stderr("receive"))
    }

    fn spawn(
        dir: &std::path::Path,
        listen: &str,
        durability: &str,
        extra: &[&str],
        stderr: Stdio,
    ) -> RecvProc {
        let mut child = Command::new(bin())
            .args([
                "receive",
                "--listen",
                listen,
                "--dir",
                dir.to_str().unwrap(),
            ])
            .args(["--durability", durability])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut first)
            .unwrap();
        let addr = first
            .strip_prefix("listening on ")
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_string();
        RecvProc { child, addr }
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn stop(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        assert!(
            self.child.wait().unwrap().success(),
            "receiver exits 0 on SIGTERM"
        );
    }
}
