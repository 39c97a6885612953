//! The watermarks a WAL last recorded, persisted beside its segments.
//!
//! `DIR/K/watermarks` holds the WAL's id and the highest durable and acked
//! seqs it has reported, so that a restart, retention and `status` know
//! them without asking the peer, and recovery can tell a torn tail (records
//! past the recorded durable seq) from lost data (records at or below it
//! missing: a segment shortened or deleted). The file is replaced
//! atomically: written as `watermarks.tmp`, fsynced, renamed over, and the
//! directory fsynced. It is written off the data path, at most once per
//! [`WATERMARKS_PERSIST_INTERVAL_MS`], by one background thread per process,
//! and once more when the WAL closes; the recorded values therefore trail
//! the real ones, never lead them.
//!
//! Layout (little-endian, 64 bytes):
//!
//! ```text
//!  0   8   magic        b"RSHIPWMK"
//!  8   4   version      1
//!  12  4   flags        bit 0: page cache only (see below); others zero
//!  16  16  wal_id
//!  32  8   durable_seq
//!  40  8   acked_seq    0 without a sink
//!  48  4   crc32c       over bytes 0 .. 48
//!  52  12  zero
//! ```
//!
//! **`--durability none`.** There "durable" means written to the page cache,
//! which a machine crash may lose while the renamed file survives. Such a
//! WAL records its watermarks with the *page cache only* flag, and recovery
//! takes a shortfall against them as the loss that mode accepts, with a
//! warning, rather than refusing the WAL.
//!
//! **Retention.** The acked seq is the one value whose lag could wrong
//! recovery: a segment deleted as acknowledged before the file says so would
//! look lost after a crash. So retention records the acked seq
//! ([`Marks::persist_acked`]) before it deletes anything.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use crate::constants::WATERMARKS_PERSIST_INTERVAL_MS;
use crate::wal::segment::WalId;

/// The file's name in a shard directory.
pub const WATERMARKS_FILE_NAME: &str = "watermarks";
const TMP_NAME: &str = "watermarks.tmp";
const MAGIC: [u8; 8] = *b"RSHIPWMK";
const VERSION: u32 = 1;
const FILE_BYTES: usize = 64;
const FLAG_PAGE_CACHE_ONLY: u32 = 1;

/// What a WAL last recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Recorded {
    pub wal_id: WalId,
    pub durable_seq: u64,
    pub acked_seq: u64,
    /// The WAL runs with `--durability none`: its durable seq survives a
    /// process crash, not a machine crash.
    pub page_cache_only: bool,
}

impl Recorded {
    fn encode(&self) -> [u8; FILE_BYTES] {
        let mut b = [0u8; FILE_BYTES];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        let flags = if self.page_cache_only {
            FLAG_PAGE_CACHE_ONLY
        } else {
            0
        };
        b[12..16].copy_from_slice(&flags.to_le_bytes());
        b[16..32].copy_from_slice(&self.wal_id.0.to_le_bytes());
        b[32..40].copy_from_slice(&self.durable_seq.to_le_bytes());
        b[40..48].copy_from_slice(&self.acked_seq.to_le_bytes());
        let crc = crc32c::crc32c(&b[..48]);
        b[48..52].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Result<Recorded, String> {
        if b.len() != FILE_BYTES || b[0..8] != MAGIC {
            return Err("not a ringship watermarks file".into());
        }
        let crc = u32::from_le_bytes(b[48..52].try_into().expect("4 bytes"));
        if crc != crc32c::crc32c(&b[..48]) {
            return Err("its crc32c does not match: the file is corrupt".into());
        }
        let version = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(format!(
                "format version {version}, this build reads {VERSION}"
            ));
        }
        let flags = u32::from_le_bytes(b[12..16].try_into().expect("4 bytes"));
        if flags & !FLAG_PAGE_CACHE_ONLY != 0 || b[52..].iter().any(|&x| x != 0) {
            return Err(format!(
                "unknown flags {flags:#x} or padding: the file is corrupt"
            ));
        }
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Ok(Recorded {
            wal_id: WalId(u128::from_le_bytes(b[16..32].try_into().expect("16 bytes"))),
            durable_seq: u64_at(32),
            acked_seq: u64_at(40),
            page_cache_only: flags & FLAG_PAGE_CACHE_ONLY != 0,
        })
    }
}

/// Reads what the WAL in `shard_dir` last recorded; `Ok(None)` when it
/// recorded nothing (a new WAL, or one a version-1 build wrote).
pub fn read(shard_dir: &Path) -> Result<Option<Recorded>, (PathBuf, String)> {
    let path = shard_dir.join(WATERMARKS_FILE_NAME);
    match std::fs::read(&path) {
        Ok(bytes) => Recorded::decode(&bytes)
            .map(Some)
            .map_err(|why| (path, why)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err((path, e.to_string())),
    }
}

/// Writes `recorded` to `shard_dir` atomically (tmp, fsync, rename, fsync
/// of the directory). A page-cache-only recording is synced too: its values
/// may be ahead of the disk, but the file itself must never come back from
/// a crash empty, which some filesystems do to a file renamed unsynced.
pub fn write(shard_dir: &Path, recorded: &Recorded) -> io::Result<()> {
    let tmp = shard_dir.join(TMP_NAME);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    crate::wal::fsops::created(&tmp);
    file.write_all(&recorded.encode())?;
    file.sync_all()?;
    crate::wal::fsops::rename(&tmp, &shard_dir.join(WATERMARKS_FILE_NAME))?;
    crate::wal::fsops::sync_dir(shard_dir)
}

/// A WAL's live watermarks: the writer stores into them on the data path
/// (an atomic store), the persister writes them out in the background.
#[derive(Debug)]
pub struct Marks {
    shard_dir: PathBuf,
    durable_seq: AtomicU64,
    acked_seq: AtomicU64,
    /// What the file holds now, so an unchanged state is not rewritten.
    written: Mutex<Recorded>,
    /// The WAL has failed: its watermarks are no longer trusted enough to
    /// move the file forward.
    frozen: AtomicBool,
    /// The WAL has closed ([`Marks::close`]): the persister leaves the file
    /// alone, since another writer may own the directory now.
    closed: AtomicBool,
}

impl Marks {
    /// Starts persisting the watermarks of the WAL in `shard_dir`, from
    /// what it last recorded.
    pub fn start(shard_dir: &Path, recorded: Recorded) -> Arc<Marks> {
        let marks = Arc::new(Marks {
            shard_dir: shard_dir.to_path_buf(),
            durable_seq: AtomicU64::new(recorded.durable_seq),
            acked_seq: AtomicU64::new(recorded.acked_seq),
            written: Mutex::new(recorded),
            frozen: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        });
        persister()
            .lock()
            .expect("not poisoned")
            .push(Arc::downgrade(&marks));
        marks
    }

    pub fn set_durable(&self, seq: u64) {
        self.durable_seq.fetch_max(seq, Ordering::Relaxed);
    }

    pub fn set_acked(&self, seq: u64) {
        self.acked_seq.fetch_max(seq, Ordering::Relaxed);
    }

    /// Stops moving the file forward (a failed fdatasync: what the WAL
    /// reported may not all be on the disk).
    pub fn freeze(&self) {
        // Under the write lock: a persist already past its check finishes
        // before this returns, and none starts after.
        let _written = self.written.lock().expect("not poisoned");
        self.frozen.store(true, Ordering::SeqCst);
    }

    /// Writes the current values if they changed. Errors are logged: the
    /// file only ever trails the truth, so a missed write costs nothing but
    /// freshness.
    pub fn persist(&self) {
        let _ = self.persist_checked();
    }

    /// Makes sure the file records an acked seq of at least `seq` (if the
    /// marks hold one), writing it now if need be; false if it could not.
    /// Retention calls it before deleting segments acknowledged up to `seq`.
    pub fn persist_acked(&self, seq: u64) -> bool {
        if self.written.lock().expect("not poisoned").acked_seq >= seq {
            return true;
        }
        self.persist_checked().is_ok()
            && self.written.lock().expect("not poisoned").acked_seq >= seq
    }

    /// The WAL closes: a last write, after which the file is left alone.
    /// Called before the WAL's lock is released.
    pub fn close(&self) {
        let _ = self.persist_checked();
        self.closed.store(true, Ordering::SeqCst);
    }

    fn persist_checked(&self) -> io::Result<()> {
        // The lock first: a write that read older values must not land
        // after one that read newer ones.
        let mut written = self.written.lock().expect("not poisoned");
        if self.frozen.load(Ordering::SeqCst) || self.closed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let now = Recorded {
            durable_seq: self.durable_seq.load(Ordering::Relaxed),
            acked_seq: self.acked_seq.load(Ordering::Relaxed),
            ..*written
        };
        if *written == now {
            return Ok(());
        }
        match write(&self.shard_dir, &now) {
            Ok(()) => {
                *written = now;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(dir = %self.shard_dir.display(), "recording the watermarks: {e}");
                Err(e)
            }
        }
    }
}

/// The process's persister: the marks of every open WAL, written every
/// interval by one thread.
fn persister() -> &'static Mutex<Vec<Weak<Marks>>> {
    static MARKS: OnceLock<Mutex<Vec<Weak<Marks>>>> = OnceLock::new();
    MARKS.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("ringship-watermarks".into())
            .spawn(|| {
                loop {
                    // Off the data path: a slow disk delays only the file.
                    std::thread::sleep(Duration::from_millis(WATERMARKS_PERSIST_INTERVAL_MS));
                    let live: Vec<Arc<Marks>> = {
                        let mut list = persister().lock().expect("not poisoned");
                        list.retain(|w| w.strong_count() > 0);
                        list.iter().filter_map(Weak::upgrade).collect()
                    };
                    for marks in live {
                        marks.persist();
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the watermarks thread ({e}): watermarks are recorded only when a WAL closes");
        }
        Mutex::new(Vec::new())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recording_round_trips_and_damage_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(read(tmp.path()).unwrap(), None, "nothing recorded yet");
        for page_cache_only in [false, true] {
            let recorded = Recorded {
                wal_id: WalId(0x1234_5678_9abc_def0_1122_3344_5566_7788),
                durable_seq: 42,
                acked_seq: 40,
                page_cache_only,
            };
            write(tmp.path(), &recorded).unwrap();
            assert_eq!(read(tmp.path()).unwrap(), Some(recorded));
        }
        assert!(!tmp.path().join(TMP_NAME).exists());
        let path = tmp.path().join(WATERMARKS_FILE_NAME);
        let good = std::fs::read(&path).unwrap();
        for at in [0, 9, 13, 33, 50, 60] {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            std::fs::write(&path, &bad).unwrap();
            assert!(read(tmp.path()).is_err(), "a flip at byte {at} passed");
        }
        std::fs::write(&path, &good[..63]).unwrap();
        assert!(read(tmp.path()).is_err(), "a short file passed");
    }

    #[test]
    fn marks_only_move_forward_and_stop_when_frozen() {
        let tmp = tempfile::tempdir().unwrap();
        let marks = Marks::start(tmp.path(), Recorded::default());
        marks.set_durable(10);
        marks.set_durable(7);
        marks.set_acked(5);
        marks.persist();
        let got = read(tmp.path()).unwrap().unwrap();
        assert_eq!((got.durable_seq, got.acked_seq), (10, 5));
        marks.freeze();
        marks.set_durable(20);
        drop(marks);
        assert_eq!(read(tmp.path()).unwrap().unwrap().durable_seq, 10);
    }
}
