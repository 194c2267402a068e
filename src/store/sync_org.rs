//! Membership in one call: an organization brought to the host's list.

use std::collections::BTreeMap;

use super::*;

/// What [`TokenStore::sync_org`] changed. Empty when the organization was
/// already as asked (see [`SyncReport::is_empty`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncReport {
    /// Members added, with their role, sorted by user id.
    pub added: Vec<(String, Role)>,
    /// Members whose role changed (the Owner's, when ownership moved,
    /// included), sorted by user id.
    pub role_changed: Vec<RoleChange>,
    /// Members removed (every token of theirs revoked), sorted by user id.
    pub removed: Vec<String>,
    /// The member who became the Owner in this call, if ownership moved
    /// (also listed in `added` or `role_changed`).
    pub new_owner: Option<String>,
    /// How many refresh tokens the removals revoked.
    pub tokens_revoked: usize,
}

impl SyncReport {
    /// Whether the call changed nothing. Reads this report only: never
    /// blocks.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.role_changed.is_empty() && self.removed.is_empty()
    }
}

/// One member's role change in a [`SyncReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoleChange {
    /// The member.
    pub user: String,
    /// Their role before the call.
    pub from: Role,
    /// Their role after it.
    pub to: Role,
}

impl TokenStore {
    /// Brings the membership of `org` to exactly `members` (user id and
    /// role, in any order): adds those missing, changes roles, moves
    /// ownership, and removes every member not listed (revoking all their
    /// tokens, as [`TokenStore::remove_member`] does). The list must name
    /// exactly one [`Role::Owner`]. No ordering rules apply: the whole
    /// change is worked out against the current membership and written as
    /// **one atomic batch**, with one audit event per change (the same
    /// actions as the single calls: `member.add`, `member.role`,
    /// `member.transfer`, `member.remove`, by `host`), made durable by one
    /// sync before it returns. A crash at any moment leaves the
    /// organization either wholly as before or wholly as asked, never a
    /// mix (on sled one transaction, on PostgreSQL one database
    /// transaction). Idempotent: a call that finds the organization as
    /// asked changes and audits nothing, and returns an empty report.
    ///
    /// **Roles and old tokens.** A token keeps the scopes it was issued
    /// with; at verification they are cut to the policy of its holder's
    /// *current* role. Demoting a member cuts their tokens at once;
    /// promoting them again (here or with [`TokenStore::set_role`]) gives
    /// the same tokens back every scope they were issued with that the new
    /// role's policy allows, and no more (a token issued to a User never
    /// gains an Admin scope). A member removed and listed again is a new
    /// member: their old tokens stay revoked.
    ///
    /// Blocks while it holds the membership catalog exclusively and for
    /// one fsync (a few milliseconds, as `add_member`); the work grows with
    /// the organization's size.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (kind `usage`) when the list names no
    /// Owner or more than one, names a user twice, or holds a bad id;
    /// [`Error::Io`] if storage fails. Nothing changes on an error.
    ///
    /// ```
    /// use tokenvault::{Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// store.add_member("acme", "carl", Role::User)?;
    /// // bob becomes the Owner, ann an Admin, carl leaves.
    /// let report = store.sync_org("acme", [("ann", Role::Admin), ("bob", Role::Owner)])?;
    /// assert_eq!(report.new_owner.as_deref(), Some("bob"));
    /// assert_eq!(report.removed, vec!["carl".to_string()]);
    /// assert_eq!(
    ///     store.members("acme"),
    ///     vec![("ann".to_string(), Role::Admin), ("bob".to_string(), Role::Owner)]
    /// );
    /// // Again: nothing to do.
    /// assert!(store.sync_org("acme", [("bob", Role::Owner), ("ann", Role::Admin)])?.is_empty());
    /// assert!(store.sync_org("acme", [("ann", Role::Admin)]).is_err());
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn sync_org<I, U>(&self, org: &str, members: I) -> Result<SyncReport>
    where
        I: IntoIterator<Item = (U, Role)>,
        U: AsRef<str>,
    {
        crate::observe::call(
            crate::observe::Call::SyncOrg,
            self.sync_org_unobserved(org, members),
        )
    }

    fn sync_org_unobserved<I, U>(&self, org: &str, members: I) -> Result<SyncReport>
    where
        I: IntoIterator<Item = (U, Role)>,
        U: AsRef<str>,
    {
        let wanted = wanted_members(org, members)?;
        let inner = &*self.inner;
        let mut cat = inner.lock_for_write()?;
        let current: BTreeMap<String, Role> = cat.members_of(org).into_iter().collect();
        let old_owner = current
            .iter()
            .find(|(_, r)| **r == Role::Owner)
            .map(|(u, _)| u.clone());
        let new_owner = wanted
            .iter()
            .find(|(_, r)| **r == Role::Owner)
            .map(|(u, _)| u.clone())
            .ok_or_else(|| {
                Error::InvalidArgument(format!("the membership of {org} names no Owner"))
            })?;
        let moves = old_owner.as_deref() != Some(new_owner.as_str());
        let mut report = SyncReport::default();
        let mut changes = Vec::new();
        // The batch is one commit whatever its order; the order is the one
        // each change needs on its own: 1) new members (a new Owner first
        // as a User), 2) the ownership move (the old Owner becomes an
        // Admin), 3) the remaining role changes (the old Owner's
        // included), 4) removals, each with the revocation of every token
        // of the member.
        for (user, &role) in wanted.iter().filter(|(u, _)| !current.contains_key(*u)) {
            let role_now = if role == Role::Owner {
                Role::User
            } else {
                role
            };
            changes.push(Change::AddMember {
                org: org.into(),
                user: user.clone(),
                role: role_now,
            });
            changes.push(inner.event(
                org,
                HOST,
                "member.add",
                Some(format!("{user} as {role}")),
                "ok",
            )?);
            report.added.push((user.clone(), role));
        }
        if moves {
            changes.push(Change::MoveOwnership {
                org: org.into(),
                to: new_owner.clone(),
                from: old_owner.clone(),
            });
            if let Some(&from) = current.get(&new_owner) {
                changes.push(inner.event(
                    org,
                    HOST,
                    "member.transfer",
                    Some(new_owner.clone()),
                    "ok",
                )?);
                report.role_changed.push(RoleChange {
                    user: new_owner.clone(),
                    from,
                    to: Role::Owner,
                });
            }
            report.new_owner = Some(new_owner.clone());
        }
        for (user, &from) in &current {
            let Some(&to) = wanted.get(user) else {
                continue;
            };
            if to == from || *user == new_owner {
                continue;
            }
            // After the move the old Owner is an Admin.
            let after_move = if moves && old_owner.as_deref() == Some(user.as_str()) {
                Role::Admin
            } else {
                from
            };
            if to != after_move {
                changes.push(Change::SetRole {
                    org: org.into(),
                    user: user.clone(),
                    role: to,
                });
            }
            changes.push(inner.event(
                org,
                HOST,
                "member.role",
                Some(format!("{user} to {to}")),
                "ok",
            )?);
            report.role_changed.push(RoleChange {
                user: user.clone(),
                from,
                to,
            });
        }
        let now = inner.now();
        for user in current.keys().filter(|u| !wanted.contains_key(*u)) {
            changes.push(inner.revoke_many(
                org,
                Some(user.as_str()),
                u64::MAX,
                now,
                HOST,
                "member removed",
            ));
            changes.push(Change::RemoveMember {
                org: org.into(),
                user: user.clone(),
            });
            changes.push(inner.event(org, HOST, "member.remove", Some(user.clone()), "ok")?);
            report.removed.push(user.clone());
        }
        if changes.is_empty() {
            return Ok(report);
        }
        report.role_changed.sort_by(|a, b| a.user.cmp(&b.user));
        report.added.sort();
        let (ticket, done) = inner.commit_apply_counted(&mut cat, &changes)?;
        drop(cat);
        inner.sync(ticket)?;
        report.tokens_revoked = done.revoked.len();
        Ok(report)
    }
}

/// The list `members` for `org`, checked: valid ids, each user once,
/// exactly one Owner.
fn wanted_members<I, U>(org: &str, members: I) -> Result<BTreeMap<String, Role>>
where
    I: IntoIterator<Item = (U, Role)>,
    U: AsRef<str>,
{
    check_id("organization", org)?;
    let mut wanted = BTreeMap::new();
    for (user, role) in members {
        let user = user.as_ref();
        check_id("user", user)?;
        if wanted.insert(user.to_string(), role).is_some() {
            return Err(Error::InvalidArgument(format!(
                "{user} is listed twice in the membership of {org}"
            )));
        }
    }
    let owners = wanted.values().filter(|r| **r == Role::Owner).count();
    if owners != 1 {
        return Err(Error::InvalidArgument(format!(
            "the membership of {org} must name exactly one Owner, not {owners}"
        )));
    }
    Ok(wanted)
}
