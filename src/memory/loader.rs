//! Opening a store: every stored record applied to empty memory, from the
//! backend's loader threads at once.
//!
//! What it does is what [`Memory::apply`] and [`Memory::apply_family`] would
//! do with the same records, minus what cannot happen while loading: keys
//! are unique, so a refresh record is new, and an access record comes in
//! its slot order (a record for a used slot still goes the general way).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use super::entries::{AccessHot, MemberHot, RefreshHot};
use super::Memory;
use crate::change::Change;
use crate::codec::{AccessRecord, RefreshView};
use crate::storage::SLOT_ANY;

thread_local! {
    /// The family this thread put in memory last. A backend hands each
    /// refresh record over just before the access records of its family,
    /// so an access record's parent is nearly always this one.
    static LAST: RefCell<Option<Arc<RefreshHot>>> = const { RefCell::new(None) };
}

type Members = HashMap<String, HashMap<String, Arc<MemberHot>>>;

pub(crate) struct Loader<'a> {
    mem: &'a Memory,
    /// The members, copied from the catalog once they are all loaded (the
    /// backend hands them over before any token), so that the loader
    /// threads find a token's member without taking the catalog lock.
    members: OnceLock<Members>,
    /// The refresh tokens loaded, with their issue event's sequence
    /// numbers, to be put in their members' lists (`MemberHot::held`) by
    /// [`Loader::finish`], member by member: putting them there as they
    /// come would have the loader threads pull the same members' lists
    /// back and forth between their cores. Split as the threads split the
    /// key space, so that they rarely meet on a lock.
    loaded: Vec<Mutex<Vec<Held>>>,
    /// Stand-ins made for removed members while loading (each made once,
    /// under the catalog lock), by organization and user id.
    ghosts: Mutex<HashMap<(String, String), Arc<MemberHot>>>,
}

/// A loaded token for its member's list: the member (by address, as a
/// sort key), the token id, its issue event's sequence number.
type Held = (usize, [u8; 16], u64);

fn address(m: &Arc<MemberHot>) -> usize {
    Arc::as_ptr(m) as usize
}

const LOADED_PARTS: usize = 16;

impl<'a> Loader<'a> {
    pub(crate) fn new(mem: &'a Memory) -> Self {
        Loader {
            mem,
            members: OnceLock::new(),
            loaded: (0..LOADED_PARTS).map(|_| Mutex::default()).collect(),
            ghosts: Mutex::default(),
        }
    }

    /// Puts the loaded tokens in their members' lists; returns how many
    /// tokens were left out because their member was not found (none can
    /// be: each hangs on a member or a stand-in of the catalog).
    pub(crate) fn finish(self) -> u64 {
        let mut all: Vec<Held> = Vec::new();
        for part in &self.loaded {
            all.append(&mut part.lock());
        }
        let cat = self.mem.catalog.read();
        let members: HashMap<usize, &Arc<MemberHot>> = cat
            .orgs
            .values()
            .flat_map(|e| e.members.values().chain(e.ghosts.values()))
            .map(|m| (address(m), m))
            .collect();
        // Member by member, each list sized once.
        all.sort_unstable_by_key(|h| h.0);
        let mut missing = 0;
        for run in all.chunk_by(|a, b| a.0 == b.0) {
            let Some(member) = members.get(&run[0].0) else {
                debug_assert!(false, "a loaded token's member is not in the catalog");
                missing += run.len() as u64;
                continue;
            };
            let mut held = member.held.lock();
            held.reserve(run.len());
            for (_, id, seq) in run {
                held.insert(*id, *seq);
            }
        }
        missing
    }

    /// Applies one stored record.
    pub(crate) fn apply(&self, c: Change) {
        match c {
            Change::LoadRefresh(r) => self.refresh(&r.view()),
            Change::PutAccess { rec, slot } => self.access(rec, slot),
            other => {
                let inner = self.mem;
                inner.apply(&mut inner.catalog.write(), std::slice::from_ref(&other));
            }
        }
    }

    fn member(&self, org: &str, user: &str) -> Arc<MemberHot> {
        let members = self.members.get_or_init(|| {
            let cat = self.mem.catalog.read();
            cat.orgs
                .iter()
                .map(|(org, e)| (org.clone(), e.members.clone()))
                .collect()
        });
        match members.get(org).and_then(|users| users.get(user)) {
            Some(m) => m.clone(),
            // A removed member's stand-in.
            None => {
                let mut ghosts = self.ghosts.lock();
                let key = (org.to_string(), user.to_string());
                if let Some(g) = ghosts.get(&key) {
                    return g.clone();
                }
                let ghost = self.mem.catalog.write().holder(org, user);
                ghosts.insert(key, ghost.clone());
                ghost
            }
        }
    }

    /// Applies one stored refresh record.
    pub(crate) fn refresh(&self, r: &RefreshView<'_>) {
        let inner = self.mem;
        let member = self.member(r.org, r.user);
        let held = (address(&member), r.id, r.issue_seq);
        let hot = Arc::new(inner.hot_of_view(r, member));
        if inner.refresh.insert_new(r.id, hot.clone()) {
            let part = usize::from(r.id[0]) * LOADED_PARTS / 256;
            self.loaded[part].lock().push(held);
            LAST.with(|last| *last.borrow_mut() = Some(hot));
        } else if let Some(at) = r.revoked_at {
            // The same id twice (damage): as `Memory::apply`, a revocation
            // sticks to the one already there.
            inner.refresh.with(&r.id, |old| {
                if let Some(old) = old {
                    old.revoked_at.store(at, Ordering::Release);
                    old.revoked.store(true, Ordering::Release);
                }
            });
        }
    }

    fn access(&self, a: AccessRecord, slot: u32) {
        let inner = self.mem;
        let parent = LAST
            .with(|last| {
                last.borrow()
                    .as_ref()
                    .filter(|p| p.id == a.refresh_id)
                    .cloned()
            })
            .or_else(|| inner.refresh.get(&a.refresh_id));
        // An orphan (its family is gone): nothing can verify it.
        let Some(parent) = parent else {
            return;
        };
        let mut extra = parent.extra.lock();
        if slot == SLOT_ANY || slot < extra.next_slot {
            // A slot that may be in use: the general way.
            let c = Change::PutAccess { rec: a, slot };
            inner.apply_family(&parent, &mut extra, std::slice::from_ref(&c));
            return;
        }
        let hot = AccessHot {
            refresh: parent.clone(),
            verifier: a.verifier,
            issued_at: a.issued_at,
            expires_at: a.expires_at,
            slot,
            revoked: AtomicBool::new(a.revoked),
            check: AtomicU64::new(0),
        };
        if inner.access.insert_new(a.id, hot) {
            extra.next_slot = slot.saturating_add(1);
            extra.live.push((a.id, slot));
            extra.last_refresh = Some(
                extra
                    .last_refresh
                    .map_or(a.issued_at, |l| l.max(a.issued_at)),
            );
        } else if a.revoked {
            // The same id twice (damage): as `apply_family`, a revocation
            // sticks to the one already there.
            inner.access.with(&a.id, |old| {
                if let Some(old) = old {
                    old.revoked.store(true, Ordering::Release);
                }
            });
        }
    }
}

impl Memory {
    /// Puts each family's live list oldest first (the cap evicts from the
    /// front), once every record is loaded: access records come in no
    /// particular order.
    pub(crate) fn order_live_lists(&self) {
        self.refresh.for_each(|_, r| {
            let mut extra = r.extra.lock();
            if extra.live.len() > 1 {
                let mut keyed: Vec<(u64, [u8; 16], u32)> = extra
                    .live
                    .iter()
                    .map(|&(id, slot)| {
                        let at = self.access.with(&id, |a| a.map_or(0, |a| a.issued_at));
                        (at, id, slot)
                    })
                    .collect();
                keyed.sort_unstable();
                extra.live = keyed.into_iter().map(|(_, id, slot)| (id, slot)).collect();
            }
            true
        });
    }
}

impl Drop for Loader<'_> {
    fn drop(&mut self) {
        // The calling thread was one of the loaders: it lets go of the
        // last family it loaded (the others have ended).
        LAST.with(|last| last.borrow_mut().take());
    }
}
