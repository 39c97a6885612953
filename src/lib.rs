//! ringship: an io_uring write-ahead log and log shipper for Linux.
//!
//! A shard is a pinned thread with its own io_uring, its own WAL directory
//! and its own bounded inbox. Records flow through one module per stage —
//! a source, `frame` (crc32c framing), `wal` (group commit with fdatasync,
//! recovery, a reader by seq, retention), a `sink` (a ringship receiver
//! over TCP: splice, SEND_ZC or copy) and, on the other machine, `receive`
//! (verify, persist, acknowledge) — over `io`, the seam every state machine
//! pushes its operations through. `docs/design.md` draws the data path;
//! `bench` drives all of it under open-loop load and reports the latency of
//! every hop.
//!
//! # The library
//!
//! ```
//! use ringship::{Durability, Receiver, ReceiverConfig, SendMode, Shard, ShardConfig};
//! use ringship::{SinkConfig, TcpConfig};
//!
//! let dir = tempfile::tempdir()?;
//! // A receiver on loopback: it verifies, persists and acknowledges.
//! let receiver = Receiver::spawn(
//!     "127.0.0.1:0".parse().unwrap(),
//!     ReceiverConfig::new(dir.path().join("recv")),
//! )?;
//! // A shard whose WAL ships to it.
//! let mut config = ShardConfig::new(dir.path().join("wal"), 0);
//! config.durability = Durability::Fsync;
//! config.sink = Some(SinkConfig::Tcp(TcpConfig {
//!     peer: receiver.local_addr(),
//!     source: "web-1".into(),
//!     send_mode: SendMode::Splice,
//! }));
//! let mut shard = Shard::spawn(config)?;
//! let ticket = shard.append(b"GET /index.html 200")?;
//! ticket.wait_durable()?; // fdatasync'd here
//! ticket.wait_acked()?; // fdatasync'd at the receiver
//! let report = shard.close()?;
//! assert_eq!(report.acked_seq, Some(ticket.seq()));
//! assert_eq!(receiver.stop()?.records, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! `examples/ship_lines.rs` is a complete program: a receiver and a shard in
//! one process, every line of stdin appended, shipped and acknowledged.
//!
//! # Invariants
//!
//! - A seq is reported durable only when it and every record before it have
//!   been fdatasync'd (or written, with [`Durability::None`]). The watermark
//!   only moves forward, and never ahead of the disk.
//! - Nothing wakes a shard but a completion: no timer, poll or heartbeat
//!   gates a durable record, which is handed to the sink in the loop turn
//!   that made it durable. The only timed waits are the reconnect backoff
//!   and the ack deadline at the end of a run. A spin only lets a shard
//!   look for that completion before it sleeps.
//! - The sink sends only durable bytes; the receiver acks only what its own
//!   fdatasync covers; resume is by seq, so kills lose and duplicate
//!   nothing; retention deletes only acknowledged segments.
//! - Every queue, buffer and in-flight window has a named bound in
//!   [`constants`]; commit buffers, inbox batches, ring slots and histograms
//!   are allocated when a shard starts, and nothing grows with backlog.
//! - A failed fdatasync is fatal for its WAL.
//! - Recovery cuts a torn tail and refuses corruption anywhere else.
//! - `unsafe` lives only in the I/O layer.

#![deny(unsafe_code)]

pub use receive::{Receiver, ReceiverConfig, ReceiverHandle, ReceiverTotals};
pub use shard::{
    DurableListener, Error, Shard, ShardConfig, ShardHandle, ShardReport, SinkConfig, Ticket,
};
pub use sink::tcp::{SendMode, TcpConfig};
pub use wal::{Durability, WalIo};

pub mod constants;

mod bench;
mod cli;
mod frame;
mod io;
mod latency;
mod protocol;
mod receive;
mod report;
mod shard;
#[cfg(test)]
mod sim;
mod sink;
mod source;
mod wal;

/// What the command line, the integration tests and the benches reach
/// beyond the public API. Not part of it: it changes without notice.
#[doc(hidden)]
pub mod internals {
    pub use crate::bench::output::{write_hgrm, write_hlog};
    pub use crate::cli::main as cli_main;
    pub use crate::io::Owner;
    pub use crate::receive::Stopper;

    pub mod frame {
        pub use crate::frame::{
            DecodeError, Kind, RecordRef, Records, Seed, Stamp, decode, decode_seeded, encode_into,
            encode_stamped_into, encoded_len_bytes, now_ns,
        };
    }

    pub mod source {
        pub use crate::source::lines::{IngestReport, LineOptions, feed_lines, feed_lines_with};
    }

    pub mod shard {
        pub use crate::shard::{Batch, InboxSender};
    }

    pub mod latency {
        pub use crate::latency::{INTERVAL_NS, Recorder, Window, histogram};
    }

    pub mod protocol {
        pub use crate::protocol::{
            ACK_BYTES, HELLO_BYTES, HELLO_V2_BYTES, Hello, WELCOME_BYTES, WELCOME_V2_BYTES,
            WelcomeStatus, decode_ack, decode_segment_frame, decode_welcome, encode_abort,
            encode_segment_frame, welcome_rest_bytes,
        };
    }

    pub mod wal {
        pub use crate::wal::{Durability, WalError, WalWriter};

        pub mod lock {
            pub use crate::wal::lock::{DirLock, LockError};
        }

        pub mod watermarks {
            pub use crate::wal::watermarks::{Recorded, read, write};
        }

        pub mod recovery {
            pub use crate::wal::recovery::{RecoveryError, ShardScan, scan_shard};
        }

        pub mod segment {
            pub use crate::wal::segment::{
                SegmentHeader, WalId, create_segment, segment_file_name, shard_dir,
            };
        }
    }
}
