//! A simulated disk behind the I/O seam: the WAL writer's operations are
//! held, completed in the order of a simulated clock, shortened or failed
//! as the seed says, and their bytes land in real files only when they
//! complete. What a crash keeps of them is the disk's to decide:
//!
//! - **Unsynced data.** Every completed write is *dirty* until an
//!   fdatasync of its file completes. A machine crash keeps each 512 B or
//!   4 KiB block of a dirty write (the granularity is drawn per crash), or
//!   puts back what the block held before, independently: a write torn
//!   anywhere, its tail kept and its head lost included. A process crash
//!   keeps dirty data (the page cache survives a kill -9).
//! - **Operations in flight** at a crash may have landed in part: a
//!   random prefix of each, dirty.
//! - **A failed fdatasync** (-EIO) behaves as Linux does: the file's dirty
//!   pages are marked clean without reaching the disk, and a later
//!   fdatasync reports success without writing them. They are lost at the
//!   next crash of either kind (a machine crash drops them; after a process
//!   crash, recovery drops the last segment's cached pages and reads the
//!   disk: `recovery::drop_cached_tail`).
//! - **Links.** A write linked to its fdatasync completes first; a short or
//!   failed write cancels the sync (-ECANCELED), as IOSQE_IO_LINK does.
//! - **Faults** drawn per operation: short writes, EIO and ENOSPC on
//!   writes, EIO on syncs, and latency spikes.
//!
//! Directory entries (a segment or the watermarks file created or renamed,
//! and not yet covered by a directory fsync) are `wal::fsops`'s journal's
//! to undo at a machine crash. Not modelled: recovery's repair and
//! deletions, which are taken as durable when they return. See
//! docs/reliability.md.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::rng::Rng;
#[cfg(doc)]
use crate::io::Io;
use crate::io::{Completion, QueueFull, Token};

/// How often each fault is drawn, per operation.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DiskFaults {
    pub short_write: f64,
    pub write_eio: f64,
    pub write_enospc: f64,
    pub sync_eio: f64,
    pub latency_spike: f64,
}

/// What the disk did, for the run's report.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DiskStats {
    pub writes: u64,
    pub syncs: u64,
    pub short_writes: u64,
    pub write_eio: u64,
    pub write_enospc: u64,
    pub sync_eio: u64,
    pub syncs_cancelled: u64,
    pub latency_spikes: u64,
    /// Operations in flight at a crash that landed in part.
    pub torn_in_flight: u64,
    /// Dirty blocks a machine crash kept, and put back.
    pub blocks_kept: u64,
    pub blocks_lost: u64,
    /// Bytes a crash put back to what they were (unsynced, or marked clean
    /// by a failed sync).
    pub bytes_lost: u64,
}

impl DiskStats {
    pub fn add(&mut self, o: &DiskStats) {
        self.writes += o.writes;
        self.syncs += o.syncs;
        self.short_writes += o.short_writes;
        self.write_eio += o.write_eio;
        self.write_enospc += o.write_enospc;
        self.sync_eio += o.sync_eio;
        self.syncs_cancelled += o.syncs_cancelled;
        self.latency_spikes += o.latency_spikes;
        self.torn_in_flight += o.torn_in_flight;
        self.blocks_kept += o.blocks_kept;
        self.blocks_lost += o.blocks_lost;
        self.bytes_lost += o.bytes_lost;
    }
}

/// Which crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Crash {
    /// kill -9: the page cache survives.
    Process,
    /// Power loss: only synced data survives.
    Machine,
}

enum What {
    Write {
        path: PathBuf,
        offset: u64,
        buf: Vec<u8>,
        from: usize,
    },
    Sync {
        path: PathBuf,
        /// The write it is linked to, and whether that write cancelled it.
        after: u64,
        cancelled: bool,
        /// Writes applied up to here when the linked write completed: the
        /// sync covers those (pages dirtied while it runs may miss it).
        covers: u64,
    },
}

struct Pending {
    id: u64,
    token: Token,
    due_ns: u64,
    what: What,
}

/// Bytes written and not yet synced: what they replaced, to put back.
struct Dirty {
    path: PathBuf,
    offset: u64,
    old: Vec<u8>,
    /// Order of application.
    applied: u64,
    /// Marked clean by a failed fdatasync: never reaches the disk.
    lost: bool,
}

pub(crate) struct SimDisk {
    rng: Rng,
    pub faults: DiskFaults,
    pub stats: DiskStats,
    /// The simulated clock.
    pub now_ns: u64,
    next_id: u64,
    ops: Vec<Pending>,
    files: HashMap<PathBuf, File>,
    /// Applied and not synced, in the order applied.
    dirty: Vec<Dirty>,
    applied: u64,
}

impl SimDisk {
    pub fn new(rng: Rng, faults: DiskFaults) -> SimDisk {
        SimDisk {
            rng,
            faults,
            stats: DiskStats::default(),
            now_ns: 0,
            next_id: 0,
            ops: Vec::new(),
            files: HashMap::new(),
            dirty: Vec::new(),
            applied: 0,
        }
    }

    pub fn in_flight(&self) -> usize {
        self.ops.len()
    }

    /// Operations of `owner` in flight.
    pub fn in_flight_for(&self, owner: crate::io::Owner) -> usize {
        self.ops.iter().filter(|o| o.token.owner == owner).count()
    }

    /// When the next operation is due, if any is in flight.
    pub fn next_due(&self) -> Option<u64> {
        self.ops.iter().map(|o| o.due_ns).min()
    }

    /// The lowest offset of `path` that a crash could still lose (written
    /// and not covered by a completed fdatasync), if any.
    pub fn unsynced_from(&self, path: &std::path::Path) -> Option<u64> {
        self.dirty
            .iter()
            .filter(|d| d.path == path)
            .map(|d| d.offset)
            .min()
    }

    fn latency_ns(&mut self) -> u64 {
        if self.rng.chance(self.faults.latency_spike) {
            self.stats.latency_spikes += 1;
            return self.rng.between(20_000_000, 200_000_000);
        }
        self.rng.between(10_000, 1_000_000)
    }

    fn file(&mut self, path: &PathBuf) -> &File {
        self.files.entry(path.clone()).or_insert_with(|| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .unwrap_or_else(|e| panic!("sim disk: open {}: {e}", path.display()))
        })
    }

    /// Writes `bytes` at `offset` of `path`, remembering what they replaced.
    fn apply(&mut self, path: &PathBuf, offset: u64, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let file = self.file(path);
        let mut old = vec![0u8; bytes.len()];
        let mut got = 0;
        while got < old.len() {
            match file.read_at(&mut old[got..], offset + got as u64) {
                Ok(0) => break, // past the end: zeros
                Ok(n) => got += n,
                Err(e) => panic!("sim disk: read {}: {e}", path.display()),
            }
        }
        file.write_all_at(bytes, offset)
            .unwrap_or_else(|e| panic!("sim disk: write {}: {e}", path.display()));
        self.applied += 1;
        self.dirty.push(Dirty {
            path: path.clone(),
            offset,
            old,
            applied: self.applied,
            lost: false,
        });
    }

    fn put_back(&mut self, path: &PathBuf, offset: u64, old: &[u8]) {
        self.file(path)
            .write_all_at(old, offset)
            .unwrap_or_else(|e| panic!("sim disk: restore {}: {e}", path.display()));
        self.stats.bytes_lost += old.len() as u64;
    }

    /// Completes the operation due first, advancing the clock to it.
    pub fn complete_next(&mut self) -> Option<Completion> {
        let at = (0..self.ops.len()).min_by_key(|&i| (self.ops[i].due_ns, self.ops[i].id))?;
        let op = self.ops.remove(at);
        self.now_ns = self.now_ns.max(op.due_ns);
        let (result, buf) = match op.what {
            What::Write {
                path,
                offset,
                buf,
                from,
            } => {
                self.stats.writes += 1;
                let len = buf.len() - from;
                let result = if self.rng.chance(self.faults.write_eio) {
                    self.stats.write_eio += 1;
                    -libc::EIO
                } else if self.rng.chance(self.faults.write_enospc) {
                    self.stats.write_enospc += 1;
                    -libc::ENOSPC
                } else if len > 1 && self.rng.chance(self.faults.short_write) {
                    self.stats.short_writes += 1;
                    // Sometimes on a sector boundary, sometimes anywhere.
                    let n = if len > 512 && self.rng.chance(0.5) {
                        (self.rng.between(1, len as u64 - 1) as usize / 512).max(1) * 512
                    } else {
                        self.rng.between(1, len as u64 - 1) as usize
                    };
                    n.min(len - 1) as i32
                } else {
                    len as i32
                };
                if result > 0 {
                    self.apply(&path, offset, &buf[from..from + result as usize]);
                }
                let applied = self.applied;
                for other in &mut self.ops {
                    if let What::Sync {
                        after,
                        cancelled,
                        covers,
                        ..
                    } = &mut other.what
                        && *after == op.id
                    {
                        *cancelled = result != len as i32;
                        *covers = applied;
                    }
                }
                (result, Some(buf))
            }
            What::Sync {
                path,
                cancelled,
                covers,
                ..
            } => {
                self.stats.syncs += 1;
                if cancelled {
                    self.stats.syncs_cancelled += 1;
                    (-libc::ECANCELED, None)
                } else if self.rng.chance(self.faults.sync_eio) {
                    self.stats.sync_eio += 1;
                    // Linux: the pages are marked clean, not written.
                    for d in self.dirty.iter_mut() {
                        if d.path == path && d.applied <= covers {
                            d.lost = true;
                        }
                    }
                    (-libc::EIO, None)
                } else {
                    // A later fsync does not bring back what a failed one
                    // marked clean.
                    self.dirty
                        .retain(|d| d.path != path || d.applied > covers || d.lost);
                    (0, None)
                }
            }
        };
        Some(Completion {
            token: op.token,
            result,
            buf,
            more: false,
            notif: false,
        })
    }

    /// A crash: decides what of every unsynced and in-flight write the disk
    /// keeps, then forgets every operation and open file.
    pub fn crash(&mut self, crash: Crash) {
        for op in std::mem::take(&mut self.ops) {
            if let What::Write {
                path,
                offset,
                buf,
                from,
            } = op.what
                && self.rng.chance(0.5)
            {
                // A buffered write copies page by page, so a write cut
                // short by the crash ends on a page boundary of the file.
                let len = (buf.len() - from) as u64;
                let cut = self.rng.between(0, len);
                // (A write that finished but was not reaped lands whole.)
                let n = if cut == len {
                    len as usize
                } else {
                    ((offset + cut) / 4096 * 4096)
                        .saturating_sub(offset)
                        .min(len) as usize
                };
                if n > 0 {
                    self.stats.torn_in_flight += 1;
                    self.apply(&path, offset, &buf[from..from + n]);
                }
            }
        }
        self.settle(crash);
    }

    /// A WAL was opened again without a crash (a receiver's new
    /// connection): its recovery synced every segment and dropped the last
    /// one's clean cached pages, so what is dirty is now on the disk, and
    /// what a failed fdatasync marked clean is gone.
    pub fn recovered(&mut self) {
        assert!(
            self.ops.is_empty(),
            "a WAL reopened with operations in flight"
        );
        self.settle(Crash::Process);
    }

    /// Decides what of the unsynced writes the disk keeps.
    fn settle(&mut self, crash: Crash) {
        let block = if self.rng.chance(0.5) { 512 } else { 4096 };
        // Pages a failed fdatasync marked clean go back to what the disk
        // holds, unless a later write dirtied them again: the page cache
        // then writes the whole page back, the old bytes with the new.
        let redirtied: HashSet<(PathBuf, u64)> = self
            .dirty
            .iter()
            .filter(|d| !d.lost)
            .flat_map(|d| {
                let first = d.offset / PAGE;
                let last = (d.offset + d.old.len() as u64 - 1) / PAGE;
                (first..=last).map(move |page| (d.path.clone(), page))
            })
            .collect();
        // One decision per block of a file, whatever writes share it: the
        // disk writes a block as the page cache holds it, all of its
        // writes or none.
        let mut kept: HashMap<(PathBuf, u64), bool> = HashMap::new();
        // Newest first, so each put-back restores what the one before it
        // left.
        for d in std::mem::take(&mut self.dirty).into_iter().rev() {
            let end = d.offset + d.old.len() as u64;
            let mut at = d.offset;
            while at < end {
                // Pieces within one page and one block.
                let to = end
                    .min((at / block + 1) * block)
                    .min((at / PAGE + 1) * PAGE);
                let keep = if d.lost && !redirtied.contains(&(d.path.clone(), at / PAGE)) {
                    false
                } else if crash == Crash::Process {
                    true
                } else {
                    let rng = &mut self.rng;
                    let stats = &mut self.stats;
                    *kept.entry((d.path.clone(), at / block)).or_insert_with(|| {
                        let keep = rng.chance(0.5);
                        if keep {
                            stats.blocks_kept += 1;
                        } else {
                            stats.blocks_lost += 1;
                        }
                        keep
                    })
                };
                if !keep {
                    let old = d.old[(at - d.offset) as usize..(to - d.offset) as usize].to_vec();
                    self.put_back(&d.path, at, &old);
                }
                at = to;
            }
        }
        self.files.clear();
    }

    fn hold(&mut self, token: Token, delay_after: Option<u64>, what: What) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let latency = self.latency_ns();
        let start = delay_after.unwrap_or(self.now_ns);
        self.ops.push(Pending {
            id,
            token,
            due_ns: start + latency,
            what,
        });
        id
    }

    fn due_of(&self, id: u64) -> u64 {
        self.ops
            .iter()
            .find(|o| o.id == id)
            .map_or(self.now_ns, |o| o.due_ns)
    }
}

/// The path a descriptor names, as the kernel says.
fn path_of(fd: &impl AsRawFd) -> PathBuf {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .expect("sim disk: the path of a WAL file descriptor")
}

/// The page cache's unit.
const PAGE: u64 = 4096;

/// The disk's half of the I/O seam (`host::Host` joins it to the network's):
/// the WAL writer's commit and its inline write.
impl SimDisk {
    /// See [`Io::write_then_datasync`].
    pub fn write_then_datasync(
        &mut self,
        fd: &impl AsRawFd,
        buf: Vec<u8>,
        from: usize,
        offset: u64,
        write_token: Token,
        sync_token: Option<Token>,
    ) -> Result<(), (QueueFull, Vec<u8>)> {
        let path = path_of(fd);
        let write = self.hold(
            write_token,
            None,
            What::Write {
                path: path.clone(),
                offset: offset + from as u64,
                buf,
                from,
            },
        );
        if let Some(token) = sync_token {
            // Linked: it starts once the write is done.
            let start = self.due_of(write);
            self.hold(
                token,
                Some(start),
                What::Sync {
                    path,
                    after: write,
                    cancelled: false,
                    covers: 0,
                },
            );
        }
        Ok(())
    }

    /// See [`Io::write_now`].
    pub fn write_now(&mut self, file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
        let path = path_of(file);
        self.apply(&path, offset, bytes);
        Ok(())
    }
}
