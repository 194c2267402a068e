//! Opening a store: every stored record applied to empty memory, from the
//! backend's loader threads at once.
//!
//! What it does is what [`Memory::load`] would do with the same records
//! ([`Stored`]), minus what cannot happen while loading: keys are unique,
//! so a refresh record and an access record are each new (the same id
//! twice is damage: as in [`Memory::load`], only a revocation sticks).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;

use parking_lot::Mutex;

use super::apply::note_exchange;
use super::entries::AccessHot;
use super::{MemberArc, Memory, RefreshArc, Stored};
use crate::codec::{AccessRecord, MemberRecord, OrgPolicyRecord, RefreshView};
use crate::member_index::MemberIndex;
use crate::types::ClientInfo;

thread_local! {
    /// The family this thread put in memory last. A backend hands each
    /// refresh record over just before the access records of its family,
    /// so an access record's parent is nearly always this one.
    static LAST: RefCell<Option<RefreshArc>> = const { RefCell::new(None) };
}

/// The catalog's members, numbered by their names.
struct Members {
    index: MemberIndex,
    arcs: Vec<MemberArc>,
}

pub(crate) struct Loader<'a> {
    mem: &'a Memory,
    /// The members, copied from the catalog once they are all loaded (the
    /// backend hands them over before any token), so that the loader
    /// threads find a token's member without taking the catalog lock; in
    /// a [`MemberIndex`], whose lookup reads one cache line (see its doc).
    members: OnceLock<Members>,
    /// The members of the refresh tokens loaded (by address), to be
    /// counted in their members' counts (`MemberHot::held`) by
    /// [`Loader::finish`], member by member: counting them as they come
    /// would have the loader threads pull the same members' counts back
    /// and forth between their cores. Split as the threads split the key
    /// space, so that they rarely meet on a lock.
    loaded: Vec<Mutex<Vec<usize>>>,
    /// Stand-ins made for removed members while loading (each made once,
    /// under the catalog lock), by organization and user id.
    ghosts: Mutex<HashMap<(String, String), MemberArc>>,
}

fn address(m: &MemberArc) -> usize {
    MemberArc::as_ptr(m) as usize
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

    /// Counts the loaded tokens in their members' counts; returns how many
    /// tokens were left out
    /// because their member was not found (none can be: each hangs on a
    /// member or a stand-in of the catalog).
    pub(crate) fn finish(self) -> u64 {
        let mut all: Vec<usize> = Vec::new();
        for part in &self.loaded {
            all.append(&mut part.lock());
        }
        let cat = self.mem.catalog.read();
        let members: HashMap<usize, &MemberArc> = cat
            .orgs()
            .flat_map(|(_, e)| e.members.values().chain(e.ghosts.values()))
            .map(|m| (address(m), m))
            .collect();
        // Member by member.
        all.sort_unstable();
        let mut missing = 0;
        for run in all.chunk_by(|a, b| a == b) {
            let Some(member) = members.get(&run[0]) else {
                debug_assert!(false, "a loaded token's member is not in the catalog");
                missing += run.len() as u64;
                continue;
            };
            *member.held.lock() += run.len();
        }
        drop(cat);
        // The access tokens came family by family, in no order of their
        // own ids: every shard of them filled at once, grown step by step.
        self.mem.access.fit();
        self.mem.narrowed.fit();
        self.mem.refresh.fit();
        self.mem.revoked.fit();
        // What the load freed goes back to the system once the loader and
        // its lists are gone: `Memory::give_back_after_load`.
        missing
    }

    /// Applies a stored record through [`Memory::load`].
    fn general(&self, s: Stored) {
        let inner = self.mem;
        inner.load_one(&mut inner.catalog.write(), s);
    }

    /// A member as stored (all of them come before any token).
    pub(crate) fn member(&self, m: MemberRecord) {
        self.general(Stored::Member(m));
    }

    /// An organization's cutoff as stored.
    pub(crate) fn org_cutoff(&self, org: String, at: u64) {
        self.general(Stored::OrgCutoff { org, at });
    }

    /// An organization's token policy as stored.
    pub(crate) fn org_policy(&self, org: String, policy: OrgPolicyRecord) {
        self.general(Stored::OrgPolicy { org, policy });
    }

    /// A refresh token's last exchange (after every access record).
    pub(crate) fn last_refresh(&self, id: [u8; 16], at: u64, client: Option<ClientInfo>) {
        self.general(Stored::LastRefresh { id, at, client });
    }

    fn holder(&self, org: &str, user: &str) -> MemberArc {
        let members = self.members.get_or_init(|| {
            let cat = self.mem.catalog.read();
            let (mut index, mut arcs) = (MemberIndex::new(), Vec::new());
            for (org, e) in cat.orgs() {
                for (user, m) in &e.members {
                    if index.get_or_insert(org, user) as usize == arcs.len() {
                        arcs.push(m.clone());
                    }
                }
            }
            Members { index, arcs }
        });
        match members.index.get(org, user) {
            Some(i) => members.arcs[i as usize].clone(),
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
        let member = self.holder(r.org, r.user);
        let held = address(&member);
        let hot = inner.slab.alloc(inner.hot_of_view(r, member));
        if inner.refresh.insert_new(hot.clone()) {
            let part = usize::from(r.id[0]) * LOADED_PARTS / 256;
            self.loaded[part].lock().push(held);
            LAST.with(|last| *last.borrow_mut() = Some(hot));
        } else if r.revoked_at.is_some() {
            // The same id twice (damage): as `Memory::apply`, a revocation
            // sticks to the one already there (its time, if the first had
            // none, went in with the entry made above).
            inner.refresh.with(&r.id, |old| {
                if let Some(old) = old {
                    old.mark_revoked();
                }
            });
        }
    }

    /// Applies one stored access record (families' records come in no
    /// particular order; a family counts them).
    pub(crate) fn access(&self, a: AccessRecord) {
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
        let mut book = parent.lock_family();
        // Nothing verifies while memory loads: the entry may go in before
        // its narrowed scopes (which only an entry put in has).
        let narrowed = inner.narrowed_scopes(&a);
        if inner
            .access
            .insert_new(a.id, AccessHot::new(parent.clone(), &a, narrowed.is_some()))
        {
            if let Some(scopes) = narrowed {
                inner.narrowed.insert(a.id, scopes);
            }
            book.add_one();
            note_exchange(&parent, &mut book, a.issued_at);
        } else if a.revoked {
            // The same id twice (damage): as `Memory::load`, a revocation
            // sticks to the one already there.
            inner.access.with(&a.id, |old| {
                if let Some(old) = old {
                    old.mark_revoked();
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
