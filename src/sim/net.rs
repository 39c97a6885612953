//! A simulated network behind the I/O seam, between one shipper and one
//! receiver: the sink's and the receiver connection's sends and receives
//! are held and completed on the simulated clock, shortened, delayed or
//! reset as the seed says.
//!
//! Each connection is a real socket pair that carries no data: its
//! descriptors name the connection (by socket inode, so that a duplicated
//! descriptor names the same end), and its real shutdowns are how the
//! state machines close it (a peek that returns 0 is an end of stream; a
//! zero-byte send that fails is a write side shut). The bytes travel here,
//! in two pipes with a delivery delay.
//!
//! - **Sends** complete after a latency, short at a random split point
//!   when the seed says; the bytes sent reach the other end later.
//! - **Receives** complete when bytes have arrived (possibly fewer than
//!   arrived), or with 0 once the end reads an end of stream and nothing is
//!   left to read.
//! - **Resets** lose the bytes in flight and fail every pending operation
//!   on the connection (-ECONNRESET).
//! - **Half-open peers** (a partition, a peer that lost power): bytes sent
//!   either way vanish without an error, until the connection is dropped
//!   [`TCP_USER_TIMEOUT_MS`] later, as keepalive and TCP_USER_TIMEOUT drop
//!   it on a real socket.
//! - **Stale operations**: a dead connection's operations complete after a
//!   new one exists, as on a real ring.
//!
//! Not modelled: an ack send's timeout firing (acks always go), reordering
//! within a stream (TCP never does).

use std::collections::{HashMap, VecDeque};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, RawFd};

use super::rng::Rng;
use crate::constants::TCP_USER_TIMEOUT_MS;
use crate::io::{Completion, Token};

/// Which host an operation belongs to, and which end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Side {
    Shipper = 0,
    Receiver = 1,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::Shipper => Side::Receiver,
            Side::Receiver => Side::Shipper,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NetFaults {
    pub short_send: f64,
    pub short_recv: f64,
    pub latency_spike: f64,
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NetStats {
    pub connections: u64,
    pub sends: u64,
    pub short_sends: u64,
    pub recvs: u64,
    pub short_recvs: u64,
    pub resets: u64,
    pub half_open: u64,
    pub bytes_lost_in_flight: u64,
    pub stale_completions: u64,
    pub latency_spikes: u64,
    /// Stop notices the receiver got out to the shipper.
    pub stop_notices: u64,
}

impl NetStats {
    pub fn add(&mut self, o: &NetStats) {
        self.connections += o.connections;
        self.sends += o.sends;
        self.short_sends += o.short_sends;
        self.recvs += o.recvs;
        self.short_recvs += o.short_recvs;
        self.resets += o.resets;
        self.half_open += o.half_open;
        self.bytes_lost_in_flight += o.bytes_lost_in_flight;
        self.stale_completions += o.stale_completions;
        self.latency_spikes += o.latency_spikes;
        self.stop_notices += o.stop_notices;
    }
}

#[derive(Default)]
struct Pipe {
    /// (delivery time, bytes) in send order.
    in_flight: VecDeque<(u64, Vec<u8>)>,
    arrived: VecDeque<u8>,
}

struct Link {
    /// Bytes travelling toward each side.
    to: [Pipe; 2],
    reset: bool,
    /// Half-open: bytes sent vanish, until the reset due then.
    silent_until: Option<u64>,
    /// The sim's own handles on both ends, to read their state and to
    /// close the connection when a side dies.
    ends: [TcpStream; 2],
    /// Bytes the shipper sent that are not a whole frame yet.
    shipped: Vec<u8>,
}

enum What {
    Send {
        link: usize,
        buf: Vec<u8>,
        from: usize,
        timeout: Option<Token>,
    },
    Recv {
        link: usize,
        buf: Vec<u8>,
        from: usize,
    },
    /// The sink's connect wake-up read: completed when the simulator
    /// answers the attempt.
    Wake { buf: Vec<u8> },
    /// An ack send's linked timeout, due right after its send.
    Timeout,
}

struct Op {
    id: u64,
    side: Side,
    token: Token,
    due_ns: u64,
    what: What,
}

/// A frame the shipper sent: its seq (0 for a Segment or Abort frame).
pub(crate) type Shipped = u64;

pub(crate) struct Net {
    rng: Rng,
    pub faults: NetFaults,
    pub stats: NetStats,
    links: Vec<Link>,
    /// A socket's inode → (link, side).
    by_socket: HashMap<u64, (usize, Side)>,
    ops: Vec<Op>,
    next_id: u64,
    /// Completions ready to hand out (sends and timeouts just processed).
    pub now_ns: u64,
}

/// A socket's inode: the same for every descriptor of it (a duplicate
/// included), and readable after a shutdown (`socket:[INODE]`).
fn socket_id(fd: RawFd) -> u64 {
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).expect("a descriptor's link");
    let name = link.to_string_lossy();
    name.strip_prefix("socket:[")
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("descriptor {fd} is {name}, not a socket"))
}

/// True if a read on the socket would return end of stream now (the peer
/// shut down or closed, or this end shut its read side).
fn at_eof(stream: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    use nix::sys::socket::{MsgFlags, recv};
    matches!(
        recv(
            stream.as_raw_fd(),
            &mut b,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT
        ),
        Ok(0)
    )
}

/// True if this end can send no more (it shut its write side, or the peer
/// is gone): a zero-byte send says so without sending anything.
fn write_shut(stream: &TcpStream) -> bool {
    use nix::sys::socket::{MsgFlags, send};
    send(
        stream.as_raw_fd(),
        &[],
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
    )
    .is_err()
}

impl Net {
    pub fn new(rng: Rng, faults: NetFaults) -> Net {
        Net {
            rng,
            faults,
            stats: NetStats::default(),
            links: Vec::new(),
            by_socket: HashMap::new(),
            ops: Vec::new(),
            next_id: 0,
            now_ns: 0,
        }
    }

    fn latency_ns(&mut self) -> u64 {
        if self.rng.chance(self.faults.latency_spike) {
            self.stats.latency_spikes += 1;
            return self.rng.between(10_000_000, 300_000_000);
        }
        self.rng.between(5_000, 200_000)
    }

    /// A new connection: (the shipper's end, the receiver's end, its
    /// index). The ends are a Unix socket pair under the `TcpStream` type
    /// the state machines hold: a shutdown of one end is visible at the
    /// other at once (a loopback TCP FIN may be processed later, by a
    /// softirq, which would let a seed's replay differ).
    pub fn connect(&mut self) -> (TcpStream, TcpStream, usize) {
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
        let client = TcpStream::from(std::os::fd::OwnedFd::from(a));
        let server = TcpStream::from(std::os::fd::OwnedFd::from(b));
        let index = self.links.len();
        for (stream, side) in [(&client, Side::Shipper), (&server, Side::Receiver)] {
            self.by_socket
                .insert(socket_id(stream.as_raw_fd()), (index, side));
        }
        self.links.push(Link {
            to: [Pipe::default(), Pipe::default()],
            reset: false,
            silent_until: None,
            ends: [
                client.try_clone().expect("clone"),
                server.try_clone().expect("clone"),
            ],
            shipped: Vec::new(),
        });
        self.stats.connections += 1;
        (client, server, index)
    }

    /// Shuts `side`'s end of connection `link` (its process let it go).
    pub fn shut_end(&mut self, link: usize, side: Side) {
        let _ = self.links[link].ends[side as usize].shutdown(Shutdown::Both);
    }

    fn link_of(&self, fd: &impl AsRawFd) -> (usize, Side) {
        *self
            .by_socket
            .get(&socket_id(fd.as_raw_fd()))
            .expect("an operation on a simulated connection")
    }

    fn hold(&mut self, side: Side, token: Token, due_ns: u64, what: What) {
        let id = self.next_id;
        self.next_id += 1;
        self.ops.push(Op {
            id,
            side,
            token,
            due_ns,
            what,
        });
    }

    pub fn push_send(
        &mut self,
        side: Side,
        fd: &impl AsRawFd,
        buf: Vec<u8>,
        from: usize,
        token: Token,
        timeout: Option<Token>,
    ) {
        let (link, _) = self.link_of(fd);
        let due = self.now_ns + self.latency_ns();
        self.hold(
            side,
            token,
            due,
            What::Send {
                link,
                buf,
                from,
                timeout,
            },
        );
    }

    pub fn push_recv(
        &mut self,
        side: Side,
        fd: &impl AsRawFd,
        buf: Vec<u8>,
        from: usize,
        token: Token,
    ) {
        let (link, _) = self.link_of(fd);
        let due = self.now_ns;
        self.hold(side, token, due, What::Recv { link, buf, from });
    }

    pub fn push_wake(&mut self, side: Side, buf: Vec<u8>, token: Token) {
        self.hold(side, token, u64::MAX, What::Wake { buf });
    }

    /// Completes the connect wake-up read of `side` (the attempt's result
    /// is on its channel).
    pub fn complete_wake(&mut self, side: Side) -> Option<(Side, Completion)> {
        let at = self
            .ops
            .iter()
            .position(|o| o.side == side && matches!(o.what, What::Wake { .. }))?;
        let op = self.ops.remove(at);
        let What::Wake { buf } = op.what else {
            unreachable!()
        };
        Some((
            side,
            Completion {
                token: op.token,
                result: 8,
                buf: Some(buf),
                more: false,
                notif: false,
            },
        ))
    }

    /// Operations of `side` with `owner`'s tokens in flight.
    pub fn in_flight_for(&self, side: Side, owner: crate::io::Owner) -> usize {
        self.ops
            .iter()
            .filter(|o| o.side == side && o.token.owner == owner)
            .count()
    }

    /// Resets connection `link`: the bytes in flight are lost, and every
    /// operation on it fails.
    pub fn reset(&mut self, link: usize) {
        let l = &mut self.links[link];
        if l.reset {
            return;
        }
        l.reset = true;
        for pipe in &mut l.to {
            let lost: usize = pipe.in_flight.iter().map(|(_, b)| b.len()).sum();
            self.stats.bytes_lost_in_flight += lost as u64;
            pipe.in_flight.clear();
        }
        for end in &l.ends {
            let _ = end.shutdown(Shutdown::Both);
        }
        self.stats.resets += 1;
    }

    /// Makes connection `link` half-open: whatever either side sends from
    /// now on vanishes, and the connection is reset when the peer's
    /// silence is noticed.
    pub fn half_open(&mut self, link: usize) {
        let l = &mut self.links[link];
        if l.reset || l.silent_until.is_some() {
            return;
        }
        for pipe in &mut l.to {
            let lost: usize = pipe.in_flight.iter().map(|(_, b)| b.len()).sum();
            self.stats.bytes_lost_in_flight += lost as u64;
            pipe.in_flight.clear();
        }
        l.silent_until = Some(self.now_ns + u64::from(TCP_USER_TIMEOUT_MS) * 1_000_000);
        self.stats.half_open += 1;
    }

    /// Closes `side`'s end of every connection (that side's process died).
    pub fn close_side(&mut self, side: Side) {
        for l in &mut self.links {
            let _ = l.ends[side as usize].shutdown(Shutdown::Both);
        }
        self.ops.retain(|o| o.side != side);
    }

    /// The newest connection, if any.
    pub fn newest(&self) -> Option<usize> {
        self.links.len().checked_sub(1)
    }

    /// When the next thing happens on the network, if anything is pending.
    pub fn next_due(&self) -> Option<u64> {
        let sends = self
            .ops
            .iter()
            .filter(|o| !matches!(o.what, What::Wake { .. } | What::Recv { .. }))
            .map(|o| o.due_ns);
        let deliveries = self
            .links
            .iter()
            .flat_map(|l| l.to.iter())
            .filter_map(|p| p.in_flight.front().map(|(t, _)| *t));
        let recvs = self
            .ops
            .iter()
            .filter(|o| matches!(o.what, What::Recv { .. }) && self.recv_ready(o))
            .map(|o| o.due_ns.max(self.now_ns));
        let silences = self
            .links
            .iter()
            .filter(|l| !l.reset)
            .filter_map(|l| l.silent_until);
        sends.chain(deliveries).chain(recvs).chain(silences).min()
    }

    fn recv_ready(&self, op: &Op) -> bool {
        let What::Recv { link, .. } = op.what else {
            return false;
        };
        let l = &self.links[link];
        let pipe = &l.to[op.side as usize];
        l.reset
            || !pipe.arrived.is_empty()
            || (pipe.in_flight.is_empty() && at_eof(&l.ends[op.side as usize]))
    }

    /// Moves bytes whose time has come into their pipes, and resets the
    /// half-open connections whose silence is noticed now.
    fn deliver(&mut self) {
        let now = self.now_ns;
        let noticed: Vec<usize> = (0..self.links.len())
            .filter(|&k| {
                !self.links[k].reset && self.links[k].silent_until.is_some_and(|t| t <= now)
            })
            .collect();
        for k in noticed {
            self.reset(k);
        }
        for l in &mut self.links {
            for pipe in &mut l.to {
                while pipe.in_flight.front().is_some_and(|(t, _)| *t <= now) {
                    let (_, bytes) = pipe.in_flight.pop_front().expect("checked");
                    pipe.arrived.extend(bytes);
                }
            }
        }
    }

    /// Completes one operation that is due at or before `until`, advancing
    /// the clock to it; the shipper's bytes sent go to `shipped`.
    pub fn complete_due(
        &mut self,
        until: u64,
        shipped: &mut Vec<Shipped>,
    ) -> Option<(Side, Completion)> {
        self.deliver();
        // Ready receives first (at the current time), then the earliest
        // send or timeout.
        let ready = (0..self.ops.len())
            .filter(|&i| {
                matches!(self.ops[i].what, What::Recv { .. }) && self.recv_ready(&self.ops[i])
            })
            .min_by_key(|&i| self.ops[i].id);
        let at = match ready {
            Some(i) => i,
            None => {
                let i = (0..self.ops.len())
                    .filter(|&i| matches!(self.ops[i].what, What::Send { .. } | What::Timeout))
                    .min_by_key(|&i| (self.ops[i].due_ns, self.ops[i].id))?;
                if self.ops[i].due_ns > until {
                    return None;
                }
                self.now_ns = self.now_ns.max(self.ops[i].due_ns);
                i
            }
        };
        let op = self.ops.remove(at);
        let side = op.side;
        let (result, buf) = match op.what {
            What::Timeout => (-libc::ECANCELED, None),
            What::Wake { .. } => unreachable!("completed by complete_wake"),
            What::Recv {
                link,
                mut buf,
                from,
            } => {
                self.stats.recvs += 1;
                let l = &mut self.links[link];
                let pipe = &mut l.to[side as usize];
                if l.reset {
                    (-libc::ECONNRESET, Some(buf))
                } else if pipe.arrived.is_empty() {
                    (0, Some(buf))
                } else {
                    let room = buf.len() - from;
                    let mut n = room.min(pipe.arrived.len());
                    if n > 1 && self.rng.chance(self.faults.short_recv) {
                        self.stats.short_recvs += 1;
                        n = self.rng.between(1, n as u64 - 1) as usize;
                    }
                    for (dst, src) in buf[from..from + n].iter_mut().zip(pipe.arrived.drain(..n)) {
                        *dst = src;
                    }
                    (n as i32, Some(buf))
                }
            }
            What::Send {
                link,
                buf,
                from,
                timeout,
            } => {
                self.stats.sends += 1;
                let len = buf.len() - from;
                let l = &self.links[link];
                let result = if l.reset {
                    -libc::ECONNRESET
                } else if write_shut(&l.ends[side as usize]) {
                    -libc::EPIPE
                } else {
                    let mut n = len;
                    if n > 1 && self.rng.chance(self.faults.short_send) {
                        self.stats.short_sends += 1;
                        n = self.rng.between(1, n as u64 - 1) as usize;
                    }
                    let deliver_at = self.now_ns + self.latency_ns();
                    let bytes = buf[from..from + n].to_vec();
                    let l = &mut self.links[link];
                    if side == Side::Shipper {
                        l.shipped.extend_from_slice(&bytes);
                        drain_frames(&mut l.shipped, shipped);
                    }
                    if side == Side::Receiver && bytes.starts_with(&crate::protocol::STOP_MAGIC) {
                        self.stats.stop_notices += 1;
                    }
                    if l.silent_until.is_some() {
                        // Into the void: the sender cannot tell.
                        self.stats.bytes_lost_in_flight += n as u64;
                    } else {
                        l.to[side.other() as usize]
                            .in_flight
                            .push_back((deliver_at, bytes));
                    }
                    n as i32
                };
                if let Some(token) = timeout {
                    let due = self.now_ns;
                    self.hold(side, token, due, What::Timeout);
                }
                (result, Some(buf))
            }
        };
        Some((
            side,
            Completion {
                token: op.token,
                result,
                buf,
                more: false,
                notif: false,
            },
        ))
    }
}

/// Takes the whole frames off the front of `bytes` (records and seq-0
/// frames share the 24-byte header), noting each frame's seq.
fn drain_frames(bytes: &mut Vec<u8>, shipped: &mut Vec<Shipped>) {
    let mut at = 0;
    while let Some(header) = crate::frame::Header::read(&bytes[at..]) {
        let len = header.record_len_bytes();
        if bytes.len() - at < len {
            break;
        }
        shipped.push(header.seq);
        at += len;
    }
    bytes.drain(..at);
}
