//! The bench report: `summary.json` and the table on stdout.
//!
//! Every figure's field name ends in its unit (`_ns`, `_bytes`, `_per_s`).
//! `format` and `format_version` name the layout; `compare` refuses a
//! report of another version. `config` holds exactly what must match for
//! two runs to be comparable; `environment` holds what is recorded but
//! not compared.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::bench::{BenchConfig, Driven, Rate};
use crate::latency::Recorder;
use crate::report::{LatencySummary, human_ns, kernel_release};
use crate::shard::ShardReport;

/// `summary.json`'s `format`.
pub const REPORT_FORMAT: &str = "ringship-bench";
/// `summary.json`'s `format_version`; bump it when a field changes meaning.
/// Version 2: `records_per_s` is the achieved rate (version 1 divided the
/// latency samples by the duration), and the offered and achieved rates
/// are reported apart.
pub const REPORT_FORMAT_VERSION: u64 = 2;

/// Older versions `compare` still reads: their stages mean what they mean
/// now; only their throughput fields differ.
pub const REPORT_FORMAT_VERSIONS_READ: [u64; 2] = [1, 2];

/// A measured stage.
#[derive(Debug)]
pub struct StageSpec {
    /// The key in `summary.json`, the `.hgrm` file name and the `.hlog` tag.
    pub key: &'static str,
    pub label: &'static str,
    /// Measured against the shipper's clock on another machine.
    pub needs_shared_clock: bool,
}

/// Every stage, in data-path order; `append_to_acked` is the headline.
pub const STAGES: [StageSpec; 4] = [
    StageSpec {
        key: "append_to_durable",
        label: "append → durable",
        needs_shared_clock: false,
    },
    StageSpec {
        key: "append_to_sent",
        label: "append → sent",
        needs_shared_clock: false,
    },
    StageSpec {
        key: "append_to_acked",
        label: "append → acked",
        needs_shared_clock: false,
    },
    StageSpec {
        key: "append_to_remote_durable",
        label: "append → remote durable",
        needs_shared_clock: true,
    },
];

/// The stage `compare` tracks by default.
pub const HEADLINE_STAGE: &str = "append_to_acked";

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub format: &'static str,
    pub format_version: u64,
    pub ringship_version: &'static str,
    pub config: Settings,
    pub environment: Environment,
    pub results: Results,
    pub stages: BTreeMap<&'static str, StageFigures>,
    pub idle_tail: IdleTail,
    pub notes: Vec<String>,
}

/// What must match for two runs to be compared.
#[derive(Debug, Serialize)]
pub struct Settings {
    /// Offered records per second over all cores; `null` for `--rate max`.
    pub rate_per_s: Option<f64>,
    /// Latencies are measured from each record's intended time.
    pub co_corrected: bool,
    pub duration_ns: u64,
    pub warmup_ns: u64,
    pub record_payload_bytes: usize,
    pub cores: usize,
    pub durability: String,
    pub send_mode: String,
    /// `embedded` (in-process, loopback) or `peer`.
    pub receiver: &'static str,
    pub probe_rounds: u32,
    pub probe_burst_records: u32,
    pub probe_silence_ns: u64,
    /// `--spin-us`, when set. Left out at zero, so reports of runs without
    /// it compare with those written before the flag existed.
    #[serde(skip_serializing_if = "is_zero")]
    pub spin_ns: u64,
    /// `--cpu-dma-latency`, when set (left out otherwise, as `spin_ns`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_dma_latency_us: Option<u32>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Serialize)]
pub struct Environment {
    pub kernel: String,
    pub ring_flags: String,
    /// How the shipper's segments were written: `direct` (O_DIRECT, with
    /// `--send-mode zc` on a filesystem that takes it) or `buffered`.
    pub wal_io: &'static str,
    pub cpus: usize,
    pub peer: Option<String>,
    /// The CPU wake-up latency limit in force during the run, whoever held
    /// it (`null`: none, or not readable without root).
    pub cpu_dma_latency_us: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct Results {
    /// Records offered during warmup and measurement, all cores.
    pub offered_records: u64,
    /// `offered_records` over warmup + duration.
    pub offered_records_per_s: f64,
    /// Open loop: records due during warmup and measurement that were not
    /// offered by the deadline because the pipeline did not take them.
    pub not_offered_records: u64,
    /// Records due inside the measured window (append → acked count).
    pub measured_records: u64,
    /// Records acknowledged while the measured window was open, over its
    /// duration: what the pipeline delivered, whatever was offered.
    pub achieved_records_per_s: f64,
    pub achieved_payload_bytes_per_s: f64,
    /// The same as `achieved_records_per_s` and its payload bytes, under
    /// their version 1 names.
    pub records_per_s: f64,
    pub payload_bytes_per_s: f64,
    /// From the last record offered to its acknowledgement (the longest
    /// over the cores).
    pub drain_ns: u64,
    /// Whole process (shipper, receiver, generators), start to end.
    pub cpu_user_ns: u64,
    pub cpu_system_ns: u64,
    pub cpu_ns: u64,
    pub max_rss_bytes: u64,
    pub commits: u64,
    /// Of `commits`, those written inline on the core (`--durability none`
    /// after an idle spell).
    pub inline_commits: u64,
    pub sent_bytes: u64,
    pub copy_bytes: u64,
    pub splice_bytes: u64,
    pub zc_bytes: u64,
    pub zc_copied_bytes: u64,
    /// Of `zc_bytes`, those sent from the WAL's O_DIRECT commit buffers.
    pub zc_commit_bytes: u64,
    pub connects: u64,
    pub disconnects: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StageFigures {
    pub label: &'static str,
    pub needs_shared_clock: bool,
    #[serde(flatten)]
    pub latency: LatencySummary,
    pub mean_ns: u64,
}

#[derive(Debug, Serialize)]
pub struct IdleTail {
    pub rounds: u32,
    pub burst_records: u32,
    pub silence_ns: u64,
    #[serde(flatten)]
    pub latency: LatencySummary,
    /// append → acked p99 of the steady-state load, for comparison.
    pub steady_p99_ns: u64,
    pub samples_ns: Vec<u64>,
}

/// CPU and memory of the whole process over the run.
pub struct Usage {
    pub user: Duration,
    pub system: Duration,
    pub max_rss_bytes: u64,
}

pub(crate) fn build(
    config: &BenchConfig,
    cores: &[ShardReport],
    stages: &[(&'static StageSpec, Recorder)],
    driven: &Driven,
    usage: Usage,
) -> BenchReport {
    let figures: BTreeMap<&'static str, StageFigures> = stages
        .iter()
        .map(|(spec, recorder)| {
            let h = recorder.total();
            (
                spec.key,
                StageFigures {
                    label: spec.label,
                    needs_shared_clock: spec.needs_shared_clock,
                    latency: LatencySummary::of(h),
                    mean_ns: if h.is_empty() { 0 } else { h.mean() as u64 },
                },
            )
        })
        .collect();
    let acked = figures
        .get(HEADLINE_STAGE)
        .map(|f| f.latency)
        .unwrap_or_default();
    let achieved = driven.window_acked_records as f64 / config.duration.as_secs_f64();
    let sum = |f: &dyn Fn(&crate::sink::tcp::TcpStats) -> u64| -> u64 {
        cores.iter().filter_map(|c| c.ship.as_ref()).map(f).sum()
    };
    let mut probe = crate::latency::histogram();
    for &v in &driven.probe_ns {
        probe.saturating_record(v);
    }
    let mut notes = Vec::new();
    if config.rate == Rate::Max {
        notes.push(
            "--rate max is closed loop: records are stamped when the generator pushes them, \
             so these latencies are NOT corrected for coordinated omission"
                .to_string(),
        );
    }
    if driven.not_offered_records > 0 {
        notes.push(format!(
            "the pipeline could not keep up: {} records due before the deadline were not offered",
            driven.not_offered_records
        ));
    }
    if config.peer.is_some() {
        notes.push(
            "append_to_remote_durable is not measured with --peer (it is the peer's own figure)"
                .to_string(),
        );
    } else {
        notes.push(
            "append_to_remote_durable compares the shipper's and the receiver's clocks; both \
             are this process here"
                .to_string(),
        );
    }
    BenchReport {
        format: REPORT_FORMAT,
        format_version: REPORT_FORMAT_VERSION,
        ringship_version: env!("CARGO_PKG_VERSION"),
        config: Settings {
            rate_per_s: match config.rate {
                Rate::PerSecond(r) => Some(r),
                Rate::Max => None,
            },
            co_corrected: config.rate != Rate::Max,
            duration_ns: config.duration.as_nanos() as u64,
            warmup_ns: config.warmup.as_nanos() as u64,
            record_payload_bytes: config.record_bytes,
            cores: config.cores,
            durability: config.durability.to_string(),
            send_mode: config.send_mode.to_string(),
            receiver: if config.peer.is_some() {
                "peer"
            } else {
                "embedded"
            },
            probe_rounds: config.probe_rounds,
            probe_burst_records: config.probe_burst,
            probe_silence_ns: config.probe_silence.as_nanos() as u64,
            spin_ns: config.spin.as_nanos() as u64,
            cpu_dma_latency_us: config.cpu_dma_latency_us,
        },
        environment: Environment {
            kernel: kernel_release(),
            ring_flags: cores
                .first()
                .map(|c| c.ring_flags.to_string())
                .unwrap_or_default(),
            wal_io: if !cores.is_empty() && cores.iter().all(|c| c.wal.direct_io) {
                "direct"
            } else {
                "buffered"
            },
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            peer: config.peer.map(|p| p.to_string()),
            cpu_dma_latency_us: crate::io::cpu::cpu_dma_latency_us(),
        },
        results: Results {
            offered_records: driven.load_records,
            offered_records_per_s: driven.load_records as f64
                / (config.warmup + config.duration).as_secs_f64(),
            not_offered_records: driven.not_offered_records,
            measured_records: acked.count,
            achieved_records_per_s: achieved,
            achieved_payload_bytes_per_s: achieved * config.record_bytes as f64,
            records_per_s: achieved,
            payload_bytes_per_s: achieved * config.record_bytes as f64,
            drain_ns: driven.drain.as_nanos() as u64,
            cpu_user_ns: usage.user.as_nanos() as u64,
            cpu_system_ns: usage.system.as_nanos() as u64,
            cpu_ns: (usage.user + usage.system).as_nanos() as u64,
            max_rss_bytes: usage.max_rss_bytes,
            commits: cores.iter().map(|c| c.wal.commits).sum(),
            inline_commits: cores.iter().map(|c| c.wal.inline_commits).sum(),
            sent_bytes: sum(&|s| s.sent_bytes),
            copy_bytes: sum(&|s| s.copy_bytes),
            splice_bytes: sum(&|s| s.splice_bytes),
            zc_bytes: sum(&|s| s.zc_bytes),
            zc_copied_bytes: sum(&|s| s.zc_copied_bytes),
            zc_commit_bytes: sum(&|s| s.zc_commit_bytes),
            connects: sum(&|s| s.connects),
            disconnects: sum(&|s| s.disconnects),
        },
        stages: figures,
        idle_tail: IdleTail {
            rounds: config.probe_rounds,
            burst_records: config.probe_burst,
            silence_ns: config.probe_silence.as_nanos() as u64,
            latency: LatencySummary::of(&probe),
            steady_p99_ns: acked.p99_ns,
            samples_ns: driven.probe_ns.clone(),
        },
        notes,
    }
}

/// The bytes sent by each path, as run (which may differ from the send
/// mode asked for: splice sends small increments and backlogs by copy).
fn sent_by_path(res: &Results) -> String {
    let paths = [
        ("splice", res.splice_bytes),
        ("zc", res.zc_bytes),
        ("copy", res.copy_bytes),
    ];
    let used: Vec<String> = paths
        .iter()
        .filter(|(_, bytes)| *bytes > 0)
        .map(|(name, bytes)| format!("{name} {}", human_bytes(*bytes)))
        .collect();
    if used.is_empty() {
        "nothing".to_string()
    } else {
        used.join(" + ")
    }
}

fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// The table on stdout.
pub fn print_table(r: &BenchReport) {
    let c = &r.config;
    let rate = match c.rate_per_s {
        Some(rate) => format!("{rate:.0} records/s offered (open loop, CO-corrected)"),
        None => "max rate (closed loop, NOT CO-corrected)".to_string(),
    };
    crate::outln!(
        "ringship bench · {rate} · {} B records · {} core{} · durability {} · send mode {} · receiver {}",
        c.record_payload_bytes,
        c.cores,
        if c.cores == 1 { "" } else { "s" },
        c.durability,
        c.send_mode,
        r.environment.peer.as_deref().unwrap_or("in-process")
    );
    let mut extras = if c.spin_ns == 0 {
        String::new()
    } else {
        format!(" · spin {} µs", c.spin_ns / 1000)
    };
    if let Some(us) = r.environment.cpu_dma_latency_us {
        extras.push_str(&format!(" · cpu_dma_latency {us} µs"));
    }
    crate::outln!(
        "  {:.1} s measured after {:.1} s warmup · kernel {} · ring {} · wal io {} · {} CPUs{extras}",
        c.duration_ns as f64 / 1e9,
        c.warmup_ns as f64 / 1e9,
        r.environment.kernel,
        r.environment.ring_flags,
        r.environment.wal_io,
        r.environment.cpus
    );
    crate::outln!();
    crate::outln!(
        "  {:<26} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "stage",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "p99.99",
        "max",
        "count"
    );
    let row = |label: &str, s: &LatencySummary| {
        if s.count == 0 {
            crate::outln!("  {label:<26} {:>9}", "no samples");
            return;
        }
        crate::outln!(
            "  {label:<26} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            human_ns(s.p50_ns),
            human_ns(s.p90_ns),
            human_ns(s.p99_ns),
            human_ns(s.p999_ns),
            human_ns(s.p9999_ns),
            human_ns(s.max_ns),
            s.count
        );
    };
    for spec in &STAGES {
        if let Some(f) = r.stages.get(spec.key) {
            let label = if spec.needs_shared_clock {
                format!("{} *", spec.label)
            } else {
                spec.label.to_string()
            };
            row(&label, &f.latency);
        }
    }
    let t = &r.idle_tail;
    row(
        &format!("idle tail ({} rounds)", t.latency.count),
        &t.latency,
    );
    crate::outln!();
    let res = &r.results;
    crate::outln!(
        "  offered {:.0} records/s · achieved {:.0} records/s · {:.2} MB/s payload · drain {}",
        res.offered_records_per_s,
        res.achieved_records_per_s,
        res.achieved_payload_bytes_per_s / 1e6,
        human_ns(res.drain_ns)
    );
    crate::outln!(
        "  CPU {:.2} s (user {:.2} + sys {:.2}) · max RSS {:.1} MB · sent {}",
        res.cpu_ns as f64 / 1e9,
        res.cpu_user_ns as f64 / 1e9,
        res.cpu_system_ns as f64 / 1e9,
        res.max_rss_bytes as f64 / 1e6,
        sent_by_path(res)
    );
    if res.not_offered_records > 0 {
        crate::outln!(
            "  warning: the pipeline could not keep up: {} records due before the deadline were not offered",
            res.not_offered_records
        );
    }
    if t.latency.count > 0 {
        crate::outln!(
            "  idle tail: each round is {} ms of silence then {} records; p99 {} vs steady-state p99 {}",
            t.silence_ns / 1_000_000,
            t.burst_records,
            human_ns(t.latency.p99_ns),
            human_ns(t.steady_p99_ns)
        );
    }
    if r.stages.contains_key("append_to_remote_durable") {
        crate::outln!(
            "  * measured across the shipper's and the receiver's clocks (one process here)"
        );
    }
    for note in &r.notes {
        if note.contains("NOT corrected") {
            crate::outln!("  note: {note}");
        }
    }
}
