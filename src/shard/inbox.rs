//! The bounded inbox through which a producer hands records to a core.
//!
//! Records travel in fixed-size [`Batch`]es. There are [`INBOX_BATCHES_COUNT`]
//! of them per core, allocated once: a producer takes a free batch, fills it,
//! and sends it; the core drains it and sends it back. When every batch is
//! queued or being drained the producer blocks, which is the backpressure that
//! keeps memory fixed however far the disk or the peer falls behind.
//!
//! After each send the producer writes the core's eventfd. The core always has
//! a read of that eventfd in flight on its ring, so the write wakes it at once;
//! no timer or poll is involved.
//!
//! Batch layout, repeated: `len_kind: u32 LE | append_ts_ns: u64 LE | payload`,
//! where `len_kind` packs the payload length, the record kind and the
//! continuation flag as a record's length field does (frame.rs).

use std::cell::Cell;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};

use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::constants::{INBOX_BATCH_BYTES, INBOX_BATCHES_COUNT, INBOX_ENTRY_HEADER_BYTES};
use crate::frame::{Kind, TooLarge, check_payload, pack_len_kind, unpack_len_kind};

/// One entry of a batch, as the core stages it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub append_ts_ns: u64,
    pub kind: Kind,
    /// The payload goes on in the next entry (a split line).
    pub continued: bool,
    pub payload: &'a [u8],
}

/// A fixed-capacity buffer of inbox entries.
pub struct Batch {
    bytes: Vec<u8>,
    records: u64,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            bytes: Vec::with_capacity(INBOX_BATCH_BYTES),
            records: 0,
        }
    }

    /// True when an entry with a payload of `len` bytes still fits.
    pub fn has_room(&self, len: usize) -> bool {
        self.bytes.len() + INBOX_ENTRY_HEADER_BYTES + len <= INBOX_BATCH_BYTES
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Appends one data record. The caller checks [`Batch::has_room`] first.
    pub fn push(&mut self, append_ts_ns: u64, payload: &[u8]) -> Result<(), TooLarge> {
        self.push_kind(append_ts_ns, Kind::Data, false, payload)
    }

    /// Appends one record of `kind`, `continued` if the next entry goes on
    /// with its payload. The caller checks [`Batch::has_room`] first.
    pub fn push_kind(
        &mut self,
        append_ts_ns: u64,
        kind: Kind,
        continued: bool,
        payload: &[u8],
    ) -> Result<(), TooLarge> {
        check_payload(payload)?;
        assert!(self.has_room(payload.len()), "batch overflow");
        self.bytes
            .extend_from_slice(&pack_len_kind(payload.len(), kind, continued).to_le_bytes());
        self.bytes.extend_from_slice(&append_ts_ns.to_le_bytes());
        self.bytes.extend_from_slice(payload);
        self.records += 1;
        Ok(())
    }

    /// Decodes the entry at `cursor`, and the cursor of the next one.
    /// Entries were written by [`Batch::push_kind`] in this process, so the
    /// layout is trusted; bounds are still asserted.
    pub fn entry_at(&self, cursor: usize) -> Option<(Entry<'_>, usize)> {
        if cursor >= self.bytes.len() {
            return None;
        }
        let b = &self.bytes[cursor..];
        assert!(b.len() >= INBOX_ENTRY_HEADER_BYTES);
        let (len, kind, continued) =
            unpack_len_kind(u32::from_le_bytes(b[0..4].try_into().expect("4 bytes")));
        let ts = u64::from_le_bytes(b[4..12].try_into().expect("8 bytes"));
        let end = INBOX_ENTRY_HEADER_BYTES + len;
        assert!(end <= b.len());
        let entry = Entry {
            append_ts_ns: ts,
            kind,
            continued,
            payload: &b[INBOX_ENTRY_HEADER_BYTES..end],
        };
        Some((entry, cursor + end))
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.records = 0;
    }
}

/// The producer's end.
pub struct InboxSender {
    full: SyncSender<Batch>,
    free: Receiver<Batch>,
    wake: Arc<EventFd>,
    /// Records handed over so far: the core appends them in this order, so
    /// the n-th gets the seq n after the WAL's durable seq at start.
    records_sent: Cell<u64>,
}

/// The core's end.
pub struct InboxReceiver {
    full: Receiver<Batch>,
    free: SyncSender<Batch>,
    wake: Arc<EventFd>,
}

/// Creates one inbox with all its batches allocated.
pub fn inbox() -> std::io::Result<(InboxSender, InboxReceiver)> {
    let wake = Arc::new(EventFd::from_flags(EfdFlags::EFD_CLOEXEC)?);
    let (full_tx, full_rx) = sync_channel(INBOX_BATCHES_COUNT);
    let (free_tx, free_rx) = sync_channel(INBOX_BATCHES_COUNT);
    for _ in 0..INBOX_BATCHES_COUNT {
        free_tx.send(Batch::new()).expect("receiver alive");
    }
    Ok((
        InboxSender {
            full: full_tx,
            free: free_rx,
            wake: wake.clone(),
            records_sent: Cell::new(0),
        },
        InboxReceiver {
            full: full_rx,
            free: free_tx,
            wake,
        },
    ))
}

/// The core has gone away (it failed); the producer should stop.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the core consuming this inbox has stopped")]
pub struct CoreGone;

impl InboxSender {
    /// Takes an empty batch, blocking while the core holds all of them.
    pub fn take(&self) -> Result<Batch, CoreGone> {
        let mut batch = self.free.recv().map_err(|_| CoreGone)?;
        batch.clear();
        Ok(batch)
    }

    /// Records handed over so far.
    pub fn records_sent(&self) -> u64 {
        self.records_sent.get()
    }

    /// Hands a filled batch to the core and wakes it.
    pub fn send(&self, batch: Batch) -> Result<(), CoreGone> {
        let records = batch.records;
        self.full.send(batch).map_err(|_| CoreGone)?;
        self.records_sent.set(self.records_sent.get() + records);
        self.wake.write(1).map_err(|_| CoreGone)?;
        Ok(())
    }

    /// Closes the inbox: the core drains what was sent, then sees the end.
    /// Dropping the sender does the same (also when a producer panics).
    pub fn close(self) {
        drop(self);
    }
}

impl Drop for InboxSender {
    fn drop(&mut self) {
        // Close the channel first, then wake the core so it observes the end.
        let (full, _) = sync_channel(0);
        drop(std::mem::replace(&mut self.full, full));
        let _ = self.wake.write(1);
    }
}

/// What [`InboxReceiver::try_next`] found.
pub enum Next {
    Batch(Batch),
    Empty,
    Closed,
}

impl InboxReceiver {
    /// The eventfd the core keeps a read in flight on.
    pub fn wake_fd(&self) -> &EventFd {
        &self.wake
    }

    /// Takes the next filled batch without blocking.
    pub fn try_next(&self) -> Next {
        match self.full.try_recv() {
            Ok(batch) => Next::Batch(batch),
            Err(TryRecvError::Empty) => Next::Empty,
            Err(TryRecvError::Disconnected) => Next::Closed,
        }
    }

    /// Returns a drained batch to the producer.
    pub fn give_back(&self, batch: Batch) {
        // The producer may have closed its end already; the batch is then
        // simply dropped with the inbox.
        let _ = self.free.send(batch);
    }
}
