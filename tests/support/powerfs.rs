//! A filesystem that loses, at a power cut, everything that was not synced.
//!
//! `PowerFs` is an in-memory FUSE filesystem (written with the `fuser`
//! crate). Every regular file holds two versions of its bytes: the
//! *volatile* one that `write`, `truncate` and `fallocate` change and that
//! reads see, and the *durable* one, which `fsync`/`fdatasync` of the file
//! replaces by the volatile one. Every directory likewise holds two versions
//! of its entries: `create`, `mkdir`, `link`, `unlink`, `rmdir` and
//! `rename` change the volatile entries, and only `fsync` of the directory
//! itself makes them durable. That is what fsync(2) promises and no more
//! ("calling fsync() does not necessarily ensure that the entry in the
//! directory containing the file has also reached disk; for that an explicit
//! fsync() on a file descriptor for the directory is also needed"): some
//! filesystems keep more, none promises to.
//!
//! Not modelled (kept at once, as if always durable): permissions, times
//! and the root directory itself. `sync_file_range` is not a FUSE request
//! at all, so it makes nothing durable here, as on a drive whose write cache
//! is lost with the power.
//!
//! A cut ([`Disk::cut`]) is the instant the power goes: from then on every
//! request fails with `EIO` (nothing more reaches the "disk"); the caller
//! then kills the processes using the mount and calls [`Disk::restart`],
//! which unmounts, throws away every volatile version and mounts again on
//! the durable data alone, with a fresh kernel cache.
//!
//! Faults ([`Disk::fail_syncs`], [`Disk::fail_writes`]): while switched on,
//! every `fsync`/`fdatasync` (of files and directories), or every write
//! (`write`, growing `truncate`, `fallocate`), fails with the chosen error
//! and changes nothing; switched off, they work again. What a failed file
//! sync leaves depends on the mode:
//! - [`Mode::Kind`] (a kinder disk than Linux): the file's unsynced data
//!   stays pending, and the next successful sync makes all of it durable;
//! - [`Mode::Linux`] (what Linux's write-back does, ext4's included, since
//!   4.13): the failed writeback marks the pages clean without writing them.
//!   They stay readable, but no later sync writes them (only writing them
//!   again does), and a cut or a restart loses them. The error is reported
//!   once to each open file description (each FUSE file handle) that was
//!   open when it happened, at its next sync, the failing one included;
//!   later syncs succeed. Directories keep the kind behaviour.
//!
//! Locks (sled's `flock` on its `db` file) are left to the kernel: the
//! filesystem does not offer FUSE lock requests, so the kernel keeps them
//! per mount, which is what a single machine needs.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    BsdFileFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use parking_lot::Mutex;

const TTL: Duration = Duration::from_secs(1);
const ROOT: u64 = 1;
/// Past this many dirty ranges a file is synced whole.
const MAX_RANGES: usize = 4096;

enum Body {
    File {
        volatile: Vec<u8>,
        durable: Vec<u8>,
        /// Byte ranges of `volatile` changed since the last sync; `None`:
        /// too many to track, sync all of it.
        dirty: Option<Vec<(usize, usize)>>,
    },
    Dir {
        volatile: BTreeMap<OsString, u64>,
        durable: BTreeMap<OsString, u64>,
    },
}

struct Node {
    body: Body,
    perm: u16,
    mtime: SystemTime,
}

impl Node {
    fn file(perm: u16) -> Node {
        Node {
            body: Body::File {
                volatile: Vec::new(),
                durable: Vec::new(),
                dirty: Some(Vec::new()),
            },
            perm,
            mtime: SystemTime::now(),
        }
    }
    fn dir(perm: u16) -> Node {
        Node {
            body: Body::Dir {
                volatile: BTreeMap::new(),
                durable: BTreeMap::new(),
            },
            perm,
            mtime: SystemTime::now(),
        }
    }
}

/// What the filesystem was asked to do, for reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    pub writes: u64,
    pub fsyncs: u64,
    pub dir_fsyncs: u64,
    /// Requests refused because they came after a cut.
    pub after_cut: u64,
    /// Syncs (of files and directories) and writes refused by a fault.
    pub failed_syncs: u64,
    pub failed_writes: u64,
    /// Every request answered (or refused), from the mount on.
    pub requests: u64,
}

/// What a failed file sync does to the pages it could not write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// They stay pending: the next successful sync writes them.
    #[default]
    Kind,
    /// As Linux: dropped from the write-back but still readable until a
    /// restart; the error is reported once to each open file handle.
    Linux,
}

/// Faults switched on: the error each kind of request fails with.
#[derive(Clone, Copy, Default)]
struct Faults {
    sync: Option<Errno>,
    write: Option<Errno>,
}

struct State {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    cut: bool,
    /// What every request answers after a cut (`EIO`; `ENOTCONN` for a
    /// daemon gone, see [`Disk::die`]).
    cut_errno: Errno,
    /// The file system dies once this many more requests have been
    /// answered, with this error (see [`Disk::die_after`]).
    dies_after: Option<(u64, Errno)>,
    faults: Faults,
    counters: Counters,
    mode: Mode,
    /// Open file handles: the inode of each, and the error of a failed
    /// writeback not yet reported to it (Linux mode).
    handles: HashMap<u64, (u64, Option<Errno>)>,
    next_fh: u64,
}

impl State {
    fn new() -> State {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT, Node::dir(0o755));
        State {
            nodes,
            next_ino: ROOT + 1,
            cut: false,
            cut_errno: Errno::EIO,
            dies_after: None,
            faults: Faults::default(),
            counters: Counters::default(),
            mode: Mode::Kind,
            handles: HashMap::new(),
            next_fh: 1,
        }
    }

    fn new_handle(&mut self, ino: u64) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, (ino, None));
        fh
    }

    /// A sync of file `ino` through handle `fh` while syncs fail, in Linux
    /// mode: the writeback fails, its pages are no longer pending, and
    /// every handle open on the file (this one too) has the error to
    /// report once.
    fn fail_writeback(&mut self, ino: u64, e: Errno) {
        if let Some(Node {
            body: Body::File { dirty, .. },
            ..
        }) = self.nodes.get_mut(&ino)
        {
            *dirty = Some(Vec::new());
        }
        for (i, pending) in self.handles.values_mut() {
            if *i == ino {
                *pending = Some(e);
            }
        }
    }

    /// The error a failed writeback left for handle `fh`, once.
    fn take_reported(&mut self, fh: u64) -> Option<Errno> {
        self.handles.get_mut(&fh).and_then(|(_, e)| e.take())
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let n = self.nodes.get(&ino)?;
        let (kind, size, nlink) = match &n.body {
            Body::File { volatile, .. } => (FileType::RegularFile, volatile.len() as u64, 1),
            Body::Dir { .. } => (FileType::Directory, 4096, 2),
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: n.mtime,
            mtime: n.mtime,
            ctime: n.mtime,
            crtime: n.mtime,
            kind,
            perm: n.perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn entries(&mut self, dir: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match self.nodes.get_mut(&dir).map(|n| &mut n.body) {
            Some(Body::Dir { volatile, .. }) => Ok(volatile),
            Some(_) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn child(&mut self, dir: u64, name: &OsStr) -> Result<u64, Errno> {
        self.entries(dir)?.get(name).copied().ok_or(Errno::ENOENT)
    }

    fn is_dir(&self, ino: u64) -> bool {
        matches!(
            self.nodes.get(&ino).map(|n| &n.body),
            Some(Body::Dir { .. })
        )
    }

    fn new_node(&mut self, parent: u64, name: &OsStr, node: Node) -> Result<u64, Errno> {
        if self.entries(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, node);
        self.entries(parent)?.insert(name.to_os_string(), ino);
        Ok(ino)
    }

    fn file(&mut self, ino: u64) -> Result<FileRef<'_>, Errno> {
        match self.nodes.get_mut(&ino) {
            Some(Node {
                body: Body::File {
                    volatile, dirty, ..
                },
                mtime,
                ..
            }) => Ok(FileRef {
                data: volatile,
                dirty,
                mtime,
            }),
            Some(_) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        }
    }

    /// The power is back: only durable data and entries remain, and only
    /// the nodes the durable entries still reach.
    fn recover(&mut self) {
        let mut reachable = HashSet::new();
        let mut todo = vec![ROOT];
        while let Some(ino) = todo.pop() {
            if !reachable.insert(ino) {
                continue;
            }
            if let Some(Node {
                body: Body::Dir { durable, .. },
                ..
            }) = self.nodes.get(&ino)
            {
                todo.extend(durable.values().copied());
            }
        }
        self.nodes.retain(|ino, _| reachable.contains(ino));
        self.handles.clear();
        for n in self.nodes.values_mut() {
            match &mut n.body {
                Body::File {
                    volatile,
                    durable,
                    dirty,
                } => {
                    volatile.clone_from(durable);
                    *dirty = Some(Vec::new());
                }
                Body::Dir { volatile, durable } => volatile.clone_from(durable),
            }
        }
        self.cut = false;
        self.cut_errno = Errno::EIO;
        self.dies_after = None;
    }

    /// Counts a request; the file system dies here if its time has come.
    fn count_request(&mut self) {
        self.counters.requests += 1;
        match self.dies_after {
            Some((0, errno)) => {
                self.dies_after = None;
                self.cut = true;
                self.cut_errno = errno;
            }
            Some((n, errno)) => self.dies_after = Some((n - 1, errno)),
            None => {}
        }
    }

    /// The error a sync fails with while that fault is on (counted).
    fn sync_fault(&mut self) -> Option<Errno> {
        let e = self.faults.sync?;
        self.counters.failed_syncs += 1;
        Some(e)
    }

    /// The error a write fails with while that fault is on (counted).
    fn write_fault(&mut self) -> Option<Errno> {
        let e = self.faults.write?;
        self.counters.failed_writes += 1;
        Some(e)
    }

    /// Everything written so far becomes durable (as after `sync(2)`).
    fn settle(&mut self) {
        let inos: Vec<u64> = self.nodes.keys().copied().collect();
        for ino in inos {
            self.sync(ino);
        }
    }

    fn sync(&mut self, ino: u64) {
        match self.nodes.get_mut(&ino).map(|n| &mut n.body) {
            Some(Body::File {
                volatile,
                durable,
                dirty,
            }) => {
                match dirty.take() {
                    Some(ranges) if durable.len() <= volatile.len() => {
                        durable.resize(volatile.len(), 0);
                        for (a, b) in ranges {
                            let b = b.min(volatile.len());
                            if a < b {
                                durable[a..b].copy_from_slice(&volatile[a..b]);
                            }
                        }
                    }
                    _ => durable.clone_from(volatile),
                }
                *dirty = Some(Vec::new());
            }
            Some(Body::Dir { volatile, durable }) => durable.clone_from(volatile),
            None => {}
        }
    }
}

struct FileRef<'a> {
    data: &'a mut Vec<u8>,
    dirty: &'a mut Option<Vec<(usize, usize)>>,
    mtime: &'a mut SystemTime,
}

impl FileRef<'_> {
    fn mark(&mut self, a: usize, b: usize) {
        *self.mtime = SystemTime::now();
        if let Some(r) = self.dirty {
            if r.last() == Some(&(a, b)) {
                return;
            }
            if r.len() >= MAX_RANGES {
                *self.dirty = None;
            } else {
                r.push((a, b));
            }
        }
    }
    fn set_len(&mut self, len: usize) {
        let old = self.data.len();
        self.data.resize(len, 0);
        self.mark(old.min(len), old.max(len));
    }
    fn write(&mut self, offset: usize, bytes: &[u8]) {
        let old = self.data.len();
        let end = offset + bytes.len();
        if end > old {
            self.data.resize(end, 0);
        }
        self.data[offset..end].copy_from_slice(bytes);
        self.mark(offset.min(old), end);
    }
}

/// The FUSE side: every request locks the shared state.
struct PowerFs(Arc<Mutex<State>>);

/// Takes the state's lock, or answers `EIO` after a cut (or the error of
/// a death, see [`Disk::die_with`]).
macro_rules! live {
    ($self:ident, $reply:ident) => {{
        let mut s = $self.0.lock();
        s.count_request();
        if s.cut {
            s.counters.after_cut += 1;
            $reply.error(s.cut_errno);
            return;
        }
        s
    }};
}

fn entry(s: &State, ino: u64, reply: ReplyEntry) {
    match s.attr(ino) {
        Some(a) => reply.entry(&TTL, &a, Generation(0)),
        None => reply.error(Errno::ENOENT),
    }
}

fn attr(s: &State, ino: u64, reply: ReplyAttr) {
    match s.attr(ino) {
        Some(a) => reply.attr(&TTL, &a),
        None => reply.error(Errno::ENOENT),
    }
}

/// Takes `name` out of the directory `parent` (whose entry was checked).
fn unlinked(s: &mut State, parent: u64, name: &OsStr, reply: ReplyEmpty) {
    if let Ok(e) = s.entries(parent) {
        e.remove(name);
    }
    reply.ok()
}

impl Filesystem for PowerFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut s = live!(self, reply);
        match s.child(parent.0, name) {
            Ok(ino) => entry(&s, ino, reply),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let s = live!(self, reply);
        attr(&s, ino.0, reply)
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut s = live!(self, reply);
        if let Some(len) = size {
            let grows = s.nodes.get(&ino.0).is_some_and(
                |n| matches!(&n.body, Body::File { volatile, .. } if len as usize > volatile.len()),
            );
            if grows {
                if let Some(e) = s.write_fault() {
                    return reply.error(e);
                }
            }
            match s.file(ino.0) {
                Ok(mut f) => f.set_len(len as usize),
                Err(e) => return reply.error(e),
            }
        }
        if let Some(mode) = mode {
            if let Some(n) = s.nodes.get_mut(&ino.0) {
                n.perm = (mode & 0o7777) as u16;
            }
        }
        attr(&s, ino.0, reply)
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let mut s = live!(self, reply);
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::EPERM);
        }
        match s.new_node(parent.0, name, Node::file((mode & !umask & 0o7777) as u16)) {
            Ok(ino) => entry(&s, ino, reply),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut s = live!(self, reply);
        match s.new_node(parent.0, name, Node::dir((mode & !umask & 0o7777) as u16)) {
            Ok(ino) => entry(&s, ino, reply),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut s = live!(self, reply);
        match s.child(parent.0, name) {
            Ok(ino) if s.is_dir(ino) => reply.error(Errno::EISDIR),
            Ok(_) => unlinked(&mut s, parent.0, name, reply),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut s = live!(self, reply);
        let ino = match s.child(parent.0, name) {
            Ok(ino) => ino,
            Err(e) => return reply.error(e),
        };
        match s.entries(ino) {
            Ok(e) if !e.is_empty() => reply.error(Errno::ENOTEMPTY),
            Ok(_) => unlinked(&mut s, parent.0, name, reply),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut s = live!(self, reply);
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            return reply.error(Errno::EINVAL);
        }
        let ino = match s.child(parent.0, name) {
            Ok(ino) => ino,
            Err(e) => return reply.error(e),
        };
        match s.child(newparent.0, newname) {
            Ok(_) if flags.contains(RenameFlags::RENAME_NOREPLACE) => {
                return reply.error(Errno::EEXIST)
            }
            Ok(old) if old == ino => return reply.ok(),
            Ok(old) => match (s.is_dir(ino), s.is_dir(old)) {
                (false, true) => return reply.error(Errno::EISDIR),
                (true, false) => return reply.error(Errno::ENOTDIR),
                (true, true) if s.entries(old).is_ok_and(|e| !e.is_empty()) => {
                    return reply.error(Errno::ENOTEMPTY)
                }
                _ => {}
            },
            Err(Errno::ENOENT) => {}
            Err(e) => return reply.error(e),
        }
        if let Ok(e) = s.entries(parent.0) {
            e.remove(name);
        }
        match s.entries(newparent.0) {
            Ok(e) => {
                e.insert(newname.to_os_string(), ino);
                reply.ok()
            }
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let mut s = live!(self, reply);
        if s.is_dir(ino.0) {
            return reply.error(Errno::EPERM);
        }
        match s.entries(newparent.0) {
            Ok(e) if e.contains_key(newname) => reply.error(Errno::EEXIST),
            Ok(e) => {
                e.insert(newname.to_os_string(), ino.0);
                entry(&s, ino.0, reply)
            }
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut s = live!(self, reply);
        if s.nodes.contains_key(&ino.0) {
            let fh = s.new_handle(ino.0);
            reply.opened(FileHandle(fh), FopenFlags::empty())
        } else {
            reply.error(Errno::ENOENT)
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // Also after a cut: the handle is gone either way.
        self.0.lock().handles.remove(&fh.0);
        reply.ok()
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut s = live!(self, reply);
        match s.file(ino.0) {
            Ok(f) => {
                let len = f.data.len();
                let a = (offset as usize).min(len);
                let b = (a + size as usize).min(len);
                reply.data(&f.data[a..b])
            }
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut s = live!(self, reply);
        if let Some(e) = s.write_fault() {
            return reply.error(e);
        }
        s.counters.writes += 1;
        match s.file(ino.0) {
            Ok(mut f) => {
                f.write(offset as usize, data);
                reply.written(data.len() as u32)
            }
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // `close(2)` makes nothing durable.
        let _s = live!(self, reply);
        reply.ok()
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = live!(self, reply);
        if let Some(e) = s.sync_fault() {
            if s.mode == Mode::Linux {
                s.fail_writeback(ino.0, e);
                s.take_reported(fh.0);
            }
            return reply.error(e);
        }
        s.counters.fsyncs += 1;
        s.sync(ino.0);
        if let Some(e) = s.take_reported(fh.0) {
            // An earlier writeback's failure, reported to this handle now.
            s.counters.failed_syncs += 1;
            return reply.error(e);
        }
        reply.ok()
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut s = live!(self, reply);
        let list: Vec<(u64, OsString)> = match s.entries(ino.0) {
            Ok(e) => e.iter().map(|(n, i)| (*i, n.clone())).collect(),
            Err(e) => return reply.error(e),
        };
        let mut all = vec![
            (ino.0, FileType::Directory, OsString::from(".")),
            (ino.0, FileType::Directory, OsString::from("..")),
        ];
        for (i, n) in list {
            let kind = if s.is_dir(i) {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            all.push((i, kind, n));
        }
        for (k, (i, kind, n)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(i), k as u64 + 1, kind, n) {
                break;
            }
        }
        reply.ok()
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = live!(self, reply);
        if let Some(e) = s.sync_fault() {
            return reply.error(e);
        }
        s.counters.dir_fsyncs += 1;
        s.sync(ino.0);
        reply.ok()
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let _s = live!(self, reply);
        reply.statfs(1 << 22, 1 << 21, 1 << 21, 1 << 20, 1 << 19, 4096, 255, 4096)
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        let _s = live!(self, reply);
        reply.ok()
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut s = live!(self, reply);
        match s.new_node(parent.0, name, Node::file((mode & !umask & 0o7777) as u16)) {
            Ok(ino) => match s.attr(ino) {
                Some(a) => {
                    let fh = s.new_handle(ino);
                    reply.created(&TTL, &a, Generation(0), FileHandle(fh), FopenFlags::empty())
                }
                None => reply.error(Errno::EIO),
            },
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let mut s = live!(self, reply);
        if mode != 0 {
            return reply.error(Errno::EOPNOTSUPP);
        }
        if let Some(e) = s.write_fault() {
            return reply.error(e);
        }
        match s.file(ino.0) {
            Ok(mut f) => {
                let end = (offset + length) as usize;
                if end > f.data.len() {
                    f.set_len(end);
                }
                reply.ok()
            }
            Err(e) => reply.error(e),
        }
    }
}

/// A mounted [`PowerFs`]: the test's handle on its "disk".
pub struct Disk {
    state: Arc<Mutex<State>>,
    mountpoint: PathBuf,
    session: Option<fuser::BackgroundSession>,
    _dir: tempfile::TempDir,
}

/// Why the harness cannot run here (no `/dev/fuse`, not root, no mount).
pub fn unavailable() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing".into());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("mounting needs root".into());
    }
    None
}

fn mount(state: &Arc<Mutex<State>>, at: &Path) -> io::Result<fuser::BackgroundSession> {
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        fuser::MountOption::FSName("powerfs".into()),
        fuser::MountOption::DefaultPermissions,
    ];
    fuser::spawn_mount(PowerFs(state.clone()), at, &cfg)
}

impl Disk {
    /// Mounts an empty filesystem on a fresh temporary directory.
    pub fn mount() -> io::Result<Disk> {
        let dir = tempfile::tempdir()?;
        let mountpoint = dir.path().join("mnt");
        std::fs::create_dir(&mountpoint)?;
        let state = Arc::new(Mutex::new(State::new()));
        let session = mount(&state, &mountpoint)?;
        Ok(Disk {
            state,
            mountpoint,
            session: Some(session),
            _dir: dir,
        })
    }

    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// The power goes: nothing more is written, every request fails.
    pub fn cut(&self) {
        self.state.lock().cut = true;
    }

    /// The file system dies (as when its daemon is gone): from now on every
    /// request fails with `ENOTCONN`, until [`Disk::restart`].
    pub fn die(&self) {
        self.die_with(libc::ENOTCONN);
    }

    /// The file system dies now, every request answering `errno` from now
    /// on until [`Disk::restart`]: `ENOTCONN` or `ECONNABORTED` as when a
    /// FUSE daemon is gone, `EIO` as when the device is gone. Nothing
    /// written after this reaches the "disk".
    pub fn die_with(&self, errno: i32) {
        let mut s = self.state.lock();
        s.cut = true;
        s.cut_errno = Errno::from_i32(errno);
    }

    /// The file system dies (as [`Disk::die_with`]) once it has answered
    /// `requests` more requests: the next one, and every one after it,
    /// answers `errno`. A crash point counted in file system requests.
    pub fn die_after(&self, requests: u64, errno: i32) {
        self.state.lock().dies_after = Some((requests, Errno::from_i32(errno)));
    }

    /// Everything written so far becomes durable, as after `sync(2)`.
    pub fn settle(&self) {
        self.state.lock().settle();
    }

    /// What a failed file sync does from now on (see [`Mode`]).
    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().mode = mode;
    }

    /// From now on every fsync/fdatasync (of a file or a directory) fails
    /// with `errno` (e.g. `libc::EIO`), until called again with `None`.
    pub fn fail_syncs(&self, errno: Option<i32>) {
        self.state.lock().faults.sync = errno.map(Errno::from_i32);
    }

    /// From now on every write fails with `errno` (e.g. `libc::ENOSPC`),
    /// until called again with `None`.
    pub fn fail_writes(&self, errno: Option<i32>) {
        self.state.lock().faults.write = errno.map(Errno::from_i32);
    }

    pub fn counters(&self) -> Counters {
        self.state.lock().counters
    }

    /// The power comes back: unmounts (waiting for the killed processes'
    /// files to close), keeps only durable data and mounts again.
    pub fn restart(&mut self) -> io::Result<()> {
        self.cut();
        self.unmount()?;
        let mut s = self.state.lock();
        s.recover();
        s.faults = Faults::default();
        drop(s);
        self.session = Some(mount(&self.state, &self.mountpoint)?);
        Ok(())
    }

    fn unmount(&mut self) -> io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(self.mountpoint.as_os_str().as_bytes())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // SAFETY: `c` is a valid NUL-terminated path.
            if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
                break;
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EBUSY) || Instant::now() > deadline {
                return Err(e);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Unmounted: the session's thread ends on its own. (Its handle's
        // own unmount, when dropped, finds nothing mounted and only logs.)
        if let Some(fuser::BackgroundSession { guard, .. }) = self.session.take() {
            let _ = guard.join();
        }
        Ok(())
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        self.cut();
        if self.unmount().is_err() {
            // A failed test may leave a process with files open here: the
            // mount goes once they close.
            use std::os::unix::ffi::OsStrExt;
            if let Ok(c) = std::ffi::CString::new(self.mountpoint.as_os_str().as_bytes()) {
                // SAFETY: `c` is a valid NUL-terminated path.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
}

/// Mounts the power-loss filesystem (in [`Mode::Kind`]), or says why the
/// test cannot run here (and fails when faults are required).
pub fn disk(test: &str) -> Option<Disk> {
    disk_in(test, Mode::Kind)
}

/// [`disk`] in `mode`.
pub fn disk_in(test: &str, mode: Mode) -> Option<Disk> {
    let required = std::env::var_os("TOKENVAULT_FAULTS_REQUIRED").is_some();
    let why = match unavailable() {
        Some(why) => why,
        None => match Disk::mount() {
            Ok(d) => {
                d.set_mode(mode);
                return Some(d);
            }
            Err(e) => format!("cannot mount the FUSE filesystem: {e}"),
        },
    };
    assert!(
        !required,
        "{test}: TOKENVAULT_FAULTS_REQUIRED is set but {why}"
    );
    eprintln!("note: {test} skipped: {why} (needs root and /dev/fuse)");
    None
}
