//! One io_uring owned by one core: completion slots, registered buffers,
//! and every operation ringship submits.

#![allow(unsafe_code)]

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use io_uring::{IoUring, Probe, opcode, squeue, types};

use super::cpu::allowed_cpu;
use super::{Completion, Io, Owner, QueueFull, Token};
use crate::constants::{
    IOWQ_WORKERS_MAX, PAGE_SIZE_BYTES, RING_ENTRIES, RING_SLOTS_MAX, SPIN_YIELD_INTERVAL_US,
};

/// IORING_SEND_ZC_REPORT_USAGE (io_uring_prep_send_zc(3)): the notification
/// says whether the kernel fell back to copying.
const SEND_ZC_REPORT_USAGE: u16 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RingFlags {
    pub single_issuer: bool,
    pub defer_taskrun: bool,
    pub coop_taskrun: bool,
    /// IORING_SETUP_TASKRUN_FLAG: pending task work shows in the SQ ring's
    /// flags, which is what `--spin-us` polls.
    pub taskrun_flag: bool,
}

impl fmt::Display for RingFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names = Vec::new();
        if self.single_issuer {
            names.push("SINGLE_ISSUER");
        }
        if self.defer_taskrun {
            names.push("DEFER_TASKRUN");
        }
        if self.coop_taskrun {
            names.push("COOP_TASKRUN");
        }
        if self.taskrun_flag {
            names.push("TASKRUN_FLAG");
        }
        if names.is_empty() {
            names.push("none");
        }
        f.write_str(&names.join("|"))
    }
}

/// Why a ring could not be set up, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error(
        "io_uring is disabled on this host (kernel.io_uring_disabled={0}): run `sysctl kernel.io_uring_disabled=0` as root"
    )]
    Disabled(String),
    #[error(
        "io_uring_setup was refused ({0}): a seccomp profile (container runtimes often block io_uring) or an old kernel; allow io_uring_setup/io_uring_enter/io_uring_register or run on Linux >= 6.1"
    )]
    Refused(io::Error),
    #[error(
        "io_uring_setup ran out of memory ({0}): raise RLIMIT_MEMLOCK (`ulimit -l`) or free memory"
    )]
    NoMemory(io::Error),
    #[error(
        "this kernel's io_uring lacks the {0} operation that ringship needs: run on Linux >= 6.1"
    )]
    MissingOpcode(&'static str),
    #[error("io_uring setup failed: {0}")]
    Other(io::Error),
}

#[derive(Debug)]
enum Slot {
    Free,
    Busy {
        token: Token,
        buf: Option<Vec<u8>>,
        /// The registered buffer the operation reads from (SEND_ZC,
        /// WRITE_FIXED).
        fixed: Option<u16>,
    },
}

/// One io_uring owned by one core.
pub struct Ring {
    // Declared first so that it is dropped (and its registered buffers
    // unregistered) before `fixed`, which they point into.
    uring: IoUring,
    flags: RingFlags,
    slots: Vec<Slot>,
    free: Vec<u32>,
    in_flight: usize,
    /// Registered buffers (io_uring_register_buffers(3)), owned here so they
    /// outlive their registration, and how many operations use each. Each
    /// Vec is a page longer than asked for: the buffer proper starts at the
    /// first page boundary inside it, as O_DIRECT requires.
    fixed: Vec<FixedBuf>,
    fixed_users: Vec<u32>,
}

/// One registered buffer: `len` bytes from `start` inside `mem`, with
/// `mem[start..]` page-aligned.
struct FixedBuf {
    mem: Vec<u8>,
    start: usize,
    len: usize,
}

impl FixedBuf {
    /// Page alignment without an aligned allocator: over-allocate by one
    /// page and start at the first boundary (safe code; a page of slack per
    /// buffer).
    fn new(len: usize) -> FixedBuf {
        let mem = vec![0u8; len + PAGE_SIZE_BYTES];
        let start = mem.as_ptr().align_offset(PAGE_SIZE_BYTES);
        assert!(start < PAGE_SIZE_BYTES);
        FixedBuf { mem, start, len }
    }

    fn bytes(&self) -> &[u8] {
        &self.mem[self.start..self.start + self.len]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.mem[self.start..self.start + self.len]
    }
}

/// The opcodes every core needs, probed at start-up.
const OPCODES_REQUIRED: [(u8, &str); 6] = [
    (opcode::Splice::CODE, "SPLICE"),
    (opcode::Write::CODE, "WRITE"),
    (opcode::Fsync::CODE, "FSYNC"),
    (opcode::Read::CODE, "READ"),
    (opcode::Send::CODE, "SEND"),
    (opcode::Recv::CODE, "RECV"),
];

impl Ring {
    /// Builds a ring for the calling thread, which must be the only thread
    /// that ever submits to it (SINGLE_ISSUER).
    ///
    /// Tries SINGLE_ISSUER|DEFER_TASKRUN first: completions are then only run
    /// when this thread waits for them, never by an interrupt in the middle
    /// of its work. Falls back to COOP_TASKRUN on kernels that refuse it.
    /// `iowq_cpu` pins the ring's io-wq workers (where buffered writes and
    /// fdatasync run) to one CPU and caps their number.
    pub fn new(iowq_cpu: Option<usize>) -> Result<Ring, RingError> {
        Ring::with_slots(iowq_cpu, RING_SLOTS_MAX, IOWQ_WORKERS_MAX)
    }

    /// Like [`Ring::new`], for a core with up to `slots` operations in
    /// flight and `iowq_workers` io-wq workers ([bounded, unbounded]): a
    /// receiver core serving many connections. The queues are sized to
    /// match.
    pub fn with_slots(
        iowq_cpu: Option<usize>,
        slots: usize,
        iowq_workers: [u32; 2],
    ) -> Result<Ring, RingError> {
        let entries = u32::try_from(slots)
            .expect("slots bounded by constants.rs")
            .next_power_of_two()
            .max(RING_ENTRIES);
        let uring = match IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .build(entries)
        {
            Ok(ring) => (
                ring,
                RingFlags {
                    single_issuer: true,
                    defer_taskrun: true,
                    coop_taskrun: false,
                    taskrun_flag: true,
                },
            ),
            Err(first) if first.raw_os_error() == Some(libc::EINVAL) => {
                // TASKRUN_FLAG dates from the same kernel as COOP_TASKRUN
                // (5.19): without it a spin would not see task work that
                // only the next interrupt return would run.
                match IoUring::builder()
                    .setup_coop_taskrun()
                    .setup_taskrun_flag()
                    .build(entries)
                {
                    Ok(ring) => (
                        ring,
                        RingFlags {
                            single_issuer: false,
                            defer_taskrun: false,
                            coop_taskrun: true,
                            taskrun_flag: true,
                        },
                    ),
                    Err(e) => return Err(classify_setup_error(e)),
                }
            }
            Err(e) => return Err(classify_setup_error(e)),
        };
        let (uring, flags) = uring;

        let mut probe = Probe::new();
        uring
            .submitter()
            .register_probe(&mut probe)
            .map_err(RingError::Other)?;
        for (code, name) in OPCODES_REQUIRED {
            if !probe.is_supported(code) {
                return Err(RingError::MissingOpcode(name));
            }
        }

        // Capping and pinning io-wq is an optimisation: a kernel that refuses
        // it (pre-5.14) still works correctly, so failures are only logged.
        let mut workers = iowq_workers;
        if let Err(e) = uring.submitter().register_iowq_max_workers(&mut workers) {
            tracing::debug!("register_iowq_max_workers: {e}");
        }
        if let Some(cpu) = iowq_cpu.map(allowed_cpu) {
            // SAFETY: cpu_set_t is a plain bitmask for which all-zero is a
            // valid (empty) value; CPU_SET only writes inside it.
            let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            // SAFETY: `cpu % CPU_SETSIZE` is in range of the set's bitmask.
            unsafe { libc::CPU_SET(cpu % libc::CPU_SETSIZE as usize, &mut set) };
            if let Err(e) = uring.submitter().register_iowq_aff(&set) {
                tracing::debug!("register_iowq_aff: {e}");
            }
        }

        let mut free: Vec<u32> = (0..slots as u32).collect();
        free.reverse();
        Ok(Ring {
            uring,
            flags,
            slots: (0..slots).map(|_| Slot::Free).collect(),
            free,
            in_flight: 0,
            fixed: Vec::new(),
            fixed_users: Vec::new(),
        })
    }

    /// The setup flags in force.
    pub fn flags(&self) -> RingFlags {
        self.flags
    }

    /// Operations pushed whose completion has not been reaped yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Completion slots in all: the most completions one `reap` can return.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Operations in flight for `owner`: a connection's, on a receiver core
    /// that serves many.
    pub fn in_flight_for(&self, owner: Owner) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s, Slot::Busy { token, .. } if token.owner == owner))
            .count()
    }

    /// The fdatasync half of a write chain, when `sync_token` asks for one.
    fn push_linked_datasync(&mut self, raw: RawFd, sync_token: Option<Token>) {
        if let Some(token) = sync_token {
            let sync_slot = self.take_slot(token, None);
            let sync = opcode::Fsync::new(types::Fd(raw))
                .flags(types::FsyncFlags::DATASYNC)
                .build()
                .user_data(sync_slot as u64);
            self.push(&sync);
        }
    }

    /// Pushes the SEND of `buf[from..]` with `flags`; room was checked.
    fn push_send(
        &mut self,
        fd: &impl AsRawFd,
        buf: Vec<u8>,
        from: usize,
        token: Token,
        flags: squeue::Flags,
    ) {
        assert!(from < buf.len(), "send of an empty range");
        let len = u32::try_from(buf.len() - from).expect("send chunk below 4 GiB");
        // SAFETY (for the pointer taken here): as in `write_then_datasync`,
        // the Vec is owned by the slot until its completion is reaped.
        let ptr = buf[from..].as_ptr();
        let slot = self.take_slot(token, Some(buf));
        let entry = opcode::Send::new(types::Fd(fd.as_raw_fd()), ptr, len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .flags(flags)
            .user_data(slot as u64);
        self.push(&entry);
    }

    /// Pushes one SPLICE (output offset -1: pipes and sockets have none);
    /// room was checked.
    fn push_splice(
        &mut self,
        fd_in: RawFd,
        off_in: i64,
        fd_out: RawFd,
        len: u32,
        token: Token,
        flags: squeue::Flags,
    ) {
        let slot = self.take_slot(token, None);
        let entry = opcode::Splice::new(types::Fd(fd_in), off_in, types::Fd(fd_out), -1, len)
            .flags(libc::SPLICE_F_MOVE)
            .build()
            .flags(flags)
            .user_data(slot as u64);
        self.push(&entry);
    }

    /// Allocates one zeroed, page-aligned buffer per entry of `sizes_bytes`
    /// and registers them with the kernel (io_uring_register_buffers(3)), as
    /// indices `0..sizes_bytes.len()`. Registered memory is pinned, and counts
    /// against RLIMIT_MEMLOCK (8 MiB for an unprivileged user by default).
    pub fn register_fixed_buffers(&mut self, sizes_bytes: &[usize]) -> io::Result<()> {
        assert!(self.fixed.is_empty(), "buffers are registered once");
        self.fixed = sizes_bytes.iter().map(|&len| FixedBuf::new(len)).collect();
        self.fixed_users = vec![0; sizes_bytes.len()];
        let iovecs: Vec<libc::iovec> = self
            .fixed
            .iter_mut()
            .map(|b| {
                let bytes = b.bytes_mut();
                libc::iovec {
                    iov_base: bytes.as_mut_ptr().cast(),
                    iov_len: bytes.len(),
                }
            })
            .collect();
        // SAFETY: the iovecs point into `self.fixed`, whose Vecs are never
        // resized or dropped while the ring exists: the field is only ever
        // assigned here (and cleared below only if the kernel refused them),
        // and it is declared after `uring`, so the ring (and with it the
        // registration) is dropped first.
        unsafe { self.uring.submitter().register_buffers(&iovecs) }.map_err(|e| {
            self.fixed.clear();
            self.fixed_users.clear();
            if e.raw_os_error() == Some(libc::ENOMEM) {
                io::Error::new(
                    e.kind(),
                    format!(
                        "{e}: registered buffers count against RLIMIT_MEMLOCK; raise `ulimit -l`"
                    ),
                )
            } else {
                e
            }
        })
    }

    /// Like [`Ring::submit_and_wait`], but returns after `timeout` even with
    /// no completion (io_uring_enter(2) with IORING_ENTER_EXT_ARG). Only the
    /// reconnect backoff and the ack deadline use this; shipping never waits
    /// on it.
    pub fn submit_and_wait_timeout(&mut self, want: usize, timeout: Duration) -> io::Result<()> {
        let ts = types::Timespec::new()
            .sec(timeout.as_secs())
            .nsec(timeout.subsec_nanos());
        let args = types::SubmitArgs::new().timespec(&ts);
        loop {
            match self.uring.submitter().submit_with_args(want, &args) {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::ETIME) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Submits everything pushed, then polls for a completion for up to
    /// `budget` without sleeping. True if one is ready; false if the budget
    /// ran out, and the caller should sleep in [`Ring::submit_and_wait`].
    ///
    /// With DEFER_TASKRUN a completion is first task work queued for this
    /// thread; IORING_SETUP_TASKRUN_FLAG makes the kernel say so in the SQ
    /// ring's flags, so the poll is a load of shared memory, and the thread
    /// enters the kernel when that flag is up. (The flag can stay up with
    /// nothing pending after a race with the thread's own run of the work,
    /// so the budget is checked on every pass, enter or not.)
    ///
    /// io-wq workers share the core's CPU, and a woken worker may wait out
    /// the spinner's time slice before it runs: the spin yields every
    /// [`SPIN_YIELD_INTERVAL_US`], so a write or fdatasync finishing on this
    /// CPU waits for that at most.
    pub fn submit_and_spin(&mut self, budget: Duration) -> io::Result<bool> {
        self.submit_and_wait(0)?;
        let start = std::time::Instant::now();
        let yield_every = Duration::from_micros(SPIN_YIELD_INTERVAL_US);
        let mut yielded = start;
        loop {
            if self.uring.submission().taskrun() {
                // A zero-wait enter with GETEVENTS runs the deferred work.
                self.submit_and_wait(0)?;
            }
            if !self.uring.completion().is_empty() {
                return Ok(true);
            }
            let now = std::time::Instant::now();
            if now - start >= budget {
                return Ok(false);
            }
            if now - yielded >= yield_every {
                std::thread::yield_now();
                yielded = now;
            } else {
                std::hint::spin_loop();
            }
        }
    }

    /// Submits everything pushed and waits until at least `want` completions
    /// are ready. EINTR is retried: a signal is not a failure of the ring.
    pub fn submit_and_wait(&mut self, want: usize) -> io::Result<()> {
        loop {
            match self.uring.submit_and_wait(want) {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // EBUSY: the completion queue is over-full; reaping frees it.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Moves every ready completion into `out` and frees its slot. Nothing is
    /// handled here: the caller processes `out` afterwards.
    pub fn reap(&mut self, out: &mut Vec<Completion>) {
        let capacity = out.capacity();
        let mut cq = self.uring.completion();
        cq.sync();
        for cqe in &mut cq {
            let index = cqe.user_data() as usize;
            let more = io_uring::cqueue::more(cqe.flags());
            let notif = io_uring::cqueue::notif(cqe.flags());
            if more {
                // A zero-copy send's first completion: the slot (and the
                // buffer) stay the kernel's until the notification.
                let Slot::Busy { token, .. } = self.slots[index] else {
                    panic!("completion for free slot {index}");
                };
                out.push(Completion {
                    token,
                    result: cqe.result(),
                    buf: None,
                    more,
                    notif,
                });
                continue;
            }
            let slot = std::mem::replace(&mut self.slots[index], Slot::Free);
            let Slot::Busy { token, buf, fixed } = slot else {
                panic!("completion for free slot {index}");
            };
            if let Some(i) = fixed {
                self.fixed_users[i as usize] -= 1;
            }
            self.free.push(index as u32);
            self.in_flight -= 1;
            out.push(Completion {
                token,
                result: cqe.result(),
                buf,
                more,
                notif,
            });
        }
        // Slots bound the completions, so `out` never grows past its capacity.
        debug_assert_eq!(out.capacity(), capacity);
    }

    /// True if `ops` more operations fit: free completion slots and free
    /// submission queue entries.
    fn has_room(&mut self, ops: usize) -> bool {
        self.free.len() >= ops && self.sq_space() >= ops
    }

    fn sq_space(&mut self) -> usize {
        let sq = self.uring.submission();
        sq.capacity() - sq.len()
    }

    fn take_slot(&mut self, token: Token, buf: Option<Vec<u8>>) -> u32 {
        let index = self.free.pop().expect("caller checked for a free slot");
        debug_assert!(matches!(self.slots[index as usize], Slot::Free));
        self.slots[index as usize] = Slot::Busy {
            token,
            buf,
            fixed: None,
        };
        self.in_flight += 1;
        index
    }

    /// Takes a slot for an operation that reads registered buffer `index`;
    /// the buffer counts as in use until the slot's last completion.
    fn take_fixed_slot(&mut self, token: Token, index: usize) -> u32 {
        let slot = self.take_slot(token, None);
        self.slots[slot as usize] = Slot::Busy {
            token,
            buf: None,
            fixed: Some(u16::try_from(index).expect("registered buffer index")),
        };
        self.fixed_users[index] += 1;
        slot
    }

    fn push(&mut self, entry: &squeue::Entry) {
        let mut sq = self.uring.submission();
        // SAFETY: every pointer in `entry` refers to a buffer owned by the
        // slot named in its user_data (see `take_slot`), which stays alive and
        // unmoved until the completion is reaped; fds are borrowed from
        // objects the caller keeps open until then (the WAL closes a segment
        // only once no operation on it is in flight). Space was checked above.
        unsafe { sq.push(entry) }.expect("space checked before push");
    }
}

impl Io for Ring {
    /// Pushes `write(fd, buf[from..], offset + from)` and, when `sync_token` is
    /// given, a linked `fdatasync(fd)` (IOSQE_IO_LINK + IORING_FSYNC_DATASYNC).
    ///
    /// Linking means the sync starts only after the write completed in full:
    /// a failed *or short* write cancels the sync with -ECANCELED
    /// (io_uring_enter(2), "IOSQE_IO_LINK"), and the caller resubmits the
    /// remainder. The buffer comes back with the write's completion; the
    /// sync's completion carries none.
    fn write_then_datasync(
        &mut self,
        fd: &impl AsRawFd,
        buf: Vec<u8>,
        from: usize,
        offset: u64,
        write_token: Token,
        sync_token: Option<Token>,
    ) -> Result<(), (QueueFull, Vec<u8>)> {
        let needed = if sync_token.is_some() { 2 } else { 1 };
        if !self.has_room(needed) {
            return Err((QueueFull, buf));
        }
        assert!(from < buf.len(), "write of an empty range");
        let len = u32::try_from(buf.len() - from).expect("commit bounded by COMMIT_BYTES_MAX");
        let raw = fd.as_raw_fd();
        // SAFETY (for the pointer taken here): the Vec moves into the slot
        // below and is only handed back by `reap` after the kernel posted this
        // write's completion; moving a Vec never moves its heap allocation,
        // so the pointer stays valid for as long as the kernel may use it.
        let ptr = buf[from..].as_ptr();
        let write_slot = self.take_slot(write_token, Some(buf));
        let mut write = opcode::Write::new(types::Fd(raw), ptr, len)
            .offset(offset + from as u64)
            .build()
            .user_data(write_slot as u64);
        if sync_token.is_some() {
            write = write.flags(squeue::Flags::IO_LINK);
        }
        self.push(&write);
        self.push_linked_datasync(raw, sync_token);
        Ok(())
    }

    /// Like [`Ring::write_then_datasync`], but writes bytes `[from, len)` of
    /// registered buffer `index` (WRITE_FIXED) at `offset + from`: the path
    /// for O_DIRECT segments, whose buffers must be page-aligned. The buffer
    /// counts as in use ([`Ring::fixed_in_use`]) until the write completes.
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
    ) -> Result<(), QueueFull> {
        let needed = if sync_token.is_some() { 2 } else { 1 };
        if !self.has_room(needed) {
            return Err(QueueFull);
        }
        assert!(
            from < len && len <= self.fixed[index].len,
            "write of an empty range"
        );
        let raw = fd.as_raw_fd();
        // SAFETY (for the pointer taken here): registered buffers live as
        // long as the ring, and `fixed_users` keeps `fixed_buf_mut` from
        // handing this one out for filling until the write's completion.
        let ptr = self.fixed[index].bytes()[from..].as_ptr();
        let write_slot = self.take_fixed_slot(write_token, index);
        let mut write = opcode::WriteFixed::new(
            types::Fd(raw),
            ptr,
            u32::try_from(len - from).expect("commit bounded by COMMIT_BYTES_MAX"),
            u16::try_from(index).expect("registered buffer index"),
        )
        .offset(offset + from as u64)
        .build()
        .user_data(write_slot as u64);
        if sync_token.is_some() {
            write = write.flags(squeue::Flags::IO_LINK);
        }
        self.push(&write);
        self.push_linked_datasync(raw, sync_token);
        Ok(())
    }

    /// Pushes `read(fd, buf[..])` at the file's current position (for
    /// eventfds and pipes). The buffer comes back with the completion.
    fn read(
        &mut self,
        fd: &impl AsRawFd,
        buf: Vec<u8>,
        token: Token,
    ) -> Result<(), (QueueFull, Vec<u8>)> {
        if !self.has_room(1) {
            return Err((QueueFull, buf));
        }
        let len = u32::try_from(buf.len()).expect("read buffer below 4 GiB");
        let mut buf = buf;
        // SAFETY (for the pointer taken here): as in `write_then_datasync`,
        // the Vec is owned by the slot until its completion is reaped, and its
        // heap allocation does not move with it.
        let ptr = buf.as_mut_ptr();
        let slot = self.take_slot(token, Some(buf));
        let entry = opcode::Read::new(types::Fd(fd.as_raw_fd()), ptr, len)
            .offset(u64::MAX) // -1: use the file position, as read(2) does
            .build()
            .user_data(slot as u64);
        self.push(&entry);
        Ok(())
    }

    /// Pushes `send(fd, buf[from..], MSG_NOSIGNAL)` on a connected socket. The
    /// buffer comes back with the completion; a short send is the caller's
    /// to resubmit.
    fn send(
        &mut self,
        fd: &impl AsRawFd,
        buf: Vec<u8>,
        from: usize,
        token: Token,
    ) -> Result<(), (QueueFull, Vec<u8>)> {
        if !self.has_room(1) {
            return Err((QueueFull, buf));
        }
        self.push_send(fd, buf, from, token, squeue::Flags::empty());
        Ok(())
    }

    /// Like [`Ring::send`] of `buf[from..]`, but cancelled (its completion
    /// then carries -ECANCELED) if it cannot finish within `timeout`: a
    /// SEND linked (IOSQE_IO_LINK) to an IORING_OP_LINK_TIMEOUT, whose own
    /// completion carries `timeout_token` (-ETIME if it fired, -ECANCELED if
    /// the send finished first). `timeout` must be `'static`: the kernel
    /// reads it when the entries are submitted, after this returns.
    fn send_with_timeout(
        &mut self,
        fd: &impl AsRawFd,
        buf: Vec<u8>,
        from: usize,
        token: Token,
        timeout: &'static types::Timespec,
        timeout_token: Token,
    ) -> Result<(), (QueueFull, Vec<u8>)> {
        if !self.has_room(2) {
            return Err((QueueFull, buf));
        }
        self.push_send(fd, buf, from, token, squeue::Flags::IO_LINK);
        // SAFETY (for the pointer taken here): the timespec is 'static.
        let timeout_slot = self.take_slot(timeout_token, None);
        let timeout = opcode::LinkTimeout::new(timeout as *const types::Timespec)
            .build()
            .user_data(timeout_slot as u64);
        self.push(&timeout);
        Ok(())
    }

    /// Pushes `recv(fd, buf[from..])`: bytes land after the `from` already
    /// held, so a partial record carries over without a copy.
    fn recv_at(
        &mut self,
        fd: &impl AsRawFd,
        buf: Vec<u8>,
        from: usize,
        token: Token,
    ) -> Result<(), (QueueFull, Vec<u8>)> {
        if !self.has_room(1) {
            return Err((QueueFull, buf));
        }
        assert!(from < buf.len(), "recv into a full buffer");
        let len = u32::try_from(buf.len() - from).expect("recv buffer below 4 GiB");
        let mut buf = buf;
        // SAFETY (for the pointer taken here): as in `write_then_datasync`;
        // `from` is inside the buffer (checked above).
        let ptr = buf[from..].as_mut_ptr();
        let slot = self.take_slot(token, Some(buf));
        let entry = opcode::Recv::new(types::Fd(fd.as_raw_fd()), ptr, len)
            .build()
            .user_data(slot as u64);
        self.push(&entry);
        Ok(())
    }

    /// Pushes `splice(fd_in, off_in, fd_out, -1, len)`; an offset of -1
    /// means "the fd's own position", as it must be for pipes and sockets
    /// (io_uring_prep_splice(3)). No buffer: the pages move through the pipe.
    fn splice(
        &mut self,
        fd_in: &impl AsRawFd,
        off_in: i64,
        fd_out: &impl AsRawFd,
        len: u32,
        token: Token,
    ) -> Result<(), QueueFull> {
        if !self.has_room(1) {
            return Err(QueueFull);
        }
        self.push_splice(
            fd_in.as_raw_fd(),
            off_in,
            fd_out.as_raw_fd(),
            len,
            token,
            squeue::Flags::empty(),
        );
        Ok(())
    }

    /// Pushes `len` bytes of `file` at `offset` into `pipe_write`, linked
    /// (IOSQE_IO_LINK) to a splice of the same `len` bytes from `pipe_read`
    /// into the socket `out`: one submission, and one trip through the
    /// loop, per pipe-full instead of two. A short or failed first splice
    /// cancels the second, whose completion then carries -ECANCELED
    /// (io_uring_enter(2), "IOSQE_IO_LINK"); the caller sends what the pipe
    /// holds with [`Ring::splice`].
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
    ) -> Result<(), QueueFull> {
        if !self.has_room(2) {
            return Err(QueueFull);
        }
        self.push_splice(
            file.as_raw_fd(),
            offset,
            pipe_write.as_raw_fd(),
            len,
            in_token,
            squeue::Flags::IO_LINK,
        );
        self.push_splice(
            pipe_read.as_raw_fd(),
            -1,
            out.as_raw_fd(),
            len,
            out_token,
            squeue::Flags::empty(),
        );
        Ok(())
    }

    /// Registered buffer `index` for filling, or `None` while an operation
    /// still uses it.
    fn fixed_buf_mut(&mut self, index: usize) -> Option<&mut [u8]> {
        (self.fixed_users[index] == 0).then(|| self.fixed[index].bytes_mut())
    }

    /// Registered buffer `index`, read-only (also while in use: the kernel
    /// only reads registered buffers, for writes and sends).
    fn fixed_buf(&self, index: usize) -> &[u8] {
        self.fixed[index].bytes()
    }

    /// True while an operation uses registered buffer `index`.
    fn fixed_in_use(&self, index: usize) -> bool {
        self.fixed_users[index] > 0
    }

    /// Pushes a zero-copy `send` (io_uring_prep_send_zc_fixed(3)) of
    /// registered buffer `index`, bytes `[from, from + len)`, with
    /// IORING_SEND_ZC_REPORT_USAGE. Two completions follow: the result (with
    /// `more` set), then the notification (`notif`) once the kernel no
    /// longer needs the buffer; until then `fixed_buf_mut` refuses it.
    fn send_zc_fixed(
        &mut self,
        fd: &impl AsRawFd,
        index: usize,
        from: usize,
        len: usize,
        token: Token,
    ) -> Result<(), QueueFull> {
        if !self.has_room(1) {
            return Err(QueueFull);
        }
        assert!(from + len <= self.fixed[index].len && len > 0);
        // SAFETY (for the pointer taken here): registered buffers live as
        // long as the ring (see `register_fixed_buffers`), and `fixed_users`
        // keeps `fixed_buf_mut` from handing this one out until the
        // notification.
        let ptr = self.fixed[index].bytes()[from..].as_ptr();
        let slot = self.take_fixed_slot(token, index);
        let entry = opcode::SendZc::new(types::Fd(fd.as_raw_fd()), ptr, len as u32)
            .buf_index(Some(index as u16))
            .zc_flags(SEND_ZC_REPORT_USAGE)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(slot as u64);
        self.push(&entry);
        Ok(())
    }

    fn write_now(&mut self, file: &std::fs::File, bytes: &[u8], offset: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        file.write_all_at(bytes, offset)
    }
}

impl Drop for Ring {
    /// A ring may not be dropped while the kernel still owns buffers in its
    /// slots: wait for every outstanding completion first.
    fn drop(&mut self) {
        let mut sink = Vec::with_capacity(self.slots.len());
        while self.in_flight > 0 {
            if self.submit_and_wait(1).is_err() {
                // The ring is unusable; leaking the buffers is the only safe
                // choice left, since the kernel may still write into them.
                for slot in self.slots.drain(..) {
                    std::mem::forget(slot);
                }
                return;
            }
            sink.clear();
            self.reap(&mut sink);
        }
    }
}

fn classify_setup_error(e: io::Error) -> RingError {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    match e.raw_os_error() {
        Some(libc::EPERM) if !disabled.is_empty() && disabled != "0" => {
            RingError::Disabled(disabled)
        }
        Some(libc::EPERM) | Some(libc::ENOSYS) => RingError::Refused(e),
        Some(libc::ENOMEM) => RingError::NoMemory(e),
        _ => RingError::Other(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    use crate::io::pipe::splice_pipe;
    use crate::io::{Kind, Owner};

    /// Token `n` of a test operation.
    fn t(n: u32) -> Token {
        Token::new(Owner::Sink, Kind::Send, n)
    }

    static TIMEOUT_50MS: types::Timespec = types::Timespec::new().nsec(50_000_000);

    /// A send into a socket whose peer never reads is cancelled by its
    /// linked timeout, and both completions arrive (the receiver's acks
    /// rely on this to let go of a shipper that stopped reading).
    #[test]
    fn a_send_that_cannot_finish_is_cancelled_by_its_timeout() {
        let (mut full, _peer) = UnixStream::pair().unwrap();
        full.set_nonblocking(true).unwrap();
        while full.write(&[0u8; 4096]).is_ok() {}
        full.set_nonblocking(false).unwrap();
        let mut ring = Ring::new(None).unwrap();
        ring.send_with_timeout(&full, vec![7u8; 16], 0, t(1), &TIMEOUT_50MS, t(2))
            .unwrap();
        let mut done = Vec::with_capacity(ring.slots());
        while done.len() < 2 {
            ring.submit_and_wait(1).unwrap();
            ring.reap(&mut done);
        }
        let result = |token| done.iter().find(|c| c.token == token).unwrap().result;
        assert_eq!(result(t(1)), -libc::ECANCELED, "the send");
        assert_eq!(result(t(2)), -libc::ETIME, "its timeout");
        assert!(done.iter().find(|c| c.token == t(1)).unwrap().buf.is_some());
    }

    /// A send that finishes at once cancels its timeout instead.
    #[test]
    fn a_send_that_finishes_cancels_its_timeout() {
        let (sender, _peer) = UnixStream::pair().unwrap();
        let mut ring = Ring::new(None).unwrap();
        ring.send_with_timeout(&sender, vec![7u8; 16], 4, t(1), &TIMEOUT_50MS, t(2))
            .unwrap();
        let mut done = Vec::with_capacity(ring.slots());
        while done.len() < 2 {
            ring.submit_and_wait(1).unwrap();
            ring.reap(&mut done);
        }
        let result = |token| done.iter().find(|c| c.token == token).unwrap().result;
        assert_eq!(result(t(1)), 12, "the send, from byte 4");
        assert_eq!(result(t(2)), -libc::ECANCELED, "its timeout");
    }

    /// One submission moves a pipe-full from a file to a socket: the
    /// file → pipe splice is linked to the pipe → socket one, and both
    /// complete in full. A short first half cancels the second.
    #[test]
    fn a_linked_splice_moves_a_pipe_full_from_file_to_socket() {
        let (read, write, capacity) = splice_pipe(1 << 20).unwrap();
        let len = capacity.min(256 << 10);
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&data).unwrap();
        let (sender, mut peer) = UnixStream::pair().unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            std::io::Read::read_to_end(&mut peer, &mut got).unwrap();
            got
        });
        let result =
            |done: &[Completion], token| done.iter().find(|c| c.token == token).unwrap().result;
        let mut ring = Ring::new(None).unwrap();
        ring.splice_file_to_socket(&file, 0, &write, &read, &sender, len as u32, t(1), t(2))
            .unwrap();
        let mut done = Vec::with_capacity(ring.slots());
        while done.len() < 2 {
            ring.submit_and_wait(1).unwrap();
            ring.reap(&mut done);
        }
        assert_eq!(result(&done, t(1)), len as i32, "file → pipe");
        assert_eq!(result(&done, t(2)), len as i32, "pipe → socket");

        // Past the end of the file the first half is short, and the
        // second is cancelled: nothing is sent twice.
        done.clear();
        ring.splice_file_to_socket(
            &file,
            len as i64 - 10,
            &write,
            &read,
            &sender,
            100,
            t(3),
            t(4),
        )
        .unwrap();
        while done.len() < 2 {
            ring.submit_and_wait(1).unwrap();
            ring.reap(&mut done);
        }
        assert_eq!(result(&done, t(3)), 10, "a short read into the pipe");
        assert_eq!(
            result(&done, t(4)),
            -libc::ECANCELED,
            "cancels the linked send"
        );
        ring.splice(&read, -1, &sender, 10, t(5)).unwrap();
        done.clear();
        ring.submit_and_wait(1).unwrap();
        ring.reap(&mut done);
        assert_eq!(result(&done, t(5)), 10);
        drop(ring);
        drop(sender);
        let mut want = data.clone();
        want.extend_from_slice(&data[len - 10..]);
        assert_eq!(reader.join().unwrap(), want);
    }
}
