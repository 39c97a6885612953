use std::time::Duration;

use clap::ValueEnum;

use crate::sink::tcp::SendMode;

/// `--spin-us`, shared by `ship`, `receive` and `bench`.
#[derive(clap::Args, Debug)]
pub(crate) struct SpinArgs {
    /// Before a core sleeps, busy-poll its ring this many µs for a
    /// completion (0: sleep at once). Trades CPU for latency: on a VM, where
    /// every sleep and wake-up costs tens of µs, a short spin catches an ack
    /// or the next record without paying for either. Up to 10000.
    #[arg(long, value_name = "US", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=crate::constants::SPIN_US_MAX))]
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
        Ok(r) if r.is_finite() && r >= 1.0 => Ok(crate::bench::Rate::PerSecond(r)),
        _ => Err(format!(
            "`{s}` is not a rate: give records per second (at least 1), or `max`"
        )),
    }
}
