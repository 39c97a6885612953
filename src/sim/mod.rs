//! The seeded deterministic simulator: the real WAL writer and the real
//! recovery, driven single-threaded over a simulated disk ([`disk`]) and
//! clock, with crashes, from one seed.
//!
//! Each seed draws a workload (record sizes, from a few bytes to 1 MiB so
//! that segments rotate) and a fault profile, then runs an application
//! loop: stage records, submit commits, complete the disk's operations in
//! simulated-time order, and crash the process or the machine at random
//! points. After every crash the WAL is reopened, through the real
//! recovery, and read back through the real reader. Checked on every seed:
//!
//! - **durable survives**: every record the writer ever reported durable
//!   is read back after every crash, byte for byte;
//! - **nothing invented**: the log read back is contiguous from seq 1, and
//!   each record is the one last appended under its seq;
//! - **nothing durable that was not written**: a reported durable seq never
//!   passes the last staged one, and never goes back;
//! - **a crash never bricks the WAL**: recovery opens whatever a crash left;
//! - **convergence**: once the faults stop, everything staged becomes
//!   durable within a bounded simulated time.
//!
//! `cargo test` runs [`CI_SEEDS`] seeds. `RINGSHIP_SIM_SEEDS=N` runs N
//! seeds instead, `RINGSHIP_SIM_SEED=N` replays one with a trace. A failing
//! seed prints the command that replays it exactly. The broken variant
//! (`wal::writer::broken`, a commit taken as durable when its write
//! completes, before its fdatasync) must be caught by both simulations.
//!
//! [`pair`] runs the shipping simulation on top: the real TCP sink and the
//! real receiver connection over a simulated network ([`net`]), each side
//! on its own simulated disk ([`host`] joins the two behind the seam).
//! `RINGSHIP_SIM_SEED` replays a shipping seed with
//! `sim::tests::simulate_shipping`. docs/reliability.md says what this
//! covers and what it does not model.

mod disk;
mod host;
mod net;
mod pair;
pub(crate) mod rng;

use std::collections::BTreeMap;
use std::path::Path;

use self::disk::{Crash, DiskFaults, DiskStats, SimDisk};
use self::host::Host;
use self::net::{Net, NetFaults, Side};
use self::rng::Rng;
use crate::constants::RECORD_PAYLOAD_BYTES_MAX;
use crate::io::Owner;
use crate::wal::fsops::journal;
use crate::wal::{Durability, Stage, WalReader, WalWriter};

/// Seeds `cargo test` runs.
pub(crate) const CI_SEEDS: u64 = 256;
/// Shipping seeds `cargo test` runs.
pub(crate) const SHIPPING_CI_SEEDS: u64 = 128;

/// Completions allowed for the WAL to become idle once faults stop, and
/// the simulated time they may take.
const CONVERGE_COMPLETIONS_MAX: u64 = 100_000;
const CONVERGE_SIM_NS_MAX: u64 = 60_000_000_000;

/// What one seed draws.
#[derive(Debug, Clone)]
struct Profile {
    steps: u64,
    /// Payload sizes: small, or large enough that segments rotate.
    payload_bytes: (u64, u64),
    batch_max: u64,
    crash: f64,
    machine_crash: f64,
    faults: DiskFaults,
    /// Chance a directory sync is where the machine dies.
    crash_at_sync: f64,
    /// Segments the disk has room for.
    segments_room: Option<u64>,
}

impl Profile {
    fn draw(rng: &mut Rng) -> Profile {
        let payload_bytes = match rng.below(8) {
            0 => (64 << 10, RECORD_PAYLOAD_BYTES_MAX as u64),
            1 => (0, 4096),
            _ => (0, 300),
        };
        let mut p = |max: f64| {
            if rng.chance(0.25) {
                0.0
            } else {
                max * (rng.below(1000) as f64 / 1000.0)
            }
        };
        let faults = DiskFaults {
            short_write: p(0.2),
            write_eio: p(0.004),
            write_enospc: p(0.004),
            sync_eio: p(0.01),
            latency_spike: p(0.05),
        };
        let crash = p(0.01);
        let machine_crash = p(1.0);
        let crash_at_sync = p(0.3);
        // Large records fill a 64 MiB segment in a few hundred: fewer steps.
        let big = payload_bytes.1 > 4096;
        Profile {
            steps: if big {
                rng.between(100, 400)
            } else {
                rng.between(300, 1500)
            },
            payload_bytes,
            batch_max: rng.between(1, if big { 8 } else { 64 }),
            crash,
            machine_crash,
            faults,
            crash_at_sync,
            segments_room: (big && rng.chance(0.5)).then(|| rng.between(1, 3)),
        }
    }
}

/// What one seed (or a run of seeds) did.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Outcome {
    pub seeds: u64,
    pub records_staged: u64,
    pub records_durable: u64,
    pub process_crashes: u64,
    pub machine_crashes: u64,
    /// The writer stopped on an error the disk injected (and restarted).
    pub writer_errors: u64,
    pub segments: u64,
    pub checks: u64,
    pub sim_ns: u64,
    pub disk: DiskStats,
    /// Machine crashes at a directory sync; creates and renames a crash
    /// undid; segments refused for want of room.
    pub dir_crashes: u64,
    pub creates_undone: u64,
    pub renames_undone: u64,
    pub segments_refused: u64,
}

impl Outcome {
    pub fn add(&mut self, o: &Outcome) {
        self.seeds += o.seeds;
        self.records_staged += o.records_staged;
        self.records_durable += o.records_durable;
        self.process_crashes += o.process_crashes;
        self.machine_crashes += o.machine_crashes;
        self.writer_errors += o.writer_errors;
        self.segments += o.segments;
        self.checks += o.checks;
        self.sim_ns += o.sim_ns;
        self.disk.add(&o.disk);
        self.dir_crashes += o.dir_crashes;
        self.creates_undone += o.creates_undone;
        self.renames_undone += o.renames_undone;
        self.segments_refused += o.segments_refused;
    }

    pub fn report(&self) -> String {
        let d = &self.disk;
        format!(
            "seeds {} · records staged {} durable {} · segments {} · simulated {:.1} s\n\
             crashes: process {} machine {} · writer stopped by an injected error {}\n\
             disk faults: short writes {} · write EIO {} · ENOSPC {} · fdatasync EIO {} · \
             syncs cancelled by a short write {} · latency spikes {}\n\
             at crashes: in-flight writes torn {} · dirty blocks kept {} lost {} · bytes put back {}\n\
             directories: crashes at a directory fsync {} · creates undone {} · renames undone {} · \
             segments refused for want of room {}\n\
             invariant checks {}",
            self.seeds,
            self.records_staged,
            self.records_durable,
            self.segments,
            self.sim_ns as f64 / 1e9,
            self.process_crashes,
            self.machine_crashes,
            self.writer_errors,
            d.short_writes,
            d.write_eio,
            d.write_enospc,
            d.sync_eio,
            d.syncs_cancelled,
            d.latency_spikes,
            d.torn_in_flight,
            d.blocks_kept,
            d.blocks_lost,
            d.bytes_lost,
            self.dir_crashes,
            self.creates_undone,
            self.renames_undone,
            self.segments_refused,
            self.checks,
        )
    }
}

/// The payload of `seq` as appended in `epoch` (a restart count) of
/// `seed`'s run: made again from these to compare, never stored.
fn payload(seed: u64, epoch: u32, seq: u64, len: u32) -> Vec<u8> {
    let mut rng = Rng::new(seed ^ (u64::from(epoch) << 48) ^ seq.wrapping_mul(0x9e37_79b9));
    let mut buf = vec![0u8; len as usize];
    rng.fill(&mut buf);
    buf
}

/// The disk run's I/O: its disk, on a host whose network stays idle.
fn host<'a>(disk: &'a mut SimDisk, net: &'a mut Net) -> Host<'a> {
    net.now_ns = disk.now_ns;
    Host {
        side: Side::Shipper,
        disk,
        net,
    }
}

/// One seed's run.
struct Run<'a> {
    seed: u64,
    dir: &'a Path,
    trace: bool,
    rng: Rng,
    disk: SimDisk,
    /// The disk's host needs a network; nothing is sent on it.
    net: Net,
    wal: Option<WalWriter>,
    epoch: u32,
    /// (epoch, len, end offset in its segment) of every record staged and
    /// not lost to a crash.
    appended: BTreeMap<u64, (u32, u32, u64)>,
    /// The highest seq the writer reported durable.
    durable: u64,
    /// Staging said Full: wait for a completion or a rotation.
    blocked: bool,
    out: Outcome,
}

impl Run<'_> {
    fn wal(&mut self) -> &mut WalWriter {
        self.wal.as_mut().expect("open")
    }

    fn fail(&self, why: String) -> String {
        format!(
            "seed {} failed at simulated {} ns, epoch {}: {why}\n\
             replay: RINGSHIP_SIM_SEED={} cargo test --lib sim::tests::simulate -- --nocapture",
            self.seed, self.disk.now_ns, self.epoch, self.seed
        )
    }

    /// The writer reported `seq` durable.
    fn on_durable(&mut self, seq: u64) -> Result<(), String> {
        self.out.checks += 1;
        let staged = self.appended.keys().next_back().copied().unwrap_or(0);
        // A repeated report is harmless; one going back, or past what was
        // staged, is not.
        if seq < self.durable || seq > staged {
            return Err(self.fail(format!(
                "durable seq {seq} reported after {} with {staged} the last staged",
                self.durable
            )));
        }
        self.durable = seq;
        // What is reported durable is on the disk now, not at the next
        // crash: no byte below the durable offset may still be unsynced.
        // (A commit never spans segments, and a segment rotates only once
        // all of it is durable: the seq is in the current one.)
        let wal = self.wal.as_ref().expect("open");
        let path = std::fs::canonicalize(wal.segment_path()).expect("the segment exists");
        let end = self.appended.get(&seq).expect("staged").2;
        self.out.checks += 1;
        if let Some(at) = self.disk.unsynced_from(&path)
            && at < end
        {
            return Err(self.fail(format!(
                "seq {seq} reported durable while byte {at} below its end ({end}) is not synced"
            )));
        }
        Ok(())
    }

    /// Stages a batch and submits.
    fn append(&mut self, profile: &Profile) -> Result<(), String> {
        let n = self.rng.between(1, profile.batch_max);
        for _ in 0..n {
            let len = self
                .rng
                .between(profile.payload_bytes.0, profile.payload_bytes.1)
                as u32;
            let seq = self.wal().next_seq();
            let bytes = payload(self.seed, self.epoch, seq, len);
            let now = self.disk.now_ns;
            let wal = self.wal.as_mut().expect("open");
            match wal.stage(&mut host(&mut self.disk, &mut self.net), now, &bytes) {
                Ok(Stage::Staged(got)) => {
                    assert_eq!(got, seq);
                    let wal = self.wal.as_ref().expect("open");
                    let start = if seq == wal.segment_first_seq() {
                        crate::constants::SEGMENT_HEADER_BYTES as u64
                    } else {
                        self.appended.get(&(seq - 1)).expect("the record before").2
                    };
                    let end = start + crate::frame::encoded_len_bytes(len as usize) as u64;
                    self.appended.insert(seq, (self.epoch, len, end));
                    self.out.records_staged += 1;
                }
                Ok(Stage::Full) => {
                    self.blocked = true;
                    break;
                }
                Err(e) => return Err(self.fail(format!("staging: {e}"))),
            }
        }
        self.submit()
    }

    /// The loop's turn: submit what is staged, rotate when due. An error
    /// stops the writer as it stops a shard: the process exits.
    fn submit(&mut self) -> Result<(), String> {
        let wal = self.wal.as_mut().expect("open");
        match wal.submit(&mut host(&mut self.disk, &mut self.net)) {
            Ok(submitted) => {
                if submitted.rotated {
                    self.blocked = false;
                    self.out.segments += 1;
                }
                if let Some(seq) = submitted.durable_seq {
                    self.on_durable(seq)?;
                }
                Ok(())
            }
            Err(e) => self.writer_error(e.to_string()),
        }
    }

    fn complete_one(&mut self) -> Result<(), String> {
        let Some(c) = self.disk.complete_next() else {
            return Ok(());
        };
        let wal = self.wal.as_mut().expect("open");
        match wal.on_completion(&mut host(&mut self.disk, &mut self.net), c) {
            Ok(Some(seq)) => self.on_durable(seq)?,
            Ok(None) => {}
            Err(e) => return self.writer_error(e.to_string()),
        }
        self.blocked = false;
        self.submit()
    }

    fn writer_error(&mut self, why: String) -> Result<(), String> {
        if self.trace {
            eprintln!("  writer stopped: {why}");
        }
        self.out.writer_errors += 1;
        if journal::take_crashed() {
            // The machine died at a directory sync.
            return self.restart(Crash::Machine);
        }
        if why.starts_with("disk full") {
            // The operator frees room for a segment or two.
            let room = self.rng.between(1, 2);
            journal::set_room(Some(room));
        }
        self.restart(Crash::Process)
    }

    /// Crashes, reopens through recovery, and checks what was kept.
    fn restart(&mut self, crash: Crash) -> Result<(), String> {
        match crash {
            Crash::Process => self.out.process_crashes += 1,
            Crash::Machine => self.out.machine_crashes += 1,
        }
        if self.trace {
            eprintln!(
                "  {crash:?} crash at {} ns: durable {} staged {}",
                self.disk.now_ns,
                self.durable,
                self.appended.keys().next_back().copied().unwrap_or(0)
            );
        }
        if let Some(wal) = self.wal.take() {
            wal.crash();
        }
        self.disk.crash(crash);
        if crash == Crash::Machine {
            journal::crash();
        }
        self.epoch += 1;
        self.blocked = false;
        self.open()
    }

    /// Opens the WAL (recovering it) and checks the log it holds.
    fn open(&mut self) -> Result<(), String> {
        let wal = loop {
            match WalWriter::open(self.dir, 0, Durability::Fsync, Owner::Wal) {
                Ok((wal, _)) => break wal,
                // The machine died at one of the open's directory syncs.
                Err(_) if journal::take_crashed() => {
                    self.out.machine_crashes += 1;
                    self.disk.crash(Crash::Machine);
                    journal::crash();
                }
                Err(e) if e.to_string().starts_with("disk full") => {
                    journal::set_room(Some(1));
                }
                Err(e) => return Err(self.fail(format!("recovery refused the WAL: {e}"))),
            }
        };
        let mut expected = 1u64;
        let mut bad: Option<String> = None;
        let (seed, appended) = (self.seed, &self.appended);
        let mut checks = 0;
        let stopped = WalReader::new(self.dir, 0).records(1, |r| {
            checks += 1;
            if bad.is_some() {
                return Ok(());
            }
            if r.seq != expected {
                bad = Some(format!("read seq {} where {expected} was due", r.seq));
            } else {
                match appended.get(&r.seq) {
                    None => bad = Some(format!("seq {} was never appended", r.seq)),
                    Some(&(epoch, len, _)) => {
                        if r.payload != payload(seed, epoch, r.seq, len).as_slice() {
                            bad = Some(format!(
                                "seq {} is not the record appended (epoch {epoch}, {len} bytes)",
                                r.seq
                            ));
                        }
                    }
                }
            }
            expected += 1;
            Ok(())
        });
        self.out.checks += checks + 2;
        match stopped {
            Ok(None) => {}
            Ok(Some(s)) => return Err(self.fail(format!("recovered WAL does not read: {s:?}"))),
            Err(e) => return Err(self.fail(format!("reading the recovered WAL: {e}"))),
        }
        if let Some(why) = bad {
            return Err(self.fail(why));
        }
        let last = expected - 1;
        if last < self.durable {
            return Err(self.fail(format!(
                "records reported durable were lost: seqs {}..={} (durable {})",
                last + 1,
                self.durable,
                self.durable
            )));
        }
        if wal.durable_seq() != last {
            return Err(self.fail(format!(
                "recovery reports durable seq {} but the log reads through {last}",
                wal.durable_seq()
            )));
        }
        // What recovery kept is durable now (it synced it); what it cut was
        // never reported durable and is appended again under new bytes.
        self.appended.split_off(&(last + 1));
        self.durable = last;
        self.wal = Some(wal);
        Ok(())
    }

    /// No more faults: everything staged must become durable.
    fn converge(&mut self) -> Result<(), String> {
        self.disk.faults = DiskFaults::default();
        let start = self.disk.now_ns;
        let mut completions = 0;
        self.submit()?;
        while !self.wal().is_idle() || self.disk.in_flight() > 0 {
            if completions > CONVERGE_COMPLETIONS_MAX
                || self.disk.now_ns - start > CONVERGE_SIM_NS_MAX
            {
                return Err(self.fail(format!(
                    "no convergence after the faults stopped: {completions} completions, \
                     durable {}",
                    self.durable
                )));
            }
            if self.disk.in_flight() == 0 {
                self.submit()?;
                if self.disk.in_flight() == 0 && !self.wal().is_idle() {
                    return Err(self.fail("staged records but nothing submitted".into()));
                }
            }
            self.complete_one()?;
            completions += 1;
        }
        let staged = self.appended.keys().next_back().copied().unwrap_or(0);
        self.out.checks += 1;
        if self.durable != staged {
            return Err(self.fail(format!(
                "idle with durable {} but {staged} staged",
                self.durable
            )));
        }
        // And it survives one more crash.
        self.restart(Crash::Machine)
    }
}

/// Runs one seed in a fresh directory under `root`.
pub(crate) fn run_seed(seed: u64, root: &Path, trace: bool) -> Result<Outcome, String> {
    let dir = tempfile::Builder::new()
        .prefix("sim-")
        .tempdir_in(root)
        .map_err(|e| format!("seed {seed}: a scratch directory: {e}"))?;
    let mut rng = Rng::new(seed);
    let profile = Profile::draw(&mut rng);
    if trace {
        eprintln!("seed {seed}: {profile:?}");
    }
    journal::start(rng.next_u64(), profile.crash_at_sync, profile.segments_room);
    let disk = SimDisk::new(rng.fork(), profile.faults);
    // RINGSHIP_SIM_KEEP=1 with RINGSHIP_SIM_SEED keeps the directory to
    // look at.
    let (path, _guard) = if trace && std::env::var_os("RINGSHIP_SIM_KEEP").is_some() {
        let path = dir.keep();
        eprintln!("keeping {}", path.display());
        (path, None)
    } else {
        (dir.path().to_path_buf(), Some(dir))
    };
    let mut run = Run {
        seed,
        dir: &path,
        trace,
        rng: rng.fork(),
        disk,
        net: Net::new(Rng::new(0), NetFaults::default()),
        wal: None,
        epoch: 0,
        appended: BTreeMap::new(),
        durable: 0,
        blocked: false,
        out: Outcome {
            seeds: 1,
            ..Outcome::default()
        },
    };
    let result = drive(&mut run, &profile);
    let j = journal::stop().expect("started above");
    result?;
    run.out.dir_crashes = j.crashes_injected;
    run.out.creates_undone = j.creates_undone;
    run.out.renames_undone = j.renames_undone;
    run.out.segments_refused = j.enospc;
    run.out.records_durable = run.durable;
    run.out.sim_ns = run.disk.now_ns;
    run.out.disk = run.disk.stats;
    if let Some(wal) = run.wal.take() {
        wal.crash();
    }
    Ok(run.out)
}

/// One seed's steps, then convergence.
fn drive(run: &mut Run<'_>, profile: &Profile) -> Result<(), String> {
    run.open()?;
    for _ in 0..profile.steps {
        if run.rng.chance(profile.crash) {
            let crash = if run.rng.chance(profile.machine_crash) {
                Crash::Machine
            } else {
                Crash::Process
            };
            run.restart(crash)?;
            continue;
        }
        let in_flight = run.disk.in_flight();
        if !run.blocked && (in_flight == 0 || run.rng.chance(0.5)) {
            run.append(profile)?;
        } else if in_flight > 0 {
            run.complete_one()?;
        } else {
            run.submit()?;
            if run.disk.in_flight() == 0 {
                run.blocked = false;
            }
        }
        run.disk.now_ns += run.rng.between(0, 100_000);
    }
    // Room again, and no more crashes at directory syncs: convergence.
    journal::set_room(None);
    journal::with_crash_at_sync(0.0);
    run.converge()
}

/// Where the simulator's scratch goes: memory if the machine has it (the
/// WAL syncs a lot), else the temp directory.
pub(crate) fn scratch_root() -> std::path::PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Runs `seeds` of the disk simulation on two threads, with the broken
/// variant on or off: the summed outcome, and the failures.
pub(crate) fn run_seeds(seeds: Vec<u64>, broken: bool) -> (Outcome, Vec<String>) {
    run_parallel(seeds, "simulate", Outcome::add, |seed, root| {
        crate::wal::writer::broken::set_acks_before_sync(broken);
        run_seed(seed, root, false)
    })
}

/// Runs `run` for each of `seeds` on two threads, in a scratch directory
/// under [`scratch_root`]. A panic is a failure of its seed, reported with
/// the line that replays it (`sim::tests::{test}`); the other seeds go on.
/// `RINGSHIP_SIM_TIMES` prints each seed's wall time.
fn run_parallel<O: Default + Send>(
    seeds: Vec<u64>,
    test: &str,
    add: fn(&mut O, &O),
    run: impl Fn(u64, &Path) -> Result<O, String> + Sync,
) -> (O, Vec<String>) {
    let root = scratch_root();
    let workers = 2;
    let results: Vec<(O, Vec<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let mine: Vec<u64> = seeds.iter().copied().skip(w).step_by(workers).collect();
                let (root, run) = (&root, &run);
                s.spawn(move || {
                    let mut total = O::default();
                    let mut failures = Vec::new();
                    for seed in mine {
                        let t = std::time::Instant::now();
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            run(seed, root)
                        }))
                        .unwrap_or_else(|panic| {
                            let why = panic
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_default();
                            Err(format!(
                                "seed {seed} panicked: {why}\nreplay: RINGSHIP_SIM_SEED={seed} \
                                 cargo test --lib sim::tests::{test} -- --nocapture"
                            ))
                        });
                        if std::env::var_os("RINGSHIP_SIM_TIMES").is_some() {
                            eprintln!("seed {seed}: {:.2} s", t.elapsed().as_secs_f64());
                        }
                        match r {
                            Ok(o) => add(&mut total, &o),
                            Err(why) => failures.push(why),
                        }
                    }
                    (total, failures)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a simulator thread panicked"))
            .collect()
    });
    let mut total = O::default();
    let mut failures = Vec::new();
    for (o, f) in results {
        add(&mut total, &o);
        failures.extend(f);
    }
    (total, failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_u64(name: &str) -> Option<u64> {
        let v = std::env::var(name).ok()?;
        Some(
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v}: not a number")),
        )
    }

    /// The seeded simulation: CI_SEEDS seeds, or RINGSHIP_SIM_SEEDS, or
    /// the one seed RINGSHIP_SIM_SEED replays with a trace.
    #[test]
    fn simulate() {
        if let Some(seed) = env_u64("RINGSHIP_SIM_SEED") {
            let out = run_seed(seed, &scratch_root(), true).unwrap_or_else(|why| panic!("{why}"));
            eprintln!("{}", out.report());
            return;
        }
        let n = env_u64("RINGSHIP_SIM_SEEDS").unwrap_or(CI_SEEDS);
        let started = std::time::Instant::now();
        let (total, failures) = run_seeds((0..n).collect(), false);
        let report = format!(
            "ringship simulator: seeds 0..{n} in {:.1} s\n{}\n",
            started.elapsed().as_secs_f64(),
            total.report()
        );
        eprintln!("{report}");
        // CI prints this file: the test harness captures stderr.
        let _ = std::fs::write(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sim-summary.txt"),
            &report,
        );
        assert!(
            failures.is_empty(),
            "{} of {n} seeds failed; the first:\n{}",
            failures.len(),
            failures[0]
        );
        assert!(total.machine_crashes > 0 && total.disk.sync_eio > 0 && total.segments > 0);
    }

    /// The shipping simulation: a shipper and a receiver over the
    /// simulated network, SHIPPING_CI_SEEDS seeds (or RINGSHIP_SIM_SEEDS),
    /// or the one RINGSHIP_SIM_SEED replays.
    #[test]
    fn simulate_shipping() {
        if let Some(seed) = env_u64("RINGSHIP_SIM_SEED") {
            let out =
                pair::run_seed(seed, &scratch_root(), true).unwrap_or_else(|why| panic!("{why}"));
            eprintln!("{}", out.report());
            return;
        }
        let n = env_u64("RINGSHIP_SIM_SEEDS").unwrap_or(SHIPPING_CI_SEEDS);
        let started = std::time::Instant::now();
        let (total, failures) = run_parallel(
            (0..n).collect(),
            "simulate_shipping",
            pair::PairOutcome::add,
            |seed, root| pair::run_seed(seed, root, false),
        );
        let report = format!(
            "ringship shipping simulator: seeds 0..{n} in {:.1} s\n{}\n",
            started.elapsed().as_secs_f64(),
            total.report()
        );
        eprintln!("{report}");
        let _ = std::fs::write(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sim-shipping-summary.txt"),
            &report,
        );
        assert!(
            failures.is_empty(),
            "{} of {n} shipping seeds failed; the first:\n{}",
            failures.len(),
            failures[0]
        );
        // The faults must reach the paths they are for.
        if n >= SHIPPING_CI_SEEDS {
            let (net, d) = (&total.net, &total.disk);
            assert!(net.resets > 0 && net.half_open > 0 && net.short_sends > 0);
            assert!(net.stop_notices > 0, "no Stop notice reached a shipper");
            assert!(d.sync_eio > 0 && d.write_enospc > 0);
            assert!(total.receiver_crashes[1] > 0 && total.shipper_crashes[1] > 0);
        }
    }

    /// A shipping seed replays exactly too.
    #[test]
    fn a_shipping_seed_replays_exactly() {
        let root = scratch_root();
        let a = pair::run_seed(2, &root, false).unwrap();
        let b = pair::run_seed(2, &root, false).unwrap();
        assert_eq!(a.report(), b.report());
    }

    /// With the broken variant, the receiver acknowledges records before
    /// its fdatasync: a machine crash of the receiver then loses records
    /// the shipper was told are safe, which the shipping seeds must catch.
    #[test]
    fn the_broken_variant_is_caught_by_the_shipping_simulation() {
        crate::wal::writer::broken::set_acks_before_sync(true);
        let root = scratch_root();
        let caught = (0..SHIPPING_CI_SEEDS).find_map(|seed| {
            std::panic::catch_unwind(|| pair::run_seed(seed, &root, false))
                .ok()
                .and_then(|r| r.err())
                .filter(|why| {
                    why.contains("lost acknowledged records")
                        || why.contains("the receiver made only")
                })
                .map(|why| (seed, why))
        });
        crate::wal::writer::broken::set_acks_before_sync(false);
        let (seed, why) = caught.expect("no shipping seed caught acks sent before the fdatasync");
        let report = format!("shipping: broken variant caught by seed {seed}:\n{why}\n");
        eprintln!("{report}");
        let _ = std::fs::write(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sim-shipping-broken.txt"),
            report,
        );
    }

    /// The same seed twice gives the same run: a printed seed replays.
    #[test]
    fn a_seed_replays_exactly() {
        let root = scratch_root();
        let a = run_seed(7, &root, false).unwrap();
        let b = run_seed(7, &root, false).unwrap();
        assert_eq!(a.report(), b.report());
    }

    /// The broken variant (a commit durable at its write, before its
    /// fdatasync) loses reported records at a machine crash: the CI seeds
    /// must catch it.
    #[test]
    fn the_broken_variant_is_caught() {
        // Every seed reports durable, so every seed must catch it.
        const SEEDS: u64 = 32;
        let (_, failures) = run_seeds((0..SEEDS).collect(), true);
        let caught = failures
            .iter()
            .filter(|f| f.contains("reported durable while byte"))
            .count();
        assert_eq!(
            caught as u64, SEEDS,
            "seeds catching a WAL that reports a commit durable before its fdatasync; failures: {failures:#?}"
        );
        let report = format!(
            "broken variant (a commit reported durable before its fdatasync) caught by {caught} of {SEEDS} seeds; the first:\n{}\n",
            failures[0]
        );
        eprintln!("{report}");
        let _ = std::fs::write(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sim-broken.txt"),
            report,
        );
    }
}
