//! Revocation: one token, a member, an organization, a cutoff, an access token.

use super::*;

impl TokenStore {
    /// Revokes one refresh token and, with it, every access token derived
    /// from it. Its holder or the Owner of its org may do so. Durable and in
    /// force on return. Revoking a revoked token changes nothing and succeeds.
    ///
    /// **Blocks** for one durable commit: about 0.26 ms median for a token with
    /// one access token (perf report, `durable_revoke_ns`), under 1 ms with
    /// 10,000 live access tokens (`revoke_10k_ms`), 4–71 ms at p99 while
    /// another thread exchanges flat out (`revoke_p99_under_load_ms`, 1,000,000
    /// and 100,000 tokens, the latter at load 10).
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown id; [`Error::Forbidden`] if the
    /// actor is neither the holder nor the Owner of its org (or is in another
    /// org); [`Error::InvalidArgument`] for a bad reason text; [`Error::Io`]
    /// if storage fails.
    ///
    /// ```
    /// use tokenvault::{Actor, Error, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// let ann = Actor::new("acme", "ann");
    /// let t = store.generate(&ann, Default::default())?;
    /// let access = store.exchange(t.token.expose())?.access_token;
    /// store.revoke(&ann, &t.info.id, Some("leaked"))?;
    /// assert!(matches!(store.verify(access.expose()), Err(Error::Revoked)));
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn revoke(&self, actor: &Actor, id: &TokenId, reason: Option<&str>) -> Result<()> {
        crate::observe::call(
            crate::observe::Call::Revoke,
            self.revoke_with(actor, id, reason, Foreign::Forbidden),
        )
    }

    /// [`TokenStore::revoke`] for a front that answers another
    /// organization's token exactly as an unknown id (the HTTP API): such a
    /// token is [`Error::NotFound`], found by the same steps as an unknown
    /// one and not audited (an unknown id is not either).
    #[cfg(feature = "http")]
    pub(crate) fn revoke_in_own_org(&self, actor: &Actor, id: &TokenId) -> Result<()> {
        crate::observe::call(
            crate::observe::Call::Revoke,
            self.revoke_with(actor, id, None, Foreign::Unknown),
        )
    }

    pub(super) fn revoke_with(
        &self,
        actor: &Actor,
        id: &TokenId,
        reason: Option<&str>,
        foreign: Foreign,
    ) -> Result<()> {
        if let Some(r) = reason {
            check_text("reason", r, MAX_REASON)?;
        }
        let inner = &*self.inner;
        let mut cat = inner.lock_for_write()?;
        let role = inner.actor_role(&cat, actor, "token.revoke")?;
        inner.find_refresh(&mut cat, &id.0)?;
        let hot = inner
            .mem
            .refresh(&id.0)
            .ok_or_else(|| Error::NotFound(format!("no token with id {id}")))?;
        if *hot.member().org_id() != *actor.org && foreign == Foreign::Unknown {
            return Err(Error::NotFound(format!("no token with id {id}")));
        }
        let target = Some(id.to_string());
        if *hot.member().org_id() != *actor.org {
            return Err(inner.deny(
                actor,
                "token.revoke",
                target,
                "the token belongs to another organization",
            ));
        }
        let own = *hot.member().user() == *actor.user;
        if !own && !may(role, Action::RevokeOther) {
            return Err(inner.deny_named(
                actor,
                "token.revoke",
                id.to_string(),
                "only the Owner may revoke another member's token",
            ));
        }
        let now = inner.now();
        if !hot.revocable() {
            // Revoked already, perhaps by a call whose sync failed: this
            // answer, too, says the revocation is durable.
            drop(cat);
            return inner.sync_written();
        }
        let changes = vec![
            Change::RevokeRefresh {
                id: id.0,
                at: now,
                by: actor.user.clone(),
                reason: reason.map(Into::into),
            },
            inner.event(&actor.org, &actor.user, "token.revoke", target, "ok")?,
        ];
        let ticket = inner.commit_apply(&mut cat, &changes)?;
        drop(cat);
        inner.sync(ticket)
    }

    /// Revokes a refresh token presented by whoever holds it (RFC 7009's
    /// revocation endpoint for refresh tokens), and with it every access
    /// token derived from it. Holding the secret is the authority: the
    /// revocation is made and audited as the token's holder. A token that is
    /// already revoked or expired is left as it is, and the call succeeds.
    /// Durable and in force on return.
    ///
    /// **Blocks** as [`TokenStore::revoke`].
    ///
    /// # Errors
    /// [`Error::Malformed`] or [`Error::InvalidToken`] if the string is not a
    /// known refresh token of this store; [`Error::InvalidArgument`] for a
    /// bad reason text; [`Error::Io`] if storage fails. On a shared store,
    /// [`Error::Unavailable`] when the replica is stale or cannot read the
    /// token (nothing is revoked then: try again), [`Error::Limit`] as for
    /// [`TokenStore::verify`].
    ///
    /// Blocks: a read of the token's record, then a durable write (sled: a
    /// sync, milliseconds; PostgreSQL: the fleet-wide management lock and
    /// one transaction).
    ///
    /// ```
    /// use tokenvault::{Actor, Error, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "bob", Role::User)?;
    /// let t = store.generate(&Actor::new("acme", "bob"), Default::default())?;
    /// let access = store.exchange(t.token.expose())?.access_token;
    /// store.revoke_refresh(t.token.expose(), Some("leaked"))?;
    /// assert!(matches!(store.verify(access.expose()), Err(Error::Revoked)));
    /// // Again: nothing left to do, still a success.
    /// store.revoke_refresh(t.token.expose(), None)?;
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn revoke_refresh(&self, refresh_token: &str, reason: Option<&str>) -> Result<()> {
        crate::observe::call(
            crate::observe::Call::RevokeRefresh,
            self.revoke_refresh_unobserved(refresh_token, reason),
        )
    }

    fn revoke_refresh_unobserved(&self, refresh_token: &str, reason: Option<&str>) -> Result<()> {
        if let Some(r) = reason {
            check_text("reason", r, MAX_REASON)?;
        }
        let info = match self.verify_refresh(refresh_token) {
            Ok(info) => info,
            // Nothing left to do, once what is written is durable (the
            // revocation may be that of a call whose sync failed).
            Err(Error::Revoked | Error::Expired) => return self.inner.sync_written(),
            Err(e) => return Err(e),
        };
        match self.revoke(&Actor::new(info.org, info.user), &info.id, reason) {
            // The holder left the organization meanwhile, which revoked the
            // token already.
            Err(Error::Forbidden(_)) if self.verify_refresh(refresh_token).is_err() => Ok(()),
            Err(Error::NotFound(_)) => Ok(()),
            r => r,
        }
    }

    /// Bulk revocation: every token of one member (the member themselves or
    /// the Owner), or of the whole organization (the Owner), optionally only
    /// those issued before `before` (Unix seconds, not in the future). With
    /// `before`, the cutoff is also kept (the latest cutoff wins) so that
    /// verification checks it too. Durable and in force on return. Returns
    /// how many refresh tokens were revoked.
    ///
    /// **Blocks** for one durable commit over every token covered: about 0.8 ms
    /// for a member's 100 tokens (perf report, `revoke_all_member_ms`), longer
    /// for a large organization.
    ///
    /// # Errors
    /// [`Error::Forbidden`] per the policy table; [`Error::InvalidArgument`]
    /// for a cutoff in the future; [`Error::Io`] if storage fails.
    ///
    /// ```
    /// use tokenvault::{Actor, RevokeScope, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// store.add_member("acme", "bob", Role::User)?;
    /// let ann = Actor::new("acme", "ann");
    /// store.generate(&Actor::new("acme", "bob"), Default::default())?;
    /// store.generate(&ann, Default::default())?;
    /// assert_eq!(store.revoke_all(&ann, RevokeScope::Org, None)?, 2);
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn revoke_all(
        &self,
        actor: &Actor,
        scope: RevokeScope,
        before: Option<u64>,
    ) -> Result<usize> {
        crate::observe::call(
            crate::observe::Call::RevokeAll,
            self.revoke_all_unobserved(actor, scope, before),
        )
    }

    fn revoke_all_unobserved(
        &self,
        actor: &Actor,
        scope: RevokeScope,
        before: Option<u64>,
    ) -> Result<usize> {
        let inner = &*self.inner;
        let mut cat = inner.lock_for_write()?;
        let role = inner.actor_role(&cat, actor, "token.revoke_all")?;
        let now = inner.now();
        let (user, target) = match &scope {
            RevokeScope::Member(u) => {
                if *u != actor.user && !may(role, Action::BulkRevokeOther) {
                    let why = "only the Owner may revoke another member's tokens";
                    return Err(if cat.member(&actor.org, u).is_some() {
                        inner.deny_named(actor, "token.revoke_all", u.clone(), why)
                    } else {
                        inner.deny(actor, "token.revoke_all", Some(u.clone()), why)
                    });
                }
                (Some(u.as_str()), u.clone())
            }
            RevokeScope::Org => {
                if !may(role, Action::BulkRevokeOrg) {
                    return Err(inner.deny(
                        actor,
                        "token.revoke_all",
                        Some("org".into()),
                        "only the Owner may revoke every token of the organization",
                    ));
                }
                (None, "org".to_string())
            }
        };
        if let Some(t) = before {
            if t > now {
                return Err(Error::InvalidArgument(
                    "the cutoff time cannot be in the future".into(),
                ));
            }
        }
        let mut changes = vec![inner.revoke_many(
            &actor.org,
            user,
            before.unwrap_or(u64::MAX),
            now,
            &actor.user,
            if before.is_some() {
                "revoked before cutoff"
            } else {
                "bulk revocation"
            },
        )];
        // The cutoff is kept too (each backend and memory keep the latest).
        if let Some(at) = before {
            match user {
                Some(u) if cat.member(&actor.org, u).is_some() => {
                    changes.push(Change::MemberCutoff {
                        org: actor.org.clone(),
                        user: u.into(),
                        at,
                    });
                }
                // Not a member: their tokens, if any, are revoked already.
                Some(_) => {}
                None => changes.push(Change::OrgCutoff {
                    org: actor.org.clone(),
                    at,
                }),
            }
        }
        let what = match before {
            Some(t) => format!("{target} before {t}"),
            None => target,
        };
        changes.push(inner.event(
            &actor.org,
            &actor.user,
            "token.revoke_all",
            Some(what),
            "ok",
        )?);
        let (ticket, done) = inner.commit_apply_counted(&mut cat, &changes)?;
        drop(cat);
        inner.sync(ticket)?;
        Ok(done.revoked.len())
    }

    /// Revokes a single access token, presented by its holder (as RFC 7009's
    /// revocation endpoint does). Its refresh token stays usable. Durable on
    /// return; revoking a revoked token succeeds.
    ///
    /// **Blocks** as [`TokenStore::revoke`].
    ///
    /// # Errors
    /// [`Error::Malformed`] or [`Error::InvalidToken`] if the token is not a
    /// known access token of this store; [`Error::Io`] if storage fails. On
    /// a shared store, [`Error::Unavailable`] when the replica is stale or
    /// cannot read the token, [`Error::Limit`] as for [`TokenStore::verify`].
    ///
    /// Blocks for a durable write (sled: a sync, milliseconds; PostgreSQL:
    /// one transaction), and on a shared store for one more round trip for
    /// a token this replica does not hold.
    ///
    /// ```
    /// use tokenvault::{Actor, Error, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// let t = store.generate(&Actor::new("acme", "ann"), Default::default())?;
    /// let access = store.exchange(t.token.expose())?.access_token;
    /// store.revoke_access(access.expose())?;
    /// assert!(matches!(store.verify(access.expose()), Err(Error::Revoked)));
    /// assert!(store.exchange(t.token.expose()).is_ok());
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn revoke_access(&self, access_token: &str) -> Result<()> {
        crate::observe::call(
            crate::observe::Call::RevokeAccess,
            self.revoke_access_unobserved(access_token),
        )
    }

    fn revoke_access_unobserved(&self, access_token: &str) -> Result<()> {
        let inner = &*self.inner;
        let parsed = token::parse(&inner.prefix, TokenKind::Access, access_token)?;
        inner.recover()?;
        let generation = inner.generation();
        let fresh = inner
            .read_access(&parsed.id.0, || true, read::Reach::Database)?
            .ok_or(Error::InvalidToken)?;
        let v = verifier(&inner.access_key, &parsed.secret.0);
        let found = fresh.access_with(&parsed.id.0, |a| {
            a.filter(|a| a.verifier_matches(&v))
                .map(|a| (a.refresh().clone(), a.revocable()))
        });
        let (parent, revocable) = found.ok_or(Error::InvalidToken)?;
        if !revocable {
            return Ok(());
        }
        let ticket = {
            let mut book = parent.lock_family();
            if !inner.mem.family_holds(&parent, &parsed.id.0) {
                // Purged or evicted meanwhile: nothing left to revoke.
                return Ok(());
            }
            let changes = [Change::RevokeAccess {
                refresh_id: parent.id(),
                id: parsed.id.0,
            }];
            let _gate = inner.gate(generation)?;
            let ticket = inner.commit(&changes)?;
            inner.mem.apply_family(&parent, &mut book, &changes);
            ticket
        };
        inner.sync(ticket)
    }
}

impl Inner {
    /// The revocation of every refresh token of `org` (of its member `user`
    /// only, when given) created before `before` (`u64::MAX`: all). Reads
    /// nothing from storage: the backend selects inside its commit (see
    /// [`Change::RevokeMany`]) and reports the ids it revoked. The caller
    /// holds the catalog exclusively.
    pub(super) fn revoke_many(
        &self,
        org: &str,
        user: Option<&str>,
        before: u64,
        now: u64,
        by: &str,
        reason: &str,
    ) -> Change {
        Change::RevokeMany {
            org: org.into(),
            user: user.map(Into::into),
            before,
            at: now,
            by: by.into(),
            reason: Some(reason.into()),
        }
    }
}
