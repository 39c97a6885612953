//! ringship: an io_uring write-ahead log and log shipper for Linux.
//!
//! Each core owns a shard: a pinned thread with its own io_uring, its own WAL
//! directory and its own bounded inbox. Records flow through one module per
//! stage:
//!
//! ```text
//! producer (stdin lines: ingest; bench generators)
//!          bounded inbox; an eventfd write wakes the core
//!   ▼
//! frame    header { crc32c, len, seq, append_ts_ns } + payload
//!   ▼
//! wal      staged into a commit buffer; group commit = write linked to
//!          fdatasync on the core's ring; 2 chains in flight (one with
//!          O_DIRECT segments, `zc`); segments preallocated, named by first
//!          seq, recovered by scanning
//!   ▼      the durable watermark advances → core::DurableListener, same loop turn
//! ship     in that same turn, [shipped, durable): io_uring SPLICE page cache →
//!          pipe → socket (default), SEND_ZC straight from the O_DIRECT
//!          commit buffer that wrote the bytes (zc), or pread + SEND (copy);
//!          acks arrive on an io_uring RECV that is always posted
//!   ▼      TCP: hello/welcome (resume by seq), WAL bytes as-is, cumulative acks
//! receive  N pinned per-core rings, each serving many connections: RECV,
//!          verify (length bound, crc32c, seq continuity), append the bytes
//!          unchanged to the connection's WAL, ack (SEND) after fdatasync
//! ```
//!
//! On top of the data path, [`bench`](mod@bench) drives the whole pipeline under
//! open-loop load with an in-process receiver and reports the latency of
//! every hop ([`latency`]), and [`compare`] gates CI on regressions:
//!
//! ```text
//! generator (intended-time stamps) → WAL → ship → receive
//!   append → durable · append → sent · append → acked · append → remote durable
//! ```
//!
//! # Invariants
//!
//! - A seq is reported durable only when it and every record before it have
//!   been fdatasync'd (or written, in `--durability none`). The watermark only
//!   moves forward, and never ahead of the disk.
//! - Nothing wakes a core but a completion: no timer, poll or heartbeat
//!   gates a durable record. The only timed waits are the reconnect backoff
//!   and the ack deadline at the end of a `ship` run. `--spin-us` only lets
//!   a core look for that completion before it sleeps: a spin ends at the
//!   first completion on its ring, so it never waits past one.
//! - The shipper sends only durable bytes; the receiver acks only what its
//!   own fdatasync covers; resume is by seq, so kills lose and duplicate
//!   nothing; retention deletes only acknowledged segments.
//! - Every queue, buffer and in-flight window has a named bound in
//!   [`constants`]; commit buffers, inbox batches, ring slots and histograms
//!   are allocated when a core starts, and nothing grows with backlog.
//! - A failed fdatasync is fatal for its WAL.
//! - Recovery cuts a torn tail and refuses corruption anywhere else (see
//!   [`wal::recovery`]).
//! - `unsafe` lives only in [`io`].
//!
//! # Modules, in data-path order
//!
//! - [`ingest`]: producers (stdin lines) → [`inbox`]
//! - [`frame`]: the record format
//! - [`wal`]: segments, group commit ([`wal::writer`]), recovery
//! - [`ship`]: the shipper, pumped by the core loop
//! - [`protocol`]: hello, welcome, data and ack on the wire
//! - [`receive`]: the receiver: admission, then per-core rings serving many
//!   connections
//! - [`core`]: the shipping side's per-core loop tying its inbox, WAL,
//!   shipper and ring together
//! - [`latency`]: per-stage HdrHistogram recorders (warmup cut, 1 s intervals)
//! - [`bench`](mod@bench), [`compare`]: the benchmark and the regression gate
//! - [`io`]: the ring, completion slots, pinning — the only `unsafe`
//! - [`constants`]: every bound

#![deny(unsafe_code)]

pub use receive::{Receiver, ReceiverConfig, ReceiverHandle, ReceiverTotals};
pub use shard::{
    DurableListener, Error, Shard, ShardConfig, ShardHandle, ShardReport, SinkConfig, Ticket,
};
pub use sink::tcp::{SendMode, TcpConfig};
pub use wal::{Durability, WalIo};

pub mod bench;
pub mod cli;
pub mod constants;
pub mod frame;
pub mod io;
pub mod latency;
pub mod protocol;
pub mod receive;
pub mod report;
pub mod shard;
pub mod sink;
pub mod source;
pub mod wal;
