//! Writing again after a storage fault, without a restart.
//!
//! A storage may stay failed after one I/O error (the embedded engine
//! does: every later call fails the same way, even once space is freed,
//! and no sync after a failed one is trusted). A store on disk therefore
//! keeps its backend in a [`Swap`]: after an I/O error the next call asks
//! the backend to [`Backend::reopen`] itself, and reloads memory from what
//! it holds, so that memory and disk agree again. What the storage does to
//! be sure of what it holds is its own (`docs/durability.md`); the store
//! learns only "opened again" or "not yet" (calls then answer
//! [`Error::Unavailable`]). A change whose sync failed may be there after
//! the reopen: a revocation, demotion or removal then took effect; an
//! issue was noted to the backend ([`Backend::note_failed_issue`]) and is
//! not.
//!
//! - While healthy, nothing changes: verification reads memory only, and a
//!   call pays one atomic load to learn that no reload is needed.
//! - A reload holds the catalog exclusively (no management call, issue,
//!   purge or list runs meanwhile) and the gate exclusively (no exchange or
//!   access revocation is between its commit and its change to memory).
//!   It replaces memory record by record: a verification meanwhile sees
//!   each token either as before the reload or as after it.
//! - A call that read memory before a reload and writes after it (an
//!   exchange) finds the generation changed under the gate and fails
//!   rather than write from stale memory.
//! - A durable call whose change was committed but not yet synced when the
//!   storage failed fails, even if the flush it waits for succeeds on the
//!   reopened storage (its ticket is among the lost ones).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock, RwLockReadGuard};

use super::{Catalog, Inner, TokenStore};
use crate::change::{Change, Committed};
use crate::codec::{EventRecord, RefreshRecord};
use crate::config::{Config, StoreKey};
use crate::error::{Error, IoError, Result};
use crate::storage::{Backend, Closed, IntegrityReport, LoadSink, Loaded};

/// How soon after a failed reopen the next call tries again (meanwhile,
/// calls answer the last failure): a reopen may read the whole storage,
/// which a call should not pay for each time while the disk stays full.
const RETRY_AFTER: Duration = Duration::from_millis(100);

/// The storage a store on disk writes to, replaceable after a fault.
pub(crate) struct Swap {
    current: RwLock<Option<Box<dyn Backend>>>,
    /// Set by any I/O error of the storage: the next call reopens it.
    failed: AtomicBool,
    /// The last such error, for the calls it made fail later.
    fault: Mutex<String>,
    schema: (&'static [u8], &'static [&'static [u8]]),
}

/// The store's handle on a [`Swap`]: a backend that passes each call to
/// the storage of the moment and notes its I/O errors.
pub(crate) struct SwapHandle(pub(crate) Arc<Swap>);

impl Swap {
    pub(crate) fn new(backend: Box<dyn Backend>) -> Arc<Swap> {
        let schema = backend.schema();
        Arc::new(Swap {
            current: RwLock::new(Some(backend)),
            failed: AtomicBool::new(false),
            fault: Mutex::new(String::new()),
            schema,
        })
    }

    fn call<T>(&self, f: impl FnOnce(&dyn Backend) -> Result<T>) -> Result<T> {
        let cur = self.current.read();
        let Some(b) = cur.as_deref() else {
            return Err(Error::Unavailable(
                "the storage is being opened again after a fault (or the store was closed); \
                 try again shortly"
                    .into(),
            ));
        };
        let r = f(b);
        if let Err(Error::Io(m)) = &r {
            m.message().clone_into(&mut self.fault.lock());
            self.failed.store(true, Ordering::Release);
        }
        r
    }
}

impl Backend for SwapHandle {
    fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.0.call(|b| b.meta_get(name))
    }
    fn meta_put(&self, name: &str, value: &[u8]) -> Result<()> {
        self.0.call(|b| b.meta_put(name, value))
    }
    fn load(&self, sink: &dyn LoadSink) -> Result<Loaded> {
        self.0.call(|b| b.load(sink))
    }
    fn commit(&self, changes: &[Change]) -> Result<Committed> {
        self.0.call(|b| b.commit(changes))
    }
    fn schema(&self) -> (&'static [u8], &'static [&'static [u8]]) {
        self.0.schema
    }
    fn upgrade(&self, from: &[u8]) -> Result<()> {
        self.0.call(|b| b.upgrade(from))
    }
    fn sync(&self) -> Result<()> {
        self.0.call(|b| b.sync())
    }
    fn close(self: Box<Self>) -> Result<Closed> {
        let taken = self.0.current.write().take();
        match taken {
            Some(b) => b.close(),
            None => Err(Error::Io(
                "the storage failed and could not be opened again; what was not \
                 acknowledged as durable is lost"
                    .into(),
            )),
        }
    }
    fn get_refresh(&self, id: &[u8; 16]) -> Result<Option<RefreshRecord>> {
        self.0.call(|b| b.get_refresh(id))
    }
    fn list_refresh(&self, org: &str, user: Option<&str>) -> Result<Vec<RefreshRecord>> {
        self.0.call(|b| b.list_refresh(org, user))
    }
    fn family_access(&self, refresh_id: &[u8; 16], limit: usize) -> Result<Vec<[u8; 16]>> {
        self.0.call(|b| b.family_access(refresh_id, limit))
    }
    fn refresh_ids(&self, org: &str, user: &str) -> Result<Vec<[u8; 16]>> {
        self.0.call(|b| b.refresh_ids(org, user))
    }
    fn events(&self, org: &str, before: u64, limit: usize) -> Result<Vec<EventRecord>> {
        self.0.call(|b| b.events(org, before, limit))
    }
    fn put_event(&self, e: &EventRecord, stored: Option<u64>) -> Result<u64> {
        self.0.call(|b| b.put_event(e, stored))
    }
    fn purge_events(&self, before: u64, limit: usize) -> Result<(u64, bool)> {
        self.0.call(|b| b.purge_events(before, limit))
    }
    fn check_integrity(&self) -> Result<IntegrityReport> {
        self.0.call(|b| b.check_integrity())
    }
    fn unreadable_refresh(&self) -> u64 {
        self.0
            .current
            .read()
            .as_deref()
            .map_or(0, |b| b.unreadable_refresh())
    }
    fn size_on_disk(&self) -> Result<u64> {
        self.0.call(|b| b.size_on_disk())
    }
    fn note_failed_issue(&self, id: &[u8; 16]) {
        if let Some(b) = self.0.current.read().as_deref() {
            b.note_failed_issue(id);
        }
    }
    fn reopen(self: Box<Self>) -> (Box<dyn Backend>, Result<()>) {
        // The store reopens the storage inside (see `reopen_and_reload`).
        crate::storage::not_reopened(self)
    }
}

/// What a store on disk needs to reopen its storage and reload memory.
pub(super) struct Recovery {
    swap: Arc<Swap>,
    /// The settings and key the store was opened with.
    cfg: Config,
    key: StoreKey,
    /// Bumped by each reload (see [`Inner::gate`]).
    generation: AtomicU64,
    /// Held shared by an exchange or access revocation from its commit to
    /// its change to memory, exclusively by a reload.
    gate: RwLock<()>,
    /// Tickets committed but not durable when a reload dropped them, as
    /// inclusive ranges; `lost_hi` is the highest of them (0: none).
    lost: Mutex<Vec<(u64, u64)>>,
    lost_hi: AtomicU64,
    /// When the last reopen failed, and how.
    last_failure: Mutex<Option<(Instant, String)>>,
}

/// The gate held by an exchange or access revocation (see [`Inner::gate`]).
pub(super) struct Gate<'a>(#[allow(dead_code)] Option<RwLockReadGuard<'a, ()>>);

impl TokenStore {
    /// Opens the sled storage of `cfg`, in a [`Swap`] when the store lives
    /// on disk, and loads the store.
    pub(super) fn open_recoverable(cfg: Config, key: StoreKey) -> Result<TokenStore> {
        let backend = crate::storage::open_embedded(cfg.path.as_deref(), cfg.cache_bytes)?;
        if cfg.path.is_none() {
            // A temporary store cannot be opened again.
            return Self::with_backend(Box::new(backend), cfg, key);
        }
        let swap = Swap::new(Box::new(backend));
        let mut reopen_cfg = cfg.clone();
        reopen_cfg.create_new = false;
        let recovery = Recovery {
            swap: swap.clone(),
            cfg: reopen_cfg,
            key: key.clone(),
            generation: AtomicU64::new(0),
            gate: RwLock::new(()),
            lost: Mutex::new(Vec::new()),
            lost_hi: AtomicU64::new(0),
            last_failure: Mutex::new(None),
        };
        let mut store = Self::with_backend(Box::new(SwapHandle(swap)), cfg, key)?;
        let inner = Arc::get_mut(&mut store.inner)
            .ok_or_else(|| Error::Io("the new store already has another handle".into()))?;
        inner.recovery = Some(recovery);
        Ok(store)
    }
}

impl Inner {
    /// The directory of a store on disk (none for a temporary or shared
    /// store): where the admin socket lives.
    #[cfg_attr(not(feature = "admin"), allow(dead_code))]
    pub(super) fn dir(&self) -> Option<&std::path::Path> {
        self.recovery.as_ref().and_then(|r| r.cfg.path.as_deref())
    }

    /// The generation of the storage (see [`Inner::gate`]).
    #[inline]
    pub(super) fn generation(&self) -> u64 {
        self.recovery
            .as_ref()
            .map_or(0, |r| r.generation.load(Ordering::Acquire))
    }

    /// The gate, for a call that read memory in generation `read_in` and
    /// now commits and changes memory; fails if a reload came in between.
    #[inline]
    pub(super) fn gate(&self, read_in: u64) -> Result<Gate<'_>> {
        let Some(r) = &self.recovery else {
            return Ok(Gate(None));
        };
        let g = r.gate.read();
        if r.generation.load(Ordering::Acquire) != read_in {
            return Err(Error::Unavailable(
                "the store reopened its storage after a fault while this call ran (it changed \
                 nothing); try again"
                    .into(),
            ));
        }
        Ok(Gate(Some(g)))
    }

    /// The error for a batch with `ticket` that a reload dropped before it
    /// was durable, if it was.
    #[inline]
    pub(super) fn lost(&self, ticket: u64) -> Option<Error> {
        let r = self.recovery.as_ref()?;
        if ticket > r.lost_hi.load(Ordering::Acquire) {
            return None;
        }
        let lost = r
            .lost
            .lock()
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&ticket));
        lost.then(|| {
            Error::Io(IoError::from(format!(
                "{}; this change was not durable when the storage failed (the store \
                 reopened its storage since: a revocation, demotion or removal may have taken \
                 effect, an issued token did not; a retry is safe)",
                r.swap.fault.lock()
            )))
        })
    }

    /// After a storage fault: lets go of the failed storage, opens it
    /// again and reloads memory from it. Does nothing while the storage is
    /// healthy (one atomic load). Must be called holding neither the
    /// catalog nor the gate.
    ///
    /// # Errors
    /// The reopen's error ([`Error::Io`], saying so when the disk is still
    /// full) or the last one, within [`RETRY_AFTER`] of it.
    #[inline]
    pub(super) fn recover(&self) -> Result<()> {
        match &self.recovery {
            Some(r) if r.swap.failed.load(Ordering::Acquire) => self.reopen_and_reload(r, false),
            _ => Ok(()),
        }
    }

    /// [`Inner::recover`] even within [`RETRY_AFTER`] of a failed reopen
    /// (for `close`, which has no later call to leave it to).
    pub(super) fn recover_now(&self) -> Result<()> {
        match &self.recovery {
            Some(r) if r.swap.failed.load(Ordering::Acquire) => self.reopen_and_reload(r, true),
            _ => Ok(()),
        }
    }

    #[cold]
    fn reopen_and_reload(&self, r: &Recovery, now: bool) -> Result<()> {
        if let Some((at, msg)) = &*r.last_failure.lock() {
            if !now && at.elapsed() < RETRY_AFTER {
                return Err(Error::Unavailable(msg.clone()));
            }
        }
        let mut cat = self.mem.catalog_write();
        let gate = r.gate.write();
        if !r.swap.failed.load(Ordering::Acquire) {
            // Another caller reloaded meanwhile.
            return Ok(());
        }
        // No commit is under way (each holds the catalog or the gate):
        // every ticket not yet durable was committed to the failed storage.
        let f = &self.flusher;
        let written = f.written();
        let flushed = f.flushed();
        let refused = |e: Error| {
            let msg = format!(
                "the storage failed ({}) and is not open again yet: {e}; try again shortly",
                r.swap.fault.lock()
            );
            *r.last_failure.lock() = Some((Instant::now(), msg.clone()));
            Error::Unavailable(msg)
        };
        let Some(old) = r.swap.current.write().take() else {
            return Err(refused(Error::Unavailable("the store is closed".into())));
        };
        let (backend, reopened) = old.reopen();
        // The store that loads from the reopened storage reaches it through
        // a swap of its own, which gives the storage back whatever happens.
        let loading = Swap::new(backend);
        let reloaded = reopened.and_then(|()| {
            TokenStore::with_backend(
                Box::new(SwapHandle(loading.clone())),
                r.cfg.clone(),
                r.key.clone(),
            )
        });
        let backend = loading.current.write().take();
        *r.swap.current.write() = backend;
        let reloaded = match reloaded.map(|s| Arc::try_unwrap(s.inner)) {
            Ok(Ok(inner)) => inner,
            Ok(Err(_)) => {
                return Err(refused(Error::Io(
                    "the reloaded store already has another handle".into(),
                )))
            }
            Err(e) => return Err(refused(e)),
        };
        // From here nothing fails.
        if written > flushed {
            r.lost.lock().push((flushed + 1, written));
            r.lost_hi.fetch_max(written, Ordering::AcqRel);
        }
        // One ticket more, never handed out and durable: a flush asked for
        // after the reload has nothing lost to wait for.
        let barrier = written + 1;
        f.restart_at(barrier);
        self.transplant(&mut cat, reloaded);
        r.generation.fetch_add(1, Ordering::AcqRel);
        r.swap.failed.store(false, Ordering::Release);
        *r.last_failure.lock() = None;
        drop(gate);
        drop(cat);
        // What the reload freed (the memory replaced, the reload's loader)
        // goes back to the system, outside the catalog's lock.
        self.mem.give_back_after_load();
        Ok(())
    }

    /// Replaces memory by what `reloaded` loaded, record by record (see the
    /// module documentation).
    fn transplant(&self, cat: &mut Catalog, reloaded: Inner) {
        let Inner { mem, event_seq, .. } = reloaded;
        self.mem.replace_with(cat, mem);
        // Sequence numbers handed out stay unique.
        self.event_seq
            .fetch_max(event_seq.load(Ordering::Acquire), Ordering::AcqRel);
    }
}
