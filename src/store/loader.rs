//! Opening a store: every stored record applied to empty memory, from the
//! backend's loader threads at once.
//!
//! What it does is what [`Inner::apply`] and [`Inner::apply_family`] would
//! do with the same records, minus what cannot happen while loading: keys
//! are unique, so a refresh record is new, and an access record comes in
//! its slot order (a record for a used slot still goes the general way).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use super::Inner;
use crate::codec::{AccessRecord, RefreshRecord};
use crate::hot::{AccessHot, MemberHot, RefreshHot};
use crate::storage::{Change, SLOT_ANY};

thread_local! {
    /// The family this thread put in memory last. A backend hands each
    /// refresh record over just before the access records of its family,
    /// so an access record's parent is nearly always this one.
    static LAST: RefCell<Option<Arc<RefreshHot>>> = const { RefCell::new(None) };
}

type Members = HashMap<String, HashMap<String, Arc<MemberHot>>>;

pub(super) struct Loader<'a> {
    inner: &'a Inner,
    /// The members, copied from the catalog once they are all loaded (the
    /// backend hands them over before any token), so that the loader
    /// threads find a token's member without taking the catalog lock.
    members: OnceLock<Members>,
}

impl<'a> Loader<'a> {
    pub(super) fn new(inner: &'a Inner) -> Self {
        Loader {
            inner,
            members: OnceLock::new(),
        }
    }

    /// Applies one stored record.
    pub(super) fn apply(&self, c: Change) {
        match c {
            Change::PutRefresh(r) => self.refresh(&r),
            Change::PutAccess { rec, slot } => self.access(rec, slot),
            other => {
                let inner = self.inner;
                inner.apply(&mut inner.catalog.write(), std::slice::from_ref(&other));
            }
        }
    }

    fn member(&self, org: &str, user: &str) -> Arc<MemberHot> {
        let members = self.members.get_or_init(|| {
            let cat = self.inner.catalog.read();
            cat.orgs
                .iter()
                .map(|(org, e)| (org.clone(), e.members.clone()))
                .collect()
        });
        match members.get(org).and_then(|users| users.get(user)) {
            Some(m) => m.clone(),
            // A removed member's stand-in (rare: made under the lock).
            None => self.inner.catalog.write().holder(org, user),
        }
    }

    fn refresh(&self, r: &RefreshRecord) {
        let inner = self.inner;
        let member = self.member(&r.org, &r.user);
        let hot = Arc::new(inner.hot_of(r, member.clone()));
        if inner.refresh.insert_new(r.id, hot.clone()) {
            member
                .held
                .lock()
                .insert(r.id, r.issue.map_or(0, |i| i.seq));
            LAST.with(|last| *last.borrow_mut() = Some(hot));
        }
    }

    fn access(&self, a: AccessRecord, slot: u32) {
        let inner = self.inner;
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

impl Drop for Loader<'_> {
    fn drop(&mut self) {
        // The calling thread was one of the loaders: it lets go of the
        // last family it loaded (the others have ended).
        LAST.with(|last| last.borrow_mut().take());
    }
}
