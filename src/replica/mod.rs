//! A store that several service replicas share (cargo feature `postgres`):
//! cache coherence between each replica's memory and the shared backend,
//! over the storage traits alone (change feed, snapshot, read-through,
//! management lock; see `crate::storage`).
//!
//! Every replica verifies from its own memory. It learns of changes made by
//! the others through the change feed: a background thread ([`sync`])
//! applies "changes since my last position" when the backend wakes it,
//! after every reconnect, and on a short poll as a safety net. Each
//! successful sync is stamped with the time it *started*; a verification
//! that finds the newest stamp older than the staleness bound fails closed
//! with [`Error::Unavailable`] instead of answering from stale memory.
//!
//! - Verification and exchange first check freshness, then read a token
//!   memory does not hold through from the backend
//!   ([`Replica::ensure_access`], [`Replica::ensure_refresh`]).
//! - A management call takes the fleet-wide management lock, then the
//!   catalog lock, then catches up ([`Replica::catch_up`]), so it checks the
//!   policy against current state and no other replica's management call
//!   can slip between its check and its commit.
//! - Whatever is read is applied through [`Memory::apply`], the path every
//!   local write takes.

use std::collections::HashSet;
use std::sync::Arc;

use crate::change::{Change, Committed};
use crate::error::{Error, Result};
use crate::memory::{Catalog, Memory, Stored};
use crate::storage::{ChangeFeed, LogBatch, ManageLock, SharedBackend, Snapshot};

mod state;
mod sync;

pub(crate) use state::SyncState;
pub use state::SyncStatus;
pub(crate) use sync::{spawn, Follower};

/// A database error met by a read fails closed: [`Error::Io`] becomes
/// [`Error::Unavailable`] (a read cannot be answered now, and memory alone
/// may be stale); every other error is kept.
pub(crate) fn fail_closed(e: Error) -> Error {
    match e {
        Error::Io(e) => Error::Unavailable(format!(
            "the shared token store could not be read ({e}); failing closed, try again"
        )),
        other => other,
    }
}

/// One replica's link to the shared backend: the backend's shared side and
/// this replica's freshness. Dropping it stops the sync thread.
pub(crate) struct Replica {
    backend: Arc<dyn SharedBackend>,
    state: Arc<SyncState>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.state.stop();
    }
}

impl Replica {
    /// A replica whose memory was just loaded (at the backend's
    /// [`SharedBackend::loaded_seq`]), by a load that started at `started`
    /// (a [`SyncState::now`]).
    pub(crate) fn new(
        backend: Arc<dyn SharedBackend>,
        state: Arc<SyncState>,
        started: u64,
    ) -> Self {
        state.set_applied(backend.loaded_seq());
        state.mark_ok(started);
        Replica { backend, state }
    }

    /// How fresh this replica is.
    pub(crate) fn status(&self) -> SyncStatus {
        self.state.status()
    }

    /// Fails closed when stale; reads an access token (and its parent)
    /// through when memory does not hold it, once `checksum_ok` says the
    /// token is well formed (garbage never reaches the backend). Blocks on
    /// the backend only for a read-through; with `may_block` false a miss
    /// returns false instead. A database error fails closed.
    #[inline]
    pub(crate) fn ensure_access(
        &self,
        mem: &Memory,
        id: &[u8; 16],
        checksum_ok: impl FnOnce() -> bool,
        may_block: bool,
    ) -> Result<bool> {
        self.state.check_fresh()?;
        if mem.has_access(id) {
            return Ok(true);
        }
        if !checksum_ok() {
            return Err(Error::Malformed("checksum mismatch"));
        }
        if !may_block && !self.state.known_missing(id) {
            return Ok(false);
        }
        self.read_through(mem, Some(id), None)
            .map_err(fail_closed)?;
        Ok(true)
    }

    /// As [`Replica::ensure_access`], for a refresh token (always allowed
    /// to block).
    #[inline]
    pub(crate) fn ensure_refresh(&self, mem: &Memory, id: &[u8; 16]) -> Result<()> {
        self.state.check_fresh()?;
        if mem.has_refresh(id) {
            return Ok(());
        }
        self.read_through(mem, None, Some(id)).map_err(fail_closed)
    }

    /// Takes the fleet-wide management lock. Blocks up to the lock timeout.
    pub(crate) fn manage_lock(&self) -> Result<Box<dyn ManageLock>> {
        self.backend.manage_lock()
    }

    /// Brings memory up to date under the catalog lock `cat`: afterwards it
    /// reflects every commit made before the call. Blocks on the backend.
    pub(crate) fn catch_up(&self, mem: &Memory, cat: &mut Catalog) -> Result<()> {
        let rep = &self.state;
        let started = rep.now();
        let got = self.backend.read(rep.applied(), None, None)?;
        if !self.follow(mem, cat, got.log, started) {
            let started = rep.now();
            let (snap, seq) = self.backend.snapshot()?;
            self.reload(mem, cat, snap, seq, started);
        }
        Ok(())
    }

    /// One round of the sync thread: reads `feed` and applies it. Blocks on
    /// the backend.
    pub(crate) fn sync_from(&self, mem: &Memory, feed: &mut dyn ChangeFeed) -> Result<()> {
        let rep = &self.state;
        let started = rep.now();
        let log = feed.read(rep.applied())?;
        let mut cat = mem.catalog_write();
        if self.follow(mem, &mut cat, log, started) {
            return Ok(());
        }
        let started = rep.now();
        let (snap, seq) = feed.snapshot()?;
        self.reload(mem, &mut cat, snap, seq, started);
        Ok(())
    }

    /// Applies a batch read from the feed at `started`. False when it cannot
    /// be applied from the feed (the caller reloads a snapshot).
    fn follow(&self, mem: &Memory, cat: &mut Catalog, log: LogBatch, started: u64) -> bool {
        let rep = &self.state;
        let applied = rep.applied();
        if log.seq > applied {
            let seq = log.seq;
            let Some(changes) = log.changes_after(applied) else {
                return false;
            };
            // Bulk revocations are logged as the ids they revoked: there is
            // nothing to report beyond the changes.
            mem.apply(cat, &changes, &Committed::default());
            rep.set_applied(seq);
        }
        rep.mark_ok(started);
        true
    }

    /// Replaces memory by a snapshot: what it lacks is removed, what it has
    /// is applied over what memory holds. The snapshot must have been read
    /// under the catalog lock held here, so that it reflects every change
    /// this replica applied (management calls commit and apply under that
    /// lock).
    fn reload(&self, mem: &Memory, cat: &mut Catalog, snap: Snapshot, seq: u64, started: u64) {
        let rep = &self.state;
        if seq < rep.applied() {
            // Memory moved past this snapshot meanwhile; the next sync goes on
            // from there.
            return;
        }
        let members: HashSet<(&str, &str)> = snap
            .members
            .iter()
            .map(|m| (m.org.as_str(), m.user.as_str()))
            .collect();
        let refresh: HashSet<[u8; 16]> = snap.refresh.iter().map(|r| r.id).collect();
        let access: HashSet<[u8; 16]> = snap.access.iter().map(|a| a.id).collect();
        let mut changes = Vec::new();
        mem.for_each_access(|id, a| {
            if !access.contains(id) {
                changes.push(Change::DeleteAccess {
                    refresh_id: a.refresh().id(),
                    id: *id,
                });
            }
            true
        });
        mem.for_each_refresh(|id, r| {
            if !refresh.contains(id) {
                changes.push(Change::DeleteRefresh {
                    id: *id,
                    org: r.member().org_id().to_string(),
                    user: r.member().user().to_string(),
                });
            }
            true
        });
        for (org, user) in cat.all_members() {
            if !members.contains(&(org.as_str(), user.as_str())) {
                changes.push(Change::RemoveMember { org, user });
            }
        }
        drop(members);
        mem.apply(cat, &changes, &Committed::default());
        mem.load(cat, stored_of(snap));
        rep.set_applied(seq);
        rep.note_reload();
        rep.mark_ok(started);
        // What the reload read and compared goes back to the system (under
        // the catalog's lock, which the whole reload holds: milliseconds
        // beside the snapshot's read).
        drop((refresh, access, changes));
        mem.give_back_after_load();
    }

    /// Reads a token memory does not hold (and the feed up to the same
    /// snapshot, so that what is added is exactly as fresh as the rest of
    /// memory).
    #[cold]
    fn read_through(
        &self,
        mem: &Memory,
        access: Option<&[u8; 16]>,
        refresh: Option<&[u8; 16]>,
    ) -> Result<()> {
        let rep = &self.state;
        let Some(key) = access.or(refresh) else {
            return Ok(());
        };
        if !rep.admit_read(key)? {
            return Ok(());
        }
        for attempt in 0..3 {
            // The first try reads without the catalog lock; if a sync moved
            // memory past what was read meanwhile, the next reads under it.
            let mut early = (attempt == 0).then(|| {
                let started = rep.now();
                self.backend
                    .read(rep.applied(), access, refresh)
                    .map(|got| (got, started))
            });
            let mut cat = mem.catalog_write();
            let (got, started) = match early.take() {
                Some(r) => r?,
                None => {
                    let started = rep.now();
                    (self.backend.read(rep.applied(), access, refresh)?, started)
                }
            };
            if got.log.seq < rep.applied() {
                continue;
            }
            if !self.follow(mem, &mut cat, got.log, started) {
                let started = rep.now();
                let (snap, seq) = self.backend.snapshot()?;
                self.reload(mem, &mut cat, snap, seq, started);
                continue;
            }
            let mut read = Vec::new();
            let found_refresh = got.refresh.is_some();
            let found_access = got.access.is_some();
            if let Some((r, last)) = got.refresh {
                let id = r.id;
                if !mem.has_refresh(&id) {
                    read.push(Stored::Refresh(r));
                    if let Some((at, client)) = last {
                        read.push(Stored::LastRefresh { id, at, client });
                    }
                }
            }
            if let Some(rec) = got.access {
                if !mem.has_access(&rec.id) {
                    read.push(Stored::Access(rec));
                }
            }
            mem.load(&mut cat, read);
            drop(cat);
            match (access, refresh) {
                (Some(a), _) if !found_access => rep.remember_missing(*a),
                (None, Some(r)) if !found_refresh => rep.remember_missing(*r),
                _ => {}
            }
            return Ok(());
        }
        Err(Error::Io(
            "PostgreSQL: could not read a token consistently with the change log; try again".into(),
        ))
    }
}

/// A snapshot as stored records for memory, in an order that finds every
/// record's member and family (access records oldest first).
fn stored_of(snap: Snapshot) -> Vec<Stored> {
    let mut out = Vec::new();
    out.extend(
        snap.org_cutoffs
            .into_iter()
            .map(|(org, at)| Stored::OrgCutoff { org, at }),
    );
    out.extend(
        snap.org_policies
            .into_iter()
            .map(|(org, policy)| Stored::OrgPolicy { org, policy }),
    );
    out.extend(snap.members.into_iter().map(Stored::Member));
    out.extend(snap.refresh.into_iter().map(Stored::Refresh));
    let mut access = snap.access;
    access.sort_by_key(|a| (a.issued_at, a.id));
    out.extend(access.into_iter().map(Stored::Access));
    out.extend(
        snap.last_refresh
            .into_iter()
            .map(|(id, at, client)| Stored::LastRefresh { id, at, client }),
    );
    out
}
