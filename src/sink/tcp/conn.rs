//! The TCP sink's connection: the connect and handshake (off the loop, on a
//! short-lived thread), the reconnect backoff, and the fds a dead
//! connection leaves open until its operations have completed.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::constants::{
    CONNECT_TIMEOUT_MS, HANDSHAKE_TIMEOUT_MS, RECONNECT_BACKOFF_MAX_MS, RECONNECT_BACKOFF_MIN_MS,
};
use crate::io::{Io, Kind, Owner, Token};
use crate::protocol::{self, Hello, WELCOME_BYTES};

/// The connect thread's wake-up read.
const TOKEN_CONNECTED: Token = Token::new(Owner::Sink, Kind::Connected, 0);

/// A splice pipe: (read end, write end, capacity).
pub(super) type Pipe = (OwnedFd, OwnedFd, usize);

/// Why a connect attempt failed; the sink retries after a backoff.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("setting socket options: {0}")]
    Socket(std::io::Error),
    #[error("sending the hello: {0}")]
    Hello(std::io::Error),
    #[error("reading the welcome: {0}")]
    Welcome(std::io::Error),
    #[error(transparent)]
    Refused(#[from] protocol::ProtocolError),
    /// The receiver cannot take this WAL at all (another WAL id, an older
    /// protocol): retrying cannot help.
    #[error(transparent)]
    Fatal(protocol::ProtocolError),
    #[error("the connect thread left no result")]
    Lost,
    #[error("cannot start a connect thread: {0}")]
    Thread(std::io::Error),
}

/// What a connect attempt gives: the stream and the peer's durable seq.
pub(crate) type Connected = Result<(TcpStream, u64), HandshakeError>;

/// Connects and handshakes, blocking, bounded by the connect and handshake
/// timeouts. Runs on the connect thread.
fn handshake(peer: SocketAddr, hello: &Hello) -> Connected {
    use HandshakeError::{Connect, Hello as SendHello, Socket, Welcome};
    let mut stream = TcpStream::connect_timeout(&peer, Duration::from_millis(CONNECT_TIMEOUT_MS))
        .map_err(Connect)?;
    let timeout = Some(Duration::from_millis(HANDSHAKE_TIMEOUT_MS));
    stream.set_read_timeout(timeout).map_err(Socket)?;
    stream.set_write_timeout(timeout).map_err(Socket)?;
    let _ = stream.set_nodelay(true);
    protocol::set_keepalive(&stream);
    stream.write_all(&hello.encode()).map_err(SendHello)?;
    let mut prefix = [0u8; WELCOME_BYTES];
    stream.read_exact(&mut prefix).map_err(Welcome)?;
    let mut welcome = prefix.to_vec();
    welcome.resize(WELCOME_BYTES + protocol::welcome_rest_bytes(&prefix)?, 0);
    stream
        .read_exact(&mut welcome[WELCOME_BYTES..])
        .map_err(Welcome)?;
    let welcome = protocol::decode_welcome(&welcome)?;
    let peer_seq =
        protocol::accept_welcome(&welcome, hello.wal_id).map_err(|e| match e {
            e @ (protocol::ProtocolError::OtherWal { .. }
            | protocol::ProtocolError::Version { .. }) => HandshakeError::Fatal(e),
            e => HandshakeError::Refused(e),
        })?;
    stream.set_read_timeout(None).map_err(Socket)?;
    stream.set_write_timeout(None).map_err(Socket)?;
    Ok((stream, peer_seq))
}

/// Who makes a connection: a short-lived thread doing a real connect and
/// handshake, or (test builds) the simulator, which takes the attempt from
/// a queue, answers it and completes the wake-up read itself.
pub(crate) enum Connector {
    Thread,
    #[cfg(test)]
    Sim(Arc<std::sync::Mutex<std::collections::VecDeque<SimAttempt>>>),
}

/// A connect attempt for the simulator to answer: the result goes on `tx`.
#[cfg(test)]
pub(crate) struct SimAttempt {
    pub hello: Hello,
    pub tx: Sender<Connected>,
}

/// What a dead connection leaves open until its operations complete: SPLICE
/// looks its fds up when it runs, so closing them earlier could let a
/// reused fd number (a new segment, another socket) receive bytes.
#[allow(dead_code)] // held only for the fds it keeps open
struct Held {
    stream: TcpStream,
    file: Option<File>,
    pipe: Option<Pipe>,
}

/// The connection and everything about (re)making it.
pub(super) struct Link {
    peer: SocketAddr,
    pub stream: Option<TcpStream>,
    /// Bumped at every connect and disconnect: a completion whose token
    /// carries another generation belongs to a dead connection.
    pub generation: u64,
    backoff_ms: u64,
    retry_at: Option<Instant>,
    jitter: u64,
    /// The connect thread's wake-up, its result channel, and whether an
    /// attempt (and its eventfd read on the ring) is under way.
    wake: Arc<EventFd>,
    tx: Sender<Connected>,
    rx: Receiver<Connected>,
    pending: bool,
    read_buf: Option<Vec<u8>>,
    /// A finished attempt, for the sink (which has the WAL) to complete.
    done: Option<Connected>,
    held: Option<Held>,
    /// Splices of dead connections whose completion is still due.
    pub stale_ops: usize,
    pub connector: Connector,
    /// When the live connection was made.
    connected_at: Option<Instant>,
    /// The peer said it stopped storing (a Stop notice).
    stopped: bool,
}

impl Link {
    pub fn new(peer: SocketAddr) -> std::io::Result<Link> {
        let (tx, rx) = channel();
        Ok(Link {
            peer,
            stream: None,
            generation: 0,
            backoff_ms: RECONNECT_BACKOFF_MIN_MS,
            retry_at: None,
            jitter: crate::io::clock::jitter_seed(),
            wake: Arc::new(EventFd::from_flags(EfdFlags::EFD_CLOEXEC)?),
            tx,
            rx,
            pending: false,
            read_buf: Some(vec![0u8; 8]),
            done: None,
            held: None,
            stale_ops: 0,
            connector: Connector::Thread,
            connected_at: None,
            stopped: false,
        })
    }

    /// A token of this connection's generation.
    pub fn token(&self, kind: Kind) -> Token {
        Token::new(Owner::Sink, kind, self.generation as u32)
    }

    /// True if a completion with `token` belongs to the live connection.
    pub fn is_current(&self, token: Token) -> bool {
        token.index == self.generation as u32 && self.stream.is_some()
    }

    /// When the loop must wake for the next attempt.
    pub fn wake_at(&self) -> Option<Instant> {
        if self.stream.is_none() && !self.pending && self.done.is_none() {
            self.retry_at
        } else {
            None
        }
    }

    /// True if no attempt may start yet (backoff).
    pub fn backing_off(&self) -> bool {
        self.retry_at.is_some_and(|t| crate::io::clock::now() < t)
    }

    pub fn schedule_retry(&mut self) {
        // xorshift jitter: up to half the backoff again, so many shippers
        // that lost one receiver do not return in lockstep.
        self.jitter ^= self.jitter << 13;
        self.jitter ^= self.jitter >> 7;
        self.jitter ^= self.jitter << 17;
        let jitter_ms = self.jitter % (self.backoff_ms / 2 + 1);
        self.retry_at =
            Some(crate::io::clock::now() + Duration::from_millis(self.backoff_ms + jitter_ms));
        self.backoff_ms = (self.backoff_ms * 2).min(RECONNECT_BACKOFF_MAX_MS);
    }

    /// Starts a connect attempt on a short-lived thread: the connect and
    /// handshake block (up to CONNECT_TIMEOUT_MS + HANDSHAKE_TIMEOUT_MS
    /// against a peer that drops packets), so the loop keeps committing, and
    /// the thread's eventfd write wakes it with the result. The dead
    /// connection's fds are let go first: the caller starts no attempt
    /// while its operations are in flight.
    pub fn start_connect(&mut self, io: &mut impl Io, hello: Hello) {
        if self.pending {
            return;
        }
        self.held = None;
        let Some(buf) = self.read_buf.take() else {
            return;
        };
        if let Err((_, buf)) = io.read(&*self.wake, buf, TOKEN_CONNECTED) {
            self.read_buf = Some(buf);
            self.schedule_retry();
            return;
        }
        self.pending = true;
        let peer = self.peer;
        let tx = self.tx.clone();
        let wake = self.wake.clone();
        match &self.connector {
            Connector::Thread => {
                let spawned = std::thread::Builder::new()
                    .name("ringship-connect".into())
                    .spawn(move || {
                        let _ = tx.send(handshake(peer, &hello));
                        let _ = wake.write(1);
                    });
                if let Err(e) = spawned {
                    // Complete the read ourselves; the failure is reported with it.
                    let _ = self.tx.send(Err(HandshakeError::Thread(e)));
                    let _ = self.wake.write(1);
                }
            }
            #[cfg(test)]
            Connector::Sim(attempts) => attempts
                .lock()
                .expect("not poisoned")
                .push_back(SimAttempt { hello, tx }),
        }
    }

    /// The connect thread's wake-up completed: its result is ready.
    pub fn on_connected(&mut self, buf: Option<Vec<u8>>) {
        self.read_buf = buf;
        self.pending = false;
        self.done = Some(self.rx.try_recv().unwrap_or(Err(HandshakeError::Lost)));
    }

    /// A finished attempt's result, once.
    pub fn take_result(&mut self) -> Option<Connected> {
        self.done.take()
    }

    /// `stream` is the live connection now. The backoff is not reset
    /// yet: a receiver that accepts and then stops (its disk is full) would
    /// otherwise be retried at the shortest interval for ever. It resets
    /// when the peer acknowledges something new ([`Link::progressed`]), or
    /// when a connection that lived at least the longest backoff ends
    /// without a Stop notice.
    pub fn connected(&mut self, stream: TcpStream) {
        self.generation += 1;
        self.stream = Some(stream);
        self.retry_at = None;
        self.connected_at = Some(crate::io::clock::now());
        self.stopped = false;
    }

    /// The peer sent a Stop notice: its connection's end must not reset
    /// the backoff.
    pub fn stopped_by_peer(&mut self) {
        self.stopped = true;
    }

    /// The peer acknowledged something new: the next reconnect starts from
    /// the shortest backoff again.
    pub fn progressed(&mut self) {
        self.backoff_ms = RECONNECT_BACKOFF_MIN_MS;
    }

    /// Shuts the connection down: its reads and sends still in flight
    /// complete (as stale completions, their buffers handed back), and its
    /// fds — with the segment `file` and `pipe` its splices may name — stay
    /// open until they have. Returns whether there was a connection.
    pub fn drop_connection(&mut self, file: Option<File>, pipe: Option<Pipe>) -> bool {
        let had = match self.stream.take() {
            Some(stream) => {
                let _ = stream.shutdown(Shutdown::Both);
                self.held = Some(Held { stream, file, pipe });
                true
            }
            None => false,
        };
        // A connection that served a while and ended without a Stop notice
        // (an idle timeout, a blip) is retried at once, whatever the
        // backoff grew to before it.
        let lived = self.connected_at.take().is_some_and(|t| {
            crate::io::clock::now().saturating_duration_since(t)
                >= Duration::from_millis(RECONNECT_BACKOFF_MAX_MS)
        });
        if lived && !std::mem::take(&mut self.stopped) {
            self.backoff_ms = RECONNECT_BACKOFF_MIN_MS;
        }
        self.generation += 1;
        self.schedule_retry();
        had
    }

    /// Closes the connection at the end of a run.
    pub fn close(&mut self) {
        if let Some(stream) = self.stream.take() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        if self.pending {
            // Complete the wake-up read now, so the ring can be dropped; the
            // connect thread's late result goes nowhere.
            let _ = self.wake.write(1);
        }
        self.generation += 1;
    }
}
