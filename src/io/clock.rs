//! The clock the sink's reconnect backoff reads: the monotonic clock, or,
//! in test builds on a thread that set one, the simulator's (`crate::sim`),
//! so that a seeded run waits out a backoff in simulated time and replays
//! exactly.

use std::time::Instant;

#[cfg(test)]
thread_local! {
    static SIM_NOW: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// Now.
#[inline]
pub(crate) fn now() -> Instant {
    #[cfg(test)]
    if let Some(t) = SIM_NOW.with(|c| c.get()) {
        return t;
    }
    Instant::now()
}

/// A seed for jitter: the wall clock's nanoseconds, or a constant under
/// the simulator.
pub(crate) fn jitter_seed() -> u64 {
    #[cfg(test)]
    if SIM_NOW.with(|c| c.get()).is_some() {
        return 0x9e37_79b9_7f4a_7c15;
    }
    crate::frame::now_ns() | 1
}

/// Sets this thread's clock to `t` (the simulator), or back to the real
/// one with `None`.
#[cfg(test)]
pub(crate) fn set_sim(t: Option<Instant>) {
    SIM_NOW.with(|c| c.set(t));
}
