//! The files `bench --out DIR` writes, in the formats HdrHistogram's own
//! tools read:
//!
//! - `summary.json`: the [`BenchReport`];
//! - `<stage>.hgrm`: the percentile distribution, as Java's
//!   `outputPercentileDistribution` prints it (values in ms, 5 ticks per
//!   half distance, the `#[Mean …]` footers), which HdrHistogram's plotter
//!   page reads;
//! - `latency.hlog`: a V2-compressed interval log, one histogram per stage
//!   per second, tagged with the stage, values in ns (the max column in ms),
//!   written and read with the hdrhistogram crate's interval-log code;
//! - `latency.svg`: every stage on a percentile plot with a logarithmic
//!   1/(1−p) axis, drawn with plotters.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};

use crate::bench::{BenchReport, BenchRun};
use crate::latency::{INTERVAL_NS, Recorder};

/// `.hgrm` values are printed in milliseconds, as HdrHistogram's tools
/// expect; histograms hold nanoseconds.
pub const HGRM_NS_PER_UNIT: f64 = 1e6;

/// Percentile ticks per half distance in `.hgrm` files (Java's default).
pub const HGRM_TICKS_PER_HALF_DISTANCE: u32 = 5;

/// Writes every file into `dir` (created if missing); returns their paths.
pub fn write_all(dir: &Path, run: &BenchRun) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let path = dir.join("summary.json");
    write_summary(&path, &run.report)?;
    written.push(path);
    for (spec, recorder) in &run.stages {
        let path = dir.join(format!("{}.hgrm", spec.key));
        let mut out = BufWriter::new(File::create(&path)?);
        write_hgrm(&mut out, recorder.total())?;
        out.flush()?;
        written.push(path);
    }
    let path = dir.join("latency.hlog");
    let stages: Vec<(&str, &Recorder)> = run.stages.iter().map(|(s, r)| (s.key, r)).collect();
    let mut out = BufWriter::new(File::create(&path)?);
    write_hlog(&mut out, run.origin_ns, &stages)?;
    out.flush()?;
    written.push(path);
    let path = dir.join("latency.svg");
    let curves: Vec<(&str, &Histogram<u64>)> = run
        .stages
        .iter()
        .map(|(s, r)| (s.label, r.total()))
        .collect();
    write_svg(&path, &svg_title(&run.report), &curves)?;
    written.push(path);
    Ok(written)
}

fn write_summary(path: &Path, report: &BenchReport) -> io::Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    serde_json::to_writer_pretty(&mut out, report).map_err(io::Error::other)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// The percentile distribution in HdrHistogram's text format:
///
/// ```text
///        Value     Percentile TotalCount 1/(1-Percentile)
///
///        0.052 0.000000000000          1           1.00
///        …
/// #[Mean    =        0.071, StdDeviation   =        0.012]
/// #[Max     =        1.204, Total count    =        99990]
/// #[Buckets =           22, SubBuckets     =         2048]
/// ```
pub fn write_hgrm(out: &mut impl Write, h: &Histogram<u64>) -> io::Result<()> {
    let scale = HGRM_NS_PER_UNIT;
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    if !h.is_empty() {
        let mut total = 0u64;
        for v in h.iter_quantiles(HGRM_TICKS_PER_HALF_DISTANCE) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / scale;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                writeln!(
                    out,
                    "{value:12.3} {q:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - q)
                )?;
            } else {
                writeln!(out, "{value:12.3} {q:2.12} {total:10}")?;
            }
        }
    }
    let (mean, stdev) = if h.is_empty() {
        (0.0, 0.0)
    } else {
        (h.mean() / scale, h.stdev() / scale)
    };
    writeln!(
        out,
        "#[Mean    = {mean:12.3}, StdDeviation   = {stdev:12.3}]"
    )?;
    writeln!(
        out,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64 / scale,
        h.len()
    )?;
    writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_bucket_count(h)
    )
}

/// Sub-buckets per bucket: the smallest power of two that resolves
/// 2 × 10^digits values at unit resolution (2048 for 3 digits).
fn sub_bucket_count(h: &Histogram<u64>) -> u64 {
    (2.0 * 10f64.powi(i32::from(h.sigfig())))
        .log2()
        .ceil()
        .exp2() as u64
}

/// A V2 interval log: headers as Java's `HistogramLogWriter` writes them,
/// then for each second since `origin_ns` one histogram per stage, tagged
/// with the stage's key. Empty seconds are written too, so every tag has
/// one histogram per interval.
pub fn write_hlog(
    out: &mut impl Write,
    origin_ns: u64,
    stages: &[(&str, &Recorder)],
) -> io::Result<()> {
    let origin_s = origin_ns as f64 / 1e9;
    writeln!(
        out,
        "#[Logged with ringship {} bench: values in ns, interval max in ms]",
        env!("CARGO_PKG_VERSION")
    )?;
    writeln!(out, "#[Histogram log format version 1.3]")?;
    writeln!(out, "#[StartTime: {origin_s:.3} (seconds since epoch)]")?;
    writeln!(out, "#[BaseTime: {origin_s:.3} (seconds since epoch)]")?;
    writeln!(
        out,
        "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""
    )?;
    let mut serializer = V2DeflateSerializer::new();
    let mut log = IntervalLogWriterBuilder::new()
        .with_max_value_divisor(HGRM_NS_PER_UNIT)
        .begin_log_with(out, &mut serializer)?;
    let intervals = stages
        .iter()
        .map(|(_, r)| r.interval_count())
        .max()
        .unwrap_or(0);
    for i in 0..intervals {
        let start = Duration::from_nanos(i as u64 * INTERVAL_NS);
        for (key, recorder) in stages {
            let h = recorder.interval(i);
            let tag = Tag::new(key).expect("stage keys are valid tags");
            log.write_histogram(&h, start, Duration::from_nanos(INTERVAL_NS), Some(tag))
                .map_err(|e| io::Error::other(e.to_string()))?;
        }
    }
    Ok(())
}

fn svg_title(r: &BenchReport) -> String {
    let rate = match r.config.rate_per_s {
        Some(rate) => format!("{rate:.0}/s"),
        None => "max rate".into(),
    };
    format!(
        "ringship bench: {rate}, {} B, {}, {}",
        r.config.record_payload_bytes, r.config.durability, r.config.send_mode
    )
}

/// Where 1/(1−p) = 10^x on the plot's x axis, and its label.
fn percentile_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    match x.round() as i32 {
        0 => "0%".into(),
        1 => "90%".into(),
        2 => "99%".into(),
        n => format!("{:.*}%", (n - 2).max(0) as usize, p),
    }
}

/// Percentile plot in the style of HdrHistogram's plotter: x is
/// log10(1/(1−p)), labelled 90%, 99%, 99.9%…; y is latency in ms.
pub fn write_svg(path: &Path, title: &str, curves: &[(&str, &Histogram<u64>)]) -> io::Result<()> {
    use plotters::prelude::*;

    let series: Vec<(&str, Vec<(f64, f64)>)> = curves
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(label, h)| {
            let points = h
                .iter_quantiles(HGRM_TICKS_PER_HALF_DISTANCE)
                .filter(|v| v.quantile_iterated_to() < 1.0)
                .map(|v| {
                    (
                        (1.0 / (1.0 - v.quantile_iterated_to())).log10(),
                        v.value_iterated_to() as f64 / HGRM_NS_PER_UNIT,
                    )
                })
                .chain(std::iter::once((
                    // The max, at the last tick the sample count supports.
                    (h.len() as f64).log10().max(1.0),
                    h.max() as f64 / HGRM_NS_PER_UNIT,
                )))
                .collect();
            (*label, points)
        })
        .collect();
    let x_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(x, _)| x))
        .fold(2.0f64, f64::max)
        .ceil();
    let y_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(_, y)| y))
        .fold(0.001f64, f64::max)
        * 1.05;

    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (1000, 600)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
        chart
            .configure_mesh()
            .x_desc("percentile (log scale of 1/(1-p))")
            .y_desc("latency (ms)")
            .x_labels(x_max as usize + 1)
            .x_label_formatter(&|x| percentile_label(*x))
            .draw()?;
        let palette = [&BLUE, &RED, &GREEN, &MAGENTA, &CYAN, &BLACK];
        for (i, (label, points)) in series.iter().enumerate() {
            let color = palette[i % palette.len()];
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))?
                .label(*label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| io::Error::other(format!("drawing {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_axis_labels() {
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(1.0), "90%");
        assert_eq!(percentile_label(2.0), "99%");
        assert_eq!(percentile_label(3.0), "99.9%");
        assert_eq!(percentile_label(5.0), "99.999%");
    }
}
