//! Stable storage for a sled 0.34 database directory.
//!
//! sled's `Db::flush` writes its buffers and ends in `sync_file_range` on
//! Linux: the data reaches the kernel and the device queue, not stable
//! storage (neither the file's growth nor the drive's write cache is made
//! durable). sled's own `fsync` comes from its background thread up to
//! half a second later. [`StableFiles::sync`] makes a flushed change durable:
//! `fdatasync` of the `db` file, and `fsync` of any blob file sled created
//! since the last sync (and of their directory).
//!
//! Linux reports a failed writeback once to each open file description.
//! Durable calls sync through a description of this crate's own, opened
//! with the database: no other thread syncs through it, so every failure
//! since the open reaches a durable call as an `Err` (sled's background
//! thread syncs through sled's description and only logs what it meets).
//! sled 0.34.7 also syncs when its database is dropped and panics if that
//! fails: before a drop, [`StableFiles::drain`] syncs through a duplicate of
//! sled's own descriptor (found once at open), so that a failure pending
//! there is met here, as an error, and not again by sled. Then
//! [`StableFiles::release`] points sled's descriptor at an empty in-memory
//! file, so that nothing sled's drop does afterwards (a flush and a sync)
//! reaches the disk or can fail, even if the file system died in between:
//! dropping the database is then what a crash would be at that instant,
//! after everything acknowledged was synced. Where sled's descriptor is
//! not known (not Linux, or it could not be found), a database whose sync
//! keeps failing is never dropped (see `SledBackend`'s `Drop`).

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use crate::error::{Error, IoError, Result};

/// The files of one open database that a durable call syncs.
pub(super) struct StableFiles {
    dir: PathBuf,
    /// sled's `db` file, opened by this crate: durable calls sync it.
    db: File,
    /// A duplicate of sled's own descriptor of the `db` file, where it
    /// could be found: syncs before a drop go through it.
    sleds: Option<File>,
    /// sled's own descriptor of the `db` file (the number it duplicates),
    /// valid as long as the database is open: [`StableFiles::release`]
    /// points it elsewhere before the database is dropped.
    sled_fd: Option<SledFd>,
    /// Blob files already synced.
    blobs: Mutex<HashSet<OsString>>,
}

impl StableFiles {
    /// Finds the files of the database open at `dir`.
    pub(super) fn open(dir: &Path) -> Result<StableFiles> {
        let path = dir.join("db");
        let (sled_fd, sleds) = match sled_descriptor(&path) {
            Some((fd, file)) => (Some(fd), Some(file)),
            None => (None, None),
        };
        let db = File::open(&path).map_err(|e| file_error("open", &path, e))?;
        Ok(StableFiles {
            dir: dir.to_path_buf(),
            db,
            sleds,
            sled_fd,
            blobs: Mutex::new(HashSet::new()),
        })
    }

    /// Makes the database and its directory durable (the directory's
    /// entries and the entries naming it and its ancestors), so that a
    /// store created by this open survives a power cut. Blocks for the
    /// syncs.
    pub(super) fn sync_created(&self) -> Result<()> {
        // sled writes its `conf` file once, at creation, without a sync: a
        // power cut could leave it empty, which sled refuses to open.
        let conf = self.dir.join("conf");
        match File::open(&conf) {
            Ok(f) => f.sync_all().map_err(|e| file_error("sync", &conf, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(file_error("open", &conf, e)),
        }
        self.sync()?;
        // Every ancestor, not only the parent: opening may have created
        // several directories (sled creates the whole path), and each new
        // entry lives in the directory above it. Syncing an ancestor that
        // was already there costs little (opens only).
        for dir in self.dir.ancestors() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            sync_dir(dir)?;
        }
        Ok(())
    }

    /// Makes everything sled has flushed durable. Blocks for the sync.
    pub(super) fn sync(&self) -> Result<()> {
        self.sync_blobs()?;
        self.db
            .sync_data()
            .map_err(|e| file_error("sync", &self.dir.join("db"), e))
    }

    /// Syncs through sled's own file description (or, where it was not
    /// found, this crate's), so that a failure pending there is reported
    /// here rather than to sled's sync when its database is dropped.
    pub(super) fn drain(&self) -> Result<()> {
        self.sleds
            .as_ref()
            .unwrap_or(&self.db)
            .sync_data()
            .map_err(|e| file_error("sync", &self.dir.join("db"), e))
    }

    /// Points sled's own descriptor of the `db` file at an empty in-memory
    /// file, so that the flush and the sync sled's drop does cannot fail
    /// (sled 0.34.7 panics when that sync fails) and reach nothing on
    /// disk. Returns whether it did (false where sled's descriptor is not
    /// known). Call it only after [`StableFiles::drain`], and only right
    /// before the database's last handle is dropped: nothing sled writes
    /// after it is kept, exactly as if the process had been killed here.
    /// Does not block.
    pub(super) fn release(&self) -> bool {
        self.sled_fd.as_ref().is_some_and(SledFd::release)
    }

    /// Makes the directory's entries durable (after sled renamed or removed
    /// a file in it, e.g. the snapshot a checkpoint writes).
    pub(super) fn sync_dir(&self) -> Result<()> {
        sync_dir(&self.dir)
    }

    /// Whether sled's own descriptor of the file was found.
    #[cfg(test)]
    pub(super) fn found_sleds(&self) -> bool {
        self.sleds.is_some()
    }

    /// sled writes values too large for its log into files of their own
    /// under `blobs/`, without syncing them: sync each new one, then the
    /// directory.
    fn sync_blobs(&self) -> Result<()> {
        let dir = self.dir.join("blobs");
        // Listed every time: a directory's modification time is too coarse
        // to tell two files created within one clock tick apart.
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(file_error("list", &dir, e)),
        };
        let mut seen = self.blobs.lock();
        let mut new = false;
        let mut names = HashSet::new();
        for entry in entries {
            let entry = entry.map_err(|e| file_error("list", &dir, e))?;
            let name = entry.file_name();
            if !seen.contains(&name) {
                let path = entry.path();
                match File::open(&path) {
                    Ok(f) => f.sync_all().map_err(|e| file_error("sync", &path, e))?,
                    // sled removed it meanwhile (a blob it no longer needs).
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(file_error("open", &path, e)),
                }
                new = true;
            }
            names.insert(name);
        }
        if new || seen.len() != names.len() {
            sync_dir(&dir)?;
        }
        *seen = names;
        Ok(())
    }
}

impl std::fmt::Debug for StableFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StableFiles")
            .field("dir", &self.dir)
            .field("found_sleds", &self.sleds.is_some())
            .finish_non_exhaustive()
    }
}

/// `fsync` of a directory, so that the files created, renamed or removed
/// in it stay so after a power cut.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| file_error("sync", dir, e))
}

/// An I/O error on one of the store's files, as the crate reports it.
fn file_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    if super::files::is_disk_full(&e) {
        // The words every full disk is reported in.
        super::files::io_error(e)
    } else {
        Error::Io(IoError::with_source(
            format!("cannot {what} {}: {e}", path.display()),
            e,
        ))
    }
}

/// sled's own descriptor of its `db` file: its number in this process.
/// sled keeps it open, under that number, as long as its database is open.
#[derive(Debug)]
pub(super) struct SledFd(#[cfg_attr(not(target_os = "linux"), allow(dead_code))] i32);

impl SledFd {
    /// See [`StableFiles::release`].
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    fn release(&self) -> bool {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        // SAFETY: memfd_create takes a NUL-terminated name and flags; it
        // returns a new descriptor or -1.
        let mem = unsafe { libc::memfd_create(c"tokenvault-released".as_ptr(), libc::MFD_CLOEXEC) };
        if mem < 0 {
            return false;
        }
        // SAFETY: `mem` was just returned by memfd_create and nothing else
        // owns it.
        let mem = unsafe { OwnedFd::from_raw_fd(mem) };
        // SAFETY: `self.0` is sled's descriptor of the `db` file, which sled
        // keeps open (under that number) until the database the caller
        // still holds is dropped, so it names no other file. dup3 replaces
        // what it refers to atomically: a sled thread using it meanwhile
        // uses either file. The descriptor stays open, now on the in-memory
        // file, and sled closes it when its database goes; the lock sled
        // holds goes with the last descriptor of the old file.
        let r = unsafe { libc::dup3(mem.as_raw_fd(), self.0, libc::O_CLOEXEC) };
        r >= 0
    }

    #[cfg(not(target_os = "linux"))]
    fn release(&self) -> bool {
        false
    }
}

/// Lets go of sled's descriptor of `dir`'s `db` file when this crate could
/// not open the files of a database it is dropping (the file system died
/// right after sled opened it): see [`StableFiles::release`]. Returns
/// whether it did.
pub(super) fn release_sleds(dir: &Path) -> bool {
    sled_descriptor(&dir.join("db")).is_some_and(|(fd, _)| fd.release())
}

/// sled's descriptor of `path` and a duplicate of it: the descriptor this
/// process holds open on `path` (sled's, opened by `sled::Config::open`
/// just before; called before this crate opens one of its own), found
/// through `/proc/self/fd`. A duplicate shares the open file description,
/// so a sync through it is a sync through sled's. `None` where there is no
/// such directory or no descriptor names the file; where the file system
/// no longer answers (so the file cannot be told apart by its inode), only
/// if exactly one descriptor names it.
#[cfg(target_os = "linux")]
fn sled_descriptor(path: &Path) -> Option<(SledFd, File)> {
    use std::os::unix::fs::MetadataExt;
    let want = std::fs::metadata(path).ok();
    let target = std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .ok()?;
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").ok()? {
        let Ok(entry) = entry else { continue };
        if std::fs::read_link(entry.path()).ok().as_deref() != Some(target.as_path()) {
            continue;
        }
        let Some(fd) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Some(file) = duplicate(fd) else { continue };
        // The descriptor may have been closed and reused between the
        // listing and the duplicate: keep it only if it is the same file.
        match (&want, file.metadata()) {
            (Some(w), Ok(m)) if m.dev() == w.dev() && m.ino() == w.ino() => {
                return Some((SledFd(fd), file))
            }
            (None, _) => found.push((SledFd(fd), file)),
            _ => continue,
        }
    }
    if found.len() == 1 {
        found.pop()
    } else {
        None
    }
}

#[cfg(not(target_os = "linux"))]
fn sled_descriptor(_path: &Path) -> Option<(SledFd, File)> {
    None
}

/// A new descriptor for the open file description behind `fd`, or `None`
/// if `fd` is not open.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn duplicate(fd: std::os::fd::RawFd) -> Option<File> {
    use std::os::fd::BorrowedFd;
    // SAFETY: `borrow_raw` needs `fd` to stay open while the borrow lives;
    // the borrow lives only for the `F_DUPFD_CLOEXEC` call below, which fails
    // cleanly (EBADF) if another thread closed the descriptor meanwhile, and
    // a descriptor reused for another file in that window is caught by the
    // caller's inode check.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    borrowed.try_clone_to_owned().ok().map(File::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_descriptor_sled_opened_is_found() {
        use std::io::{Seek, Write};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut theirs = File::create(&path).unwrap();
        let files = StableFiles::open(dir.path()).unwrap();
        assert!(files.found_sleds());
        files.sync_created().unwrap();
        // The duplicate shares the open file description: it sees the
        // position the original's writes moved.
        theirs.write_all(b"abc").unwrap();
        let mut dup = files.sleds.as_ref().unwrap();
        assert_eq!(dup.stream_position().unwrap(), 3);
        files.drain().unwrap();
    }

    /// After `release`, the descriptor "sled" holds writes and syncs
    /// without error, and nothing of it reaches the file; the file's lock
    /// goes once the last descriptor of the old file does.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_released_descriptor_reaches_nothing_on_disk() {
        use std::io::{Seek, Write};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut theirs = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap();
        theirs.write_all(b"before").unwrap();
        theirs.lock().unwrap();
        let files = StableFiles::open(dir.path()).unwrap();
        files.drain().unwrap();
        assert!(files.release());
        theirs.seek(std::io::SeekFrom::Start(0)).unwrap();
        theirs.write_all(b"after, lost").unwrap();
        theirs.sync_all().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"before");
        // The lock is still held through the duplicate, then goes with it.
        let other = File::open(&path).unwrap();
        assert!(other.try_lock().is_err());
        drop(files);
        other.try_lock().unwrap();
        drop(theirs);
    }

    #[test]
    fn new_blob_files_are_synced_and_missing_ones_are_no_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db"), b"").unwrap();
        let files = StableFiles::open(dir.path()).unwrap();
        assert!(!files.found_sleds());
        std::fs::create_dir(dir.path().join("blobs")).unwrap();
        std::fs::write(dir.path().join("blobs").join("7"), b"blob").unwrap();
        files.sync().unwrap();
        assert_eq!(files.blobs.lock().len(), 1);
        std::fs::remove_file(dir.path().join("blobs").join("7")).unwrap();
        files.sync().unwrap();
        assert_eq!(files.blobs.lock().len(), 0);
    }

    #[test]
    fn a_full_disk_is_named() {
        let e = file_error(
            "sync",
            Path::new("/x/db"),
            std::io::Error::from_raw_os_error(28),
        );
        assert!(
            matches!(&e, Error::Io(m) if m.starts_with("the disk is full")),
            "{e}"
        );
        let e = file_error(
            "sync",
            Path::new("/x/db"),
            std::io::Error::from_raw_os_error(5),
        );
        assert!(!e.to_string().contains("full"), "{e}");
    }
}
