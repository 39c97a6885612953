//! Latency at every hop: one [`Recorder`] per stage per core, merged at the
//! end.
//!
//! A recorder keeps a whole-run HdrHistogram (1 ns .. 1 hour, 3 significant
//! digits) of `now − start` for every record that passes a stage, where
//! `start` is the record's append timestamp: the time it was accepted, or,
//! under an open-loop `bench`, the time it was *due* on the schedule (which
//! is what corrects for coordinated omission).
//!
//! A recorder given a [`Window`] (by `bench`) also
//! - counts only records whose start lies inside the window, which cuts the
//!   warmup before it and the idle-tail probe after it; and
//! - keeps one histogram per [`INTERVAL_NS`] of wall time since the window's
//!   origin, keyed by when each value was *recorded*, for the `.hlog`
//!   interval log. No timer is involved: the interval is worked out from the
//!   completion's own timestamp.
//!
//! Recording is on the data path, so it is a few compares and an array
//! index. Only the current second's interval histogram is live; finished
//! ones are kept V2-encoded (a few KB), so a long run does not hold a
//! ~100 KB histogram per second per stage.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};

use crate::constants::{LATENCY_INTERVALS_MAX, LATENCY_NS_MAX};

/// Interval histograms span one second each, as the `.hlog` format expects.
pub const INTERVAL_NS: u64 = 1_000_000_000;

/// HdrHistogram precision for every latency figure.
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// Which records count, and where interval zero starts. Shared by every
/// recorder of a run and set once the load is about to start; nothing is
/// counted before that.
#[derive(Debug)]
pub struct Window {
    from_ns: AtomicU64,
    until_ns: AtomicU64,
    origin_ns: AtomicU64,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            from_ns: AtomicU64::new(u64::MAX),
            until_ns: AtomicU64::new(0),
            origin_ns: AtomicU64::new(0),
        }
    }
}

impl Window {
    /// Count records whose start is in `[from_ns, until_ns)`; interval 0
    /// begins at `origin_ns`.
    pub fn open(&self, origin_ns: u64, from_ns: u64, until_ns: u64) {
        self.origin_ns.store(origin_ns, Ordering::Relaxed);
        self.until_ns.store(until_ns, Ordering::Relaxed);
        // Released last: a recorder that sees `from` sees the rest.
        self.from_ns.store(from_ns, Ordering::Release);
    }

    pub fn origin_ns(&self) -> u64 {
        self.origin_ns.load(Ordering::Relaxed)
    }
}

/// One stage's latency on one core.
#[derive(Debug, Clone)]
pub struct Recorder {
    total: Histogram<u64>,
    /// Finished intervals, V2-encoded: a live 3-digit histogram over a few
    /// ms of range is ~100 KB, its encoding a few KB, so a long run keeps
    /// one live interval per stage, not one per second. Empty means no
    /// values.
    sealed: Vec<Vec<u8>>,
    /// The interval being recorded, by index.
    current: Option<(usize, Histogram<u64>)>,
    window: Option<Arc<Window>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

/// A histogram with the bounds every latency figure uses.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, SIGNIFICANT_DIGITS)
        .expect("static histogram bounds")
}

/// An interval histogram: it grows to the range it sees.
fn interval_histogram() -> Histogram<u64> {
    let mut h = Histogram::new(SIGNIFICANT_DIGITS).expect("static precision");
    h.auto(true);
    h
}

fn encode(h: &Histogram<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    if !h.is_empty() {
        V2Serializer::new()
            .serialize(h, &mut out)
            .expect("a histogram encodes into memory");
    }
    out
}

fn decode(bytes: &[u8]) -> Histogram<u64> {
    if bytes.is_empty() {
        return interval_histogram();
    }
    let mut h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut &bytes[..])
        .expect("our own encoding decodes");
    h.auto(true);
    h
}

impl Recorder {
    /// A recorder that counts every record and keeps no intervals.
    pub fn new() -> Recorder {
        Recorder {
            total: histogram(),
            sealed: Vec::new(),
            current: None,
            window: None,
        }
    }

    /// From now on, count only records inside `window`, by interval.
    pub fn set_window(&mut self, window: Option<Arc<Window>>) {
        self.window = window;
    }

    /// Records `now_ns − start_ns` (at least 1 ns).
    #[inline]
    pub fn record(&mut self, start_ns: u64, now_ns: u64) {
        let value = now_ns.saturating_sub(start_ns).max(1);
        if let Some(window) = &self.window {
            if start_ns < window.from_ns.load(Ordering::Acquire)
                || start_ns >= window.until_ns.load(Ordering::Relaxed)
            {
                return;
            }
            let index = (now_ns.saturating_sub(window.origin_ns.load(Ordering::Relaxed))
                / INTERVAL_NS)
                .min(LATENCY_INTERVALS_MAX as u64 - 1) as usize;
            // `record`, not `saturating_record`: the latter clamps to the
            // current range instead of growing it.
            let value = value.min(LATENCY_NS_MAX);
            match &mut self.current {
                // A clock stepped back folds into the current interval.
                Some((current, h)) if index <= *current => {
                    let _ = h.record(value);
                }
                _ => {
                    // Once a second per stage: encoding takes about 10 µs
                    // (measured in release on this machine).
                    self.seal();
                    let mut h = interval_histogram();
                    let _ = h.record(value);
                    self.current = Some((index, h));
                }
            }
        }
        self.total.saturating_record(value);
    }

    /// Moves the current interval into `sealed`, padding skipped seconds.
    fn seal(&mut self) {
        if let Some((index, h)) = self.current.take() {
            self.sealed.resize_with(index, Vec::new);
            self.sealed.push(encode(&h));
        }
    }

    /// Every value counted.
    pub fn total(&self) -> &Histogram<u64> {
        &self.total
    }

    /// Intervals so far (seconds since the window's origin, up to the last
    /// one with a value); 0 without a window.
    pub fn interval_count(&self) -> usize {
        match &self.current {
            Some((index, _)) => index + 1,
            None => self.sealed.len(),
        }
    }

    /// The values recorded in second `index` since the window's origin.
    pub fn interval(&self, index: usize) -> Histogram<u64> {
        match &self.current {
            Some((current, h)) if *current == index => h.clone(),
            _ => self
                .sealed
                .get(index)
                .map_or_else(interval_histogram, |bytes| decode(bytes)),
        }
    }

    /// Adds another core's recorder of the same stage.
    pub fn merge(&mut self, other: &Recorder) {
        self.total
            .add(&other.total)
            .expect("recorders share their bounds");
        let count = self.interval_count().max(other.interval_count());
        if other.interval_count() == 0 {
            return;
        }
        let merged: Vec<Vec<u8>> = (0..count)
            .map(|i| {
                let mut h = self.interval(i);
                h.add(other.interval(i))
                    .expect("auto-resizing histograms take any value");
                encode(&h)
            })
            .collect();
        self.sealed = merged;
        self.current = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_window_everything_counts() {
        let mut r = Recorder::new();
        r.record(100, 1_100);
        r.record(5, 5);
        assert_eq!(r.total().len(), 2);
        assert_eq!(r.total().min(), 1);
        assert_eq!(r.interval_count(), 0);
    }

    #[test]
    fn a_window_cuts_warmup_and_probe_and_buckets_by_second() {
        let window = Arc::new(Window::default());
        let mut r = Recorder::new();
        r.set_window(Some(window.clone()));
        r.record(1, 2);
        assert_eq!(r.total().len(), 0, "nothing counts before the window opens");
        let origin = 10 * INTERVAL_NS;
        window.open(origin, origin + INTERVAL_NS, origin + 3 * INTERVAL_NS);
        r.record(origin + 10, origin + 20); // warmup
        r.record(origin + 3 * INTERVAL_NS, origin + 3 * INTERVAL_NS + 5); // probe
        assert_eq!(r.total().len(), 0);
        let start = origin + INTERVAL_NS + 7;
        r.record(start, start + 1_000); // interval 1
        r.record(start, origin + 2 * INTERVAL_NS + 3); // completes in interval 2
        assert_eq!(r.total().len(), 2);
        let counts: Vec<u64> = (0..r.interval_count())
            .map(|i| r.interval(i).len())
            .collect();
        assert_eq!(counts, [0, 1, 1]);
        // Interval histograms grow to the value instead of clamping it, and
        // a sealed one decodes to what was recorded.
        assert!(r.interval(1).equivalent(r.interval(1).max(), 1_000));
        assert!(r.interval(2).max() > INTERVAL_NS / 2);

        let mut merged = Recorder::new();
        merged.merge(&r);
        merged.merge(&r);
        assert_eq!(merged.total().len(), 4);
        let counts: Vec<u64> = (0..merged.interval_count())
            .map(|i| merged.interval(i).len())
            .collect();
        assert_eq!(counts, [0, 2, 2]);
    }
}
