//! Warm start for the sled backend: a copy of the token records in flat
//! files, written when a store is closed and read by the next open instead
//! of walking sled's trees.
//!
//! sled 0.34 reads a tree page by page, and opening a store of a million
//! tokens spends most of its time there; the same records read from a file
//! in one sequential read cost a small part of that. The files are a cache,
//! never the truth: they are used only when they hold exactly what sled
//! holds, which the open checks as follows.
//!
//! * [`write`] copies the refresh, access and last-exchange records of a
//!   store nobody writes to any more (its last handle is closing), each
//!   file hashed with blake3 and synced, and returns a [`Marker`] naming
//!   the files' lengths and hashes and a fresh random nonce.
//! * The backend then stores the marker in sled's meta tree and flushes:
//!   only from that point can the files be used.
//! * Opening the database takes the marker out of the meta tree and
//!   flushes before anything else can write, so any later write, and any
//!   crash after it, leaves no marker: the files it described are then
//!   stale and are never read again (the next close writes new ones).
//! * [`stream`] accepts the files only if each has the length and hash the
//!   marker names and starts with its nonce. It hands entries over as it
//!   reads them, before a file's hash is known; a file that turns out not
//!   to match has the open throw away everything loaded and walk sled's
//!   trees as it would without the files.
//!
//! The files hold what sled's trees hold (verifiers, never secrets) and
//! exist only while the store is closed: the open that reads them deletes
//! them.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use crate::error::{Error, IoError, Result};

/// The meta tree entry naming the valid warm-start files.
pub(super) const MARKER_KEY: &str = "warm_start";

/// The directory of the files, inside sled's directory.
const DIR: &str = "warm-start";

/// The first bytes of the marker and of every file (format version 1).
const MAGIC: &[u8; 8] = b"tvwarm01";

/// An entry's kind.
pub(super) const REFRESH: u8 = 1;
pub(super) const ACCESS: u8 = 2;
pub(super) const LAST_REFRESH: u8 = 3;

/// What the close wrote: the nonce every file starts with, and each file's
/// length and blake3 hash (files `0..n`, in that order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Marker {
    nonce: [u8; 16],
    files: Vec<(u64, [u8; 32])>,
}

/// At most this many files: a marker naming more is not one of ours.
const MAX_FILES: usize = 64;

impl Marker {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 16 + 4 + self.files.len() * 40);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&(self.files.len() as u32).to_le_bytes());
        for (len, hash) in &self.files {
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(hash);
        }
        out
    }

    /// The marker in `bytes`, or `None` if they are not one.
    pub(super) fn decode(bytes: &[u8]) -> Option<Marker> {
        let rest = bytes.strip_prefix(&MAGIC[..])?;
        let (nonce, rest) = rest.split_first_chunk::<16>()?;
        let (count, mut rest) = rest.split_first_chunk::<4>()?;
        let count = u32::from_le_bytes(*count) as usize;
        if count == 0 || count > MAX_FILES || rest.len() != count * 40 {
            return None;
        }
        let mut files = Vec::with_capacity(count);
        while let Some((len, after)) = rest.split_first_chunk::<8>() {
            let (hash, after) = after.split_first_chunk::<32>()?;
            files.push((u64::from_le_bytes(*len), *hash));
            rest = after;
        }
        Some(Marker {
            nonce: *nonce,
            files,
        })
    }
}

/// The warm-start directory of the database at `db`.
pub(super) fn dir(db: &Path) -> PathBuf {
    db.join(DIR)
}

/// Deletes the warm-start files of the database at `db`, if any. They are a
/// cache: failing to delete them is harmless (without a marker they are
/// never read, and the next close replaces them).
pub(super) fn remove(db: &Path) {
    let _ = std::fs::remove_dir_all(dir(db));
}

/// Bytes of the warm-start files of the database at `db` (0 if none).
pub(super) fn size(db: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir(db)) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// One file being written: buffered, hashed as it goes. The first error
/// is kept and ends the writing.
pub(super) struct FileWriter {
    out: BufWriter<File>,
    hash: blake3::Hasher,
    len: u64,
    failed: Option<std::io::Error>,
}

impl FileWriter {
    fn create(path: &Path, nonce: &[u8; 16]) -> Result<FileWriter> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let file = opts.open(path).map_err(file_error)?;
        let mut w = FileWriter {
            out: BufWriter::with_capacity(1 << 20, file),
            hash: blake3::Hasher::new(),
            len: 0,
            failed: None,
        };
        w.bytes(MAGIC);
        w.bytes(nonce);
        Ok(w)
    }

    fn bytes(&mut self, b: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        match self.out.write_all(b) {
            Ok(()) => {
                self.hash.update(b);
                self.len += b.len() as u64;
            }
            Err(e) => self.failed = Some(e),
        }
    }

    /// Appends one entry: its kind, key and value.
    pub(super) fn entry(&mut self, kind: u8, key: &[u8], value: &[u8]) {
        let (Ok(klen), Ok(vlen)) = (u8::try_from(key.len()), u32::try_from(value.len())) else {
            // Not a key or value of this crate's trees: the copy would not
            // be faithful, so none is made.
            self.failed = Some(std::io::Error::other("an entry too large to copy"));
            return;
        };
        self.bytes(&[kind, klen]);
        self.bytes(&vlen.to_le_bytes());
        self.bytes(key);
        self.bytes(value);
    }

    /// Writes out, syncs and closes the file; returns its length and hash.
    fn finish(self) -> Result<(u64, [u8; 32])> {
        if let Some(e) = self.failed {
            return Err(file_error(e));
        }
        let file = self
            .out
            .into_inner()
            .map_err(|e| file_error(e.into_error()))?;
        file.sync_all().map_err(file_error)?;
        Ok((self.len, *self.hash.finalize().as_bytes()))
    }
}

fn file_error(e: std::io::Error) -> Error {
    Error::Io(IoError::with_source(format!("warm-start file: {e}"), e))
}

/// Writes the warm-start files of the database at `db`: `parts` files
/// filled by `fill` (called once, from any threads, with one writer per
/// part; a part's entries keep the order `fill` gives them), then one
/// filled by `fill_last`. Any earlier files are deleted first. Returns the
/// marker that makes them valid once it is stored.
///
/// # Errors
/// [`Error::Io`] if a file cannot be written; what was written is deleted.
pub(super) fn write(
    db: &Path,
    parts: usize,
    fill: impl FnOnce(&[Mutex<FileWriter>]) -> Result<()>,
    fill_last: impl FnOnce(&mut FileWriter) -> Result<()>,
) -> Result<Marker> {
    let res = write_files(db, parts, fill, fill_last);
    if res.is_err() {
        remove(db);
    }
    res
}

fn write_files(
    db: &Path,
    parts: usize,
    fill: impl FnOnce(&[Mutex<FileWriter>]) -> Result<()>,
    fill_last: impl FnOnce(&mut FileWriter) -> Result<()>,
) -> Result<Marker> {
    let dir = dir(db);
    remove(db);
    std::fs::create_dir(&dir).map_err(file_error)?;
    let mut nonce = [0u8; 16];
    crate::token::os_random(&mut nonce)?;
    let writers = (0..parts)
        .map(|i| FileWriter::create(&dir.join(i.to_string()), &nonce).map(Mutex::new))
        .collect::<Result<Vec<_>>>()?;
    fill(&writers)?;
    let mut last = FileWriter::create(&dir.join(parts.to_string()), &nonce)?;
    fill_last(&mut last)?;
    let mut files = Vec::with_capacity(parts + 1);
    for w in writers {
        files.push(w.into_inner().finish()?);
    }
    files.push(last.finish()?);
    // The files' names must be durable before the marker names them.
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(file_error)?;
    Ok(Marker { nonce, files })
}

/// What receives a part file's entries: the file's index, then the
/// entry's kind, key and value (from the file's own thread).
pub(super) type OnPart<'a> = &'a (dyn Fn(usize, u8, &[u8], &[u8]) + Sync);

/// What receives a file's entries, one thread's: kind, key, value.
pub(super) type OnEntry<'a> = &'a mut dyn FnMut(u8, &[u8], &[u8]);

/// How much of a warm-start file is read at a time.
const CHUNK: u64 = 1 << 20;

/// Streams the warm-start files `marker` names: each part file's entries
/// to `on_part` (with the file's index), one thread per file, then the last
/// file's entries to `on_last`, checking each file against the marker
/// (length, hash, nonce) and against the entry layout as it goes. Returns
/// whether every file passed.
///
/// The files are read a chunk at a time, not whole: a store of ten million
/// tokens has 1.6 GB of them, and reading them whole made the open fault in
/// (and the kernel zero) as many fresh pages, about a tenth of its time.
/// So entries are handed over before their file's hash is known: on
/// `false` the caller discards everything it made of them. Every file is
/// opened and its length checked before any is read, and the first file
/// found bad stops the others at their next chunk.
///
/// # Errors
/// [`Error::Io`] if a thread reading a file panicked (in a callback).
pub(super) fn stream(
    db: &Path,
    marker: &Marker,
    on_part: OnPart<'_>,
    on_last: OnEntry<'_>,
) -> Result<bool> {
    let dir = dir(db);
    let mut files = Vec::with_capacity(marker.files.len());
    for (i, &(len, _)) in marker.files.iter().enumerate() {
        match File::open(dir.join(i.to_string())) {
            Ok(f) if f.metadata().map(|m| m.len()).ok() == Some(len) => files.push(f),
            _ => return Ok(false),
        }
    }
    let Some((last, parts)) = files.split_last() else {
        return Ok(false);
    };
    let failed = AtomicBool::new(false);
    let part = |i: usize| {
        let each = &mut |kind, k: &[u8], v: &[u8]| on_part(i, kind, k, v);
        stream_file(
            &parts[i],
            marker.files[i],
            &marker.nonce,
            CHUNK,
            &failed,
            each,
        )
    };
    let parts_ok = std::thread::scope(|s| {
        // The kernel reads every file ahead while the threads load them
        // (on a thread of its own: the advice may wait for the disk's
        // queue). Without, a store whose files are no longer in the page
        // cache waits for each chunk in turn.
        let files = &files;
        let _ =
            std::thread::Builder::new().spawn_scoped(s, move || files.iter().for_each(read_ahead));
        let threads: Vec<_> = (0..parts.len())
            .map(|i| {
                let part = &part;
                std::thread::Builder::new()
                    .spawn_scoped(s, move || part(i))
                    .map_err(|_| i)
            })
            .collect();
        // Every thread joined before any result is looked at.
        let results: Vec<Result<bool>> = threads
            .into_iter()
            .map(|t| match t {
                Ok(t) => t
                    .join()
                    .map_err(|_| Error::Io("a loader thread failed".into())),
                // No thread to be had: read here instead.
                Err(i) => Ok(part(i)),
            })
            .collect();
        results
            .into_iter()
            .try_fold(true, |all, ok| Ok::<bool, Error>(ok? && all))
    })?;
    let last_ok = parts_ok
        && stream_file(
            last,
            marker.files[parts.len()],
            &marker.nonce,
            CHUNK,
            &failed,
            on_last,
        );
    Ok(last_ok)
}

/// Asks the kernel to read `file` whole into its page cache now (advice:
/// nothing happens where it is not followed).
#[allow(unsafe_code)]
fn read_ahead(file: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: advice about a descriptor `file` keeps open for the
        // call; it reads or writes none of this process's memory.
        unsafe {
            libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_WILLNEED);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// Streams one file's entries to `each`, `chunk` bytes read at a time;
/// whether the file has the length and hash `(len, hash)`, starts with
/// `nonce` and holds nothing but whole entries. Stops at the first byte
/// that is no entry, as soon as the file is known to be longer than `len`
/// or an entry to end past it, and once `failed` is set (by another file);
/// sets `failed` when it fails.
fn stream_file(
    mut file: &File,
    (len, hash): (u64, [u8; 32]),
    nonce: &[u8; 16],
    chunk: u64,
    failed: &AtomicBool,
    each: OnEntry<'_>,
) -> bool {
    let header = MAGIC.len() + nonce.len();
    let mut hasher = blake3::Hasher::new();
    let mut buf: Vec<u8> = Vec::with_capacity(2 * chunk.min(CHUNK) as usize);
    // Bytes read so far; `buf` holds the last of them.
    let mut total = 0u64;
    let mut started = false;
    let ok = 'read: loop {
        if failed.load(Ordering::Relaxed) {
            break 'read false;
        }
        let kept = buf.len();
        let Ok(n) = (&mut file).take(chunk).read_to_end(&mut buf) else {
            break 'read false;
        };
        hasher.update(&buf[kept..]);
        total += n as u64;
        if total > len {
            break 'read false;
        }
        let mut body = &buf[..];
        if !started {
            if body.len() < header && n > 0 {
                continue;
            }
            let Some(rest) = body
                .strip_prefix(&MAGIC[..])
                .and_then(|b| b.strip_prefix(&nonce[..]))
            else {
                break 'read false;
            };
            body = rest;
            started = true;
        }
        loop {
            match step(body) {
                Step::Entry(kind, key, value, rest) => {
                    each(kind, key, value);
                    body = rest;
                }
                Step::Short(need) => {
                    // Where the entry would end in the file, once its
                    // lengths are known: past the end, it never will.
                    let at = total - body.len() as u64;
                    if at.saturating_add(need as u64) > len {
                        break 'read false;
                    }
                    break;
                }
                Step::Bad => break 'read false,
            }
        }
        if n == 0 {
            break 'read body.is_empty() && total == len && hasher.finalize() == hash;
        }
        let used = buf.len() - body.len();
        buf.drain(..used);
    };
    if !ok {
        failed.store(true, Ordering::Relaxed);
    }
    ok
}

/// One step of the walk over a file's entries.
enum Step<'a> {
    /// An entry (kind, key, value) and the bytes after it.
    Entry(u8, &'a [u8], &'a [u8], &'a [u8]),
    /// The bytes end inside an entry (more may follow): how many bytes the
    /// entry takes in all, as far as is known yet (its lengths, once they
    /// are there; until then, only the bytes there are).
    Short(usize),
    /// The bytes are no entry.
    Bad,
}

fn step(body: &[u8]) -> Step<'_> {
    let Some(&kind) = body.first() else {
        return Step::Short(0);
    };
    if !(REFRESH..=LAST_REFRESH).contains(&kind) {
        return Step::Bad;
    }
    let Some((&[_, klen, a, b, c, d], rest)) = body.split_first_chunk::<6>() else {
        return Step::Short(body.len());
    };
    let vlen = u32::from_le_bytes([a, b, c, d]) as usize;
    let need = 6usize
        .saturating_add(usize::from(klen))
        .saturating_add(vlen);
    let entry = (|| {
        let (key, rest) = rest.split_at_checked(usize::from(klen))?;
        let (value, rest) = rest.split_at_checked(vlen)?;
        Some(Step::Entry(kind, key, value, rest))
    })();
    entry.unwrap_or(Step::Short(need))
}

/// The entries in `body`, a whole file's after its header: each
/// `Some((kind, key, value))`, or a last `None` where the bytes are not an
/// entry.
#[cfg(test)]
fn entries(mut body: &[u8]) -> impl Iterator<Item = Option<(u8, &[u8], &[u8])>> {
    std::iter::from_fn(move || {
        if body.is_empty() {
            return None;
        }
        match step(body) {
            Step::Entry(kind, key, value, rest) => {
                body = rest;
                Some(Some((kind, key, value)))
            }
            Step::Short(_) | Step::Bad => {
                body = &[];
                Some(None)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(files: usize) -> Marker {
        Marker {
            nonce: [7; 16],
            files: (0..files)
                .map(|i| (i as u64 * 1000, [i as u8; 32]))
                .collect(),
        }
    }

    #[test]
    fn markers_round_trip_and_damaged_ones_are_refused() {
        for n in [1, 3, MAX_FILES] {
            let m = marker(n);
            assert_eq!(Marker::decode(&m.encode()), Some(m));
        }
        let good = marker(3).encode();
        for cut in 0..good.len() {
            assert_eq!(Marker::decode(&good[..cut]), None, "cut at {cut}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert_eq!(Marker::decode(&longer), None);
        let mut other_magic = good.clone();
        other_magic[7] ^= 1;
        assert_eq!(Marker::decode(&other_magic), None);
        assert_eq!(Marker::decode(&marker(0).encode()), None);
        assert_eq!(Marker::decode(&marker(MAX_FILES + 1).encode()), None);
    }

    fn written(dir: &Path) -> Marker {
        write(
            dir,
            2,
            |w| {
                w[0].lock().entry(REFRESH, b"r0", b"value r0");
                w[1].lock().entry(REFRESH, b"r1", b"");
                w[1].lock().entry(ACCESS, b"a1", &[9; 300]);
                Ok(())
            },
            |w| {
                w.entry(LAST_REFRESH, b"l", b"12345678");
                Ok(())
            },
        )
        .unwrap()
    }

    type Entries = Vec<(u8, Vec<u8>, Vec<u8>)>;

    /// Every file's entries as [`stream`] hands them over, if it says the
    /// files passed.
    fn read(db: &Path, m: &Marker) -> Option<Vec<Entries>> {
        let parts: Vec<Mutex<Entries>> = (0..m.files.len() - 1).map(|_| Mutex::default()).collect();
        let mut last = Entries::new();
        let ok = stream(
            db,
            m,
            &|i, kind, k, v| parts[i].lock().push((kind, k.to_vec(), v.to_vec())),
            &mut |kind, k, v| last.push((kind, k.to_vec(), v.to_vec())),
        )
        .unwrap();
        let mut files: Vec<Entries> = parts.into_iter().map(Mutex::into_inner).collect();
        files.push(last);
        ok.then_some(files)
    }

    #[test]
    fn files_read_back_as_written() {
        let tmp = tempfile::tempdir().unwrap();
        let m = written(tmp.path());
        let got = read(tmp.path(), &m).expect("the files as written");
        assert_eq!(
            got,
            vec![
                vec![(REFRESH, b"r0".to_vec(), b"value r0".to_vec())],
                vec![
                    (REFRESH, b"r1".to_vec(), vec![]),
                    (ACCESS, b"a1".to_vec(), vec![9; 300])
                ],
                vec![(LAST_REFRESH, b"l".to_vec(), b"12345678".to_vec())],
            ]
        );
        assert!(size(tmp.path()) > 0);
        remove(tmp.path());
        assert_eq!(size(tmp.path()), 0);
        assert!(read(tmp.path(), &m).is_none(), "the files are gone");
    }

    /// Entries of every size, some larger than a chunk and many across
    /// chunk boundaries, come back whole and in order.
    #[test]
    fn entries_across_chunks_read_back_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let value = |i: usize| vec![i as u8; (i * 7919) % 700];
        let big = vec![0xab; CHUNK as usize * 3 / 2];
        let m = write(
            tmp.path(),
            1,
            |w| {
                let mut w = w[0].lock();
                for i in 0..20_000 {
                    w.entry(ACCESS, &(i as u32).to_le_bytes(), &value(i));
                    if i == 10_000 {
                        w.entry(REFRESH, b"big", &big);
                    }
                }
                Ok(())
            },
            |_| Ok(()),
        )
        .unwrap();
        let got = read(tmp.path(), &m).expect("the files as written");
        let mut want: Entries = Vec::new();
        for i in 0..20_000 {
            want.push((ACCESS, (i as u32).to_le_bytes().to_vec(), value(i)));
            if i == 10_000 {
                want.push((REFRESH, b"big".to_vec(), big.clone()));
            }
        }
        assert_eq!(got, vec![want, vec![]]);
    }

    /// A file of `body` after the header, as a marker would name it.
    fn file_of(dir: &Path, body: &[u8]) -> (File, (u64, [u8; 32])) {
        let bytes = [&MAGIC[..], &[7; 16], body].concat();
        let path = dir.join("f");
        std::fs::write(&path, &bytes).unwrap();
        let named = (bytes.len() as u64, *blake3::hash(&bytes).as_bytes());
        (File::open(&path).unwrap(), named)
    }

    /// What `stream_file` hands over and says of `body`, read `chunk`
    /// bytes at a time.
    fn streamed(dir: &Path, body: &[u8], chunk: u64) -> (Entries, bool) {
        let (file, named) = file_of(dir, body);
        let mut got = Entries::new();
        let failed = AtomicBool::new(false);
        let ok = stream_file(&file, named, &[7; 16], chunk, &failed, &mut |k, a, b| {
            got.push((k, a.to_vec(), b.to_vec()))
        });
        assert_eq!(failed.load(Ordering::Relaxed), !ok);
        (got, ok)
    }

    /// What the whole-body walk finds: the entries, and whether the body
    /// is nothing but entries.
    fn walked(body: &[u8]) -> (Entries, bool) {
        let mut got = Entries::new();
        for e in entries(body) {
            match e {
                Some((k, a, b)) => got.push((k, a.to_vec(), b.to_vec())),
                None => return (got, false),
            }
        }
        (got, true)
    }

    /// Read a byte, two, ... 64 at a time, so that a chunk ends at every
    /// place of an entry (inside its kind and lengths, its key, its value,
    /// at its end), a file streams as the whole-body walk reads it: the
    /// same entries, and the same verdict, whole or cut short anywhere or
    /// with a byte that is no entry.
    #[test]
    fn any_chunk_size_reads_what_the_whole_walk_reads() {
        let tmp = tempfile::tempdir().unwrap();
        let mut body = Vec::new();
        for i in 0..40u8 {
            let key = vec![i; usize::from(i % 5)];
            let value = vec![i; usize::from(i) * 3 % 70];
            body.extend([REFRESH + i % 3, key.len() as u8]);
            body.extend((value.len() as u32).to_le_bytes());
            body.extend(&key);
            body.extend(&value);
        }
        let mut bad_kind = body.clone();
        bad_kind.extend([9, 0, 0, 0, 0, 0]);
        let mut bad_length = body.clone();
        bad_length.extend([ACCESS, 1, 0xff, 0xff, 0xff, 0x7f, b'k']);
        let cases: Vec<Vec<u8>> = vec![
            body.clone(),
            body[..body.len() - 1].to_vec(),
            body[..body.len() - 70].to_vec(),
            bad_kind,
            bad_length,
            vec![],
        ];
        for case in &cases {
            let want = walked(case);
            for chunk in 1..=64 {
                assert_eq!(streamed(tmp.path(), case, chunk), want, "chunk {chunk}");
            }
        }
        assert!(walked(&body).1 && walked(&body).0.len() == 40);
    }

    proptest::proptest! {
        /// Any bytes, named rightly by the marker, read any chunk at a
        /// time: what the whole-body walk reads, and no panic.
        #[test]
        fn streaming_reads_any_bytes_as_the_walk_does(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            chunk in 1u64..40,
        ) {
            let tmp = tempfile::tempdir().unwrap();
            proptest::prop_assert_eq!(streamed(tmp.path(), &body, chunk), walked(&body));
        }
    }

    /// A file whose bytes differ from what the marker names, or another
    /// file's failure, stops it.
    #[test]
    fn a_wrong_hash_or_another_files_failure_stops_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let body = [REFRESH, 1, 1, 0, 0, 0, b'k', b'v'];
        let (_, (len, mut hash)) = file_of(tmp.path(), &body);
        let failed = AtomicBool::new(false);
        let mut seen = 0;
        let mut run = |hash: [u8; 32]| {
            let file = File::open(tmp.path().join("f")).unwrap();
            stream_file(&file, (len, hash), &[7; 16], 4, &failed, &mut |_, _, _| {
                seen += 1
            })
        };
        assert!(run(hash));
        hash[0] ^= 1;
        assert!(!run(hash));
        hash[0] ^= 1;
        let told = failed.load(Ordering::Relaxed);
        assert!(!run(hash));
        assert!(told, "a failure is told to the other files");
        // The entry came whole once for the good file and once before the
        // hash was found wrong; never after another file failed.
        assert_eq!(seen, 2);
    }

    #[test]
    fn a_file_that_differs_from_the_marker_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let m = written(tmp.path());
        let path = dir(tmp.path()).join("1");
        let good = std::fs::read(&path).unwrap();
        // Every byte flipped, one at a time; then a byte cut off and one
        // added.
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            std::fs::write(&path, &bad).unwrap();
            assert!(read(tmp.path(), &m).is_none(), "byte {i} flipped");
        }
        for bad in [&good[..good.len() - 1], &[&good[..], &[0]].concat()[..]] {
            std::fs::write(&path, bad).unwrap();
            assert!(read(tmp.path(), &m).is_none());
        }
        std::fs::write(&path, &good).unwrap();
        assert!(read(tmp.path(), &m).is_some());
        // Files of another close (another nonce) are not these.
        let newer = written(tmp.path());
        assert!(read(tmp.path(), &m).is_none());
        assert!(read(tmp.path(), &newer).is_some());
    }

    proptest::proptest! {
        /// Any bytes: the walk ends without a panic, and what it yields
        /// lies within the bytes, in order, each entry's kind known.
        #[test]
        fn the_entry_walk_takes_any_bytes(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let mut used = 0;
            for e in entries(&body) {
                let Some((kind, key, value)) = e else { break };
                proptest::prop_assert!((REFRESH..=LAST_REFRESH).contains(&kind));
                used += 6 + key.len() + value.len();
            }
            proptest::prop_assert!(used <= body.len());
        }
    }

    #[test]
    fn the_entry_walk_stops_at_bytes_that_are_no_entry() {
        let mut body = vec![REFRESH, 1, 2, 0, 0, 0, b'k', b'v', b'w'];
        assert_eq!(
            entries(&body).collect::<Vec<_>>(),
            vec![Some((REFRESH, &b"k"[..], &b"vw"[..]))]
        );
        body.push(9); // an unknown kind, cut short
        assert_eq!(entries(&body).last(), Some(None));
        body.truncate(8); // the value cut short
        assert_eq!(entries(&body).collect::<Vec<_>>(), vec![None]);
    }
}
