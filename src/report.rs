//! Latency summaries in the shape every report uses: p50, p90, p99, p99.9,
//! p99.99 and max, in nanoseconds.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Percentiles of one latency histogram, fields ending in `_ns`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub p9999_ns: u64,
    pub max_ns: u64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: h.len(),
            p50_ns: h.value_at_quantile(0.50),
            p90_ns: h.value_at_quantile(0.90),
            p99_ns: h.value_at_quantile(0.99),
            p999_ns: h.value_at_quantile(0.999),
            p9999_ns: h.value_at_quantile(0.9999),
            max_ns: h.max(),
        }
    }

    /// `p50 180 µs · p99 1.21 ms · p99.9 2.40 ms · max 3.00 ms`
    pub fn human(&self) -> String {
        if self.count == 0 {
            return "no samples".into();
        }
        format!(
            "p50 {} · p90 {} · p99 {} · p99.9 {} · max {}",
            human_ns(self.p50_ns),
            human_ns(self.p90_ns),
            human_ns(self.p99_ns),
            human_ns(self.p999_ns),
            human_ns(self.max_ns)
        )
    }
}

/// A duration in ns, printed with a unit a person reads at a glance.
pub fn human_ns(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..1_000_000 => format!("{:.1} µs", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}

/// Kernel release, as `uname -r` prints it, for reports.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// Set once a report line could not be written for a reason other than a
/// closed pipe.
static STDOUT_FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes one line of a report to stdout, like `println!`, except that a
/// reader that went away (`ringship verify | head`) or a failing stdout
/// never panics (`println!` does: exit 101). The rest of the report is
/// dropped. A closed pipe is the reader's choice, so the command keeps the
/// exit code its work earned; any other failure (a full disk under `--json
/// > r.json`) is said once on stderr and turns success into exit 1, see
/// [`stdout_failed`]. Used through [`outln!`](crate::outln).
pub fn out_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    static DROPPED: AtomicBool = AtomicBool::new(false);
    if DROPPED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    // Stdout is line-buffered, so the newline flushes and a failure shows
    // here, on the line that hit it.
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        DROPPED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            STDOUT_FAILED.store(true, Ordering::Relaxed);
            eprintln!("ringship: writing the report to stdout: {e}; the rest of it is dropped");
        }
    }
}

/// True once `out_line` failed for a reason other than a closed pipe.
pub fn stdout_failed() -> bool {
    STDOUT_FAILED.load(std::sync::atomic::Ordering::Relaxed)
}

/// `println!` for reports, through `out_line`: a closed or failing
/// stdout never panics.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::report::out_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::report::out_line(format_args!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_inputs() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let s = LatencySummary::of(&h);
        assert_eq!(s.count, 1000);
        // 3 significant digits: values are exact to within 0.1 %.
        assert!((499_000..=501_000).contains(&s.p50_ns), "{s:?}");
        assert!((989_000..=991_000).contains(&s.p99_ns), "{s:?}");
        assert!((999_000..=1_001_000).contains(&s.max_ns), "{s:?}");
    }

    #[test]
    fn human_units() {
        assert_eq!(human_ns(999), "999 ns");
        assert_eq!(human_ns(1_500), "1.5 µs");
        assert_eq!(human_ns(2_500_000), "2.50 ms");
        assert_eq!(human_ns(3_000_000_000), "3.00 s");
    }
}
