//! Membership in one call: an organization brought to the host's list.

use std::collections::BTreeMap;

use super::members::put_member;
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
    /// Whether the call changed nothing.
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
        let wanted = wanted_members(org, members)?;
        let inner = &*self.inner;
        let mut cat = inner.lock_for_write()?;
        let current: BTreeMap<String, (Role, u64)> = cat
            .orgs
            .get(org)
            .map(|e| {
                e.members
                    .iter()
                    .filter_map(|(u, m)| m.role().map(|r| (u.clone(), (r, m.not_before()))))
                    .collect()
            })
            .unwrap_or_default();
        let mut report = SyncReport::default();
        let now = inner.now();
        // Removals first, then the other members, the Owner last: memory
        // ends with the one Owner whatever the order (the batch is one
        // commit either way).
        let mut changes = Vec::new();
        for user in current.keys().filter(|u| !wanted.contains_key(*u)) {
            changes.push(inner.revoke_many(
                &cat,
                org,
                Some(user),
                u64::MAX,
                now,
                HOST,
                "member removed",
            ));
            changes.push(Change::DeleteMember {
                org: org.into(),
                user: user.clone(),
            });
            changes.push(inner.event(org, HOST, "member.remove", Some(user.clone()), "ok")?);
            report.removed.push(user.clone());
        }
        let owner_last = wanted
            .iter()
            .filter(|(_, r)| **r != Role::Owner)
            .chain(wanted.iter().filter(|(_, r)| **r == Role::Owner));
        for (user, &role) in owner_last {
            match current.get(user) {
                None => {
                    changes.push(put_member(org, user, role, 0));
                    changes.push(inner.event(
                        org,
                        HOST,
                        "member.add",
                        Some(format!("{user} as {role}")),
                        "ok",
                    )?);
                    report.added.push((user.clone(), role));
                }
                Some(&(from, not_before)) if from != role => {
                    changes.push(put_member(org, user, role, not_before));
                    changes.push(if role == Role::Owner {
                        inner.event(org, HOST, "member.transfer", Some(user.clone()), "ok")?
                    } else {
                        inner.event(
                            org,
                            HOST,
                            "member.role",
                            Some(format!("{user} to {role}")),
                            "ok",
                        )?
                    });
                    report.role_changed.push(RoleChange {
                        user: user.clone(),
                        from,
                        to: role,
                    });
                }
                Some(_) => {}
            }
            if role == Role::Owner && current.get(user).map(|c| c.0) != Some(Role::Owner) {
                report.new_owner = Some(user.clone());
            }
        }
        if changes.is_empty() {
            return Ok(report);
        }
        report.role_changed.sort_by(|a, b| a.user.cmp(&b.user));
        report.added.sort();
        let (ticket, done) = inner.commit_apply_counted(&mut cat, &changes)?;
        drop(cat);
        inner.sync(ticket)?;
        report.tokens_revoked = done.revoked;
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
