//! The one loop every core runs, shipping or receiving: do the turn's
//! work, wait, collect every ready completion, *then* hand each to its
//! owner. No completion is handled inside the drain, and nothing but a
//! completion (or a deadline the state machine asked for) ends a wait.

use std::io;
use std::time::{Duration, Instant};

use super::{Completion, Ring};

/// What a turn asks of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Wait for a completion, or until this instant if one is given (a
    /// reconnect backoff, an ack deadline; never a durable record).
    Wait(Option<Instant>),
    /// Stop: everything is done.
    Stop,
}

/// A state machine driven by [`run`].
pub(crate) trait Reactor {
    type Error: From<io::Error>;

    /// Everything to do before waiting: take new work, submit, send, ack.
    fn turn(&mut self, ring: &mut Ring) -> Result<Next, Self::Error>;

    /// One completion, after every ready one was collected.
    fn dispatch(&mut self, ring: &mut Ring, completion: Completion) -> Result<(), Self::Error>;

    /// After a batch of completions was dispatched.
    fn dispatched(&mut self) {}
}

/// Runs `reactor` on `ring` until it stops or fails. With a `spin`, the
/// loop busy-polls the ring that long for a completion before it sleeps
/// ([`Ring::submit_and_spin`]); not while a deadline is due, which only the
/// timed wait ends.
pub(crate) fn run<R: Reactor>(
    ring: &mut Ring,
    spin: Duration,
    reactor: &mut R,
) -> Result<(), R::Error> {
    let mut completions: Vec<Completion> = Vec::with_capacity(ring.slots());
    loop {
        match reactor.turn(ring)? {
            Next::Stop => return Ok(()),
            Next::Wait(Some(at)) => {
                ring.submit_and_wait_timeout(1, at.saturating_duration_since(Instant::now()))?
            }
            Next::Wait(None) if !spin.is_zero() && ring.submit_and_spin(spin)? => {}
            Next::Wait(None) => ring.submit_and_wait(1)?,
        }
        completions.clear();
        ring.reap(&mut completions);
        for completion in completions.drain(..) {
            reactor.dispatch(ring, completion)?;
        }
        reactor.dispatched();
    }
}
