use std::path::PathBuf;

use super::{EXIT_FAILURE, EXIT_OK, Failure, number_in};

/// Compare bench reports: the latency regression gate for CI.
///
/// Give one or more base summary.json files, then `--`, then one or more
/// current ones. With several runs on a side, each figure's median is used.
/// Prints each tracked figure (base, current, change in %) and exits 0 when
/// none rose by more than --max-regression-pct, 1 when one did, and 2 on bad
/// input: an unreadable file, a report of another version, a missing
/// figure, or configurations that differ (unless --force). Options may come
/// before or after the `--`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    ringship compare baseline.json -- results/summary.json\n  \
    ringship compare base1.json base2.json base3.json -- cur1.json cur2.json cur3.json --max-regression-pct 20\n  \
    ringship compare a.json -- b.json --stage all --percentiles 50,99,99.9,max")]
pub(super) struct CompareArgs {
    /// Base reports (summary.json from `bench --out`).
    #[arg(required = true)]
    base: Vec<PathBuf>,
    /// Current reports, after `--`.
    #[arg(last = true, required = true)]
    current: Vec<PathBuf>,
    /// A figure that rose by more than this percentage is a regression;
    /// 0 to 1000000.
    #[arg(long, default_value_t = 10.0, allow_negative_numbers = true, value_parser = number_in(0.0, 1e6))]
    max_regression_pct: f64,
    /// Stage to track (repeatable; `all` for every stage). Default:
    /// append_to_acked.
    #[arg(long)]
    stage: Vec<String>,
    /// Percentiles to track, comma-separated, from 50, 90, 99, 99.9,
    /// 99.99, max. Default: 50,99,99.9.
    #[arg(long, value_delimiter = ',')]
    percentiles: Vec<String>,
    /// Compare even if the reports' configurations differ.
    #[arg(long)]
    force: bool,
    /// Also track the achieved rate (results.achieved_records_per_s): a
    /// drop of more than --max-regression-pct is a regression. Needs
    /// reports of format version 2.
    #[arg(long)]
    track_throughput: bool,
}

pub(super) fn run(args: CompareArgs) -> Result<i32, Failure> {
    let config = crate::bench::compare::CompareConfig {
        base: args.base,
        current: args.current,
        max_regression_pct: args.max_regression_pct,
        stages: args.stage,
        percentiles: args.percentiles,
        force: args.force,
        track_throughput: args.track_throughput,
    };
    let comparison = crate::bench::compare::compare(&config).map_err(Failure::usage)?;
    crate::bench::compare::print(&config, &comparison);
    Ok(if comparison.regressed() {
        EXIT_FAILURE
    } else {
        EXIT_OK
    })
}
