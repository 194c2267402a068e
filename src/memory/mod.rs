//! In-memory verification state, kept coherent with every write.
//!
//! Verification reads only these structures: sharded maps, each shard
//! behind a read lock whose lock word is the reading thread's own
//! (crossbeam's `ShardedLock`), plus atomics; so the verify path touches no
//! disk, takes no global lock, and writes no memory another core reads. Writers update them after the storage commit
//! and before returning (calls that change membership or roles hold the
//! store's catalog exclusively; token issues share it).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::codec::RefreshRecord;
use crate::policy::Policy;

mod apply;
mod catalog;
mod entries;
mod loader;
mod maps;

pub(crate) use catalog::Catalog;
pub(crate) use entries::{AccessHot, HeldTokens, MemberHot, RefreshHot};
pub(crate) use loader::Loader;
pub(crate) use maps::Sharded;

/// The in-memory verification state: its one owner. Every write path, the
/// loader and the replica change it through [`Memory::apply`] and
/// [`Memory::apply_family`], besides two steps those cannot take:
/// [`Memory::put_issued`] (an issue, under its member's list lock) and
/// [`Memory::order_live_lists`] (once, at open). The entries' fields are
/// private to this module: code outside reads them through methods.
pub(crate) struct Memory {
    pub(crate) refresh: Sharded<Arc<RefreshHot>>,
    pub(crate) access: Sharded<AccessHot>,
    pub(crate) catalog: RwLock<Catalog>,
    policy: Arc<Policy>,
}

impl Memory {
    pub(crate) fn new(policy: Arc<Policy>) -> Memory {
        Memory {
            refresh: Sharded::new(),
            access: Sharded::new(),
            catalog: RwLock::new(Catalog::default()),
            policy,
        }
    }

    /// Replaces this memory by `reloaded` (loaded anew after a storage fault)
    /// record by record, so that a verification meanwhile sees each token
    /// either as before or as after; `cat` is this memory's catalog, held
    /// exclusively by the caller.
    pub(crate) fn replace_with(&self, cat: &mut Catalog, reloaded: Memory) {
        let Memory {
            refresh,
            access,
            catalog,
            ..
        } = reloaded;
        let mut stale_refresh = Vec::new();
        self.refresh.for_each(|id, _| {
            if !refresh.contains(id) {
                stale_refresh.push(*id);
            }
            true
        });
        let mut stale_access = Vec::new();
        self.access.for_each(|id, _| {
            if !access.contains(id) {
                stale_access.push(*id);
            }
            true
        });
        let mut put_refresh = Vec::with_capacity(refresh.len());
        refresh.for_each(|id, r| {
            put_refresh.push((*id, r.clone()));
            true
        });
        for (id, r) in put_refresh {
            self.refresh.insert(id, r);
        }
        let mut put_access = Vec::with_capacity(access.len());
        access.for_each(|id, a| {
            put_access.push((
                *id,
                AccessHot {
                    refresh: a.refresh.clone(),
                    verifier: a.verifier,
                    issued_at: a.issued_at,
                    expires_at: a.expires_at,
                    slot: a.slot,
                    revoked: AtomicBool::new(a.revoked.load(Ordering::Acquire)),
                    check: AtomicU64::new(a.check.load(Ordering::Relaxed)),
                },
            ));
            true
        });
        for (id, a) in put_access {
            self.access.insert(id, a);
        }
        for id in &stale_access {
            self.access.remove(id);
        }
        for id in &stale_refresh {
            self.refresh.remove(id);
        }
        *cat = catalog.into_inner();
    }

    /// Puts a refresh record just issued in memory, listed with `member`'s
    /// tokens in `held` (their list, which the issue has held locked since
    /// it counted them): with no catalog change, the member being one.
    pub(crate) fn put_issued(
        &self,
        mut held: HeldTokens<'_>,
        r: &RefreshRecord,
        member: &Arc<MemberHot>,
    ) {
        held.insert(r.id, r.issue.map_or(0, |i| i.seq));
        self.refresh
            .insert(r.id, Arc::new(self.hot_of(r, member.clone())));
    }
}
