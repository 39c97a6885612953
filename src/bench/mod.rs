//! `ringship bench`: the whole pipeline (WAL → ship → receive) under an
//! open-loop load, with latency at every hop.
//!
//! - **Receiver.** Without `--peer`, an in-process [`Receiver`] on an
//!   ephemeral 127.0.0.1 port, its cores pinned to the CPUs after the
//!   shipper's.
//! - **Load.** One generator thread per shipper core. Open loop
//!   (`--rate N`, split evenly over the cores): record *i* of a core is due
//!   at `t0 + i / rate` and carries that *intended* time as its append
//!   timestamp, so a stall anywhere shows up in every stage's latency
//!   instead of silently slowing the load (coordinated omission, corrected
//!   as wrk2 does). `--rate max` is closed loop: records are stamped when
//!   pushed, and the report says that its latencies are not CO-corrected.
//! - **Stages.** Each core's WAL and shipper keep a [`Recorder`] per stage;
//!   the receiver keeps append → remote durable. All count only records due
//!   inside `[t0 + warmup, t0 + warmup + duration)` (a shared [`Window`]),
//!   and keep 1 s interval histograms for the `.hlog`.
//! - **Idle-tail probe.** After the load has drained, K rounds of silence
//!   then a burst on core 0, each reporting the append → acked latency of
//!   the burst's *last* record: the Pegasus scenario, where the last
//!   mutation waited for a later write or a heartbeat.
//!
//! Generators pace the load with sleeps; nothing in the data path waits on
//! a timer.

pub mod compare;
pub mod output;
pub mod report;

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::constants::{
    BENCH_UNACKED_BYTES_MAX, BENCH_UNACKED_RECORDS_MAX, CONNECT_TIMEOUT_MS, PROBE_ACK_WAIT_MS,
};
use crate::frame;
use crate::latency::{Recorder, Window};
use crate::receive::{Receiver, ReceiverConfig, ReceiverHandle};
use crate::shard::{
    CoreGone, DurableListener, InboxSender, Shard, ShardConfig, ShardHandle, ShardReport,
    SinkConfig,
};
use crate::sink::tcp::{SendMode, TcpConfig};
use crate::wal::Durability;
use crate::wal::WalIo;

pub use report::{BenchReport, STAGES, StageSpec};

/// How fast to offer records.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// Open loop: this many records per second in total.
    PerSecond(f64),
    /// Closed loop: as fast as the pipeline takes them.
    Max,
}

/// What a bench run does.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub rate: Rate,
    pub duration: Duration,
    pub warmup: Duration,
    pub record_bytes: usize,
    pub cores: usize,
    pub durability: Durability,
    pub send_mode: SendMode,
    /// An external receiver; `None` runs one in-process.
    pub peer: Option<SocketAddr>,
    /// Root for the shipper's WAL (`DIR/ship`) and the in-process
    /// receiver's (`DIR/recv`).
    pub dir: PathBuf,
    pub probe_rounds: u32,
    pub probe_burst: u32,
    pub probe_silence: Duration,
    /// How long every core (shipper and in-process receiver) busy-polls its
    /// ring before sleeping.
    pub spin: Duration,
    /// Hold /dev/cpu_dma_latency at this many µs for the run.
    pub cpu_dma_latency_us: Option<u32>,
    /// Show a progress bar (stderr is a terminal).
    pub progress: bool,
}

/// A finished run: the report, and the merged recorders behind it.
pub struct BenchRun {
    pub report: BenchReport,
    /// One per entry of [`STAGES`] that has data (remote durable only with
    /// the in-process receiver).
    pub stages: Vec<(&'static StageSpec, Recorder)>,
    /// Wall-clock ns of interval 0 (the load's start).
    pub origin_ns: u64,
}

/// Why a bench run failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BenchError(pub String);

impl BenchError {
    fn new(e: impl std::fmt::Display) -> BenchError {
        BenchError(e.to_string())
    }
}

/// How long a core may make no acknowledgement progress before the run is
/// failed, while draining and at the end.
const ACK_STALL: Duration = Duration::from_millis(PROBE_ACK_WAIT_MS);

/// The source name the shipper uses with the in-process receiver.
const EMBEDDED_SOURCE: &str = "bench";

/// The peer's acknowledgements as the core sees them, for the generator
/// thread to wait on: the acked seq, and when it first reached `target`.
#[derive(Default)]
struct AckWatch {
    state: Mutex<AckState>,
    changed: Condvar,
}

#[derive(Default)]
struct AckState {
    acked: u64,
    /// When the core handled the latest ack.
    acked_at_ns: u64,
    target: u64,
    reached_at_ns: Option<u64>,
}

impl AckWatch {
    /// Waits until `target` is acknowledged; returns the wall-clock ns at
    /// which the core handled that ack. Fails if acknowledgements stop
    /// advancing for [`ACK_STALL`].
    fn wait_for(&self, target: u64) -> Result<u64, BenchError> {
        let mut state = self.state.lock().expect("not poisoned");
        state.target = target;
        // Already there: the ack that got there is the latest one (nothing
        // after `target` is in flight when the bench waits for it).
        state.reached_at_ns = (state.acked >= target).then_some(state.acked_at_ns);
        let mut last = (state.acked, Instant::now());
        loop {
            if let Some(at) = state.reached_at_ns {
                return Ok(at);
            }
            let (next, _) = self
                .changed
                .wait_timeout(state, Duration::from_millis(100))
                .expect("not poisoned");
            state = next;
            if state.acked != last.0 {
                last = (state.acked, Instant::now());
            } else if last.1.elapsed() >= ACK_STALL {
                return Err(BenchError(format!(
                    "the peer acknowledged nothing for {} s (acked seq {}, waiting for {target})",
                    ACK_STALL.as_secs(),
                    state.acked
                )));
            }
        }
    }
}

/// A shipper core's listener: acks for [`AckWatch`], timestamped on the
/// shard's thread as it handles them.
struct BenchListener {
    watch: Arc<AckWatch>,
}

impl DurableListener for BenchListener {
    fn on_acked(&mut self, acked_seq: u64) {
        let now_ns = frame::now_ns();
        let mut state = self.watch.state.lock().expect("not poisoned");
        state.acked = acked_seq;
        state.acked_at_ns = now_ns;
        if state.target != 0 && acked_seq >= state.target && state.reached_at_ns.is_none() {
            state.reached_at_ns = Some(now_ns);
        }
        drop(state);
        self.watch.changed.notify_all();
    }
}

struct ShipCore {
    /// `None` only while a generator thread holds it.
    handle: Option<ShardHandle>,
    /// Seq of the last record already in the WAL when it opened.
    base_seq: u64,
    /// The CPU the core is pinned to; its generator shares it.
    cpu: usize,
    watch: Arc<AckWatch>,
}

impl ShipCore {
    /// Closes the shard's inbox and waits for it to finish.
    fn close(self) -> Result<ShardReport, BenchError> {
        self.handle
            .expect("held by the bench")
            .close()
            .map_err(BenchError::new)
    }
}

/// CPU time (user, system) and max RSS of the whole process so far.
fn rusage() -> (Duration, Duration, u64) {
    match nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let tv = |t: nix::sys::time::TimeVal| {
                Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000)
            };
            // ru_maxrss survives execve: under `cargo run` it reports
            // cargo's own peak. VmHWM is this process image's.
            let max_rss = peak_rss_bytes().unwrap_or(u.max_rss() as u64 * 1024);
            (tv(u.user_time()), tv(u.system_time()), max_rss)
        }
        Err(_) => (Duration::ZERO, Duration::ZERO, 0),
    }
}

/// VmHWM from /proc/self/status, in bytes.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Runs the bench: receiver, cores, load, drain, probe, shutdown.
pub fn run(config: &BenchConfig) -> Result<BenchRun, BenchError> {
    // Held until the run (and its report) is done.
    let _wake_limit = config
        .cpu_dma_latency_us
        .map(crate::io::cpu::CpuDmaLatency::hold)
        .transpose()
        .map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
                " (it takes root)"
            } else {
                ""
            };
            BenchError(format!(
                "--cpu-dma-latency: cannot hold {}: {e}{hint}",
                crate::io::cpu::CPU_DMA_LATENCY_PATH
            ))
        })?;
    let (user_before, sys_before, _) = rusage();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let window = Arc::new(Window::default());

    // The receiver: in-process on its own cores, or the given peer.
    let (peer, source, receiver) = match config.peer {
        Some(peer) => {
            TcpStream::connect_timeout(&peer, Duration::from_millis(CONNECT_TIMEOUT_MS))
                .map_err(|e| BenchError(format!("cannot reach --peer {peer}: {e}")))?;
            // A fresh source per run: the peer may hold earlier runs' data.
            let source = format!("bench-{}", frame::now_ns());
            (peer, source, None)
        }
        None => {
            let receiver = Receiver::spawn(
                SocketAddr::from(([127, 0, 0, 1], 0)),
                ReceiverConfig {
                    dir: config.dir.join("recv"),
                    durability: config.durability,
                    // One core per shipper core (so per connection), on
                    // the CPUs after the shipper's; with none to spare,
                    // unpinned, for the scheduler to place.
                    cores: config.cores,
                    pin_first_cpu: (cpus > config.cores).then_some(config.cores),
                    latency_window: Some(window.clone()),
                    spin: config.spin,
                },
            )
            .map_err(|e| BenchError(format!("starting the in-process receiver: {e}")))?;
            let addr = receiver.local_addr();
            (addr, EMBEDDED_SOURCE.to_string(), Some(receiver))
        }
    };
    let stop_receiver = |receiver: Option<ReceiverHandle>| receiver.map(ReceiverHandle::stop);

    // The shipper cores, each with its WAL open before the load starts.
    let mut cores = Vec::with_capacity(config.cores);
    let mut opened = Ok(());
    for shard in 0..config.cores {
        match start_core(config, shard, peer, &source, &window, cpus) {
            Ok(core) => cores.push(core),
            Err(e) => {
                opened = Err(e);
                break;
            }
        }
    }
    if let Err(e) = opened {
        for core in cores {
            let _ = core.close();
        }
        let _ = stop_receiver(receiver);
        return Err(e);
    }

    let result = drive(config, &mut cores, &window);
    // Whatever happened, close the inboxes so every core drains and stops.
    let mut reports = Vec::with_capacity(cores.len());
    let mut core_error = None;
    for core in cores {
        match core.close() {
            Ok(report) => reports.push(report),
            Err(e) => core_error = core_error.or(Some(e)),
        }
    }
    let totals = match stop_receiver(receiver) {
        Some(Ok(totals)) => Some(totals),
        Some(Err(e)) => return Err(BenchError(format!("the in-process receiver: {e}"))),
        None => None,
    };
    if let Some(e) = core_error {
        return Err(e);
    }
    let driven = result?;
    let (user_after, sys_after, max_rss_bytes) = rusage();

    // Merge each stage over the cores.
    let mut durable = Recorder::new();
    let mut sent = Recorder::new();
    let mut acked = Recorder::new();
    for r in &reports {
        durable.merge(&r.wal.append_to_durable_ns);
        if let Some(s) = &r.ship {
            sent.merge(&s.append_to_sent_ns);
            acked.merge(&s.append_to_acked_ns);
        }
    }
    let mut stages = vec![
        (&STAGES[0], durable),
        (&STAGES[1], sent),
        (&STAGES[2], acked),
    ];
    if let Some(totals) = &totals {
        stages.push((&STAGES[3], totals.append_to_durable_ns.clone()));
    }
    let report = report::build(
        config,
        &reports,
        &stages,
        &driven,
        report::Usage {
            user: user_after.saturating_sub(user_before),
            system: sys_after.saturating_sub(sys_before),
            max_rss_bytes,
        },
    );
    Ok(BenchRun {
        report,
        stages,
        origin_ns: driven.origin_ns,
    })
}

fn start_core(
    config: &BenchConfig,
    shard: usize,
    peer: SocketAddr,
    source: &str,
    window: &Arc<Window>,
    cpus: usize,
) -> Result<ShipCore, BenchError> {
    let watch = Arc::new(AckWatch::default());
    let listener = BenchListener {
        watch: watch.clone(),
    };
    let mut shard_config = ShardConfig::new(config.dir.join("ship"), shard as u32);
    shard_config.cpu = Some(shard % cpus);
    shard_config.durability = config.durability;
    // Zero-copy sends the durable tail from the WAL's O_DIRECT commit
    // buffers, so a zc run opens its WAL with O_DIRECT.
    if config.send_mode == SendMode::Zc {
        shard_config.wal_io = WalIo::Direct;
    }
    shard_config.sink = Some(SinkConfig::Tcp(TcpConfig {
        peer,
        source: source.to_string(),
        send_mode: config.send_mode,
    }));
    shard_config.ack_timeout = ACK_STALL;
    shard_config.latency_window = Some(window.clone());
    shard_config.spin = config.spin;
    let handle = Shard::spawn_with_listener(shard_config, listener).map_err(BenchError::new)?;
    Ok(ShipCore {
        base_seq: handle.base_seq(),
        handle: Some(handle),
        cpu: shard % cpus,
        watch,
    })
}

/// What the driver measured itself.
pub struct Driven {
    pub origin_ns: u64,
    /// Records offered during warmup + duration, over all cores.
    pub load_records: u64,
    /// Open loop: records due during warmup + duration that were not
    /// offered by the deadline, because the pipeline did not take them.
    pub not_offered_records: u64,
    /// Records acknowledged while the measured window was open (the acked
    /// seq's advance from its start to its end), over all cores.
    pub window_acked_records: u64,
    /// From the last record offered to its acknowledgement, the longest
    /// over the cores.
    pub drain: Duration,
    /// append → acked of each idle-tail round's last record.
    pub probe_ns: Vec<u64>,
}

/// Load, drain, probe.
fn drive(
    config: &BenchConfig,
    cores: &mut [ShipCore],
    window: &Window,
) -> Result<Driven, BenchError> {
    let payload = vec![b'x'; config.record_bytes];
    let load = config.warmup + config.duration;
    let per_core_rate = match config.rate {
        Rate::PerSecond(r) => Some(r / cores.len() as f64),
        Rate::Max => None,
    };
    let started = Instant::now();
    let origin_ns = frame::now_ns();
    window.open(
        origin_ns,
        origin_ns + config.warmup.as_nanos() as u64,
        origin_ns + load.as_nanos() as u64,
    );
    let produced: Vec<Arc<AtomicU64>> = cores.iter().map(|_| Arc::default()).collect();
    let progress = config.progress.then(|| {
        let bar = indicatif::ProgressBar::new((load.as_secs_f64() * 10.0).ceil() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{prefix:>8} {bar:40} {msg}")
                .expect("static template"),
        );
        bar.set_prefix("load");
        bar
    });
    // Acks below a core's starting seq are a backlog from an earlier run
    // (a reused --dir) reaching a peer that lacked it, not this load.
    let acked_now = |cores: &[ShipCore]| -> u64 {
        cores
            .iter()
            .map(|c| {
                let acked = c.watch.state.lock().expect("not poisoned").acked;
                acked.max(c.base_seq) - c.base_seq
            })
            .fold(0u64, u64::saturating_add)
    };

    let mut window_acked = [None, None];
    let generated: Vec<Result<Generated, CoreGone>> = std::thread::scope(|scope| {
        let handles: Vec<_> = cores
            .iter_mut()
            .zip(&produced)
            .map(|(core, produced)| {
                let payload = &payload;
                let handle = core.handle.take().expect("held by the bench");
                let cpu = core.cpu;
                let watch = core.watch.clone();
                let base_seq = core.base_seq;
                let record_bytes = config.record_bytes;
                scope.spawn(move || {
                    let _ = crate::io::cpu::pin_current_thread(cpu);
                    let acks = AckWindow::new(&watch, base_seq, record_bytes);
                    let generated = generate(
                        handle.inbox(),
                        payload,
                        Schedule {
                            started,
                            started_ns: origin_ns,
                            rate: per_core_rate,
                            limit: None,
                            deadline: load,
                        },
                        produced,
                        Some(&acks),
                    );
                    (handle, generated)
                })
            })
            .collect();
        // The acked seqs as the measured window opens and closes give the
        // achieved rate. This thread only samples and draws the bar: its
        // sleeps gate nothing in the data path.
        let marks = [config.warmup, load];
        while handles.iter().any(|h| !h.is_finished()) || window_acked[1].is_none() {
            let elapsed = started.elapsed();
            for (slot, mark) in window_acked.iter_mut().zip(marks) {
                if slot.is_none() && elapsed >= mark {
                    *slot = Some(acked_now(cores));
                }
            }
            if let Some(bar) = &progress {
                bar.set_position((elapsed.as_secs_f64() * 10.0) as u64);
                let phase = if elapsed < config.warmup {
                    "warmup"
                } else {
                    "measuring"
                };
                let n: u64 = produced.iter().map(|p| p.load(Ordering::Relaxed)).sum();
                bar.set_message(format!("{phase} · {n} records"));
            }
            let next_mark = marks
                .iter()
                .map(|&m| m.saturating_sub(elapsed))
                .filter(|d| !d.is_zero())
                .min()
                .unwrap_or(Duration::MAX);
            std::thread::sleep(next_mark.min(Duration::from_millis(100)));
        }
        handles
            .into_iter()
            .zip(cores.iter_mut())
            .map(|(h, core)| {
                let (handle, generated) = h.join().expect("generator does not panic");
                core.handle = Some(handle);
                generated
            })
            .collect()
    });
    let mut generated_ok = Vec::with_capacity(generated.len());
    for (shard, g) in generated.into_iter().enumerate() {
        // A core that went away reports its error when it is joined.
        generated_ok
            .push(g.map_err(|_| BenchError(format!("core {shard} stopped during the load")))?);
    }
    let window_acked_records = match window_acked {
        [Some(from), Some(to)] => to.saturating_sub(from),
        _ => 0,
    };

    if let Some(bar) = &progress {
        bar.set_prefix("drain");
        bar.set_message("waiting for every record to be acknowledged");
    }
    let mut drain = Duration::ZERO;
    for (core, g) in cores.iter().zip(&generated_ok) {
        let acked_at_ns = core.watch.wait_for(core.base_seq + g.offered)?;
        if g.offered > 0 {
            drain = drain.max(Duration::from_nanos(
                acked_at_ns.saturating_sub(g.last_offer_ns),
            ));
        }
    }

    // The idle-tail probe on core 0.
    let mut probe_ns = Vec::with_capacity(config.probe_rounds as usize);
    let core = &cores[0];
    let mut next_seq = core.base_seq + generated_ok[0].offered;
    if let Some(bar) = &progress {
        bar.set_prefix("probe");
        bar.set_length(u64::from(config.probe_rounds));
        bar.set_position(0);
    }
    for round in 0..config.probe_rounds {
        if let Some(bar) = &progress {
            bar.set_position(u64::from(round));
            bar.set_message(format!(
                "idle-tail round {}/{}: {} ms silence, then {} records",
                round + 1,
                config.probe_rounds,
                config.probe_silence.as_millis(),
                config.probe_burst
            ));
        }
        std::thread::sleep(config.probe_silence);
        let sender = core.handle.as_ref().expect("held by the bench").inbox();
        let (records, last_ts) = burst(sender, &payload, config.probe_burst)
            .map_err(|_| BenchError("core 0 stopped during the idle-tail probe".into()))?;
        next_seq += records;
        let acked_at = core.watch.wait_for(next_seq)?;
        probe_ns.push(acked_at.saturating_sub(last_ts).max(1));
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    Ok(Driven {
        origin_ns,
        load_records: generated_ok
            .iter()
            .map(|g| g.offered)
            .fold(0, u64::saturating_add),
        not_offered_records: generated_ok
            .iter()
            .map(|g| g.not_offered)
            .fold(0, u64::saturating_add),
        window_acked_records,
        drain,
        probe_ns,
    })
}

/// Pushes `records` records as fast as the inbox takes them, each stamped
/// when pushed; returns how many, and the last one's stamp.
fn burst(sender: &InboxSender, payload: &[u8], records: u32) -> Result<(u64, u64), CoreGone> {
    let mut pushed = 0u64;
    let mut last_ts = 0;
    while pushed < u64::from(records) {
        let mut batch = sender.take()?;
        while pushed < u64::from(records) && batch.has_room(payload.len()) {
            last_ts = frame::now_ns();
            batch.push(last_ts, payload).expect("checked size");
            pushed += 1;
        }
        sender.send(batch)?;
    }
    Ok((pushed, last_ts))
}

/// When a generator offers records.
pub(crate) struct Schedule {
    pub started: Instant,
    /// `started` on the wall clock, the base of intended timestamps.
    pub started_ns: u64,
    /// Records per second (open loop), or `None` (closed loop).
    pub rate: Option<f64>,
    /// Stop after this many records instead of at `deadline`.
    pub limit: Option<u64>,
    pub deadline: Duration,
}

/// The acknowledgements a bench generator keeps its offer within: it never
/// has more than [`BENCH_UNACKED_RECORDS_MAX`] records or
/// [`BENCH_UNACKED_BYTES_MAX`] bytes offered and not yet acknowledged, so
/// the WAL cannot run seconds ahead of the peer and the drain at the end
/// stays short.
pub(crate) struct AckWindow<'a> {
    watch: &'a AckWatch,
    /// The acked seq that means "every record offered so far".
    base_seq: u64,
    /// Records that fit in the window.
    records_max: u64,
}

impl<'a> AckWindow<'a> {
    fn new(watch: &'a AckWatch, base_seq: u64, record_bytes: usize) -> AckWindow<'a> {
        let encoded = frame::encoded_len_bytes(record_bytes) as u64;
        AckWindow {
            watch,
            base_seq,
            records_max: (BENCH_UNACKED_BYTES_MAX / encoded)
                .clamp(1, BENCH_UNACKED_RECORDS_MAX as u64),
        }
    }

    /// How many more records may be offered after `offered`, waiting (at
    /// most until `until`) for acknowledgements while none may.
    fn room(&self, offered: u64, until: Instant) -> u64 {
        let mut state = self.watch.state.lock().expect("not poisoned");
        loop {
            let acked = state.acked.max(self.base_seq);
            let unacked = (self.base_seq + offered).saturating_sub(acked);
            if unacked < self.records_max {
                return self.records_max - unacked;
            }
            let now = Instant::now();
            if now >= until {
                return 0;
            }
            // The generator paces the load; this wait gates nothing in
            // the data path, which wakes it by notifying on every ack.
            state = self
                .watch
                .changed
                .wait_timeout(state, until - now)
                .expect("not poisoned")
                .0;
        }
    }
}

/// What a generator did.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Generated {
    /// Records handed to the core.
    pub offered: u64,
    /// Open loop: records due before the deadline that were not offered by
    /// then, because the pipeline did not take them in time.
    pub not_offered: u64,
    /// Wall-clock ns at which the last record was handed over (0: none).
    pub last_offer_ns: u64,
}

/// The load generator. Closed loop (no rate): fills batches as fast as the
/// core drains them, stamping each record when pushed. Open loop: record i
/// is due at start + i/rate and carries that intended time as its append
/// timestamp, as wrk2 does against coordinated omission; records already
/// due go out together in one batch. Sleeping here paces the *load*;
/// nothing in the data path waits on it.
///
/// Without a record limit the load ends at `deadline` on the clock, whether
/// or not the pipeline kept up: no batch is taken after it, and records
/// due before it but not offered are counted in
/// [`Generated::not_offered`]. With `acks`, the offer also stays within
/// the acknowledgement window (see [`AckWindow`]).
pub(crate) fn generate(
    sender: &InboxSender,
    payload: &[u8],
    schedule: Schedule,
    produced: &AtomicU64,
    acks: Option<&AckWindow<'_>>,
) -> Result<Generated, CoreGone> {
    let Schedule {
        started,
        started_ns,
        rate,
        limit,
        deadline,
    } = schedule;
    if rate.is_some() {
        // Linux lets a sleeping thread wake up to 50 µs late (timer slack);
        // an open-loop generator must be on time, or its own lateness is
        // charged to the pipeline as latency.
        let _ = nix::sys::prctl::set_timerslack(1);
    }
    // A record limit ends the run by count, whatever the time.
    let deadline = if limit.is_some() {
        Duration::MAX
    } else {
        deadline
    };
    let due = |i: u64| rate.map(|r| Duration::from_secs_f64(i as f64 / r));
    // Records due before the deadline: the n with due(n - 1) < deadline <=
    // due(n), found with the very test the loop applies (a float estimate
    // alone can be one off when deadline × rate is whole).
    let due_total = || {
        let before = |i: u64| due(i).is_some_and(|d| d < deadline);
        let mut n = rate.map_or(0.0, |r| (deadline.as_secs_f64() * r).ceil()) as u64;
        while n > 0 && !before(n - 1) {
            n -= 1;
        }
        while n < u64::MAX && before(n) {
            n += 1;
        }
        n
    };
    // The clock ends the load, unless a record limit does.
    let end_at = if limit.is_none() {
        Some(
            started
                .checked_add(deadline)
                .expect("the CLI bounds --duration"),
        )
    } else {
        None
    };
    let mut generated = Generated::default();
    let finish = |mut g: Generated| {
        if rate.is_some() && limit.is_none() {
            g.not_offered = due_total().saturating_sub(g.offered);
        }
        Ok(g)
    };
    loop {
        let count = generated.offered;
        let finished = match (limit, due(count)) {
            (Some(n), _) => count == n,
            (None, Some(next)) => next >= deadline,
            (None, None) => false,
        };
        if finished || end_at.is_some_and(|end| Instant::now() >= end) {
            return finish(generated);
        }
        if let Some(next) = due(count) {
            let elapsed = started.elapsed();
            if next > elapsed {
                std::thread::sleep(next - elapsed);
            }
        }
        let room = acks.map_or(u64::MAX, |w| {
            w.room(count, end_at.unwrap_or_else(|| Instant::now() + ACK_STALL))
        });
        if room == 0 {
            if end_at.is_none() {
                // No acknowledgement for ACK_STALL with no deadline to end
                // on: stop, and let the driver's own wait report it.
                return finish(generated);
            }
            continue;
        }
        let mut batch = sender.take()?;
        if end_at.is_some_and(|end| Instant::now() >= end) {
            // take() waited past the deadline: offer nothing late. The
            // empty batch goes back to the pool.
            sender.send(batch)?;
            return finish(generated);
        }
        let now = started.elapsed();
        let mut taken = 0u64;
        while batch.has_room(payload.len())
            && taken < room
            && limit.is_none_or(|n| generated.offered != n)
        {
            let ts = match due(generated.offered) {
                Some(d) if d > now || d >= deadline => break,
                Some(d) => started_ns + d.as_nanos() as u64,
                None => frame::now_ns(),
            };
            batch.push(ts, payload).expect("checked size");
            generated.offered += 1;
            taken += 1;
        }
        // Sent even if empty (possible only at the deadline), so that the
        // batch goes back to the pool.
        sender.send(batch)?;
        if taken > 0 {
            generated.last_offer_ns = frame::now_ns();
        }
        produced.store(generated.offered, Ordering::Relaxed);
    }
}
