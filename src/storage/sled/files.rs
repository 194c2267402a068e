//! The files of a sled store as the operating system sees them: what an
//! interrupted checkpoint leaves behind, the modes of the directory and its
//! files, and the words for the faults a file system reports (a full disk,
//! a lock held by another process).
//!
//! Nothing here reads or writes sled's data: it runs before sled opens a
//! database, or after it let go of it.

use std::io;
use std::path::Path;

use super::SledBackend;
use crate::error::{Error, IoError, Result};

/// The mode of the store directory (and of every directory in it).
#[cfg(unix)]
const DIR_MODE: u32 = 0o700;
/// The mode of every file in the store directory.
#[cfg(unix)]
const FILE_MODE: u32 = 0o600;

pub(crate) use crate::error::{io_error, is_disk_full};

/// Whether a storage error is sled's file lock being held elsewhere.
fn is_lock_held(e: &Error) -> bool {
    matches!(e, Error::Io(m) if m.contains("could not acquire lock"))
}

/// The one sentence for a store whose lock another process holds.
pub(super) fn lock_held(path: &Path) -> Error {
    Error::Io(IoError::from(format!(
        "the store {} is held by another process (a running `tokenvault serve`, or \
         another program using it); stop that process, or go through its HTTP API",
        path.display()
    )))
}

/// Opens the sled database of a store: removes what an interrupted
/// checkpoint left behind, makes the directory private, makes the disk
/// hold what reads return if a sync failed since the last open (see
/// [`super::resync`]), opens sled, removes the tokens whose issue failed,
/// then tightens the modes of every file in the directory (sled creates
/// files with the process's umask).
pub(crate) fn open(path: Option<&Path>, cache_bytes: u64) -> Result<SledBackend> {
    open_as(path, cache_bytes, false)
}

/// Opens the sled database of an existing store to read only (see
/// `Config::read_only`): as [`open`], except that the directory must exist,
/// the warm-start files and their marker are kept, and the backend refuses
/// every write. Recovery may still write: sled's own, and what follows a
/// failed sync on this boot (which also takes the warm-start marker out,
/// as the tokens of failed issues are removed).
pub(crate) fn open_read_only(path: &Path, cache_bytes: u64) -> Result<SledBackend> {
    open_as(Some(path), cache_bytes, true).map_err(|mut e| {
        // The open itself wrote: recovery (sled's log replay after an
        // unclean stop, or the rewrite after a failed sync).
        if let Error::Io(m) = &mut e {
            if m.message().starts_with("the disk is full") {
                m.message_mut().push_str(
                    " (the store was opened to read only, but the open needed room to recover \
                     it after an unclean stop)",
                );
            }
        }
        e
    })
}

fn open_as(path: Option<&Path>, cache_bytes: u64, read_only: bool) -> Result<SledBackend> {
    // Held until sled holds its own lock (see `lock_dir`).
    let mut failed = Vec::new();
    let _opening = match path {
        Some(p) => {
            if !read_only {
                make_private_dir(p)?;
            }
            let guard = lock_dir(p)?;
            remove_leftovers(p)?;
            if let Some(ids) = super::resync::pending(p)? {
                super::resync::rewrite(p)?;
                failed = ids;
            }
            Some(guard)
        }
        None => None,
    };
    // Removing the tokens of failed issues changes the records: the
    // warm-start files no longer hold what sled holds.
    let keep_warm = read_only && failed.is_empty();
    let mut backend =
        SledBackend::open_keeping_warm(path, cache_bytes, keep_warm).map_err(|e| match path {
            Some(p) if is_lock_held(&e) => lock_held(p),
            _ => e,
        })?;
    if let Some(p) = path {
        if !failed.is_empty() {
            backend.remove_failed_issues(&failed)?;
        }
        super::resync::clear(p)?;
        tighten(p)?;
    }
    backend.read_only = read_only;
    Ok(backend)
}

/// Takes an exclusive lock on the store directory (`flock`, which also
/// keeps two opens in one process apart), waiting up to
/// [`super::LOCK_WAIT`] for it; then the error that another process holds
/// the store. Held while a database is being opened: sled 0.34.7 writes
/// and reads its `conf` file before it takes its own lock (a second creator
/// could read it half written, as corrupt), and an open in progress may be
/// writing a snapshot that another open must not take for a leftover.
pub(crate) fn lock_dir(p: &Path) -> Result<std::fs::File> {
    let dir = std::fs::File::open(p).map_err(io_error)?;
    let deadline = std::time::Instant::now() + super::LOCK_WAIT;
    loop {
        match dir.try_lock() {
            Ok(()) => return Ok(dir),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => return Err(lock_held(p)),
            Err(std::fs::TryLockError::Error(e)) => return Err(io_error(e)),
        }
    }
}

/// Whether an error is [`lock_held`]'s.
pub(crate) fn is_held_elsewhere(e: &Error) -> bool {
    matches!(e, Error::Io(m) if m.contains("is held by another process"))
}

/// Creates the store directory with mode 0700 if it is missing (its parents
/// with the default mode), or sets that mode on an existing one.
fn make_private_dir(p: &Path) -> Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = p.parent().filter(|q| !q.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(io_error)?;
            }
            let mut b = std::fs::DirBuilder::new();
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut b, DIR_MODE);
            match b.create(p) {
                Ok(()) => Ok(()),
                // Another process made it meanwhile.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(io_error(e)),
            }
        }
        Err(e) => Err(io_error(e)),
    }
}

/// Whether a file name is a snapshot sled was writing and had not yet
/// renamed into place (`snap.<16 hex digits>.generating`).
fn is_generating(name: &str) -> bool {
    name.strip_prefix("snap.")
        .and_then(|rest| rest.strip_suffix(".generating"))
        .is_some_and(|lsn| !lsn.is_empty() && lsn.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Removes every `snap.*.generating` file of the database at `p`, then
/// syncs the directory. Returns how many there were.
///
/// sled 0.34.7 writes a snapshot only while it opens a database
/// (`pagecache/snapshot.rs`, `advance_snapshot` → `write_snapshot`): to
/// `snap.<lsn>.generating`, fsynced, then renamed to `snap.<lsn>`, and only
/// then are older snapshots removed, before the open returns and before
/// anything else writes. A file still named `.generating` is therefore
/// the mark of an open that never finished (a full disk, a crash, a power
/// cut): the older snapshot it was to replace is still there, and so is
/// every log segment that snapshot needs, so without the leftover sled
/// recovers exactly what that open had read. sled itself does not skip
/// the leftover (its snapshot lookup takes the highest name, and
/// `.generating` sorts last), and an incomplete one fails every later open
/// as corrupt.
pub(crate) fn remove_leftovers(p: &Path) -> Result<usize> {
    let entries = match std::fs::read_dir(p) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_error(e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(io_error)?;
        let name = entry.file_name();
        if !name.to_str().is_some_and(is_generating) {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::Io(IoError::with_source(
                    format!(
                        "cannot remove the unfinished snapshot {}: {e}",
                        entry.path().display()
                    ),
                    e,
                )))
            }
        }
    }
    if removed > 0 {
        sync_dir(p)?;
    }
    Ok(removed)
}

/// Makes a directory's entries (files created, renamed or removed in it)
/// durable.
pub(crate) fn sync_dir(p: &Path) -> Result<()> {
    let dir = std::fs::File::open(p).map_err(io_error)?;
    dir.sync_all().map_err(io_error)
}

/// Sets mode 0700 on the directory `p` and every directory in it, and 0600
/// on every file, whatever the umask they were made with. Symbolic links are
/// left alone (sled makes none). A file that vanishes meanwhile is skipped.
#[cfg(unix)]
pub(crate) fn tighten(p: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let set = |q: &Path, mode: u32| -> Result<()> {
        match std::fs::set_permissions(q, std::fs::Permissions::from_mode(mode)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Io(IoError::with_source(
                format!("cannot set the mode of {} to {mode:o}: {e}", q.display()),
                e,
            ))),
        }
    };
    let mut dirs = vec![p.to_path_buf()];
    while let Some(d) = dirs.pop() {
        set(&d, DIR_MODE)?;
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_error)?;
            let Ok(ty) = entry.file_type() else { continue };
            let meta_mode = entry.metadata().map(|m| m.permissions().mode() & 0o7777);
            if ty.is_dir() {
                dirs.push(entry.path());
            } else if ty.is_file() && meta_mode.map_or(true, |m| m != FILE_MODE) {
                set(&entry.path(), FILE_MODE)?;
            }
        }
    }
    Ok(())
}

#[cfg(not(unix))]
pub(crate) fn tighten(_p: &Path) -> Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// An open waits while another holds the store directory's lock (two
    /// creators at once: the second must not read sled's `conf` while the
    /// first writes it), and goes on once it is let go within the wait.
    #[test]
    fn an_open_waits_for_the_directory_lock() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("db");
        make_private_dir(&p).unwrap();
        let held = lock_dir(&p).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let q = p.clone();
        let opener = std::thread::spawn(move || {
            let opened = open(Some(&q), 1 << 20).map(drop);
            tx.send(()).unwrap();
            opened
        });
        let waited = rx.recv_timeout(std::time::Duration::from_millis(300));
        assert!(
            waited.is_err(),
            "the open went ahead while the lock was held"
        );
        drop(held);
        assert!(opener.join().unwrap().is_ok());
    }

    /// A lock held past the wait (another process opening, or holding the
    /// directory for its own reasons) is answered, not waited for forever.
    #[test]
    fn an_open_gives_up_on_a_lock_held_past_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("db");
        make_private_dir(&p).unwrap();
        let held = lock_dir(&p).unwrap();
        let e = open(Some(&p), 1 << 20).map(drop).unwrap_err();
        assert_eq!(e.kind(), "io");
        assert!(e.to_string().contains("held by another process"), "{e}");
        drop(held);
        open(Some(&p), 1 << 20).unwrap();
    }

    #[test]
    fn generating_names() {
        assert!(is_generating("snap.FFFFFFFFFFFFFFFF.generating"));
        assert!(is_generating("snap.0000000000001A2B.generating"));
        assert!(!is_generating("snap.0000000000001A2B"));
        assert!(!is_generating("snap..generating"));
        assert!(!is_generating("snap.xyz.generating"));
        assert!(!is_generating("db"));
        assert!(!is_generating("conf"));
    }

    #[test]
    fn disk_full_errors_say_so() {
        let e = io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(is_disk_full(&e));
        let msg = io_error(io::Error::from_raw_os_error(libc::ENOSPC)).to_string();
        assert!(msg.contains("the disk is full"), "{msg}");
        assert_eq!(
            io_error(io::Error::from_raw_os_error(libc::ENOSPC)).kind(),
            "io"
        );
        let q = io::Error::from_raw_os_error(libc::EDQUOT);
        assert!(is_disk_full(&q));
        // sled hands its sticky error on rebuilt from kind and text.
        let rebuilt = io::Error::new(e.kind(), format!("{e:?}"));
        assert!(is_disk_full(&rebuilt));
        let other = io::Error::from_raw_os_error(libc::EIO);
        assert!(!is_disk_full(&other));
        assert!(!io_error(other).to_string().contains("disk is full"));
    }

    #[test]
    fn leftovers_go_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        for name in [
            "snap.FFFFFFFFFFFFFFFF.generating",
            "snap.00000000000000A0.generating",
        ] {
            std::fs::write(p.join(name), b"").unwrap();
        }
        for name in ["snap.00000000000000A0", "db", "conf", "x.generating"] {
            std::fs::write(p.join(name), b"keep").unwrap();
        }
        assert_eq!(remove_leftovers(p).unwrap(), 2);
        let mut left: Vec<String> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["conf", "db", "snap.00000000000000A0", "x.generating"]
        );
        assert_eq!(remove_leftovers(p).unwrap(), 0);
        assert_eq!(remove_leftovers(&p.join("missing")).unwrap(), 0);
    }
}
