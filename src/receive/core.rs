//! A receiver core: one thread, one ring, many connections.
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

use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use nix::sys::eventfd::EventFd;

use super::verify::SocketSource;
use super::{Registration, Shared};
use crate::constants::{
    ACK_SEND_TIMEOUT_MS, RECEIVER_CONNECTIONS_MAX, RECEIVER_IOWQ_WORKERS_MAX,
    RECEIVER_SLOTS_PER_CONNECTION,
};
use crate::io::cpu::pin_current_thread;
use crate::io::{Completion, Io, Kind, Owner, Ring, Timespec, Token};
use crate::protocol::{self, ACK_BYTES, Hello};
use crate::wal::WalWriter;

/// See [`ACK_SEND_TIMEOUT_MS`]; static because the kernel reads it at submit.
static ACK_SEND_TIMEOUT: Timespec = Timespec::new()
    .sec(ACK_SEND_TIMEOUT_MS / 1000)
    .nsec((ACK_SEND_TIMEOUT_MS % 1000) as u32 * 1_000_000);
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
                let mut core = Core {
                    ring,
                    spin,
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
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| core.run()));
                if !matches!(run, Ok(Ok(()))) {
                    // Admission must not pick this core any more.
                    load_on_exit.store(CORE_GONE, Ordering::SeqCst);
                }
                if let Ok(Err(e)) = &run {
                    tracing::error!(core = index, "receiver core stopped: {e}");
                }
                core.shut_down();
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

struct Core {
    ring: Ring,
    /// How long to busy-poll the ring before sleeping.
    spin: Duration,
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

impl Core {
    fn run(&mut self) -> std::io::Result<()> {
        let mut completions: Vec<Completion> = Vec::with_capacity(self.ring.slots());
        loop {
            self.take_admitted();
            for conn in self.conns.iter_mut().flatten() {
                conn.step(&mut self.ring);
            }
            for slot in &mut self.conns {
                if slot.as_ref().is_some_and(|c| c.is_done(&self.ring)) {
                    slot.take().expect("checked").retire(&self.shared);
                    self.load.fetch_sub(1, Ordering::SeqCst);
                }
            }
            if !self.open && self.conns.iter().all(Option::is_none) {
                return Ok(());
            }
            if self.open
                && let Some(buf) = self.wake_buf.take()
                && let Err((_, buf)) = self.ring.read(&*self.wake, buf, TOKEN_ADMIT)
            {
                self.wake_buf = Some(buf);
            }
            if self.spin.is_zero() || !self.ring.submit_and_spin(self.spin)? {
                self.ring.submit_and_wait(1)?;
            }
            completions.clear();
            self.ring.reap(&mut completions);
            for completion in completions.drain(..) {
                let Owner::Connection(slot) = completion.token.owner else {
                    // An eventfd read only fails if the fd is broken: a bug.
                    assert!(
                        completion.result >= 0,
                        "eventfd read: {}",
                        completion.result
                    );
                    assert_eq!(completion.token, TOKEN_ADMIT, "unknown token");
                    self.wake_buf = completion.buf;
                    continue;
                };
                let conn = self.conns[slot as usize]
                    .as_mut()
                    .expect("a completion for a retired connection");
                conn.on_completion(&mut self.ring, completion);
            }
        }
    }

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
    fn shut_down(&mut self) {
        for conn in self.conns.iter().flatten() {
            let _ = conn.stream.shutdown(Shutdown::Both);
        }
        if self.wake_buf.is_none() {
            let _ = self.wake.write(1);
        }
        // The connections' fds stay open until their operations are over: a
        // linked fdatasync looks its fd up only when it runs.
        let mut sink = Vec::with_capacity(self.ring.slots());
        while self.ring.in_flight() > 0 && self.ring.submit_and_wait(1).is_ok() {
            sink.clear();
            self.ring.reap(&mut sink);
        }
        self.conns.clear();
    }
}

/// One connection on a core: its socket, its WAL and its acks.
struct Conn {
    /// Who this connection's completions (its WAL's included) go to.
    owner: Owner,
    peer: SocketAddr,
    hello: Hello,
    stream: TcpStream,
    wal: WalWriter,
    source: SocketSource,
    /// The ack SEND's buffer while none is in flight.
    ack_buf: Option<Vec<u8>>,
    /// A durable seq not yet acknowledged.
    ack_due: Option<u64>,
    /// The socket can take no more acks.
    ack_dead: bool,
    /// The ack SEND's linked timeout has not completed yet.
    ack_timeout_pending: bool,
    /// Bytes of the ack in flight already sent by earlier, short SENDs.
    ack_sent_bytes: usize,
    /// The WAL failed: the connection is shut down and waits for its
    /// operations to complete before it is dropped.
    failed: Option<String>,
    _registration: Registration,
}

impl Conn {
    fn new(admitted: Admitted, owner: Owner, shared: Arc<Shared>) -> Conn {
        let Admitted {
            stream,
            reader,
            peer,
            hello,
            mut wal,
            registration,
        } = admitted;
        wal.set_owner(owner);
        let durable_seq = wal.durable_seq();
        let conn = Conn {
            owner,
            peer,
            hello,
            source: SocketSource::new(reader, shared, durable_seq),
            stream,
            wal,
            ack_buf: Some(Vec::with_capacity(ACK_BYTES)),
            ack_due: None,
            ack_dead: false,
            ack_timeout_pending: false,
            ack_sent_bytes: 0,
            failed: None,
            _registration: registration,
        };
        tracing::info!(source = %conn.hello.source, shard = conn.hello.shard, peer = %conn.peer, "serving");
        conn
    }

    /// One turn of the loop for this connection.
    fn step(&mut self, ring: &mut impl Io) {
        if self.failed.is_none() {
            let staged = loop {
                if let Err(e) = self.source.stage(&mut self.wal, ring) {
                    break Err(e);
                }
                match self.wal.submit(ring) {
                    Ok(submitted) => {
                        if let Some(seq) = submitted.durable_seq {
                            self.ack_due = Some(seq);
                        }
                        // A rotation makes room: stage again.
                        if !submitted.rotated {
                            break Ok(());
                        }
                    }
                    Err(e) => break Err(e),
                }
            };
            match staged {
                Ok(()) => self
                    .source
                    .arm(ring, Token::new(self.owner, Kind::RecordRecv, 0)),
                Err(e) => self.fail(e.to_string()),
            }
        }
        self.send_ack(ring);
    }

    /// Sends the latest durable seq if it moved and no ack is in flight.
    fn send_ack(&mut self, ring: &mut impl Io) {
        if self.ack_dead || self.ack_buf.is_none() {
            return;
        }
        let Some(seq) = self.ack_due else {
            return;
        };
        let mut buf = self.ack_buf.take().expect("checked above");
        buf.clear();
        buf.extend_from_slice(&protocol::encode_ack(seq));
        self.ack_due = None;
        self.push_ack(ring, buf, 0);
    }

    /// Sends `buf[from..]`, the rest of an ack. A shipper that stops reading
    /// must not hold the connection (and the receiver's stop) forever: the
    /// send gives up after ACK_SEND_TIMEOUT_MS.
    fn push_ack(&mut self, ring: &mut impl Io, buf: Vec<u8>, from: usize) {
        self.ack_sent_bytes = from;
        match ring.send_with_timeout(
            &self.stream,
            buf,
            from,
            Token::new(self.owner, Kind::AckSend, 0),
            &ACK_SEND_TIMEOUT,
            Token::new(self.owner, Kind::AckTimeout, 0),
        ) {
            Ok(()) => self.ack_timeout_pending = true,
            Err(_) => panic!("ring full: RECEIVER_SLOTS_PER_CONNECTION covers the ack"),
        }
    }

    fn on_completion(&mut self, ring: &mut impl Io, completion: Completion) {
        let kind = completion.token.kind;
        if kind == Kind::RecordRecv {
            self.source.on_completion(completion);
        } else if kind == Kind::AckTimeout {
            self.ack_timeout_pending = false;
        } else if kind == Kind::AckSend {
            let buf = completion.buf.expect("a send hands its buffer back");
            let sent = self.ack_sent_bytes + completion.result.max(0) as usize;
            if completion.result <= 0 {
                // The shipper is gone or stopped reading (the send timed
                // out): no more acks; it resumes by seq on reconnect.
                self.ack_dead = true;
                let _ = self.stream.shutdown(Shutdown::Both);
                self.ack_buf = Some(buf);
            } else if sent < ACK_BYTES {
                // A nearly full socket buffer took part of it: send the rest
                // before any later ack, or the stream would desync.
                self.push_ack(ring, buf, sent);
            } else {
                self.ack_buf = Some(buf);
            }
        } else if self.failed.is_some() {
            // The WAL is done for; its remaining operations only complete.
        } else {
            match self.wal.on_completion(ring, completion) {
                Ok(Some(seq)) => self.ack_due = Some(seq),
                Ok(None) => {}
                Err(e) => self.fail(e.to_string()),
            }
        }
    }

    fn fail(&mut self, why: String) {
        tracing::warn!(source = %self.hello.source, shard = self.hello.shard, peer = %self.peer,
            "closing connection: storage: {why}");
        self.failed = Some(why);
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Nothing more will happen on this connection and nothing of its is in
    /// flight: everything verified is durable and acknowledged (or the
    /// shipper is gone, or the WAL failed).
    fn is_done(&self, ring: &Ring) -> bool {
        if self.failed.is_some() {
            return ring.in_flight_for(self.owner) == 0;
        }
        self.source.is_finished()
            && self.wal.is_idle()
            && self.ack_buf.is_some()
            && !self.ack_timeout_pending
            && (self.ack_due.is_none() || self.ack_dead)
    }

    fn retire(mut self, shared: &Shared) {
        if self.failed.is_some() {
            return;
        }
        if let Some(e) = self.source.error.take() {
            tracing::warn!(source = %self.hello.source, shard = self.hello.shard, peer = %self.peer,
                "closing connection: {e}");
        }
        let stats = self.wal.into_stats();
        shared
            .remote_durable
            .lock()
            .expect("not poisoned")
            .merge(&stats.append_to_durable_ns);
    }
}
