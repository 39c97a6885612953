//! `ringship compare`: the latency regression gate.
//!
//! Reads bench `summary.json` reports on two sides, takes the median of each
//! tracked figure over each side's runs, and says whether any figure got
//! worse by more than the allowed percentage. Exit codes: 0 no regression,
//! 1 a regression, 2 bad input (an unreadable or foreign file, another
//! report version, a missing figure, or configurations that differ without
//! `--force`). Every error names the file and the field.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::bench::report::{
    HEADLINE_STAGE, REPORT_FORMAT, REPORT_FORMAT_VERSION, REPORT_FORMAT_VERSIONS_READ, STAGES,
};
use crate::constants::{COMPARE_RUNS_MAX, REPORT_BYTES_MAX};
use crate::report::human_ns;

/// Percentiles `compare` knows, as given on the command line, with their
/// field in a stage.
pub const PERCENTILES: [(&str, &str); 6] = [
    ("50", "p50_ns"),
    ("90", "p90_ns"),
    ("99", "p99_ns"),
    ("99.9", "p999_ns"),
    ("99.99", "p9999_ns"),
    ("max", "max_ns"),
];

/// Tracked by default.
pub const DEFAULT_PERCENTILES: [&str; 3] = ["50", "99", "99.9"];

/// What to compare.
#[derive(Debug, Clone)]
pub struct CompareConfig {
    pub base: Vec<PathBuf>,
    pub current: Vec<PathBuf>,
    pub max_regression_pct: f64,
    /// Stage keys; empty means the headline stage.
    pub stages: Vec<String>,
    /// Percentile names from [`PERCENTILES`]; empty means the defaults.
    pub percentiles: Vec<String>,
    /// Compare even if the configurations differ.
    pub force: bool,
    /// Also track the achieved rate; a drop is a regression.
    pub track_throughput: bool,
}

/// Bad input: exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CompareError(pub String);

/// One tracked latency figure.
#[derive(Debug, Clone)]
pub struct Row {
    pub stage: String,
    pub percentile: String,
    pub base_ns: u64,
    pub current_ns: u64,
    /// (current − base) / base × 100.
    pub change_pct: f64,
    pub regressed: bool,
}

/// The achieved rate, when tracked: lower is worse.
#[derive(Debug, Clone)]
pub struct ThroughputRow {
    pub base_per_s: f64,
    pub current_per_s: f64,
    /// (current − base) / base × 100.
    pub change_pct: f64,
    pub regressed: bool,
}

/// The outcome: every row, and the configuration differences that
/// `--force` let through.
#[derive(Debug)]
pub struct Comparison {
    pub rows: Vec<Row>,
    pub throughput: Option<ThroughputRow>,
    pub forced_differences: Vec<String>,
    /// Fields of `environment` that differ: not a refusal (machines and
    /// kernels change under a CI gate), but worth saying next to a verdict.
    pub environment_differences: Vec<String>,
}

/// The `environment` fields that move latency, so a difference is shown.
const ENVIRONMENT_FIELDS_SHOWN: [&str; 5] = [
    "kernel",
    "ring_flags",
    "wal_io",
    "cpus",
    "cpu_dma_latency_us",
];

impl Comparison {
    pub fn regressed(&self) -> bool {
        self.rows.iter().any(|r| r.regressed)
            || self.throughput.as_ref().is_some_and(|t| t.regressed)
    }
}

/// Reads one report, refusing anything that is not a bench report of this
/// version.
pub fn load(path: &Path) -> Result<Value, CompareError> {
    let err = |why: String| CompareError(format!("{}: {why}", path.display()));
    let file = File::open(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let len = file
        .metadata()
        .map_err(|e| err(format!("cannot read: {e}")))?
        .len();
    if len > REPORT_BYTES_MAX {
        return Err(err(format!(
            "{len} bytes is too large for a bench report (at most {REPORT_BYTES_MAX})"
        )));
    }
    let mut text = String::with_capacity(len as usize);
    file.take(REPORT_BYTES_MAX)
        .read_to_string(&mut text)
        .map_err(|e| err(format!("cannot read: {e}")))?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| err(format!("not valid JSON: {e}")))?;
    match value.get("format").and_then(Value::as_str) {
        Some(REPORT_FORMAT) => {}
        Some(other) => {
            return Err(err(format!(
                "field `format` is {other:?}, not {REPORT_FORMAT:?}: not a ringship bench report"
            )));
        }
        None => {
            return Err(err(format!(
                "no `format` field: not a ringship bench summary.json (expected format {REPORT_FORMAT:?})"
            )));
        }
    }
    match value.get("format_version").and_then(Value::as_u64) {
        Some(v) if REPORT_FORMAT_VERSIONS_READ.contains(&v) => {
            check_percentiles(&value).map_err(err)?;
            Ok(value)
        }
        Some(v) => Err(err(format!(
            "field `format_version` is {v}; this ringship reads versions {REPORT_FORMAT_VERSIONS_READ:?} (it writes {REPORT_FORMAT_VERSION})"
        ))),
        None => Err(err(
            "field `format_version` is missing or not a number".into()
        )),
    }
}

/// Refuses a report whose percentiles go down anywhere (p99 below p50,
/// say): no histogram gives that, so the file was edited or broken.
fn check_percentiles(report: &Value) -> Result<(), String> {
    let Some(stages) = report.get("stages").and_then(Value::as_object) else {
        return Ok(());
    };
    for (stage, figures) in stages {
        let mut earlier: Vec<(&str, u64)> = Vec::with_capacity(PERCENTILES.len());
        for (_, field) in PERCENTILES {
            let Some(value) = figures.get(field).and_then(Value::as_u64) else {
                continue;
            };
            // Name the lowest percentile that already lies above this one.
            if let Some(&(before, high)) = earlier.iter().find(|(_, v)| *v > value) {
                return Err(format!(
                    "`stages.{stage}.{field}` is {value} ns, below `stages.{stage}.{before}` ({high} ns): \
                     percentiles cannot decrease, so the report is inconsistent"
                ));
            }
            earlier.push((field, value));
        }
    }
    Ok(())
}

/// Fields of `config` that differ between `a` and `b`.
fn config_differences(a: &Value, b: &Value) -> Vec<(String, String, String)> {
    let empty = serde_json::Map::new();
    let a = a.get("config").and_then(Value::as_object).unwrap_or(&empty);
    let b = b.get("config").and_then(Value::as_object).unwrap_or(&empty);
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let show = |v: Option<&Value>| v.map_or("(missing)".to_string(), Value::to_string);
            (k.clone(), show(a.get(k)), show(b.get(k)))
        })
        .collect()
}

fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        // The mean of the middle two, rounded down: a value that was measured
        // on at least one side of it.
        (values[n / 2 - 1] + values[n / 2]) / 2
    }
}

/// Compares; `Err` is bad input (exit 2).
pub fn compare(config: &CompareConfig) -> Result<Comparison, CompareError> {
    for (side, files) in [("base", &config.base), ("current", &config.current)] {
        if files.is_empty() {
            return Err(CompareError(format!("no {side} reports given")));
        }
        if files.len() > COMPARE_RUNS_MAX {
            return Err(CompareError(format!(
                "{} {side} reports; at most {COMPARE_RUNS_MAX}",
                files.len()
            )));
        }
    }
    if !(config.max_regression_pct.is_finite() && config.max_regression_pct >= 0.0) {
        return Err(CompareError(format!(
            "--max-regression-pct {} must be a number ≥ 0",
            config.max_regression_pct
        )));
    }
    let stages: Vec<String> = if config.stages.is_empty() {
        vec![HEADLINE_STAGE.to_string()]
    } else if config.stages.iter().any(|s| s == "all") {
        STAGES.iter().map(|s| s.key.to_string()).collect()
    } else {
        config.stages.clone()
    };
    for stage in &stages {
        if !STAGES.iter().any(|s| s.key == stage) {
            let known: Vec<&str> = STAGES.iter().map(|s| s.key).collect();
            return Err(CompareError(format!(
                "--stage {stage}: unknown stage; known: {}, or all",
                known.join(", ")
            )));
        }
    }
    let percentiles: Vec<(&str, &str)> = if config.percentiles.is_empty() {
        DEFAULT_PERCENTILES
            .iter()
            .map(|p| *PERCENTILES.iter().find(|(n, _)| n == p).expect("known"))
            .collect()
    } else {
        let mut chosen = Vec::new();
        for p in &config.percentiles {
            let p = p.trim().trim_start_matches('p');
            match PERCENTILES.iter().find(|(n, _)| *n == p) {
                Some(known) => chosen.push(*known),
                None => {
                    let known: Vec<&str> = PERCENTILES.iter().map(|(n, _)| *n).collect();
                    return Err(CompareError(format!(
                        "--percentiles {p}: unknown percentile; known: {}",
                        known.join(", ")
                    )));
                }
            }
        }
        chosen
    };

    let load_all = |files: &[PathBuf]| -> Result<Vec<(PathBuf, Value)>, CompareError> {
        files.iter().map(|f| Ok((f.clone(), load(f)?))).collect()
    };
    let base = load_all(&config.base)?;
    let current = load_all(&config.current)?;

    // Every report must have been run the same way as the first base.
    let (first_path, first) = &base[0];
    let mut forced_differences = Vec::new();
    for (path, report) in base.iter().chain(&current).skip(1) {
        for (key, a, b) in config_differences(first, report) {
            let line = format!(
                "config.{key} differs: {a} in {} but {b} in {}",
                first_path.display(),
                path.display()
            );
            if !config.force {
                return Err(CompareError(format!(
                    "{line}; runs of different configurations are not comparable (pass --force to compare anyway)"
                )));
            }
            forced_differences.push(line);
        }
    }
    let mut environment_differences = Vec::new();
    for (path, report) in base.iter().chain(&current).skip(1) {
        for key in ENVIRONMENT_FIELDS_SHOWN {
            let field = |r: &Value| r.get("environment").and_then(|e| e.get(key)).cloned();
            let (a, b) = (field(first), field(report));
            if a != b {
                let show = |v: Option<Value>| v.map_or("(missing)".to_string(), |v| v.to_string());
                environment_differences.push(format!(
                    "environment.{key} differs: {} in {} but {} in {}",
                    show(a),
                    first_path.display(),
                    show(b),
                    path.display()
                ));
            }
        }
    }

    let figure = |path: &Path, report: &Value, stage: &str, field: &str| {
        let stage_value = report
            .get("stages")
            .and_then(|s| s.get(stage))
            .ok_or_else(|| {
                CompareError(format!(
                    "{}: stage `stages.{stage}` is missing (a --peer run has no append_to_remote_durable)",
                    path.display()
                ))
            })?;
        if stage_value.get("count").and_then(Value::as_u64) == Some(0) {
            return Err(CompareError(format!(
                "{}: stage `stages.{stage}` has no samples",
                path.display()
            )));
        }
        stage_value
            .get(field)
            .and_then(Value::as_u64)
            .ok_or_else(|| {
                CompareError(format!(
                    "{}: field `stages.{stage}.{field}` is missing or not a whole number of ns",
                    path.display()
                ))
            })
    };
    let side_median = |side: &[(PathBuf, Value)], stage: &str, field: &str| {
        let mut values = side
            .iter()
            .map(|(path, report)| figure(path, report, stage, field))
            .collect::<Result<Vec<u64>, CompareError>>()?;
        Ok::<u64, CompareError>(median(&mut values))
    };

    let mut rows = Vec::new();
    for stage in &stages {
        for (name, field) in &percentiles {
            let base_ns = side_median(&base, stage, field)?;
            let current_ns = side_median(&current, stage, field)?;
            let change_pct = if base_ns == 0 {
                if current_ns == 0 { 0.0 } else { f64::INFINITY }
            } else {
                (current_ns as f64 - base_ns as f64) / base_ns as f64 * 100.0
            };
            rows.push(Row {
                stage: stage.clone(),
                percentile: name.to_string(),
                base_ns,
                current_ns,
                change_pct,
                regressed: change_pct > config.max_regression_pct,
            });
        }
    }
    let throughput = if config.track_throughput {
        let rate = |path: &Path, report: &Value| {
            report
                .get("results")
                .and_then(|r| r.get("achieved_records_per_s"))
                .and_then(Value::as_f64)
                .ok_or_else(|| {
                    CompareError(format!(
                        "{}: field `results.achieved_records_per_s` is missing (--track-throughput needs reports of format version {REPORT_FORMAT_VERSION})",
                        path.display()
                    ))
                })
        };
        let side = |side: &[(PathBuf, Value)]| -> Result<f64, CompareError> {
            let mut values = side
                .iter()
                .map(|(path, report)| rate(path, report))
                .collect::<Result<Vec<f64>, CompareError>>()?;
            values.sort_by(f64::total_cmp);
            let n = values.len();
            Ok(if n % 2 == 1 {
                values[n / 2]
            } else {
                (values[n / 2 - 1] + values[n / 2]) / 2.0
            })
        };
        let (base_per_s, current_per_s) = (side(&base)?, side(&current)?);
        if base_per_s <= 0.0 {
            return Err(CompareError(format!(
                "the base reports' median achieved rate is {base_per_s} records/s: nothing to compare a throughput with"
            )));
        }
        let change_pct = (current_per_s - base_per_s) / base_per_s * 100.0;
        Some(ThroughputRow {
            base_per_s,
            current_per_s,
            change_pct,
            regressed: -change_pct > config.max_regression_pct,
        })
    } else {
        None
    };
    Ok(Comparison {
        rows,
        throughput,
        forced_differences,
        environment_differences,
    })
}

/// The table `compare` prints.
pub fn print(config: &CompareConfig, c: &Comparison) {
    for d in &c.forced_differences {
        crate::outln!("warning (--force): {d}");
    }
    for d in &c.environment_differences {
        crate::outln!("note: {d}");
    }
    crate::outln!(
        "compare: median of {} base and {} current run{} · a regression is a rise of more than {}%",
        config.base.len(),
        config.current.len(),
        if config.current.len() == 1 { "" } else { "s" },
        config.max_regression_pct
    );
    crate::outln!(
        "  {:<26} {:>6} {:>10} {:>10} {:>9}  verdict",
        "stage",
        "p",
        "base",
        "current",
        "change"
    );
    for r in &c.rows {
        let verdict = if r.regressed {
            "REGRESSED"
        } else if r.change_pct < -config.max_regression_pct {
            "improved"
        } else {
            "ok"
        };
        crate::outln!(
            "  {:<26} {:>6} {:>10} {:>10} {:>+8.1}%  {verdict}",
            r.stage,
            r.percentile,
            human_ns(r.base_ns),
            human_ns(r.current_ns),
            r.change_pct
        );
    }
    if let Some(t) = &c.throughput {
        let verdict = if t.regressed {
            "REGRESSED"
        } else if t.change_pct > config.max_regression_pct {
            "improved"
        } else {
            "ok"
        };
        crate::outln!(
            "  {:<26} {:>6} {:>10} {:>10} {:>+8.1}%  {verdict}",
            "achieved records/s",
            "",
            format!("{:.0}", t.base_per_s),
            format!("{:.0}", t.current_per_s),
            t.change_pct
        );
    }
    let mut regressed: Vec<String> = c
        .rows
        .iter()
        .filter(|r| r.regressed)
        .map(|r| format!("{} p{} {:+.1}%", r.stage, r.percentile, r.change_pct))
        .collect();
    if let Some(t) = c.throughput.as_ref().filter(|t| t.regressed) {
        regressed.push(format!("achieved records/s {:+.1}%", t.change_pct));
    }
    if regressed.is_empty() {
        crate::outln!("no regression");
    } else {
        crate::outln!("REGRESSION: {}", regressed.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_runs() {
        assert_eq!(median(&mut [3, 1, 2]), 2);
        assert_eq!(median(&mut [4, 1, 3, 2]), 2);
        assert_eq!(median(&mut [7]), 7);
    }
}
