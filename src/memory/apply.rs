//! The only mutators of memory: [`Memory::apply`] and
//! [`Memory::apply_family`], used by every write path, the loader and the
//! replica.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::catalog::Catalog;
use super::entries::{AccessHot, MemberHot, RefreshExtra, RefreshHot};
use super::Memory;
use crate::change::Change;
use crate::codec::{self, RefreshRecord, StoredState};
use crate::policy::Role;

impl Memory {
    /// Brings the in-memory state in line with a committed batch. Every
    /// write path goes through here (and so does loading at open), so memory
    /// and storage cannot drift apart call by call.
    pub(crate) fn apply(&self, cat: &mut Catalog, changes: &[Change]) {
        for c in changes {
            match c {
                Change::PutMember(m) => {
                    match cat.member(&m.org, &m.user).cloned() {
                        Some(hot) => {
                            hot.set_role(Some(m.role));
                            hot.not_before.fetch_max(m.not_before, Ordering::AcqRel);
                        }
                        None => {
                            // Added again: the removed member's tokens are
                            // listed with the new member's.
                            let entry = cat.org_mut(&m.org);
                            let held = entry
                                .ghosts
                                .remove(&m.user)
                                .map(|g| g.held.clone())
                                .unwrap_or_default();
                            let hot = Arc::new(MemberHot::sharing(
                                entry.hot.clone(),
                                &m.user,
                                m.role as u8,
                                m.not_before,
                                held,
                            ));
                            entry.members.insert(m.user.clone(), hot);
                        }
                    }
                    let entry = cat.org_mut(&m.org);
                    if m.role == Role::Owner {
                        entry.owner = Some(m.user.clone());
                    } else if entry.owner.as_deref() == Some(m.user.as_str()) {
                        entry.owner = None;
                    }
                }
                Change::DeleteMember { org, user } => {
                    let entry = cat.org_mut(org);
                    if let Some(hot) = entry.members.remove(user) {
                        hot.set_role(None);
                        if entry.owner.as_deref() == Some(user.as_str()) {
                            entry.owner = None;
                        }
                        // Their tokens, revoked, stay listed until purged.
                        if !hot.held.lock().is_empty() {
                            entry.ghosts.insert(user.clone(), hot);
                        }
                    }
                }
                Change::PutOrgCutoff { org, at } => {
                    cat.org_mut(org)
                        .hot
                        .not_before
                        .fetch_max(*at, Ordering::AcqRel);
                }
                Change::IssueRefresh(r) | Change::LoadRefresh(r) => match self.refresh.get(&r.id) {
                    Some(hot) => {
                        // Revocation is one-way.
                        if let StoredState::Revoked { at, .. } = r.state {
                            hot.revoked_at.store(at, Ordering::Release);
                            hot.revoked.store(true, Ordering::Release);
                        }
                    }
                    None => {
                        let member = cat.holder(&r.org, &r.user);
                        self.put_new_refresh(r, member);
                    }
                },
                Change::RevokeRefresh { id, at, .. } => {
                    if let Some(hot) = self.refresh.get(id) {
                        hot.revoked_at.store(*at, Ordering::Release);
                        hot.revoked.store(true, Ordering::Release);
                    }
                }
                Change::RevokeMany { at, held, .. } => {
                    // Each as `RevokeRefresh` above: what memory held that
                    // matched when the change was made, under the catalog
                    // lock held since.
                    for id in held {
                        if let Some(hot) = self.refresh.get(id) {
                            hot.revoked_at.store(*at, Ordering::Release);
                            hot.revoked.store(true, Ordering::Release);
                        }
                    }
                }
                Change::DeleteRefresh { id, org, user } => {
                    if let Some(gone) = self.refresh.remove(id) {
                        let mut held = gone.member.held.lock();
                        held.remove(id);
                        // A removed member's stand-in goes with its last
                        // token.
                        if held.is_empty() {
                            drop(held);
                            if let Some(entry) = cat.orgs.get_mut(org) {
                                if entry
                                    .ghosts
                                    .get(user)
                                    .is_some_and(|g| Arc::ptr_eq(&g.held, &gone.member.held))
                                {
                                    entry.ghosts.remove(user);
                                }
                            }
                        }
                    }
                }
                Change::PutAccess { .. }
                | Change::RevokeAccess { .. }
                | Change::DeleteAccess { .. }
                | Change::PutLastRefresh { .. } => {
                    let id = match c {
                        Change::PutAccess { rec, .. } | Change::RevokeAccess { rec, .. } => {
                            rec.refresh_id
                        }
                        Change::DeleteAccess { refresh_id, .. } => *refresh_id,
                        Change::PutLastRefresh { id, .. } => *id,
                        _ => unreachable!("matched above"),
                    };
                    if let Some(parent) = self.refresh.get(&id) {
                        let mut extra = parent.extra.lock();
                        self.apply_family(&parent, &mut extra, std::slice::from_ref(c));
                    }
                }
                // Labels live on disk only.
                Change::SetLabel { .. } | Change::Event(_) => {}
            }
        }
    }

    /// The active refresh tokens held for `org` (for its member `user`
    /// only, when given) that were created before `before`, sorted: what a
    /// [`Change::RevokeMany`] of these terms revokes in memory.
    pub(crate) fn revocable(
        &self,
        cat: &Catalog,
        org: &str,
        user: Option<&str>,
        before: u64,
    ) -> Vec<[u8; 16]> {
        let mut ids: Vec<[u8; 16]> = cat
            .held(org, user)
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| {
                self.refresh.with(id, |hot| {
                    hot.is_some_and(|h| h.created_at < before && !h.revoked.load(Ordering::Acquire))
                })
            })
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The access-token part of [`Inner::apply`] for one family whose lock
    /// the caller holds (the exchange path).
    pub(crate) fn apply_family(
        &self,
        parent: &Arc<RefreshHot>,
        extra: &mut RefreshExtra,
        changes: &[Change],
    ) {
        for c in changes {
            match c {
                Change::PutAccess { rec: a, slot } | Change::RevokeAccess { rec: a, slot } => {
                    let updated = self.access.with(&a.id, |old| match old {
                        Some(old) => {
                            if a.revoked {
                                old.revoked.store(true, Ordering::Release);
                            }
                            true
                        }
                        None => false,
                    });
                    if updated {
                        continue;
                    }
                    // A record put in a used slot replaces (evicts) the one
                    // there. Slots at or past `next_slot` are free; a record
                    // from a backend without slots takes the next free one.
                    let slot = &if *slot == crate::storage::SLOT_ANY {
                        extra.next_slot
                    } else {
                        *slot
                    };
                    if *slot < extra.next_slot {
                        if let Some(i) = extra.live.iter().position(|(_, s)| s == slot) {
                            let (old, _) = extra.live.remove(i);
                            self.access.remove(&old);
                        }
                    }
                    extra.next_slot = extra.next_slot.max(slot.saturating_add(1));
                    extra.live.push((a.id, *slot));
                    extra.last_refresh = Some(
                        extra
                            .last_refresh
                            .map_or(a.issued_at, |l| l.max(a.issued_at)),
                    );
                    self.access.insert(
                        a.id,
                        AccessHot {
                            refresh: parent.clone(),
                            verifier: a.verifier,
                            issued_at: a.issued_at,
                            expires_at: a.expires_at,
                            slot: *slot,
                            revoked: AtomicBool::new(a.revoked),
                            check: AtomicU64::new(0),
                        },
                    );
                }
                Change::DeleteAccess { id, .. } => {
                    self.access.remove(id);
                    extra.live.retain(|(x, _)| x != id);
                }
                Change::PutLastRefresh { at, .. } => {
                    extra.last_refresh = Some(extra.last_refresh.map_or(*at, |l| l.max(*at)));
                }
                _ => {}
            }
        }
    }

    /// Puts a refresh record new to memory, hanging on `member`.
    pub(crate) fn put_new_refresh(&self, r: &RefreshRecord, member: Arc<MemberHot>) {
        member
            .held
            .lock()
            .insert(r.id, r.issue.map_or(0, |i| i.seq));
        self.refresh.insert(r.id, Arc::new(self.hot_of(r, member)));
    }

    pub(crate) fn hot_of(&self, r: &RefreshRecord, member: Arc<MemberHot>) -> RefreshHot {
        self.hot_of_view(&r.view(), member)
    }

    pub(crate) fn hot_of_view(
        &self,
        r: &codec::RefreshView<'_>,
        member: Arc<MemberHot>,
    ) -> RefreshHot {
        RefreshHot {
            id: r.id,
            member,
            verifier: r.verifier,
            scopes: self.policy.set_of(&r.scopes),
            created_at: r.created_at,
            expires_at: r.expires_at.unwrap_or(u64::MAX),
            revoked: AtomicBool::new(r.revoked_at.is_some()),
            revoked_at: AtomicU64::new(r.revoked_at.unwrap_or(0)),
            extra: Mutex::new(RefreshExtra::default()),
        }
    }
}
