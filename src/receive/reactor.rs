//! A receiver core: one thread, one ring, many connections, run by the
//! same loop skeleton as a shard ([`crate::io::event_loop`]).
//!
//! Each core owns an io_uring (pinned with its io-wq workers when the
//! receiver is pinned) and serves every connection admitted to it: the
//! connection's socket RECV, its WAL's commits and its acks all run on that
//! ring. The loop is the shipper core's, widened to many pipelines:
//!
//! 1. take newly admitted connections (the admission thread has already
//!    done the handshake, opened the WAL and sent the welcome);
//! 2. for every connection: stage verified records into its WAL and submit
//!    a commit if a chain is free, post its RECV, and send its ack if the
//!    durable watermark moved;
//! 3. retire connections that are done;
//! 4. submit and wait for at least one completion, reap them all, then hand
//!    each to its connection by token.
//!
//! A durable watermark that advances in step 4 is acknowledged in step 2 of
//! the next turn, before the loop waits again: nothing but completions gates
//! an ack. Acks are io_uring SENDs, so a shipper that stops reading stalls
//! only its own acks, never the core. A connection whose WAL fails is shut
//! down and dropped once its operations have completed; the others go on.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use nix::sys::eventfd::EventFd;

use super::connection::Conn;
use super::{Registration, Shared};
use crate::constants::{
    RECEIVER_CONNECTIONS_MAX, RECEIVER_IOWQ_WORKERS_MAX, RECEIVER_SLOTS_PER_CONNECTION,
};
use crate::io::cpu::pin_current_thread;
use crate::io::event_loop::{self, Next, Reactor};
use crate::io::{Completion, Io, Kind, Owner, Ring, Token};
use crate::protocol::Hello;
use crate::wal::WalWriter;

/// The admission wake-up read's token.
const TOKEN_ADMIT: Token = Token::new(Owner::Admission, Kind::Wake, 0);

/// A connection that passed the handshake, with its WAL open and its
/// welcome sent, on its way to a core.
pub(super) struct Admitted {
    pub stream: TcpStream,
    /// A second handle on the socket, for the RECVs.
    pub reader: TcpStream,
    pub peer: SocketAddr,
    pub hello: Hello,
    pub wal: WalWriter,
    pub registration: Registration,
}

/// The admission side of a core: where the acceptor sends connections.
pub(super) struct CoreHandle {
    pub tx: mpsc::Sender<Admitted>,
    pub wake: Arc<EventFd>,
    /// Connections admitted to this core and not yet retired;
    /// [`CORE_GONE`] once the core has stopped.
    pub load: Arc<AtomicUsize>,
    pub thread: std::thread::JoinHandle<()>,
}

/// A stopped core's load: never the least loaded, never chosen.
pub(super) const CORE_GONE: usize = usize::MAX / 2;

impl CoreHandle {
    /// Hands `admitted` to the core and wakes it. Fails (dropping the
    /// connection) only if the core has stopped.
    pub fn admit(&self, admitted: Admitted) -> Result<(), ()> {
        self.load.fetch_add(1, Ordering::SeqCst);
        if self.tx.send(admitted).is_ok() {
            let _ = self.wake.write(1);
            Ok(())
        } else {
            self.load.fetch_sub(1, Ordering::SeqCst);
            Err(())
        }
    }

    /// Lets the core finish its connections and stop, and waits for it.
    pub fn finish(self) {
        let CoreHandle {
            tx, wake, thread, ..
        } = self;
        drop(tx);
        let _ = wake.write(1);
        let _ = thread.join();
    }
}

/// Starts core `index`: a thread with its own ring, pinned with its io-wq
/// workers to CPU index `cpu` (see [`crate::io::allowed_cpu`]) when given.
/// Returns once the ring is built, or why it could not be.
pub(super) fn start(
    index: usize,
    cpu: Option<usize>,
    spin: Duration,
    shared: Arc<Shared>,
) -> Result<CoreHandle, String> {
    let (tx, rx) = mpsc::channel();
    let wake = Arc::new(
        EventFd::from_flags(nix::sys::eventfd::EfdFlags::EFD_CLOEXEC)
            .map_err(|e| format!("creating an eventfd: {e}"))?,
    );
    let load = Arc::new(AtomicUsize::new(0));
    let (ready_tx, ready_rx) = mpsc::sync_channel(1);
    let thread = {
        let wake = wake.clone();
        let load = load.clone();
        std::thread::Builder::new()
            .name(format!("ringship-recv-core-{index}"))
            .spawn(move || {
                if let Some(cpu) = cpu
                    && let Err(e) = pin_current_thread(cpu)
                {
                    let _ = ready_tx.send(Err(format!("pinning to CPU {cpu}: {e}")));
                    return;
                }
                let slots = RECEIVER_CONNECTIONS_MAX * RECEIVER_SLOTS_PER_CONNECTION + 1;
                let ring = match Ring::with_slots(cpu, slots, RECEIVER_IOWQ_WORKERS_MAX) {
                    Ok(ring) => ring,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let load_on_exit = load.clone();
                let mut ring = ring;
                let mut core = Core {
                    rx,
                    open: true,
                    wake,
                    wake_buf: Some(vec![0u8; 8]),
                    conns: Vec::new(),
                    load,
                    shared,
                };
                // A panic must still reach shut_down: the ring's drop would
                // otherwise wait forever on RECVs from live sockets, holding
                // their (source, shard) registered. It resumes afterwards.
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    event_loop::run(&mut ring, spin, &mut core)
                }));
                if !matches!(run, Ok(Ok(()))) {
                    // Admission must not pick this core any more.
                    load_on_exit.store(CORE_GONE, Ordering::SeqCst);
                }
                if let Ok(Err(e)) = &run {
                    tracing::error!(core = index, "receiver core stopped: {e}");
                }
                core.shut_down(&mut ring);
                if let Err(panic) = run {
                    std::panic::resume_unwind(panic);
                }
            })
            .map_err(|e| format!("starting a receiver core thread: {e}"))?
    };
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(CoreHandle {
            tx,
            wake,
            load,
            thread,
        }),
        Ok(Err(why)) => Err(why),
        Err(_) => Err("a receiver core thread died while starting".into()),
    }
}

/// A receiver core's connections, between turns of its loop.
struct Core {
    rx: mpsc::Receiver<Admitted>,
    /// The acceptor may still admit connections.
    open: bool,
    wake: Arc<EventFd>,
    /// The admission eventfd read's buffer while no read is in flight.
    wake_buf: Option<Vec<u8>>,
    /// Connections by slot; a slot's tokens name it.
    conns: Vec<Option<Conn>>,
    load: Arc<AtomicUsize>,
    shared: Arc<Shared>,
}

impl Reactor for Core {
    type Error = std::io::Error;

    fn turn(&mut self, ring: &mut Ring) -> std::io::Result<Next> {
        self.take_admitted();
        for conn in self.conns.iter_mut().flatten() {
            conn.step(ring);
        }
        for slot in &mut self.conns {
            if slot.as_ref().is_some_and(|c| c.is_done(ring)) {
                slot.take().expect("checked").retire(&self.shared);
                self.load.fetch_sub(1, Ordering::SeqCst);
            }
        }
        if !self.open && self.conns.iter().all(Option::is_none) {
            return Ok(Next::Stop);
        }
        if self.open
            && let Some(buf) = self.wake_buf.take()
            && let Err((_, buf)) = ring.read(&*self.wake, buf, TOKEN_ADMIT)
        {
            self.wake_buf = Some(buf);
        }
        Ok(Next::Wait(None))
    }

    fn dispatch(&mut self, ring: &mut Ring, completion: Completion) -> std::io::Result<()> {
        let Owner::Connection(slot) = completion.token.owner else {
            // An eventfd read only fails if the fd is broken: a bug.
            assert!(
                completion.result >= 0,
                "eventfd read: {}",
                completion.result
            );
            assert_eq!(completion.token, TOKEN_ADMIT, "unknown token");
            self.wake_buf = completion.buf;
            return Ok(());
        };
        let conn = self.conns[slot as usize]
            .as_mut()
            .expect("a completion for a retired connection");
        conn.on_completion(ring, completion);
        Ok(())
    }
}

impl Core {
    /// Places newly admitted connections in free slots.
    fn take_admitted(&mut self) {
        loop {
            let admitted = match self.rx.try_recv() {
                Ok(admitted) => admitted,
                Err(mpsc::TryRecvError::Empty) => return,
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.open = false;
                    return;
                }
            };
            let slot = match self.conns.iter().position(Option::is_none) {
                Some(slot) => slot,
                None => {
                    self.conns.push(None);
                    self.conns.len() - 1
                }
            };
            let owner = Owner::Connection(slot as u32);
            self.conns[slot] = Some(Conn::new(admitted, owner, self.shared.clone()));
        }
    }

    /// Leaves no operation in flight: closes every connection still held
    /// (after an error in the loop) and completes the admission read, so the
    /// ring's drop does not wait forever.
    fn shut_down(&mut self, ring: &mut Ring) {
        for conn in self.conns.iter().flatten() {
            conn.shut_down();
        }
        if self.wake_buf.is_none() {
            let _ = self.wake.write(1);
        }
        // The connections' fds stay open until their operations are over: a
        // linked fdatasync looks its fd up only when it runs.
        let mut sink = Vec::with_capacity(ring.slots());
        while ring.in_flight() > 0 && ring.submit_and_wait(1).is_ok() {
            sink.clear();
            ring.reap(&mut sink);
        }
        self.conns.clear();
    }
}
