//! The membership catalog: organizations, their members (each with the
//! tokens they hold, for the cap on live tokens), and removed members'
//! stand-ins. Read anywhere through its methods; changed only by
//! memory's own mutators (see the module above).

use std::collections::HashMap;
use std::sync::Arc;

use super::entries::{MemberHot, OrgHot, ROLE_REMOVED};
use super::MemberArc;
use crate::policy::Role;

pub(super) struct OrgEntry {
    pub(super) hot: Arc<OrgHot>,
    pub(super) members: HashMap<String, MemberArc>,
    /// Members no longer present who still hold (revoked) tokens, by user
    /// id: what those tokens hang on. Gone with their last token, or when
    /// the user is added again (the new member takes over their count).
    pub(super) ghosts: HashMap<String, MemberArc>,
    pub(super) owner: Option<String>,
}

#[derive(Default)]
pub(crate) struct Catalog {
    orgs: HashMap<String, OrgEntry>,
}

impl Catalog {
    /// The entry of `org`, made if there is none: for writers only
    /// (reading never makes one).
    pub(super) fn org_mut(&mut self, org: &str) -> &mut OrgEntry {
        self.orgs
            .entry(org.to_string())
            .or_insert_with(|| OrgEntry {
                hot: Arc::new(OrgHot::new(org)),
                members: HashMap::new(),
                ghosts: HashMap::new(),
                owner: None,
            })
    }

    pub(super) fn orgs(&self) -> impl Iterator<Item = (&String, &OrgEntry)> {
        self.orgs.iter()
    }

    pub(crate) fn member(&self, org: &str, user: &str) -> Option<&MemberArc> {
        self.orgs.get(org)?.members.get(user)
    }

    /// The Owner of `org`, if it has one.
    pub(crate) fn owner(&self, org: &str) -> Option<&str> {
        self.orgs.get(org)?.owner.as_deref()
    }

    /// The members of `org` with their current roles, in no order.
    pub(crate) fn members_of(&self, org: &str) -> Vec<(String, Role)> {
        self.orgs
            .get(org)
            .map(|e| {
                e.members
                    .iter()
                    .filter_map(|(u, m)| m.role().map(|r| (u.clone(), r)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every member, as (organization, user) pairs (a replica's reload).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn all_members(&self) -> Vec<(String, String)> {
        self.orgs
            .iter()
            .flat_map(|(org, e)| e.members.keys().map(move |u| (org.clone(), u.clone())))
            .collect()
    }

    /// How many organizations have members, and how many members there
    /// are.
    pub(crate) fn counts(&self) -> (u64, u64) {
        let mut orgs = 0;
        let mut members = 0;
        for e in self.orgs.values() {
            if !e.members.is_empty() {
                orgs += 1;
            }
            members += e.members.len() as u64;
        }
        (orgs, members)
    }

    /// The member a token of `(org, user)` hangs on: the member, or a
    /// removed stand-in (made if there is none: a writer's step).
    pub(super) fn holder(&mut self, org: &str, user: &str) -> MemberArc {
        if let Some(m) = self.member(org, user) {
            return m.clone();
        }
        let entry = self.org_mut(org);
        let org_hot = entry.hot.clone();
        entry
            .ghosts
            .entry(user.to_string())
            .or_insert_with(|| super::member_arc(MemberHot::new(org_hot, user, ROLE_REMOVED, 0)))
            .clone()
    }

    /// Makes `user` a member of `org` with `role` (a member already: their
    /// role changes), with their own cutoff raised to `not_before`; keeps
    /// the organization's Owner in step. A user added again takes over the
    /// count of their removed stand-in.
    pub(super) fn put_member(&mut self, org: &str, user: &str, role: Role, not_before: u64) {
        match self.member(org, user).cloned() {
            Some(hot) => {
                hot.set_role(Some(role));
                hot.raise_cutoff(not_before);
            }
            None => {
                let entry = self.org_mut(org);
                let held = entry
                    .ghosts
                    .remove(user)
                    .map(|g| g.held.clone())
                    .unwrap_or_default();
                let hot = super::member_arc(MemberHot::sharing(
                    entry.hot.clone(),
                    user,
                    role as u8,
                    not_before,
                    held,
                ));
                entry.members.insert(user.to_string(), hot);
            }
        }
        self.note_role(org, user, role);
    }

    /// Sets an existing member's role (nothing for one who is not a
    /// member); keeps the Owner in step.
    pub(super) fn set_role(&mut self, org: &str, user: &str, role: Role) {
        if let Some(hot) = self.member(org, user) {
            hot.set_role(Some(role));
            self.note_role(org, user, role);
        }
    }

    fn note_role(&mut self, org: &str, user: &str, role: Role) {
        let entry = self.org_mut(org);
        if role == Role::Owner {
            entry.owner = Some(user.to_string());
        } else if entry.owner.as_deref() == Some(user) {
            entry.owner = None;
        }
    }

    /// Removes a member: their tokens, revoked, stay listed with a
    /// stand-in until purged.
    pub(super) fn remove_member(&mut self, org: &str, user: &str) {
        let Some(entry) = self.orgs.get_mut(org) else {
            return;
        };
        if let Some(hot) = entry.members.remove(user) {
            hot.set_role(None);
            if entry.owner.as_deref() == Some(user) {
                entry.owner = None;
            }
            if *hot.held.lock() != 0 {
                entry.ghosts.insert(user.to_string(), hot);
            }
        }
    }

    /// Forgets a removed member's stand-in once its last token is gone
    /// (`held` is that token's count).
    pub(super) fn drop_ghost_if_empty(
        &mut self,
        org: &str,
        user: &str,
        held: &Arc<parking_lot::Mutex<usize>>,
    ) {
        if *held.lock() != 0 {
            return;
        }
        if let Some(entry) = self.orgs.get_mut(org) {
            if entry
                .ghosts
                .get(user)
                .is_some_and(|g| Arc::ptr_eq(&g.held, held))
            {
                entry.ghosts.remove(user);
            }
        }
    }
}
