//! Memory's mutators for committed changes ([`Memory::apply`],
//! [`Memory::apply_family`]) and for stored records ([`Memory::load`]).

use std::sync::atomic::{AtomicU32, AtomicU8};

use super::catalog::Catalog;
use super::entries::{
    held_expiry, held_time, AccessHot, RefreshHot, LIFE_DISABLED, LIFE_PENDING, LIFE_REVOKED,
    LIFE_ROTATED, LIFE_SPENT,
};
use super::family::FamilyBook;
use super::{MemberArc, Memory, RefreshArc, Stored};
use crate::change::{Change, Committed};
use crate::codec::{self, AccessRecord, RefreshRecord, StoredState};
use crate::policy::Role;
use crate::types::ClientInfo;

impl Memory {
    /// Brings the in-memory state in line with a committed batch, with what
    /// the backend reported of it (`done`: the ids a bulk revocation
    /// revoked). Every write path goes through here, and so does every
    /// change a replica reads from the feed, so memory and storage cannot
    /// drift apart call by call.
    pub(crate) fn apply(&self, cat: &mut Catalog, changes: &[Change], done: &Committed) {
        for c in changes {
            match c {
                Change::AddMember { org, user, role } => cat.put_member(org, user, *role, 0),
                Change::SetRole { org, user, role } => cat.set_role(org, user, *role),
                Change::MoveOwnership { org, to, from } => {
                    if let Some(from) = from {
                        cat.set_role(org, from, Role::Admin);
                    }
                    cat.set_role(org, to, Role::Owner);
                }
                Change::RemoveMember { org, user } => cat.remove_member(org, user),
                Change::MemberCutoff { org, user, at } => {
                    if let Some(m) = cat.member(org, user) {
                        m.raise_cutoff(*at);
                    }
                }
                Change::OrgCutoff { org, at } => cat.org_mut(org).hot.raise_cutoff(*at),
                Change::SetOrgPolicy { org, policy } => cat.org_mut(org).hot.set_policy(policy),
                Change::IssueRefresh(r) => self.put_refresh(cat, r),
                Change::RevokeRefresh { id, at, .. } => {
                    if let Some(hot) = self.refresh.get(id) {
                        self.note_revoked(&hot, *at);
                    }
                }
                Change::RevokeMany { at, .. } | Change::RevokeFamily { at, .. } => {
                    // What the backend selected and revoked, as reported.
                    for id in &done.revoked {
                        if let Some(hot) = self.refresh.get(id) {
                            self.note_revoked(&hot, *at);
                        }
                    }
                }
                Change::DeleteRefresh { id, org, user } => {
                    self.clients.remove(id);
                    self.revoked.remove(id);
                    if let Some(gone) = self.refresh.remove(id) {
                        {
                            let mut held = gone.member.held.lock();
                            *held = held.saturating_sub(1);
                        }
                        // A removed member's stand-in goes with its last
                        // token.
                        cat.drop_ghost_if_empty(org, user, &gone.member.held);
                    }
                }
                Change::PutAccess(rec) => self.with_family(&rec.refresh_id, c),
                Change::RevokeAccess { refresh_id, .. }
                | Change::DeleteAccess { refresh_id, .. } => self.with_family(refresh_id, c),
                Change::PutLastRefresh { id, .. } => self.with_family(id, c),
                Change::SetDisabled { id, disabled } => {
                    if let Some(hot) = self.refresh.get(id) {
                        hot.set_disabled(*disabled);
                    }
                }
                Change::Claim(rec) => {
                    // The entry is made anew with its verifier (a pending
                    // token has no access tokens to carry over); a
                    // revocation's time, kept by id, stays.
                    if let Some(old) = self.refresh.get(&rec.id) {
                        let hot = self.slab.alloc(self.hot_of(rec, old.member.clone()));
                        if !old.revocable() {
                            hot.mark_revoked();
                        }
                        self.refresh.insert(hot);
                    }
                }
                Change::Rotate { old, dies_at, new } => {
                    if let Some(hot) = self.refresh.get(old) {
                        hot.mark_rotated(*dies_at);
                    }
                    self.put_refresh(cat, new);
                }
                Change::RotateOnUse { old, dies_at, new } => {
                    if let Some(hot) = self.refresh.get(old) {
                        hot.mark_spent(*dies_at);
                    }
                    self.put_refresh(cat, new);
                }
                // Labels live on disk only.
                Change::SetLabel { .. } | Change::Event(_) => {}
            }
        }
    }

    /// Applies one access-token change to the family `refresh_id`, taking
    /// its lock.
    fn with_family(&self, refresh_id: &[u8; 16], c: &Change) {
        if let Some(parent) = self.refresh.get(refresh_id) {
            let mut book = parent.lock_family();
            self.apply_family(&parent, &mut book, std::slice::from_ref(c));
        }
    }

    /// The access-token part of [`Memory::apply`] for one family whose lock
    /// the caller holds (exchange, revoking an access token).
    pub(crate) fn apply_family(
        &self,
        parent: &RefreshArc,
        book: &mut FamilyBook,
        changes: &[Change],
    ) {
        for c in changes {
            match c {
                Change::PutAccess(rec) => self.put_access(parent, book, rec),
                Change::RevokeAccess { id, .. } => {
                    self.access.with(id, |a| {
                        if let Some(a) = a {
                            a.mark_revoked();
                        }
                    });
                }
                Change::DeleteAccess { id, .. } => {
                    if let Some(gone) = self.access.remove(id) {
                        if gone.is_narrowed() {
                            self.narrowed.remove(id);
                        }
                        if RefreshArc::ptr_eq(gone.refresh(), parent) {
                            book.remove_one();
                        }
                    }
                }
                Change::PutLastRefresh { at, client, .. } => {
                    note_exchange(parent, book, *at);
                    self.note_client(parent, book, client.as_ref());
                }
                _ => {}
            }
        }
    }

    /// Puts an access record in its family, as its newest. One already
    /// held keeps its entry: only a revocation sticks to it. (An eviction
    /// is its own change, [`Change::DeleteAccess`].)
    pub(super) fn put_access(
        &self,
        parent: &RefreshArc,
        book: &mut FamilyBook,
        rec: &AccessRecord,
    ) {
        let held = self.access.with(&rec.id, |old| match old {
            Some(old) => {
                if rec.revoked {
                    old.mark_revoked();
                }
                true
            }
            None => false,
        });
        if held {
            return;
        }
        book.add_one();
        note_exchange(parent, book, rec.issued_at);
        // Its narrowed scopes before the entry that says it has them.
        let narrowed = self.narrowed_scopes(rec);
        if let Some(scopes) = narrowed {
            self.narrowed.insert(rec.id, scopes);
        }
        self.access.insert(
            rec.id,
            AccessHot::new(parent.clone(), rec, narrowed.is_some()),
        );
    }

    /// Applies stored records as they stand: a replica's snapshot and
    /// read-through (and the loader's slow path). A refresh record new to
    /// memory hangs on its member (or a removed stand-in); one memory holds
    /// keeps its entry, and only a revocation sticks to it.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn load(&self, cat: &mut Catalog, records: Vec<Stored>) {
        for s in records {
            self.load_one(cat, s);
        }
    }

    pub(super) fn load_one(&self, cat: &mut Catalog, s: Stored) {
        match s {
            Stored::Member(m) => cat.put_member(&m.org, &m.user, m.role, m.not_before),
            Stored::OrgCutoff { org, at } => cat.org_mut(&org).hot.raise_cutoff(at),
            Stored::OrgPolicy { org, policy } => cat.org_mut(&org).hot.set_policy(&policy),
            Stored::Refresh(r) => self.put_refresh(cat, &r),
            Stored::Access(rec) => {
                if let Some(parent) = self.refresh.get(&rec.refresh_id) {
                    let mut book = parent.lock_family();
                    self.put_access(&parent, &mut book, &rec);
                }
            }
            Stored::LastRefresh { id, at, client } => {
                if let Some(parent) = self.refresh.get(&id) {
                    let mut book = parent.lock_family();
                    note_exchange(&parent, &mut book, at);
                    self.note_client(&parent, &mut book, client.as_ref());
                }
            }
        }
    }

    /// A refresh record into memory: new, it hangs on its member (or a
    /// removed stand-in); held already, a revocation and a rotation stick
    /// to it, and it is suspended or not as the record says.
    fn put_refresh(&self, cat: &mut Catalog, r: &RefreshRecord) {
        match self.refresh.get(&r.id) {
            Some(hot) => {
                if let StoredState::Revoked { at, .. } = r.state {
                    self.note_revoked(&hot, at);
                }
                if r.life.rotated {
                    hot.mark_rotated(r.expires_at.unwrap_or(u64::MAX));
                }
                if r.life.spent_until != 0 {
                    hot.mark_spent(r.life.spent_until);
                }
                hot.set_disabled(r.life.disabled);
            }
            None => {
                let member = cat.holder(&r.org, &r.user);
                *member.held.lock() += 1;
                self.refresh.insert(self.slab.alloc(self.hot_of(r, member)));
            }
        }
    }

    pub(super) fn hot_of(&self, r: &RefreshRecord, member: MemberArc) -> RefreshHot {
        self.hot_of_view(&r.view(), member)
    }

    /// The one way a refresh entry is made. Every caller puts it in memory
    /// under its id, or (a load's duplicate) applies its revocation to the
    /// entry held there: so the time of a revoked record's revocation goes
    /// into memory's map of them here, beside the entry's flag (the first
    /// time known stays, as on disk).
    pub(super) fn hot_of_view(&self, r: &codec::RefreshView<'_>, member: MemberArc) -> RefreshHot {
        if let Some(at) = r.revoked_at {
            self.revoked.insert_new(r.id, at);
        }
        RefreshHot {
            id: r.id,
            member,
            verifier: super::entries::VerifierHalf::of(&r.verifier),
            scopes: self.policy.set_of(&r.scopes).into(),
            created_at: held_time(r.created_at),
            // Pending, it lives until the end of its claim window at most.
            expires_at: AtomicU32::new(held_expiry(
                r.expires_at
                    .unwrap_or(u64::MAX)
                    .min(match r.life.pending_until {
                        0 => u64::MAX,
                        until => until,
                    })
                    // Spent by a rotation on use: until the leeway ends.
                    .min(match r.life.spent_until {
                        0 => u64::MAX,
                        until => until,
                    }),
            )),
            last_used: AtomicU32::new(0),
            life: AtomicU8::new(
                (if r.life.disabled { LIFE_DISABLED } else { 0 })
                    | (if r.life.rotated { LIFE_ROTATED } else { 0 })
                    | (if r.life.spent_until != 0 {
                        LIFE_SPENT
                    } else {
                        0
                    })
                    | (if r.life.pending_until != 0 {
                        LIFE_PENDING
                    } else {
                        0
                    })
                    | (if r.revoked_at.is_some() {
                        LIFE_REVOKED
                    } else {
                        0
                    }),
            ),
            family_lock: super::family::unlocked(),
            family: super::family::FamilyCell::new(),
        }
    }
}

/// Notes an exchange at `at` as the family's last, unless a later one is.
/// Called with the family's lock held (`_held`), as the client noted with
/// it is.
pub(super) fn note_exchange(parent: &RefreshHot, _held: &mut FamilyBook, at: u64) {
    parent.note_use(at);
}

impl Memory {
    /// Marks `hot` revoked itself at `at`, one-way. A time already known
    /// stays: the first revocation's, as the record keeps it (a backend
    /// does not revoke a revoked record again).
    pub(super) fn note_revoked(&self, hot: &RefreshHot, at: u64) {
        hot.mark_revoked();
        self.revoked.insert_new(hot.id, at);
    }

    /// Records the client of the family's last exchange (`None`: unknown),
    /// replacing the one held: stored or committed, it is always the latest
    /// the store wrote. Called with the family's lock held (`_held`).
    pub(super) fn note_client(
        &self,
        parent: &RefreshHot,
        _held: &mut FamilyBook,
        client: Option<&ClientInfo>,
    ) {
        match client.filter(|c| !c.is_empty()) {
            Some(c) => self.clients.insert(parent.id, Box::new(c.clone())),
            None => {
                self.clients.remove(&parent.id);
            }
        }
    }
}
