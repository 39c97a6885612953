//! The I/O layer: one io_uring per core, and the only `unsafe` in ringship.
//!
//! The caller owns the meaning of every operation; the ring only carries the
//! index of a completion slot in `user_data`. A slot is taken when an
//! operation is pushed and freed when its completion is reaped, so the number
//! of operations in flight is bounded by [`RING_SLOTS_MAX`] and nothing is
//! allocated per operation.
//!
//! Buffers handed to the kernel move *into* the slot and come back in the
//! [`Completion`]: the type system, not a comment, says the kernel owns a
//! buffer until its completion arrives.
//!
//! Completions are collected with [`Ring::reap`] and handled by the caller
//! afterwards; nothing runs inside the drain.
//!
//! Man pages: io_uring_setup(2), io_uring_enter(2), io_uring_register(2),
//! io_uring_prep_write(3), io_uring_prep_fsync(3).
//!
//! Files: [`ring`] (the real io_uring), [`token`] (what a completion is
//! for), `event_loop` (the turn, wait, collect, dispatch skeleton every core
//! runs), `fake` (a test implementation of [`Io`]), [`cpu`] (pinning and
//! wake-up latency), [`pipe`] (splice pipes).

pub(crate) mod clock;
pub mod cpu;
pub(crate) mod event_loop;
#[cfg(test)]
pub(crate) mod fake;
pub mod pipe;
pub mod ring;
pub mod token;

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

pub use io_uring::types::Timespec;
pub use ring::{Ring, RingError, RingFlags};
pub use token::{Kind, Owner, Token};

/// A submission that did not fit: an ordinary value, not a panic, so the
/// caller decides (submit and retry, or treat as a bug).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("io_uring submission queue or completion slots are full")]
pub struct QueueFull;

/// One reaped completion. `buf` is the buffer the operation was given, handed
/// back now that the kernel is done with it.
#[derive(Debug)]
pub struct Completion {
    /// The caller's tag for the operation, as passed when it was pushed.
    pub token: Token,
    /// The raw result: bytes transferred, 0, or a negated errno. For a
    /// zero-copy send's notification, the usage flags (see [`zc_copied`]).
    pub result: i32,
    pub buf: Option<Vec<u8>>,
    /// Another completion of the same operation follows (IORING_CQE_F_MORE):
    /// a zero-copy send's buffer stays the kernel's until its notification.
    pub more: bool,
    /// This is a zero-copy send's notification (IORING_CQE_F_NOTIF): the
    /// kernel is done with the buffer.
    pub notif: bool,
}

/// IORING_NOTIF_USAGE_ZC_COPIED: set in a notification's result when the
/// data was copied after all (always, on loopback).
const NOTIF_USAGE_ZC_COPIED: u32 = 1 << 31;

/// True if a zero-copy send's notification reports that the kernel copied.
pub fn zc_copied(notif_result: i32) -> bool {
    notif_result as u32 & NOTIF_USAGE_ZC_COPIED != 0
}

/// The I/O seam: the operations the state machines (the WAL writer, the
/// sinks, a receiver's connections) push, and the registered buffers they
/// share. [`Ring`] implements it with io_uring; a test implementation can
/// complete, shorten, fail or hold back any operation, so those machines
/// can be driven through every path without a kernel.
///
/// Every operation hands its [`Token`] back in a [`Completion`] (two for a
/// linked pair, and for SEND_ZC its result and its notification); a buffer
/// moved in comes back in the completion that ends its operation. A full
/// queue is an ordinary error value ([`QueueFull`]) with the buffer handed
/// back. The state machines are generic over `Io`: no dynamic dispatch on
/// the data path.
pub trait Io {
    /// `write(fd, buf[from..], offset + from)` and, with `sync`, a linked
    /// `fdatasync(fd)` (IOSQE_IO_LINK + IORING_FSYNC_DATASYNC): the sync
    /// starts only after the write completed in full, and a failed *or
    /// short* write cancels it with -ECANCELED (io_uring_enter(2),
    /// "IOSQE_IO_LINK"); the caller resubmits the rest. The buffer comes
    /// back with the write's completion.
    fn write_then_datasync(
        &mut self,
        fd: &impl AsRawFd,
        buf: Vec<u8>,
        from: usize,
        offset: u64,
        write_token: Token,
        sync_token: Option<Token>,
    ) -> Result<(), (QueueFull, Vec<u8>)>;

    /// Like [`Io::write_then_datasync`], from registered buffer `index`,
    /// bytes `[from, len)`, at `offset + from` (WRITE_FIXED; O_DIRECT). The
    /// buffer is in use ([`Io::fixed_in_use`]) until the write completes.
    #[allow(clippy::too_many_arguments)]
    fn write_fixed_then_datasync(
        &mut self,
        fd: &impl AsRawFd,
        index: usize,
        from: usize,
        len: usize,
        offset: u64,
        write_token: Token,
        sync_token: Option<Token>,
    ) -> Result<(), QueueFull>;

    /// `pwrite` of all of `bytes` at `offset`, now, on this thread: the
    /// WAL's inline commit (`--durability none`, idle), which would
    /// otherwise cost an io-wq hand-off.
    fn write_now(&mut self, file: &File, bytes: &[u8], offset: u64) -> io::Result<()>;

    /// `read(fd, buf)` at the fd's position (eventfds).
    fn read(
        &mut self,
        fd: &impl AsRawFd,
        buf: Vec<u8>,
        token: Token,
    ) -> Result<(), (QueueFull, Vec<u8>)>;

    /// `send(fd, buf[from..], MSG_NOSIGNAL)`; a short send is the caller's
    /// to resubmit.
    fn send(
        &mut self,
        fd: &impl AsRawFd,
        buf: Vec<u8>,
        from: usize,
        token: Token,
    ) -> Result<(), (QueueFull, Vec<u8>)>;

    /// Like [`Io::send`], cancelled (-ECANCELED) if it cannot finish within
    /// `timeout`: a SEND linked to a LINK_TIMEOUT, whose own completion
    /// carries `timeout_token` (-ETIME if it fired, -ECANCELED if not).
    fn send_with_timeout(
        &mut self,
        fd: &impl AsRawFd,
        buf: Vec<u8>,
        from: usize,
        token: Token,
        timeout: &'static Timespec,
        timeout_token: Token,
    ) -> Result<(), (QueueFull, Vec<u8>)>;

    /// `recv(fd, buf[from..])`: bytes land after the `from` already held.
    fn recv_at(
        &mut self,
        fd: &impl AsRawFd,
        buf: Vec<u8>,
        from: usize,
        token: Token,
    ) -> Result<(), (QueueFull, Vec<u8>)>;

    /// `splice(fd_in, off_in, fd_out, -1, len)` (-1: the fd's own position).
    fn splice(
        &mut self,
        fd_in: &impl AsRawFd,
        off_in: i64,
        fd_out: &impl AsRawFd,
        len: u32,
        token: Token,
    ) -> Result<(), QueueFull>;

    /// `len` bytes of `file` at `offset` into `pipe_write`, linked to a
    /// splice of as many from `pipe_read` into the socket `out`: one
    /// submission per pipe-full. A short first half cancels the second.
    #[allow(clippy::too_many_arguments)]
    fn splice_file_to_socket(
        &mut self,
        file: &impl AsRawFd,
        offset: i64,
        pipe_write: &impl AsRawFd,
        pipe_read: &impl AsRawFd,
        out: &impl AsRawFd,
        len: u32,
        in_token: Token,
        out_token: Token,
    ) -> Result<(), QueueFull>;

    /// A zero-copy send of registered buffer `index`, bytes `[from, from +
    /// len)`: its result (`more` set), then its notification (`notif`) when
    /// the kernel lets the buffer go; the buffer is in use until then.
    fn send_zc_fixed(
        &mut self,
        fd: &impl AsRawFd,
        index: usize,
        from: usize,
        len: usize,
        token: Token,
    ) -> Result<(), QueueFull>;

    /// Registered buffer `index` for filling, or `None` while in use.
    fn fixed_buf_mut(&mut self, index: usize) -> Option<&mut [u8]>;

    /// Registered buffer `index`, read-only (also while in use: the kernel
    /// only reads registered buffers).
    fn fixed_buf(&self, index: usize) -> &[u8];

    /// True while an operation uses registered buffer `index`.
    fn fixed_in_use(&self, index: usize) -> bool;
}
