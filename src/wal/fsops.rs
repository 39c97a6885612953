//! The WAL's synchronous directory operations: creating a file, renaming
//! one into place, syncing a directory, reserving a segment's space.
//!
//! In a release build each is the plain syscall. In test builds a thread
//! may switch on a *journal* (the simulator, `crate::sim`), which then
//! models what a directory fsync means:
//!
//! - a file created or renamed into a directory is durable only once the
//!   directory is synced; at a machine crash the journal undoes, newest
//!   first, every create and rename not yet covered by one (a renamed file
//!   goes back under its old name, a file it replaced comes back);
//! - a directory sync may be the point a crash strikes (the sync fails as
//!   if the machine died there, and the simulator crashes it);
//! - the disk holds a given number of segments: reserving one more fails
//!   with ENOSPC until the simulator frees space.
//!
//! Not modelled: deletions (retention's, recovery's removal of leftovers),
//! which a crash before the directory sync would bring back.

use std::fs::File;
use std::io;
use std::path::Path;

/// Notes a file just created in its directory.
pub(crate) fn created(path: &Path) {
    #[cfg(test)]
    journal::created(path);
    let _ = path;
}

/// `rename(from, to)`.
pub(crate) fn rename(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(test)]
    let before = journal::active().then(|| std::fs::read(to).ok()).flatten();
    std::fs::rename(from, to)?;
    #[cfg(test)]
    journal::renamed(from, to, before);
    Ok(())
}

/// fsync of a directory, so that entries created or renamed in it are
/// durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(test)]
    journal::syncing(dir)?;
    File::open(dir)?.sync_all()
}

/// Before a segment's space is reserved: ENOSPC when the simulated disk is
/// full.
pub(crate) fn reserving_segment() -> io::Result<()> {
    #[cfg(test)]
    journal::reserving()?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod journal {
    use std::cell::RefCell;
    use std::path::{Path, PathBuf};

    /// A directory change not yet covered by a sync of its directory.
    enum Change {
        Created(PathBuf),
        /// Renamed from → to; what `to` held before, if it existed.
        Renamed(PathBuf, PathBuf, Option<Vec<u8>>),
    }

    pub(crate) struct Journal {
        changes: Vec<Change>,
        rng: crate::sim::rng::Rng,
        /// Chance that a directory sync is where a crash strikes.
        pub crash_at_sync: f64,
        /// Segments the disk has room for (None: no limit).
        pub segments_room: Option<u64>,
        pub segments: u64,
        /// A crash was injected: the caller must crash the machine.
        pub crashed: bool,
        pub crashes_injected: u64,
        pub creates_undone: u64,
        pub renames_undone: u64,
        pub enospc: u64,
    }

    thread_local! {
        static JOURNAL: RefCell<Option<Journal>> = const { RefCell::new(None) };
    }

    /// Switches the journal on for this thread.
    pub(crate) fn start(seed: u64, crash_at_sync: f64, segments_room: Option<u64>) {
        JOURNAL.with(|j| {
            *j.borrow_mut() = Some(Journal {
                changes: Vec::new(),
                rng: crate::sim::rng::Rng::new(seed),
                crash_at_sync,
                segments_room,
                segments: 0,
                crashed: false,
                crashes_injected: 0,
                creates_undone: 0,
                renames_undone: 0,
                enospc: 0,
            })
        });
    }

    /// Switches it off, returning it.
    pub(crate) fn stop() -> Option<Journal> {
        JOURNAL.with(|j| j.borrow_mut().take())
    }

    pub(super) fn with<R>(f: impl FnOnce(&mut Journal) -> R) -> Option<R> {
        JOURNAL.with(|j| j.borrow_mut().as_mut().map(f))
    }

    /// Whether a crash was injected since the last call.
    pub(crate) fn take_crashed() -> bool {
        with(|j| std::mem::take(&mut j.crashed)).unwrap_or(false)
    }

    /// Room for `n` more segments from now (the operator freed space), or
    /// no limit.
    pub(crate) fn set_room(n: Option<u64>) {
        with(|j| j.segments_room = n.map(|n| j.segments + n));
    }

    /// Sets the chance a directory sync is where a crash strikes.
    pub(crate) fn with_crash_at_sync(p: f64) {
        with(|j| j.crash_at_sync = p);
    }

    /// The machine crashed: undo what no directory sync covered.
    pub(crate) fn crash() {
        with(|j| {
            for change in std::mem::take(&mut j.changes).into_iter().rev() {
                match change {
                    Change::Created(path) => {
                        if std::fs::remove_file(&path).is_ok() {
                            j.creates_undone += 1;
                        }
                    }
                    Change::Renamed(from, to, before) => {
                        if std::fs::rename(&to, &from).is_ok() {
                            j.renames_undone += 1;
                        }
                        if let Some(bytes) = before {
                            std::fs::write(&to, bytes).expect("restore a replaced file");
                        }
                    }
                }
            }
        });
    }

    pub(super) fn created(path: &Path) {
        with(|j| j.changes.push(Change::Created(path.to_path_buf())));
    }

    pub(super) fn renamed(from: &Path, to: &Path, before: Option<Vec<u8>>) {
        with(|j| {
            j.changes.push(Change::Renamed(
                from.to_path_buf(),
                to.to_path_buf(),
                before,
            ))
        });
    }

    /// Whether the journal is on (a rename must keep what it replaces).
    pub(super) fn active() -> bool {
        with(|_| ()).is_some()
    }

    /// Before a directory sync: `Err` if a crash strikes here. After it,
    /// the directory's changes are durable.
    pub(super) fn syncing(dir: &Path) -> std::io::Result<()> {
        with(|j| {
            if j.rng.chance(j.crash_at_sync) {
                j.crashed = true;
                j.crashes_injected += 1;
                return Err(std::io::Error::other(
                    "simulated crash before a directory fsync",
                ));
            }
            j.changes.retain(|c| {
                let path = match c {
                    Change::Created(p) | Change::Renamed(_, p, _) => p,
                };
                path.parent() != Some(dir)
            });
            Ok(())
        })
        .unwrap_or(Ok(()))
    }

    pub(super) fn reserving() -> std::io::Result<()> {
        with(|j| {
            if j.segments_room.is_some_and(|room| j.segments >= room) {
                j.enospc += 1;
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
            j.segments += 1;
            Ok(())
        })
        .unwrap_or(Ok(()))
    }
}
