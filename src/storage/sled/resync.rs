//! After a failed sync, the disk is made to hold what reads return before
//! sled reads its files again.
//!
//! On Linux a failed writeback leaves the pages it could not write in the
//! page cache, marked clean: reads still return them, no later sync writes
//! them, and a restart of the machine loses them. sled, opened again on
//! the same boot, would read its log through those pages, append after
//! them, and make the later records durable but never the hole: a later
//! boot finds a damaged log. So, after a failed sync:
//! - a marker file ([`MARKER`]) is made in the store directory, without a
//!   sync (only this boot can read the stale pages; after a restart the
//!   marker is not needed, and if it survived it costs one rewrite);
//! - before any open of the store reads sled's files again (the store's
//!   own reopen after the fault, or the next process on this boot), every
//!   byte of every file is read and written back in place and synced
//!   ([`rewrite`]), so that sled recovers only from what the disk holds;
//! - refresh tokens whose issue failed are named in the marker: the open
//!   that rewrites removes them if the disk kept them, so that a token
//!   nobody received is never live.
//!
//! The marker goes once all that is durable.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use parking_lot::Mutex;

use crate::error::{Error, IoError, Result};

/// The name of the marker file in the store directory.
pub(super) const MARKER: &str = "unsynced";

/// The first line of a marker (ids of failed issues follow, one per line).
const HEADER: &str = "tokenvault: a sync of this store failed; the next open rewrites its files";

/// What this process noted beside the marker files (for a file system that
/// would not take a marker): directories whose sync failed, with the
/// refresh ids of failed issues in them.
static NOTED: Mutex<Vec<(PathBuf, Vec<[u8; 16]>)>> = Mutex::new(Vec::new());

fn note(dir: &Path, id: Option<&[u8; 16]>) {
    let mut noted = NOTED.lock();
    let at = match noted.iter().position(|(d, _)| d == dir) {
        Some(at) => at,
        None => {
            noted.push((dir.to_path_buf(), Vec::new()));
            noted.len() - 1
        }
    };
    if let Some(id) = id {
        noted[at].1.push(*id);
    }
}

/// Notes that a sync of the store at `dir` failed. Makes nothing durable.
/// Also kept in this process, for a file system that cannot take the
/// marker (such a file system cannot be opened again by another either).
pub(super) fn mark(dir: &Path) {
    note(dir, None);
    let _ = append(dir, "");
}

/// Notes that the issue of refresh token `id` failed: the next open
/// removes it if the disk has it. Best effort, as [`mark`].
pub(super) fn note_failed_issue(dir: &Path, id: &[u8; 16]) {
    note(dir, Some(id));
    let _ = append(dir, &format!("{}\n", hex(id)));
}

fn append(dir: &Path, line: &str) -> io::Result<()> {
    let path = dir.join(MARKER);
    let mut opts = OpenOptions::new();
    opts.append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&path)?;
    if f.metadata()?.len() == 0 {
        f.write_all(format!("{HEADER}\n").as_bytes())?;
    }
    f.write_all(line.as_bytes())
}

fn hex(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 || !s.is_ascii() {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(id)
}

/// The refresh ids of failed issues named by the marker at `dir`, or
/// `None` without a marker. A line that is not an id (a marker cut short)
/// is skipped.
pub(super) fn pending(dir: &Path) -> Result<Option<Vec<[u8; 16]>>> {
    let mut found = NOTED
        .lock()
        .iter()
        .find(|(d, _)| d == dir)
        .map(|(_, ids)| ids.clone());
    match std::fs::read(dir.join(MARKER)) {
        Ok(text) => {
            let text = String::from_utf8_lossy(&text);
            let ids = found.get_or_insert_with(Vec::new);
            ids.extend(text.lines().skip(1).filter_map(unhex));
            ids.sort_unstable();
            ids.dedup();
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(super::files::io_error(e)),
    }
    Ok(found)
}

/// Removes the marker and makes its removal durable.
pub(super) fn clear(dir: &Path) -> Result<()> {
    match std::fs::remove_file(dir.join(MARKER)) {
        Ok(()) => super::files::sync_dir(dir)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(super::files::io_error(e)),
    }
    NOTED.lock().retain(|(d, _)| d != dir);
    Ok(())
}

/// What [`rewrite`] did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Rewritten {
    pub files: u64,
    pub bytes: u64,
    pub seconds: f64,
}

/// Reads every regular file under `dir` (the marker excepted) and writes
/// each chunk back where it was read, then syncs each file and each
/// directory. Must run while no sled database has the files open: it takes
/// sled's own lock on the `db` file (waiting up to the open's lock wait).
/// Blocks for a read and a write of every byte, and the syncs.
pub(super) fn rewrite(dir: &Path) -> Result<Rewritten> {
    let started = Instant::now();
    let _sleds = lock_db_file(dir)?;
    let mut done = Rewritten::default();
    let mut dirs = vec![dir.to_path_buf()];
    let mut buf = vec![0u8; 1 << 20];
    while let Some(d) = dirs.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| file_error("list", &d, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| file_error("list", &d, e))?;
            let path = entry.path();
            let ty = entry
                .file_type()
                .map_err(|e| file_error("read", &path, e))?;
            if ty.is_dir() {
                dirs.push(path);
            } else if ty.is_file() && !(d == dir && entry.file_name() == MARKER) {
                done.bytes += rewrite_file(&path, &mut buf)?;
                done.files += 1;
            }
        }
        File::open(&d)
            .and_then(|f| f.sync_all())
            .map_err(|e| file_error("sync", &d, e))?;
    }
    done.seconds = started.elapsed().as_secs_f64();
    Ok(done)
}

fn rewrite_file(path: &Path, buf: &mut [u8]) -> Result<u64> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| file_error("open", path, e))?;
    let mut at = 0u64;
    loop {
        let n = match f.read_at(buf, at) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(file_error("read", path, e)),
        };
        f.write_all_at(&buf[..n], at)
            .map_err(|e| file_error("rewrite", path, e))?;
        at += n as u64;
    }
    f.sync_all().map_err(|e| file_error("sync", path, e))?;
    Ok(at)
}

/// sled's lock on its `db` file (the same `flock` sled takes), so that no
/// database of this or another process has the files open meanwhile.
fn lock_db_file(dir: &Path) -> Result<Option<File>> {
    let path = dir.join("db");
    let f = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(file_error("open", &path, e)),
    };
    let deadline = Instant::now() + super::LOCK_WAIT;
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(Some(f)),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(super::files::lock_held(dir));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(file_error("lock", &path, e)),
        }
    }
}

fn file_error(what: &str, path: &Path, e: io::Error) -> Error {
    if super::files::is_disk_full(&e) {
        super::files::io_error(e)
    } else {
        Error::Io(IoError::with_source(
            format!(
                "cannot {what} {} while making the disk hold what it shows after a failed sync: {e}",
                path.display()
            ),
            e,
        ))
    }
}

/// The path of the marker of the store at `dir`.
#[cfg(test)]
pub(super) fn marker_path(dir: &Path) -> PathBuf {
    dir.join(MARKER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_names_the_failed_issues_and_goes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        assert_eq!(pending(p).unwrap(), None);
        mark(p);
        assert_eq!(pending(p).unwrap(), Some(vec![]));
        let a = [0xabu8; 16];
        let b = [0x01u8; 16];
        note_failed_issue(p, &a);
        mark(p);
        note_failed_issue(p, &b);
        // A line cut short is skipped.
        std::fs::OpenOptions::new()
            .append(true)
            .open(marker_path(p))
            .unwrap()
            .write_all(b"0a0b")
            .unwrap();
        assert_eq!(pending(p).unwrap(), Some(vec![b, a]));
        clear(p).unwrap();
        assert_eq!(pending(p).unwrap(), None);
        clear(p).unwrap();
    }

    #[test]
    fn a_rewrite_keeps_every_byte_and_skips_the_marker() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let big: Vec<u8> = (0..(3 << 20) + 17).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(p.join("db"), &big).unwrap();
        std::fs::create_dir(p.join("blobs")).unwrap();
        std::fs::write(p.join("blobs").join("1"), b"blob").unwrap();
        std::fs::write(p.join("conf"), b"").unwrap();
        mark(p);
        let done = rewrite(p).unwrap();
        assert_eq!(done.files, 3);
        assert_eq!(done.bytes, big.len() as u64 + 4);
        assert_eq!(std::fs::read(p.join("db")).unwrap(), big);
        assert_eq!(std::fs::read(p.join("blobs").join("1")).unwrap(), b"blob");
        assert!(pending(p).unwrap().is_some());
    }

    #[test]
    fn a_rewrite_waits_for_sleds_lock_and_then_says_who_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(p.join("db"), b"x").unwrap();
        let held = File::open(p.join("db")).unwrap();
        held.lock().unwrap();
        let e = rewrite(p).unwrap_err();
        assert_eq!(e.kind(), "io");
        assert!(e.to_string().contains("held by another process"), "{e}");
        drop(held);
        assert_eq!(rewrite(p).unwrap().bytes, 1);
    }
}
