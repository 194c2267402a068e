//! The store on a shared (PostgreSQL) backend: opening it, keeping each
//! replica's memory in line with the database, and the hooks the store's
//! calls go through. With the `postgres` feature off, `unshared.rs` gives
//! the same hooks as no-ops.
//!
//! - Verification and exchange first check the replica's freshness (fail
//!   closed past the staleness bound), then read a token this replica does
//!   not hold through from the database.
//! - A management call takes the fleet-wide management lock, then the
//!   catalog lock, then catches up with the change log, so it checks the
//!   policy against current state and no other replica's management call
//!   can slip between its check and its commit. Read-only management calls
//!   catch up without the lock.
//! - The sync thread ([`crate::replica`]) applies the change log through
//!   [`Inner::apply`], the path every local write takes.

use std::collections::HashSet;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Weak};

use parking_lot::RwLockWriteGuard;

use super::{Catalog, Inner, TokenStore, FINGERPRINT_CONTEXT};
use crate::change::Change;
use crate::config::{load_or_create_key, Config};
use crate::error::{Error, Result};
use crate::replica::{self, Follower, Replica, SyncStatus};
use crate::storage::postgres::{Conn, ConnSpec, LogBatch, PgBackend};
use crate::storage::{Backend, Snapshot, SLOT_ANY};

/// What a store on a shared backend keeps beside its memory.
pub(super) struct Slot {
    backend: PgBackend,
    replica: Arc<Replica>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.replica.stop();
    }
}

/// The catalog lock, and for a management call on a shared store the
/// fleet-wide management lock (released after the catalog lock).
pub(super) struct CatalogGuard<'a> {
    cat: RwLockWriteGuard<'a, Catalog>,
    _manage: Option<crate::storage::postgres::ManageLock>,
}

impl Deref for CatalogGuard<'_> {
    type Target = Catalog;
    fn deref(&self) -> &Catalog {
        &self.cat
    }
}

impl DerefMut for CatalogGuard<'_> {
    fn deref_mut(&mut self) -> &mut Catalog {
        &mut self.cat
    }
}

/// Issuing a token on a shared store takes the fleet-wide management lock
/// and the catalog, as any management call.
pub(super) type IssueCatalog<'a> = CatalogGuard<'a>;

/// Opens a store on PostgreSQL: migrate, load, then start the sync thread.
pub(super) fn open(cfg: Config) -> Result<TokenStore> {
    cfg.validate()?;
    let Some(opts) = cfg.postgres.clone() else {
        return Err(Error::InvalidArgument("no PostgreSQL options".into()));
    };
    opts.validate()?;
    let key = match (&cfg.key, &cfg.key_file) {
        (Some(k), _) => k.clone(),
        (None, Some(file)) => load_or_create_key(file, false, cfg.allow_loose_key_permissions)?,
        (None, None) => {
            return Err(Error::InvalidArgument(
                "a store on PostgreSQL needs the store key (Config::key or an existing \
                 Config::key_file), the same on every replica"
                    .into(),
            ))
        }
    };
    let spec = ConnSpec::parse(&opts.url, opts.connect_timeout, opts.lock_timeout)?;
    let fingerprint = key.derive(FINGERPRINT_CONTEXT);
    let backend = PgBackend::open(
        spec.clone(),
        opts.pool_size,
        cfg.max_access_per_refresh,
        &fingerprint[..16],
        cfg.create_if_missing,
    )?;
    let replica = Arc::new(Replica::new(opts));
    // The snapshot read at open counts as a sync that started now.
    let started = replica.now();
    let mut store = TokenStore::with_backend(Box::new(backend.clone()), cfg, key)?;
    replica.set_applied(backend.loaded_seq());
    replica.mark_ok(started);
    let inner = Arc::get_mut(&mut store.inner)
        .ok_or_else(|| Error::Io("the new store is already shared".into()))?;
    inner.shared = Some(Slot {
        backend,
        replica: replica.clone(),
    });
    let weak: Weak<Inner> = Arc::downgrade(&store.inner);
    let weak: Weak<dyn Follower> = weak;
    replica::spawn(replica, spec, weak)?;
    Ok(store)
}

impl TokenStore {
    /// How fresh this replica's view of a shared (PostgreSQL) store is;
    /// `None` for an embedded store.
    ///
    /// ```no_run
    /// use tokenvault::{Config, StoreKey};
    /// let store = Config::postgres("host=/run/postgresql dbname=tokens")
    ///     .key(StoreKey::from_bytes([7; 32]))
    ///     .open()?;
    /// let status = store.sync_status().unwrap();
    /// assert!(status.fresh, "replica at {} is stale", status.applied_seq);
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn sync_status(&self) -> Option<SyncStatus> {
        self.inner.shared.as_ref().map(|s| s.replica.status())
    }

    /// Brings this replica up to date with the shared store now, instead of
    /// waiting for the next notification or poll: afterwards it reflects
    /// every commit made (by any replica) before the call. Does nothing for
    /// an embedded store.
    ///
    /// # Errors
    /// [`Error::Io`] if PostgreSQL cannot be reached.
    ///
    /// ```no_run
    /// use tokenvault::{Config, StoreKey};
    /// let store = Config::postgres("host=/run/postgresql dbname=tokens")
    ///     .key(StoreKey::from_bytes([7; 32]))
    ///     .open()?;
    /// store.catch_up()?;
    /// assert!(store.sync_status().unwrap().fresh);
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn catch_up(&self) -> Result<()> {
        let inner = &*self.inner;
        let Some(sh) = &inner.shared else {
            return Ok(());
        };
        let mut cat = inner.mem.catalog.write();
        inner.catch_up(sh, &mut cat)
    }
}

impl Follower for Inner {
    fn sync_via(&self, conn: &mut Conn) -> Result<()> {
        let Some(sh) = &self.shared else {
            return Ok(());
        };
        let rep = &sh.replica;
        let started = rep.now();
        let got = conn.fetch(rep.applied(), None, None)?;
        let mut cat = self.mem.catalog.write();
        if self.follow(sh, &mut cat, &got.log, started) {
            return Ok(());
        }
        let started = rep.now();
        let (snap, seq) = conn.snapshot()?;
        self.reload(sh, &mut cat, snap, seq, started);
        Ok(())
    }
}

impl Inner {
    /// Fails closed when stale; reads an access token (and its parent)
    /// through from the database when this replica does not hold it, once
    /// `checksum_ok` says the token is well formed (garbage never reaches
    /// the database).
    #[inline]
    pub(super) fn fresh_access(
        &self,
        id: &[u8; 16],
        checksum_ok: impl FnOnce() -> bool,
    ) -> Result<()> {
        let Some(sh) = &self.shared else {
            return Ok(());
        };
        sh.replica.check_fresh()?;
        if self.mem.access.contains(id) {
            return Ok(());
        }
        if !checksum_ok() {
            return Err(Error::Malformed("checksum mismatch"));
        }
        self.read_through(sh, Some(id), None)
    }

    /// As [`Inner::fresh_access`], for a refresh token.
    #[inline]
    pub(super) fn fresh_refresh(&self, id: &[u8; 16]) -> Result<()> {
        let Some(sh) = &self.shared else {
            return Ok(());
        };
        sh.replica.check_fresh()?;
        if self.mem.refresh.contains(id) {
            return Ok(());
        }
        self.read_through(sh, None, Some(id))
    }

    /// The catalog for issuing a token: as for any management call.
    pub(super) fn lock_catalog_for_issue(&self) -> Result<IssueCatalog<'_>> {
        self.lock_catalog_for_write()
    }

    /// The catalog for a management call that writes: on a shared store,
    /// under the fleet-wide management lock and caught up.
    pub(super) fn lock_catalog_for_write(&self) -> Result<CatalogGuard<'_>> {
        let Some(sh) = &self.shared else {
            return Ok(CatalogGuard {
                cat: self.mem.catalog.write(),
                _manage: None,
            });
        };
        let manage = sh.backend.manage_lock()?;
        let mut cat = self.mem.catalog.write();
        self.catch_up(sh, &mut cat)?;
        Ok(CatalogGuard {
            cat,
            _manage: Some(manage),
        })
    }

    /// The catalog for a management call that only reads: on a shared
    /// store, caught up first.
    pub(super) fn lock_for_read(&self) -> Result<CatalogGuard<'_>> {
        let mut cat = self.mem.catalog.write();
        if let Some(sh) = &self.shared {
            self.catch_up(sh, &mut cat)?;
        }
        Ok(CatalogGuard { cat, _manage: None })
    }

    /// Loads a refresh record this replica does not hold, for a management
    /// call by id (under [`Inner::lock_for_write`], so nothing about it can
    /// change meanwhile).
    pub(super) fn find_refresh(&self, cat: &mut Catalog, id: &[u8; 16]) -> Result<()> {
        let Some(sh) = &self.shared else {
            return Ok(());
        };
        if self.mem.refresh.contains(id) {
            return Ok(());
        }
        if let Some(r) = sh.backend.get_refresh(id)? {
            self.mem.apply(cat, &[Change::LoadRefresh(r)]);
        }
        Ok(())
    }

    fn catch_up(&self, sh: &Slot, cat: &mut Catalog) -> Result<()> {
        let rep = &sh.replica;
        let started = rep.now();
        let got = sh.backend.fetch(rep.applied(), None, None)?;
        if !self.follow(sh, cat, &got.log, started) {
            let started = rep.now();
            let (snap, seq) = sh.backend.snapshot()?;
            self.reload(sh, cat, snap, seq, started);
        }
        Ok(())
    }

    /// Applies a batch read from the log at `started`. False when it cannot
    /// be applied from the log (the caller reloads a snapshot).
    fn follow(&self, sh: &Slot, cat: &mut Catalog, log: &LogBatch, started: u64) -> bool {
        let rep = &sh.replica;
        let applied = rep.applied();
        if log.seq > applied {
            let Some(changes) = log.changes_after(applied) else {
                return false;
            };
            self.mem.apply(cat, &changes);
            rep.set_applied(log.seq);
        }
        rep.mark_ok(started);
        true
    }

    /// Replaces memory by a snapshot: what it lacks is removed, what it has
    /// is applied over what memory holds. The snapshot must have been read
    /// under the catalog lock held here, so that it reflects every change
    /// this replica applied (management calls commit and apply under that
    /// lock).
    fn reload(&self, sh: &Slot, cat: &mut Catalog, snap: Snapshot, seq: u64, started: u64) {
        let rep = &sh.replica;
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
        self.mem.access.for_each(|id, a| {
            if !access.contains(id) {
                changes.push(Change::DeleteAccess {
                    refresh_id: a.refresh().id(),
                    id: *id,
                    slot: SLOT_ANY,
                });
            }
            true
        });
        self.mem.refresh.for_each(|id, r| {
            if !refresh.contains(id) {
                changes.push(Change::DeleteRefresh {
                    id: *id,
                    org: r.member().org_id().to_string(),
                    user: r.member().user().to_string(),
                });
            }
            true
        });
        for (org, e) in &cat.orgs {
            for user in e.members.keys() {
                if !members.contains(&(org.as_str(), user.as_str())) {
                    changes.push(Change::DeleteMember {
                        org: org.clone(),
                        user: user.clone(),
                    });
                }
            }
        }
        drop(members);
        changes.extend(snap.into_changes());
        self.mem.apply(cat, &changes);
        rep.set_applied(seq);
        rep.note_reload();
        rep.mark_ok(started);
    }

    /// Reads a token this replica does not hold (and the change log up to
    /// the same snapshot, so that what is added is exactly as fresh as the
    /// rest of memory).
    #[cold]
    fn read_through(
        &self,
        sh: &Slot,
        access: Option<&[u8; 16]>,
        refresh: Option<&[u8; 16]>,
    ) -> Result<()> {
        let rep = &sh.replica;
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
                sh.backend
                    .fetch(rep.applied(), access, refresh)
                    .map(|got| (got, started))
            });
            let mut cat = self.mem.catalog.write();
            let (got, started) = match early.take() {
                Some(r) => r?,
                None => {
                    let started = rep.now();
                    (sh.backend.fetch(rep.applied(), access, refresh)?, started)
                }
            };
            if got.log.seq < rep.applied() {
                continue;
            }
            if !self.follow(sh, &mut cat, &got.log, started) {
                let started = rep.now();
                let (snap, seq) = sh.backend.snapshot()?;
                self.reload(sh, &mut cat, snap, seq, started);
                continue;
            }
            let mut changes = Vec::new();
            let found_refresh = got.refresh.is_some();
            let found_access = got.access.is_some();
            if let Some((r, last)) = got.refresh {
                let id = r.id;
                if !self.mem.refresh.contains(&id) {
                    changes.push(Change::LoadRefresh(r));
                    if let Some(at) = last {
                        changes.push(Change::PutLastRefresh { id, at });
                    }
                }
            }
            if let Some(a) = got.access {
                if !self.mem.access.contains(&a.id) {
                    changes.push(Change::PutAccess {
                        rec: a,
                        slot: SLOT_ANY,
                    });
                }
            }
            self.mem.apply(&mut cat, &changes);
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
