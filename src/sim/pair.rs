//! The shipping simulation: a shipper (the real WAL writer and the real
//! TCP sink, sending by copy) and a receiver (the real connection state
//! machine and its replica WAL), each on its own simulated disk, joined by
//! the simulated network, on one thread and one clock, from one seed.
//!
//! Faults: everything the disk simulation injects, on both disks; short
//! sends and receives, delays and resets on the network; process and
//! machine crashes of either side. A connect is answered as the receiver's
//! admission would: refused while the receiver is down, a takeover of a
//! connection still being served, the replica opened (recovered) under the
//! shipper's WAL id and its durable seq welcomed.
//!
//! Checked on every seed, besides the WAL checks on each side:
//!
//! - the sink never reports acked a seq the receiver has not made durable;
//! - nothing leaves the shipper beyond its durable seq;
//! - the receiver's log is contiguous from seq 1, duplicate-free, and
//!   byte-equal to a prefix of the shipper's, after every crash;
//! - acknowledged records survive every crash of the receiver;
//! - once the faults stop, the two sides converge: everything staged is
//!   durable, shipped, durable at the receiver and acknowledged, within a
//!   bounded simulated time.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::disk::{Crash, DiskFaults, DiskStats, SimDisk};
use super::host::Host;
use super::net::{Net, NetFaults, NetStats, Side};
use super::payload;
use super::rng::Rng;
use crate::io::{Completion, Owner};
use crate::protocol::Hello;
use crate::receive::simulated::SimConn;
use crate::sink::Sink;
use crate::sink::tcp::{HandshakeError, SendMode, SimAttempt, TcpConfig, TcpSink};
use crate::wal::segment::WalId;
use crate::wal::{Durability, Stage, WalReader, WalWriter};

/// Simulated time allowed for convergence once the faults stop.
const CONVERGE_SIM_NS_MAX: u64 = 120_000_000_000;
/// Events allowed for it.
const CONVERGE_EVENTS_MAX: u64 = 2_000_000;

/// What one shipping seed (or a run of them) did.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PairOutcome {
    pub seeds: u64,
    pub records_staged: u64,
    pub records_acked: u64,
    pub shipper_crashes: [u64; 2],
    pub receiver_crashes: [u64; 2],
    pub connects_refused: u64,
    pub takeovers: u64,
    pub shipper_errors: u64,
    pub checks: u64,
    pub sim_ns: u64,
    pub net: NetStats,
    pub disk: DiskStats,
}

impl PairOutcome {
    pub fn add(&mut self, o: &PairOutcome) {
        self.seeds += o.seeds;
        self.records_staged += o.records_staged;
        self.records_acked += o.records_acked;
        for k in 0..2 {
            self.shipper_crashes[k] += o.shipper_crashes[k];
            self.receiver_crashes[k] += o.receiver_crashes[k];
        }
        self.connects_refused += o.connects_refused;
        self.takeovers += o.takeovers;
        self.shipper_errors += o.shipper_errors;
        self.checks += o.checks;
        self.sim_ns += o.sim_ns;
        self.net.add(&o.net);
        self.disk.add(&o.disk);
    }

    pub fn report(&self) -> String {
        let n = &self.net;
        let d = &self.disk;
        format!(
            "seeds {} · records staged {} acknowledged {} · simulated {:.1} s\n\
             crashes: shipper process {} machine {} · receiver process {} machine {} · \
             shipper stopped by an injected error {}\n\
             network: connections {} (refused {}, takeovers {}) · sends {} (short {}) · \
             receives {} (short {}) · resets {} · half-open {} · {} bytes lost in flight · \
             latency spikes {} · Stop notices delivered {}\n\
             disks: short writes {} · write EIO {} · ENOSPC {} · fdatasync EIO {} · \
             dirty blocks lost at crashes {}\n\
             invariant checks {}",
            self.seeds,
            self.records_staged,
            self.records_acked,
            self.sim_ns as f64 / 1e9,
            self.shipper_crashes[0],
            self.shipper_crashes[1],
            self.receiver_crashes[0],
            self.receiver_crashes[1],
            self.shipper_errors,
            n.connections,
            self.connects_refused,
            self.takeovers,
            n.sends,
            n.short_sends,
            n.recvs,
            n.short_recvs,
            n.resets,
            n.half_open,
            n.bytes_lost_in_flight,
            n.latency_spikes,
            n.stop_notices,
            d.short_writes,
            d.write_eio,
            d.write_enospc,
            d.sync_eio,
            d.blocks_lost,
            self.checks,
        )
    }
}

/// What one seed draws.
#[derive(Debug, Clone)]
struct Profile {
    steps: u64,
    payload_max: u64,
    batch_max: u64,
    shipper_crash: f64,
    receiver_crash: f64,
    machine_crash: f64,
    reset: f64,
    half_open: f64,
    disk: DiskFaults,
    net: NetFaults,
}

impl Profile {
    fn draw(rng: &mut Rng) -> Profile {
        let mut p = |max: f64| {
            if rng.chance(0.25) {
                0.0
            } else {
                max * (rng.below(1000) as f64 / 1000.0)
            }
        };
        let disk = DiskFaults {
            short_write: p(0.1),
            write_eio: p(0.002),
            write_enospc: p(0.002),
            sync_eio: p(0.004),
            latency_spike: p(0.03),
        };
        let net = NetFaults {
            short_send: p(0.3),
            short_recv: p(0.3),
            latency_spike: p(0.03),
        };
        let (shipper_crash, receiver_crash, machine_crash, reset, half_open) =
            (p(0.004), p(0.004), p(1.0), p(0.01), p(0.003));
        Profile {
            steps: rng.between(300, 1200),
            payload_max: if rng.chance(0.2) { 8192 } else { 300 },
            batch_max: rng.between(1, 48),
            shipper_crash,
            receiver_crash,
            machine_crash,
            reset,
            half_open,
            disk,
            net,
        }
    }
}

struct Shipper {
    wal: WalWriter,
    sink: TcpSink,
    /// Staging said Full: wait for a completion or a rotation.
    blocked: bool,
}

struct Run<'a> {
    seed: u64,
    src_dir: &'a Path,
    recv_dir: PathBuf,
    trace: bool,
    rng: Rng,
    base: Instant,
    net: Net,
    src_disk: SimDisk,
    recv_disk: SimDisk,
    shipper: Option<Shipper>,
    wal_id: WalId,
    attempts: Arc<Mutex<VecDeque<SimAttempt>>>,
    /// Attempts being answered, and when.
    answering: VecDeque<(u64, SimAttempt)>,
    /// (id, link, connection).
    conns: Vec<(u32, usize, SimConn)>,
    next_conn: u32,
    /// The receiver is down (crashed) until then.
    receiver_down_until: u64,
    epoch: u32,
    /// (epoch, len) of every record staged at the shipper and not lost.
    appended: BTreeMap<u64, (u32, u32)>,
    /// The shipper's reported durable seq.
    durable: u64,
    /// The highest seq the receiver reported durable, and the highest acked.
    recv_durable: u64,
    acked: u64,
    shipped: Vec<u64>,
    out: PairOutcome,
}

impl Run<'_> {
    fn fail(&self, why: String) -> String {
        format!(
            "shipping seed {} failed at simulated {} ns (shipper epoch {}): {why}\n\
             replay: RINGSHIP_SIM_SEED={} cargo test --lib sim::tests::simulate_shipping -- --nocapture",
            self.seed, self.net.now_ns, self.epoch, self.seed
        )
    }

    fn set_clock(&self) {
        crate::io::clock::set_sim(Some(self.base + Duration::from_nanos(self.net.now_ns)));
    }

    /// Opens the shipper's WAL (recovering it), checks it, and makes its sink.
    fn start_shipper(&mut self) -> Result<(), String> {
        let wal = match WalWriter::open(self.src_dir, 0, Durability::Fsync, Owner::Wal) {
            Ok((wal, _)) => wal,
            Err(e) => return Err(self.fail(format!("shipper recovery refused its WAL: {e}"))),
        };
        let last = self.check_log(self.src_dir, "the shipper's WAL", true)?;
        if last < self.durable {
            return Err(self.fail(format!(
                "the shipper lost records it reported durable: seqs {}..={}",
                last + 1,
                self.durable
            )));
        }
        self.appended.split_off(&(last + 1));
        self.durable = last;
        self.wal_id = wal.wal_id();
        let config = TcpConfig {
            peer: "127.0.0.1:9".parse().expect("an address"),
            source: "sim".into(),
            send_mode: SendMode::Copy,
        };
        let mut sink = TcpSink::new(config, self.src_dir, 0).expect("a sink");
        sink.simulated(self.attempts.clone());
        self.shipper = Some(Shipper {
            wal,
            sink,
            blocked: false,
        });
        Ok(())
    }

    /// Reads a WAL's records from seq 1 and checks each against what the
    /// shipper appended; returns the last seq. `source`: the shipper's own
    /// log (every record must be the last appended under its seq), else
    /// the receiver's (every record must be durable at the shipper).
    fn check_log(&mut self, dir: &Path, what: &str, source: bool) -> Result<u64, String> {
        let mut expected = 1u64;
        let mut bad = None;
        let (seed, appended, durable) = (self.seed, &self.appended, self.durable);
        let mut checks = 0;
        let stopped = WalReader::new(dir, 0).records(1, |r| {
            checks += 1;
            if bad.is_some() {
                return Ok(());
            }
            if r.seq != expected {
                bad = Some(format!("{what}: seq {} where {expected} was due", r.seq));
            } else if !source && r.seq > durable {
                bad = Some(format!(
                    "{what} holds seq {} beyond the shipper's durable seq {durable}",
                    r.seq
                ));
            } else {
                match appended.get(&r.seq) {
                    None => bad = Some(format!("{what}: seq {} was never appended", r.seq)),
                    Some(&(epoch, len)) => {
                        if r.payload != payload(seed, epoch, r.seq, len).as_slice() {
                            bad = Some(format!("{what}: seq {} differs from the shipper's", r.seq));
                        }
                    }
                }
            }
            expected += 1;
            Ok(())
        });
        self.out.checks += checks;
        match stopped {
            Ok(None) => {}
            Ok(Some(s)) => return Err(self.fail(format!("{what} does not read: {s:?}"))),
            Err(e) => return Err(self.fail(format!("reading {what}: {e}"))),
        }
        if let Some(why) = bad {
            return Err(self.fail(why));
        }
        Ok(expected - 1)
    }

    fn crash_shipper(&mut self, crash: Crash) -> Result<(), String> {
        self.out.shipper_crashes[(crash == Crash::Machine) as usize] += 1;
        if self.trace {
            eprintln!(
                "  shipper {crash:?} crash at {} ns: durable {} acked {}",
                self.net.now_ns, self.durable, self.acked
            );
        }
        if let Some(s) = self.shipper.take() {
            s.wal.crash();
            drop(s.sink);
        }
        self.net.close_side(Side::Shipper);
        self.attempts.lock().expect("not poisoned").clear();
        self.answering.clear();
        self.src_disk.crash(crash);
        self.epoch += 1;
        self.start_shipper()
    }

    fn crash_receiver(&mut self, crash: Crash) -> Result<(), String> {
        self.out.receiver_crashes[(crash == Crash::Machine) as usize] += 1;
        if self.trace {
            eprintln!(
                "  receiver {crash:?} crash at {} ns: durable {} acked {}",
                self.net.now_ns, self.recv_durable, self.acked
            );
        }
        for (_, _, conn) in self.conns.drain(..) {
            conn.crash();
        }
        self.net.close_side(Side::Receiver);
        self.recv_disk.crash(crash);
        self.receiver_down_until = self.net.now_ns + self.rng.between(0, 500_000_000);
        // Recovery, as the next admission will run it; what it holds must
        // cover everything acknowledged.
        let replica = self.recv_dir.join("sim");
        if replica.exists() {
            match WalWriter::open_as(
                &replica,
                0,
                Durability::Fsync,
                Owner::Connection(0),
                Some(self.wal_id),
            ) {
                Ok((wal, _)) => drop(wal),
                Err(e) => {
                    return Err(self.fail(format!("receiver recovery refused its replica: {e}")));
                }
            }
            let last = self.check_log(&replica, "the receiver's replica", false)?;
            self.out.checks += 1;
            if last < self.acked {
                return Err(self.fail(format!(
                    "the receiver lost acknowledged records: it holds through {last}, {} was acked",
                    self.acked
                )));
            }
            self.recv_durable = last;
        }
        Ok(())
    }

    /// Answers a connect attempt as admission would; `false` if it must
    /// wait (an older connection is still being taken over).
    fn answer(&mut self, attempt: &SimAttempt) -> Result<bool, String> {
        if self.net.now_ns < self.receiver_down_until {
            self.out.connects_refused += 1;
            let refused = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
            let _ = attempt.tx.send(Err(HandshakeError::Connect(refused)));
            return Ok(true);
        }
        if !self.conns.is_empty() {
            // Take over: the old connection is shut down, finishes what it
            // verified, and lets its WAL go.
            for (_, _, conn) in &self.conns {
                conn.shut_down();
            }
            return Ok(false);
        }
        let hello: &Hello = &attempt.hello;
        self.recv_disk.recovered();
        let wal = match WalWriter::open_as(
            &self.recv_dir.join(&hello.source),
            hello.shard,
            Durability::Fsync,
            Owner::Connection(0),
            Some(hello.wal_id),
        ) {
            Ok((wal, _)) => wal,
            Err(e) => return Err(self.fail(format!("admission could not open the replica: {e}"))),
        };
        let durable = wal.durable_seq();
        self.recv_durable = self.recv_durable.max(durable);
        let (client, server, link) = self.net.connect();
        self.next_conn += 1;
        let id = self.next_conn;
        let conn = SimConn::new(server, hello.clone(), wal, Owner::Connection(id));
        self.conns.push((id, link, conn));
        let _ = attempt.tx.send(Ok((client, durable)));
        Ok(true)
    }

    /// Stages a batch at the shipper and submits it.
    fn append(&mut self, profile: &Profile) -> Result<(), String> {
        let n = self.rng.between(1, profile.batch_max);
        for _ in 0..n {
            let len = self.rng.between(0, profile.payload_max) as u32;
            let (epoch, seed, now) = (self.epoch, self.seed, self.net.now_ns);
            let mut host = Host {
                side: Side::Shipper,
                disk: &mut self.src_disk,
                net: &mut self.net,
            };
            let s = self.shipper.as_mut().expect("running");
            if s.blocked {
                break;
            }
            let seq = s.wal.next_seq();
            let bytes = payload(seed, epoch, seq, len);
            match s.wal.stage(&mut host, now, &bytes) {
                Ok(Stage::Staged(_)) => {
                    self.appended.insert(seq, (epoch, len));
                    self.out.records_staged += 1;
                }
                Ok(Stage::Full) => {
                    s.blocked = true;
                    break;
                }
                Err(e) => return Err(self.fail(format!("staging: {e}"))),
            }
        }
        Ok(())
    }

    /// The shipper's turn: submit, then ship what is durable. An error of
    /// the WAL stops the shipper as it stops a shard (a process restart).
    fn shipper_turn(&mut self) -> Result<(), String> {
        let mut host = Host {
            side: Side::Shipper,
            disk: &mut self.src_disk,
            net: &mut self.net,
        };
        let s = self.shipper.as_mut().expect("running");
        let submitted = s.wal.submit(&mut host);
        match submitted {
            Ok(sub) => {
                if sub.rotated {
                    s.blocked = false;
                }
                if let Some(seq) = sub.durable_seq {
                    self.durable = self.durable.max(seq);
                }
            }
            Err(_) => return self.shipper_error(),
        }
        let mut host = Host {
            side: Side::Shipper,
            disk: &mut self.src_disk,
            net: &mut self.net,
        };
        let s = self.shipper.as_mut().expect("running");
        if let Err(e) = s.sink.ship(&mut host, &mut s.wal) {
            let why = format!("the sink stopped: {e}");
            return Err(self.fail(why));
        }
        self.note_acked()
    }

    fn shipper_error(&mut self) -> Result<(), String> {
        self.out.shipper_errors += 1;
        self.crash_shipper(Crash::Process)
    }

    fn note_acked(&mut self) -> Result<(), String> {
        let Some(s) = self.shipper.as_ref() else {
            return Ok(());
        };
        // (A restarted sink reports 0 until it connects.)
        let acked = s.sink.acked_seq();
        if acked > self.acked {
            self.out.checks += 1;
            if acked > self.recv_durable {
                return Err(self.fail(format!(
                    "the sink reports seq {acked} acked, the receiver made only {} durable",
                    self.recv_durable
                )));
            }
            s.wal.note_acked(acked);
            self.acked = acked;
        }
        Ok(())
    }

    fn receiver_turn(&mut self) {
        let mut host = Host {
            side: Side::Receiver,
            disk: &mut self.recv_disk,
            net: &mut self.net,
        };
        for (_, _, conn) in &mut self.conns {
            conn.step(&mut host);
            self.recv_durable = self.recv_durable.max(conn.durable_seq());
        }
        // Retire what is done.
        let mut k = 0;
        while k < self.conns.len() {
            let id = self.conns[k].0;
            let owner = Owner::Connection(id);
            let in_flight =
                self.net.in_flight_for(Side::Receiver, owner) + self.recv_disk.in_flight_for(owner);
            if self.conns[k].2.is_done(in_flight) {
                let (_, link, conn) = self.conns.remove(k);
                conn.retire();
                // Its socket closes with it.
                self.net.shut_end(link, Side::Receiver);
            } else {
                k += 1;
            }
        }
    }

    fn dispatch(&mut self, side: Side, c: Completion) -> Result<(), String> {
        match side {
            Side::Shipper => {
                let Some(s) = self.shipper.as_mut() else {
                    return Ok(());
                };
                let mut host = Host {
                    side: Side::Shipper,
                    disk: &mut self.src_disk,
                    net: &mut self.net,
                };
                let (mut advanced, mut wal_failed, mut sink_error) = (None, false, None);
                match c.token.owner {
                    Owner::Wal => match s.wal.on_completion(&mut host, c) {
                        Ok(seq) => advanced = seq,
                        Err(_) => wal_failed = true,
                    },
                    Owner::Sink => {
                        if let Err(e) = s.sink.on_completion(&mut host, c) {
                            sink_error = Some(e.to_string());
                        }
                    }
                    other => panic!("a shipper completion for {other:?}"),
                }
                let durable_now = s.wal.durable_seq();
                if let Some(seq) = advanced {
                    self.durable = self.durable.max(seq);
                }
                if wal_failed {
                    return self.shipper_error();
                }
                if let Some(e) = sink_error {
                    return Err(self.fail(format!("the sink stopped: {e}")));
                }
                // Nothing leaves beyond the durable seq.
                for seq in std::mem::take(&mut self.shipped) {
                    self.out.checks += 1;
                    if seq > durable_now {
                        let why =
                            format!("seq {seq} was sent with the durable seq at {durable_now}");
                        return Err(self.fail(why));
                    }
                }
                Ok(())
            }
            Side::Receiver => {
                let Owner::Connection(id) = c.token.owner else {
                    panic!("a receiver completion for {:?}", c.token.owner);
                };
                let mut host = Host {
                    side: Side::Receiver,
                    disk: &mut self.recv_disk,
                    net: &mut self.net,
                };
                if let Some((_, _, conn)) = self.conns.iter_mut().find(|(k, _, _)| *k == id) {
                    conn.on_completion(&mut host, c);
                    self.recv_durable = self.recv_durable.max(conn.durable_seq());
                }
                Ok(())
            }
        }
    }

    /// Handles the next event: a disk or network completion, an attempt
    /// answered, or the clock moving to the sink's backoff. `false` if
    /// nothing is pending at all.
    fn next_event(&mut self) -> Result<bool, String> {
        // Connect attempts made since.
        let fresh: Vec<SimAttempt> = self
            .attempts
            .lock()
            .expect("not poisoned")
            .drain(..)
            .collect();
        for a in fresh {
            let at = self.net.now_ns + self.rng.between(50_000, 2_000_000);
            self.answering.push_back((at, a));
        }
        let backoff = self
            .shipper
            .as_ref()
            .and_then(|s| s.sink.wake_at())
            .map(|t| t.saturating_duration_since(self.base).as_nanos() as u64);
        let candidates = [
            self.src_disk.next_due(),
            self.recv_disk.next_due(),
            self.net.next_due(),
            self.answering.front().map(|(t, _)| *t),
            backoff,
        ];
        let Some(next) = candidates.into_iter().flatten().min() else {
            return Ok(false);
        };
        let next = next.max(self.net.now_ns);
        if self.src_disk.next_due() == Some(next)
            || self
                .src_disk
                .next_due()
                .is_some_and(|d| d <= self.net.now_ns)
        {
            self.net.now_ns = next;
            self.src_disk.now_ns = next;
            self.set_clock();
            if let Some(c) = self.src_disk.complete_next() {
                return self.dispatch(Side::Shipper, c).map(|()| true);
            }
        }
        if self.recv_disk.next_due() == Some(next)
            || self
                .recv_disk
                .next_due()
                .is_some_and(|d| d <= self.net.now_ns)
        {
            self.net.now_ns = next;
            self.recv_disk.now_ns = next;
            self.set_clock();
            if let Some(c) = self.recv_disk.complete_next() {
                return self.dispatch(Side::Receiver, c).map(|()| true);
            }
        }
        if let Some(&(t, _)) = self.answering.front()
            && t <= next
        {
            self.net.now_ns = next;
            self.set_clock();
            let (t, attempt) = self.answering.pop_front().expect("checked");
            if self.answer(&attempt)? {
                if let Some((side, c)) = self.net.complete_wake(Side::Shipper) {
                    self.dispatch(side, c)?;
                }
            } else {
                self.out.takeovers += 1;
                let _ = t;
                self.answering
                    .push_back((self.net.now_ns + 1_000_000, attempt));
            }
            return Ok(true);
        }
        let mut shipped = Vec::new();
        let done = self.net.complete_due(next, &mut shipped);
        self.shipped.extend(shipped);
        if let Some((side, c)) = done {
            self.set_clock();
            self.dispatch(side, c)?;
            return Ok(true);
        }
        // Only time moves: a delivery, or the backoff.
        self.net.now_ns = next.max(self.net.now_ns + 1);
        self.set_clock();
        Ok(true)
    }

    fn converged(&self) -> bool {
        let staged = self.appended.keys().next_back().copied().unwrap_or(0);
        self.shipper.as_ref().is_some_and(|s| {
            s.wal.is_idle() && self.durable == staged && s.sink.acked_seq() == staged
        }) && self.recv_durable >= staged
    }
}

/// Runs one shipping seed in fresh directories under `root`.
pub(crate) fn run_seed(seed: u64, root: &Path, trace: bool) -> Result<PairOutcome, String> {
    let dir = tempfile::Builder::new()
        .prefix("simship-")
        .tempdir_in(root)
        .map_err(|e| format!("seed {seed}: a scratch directory: {e}"))?;
    let mut rng = Rng::new(seed ^ 0x5348_4950); // "SHIP": not the disk run's draws
    let profile = Profile::draw(&mut rng);
    if trace {
        eprintln!("shipping seed {seed}: {profile:?}");
    }
    let src_dir = dir.path().join("src");
    let mut run = Run {
        seed,
        src_dir: &src_dir,
        recv_dir: dir.path().join("recv"),
        trace,
        net: Net::new(rng.fork(), profile.net),
        src_disk: SimDisk::new(rng.fork(), profile.disk),
        recv_disk: SimDisk::new(rng.fork(), profile.disk),
        rng: rng.fork(),
        base: Instant::now(),
        shipper: None,
        wal_id: WalId::NONE,
        attempts: Arc::new(Mutex::new(VecDeque::new())),
        answering: VecDeque::new(),
        conns: Vec::new(),
        next_conn: 0,
        receiver_down_until: 0,
        epoch: 0,
        appended: BTreeMap::new(),
        durable: 0,
        recv_durable: 0,
        acked: 0,
        shipped: Vec::new(),
        out: PairOutcome {
            seeds: 1,
            ..PairOutcome::default()
        },
    };
    run.set_clock();
    let result = drive(&mut run, &profile);
    crate::io::clock::set_sim(None);
    result?;
    run.out.records_acked = run.acked;
    run.out.sim_ns = run.net.now_ns;
    run.out.net = run.net.stats;
    run.out.disk = run.src_disk.stats;
    run.out.disk.add(&run.recv_disk.stats);
    if let Some(s) = run.shipper.take() {
        s.wal.crash();
    }
    for (_, _, conn) in run.conns.drain(..) {
        conn.crash();
    }
    Ok(run.out)
}

fn drive(run: &mut Run<'_>, profile: &Profile) -> Result<(), String> {
    run.start_shipper()?;
    for _ in 0..profile.steps {
        let crash = |run: &mut Run<'_>| {
            if run.rng.chance(profile.machine_crash) {
                Crash::Machine
            } else {
                Crash::Process
            }
        };
        if run.rng.chance(profile.shipper_crash) {
            let c = crash(run);
            run.crash_shipper(c)?;
        }
        if run.rng.chance(profile.receiver_crash) {
            let c = crash(run);
            run.crash_receiver(c)?;
        }
        if run.rng.chance(profile.reset)
            && let Some(link) = run.net.newest()
        {
            run.net.reset(link);
        }
        if run.rng.chance(profile.half_open)
            && let Some(link) = run.net.newest()
        {
            run.net.half_open(link);
        }
        if run.rng.chance(0.3) {
            run.append(profile)?;
        }
        run.shipper_turn()?;
        run.receiver_turn();
        // A few events per step.
        for _ in 0..run.rng.between(1, 6) {
            if !run.next_event()? {
                break;
            }
            run.note_acked()?;
        }
        run.net.now_ns += run.rng.between(0, 200_000);
        run.set_clock();
    }
    // The faults stop: the two sides must converge.
    run.src_disk.faults = DiskFaults::default();
    run.recv_disk.faults = DiskFaults::default();
    run.net.faults = NetFaults::default();
    let start = run.net.now_ns;
    let mut events = 0u64;
    loop {
        run.shipper_turn()?;
        run.receiver_turn();
        run.out.checks += 1;
        if run.converged() {
            break;
        }
        if events > CONVERGE_EVENTS_MAX || run.net.now_ns - start > CONVERGE_SIM_NS_MAX {
            let staged = run.appended.keys().next_back().copied().unwrap_or(0);
            let acked = run.shipper.as_ref().map_or(0, |s| s.sink.acked_seq());
            return Err(run.fail(format!(
                "no convergence after the faults stopped ({events} events, {:.1} s simulated): \
                 staged {staged}, durable {}, acked {acked}, receiver durable {}",
                (run.net.now_ns - start) as f64 / 1e9,
                run.durable,
                run.recv_durable
            )));
        }
        if !run.next_event()? {
            // Nothing pending: a turn must make progress, or time passes.
            run.net.now_ns += 1_000_000;
            run.set_clock();
        }
        run.note_acked()?;
        events += 1;
    }
    // The receiver holds exactly the shipper's log, and survives a crash.
    run.crash_receiver(Crash::Machine)?;
    let staged = run.appended.keys().next_back().copied().unwrap_or(0);
    run.out.checks += 1;
    if run.recv_durable != staged {
        return Err(run.fail(format!(
            "after convergence the receiver holds through {}, the shipper {staged}",
            run.recv_durable
        )));
    }
    Ok(())
}
