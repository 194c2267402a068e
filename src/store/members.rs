//! Membership, kept in sync by the host.

use super::*;

impl TokenStore {
    /// Adds `user` to `org` with `role`. An organization has exactly one
    /// Owner: add it with [`Role::Owner`] first, then the others. Durable on
    /// return.
    ///
    /// **Blocks** for one durable commit, as [`TokenStore::generate`] (about
    /// 0.2 ms median, a few ms at p99 on a busy disk; not timed separately by
    /// the perf report).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty or overlong id;
    /// [`Error::Conflict`] if the member exists or the org already has an
    /// Owner; [`Error::Io`] if storage fails.
    ///
    /// ```
    /// use tokenvault::{Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// assert!(store.add_member("acme", "bob", Role::Owner).is_err());
    /// assert_eq!(store.member_role("acme", "ann"), Some(Role::Owner));
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn add_member(&self, org: &str, user: &str, role: Role) -> Result<()> {
        crate::observe::call(
            crate::observe::Call::AddMember,
            self.add_member_unobserved(org, user, role),
        )
    }

    fn add_member_unobserved(&self, org: &str, user: &str, role: Role) -> Result<()> {
        check_id("organization", org)?;
        check_id("user", user)?;
        let inner = &*self.inner;
        let cat = inner.lock_for_write()?;
        if cat.member(org, user).is_some() {
            return Err(Error::Conflict(format!(
                "{user} is already a member of {org}"
            )));
        }
        if role == Role::Owner {
            if let Some(o) = cat.owner(org) {
                return Err(Error::Conflict(format!(
                    "{org} already has an Owner ({o}); transfer ownership instead"
                )));
            }
        }
        let changes = vec![Change::AddMember {
            org: org.into(),
            user: user.into(),
            role,
        }];
        inner.commit_member_change(cat, changes, org, "member.add", format!("{user} as {role}"))
    }

    /// Changes a member's role. The Owner's role changes only through
    /// [`TokenStore::transfer_ownership`]. Tokens keep their scopes but at
    /// verification they are cut to the new role's at once. Durable on
    /// return.
    ///
    /// **Blocks** as [`TokenStore::add_member`].
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown member; [`Error::Conflict`] when
    /// asked to make or unmake the Owner; [`Error::Io`] if storage fails.
    ///
    /// ```
    /// use tokenvault::{Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// store.add_member("acme", "bob", Role::Admin)?;
    /// store.set_role("acme", "bob", Role::User)?;
    /// assert_eq!(store.member_role("acme", "bob"), Some(Role::User));
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn set_role(&self, org: &str, user: &str, role: Role) -> Result<()> {
        crate::observe::call(
            crate::observe::Call::SetRole,
            self.set_role_unobserved(org, user, role),
        )
    }

    fn set_role_unobserved(&self, org: &str, user: &str, role: Role) -> Result<()> {
        let inner = &*self.inner;
        let cat = inner.lock_for_write()?;
        let current = cat
            .member(org, user)
            .and_then(|m| m.role())
            .ok_or_else(|| Error::NotFound(format!("{user} is not a member of {org}")))?;
        if role == Role::Owner && current != Role::Owner {
            return Err(Error::Conflict(
                "use transfer_ownership to make a member the Owner".into(),
            ));
        }
        if current == Role::Owner && role != Role::Owner {
            return Err(Error::Conflict(
                "the Owner's role changes only by transferring ownership".into(),
            ));
        }
        let changes = vec![Change::SetRole {
            org: org.into(),
            user: user.into(),
            role,
        }];
        inner.commit_member_change(
            cat,
            changes,
            org,
            "member.role",
            format!("{user} to {role}"),
        )
    }

    /// Makes `new_owner` (already a member) the Owner of `org`; the previous
    /// Owner becomes an Admin. Durable on return.
    ///
    /// **Blocks** as [`TokenStore::add_member`].
    ///
    /// # Errors
    /// [`Error::NotFound`] if `new_owner` is not a member; [`Error::Io`] if
    /// storage fails.
    ///
    /// ```
    /// use tokenvault::{Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// store.add_member("acme", "bob", Role::Admin)?;
    /// store.transfer_ownership("acme", "bob")?;
    /// assert_eq!(store.member_role("acme", "bob"), Some(Role::Owner));
    /// assert_eq!(store.member_role("acme", "ann"), Some(Role::Admin));
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn transfer_ownership(&self, org: &str, new_owner: &str) -> Result<()> {
        crate::observe::call(
            crate::observe::Call::TransferOwnership,
            self.transfer_unobserved(org, new_owner),
        )
    }

    fn transfer_unobserved(&self, org: &str, new_owner: &str) -> Result<()> {
        let inner = &*self.inner;
        let cat = inner.lock_for_write()?;
        let new = cat
            .member(org, new_owner)
            .ok_or_else(|| Error::NotFound(format!("{new_owner} is not a member of {org}")))?;
        if new.role() == Some(Role::Owner) {
            return Ok(());
        }
        let from = cat
            .owner(org)
            .filter(|o| cat.member(org, o).is_some())
            .map(String::from);
        let changes = vec![Change::MoveOwnership {
            org: org.into(),
            to: new_owner.into(),
            from,
        }];
        inner.commit_member_change(cat, changes, org, "member.transfer", new_owner.into())
    }

    /// Removes a member and revokes every one of their tokens, durably. The
    /// Owner cannot be removed (transfer ownership first). Returns how many
    /// refresh tokens were revoked.
    ///
    /// **Blocks** for one durable commit that also revokes the member's tokens,
    /// as [`TokenStore::revoke_all`] for one member.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown member; [`Error::Conflict`] for the
    /// Owner; [`Error::Io`] if storage fails.
    ///
    /// ```
    /// use tokenvault::{Actor, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// store.add_member("acme", "bob", Role::User)?;
    /// let t = store.generate(&Actor::new("acme", "bob"), Default::default())?;
    /// assert_eq!(store.remove_member("acme", "bob")?, 1);
    /// assert!(store.exchange(t.token.expose()).is_err());
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn remove_member(&self, org: &str, user: &str) -> Result<usize> {
        crate::observe::call(
            crate::observe::Call::RemoveMember,
            self.remove_member_unobserved(org, user),
        )
    }

    fn remove_member_unobserved(&self, org: &str, user: &str) -> Result<usize> {
        let inner = &*self.inner;
        let mut cat = inner.lock_for_write()?;
        let m = cat
            .member(org, user)
            .ok_or_else(|| Error::NotFound(format!("{user} is not a member of {org}")))?
            .clone();
        if m.role() == Some(Role::Owner) {
            return Err(Error::Conflict(
                "the Owner cannot be removed; transfer ownership first".into(),
            ));
        }
        let now = inner.now();
        let changes = [
            inner.revoke_many(org, Some(user), u64::MAX, now, HOST, "member removed"),
            Change::RemoveMember {
                org: org.into(),
                user: user.into(),
            },
            inner.event(org, HOST, "member.remove", Some(user.into()), "ok")?,
        ];
        let (ticket, done) = inner.commit_apply_counted(&mut cat, &changes)?;
        drop(cat);
        inner.sync(ticket)?;
        Ok(done.revoked.len())
    }

    /// A member's current role, if they are a member. Does not block
    /// (memory only).
    pub fn member_role(&self, org: &str, user: &str) -> Option<Role> {
        let cat = self.inner.mem.catalog_read();
        cat.member(org, user).and_then(|m| m.role())
    }

    /// The members of `org` and their roles, sorted by user id. Does not
    /// block (memory only).
    pub fn members(&self, org: &str) -> Vec<(String, Role)> {
        let cat = self.inner.mem.catalog_read();
        let mut out = cat.members_of(org);
        out.sort();
        out
    }
}

impl Inner {
    /// Commits a membership change with the host's audit event for
    /// `action` on `target`, applies it, lets go of the catalog and waits
    /// until it is durable.
    fn commit_member_change(
        &self,
        mut cat: WriteGuard<'_>,
        mut changes: Vec<Change>,
        org: &str,
        action: &str,
        target: String,
    ) -> Result<()> {
        changes.push(self.event(org, HOST, action, Some(target), "ok")?);
        let ticket = self.commit_apply(&mut cat, &changes)?;
        drop(cat);
        self.sync(ticket)
    }
}
