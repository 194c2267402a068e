//! The sled 0.34 backend: the only module of the crate that touches sled.

// sled's files: opening, locks, modes, leftovers.
pub(crate) mod files;
// What a durable call syncs beyond sled's own flush.
mod stable;
// Warm-start files written at close.
mod warm;
// Writing a batch of changes.
mod write;
// Scanning the trees in parallel.
mod scan;
// Walking every tree for `check_integrity`.
mod integrity;
// After a failed sync: making the disk hold what reads return.
mod resync;
// Where each access record sits in its family.
mod slots;
// Who holds which refresh token.
mod owners;
// Waking a flush that sled left waiting after a failed write.
mod wake;
// A store let go of after a fault, not open again yet.
mod closed;

use closed::Closed;
use scan::{org_from_key, scan_families, scan_parts, u64_from};

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{Db, Transactional, Tree};

use self::stable::StableFiles;
use super::{Backend, Closed as CloseDone, IntegrityReport, LoadSink, Loaded};
use crate::change::{Change, Committed};
use crate::codec::{
    decode, decode_access, decode_event, decode_last_use, decode_refresh, encode, encode_access,
    encode_event, encode_refresh, member_key, org_key, view_refresh, AccessRecord, EventRecord,
    MemberRecord, OrgPolicyRecord, RefreshRecord, RefreshView, StoredState,
};
use crate::error::{Error, IoError, Result};

const EVENT_SEQ: &str = "event_seq";

pub(crate) struct SledBackend {
    db: Db,
    /// The configuration `db` was opened with: sled keeps its error in it
    /// (see `wake`).
    cfg: sled::Config,
    meta: Tree,
    members: Tree,
    cutoffs: Tree,
    refresh: Tree,
    access: Tree,
    last_refresh: Tree,
    events: Tree,
    /// Organizations' token policies, by `org_key`.
    org_policy: Tree,
    /// Refresh records found unreadable at open: whose they are is unknown,
    /// so no list can be known complete (lists fail with `Corrupt`).
    unreadable: AtomicU64,
    /// The families' slots, so that the rest of the crate names access
    /// records by id only (kept for the families with a record past slot
    /// 0, read off the access tree for the others: see `slots`).
    slots: slots::Slots,
    /// Who holds which refresh token (sled has no index tree by owner).
    owners: owners::Owners,
    /// Where the database lives (none: temporary) and sled's cache size,
    /// for the checkpoint of [`Backend::close`].
    path: Option<std::path::PathBuf>,
    cache_bytes: u64,
    /// The warm-start marker taken out of the meta tree at open: names the
    /// files [`Backend::load`] may read instead of the trees.
    warm: parking_lot::Mutex<Option<warm::Marker>>,
    /// The files a sync makes durable (none: temporary).
    stable: Option<StableFiles>,
    /// The first sync that failed, if one did: what it left unwritten may
    /// still read as present (Linux drops the pages of a failed writeback
    /// from the write-back but not from the cache), so no later sync can
    /// make a change durable on top of it. Every later sync answers this
    /// error until the database is opened again (see `resync`).
    sync_failed: parking_lot::Mutex<Option<String>>,
    /// Opened to read only (`Config::read_only`): every write is refused,
    /// the warm-start files and their marker are kept, and closing writes
    /// nothing.
    read_only: bool,
}

/// The schema version written, and those upgraded from. 2: access records
/// keyed by family and slot (1: by family and access id); 3: no member
/// index on disk, issue events inside refresh records; 4: may hold a
/// warm-start marker (a build that knows only 3 would write past a marker
/// without removing it, so it must not open the database).
const SCHEMA: (&[u8], &[&[u8]]) = (b"4", &[b"1", b"2", b"3"]);

/// The tree schema 3 no longer keeps (dropped by [`Backend::upgrade`]).
const OLD_BY_MEMBER: &str = "refresh_by_member";

/// The error for a sled error: kind `io` keeping sled's error (or, for
/// sled's I/O errors, the [`std::io::Error`]) as the source, or `corrupt`.
pub(crate) fn io(e: sled::Error) -> Error {
    match e {
        sled::Error::Io(e) => files::io_error(e),
        sled::Error::Corruption { .. } => Error::Corrupt(e.to_string()),
        other => Error::Io(IoError::with_source(other.to_string(), other)),
    }
}

fn event_key(org: &str, seq: u64) -> Vec<u8> {
    let mut k = org_key(org);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// An access record's key: its family (refresh id) and slot, so that the
/// records of a family sit together and a new record can replace an
/// evicted one in place.
fn access_key(refresh_id: &[u8; 16], slot: u32) -> [u8; ACCESS_KEY_LEN] {
    let mut k = [0u8; ACCESS_KEY_LEN];
    k[..16].copy_from_slice(refresh_id);
    k[16..].copy_from_slice(&slot.to_be_bytes());
    k
}

const ACCESS_KEY_LEN: usize = 20;
/// Schema version 1 keyed access records by refresh id and access id.
const V1_ACCESS_KEY_LEN: usize = 32;

/// The slot of an access key of the current layout.
fn slot_of(k: &[u8]) -> Option<u32> {
    if k.len() != ACCESS_KEY_LEN {
        return None;
    }
    let mut b = [0u8; 4];
    b.copy_from_slice(&k[16..]);
    Some(u32::from_be_bytes(b))
}

impl SledBackend {
    /// Opens (or creates) a database at `path`, or a temporary one.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn open(path: Option<&Path>, cache_bytes: u64) -> Result<Self> {
        Self::open_keeping_warm(path, cache_bytes, false)
    }

    /// [`SledBackend::open`]; with `keep_warm`, the warm-start marker stays
    /// in the meta tree and the files on disk (an open that will write
    /// nothing).
    pub(crate) fn open_keeping_warm(
        path: Option<&Path>,
        cache_bytes: u64,
        keep_warm: bool,
    ) -> Result<Self> {
        let cfg = sled::Config::new().cache_capacity(cache_bytes);
        let cfg = match path {
            Some(p) => cfg.path(p),
            None => cfg.temporary(true),
        };
        let db = open_waiting_for_lock(&cfg, path.is_some())?;
        // A database this open created is durable (its files and their
        // directory entries) before anything is written to it.
        let stable = match path {
            Some(p) => {
                let files = match StableFiles::open(p) {
                    Ok(files) => files,
                    Err(e) => {
                        let_go_without_files(db, p);
                        return Err(e);
                    }
                };
                if let Err(e) = files.sync_created() {
                    let _ = keep_if_unsynced(&db, &cfg, Some(&files));
                    return Err(e);
                }
                Some(files)
            }
            None => None,
        };
        let t = |name: &str| db.open_tree(name).map_err(io);
        let trees = (|| {
            let meta = t("meta")?;
            // Warm-start files are valid only while nothing has been
            // written since the close that made them: their marker goes,
            // durably, before anything else can write.
            let mut marker = None;
            if let (Some(_), true) = (path, keep_warm) {
                marker = meta
                    .get(warm::MARKER_KEY)
                    .map_err(io)?
                    .and_then(|m| warm::Marker::decode(&m));
            } else if let (Some(p), Some(files)) = (path, &stable) {
                match meta.remove(warm::MARKER_KEY).map_err(io)? {
                    Some(m) => {
                        wake::flush(&db, &cfg).map_err(io)?;
                        files.sync()?;
                        marker = warm::Marker::decode(&m);
                    }
                    None => warm::remove(p),
                }
            }
            let names = [
                "members",
                "cutoffs",
                "refresh",
                "access",
                "last_refresh",
                "events",
                "org_policy",
            ];
            let mut trees = Vec::with_capacity(names.len());
            for name in names {
                trees.push(t(name)?);
            }
            Ok((meta, trees, marker))
        })();
        let (meta, trees, marker) = match trees {
            Ok(opened) => opened,
            Err(e) => {
                let _ = keep_if_unsynced(&db, &cfg, stable.as_ref());
                return Err(e);
            }
        };
        let [members, cutoffs, refresh, access, last_refresh, events, org_policy]: [Tree; 7] =
            trees
                .try_into()
                .map_err(|_| Error::Io("sled opened too few trees".into()))?;
        Ok(SledBackend {
            meta,
            members,
            cutoffs,
            refresh,
            access,
            last_refresh,
            events,
            org_policy,
            unreadable: AtomicU64::new(0),
            slots: slots::Slots::new(),
            owners: owners::Owners::new(scan_parts()),
            path: path.map(Path::to_path_buf),
            cache_bytes,
            warm: parking_lot::Mutex::new(marker),
            stable,
            sync_failed: parking_lot::Mutex::new(None),
            read_only: false,
            db,
            cfg,
        })
    }

    /// Removes the records of refresh tokens whose issue failed (named by
    /// `resync`'s marker), with any access records and last-exchange time
    /// of theirs, and makes that durable. Blocks for the writes and a sync.
    pub(super) fn remove_failed_issues(&self, ids: &[[u8; 16]]) -> Result<()> {
        for id in ids {
            self.refresh.remove(id).map_err(io)?;
            self.last_refresh.remove(id).map_err(io)?;
            for kv in self.access.scan_prefix(id) {
                let (k, _) = kv.map_err(io)?;
                self.access.remove(k).map_err(io)?;
            }
            self.slots.drop_family(id);
        }
        self.sync()
    }
}

impl SledBackend {
    /// The error of a write to a store opened to read only.
    fn refuse_if_read_only(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::Conflict(
                "the store was opened read-only: it makes no changes (open it without \
                 read_only to change it)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Appends to `out` the stored refresh records of `org` (of its member
    /// `user`, when given) whose ids begin with `prefix`: a range of the
    /// refresh tree, usually one record (see `owners`). A record under
    /// another id's key is left out, as a load leaves it out. Blocks for
    /// sled's reads.
    fn refresh_with_prefix(
        &self,
        prefix: &owners::Prefix,
        org: &str,
        user: Option<&str>,
        out: &mut Vec<RefreshRecord>,
    ) -> Result<()> {
        for kv in self.refresh.scan_prefix(prefix) {
            let (k, v) = kv.map_err(io)?;
            let r = decode_refresh(&v)?;
            if r.id[..] == *k && r.org == org && user.is_none_or(|u| r.user == u) {
                out.push(r);
            }
        }
        Ok(())
    }

    /// The ids of the stored refresh records that begin as those of
    /// `org`'s tokens (of its member `user`'s, when given) do: theirs, and
    /// any other that shares a prefix with one of them (rare; the caller
    /// tells them apart by their records). Blocks for sled's reads.
    fn ids_by_prefix(&self, org: &str, user: Option<&str>) -> Result<Vec<[u8; 16]>> {
        let mut out = Vec::new();
        for p in self.owners.prefixes(org, user) {
            for k in self.refresh.scan_prefix(p).keys() {
                if let Ok(id) = <[u8; 16]>::try_from(&k.map_err(io)?[..]) {
                    out.push(id);
                }
            }
        }
        Ok(out)
    }

    /// sled's flush of the database, which answers sled's error rather
    /// than wait forever after a write of its log failed (see `wake`).
    /// Blocks for the writes of what is not yet written.
    fn flush(&self) -> Result<()> {
        wake::flush(&self.db, &self.cfg).map(drop).map_err(io)
    }

    /// Whether dropping the database now is safe: sled has a sticky error (its drop then
    /// does no I/O), or a sync through its own description succeeds.
    fn syncs_or_sticky(&self) -> bool {
        match &self.stable {
            None => true,
            Some(files) => self.flush().is_err() || files.drain().is_ok() || files.drain().is_ok(),
        }
    }
}

impl Drop for SledBackend {
    fn drop(&mut self) {
        // Dropping reports nothing: a failure here was already reported to
        // the durable call that met it first (see `keep_if_unsynced`).
        let _ = keep_if_unsynced(&self.db, &self.cfg, self.stable.as_ref());
    }
}

/// Before a database handle is dropped: sled 0.34.7 syncs the file when its
/// last handle goes and panics if that sync fails. Flush and sync first
/// through sled's own file description ([`StableFiles::drain`]): a failure
/// met here is reported once, as the error returned. Then sled's
/// descriptor is pointed at an in-memory file ([`StableFiles::release`]),
/// so that its drop can neither fail nor panic, whatever the file system
/// does meanwhile (a daemon gone, a device gone), and the database is
/// dropped, its memory and its lock freed. Where that cannot be done (not
/// Linux, sled's descriptor not found) and the sync fails twice in a row
/// (as it would in sled's drop), a handle is kept (leaked) instead, so
/// that the last handle never goes; the process then keeps the database's
/// memory and file lock until it exits. If sled has a sticky error, its
/// drop does no I/O.
fn keep_if_unsynced(db: &Db, cfg: &sled::Config, files: Option<&StableFiles>) -> Result<()> {
    // A failed flush usually leaves sled's sticky error (then its drop does
    // no I/O), but not always (a file system gone): the syncs below decide.
    let flushed = wake::flush(db, cfg).map(drop).map_err(io);
    // A temporary database: sled's drop does not sync it.
    let Some(files) = files else {
        return flushed;
    };
    let first = files.drain();
    if !files.release() && first.is_err() && files.drain().is_err() {
        std::mem::forget(db.clone());
    }
    flushed.and(first)
}

/// Lets go of a database whose files this crate could not open (the file
/// system failed right after sled opened it, so no sync through sled's
/// description can be tried first): sled's descriptor is pointed at an
/// in-memory file, as in [`keep_if_unsynced`], and the database dropped;
/// where that cannot be done it is kept (leaked) rather than dropped,
/// since sled's drop would panic if its sync failed, and the process keeps
/// the lock until it exits.
fn let_go_without_files(db: Db, dir: &Path) {
    if stable::release_sleds(dir) {
        drop(db);
    } else {
        std::mem::forget(db);
    }
}

/// How long opening waits for a lock that sled itself, or another open of
/// the store directory, still holds.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Opens the database, waiting up to [`LOCK_WAIT`] for the directory's file
/// lock. sled 0.34 releases that lock a little after the last handle is
/// dropped (its background threads let go of the file later), so opening a
/// store right after closing it in the same process may find the lock still
/// taken. A lock held by a live store elsewhere still fails, after the wait.
fn open_waiting_for_lock(cfg: &sled::Config, on_disk: bool) -> Result<Db> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match cfg.open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e))
                if on_disk
                    && e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(io(e)),
        }
    }
}

impl Backend for SledBackend {
    fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.meta.get(name).map_err(io)?.map(|v| v.to_vec()))
    }

    fn meta_put(&self, name: &str, value: &[u8]) -> Result<()> {
        self.refuse_if_read_only()?;
        self.meta.insert(name, value).map_err(io)?;
        self.flush()?;
        Ok(())
    }

    fn load(&self, sink: &dyn LoadSink) -> Result<Loaded> {
        let mut info = Loaded::default();
        for kv in self.cutoffs.iter() {
            let (k, v) = kv.map_err(io)?;
            let org = org_from_key(&k).ok_or_else(|| Error::Corrupt("bad cutoff key".into()))?;
            let at = u64_from(&v).ok_or_else(|| Error::Corrupt("bad cutoff value".into()))?;
            sink.org_cutoff(org, at);
        }
        for kv in self.org_policy.iter() {
            let (k, v) = kv.map_err(io)?;
            let org =
                org_from_key(&k).ok_or_else(|| Error::Corrupt("bad org policy key".into()))?;
            sink.org_policy(org, decode::<OrgPolicyRecord>(&v, "org policy")?);
        }
        for kv in self.members.iter() {
            let (_, v) = kv.map_err(io)?;
            match decode::<MemberRecord>(&v, "member") {
                Ok(m) => sink.member(m),
                Err(_) => info.skipped += 1,
            }
        }
        let skipped = AtomicU64::new(0);
        let skip = || {
            skipped.fetch_add(1, Ordering::Relaxed);
        };
        // A record under another id's key is corrupt: left out (fail
        // closed), as the integrity check reports it.
        let unreadable = AtomicU64::new(0);
        let max_issue = AtomicU64::new(0);
        self.owners.clear();
        let on_refresh = |part: usize, k: &[u8], v: &[u8]| {
            let loaded = |r: &RefreshView<'_>| {
                if r.id[..] != *k {
                    return false;
                }
                self.owners.loaded(part, r.org, r.user, r.id, r.issue_seq);
                // Records come in random order of their events: a new
                // highest is rare, and only it is written.
                if r.issue_seq > max_issue.load(Ordering::Relaxed) {
                    max_issue.fetch_max(r.issue_seq, Ordering::Relaxed);
                }
                sink.refresh(r);
                true
            };
            let ok = match view_refresh(v) {
                Some(r) => loaded(&r),
                None => decode_refresh(v).is_ok_and(|r| loaded(&r.view())),
            };
            if !ok {
                unreadable.fetch_add(1, Ordering::Relaxed);
                skip();
            }
        };
        // A record under a key of its own family's goes to memory; its
        // slot, past 0, makes the backend keep its family's slots.
        self.slots.clear();
        let on_access = |_: usize, k: &[u8], v: &[u8]| match (slot_of(k), decode_access(v)) {
            (Some(slot), Ok(rec)) if k[..16] == rec.refresh_id => {
                self.slots.loaded(&rec.refresh_id, slot);
                sink.access(rec);
            }
            _ => skip(),
        };
        let on_last = |k: &[u8], v: &[u8]| match (<[u8; 16]>::try_from(k), decode_last_use(v)) {
            (Ok(id), Some((at, client))) => sink.last_refresh(id, at, client),
            _ => skip(),
        };
        // Each loader thread hands a family's refresh record over before
        // its access records (see `scan_families`; the warm-start files
        // keep that order), and the last exchanges come after every family.
        let marker = self.warm.lock().take();
        let warm = match (&self.path, &marker) {
            (Some(p), Some(m)) => Some(warm::stream(
                p,
                m,
                &|i, kind, k, v| match kind {
                    warm::REFRESH => on_refresh(i, k, v),
                    warm::ACCESS => on_access(i, k, v),
                    _ => skip(),
                },
                &mut |kind, k, v| match kind {
                    warm::LAST_REFRESH => on_last(k, v),
                    _ => skip(),
                },
            )?),
            _ => None,
        };
        match warm {
            Some(true) => info.warm = true,
            Some(false) => {
                // Files that differ from their marker, found out after
                // entries of theirs were handed over: the store discards
                // what it made of them and loads again, from the trees
                // this time (the marker is gone).
                if let Some(p) = self.path.as_ref().filter(|_| !self.read_only) {
                    warm::remove(p);
                }
                return Ok(Loaded {
                    again: true,
                    ..Loaded::default()
                });
            }
            None => {
                scan_families(
                    scan_parts(),
                    &self.refresh,
                    &self.access,
                    &on_refresh,
                    &on_access,
                )?;
                for kv in self.last_refresh.iter() {
                    let (k, v) = kv.map_err(io)?;
                    on_last(&k, &v);
                }
            }
        }
        self.slots.finish_load(&self.access)?;
        self.owners.finish_load();
        if let Some(p) = self.path.as_ref().filter(|_| !self.read_only) {
            warm::remove(p);
        }
        self.unreadable
            .store(unreadable.into_inner(), Ordering::Relaxed);
        info.skipped += skipped.into_inner();
        // Issue events live in their refresh records, not in EVENT_SEQ.
        info.last_event_seq = self.event_seq()?.max(max_issue.into_inner());
        Ok(info)
    }

    fn commit(&self, changes: &[Change]) -> Result<Committed> {
        self.refuse_if_read_only()?;
        self.write(changes)
    }

    fn schema(&self) -> (&'static [u8], &'static [&'static [u8]]) {
        SCHEMA
    }

    fn upgrade(&self, from: &[u8]) -> Result<()> {
        self.refuse_if_read_only()?;
        if from == b"1" {
            self.upgrade_access_keys()?;
        }
        if from != b"3" {
            // Schema 3 keeps which tokens each member holds in the store's
            // memory only.
            self.db.drop_tree(OLD_BY_MEMBER).map_err(io)?;
        }
        self.sync()
    }

    fn sync(&self) -> Result<()> {
        if let Some(first) = &*self.sync_failed.lock() {
            return Err(Error::Io(IoError::from(format!(
                "{first} (an earlier sync of this store failed: nothing is made durable until \
                 the store has opened its files again)"
            ))));
        }
        let synced = self.flush().and_then(|_| match &self.stable {
            Some(files) => files.sync(),
            None => Ok(()),
        });
        if let (Err(e), Some(p)) = (&synced, &self.path) {
            let msg = match e {
                Error::Io(m) => m.message().to_string(),
                other => other.to_string(),
            };
            self.sync_failed.lock().get_or_insert(msg);
            resync::mark(p);
        }
        synced
    }

    fn note_failed_issue(&self, id: &[u8; 16]) {
        if let Some(p) = &self.path {
            resync::note_failed_issue(p, id);
        }
    }

    fn reopen(self: Box<Self>) -> (Box<dyn Backend>, Result<()>) {
        let Some(path) = self.path.clone() else {
            return (
                self,
                Err(Error::Unavailable(
                    "a temporary store cannot open its storage again".into(),
                )),
            );
        };
        // A storage whose syncs still fail would be kept open when dropped
        // (holding its file lock, so no reopen could succeed): wait until
        // they work again.
        if !self.syncs_or_sticky() {
            let msg = match &*self.sync_failed.lock() {
                Some(m) => format!("{m}; its syncs still fail"),
                None => "the storage failed and its syncs still fail".into(),
            };
            return (self, Err(Error::Unavailable(msg)));
        }
        let cache_bytes = self.cache_bytes;
        // sled does no more I/O when a database whose I/O failed is
        // dropped; where it would (a failure sled did not see), a panic
        // there must not take the caller with it.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(self)));
        let closed = Closed { path, cache_bytes };
        closed.open_again()
    }

    fn close(self: Box<Self>) -> Result<CloseDone> {
        if self.read_only {
            // Nothing was written: no sync, checkpoint or warm-start files
            // (those of the last close stay valid).
            return Ok(CloseDone::default());
        }
        self.sync()?;
        let mut done = CloseDone::default();
        if let Some(p) = &self.path {
            // Nothing writes to the database any more: a copy of its token
            // records spares the next open sled's page-by-page reads. The
            // copy is a cache, so a failure to make it only costs the next
            // open that time.
            match self.write_warm(p) {
                Ok(marker) => {
                    self.meta
                        .insert(warm::MARKER_KEY, marker.encode())
                        .map_err(io)?;
                    self.sync()?;
                    done.warm_start = true;
                }
                // sled found its own files damaged while they were copied.
                Err(e @ Error::Corrupt(_)) => return Err(e),
                Err(_) => {}
            }
        }
        let (path, cache_bytes) = (self.path.clone(), self.cache_bytes);
        drop(self);
        // sled 0.34 writes the snapshot that spares the next open its log
        // replay only when it opens a database (`snapshot_after_ops` does
        // nothing in 0.34.7): opening the database once more here, while
        // nothing else uses it, moves that replay from the next open to
        // this close. Opening is recovery, so a crash during it is too.
        if let Some(p) = path {
            let cfg = sled::Config::new().cache_capacity(cache_bytes).path(&p);
            // Another process that holds the directory for longer than the
            // lock wait is opening the store: the checkpoint is skipped
            // (everything is durable already).
            let _opening = files::lock_dir(&p).map_err(|e| {
                if files::is_held_elsewhere(&e) {
                    Error::Io(IoError::from(format!(
                        "the checkpoint was skipped: {e} (waited {} s)",
                        LOCK_WAIT.as_secs()
                    )))
                } else {
                    e
                }
            })?;
            let db = open_waiting_for_lock(&cfg, true)?;
            // The snapshot is written and renamed into place by that open;
            // its name is made durable, and the database is dropped only
            // once nothing of it is left unsynced.
            let files = match StableFiles::open(&p) {
                Ok(files) => files,
                Err(e) => {
                    let_go_without_files(db, &p);
                    return Err(e);
                }
            };
            let synced = keep_if_unsynced(&db, &cfg, Some(&files));
            drop(db);
            synced?;
            files.sync_dir()?;
            // The checkpoint writes new files (sled's snapshot): private too.
            files::tighten(&p)?;
            done.checkpoint = true;
        }
        Ok(done)
    }

    fn get_refresh(&self, id: &[u8; 16]) -> Result<Option<RefreshRecord>> {
        match self.refresh.get(id).map_err(io)? {
            Some(v) => Ok(Some(decode_refresh(&v)?)),
            None => Ok(None),
        }
    }

    fn family_access(&self, refresh_id: &[u8; 16], limit: usize) -> Result<Vec<[u8; 16]>> {
        // The families' slots know (see `slots`): no scan of the tree.
        self.slots.ids(&self.access, refresh_id, limit)
    }

    fn list_refresh(&self, org: &str, user: Option<&str>) -> Result<Vec<RefreshRecord>> {
        // No index tree by owner: the backend's own table says which
        // prefixes of ids the owner's tokens have.
        let mut out = Vec::new();
        for p in self.owners.prefixes(org, user) {
            self.refresh_with_prefix(&p, org, user, &mut out)?;
        }
        Ok(out)
    }

    fn refresh_ids(&self, org: &str, user: &str) -> Result<Vec<[u8; 16]>> {
        // Keys only, none decoded: the caller tells the member's from any
        // other of the same prefix by memory's entries.
        self.ids_by_prefix(org, Some(user))
    }

    fn events(&self, org: &str, before: u64, limit: usize) -> Result<Vec<EventRecord>> {
        // The issue events of the organization's stored tokens (the newest
        // `limit` of them, read from their records) first, then the events
        // tree: a purge that moves an event from its record to the tree
        // meanwhile leaves it in one of the two reads, or both (the same
        // seq, kept once). The table's entries name their records by the
        // prefix of their ids and the event's number: those with a number
        // are read newest first until `limit` are found (an entry a
        // rewritten record left finds none); those without one, every time.
        let mut out = Vec::new();
        let (mut known, mut unknown): (Vec<_>, Vec<_>) = self
            .owners
            .issue_events(org)
            .into_iter()
            .partition(|(_, seq)| *seq != owners::SEQ_READ);
        known.retain(|(_, seq)| *seq < before);
        // Each entry once (a record issued twice under its id would have
        // left two), so that each one found counts once.
        known.sort_unstable_by_key(|(p, seq)| (std::cmp::Reverse(*seq), *p));
        known.dedup();
        unknown.sort_unstable();
        unknown.dedup();
        let mut recs = Vec::new();
        for (p, _) in unknown {
            self.refresh_with_prefix(&p, org, None, &mut recs)?;
        }
        out.extend(
            recs.drain(..)
                .filter_map(|r| r.issue_event())
                .filter(|e| e.seq < before),
        );
        let mut found = 0;
        for (p, seq) in known {
            if found >= limit {
                break;
            }
            self.refresh_with_prefix(&p, org, None, &mut recs)?;
            for ev in recs.drain(..).filter_map(|r| r.issue_event()) {
                if ev.seq == seq {
                    out.push(ev);
                    found += 1;
                }
            }
        }
        let below = event_key(org, 0)..event_key(org, before);
        for (n, kv) in self.events.range(below).rev().enumerate() {
            if n >= limit {
                break;
            }
            let (_, v) = kv.map_err(io)?;
            out.push(decode_event(&v)?);
        }
        out.sort_unstable_by_key(|e| std::cmp::Reverse(e.seq));
        out.dedup_by_key(|e| e.seq);
        out.truncate(limit);
        Ok(out)
    }

    fn put_event(&self, e: &EventRecord, stored: Option<u64>) -> Result<u64> {
        self.refuse_if_read_only()?;
        match stored {
            None => {
                self.write(&[Change::Event(e.clone())])?;
                Ok(e.seq)
            }
            Some(seq) => {
                // Only its count and last time change: one key, replaced.
                self.events
                    .insert(event_key(&e.org, seq), encode_event(e)?)
                    .map_err(io)?;
                Ok(seq)
            }
        }
    }

    fn purge_events(&self, before: u64, limit: usize) -> Result<(u64, bool)> {
        self.refuse_if_read_only()?;
        // Each organization's events in the order of their numbers (the
        // order they were made in): its oldest go until one is recent
        // enough, then the scan jumps to the next organization.
        let mut doomed: Vec<sled::IVec> = Vec::new();
        let mut more = false;
        let mut from: std::ops::Bound<Vec<u8>> = std::ops::Bound::Unbounded;
        'orgs: loop {
            let mut next_org = None;
            for kv in self
                .events
                .range((from.clone(), std::ops::Bound::Unbounded))
            {
                let (k, v) = kv.map_err(io)?;
                let Some(org_len) = k.len().checked_sub(8) else {
                    continue;
                };
                match decode_event(&v) {
                    Ok(e) if e.last_at.max(e.at) > before => {
                        next_org = Some(k[..org_len].to_vec());
                        break;
                    }
                    Ok(_) => {
                        if doomed.len() == limit {
                            more = true;
                            break 'orgs;
                        }
                        doomed.push(k);
                    }
                    // Left for check_integrity to name.
                    Err(_) => {}
                }
            }
            match next_org {
                Some(mut prefix) => {
                    prefix.extend_from_slice(&[0xff; 8]);
                    from = std::ops::Bound::Excluded(prefix);
                }
                None => break,
            }
        }
        let removed = doomed.len() as u64;
        if removed > 0 {
            let mut batch = sled::Batch::default();
            for k in doomed {
                batch.remove(k);
            }
            self.events.apply_batch(batch).map_err(io)?;
        }
        Ok((removed, more))
    }

    fn check_integrity(&self) -> Result<IntegrityReport> {
        integrity::check(self)
    }

    fn unreadable_refresh(&self) -> u64 {
        self.unreadable.load(Ordering::Relaxed)
    }

    fn size_on_disk(&self) -> Result<u64> {
        let warm = self.path.as_deref().map_or(0, warm::size);
        Ok(self.db.size_on_disk().map_err(io)? + warm)
    }
}

#[cfg(test)]
pub(super) mod tests;
