use std::time::Duration;

use clap::ValueEnum;

use crate::wal::Durability;

use crate::sink::tcp::SendMode;

/// `--spin-us`, shared by `ship`, `receive` and `bench`.
#[derive(clap::Args, Debug)]
pub(crate) struct SpinArgs {
    /// Before a core sleeps, busy-poll its ring this many µs for a
    /// completion (0: sleep at once). Trades CPU for latency: on a VM, where
    /// every sleep and wake-up costs tens of µs, a short spin catches an ack
    /// or the next record without paying for either. Up to 10000.
    #[arg(long, allow_negative_numbers = true, value_name = "US", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=crate::constants::SPIN_US_MAX))]
    pub(crate) spin_us: u64,
}

impl SpinArgs {
    pub(crate) fn budget(&self) -> Duration {
        Duration::from_micros(self.spin_us)
    }
}

impl ValueEnum for SendMode {
    fn value_variants<'a>() -> &'a [Self] {
        &[SendMode::Splice, SendMode::Zc, SendMode::Copy]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        let help = match self {
            SendMode::Splice => {
                "io_uring SPLICE, segment (page cache) → pipe → socket, for the segment being \
                 written; small increments and a backlog go by copy"
            }
            SendMode::Zc => {
                "O_DIRECT segments, and io_uring SEND_ZC from the registered commit buffers \
                 (a backlog: read into a registered buffer first). Pays off on a real NIC; \
                 loopback always copies"
            }
            SendMode::Copy => "pread into a buffer, then io_uring SEND: the baseline",
        };
        let name = match self {
            SendMode::Splice => "splice",
            SendMode::Zc => "zc",
            SendMode::Copy => "copy",
        };
        Some(clap::builder::PossibleValue::new(name).help(help))
    }
}

pub(crate) fn parse_rate(s: &str) -> Result<crate::bench::Rate, String> {
    if s == "max" {
        return Ok(crate::bench::Rate::Max);
    }
    match s.parse::<f64>() {
        Ok(r) if (1.0..=crate::constants::RATE_PER_S_MAX).contains(&r) => {
            Ok(crate::bench::Rate::PerSecond(r))
        }
        _ => Err(format!(
            "`{s}` is not a rate: give records per second, 1 to {:e}, or `max`",
            crate::constants::RATE_PER_S_MAX
        )),
    }
}

impl ValueEnum for Durability {
    fn value_variants<'a>() -> &'a [Self] {
        &[Durability::Fsync, Durability::None]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(match self {
            Durability::Fsync => clap::builder::PossibleValue::new("fsync")
                .help("a record is durable once fdatasync'd (the default)"),
            Durability::None => clap::builder::PossibleValue::new("none").help(
                "no fdatasync: durable once in the page cache, to measure the pipeline apart \
                 from the disk; a crash of the machine can lose records",
            ),
        })
    }
}

/// A duration flag: seconds as a number (`2`, `0.5`, as before), or with a
/// unit (`500ms`, `2s`, `1m`), within `[min_s, max_s]` seconds. The error
/// names the range.
pub(crate) fn duration_in(
    min_s: f64,
    max_s: f64,
) -> impl Fn(&str) -> Result<Duration, String> + Clone {
    move |text: &str| {
        let t = text.trim();
        let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
            (n, 1e-3)
        } else if let Some(n) = t.strip_suffix('s') {
            (n, 1.0)
        } else if let Some(n) = t.strip_suffix('m') {
            (n, 60.0)
        } else {
            (t, 1.0)
        };
        let range = || format!("give seconds from {min_s} to {max_s} (or 500ms, 2s, 1m)");
        let seconds = number
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("`{text}` is not a duration: {}", range()))?
            * scale;
        if !(seconds.is_finite() && (min_s..=max_s).contains(&seconds)) {
            return Err(format!("{text} is out of range: {}", range()));
        }
        Ok(Duration::from_secs_f64(seconds))
    }
}

/// A CPU index flag: one of the CPUs this process may run on, counted from
/// 0 (see [`crate::io::cpu::allowed_cpu`]). A larger index would wrap onto
/// another CPU silently, so it is refused.
pub(crate) fn cpu_index(text: &str) -> Result<usize, String> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    match text.trim().parse::<usize>() {
        Ok(cpu) if cpu < cpus => Ok(cpu),
        _ => Err(format!(
            "`{text}` is not a CPU here: give 0 to {} (this process may use {cpus} CPUs)",
            cpus - 1
        )),
    }
}

/// A floating-point flag within `[min, max]`; the error names the range.
pub(crate) fn number_in(min: f64, max: f64) -> impl Fn(&str) -> Result<f64, String> + Clone {
    move |text: &str| match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (min..=max).contains(&v) => Ok(v),
        _ => Err(format!(
            "`{text}` is out of range: give a number from {min} to {max}"
        )),
    }
}

/// A listen address: `HOST:PORT`, or `unix:PATH` for a Unix socket
/// (docs/cli.md). Every `--*-listen` flag takes both forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListenAddr {
    Tcp(String),
    Unix(std::path::PathBuf),
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => f.write_str(addr),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Parses a [`ListenAddr`].
pub(crate) fn listen_addr(text: &str) -> Result<ListenAddr, String> {
    match text.strip_prefix("unix:") {
        Some("") => Err("unix: needs a path, as in unix:/run/ringship.sock".into()),
        Some(path) => Ok(ListenAddr::Unix(path.into())),
        None if text
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok()) =>
        {
            Ok(ListenAddr::Tcp(text.to_string()))
        }
        None => Err(format!(
            "{text:?} is not HOST:PORT (as in 127.0.0.1:7070 or [::1]:7070) or unix:PATH"
        )),
    }
}
