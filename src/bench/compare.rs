//! `ringship compare`: the latency regression gate.
//!
//! Reads bench `summary.json` reports on two sides, takes the median of each
//! tracked figure over each side's runs, and says whether any figure got
//! worse by more than the allowed percentage. Exit codes: 0 no regression,
//! 1 a regression, 2 bad input (an unreadable or foreign file, another
//! report version, a missing figure, or configurations that differ without
//! `--force`). Every error names the file and the field.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
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

/// Bad input: exit 2. Each names the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {len_bytes} bytes is too large for a bench report (at most {REPORT_BYTES_MAX})", path.display())]
    TooLarge { path: PathBuf, len_bytes: u64 },
    #[error("{}: not valid JSON: {source}", path.display())]
    NotJson {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{}: {why}: not a ringship bench summary.json (expected format {REPORT_FORMAT:?})", path.display())]
    NotReport { path: PathBuf, why: String },
    #[error("{}: field `format_version` is {found}; this ringship reads versions {REPORT_FORMAT_VERSIONS_READ:?} (it writes {REPORT_FORMAT_VERSION})", path.display())]
    Version { path: PathBuf, found: u64 },
    #[error("{}: {source}", path.display())]
    Malformed {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "{}: `stages.{stage}.{field}` is {value} ns, below `stages.{stage}.{below}` ({high} ns): \
         percentiles cannot decrease, so the report is inconsistent",
        path.display()
    )]
    Inconsistent {
        path: PathBuf,
        stage: String,
        field: &'static str,
        value: u64,
        below: &'static str,
        high: u64,
    },
    #[error("{}: stage `stages.{stage}` is missing (a --peer run has no append_to_remote_durable)", path.display())]
    MissingStage { path: PathBuf, stage: String },
    #[error("{}: stage `stages.{stage}` has no samples", path.display())]
    NoSamples { path: PathBuf, stage: String },
    #[error("{}: field `{field}` is missing", path.display())]
    MissingField { path: PathBuf, field: String },
    #[error(
        "config.{key} differs: {a} in {} but {b} in {}; runs of different configurations are not comparable (pass --force to compare anyway)",
        first.display(), other.display()
    )]
    ConfigDiffers {
        key: String,
        a: String,
        b: String,
        first: PathBuf,
        other: PathBuf,
    },
    #[error("{0}")]
    Usage(String),
}

/// A `summary.json` as compare reads it: typed where compare uses a
/// figure, opaque where it only checks that two reports agree (`config`)
/// or shows a difference (`environment`).
#[derive(Debug, Deserialize)]
pub struct ReportFile {
    // `format` and `format_version` are checked before it is read.
    #[serde(default)]
    pub config: BTreeMap<String, Value>,
    #[serde(default)]
    pub environment: BTreeMap<String, Value>,
    #[serde(default)]
    pub stages: BTreeMap<String, StageFile>,
    #[serde(default)]
    pub results: Option<ResultsFile>,
}

/// One stage's figures.
#[derive(Debug, Deserialize)]
pub struct StageFile {
    pub count: u64,
    pub p50_ns: Option<u64>,
    pub p90_ns: Option<u64>,
    pub p99_ns: Option<u64>,
    pub p999_ns: Option<u64>,
    pub p9999_ns: Option<u64>,
    pub max_ns: Option<u64>,
}

impl StageFile {
    /// The figure named `field` (a `PERCENTILES` field).
    fn figure(&self, field: &str) -> Option<u64> {
        match field {
            "p50_ns" => self.p50_ns,
            "p90_ns" => self.p90_ns,
            "p99_ns" => self.p99_ns,
            "p999_ns" => self.p999_ns,
            "p9999_ns" => self.p9999_ns,
            "max_ns" => self.max_ns,
            _ => None,
        }
    }
}

/// The results compare tracks.
#[derive(Debug, Deserialize)]
pub struct ResultsFile {
    pub achieved_records_per_s: Option<f64>,
}

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

/// Reads one report, refusing anything that is not a bench report of a
/// version this build reads, or whose figures contradict each other.
pub fn load(path: &Path) -> Result<ReportFile, CompareError> {
    let file = File::open(path).map_err(|source| CompareError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let len_bytes = file
        .metadata()
        .map_err(|source| CompareError::Read {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    if len_bytes > REPORT_BYTES_MAX {
        return Err(CompareError::TooLarge {
            path: path.to_path_buf(),
            len_bytes,
        });
    }
    let mut text = String::with_capacity(len_bytes as usize);
    file.take(REPORT_BYTES_MAX)
        .read_to_string(&mut text)
        .map_err(|source| CompareError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    // JSON first, then what kind of file, then its shape: each refusal
    // says the most useful thing it can.
    let value: Value = serde_json::from_str(&text).map_err(|source| CompareError::NotJson {
        path: path.to_path_buf(),
        source,
    })?;
    let not_report = |why: String| CompareError::NotReport {
        path: path.to_path_buf(),
        why,
    };
    match value.get("format").and_then(Value::as_str) {
        Some(REPORT_FORMAT) => {}
        Some(other) => return Err(not_report(format!("field `format` is {other:?}"))),
        None => return Err(not_report("no `format` field".into())),
    }
    match value.get("format_version").and_then(Value::as_u64) {
        Some(v) if REPORT_FORMAT_VERSIONS_READ.contains(&v) => {}
        Some(found) => {
            return Err(CompareError::Version {
                path: path.to_path_buf(),
                found,
            });
        }
        None => {
            return Err(CompareError::MissingField {
                path: path.to_path_buf(),
                field: "format_version (a whole number)".into(),
            });
        }
    }
    let report: ReportFile =
        serde_json::from_value(value).map_err(|source| CompareError::Malformed {
            path: path.to_path_buf(),
            source,
        })?;
    check_percentiles(path, &report)?;
    Ok(report)
}

/// Refuses a report whose percentiles go down anywhere (p99 below p50,
/// say): no histogram gives that, so the file was edited or broken.
fn check_percentiles(path: &Path, report: &ReportFile) -> Result<(), CompareError> {
    for (stage, figures) in &report.stages {
        let mut earlier: Vec<(&'static str, u64)> = Vec::with_capacity(PERCENTILES.len());
        for (_, field) in PERCENTILES {
            let Some(value) = figures.figure(field) else {
                continue;
            };
            // Name the lowest percentile that already lies above this one.
            if let Some(&(below, high)) = earlier.iter().find(|(_, v)| *v > value) {
                return Err(CompareError::Inconsistent {
                    path: path.to_path_buf(),
                    stage: stage.clone(),
                    field,
                    value,
                    below,
                    high,
                });
            }
            earlier.push((field, value));
        }
    }
    Ok(())
}

/// Fields of `config` that differ between `a` and `b`.
fn config_differences(a: &ReportFile, b: &ReportFile) -> Vec<(String, String, String)> {
    let mut keys: Vec<&String> = a.config.keys().chain(b.config.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.config.get(*k) != b.config.get(*k))
        .map(|k| {
            let show = |v: Option<&Value>| v.map_or("(missing)".to_string(), Value::to_string);
            (k.clone(), show(a.config.get(k)), show(b.config.get(k)))
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
            return Err(CompareError::Usage(format!("no {side} reports given")));
        }
        if files.len() > COMPARE_RUNS_MAX {
            return Err(CompareError::Usage(format!(
                "{} {side} reports; at most {COMPARE_RUNS_MAX}",
                files.len()
            )));
        }
    }
    if !(config.max_regression_pct.is_finite() && config.max_regression_pct >= 0.0) {
        return Err(CompareError::Usage(format!(
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
            return Err(CompareError::Usage(format!(
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
                    return Err(CompareError::Usage(format!(
                        "--percentiles {p}: unknown percentile; known: {}",
                        known.join(", ")
                    )));
                }
            }
        }
        chosen
    };

    let load_all = |files: &[PathBuf]| -> Result<Vec<(PathBuf, ReportFile)>, CompareError> {
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
                return Err(CompareError::ConfigDiffers {
                    key,
                    a,
                    b,
                    first: first_path.clone(),
                    other: path.clone(),
                });
            }
            forced_differences.push(line);
        }
    }
    let mut environment_differences = Vec::new();
    for (path, report) in base.iter().chain(&current).skip(1) {
        for key in ENVIRONMENT_FIELDS_SHOWN {
            let field = |r: &ReportFile| r.environment.get(key).cloned();
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

    let figure = |path: &Path, report: &ReportFile, stage: &str, field: &str| {
        let figures = report
            .stages
            .get(stage)
            .ok_or_else(|| CompareError::MissingStage {
                path: path.to_path_buf(),
                stage: stage.to_string(),
            })?;
        if figures.count == 0 {
            return Err(CompareError::NoSamples {
                path: path.to_path_buf(),
                stage: stage.to_string(),
            });
        }
        figures
            .figure(field)
            .ok_or_else(|| CompareError::MissingField {
                path: path.to_path_buf(),
                field: format!("stages.{stage}.{field}"),
            })
    };
    let side_median = |side: &[(PathBuf, ReportFile)], stage: &str, field: &str| {
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
        let rate = |path: &Path, report: &ReportFile| {
            report
                .results
                .as_ref()
                .and_then(|r| r.achieved_records_per_s)
                .ok_or_else(|| CompareError::MissingField {
                    path: path.to_path_buf(),
                    field: format!(
                        "results.achieved_records_per_s (--track-throughput needs reports of format version {REPORT_FORMAT_VERSION})"
                    ),
                })
        };
        let side = |side: &[(PathBuf, ReportFile)]| -> Result<f64, CompareError> {
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
            return Err(CompareError::Usage(format!(
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

/// `p99`, `p99.9`, and `max` (not `pmax`).
fn percentile_label(name: &str) -> String {
    if name == "max" {
        name.to_string()
    } else {
        format!("p{name}")
    }
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
        .map(|r| {
            format!(
                "{} {} {:+.1}%",
                r.stage,
                percentile_label(&r.percentile),
                r.change_pct
            )
        })
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
