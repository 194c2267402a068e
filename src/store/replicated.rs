//! The store on a backend that several replicas share (PostgreSQL): opening
//! it, and the hooks the store's calls go through, each handing over to the
//! replica's coherence logic in `crate::replica`. With the `postgres`
//! feature off, `embedded.rs` gives the same hooks as no-ops.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Weak};

use parking_lot::{RwLockReadGuard, RwLockWriteGuard};

use super::read::Reach;
use super::{Catalog, Inner, TokenStore, FINGERPRINT_CONTEXT};
use crate::config::{load_or_create_key, Config};
use crate::error::{Error, Result};
use crate::memory::Stored;
use crate::replica::{self, Follower, SyncState, SyncStatus};
use crate::storage::{self, ChangeFeed, ManageLock, SharedSpec};

pub(crate) use crate::replica::Replica;

/// The catalog lock, and for a management call on a shared store the
/// fleet-wide management lock (released after the catalog lock).
pub(super) struct CatalogGuard<'a> {
    cat: RwLockWriteGuard<'a, Catalog>,
    _manage: Option<Box<dyn ManageLock>>,
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

/// The catalog for issuing a token: on an embedded store only read, as in
/// a build without this feature (concurrent issues write their records side
/// by side); on a shared store under the fleet-wide management lock and
/// exclusive, as any management call.
pub(super) enum IssueCatalog<'a> {
    Embedded(RwLockReadGuard<'a, Catalog>),
    Shared(CatalogGuard<'a>),
}

impl Deref for IssueCatalog<'_> {
    type Target = Catalog;
    fn deref(&self) -> &Catalog {
        match self {
            IssueCatalog::Embedded(cat) => cat,
            IssueCatalog::Shared(cat) => cat,
        }
    }
}

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
    let fingerprint = key.derive(FINGERPRINT_CONTEXT);
    let (backend, shared) = storage::open_shared(&SharedSpec {
        url: &opts.url,
        connect_timeout: opts.connect_timeout,
        lock_timeout: opts.lock_timeout,
        pool_size: opts.pool_size,
        cap: cfg.max_access_per_refresh,
        fingerprint: &fingerprint[..16],
        create_if_missing: cfg.create_if_missing,
    })?;
    let state = Arc::new(SyncState::new(opts));
    // The snapshot read at open counts as a sync that started now.
    let started = state.now();
    let mut store = TokenStore::with_backend(backend, cfg, key)?;
    // What the load freed goes back to the system, the loader gone.
    store.inner.mem.give_back_after_load();
    let inner = Arc::get_mut(&mut store.inner)
        .ok_or_else(|| Error::Io("the new store already has another handle".into()))?;
    let subscriber = shared.subscriber();
    inner.replica = Some(Replica::new(shared, state.clone(), started));
    let weak: Weak<Inner> = Arc::downgrade(&store.inner);
    let weak: Weak<dyn Follower> = weak;
    replica::spawn(state, subscriber, weak)?;
    Ok(store)
}

impl TokenStore {
    /// How fresh this replica's view of a shared (PostgreSQL) store is;
    /// `None` for an embedded store. Does not block.
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
        self.inner.replica.as_ref().map(Replica::status)
    }

    /// Brings this replica up to date with the shared store now, instead of
    /// waiting for the next notification or poll: afterwards it reflects
    /// every commit made (by any replica) before the call. Does nothing for
    /// an embedded store. Blocks on PostgreSQL.
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
        let Some(rep) = &inner.replica else {
            return Ok(());
        };
        let mut cat = inner.mem.catalog_write();
        rep.catch_up(&inner.mem, &mut cat)
    }
}

impl Follower for Inner {
    fn sync_from(&self, feed: &mut dyn ChangeFeed) -> Result<()> {
        match &self.replica {
            Some(rep) => rep.sync_from(&self.mem, feed),
            None => Ok(()),
        }
    }
}

impl Inner {
    /// The read gate's replica side for an access token (see `read.rs`):
    /// fails closed when the replica is stale, reads the token through when
    /// memory does not hold it (once `checksum_ok` says it is well formed).
    /// False on a miss that `reach` forbids reading through.
    #[inline]
    pub(super) fn ensure_access(
        &self,
        id: &[u8; 16],
        checksum_ok: impl FnOnce() -> bool,
        reach: Reach,
    ) -> Result<bool> {
        match &self.replica {
            Some(rep) => rep.ensure_access(&self.mem, id, checksum_ok, reach == Reach::Database),
            None => Ok(true),
        }
    }

    /// As [`Inner::ensure_access`], for a refresh token (always reading
    /// through).
    #[inline]
    pub(super) fn ensure_refresh(&self, id: &[u8; 16]) -> Result<()> {
        match &self.replica {
            Some(rep) => rep.ensure_refresh(&self.mem, id),
            None => Ok(()),
        }
    }

    /// An error met while reading for a read path: on a shared store a
    /// database error fails closed as [`Error::Unavailable`]; otherwise
    /// unchanged.
    #[cold]
    pub(super) fn read_failed(&self, e: Error) -> Error {
        match &self.replica {
            Some(_) => replica::fail_closed(e),
            None => e,
        }
    }

    /// The catalog for issuing a token (see [`IssueCatalog`]).
    pub(super) fn lock_catalog_for_issue(&self) -> Result<IssueCatalog<'_>> {
        if self.replica.is_none() {
            return Ok(IssueCatalog::Embedded(self.mem.catalog_read()));
        }
        Ok(IssueCatalog::Shared(self.lock_catalog_for_write()?))
    }

    /// The catalog for a management call that writes: on a shared store,
    /// under the fleet-wide management lock and caught up.
    pub(super) fn lock_catalog_for_write(&self) -> Result<CatalogGuard<'_>> {
        let Some(rep) = &self.replica else {
            return Ok(CatalogGuard {
                cat: self.mem.catalog_write(),
                _manage: None,
            });
        };
        let manage = rep.manage_lock()?;
        let mut cat = self.mem.catalog_write();
        rep.catch_up(&self.mem, &mut cat)?;
        Ok(CatalogGuard {
            cat,
            _manage: Some(manage),
        })
    }

    /// The catalog, read-only, for a management call that only reads (the
    /// read gate's door for lists and the audit trail, see `read.rs`): on a
    /// shared store, caught up first (under the write lock, then
    /// downgraded); a replica that cannot catch up fails closed
    /// ([`Error::Unavailable`]), never answering from stale memory.
    pub(super) fn lock_catalog_for_read(&self) -> Result<RwLockReadGuard<'_, Catalog>> {
        let Some(rep) = &self.replica else {
            return Ok(self.mem.catalog_read());
        };
        let mut cat = self.mem.catalog_write();
        rep.catch_up(&self.mem, &mut cat)
            .map_err(replica::fail_closed)?;
        Ok(RwLockWriteGuard::downgrade(cat))
    }

    /// Loads a refresh record this replica does not hold, for a management
    /// call by id (under [`Inner::lock_for_write`], so nothing about it can
    /// change meanwhile). Blocks on PostgreSQL.
    pub(super) fn find_refresh(&self, cat: &mut Catalog, id: &[u8; 16]) -> Result<()> {
        if self.replica.is_none() || self.mem.has_refresh(id) {
            return Ok(());
        }
        if let Some(r) = self.backend.get_refresh(id)? {
            self.mem.load(cat, vec![Stored::Refresh(r)]);
        }
        Ok(())
    }
}
