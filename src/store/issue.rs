//! Issuing refresh tokens and listing them.

use super::*;

impl TokenStore {
    /// A member creates their own refresh token (the profile page's
    /// "Generate New Token"). The secret is in the answer and nowhere else.
    /// Durable on return.
    ///
    /// **Blocks** for one durable commit (an fdatasync): about 0.2 ms median on
    /// this project's machine (perf report, `durable_issue_ns`), a few ms at
    /// p99 on a busy disk. In async code use
    /// `AsyncTokenStore::generate` (feature
    /// `tokio`).
    ///
    /// # Errors
    /// [`Error::Forbidden`] if the actor is not a member;
    /// [`Error::InvalidArgument`] for a scope outside the member's role, an
    /// unknown scope, a zero expiry, or a bad label; [`Error::Limit`] if the
    /// member already holds [`Config::max_live_tokens_per_member`] live
    /// refresh tokens (nothing is changed or audited); [`Error::Io`] if
    /// storage fails.
    ///
    /// ```
    /// use tokenvault::{Actor, GenerateOptions, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// let issued = store.generate(
    ///     &Actor::new("acme", "ann"),
    ///     GenerateOptions::default().label("ci").scopes(["read"]),
    /// )?;
    /// assert!(issued.token.expose().starts_with("tvr_"));
    /// assert_eq!(issued.info.scopes, vec!["read".to_string()]);
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn generate(&self, actor: &Actor, opts: GenerateOptions) -> Result<IssuedToken> {
        crate::observe::call(
            crate::observe::Call::Generate,
            self.issue(actor, None, opts),
        )
    }

    /// The Owner creates a token for another member of the organization
    /// (Settings › API Tokens › Assign Token To User). It shows in that
    /// member's own list, with the Owner as `created_by`. Durable on return.
    ///
    /// **Blocks** as [`TokenStore::generate`] (perf report,
    /// `durable_assign_ns`).
    ///
    /// # Errors
    /// [`Error::Forbidden`] unless the actor is the Owner of the org;
    /// [`Error::NotFound`] if `user` is not a member; [`Error::Limit`] if
    /// `user` (not the Owner) is at the cap of live refresh tokens;
    /// otherwise as [`TokenStore::generate`].
    ///
    /// ```
    /// use tokenvault::{Actor, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// store.add_member("acme", "bob", Role::User)?;
    /// let t = store.assign(&Actor::new("acme", "ann"), "bob", Default::default())?;
    /// assert_eq!(t.info.created_by, "ann");
    /// let bobs = store.list_own(&Actor::new("acme", "bob"))?;
    /// assert_eq!(bobs[0].id, t.info.id);
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn assign(&self, actor: &Actor, user: &str, opts: GenerateOptions) -> Result<IssuedToken> {
        crate::observe::call(
            crate::observe::Call::Assign,
            self.issue(actor, Some(user), opts),
        )
    }

    /// The Owner assigns a token to a member without seeing its secret:
    /// it is listed with state `pending` (for the member and the Owner)
    /// until the member claims it with [`TokenStore::claim`], which makes
    /// and shows the secret once. Unclaimed, it expires after
    /// [`Config::pending_claim_window`] (7 days by default); the Owner can
    /// revoke it meanwhile. Audited as `token.assign`; durable on return.
    ///
    /// **Blocks** as [`TokenStore::assign`] (one durable commit).
    ///
    /// # Errors
    /// As [`TokenStore::assign`].
    ///
    /// ```
    /// use tokenvault::{Actor, Role, TokenState, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// store.add_member("acme", "bob", Role::User)?;
    /// let info = store.assign_pending(&Actor::new("acme", "ann"), "bob", Default::default())?;
    /// assert_eq!(info.state, TokenState::Pending);
    /// // Only bob sees the secret, once.
    /// let t = store.claim(&Actor::new("acme", "bob"), &info.id)?;
    /// assert!(store.exchange(t.token.expose()).is_ok());
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn assign_pending(
        &self,
        actor: &Actor,
        user: &str,
        opts: GenerateOptions,
    ) -> Result<TokenInfo> {
        self.issue_as(actor, Some(user), opts, true).map(|t| t.info)
    }

    pub(super) fn issue(
        &self,
        actor: &Actor,
        to: Option<&str>,
        opts: GenerateOptions,
    ) -> Result<IssuedToken> {
        self.issue_as(actor, to, opts, false)
    }

    fn issue_as(
        &self,
        actor: &Actor,
        to: Option<&str>,
        opts: GenerateOptions,
        pending: bool,
    ) -> Result<IssuedToken> {
        let inner = &*self.inner;
        if let Some(l) = &opts.label {
            check_label(l, MAX_LABEL)?;
        }
        if opts.expires_in == Some(0) {
            return Err(Error::InvalidArgument("expires_in must be positive".into()));
        }
        let action = if to.is_some() {
            "token.assign"
        } else {
            "token.generate"
        };
        // The secret and its verifier are made before taking the catalog,
        // so that concurrent calls do this work side by side.
        let (id, secret) = loop {
            let (id, secret) = token::random_id_and_secret()?;
            if !inner.mem.has_refresh(&id.0) {
                break (id, secret);
            }
        };
        let check = verifier(&inner.refresh_key, &secret.0);
        let cat = inner.lock_for_issue()?;
        let role = inner.actor_role(&cat, actor, action)?;
        let subject = to.unwrap_or(&actor.user);
        if to.is_some() && !may(role, Action::AssignOther) {
            let why = "only the Owner may assign tokens";
            return Err(if cat.member(&actor.org, subject).is_some() {
                inner.deny_named(actor, action, subject.into(), why)
            } else {
                inner.deny(actor, action, Some(subject.into()), why)
            });
        }
        let not_member = || Error::NotFound(format!("{subject} is not a member of {}", actor.org));
        let member = cat
            .member(&actor.org, subject)
            .ok_or_else(not_member)?
            .clone();
        // A member of the catalog has a role (a removed one is not listed
        // there); none is never taken for the weakest.
        let subject_role = member.role().ok_or_else(not_member)?;
        let scopes = inner.policy.narrow(subject_role, opts.scopes.as_deref())?;
        let now = inner.now();
        let asked = opts.expires_in.map(|s| now.saturating_add(s));
        let expires_at = inner.expiry_within(&member, now, asked, false)?;
        // The cap on the member's live tokens. Their count is held from
        // the check to the insert, so concurrent issues for the same member
        // (which share the catalog) are counted one after another. Only a
        // member holding at least the cap's worth of stored tokens, live or
        // not, has them counted one by one: the backend lists their ids
        // (memory keeps only the count; the backend may name a few others'
        // too), and memory says which are the member's and live.
        let held = member.lock_held();
        if held.len() >= inner.max_live {
            let theirs = |r: &crate::memory::RefreshHot| {
                let m = r.member();
                m.org_id() == actor.org && m.user() == subject
            };
            let live = inner
                .backend
                .refresh_ids(&actor.org, subject)?
                .iter()
                .filter(|id| {
                    inner.mem.refresh_with(id, |r| {
                        r.is_some_and(|r| theirs(r) && r.usable(now).is_live())
                    })
                })
                .count();
            if live >= inner.max_live {
                return Err(Error::Limit(format!(
                    "{subject} already holds {live} live refresh tokens, the most a member \
                     may hold: revoke one first"
                )));
            }
        }
        // The audit event, at the record's own time.
        let mut event = inner.event_record(
            &actor.org,
            &actor.user,
            action,
            Some(codec::issue_target(&id.0, subject)),
            "ok",
        );
        event.at = now;
        event.last_at = now;
        let rec = RefreshRecord {
            id: id.0,
            org: actor.org.clone(),
            user: subject.into(),
            role_at_issue: subject_role,
            scopes: inner.policy.names(scopes),
            label: opts.label.clone(),
            created_at: now,
            created_by: actor.user.clone(),
            expires_at,
            state: StoredState::Active,
            verifier: check,
            life: crate::codec::Lifecycle {
                // No secret is shown for it: the one made above is
                // dropped, and its member gets another when they claim it.
                pending_until: if pending {
                    now.saturating_add(inner.pending_window)
                } else {
                    0
                },
                ..Default::default()
            },
            issue: None,
        };
        let changes = vec![Change::IssueRefresh(rec.clone()), Change::Event(event)];
        let ticket = inner.commit(&changes)?;
        // The record hangs on its member, who is one (checked above, and
        // nobody can remove them meanwhile): no catalog change is needed.
        inner.mem.put_issued(held, &rec, &member);
        drop(cat);
        if let Err(e) = inner.sync_with(ticket, true) {
            inner.unissue(&rec);
            return Err(e);
        }
        Ok(IssuedToken {
            token: token::encode(&inner.prefix, TokenKind::Refresh, &id, &secret),
            info: inner.info_of(rec, now),
        })
    }

    /// The actor's own tokens (the profile page), including those the Owner
    /// assigned to them, oldest first.
    ///
    /// **Blocks** while it reads the member's token records from disk: about
    /// 0.2 ms for a member holding 100 tokens (perf report, `list_own_us`, at
    /// 100,000 tokens), more for more tokens.
    ///
    /// # Errors
    /// [`Error::Forbidden`] if the actor is not a member; [`Error::Io`] or
    /// [`Error::Corrupt`] if storage fails; on a shared store
    /// [`Error::Unavailable`] when the replica cannot catch up with the
    /// change log (it fails closed).
    ///
    /// ```
    /// use tokenvault::{Actor, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// let ann = Actor::new("acme", "ann");
    /// store.generate(&ann, Default::default())?;
    /// assert_eq!(store.list_own(&ann)?.len(), 1);
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn list_own(&self, actor: &Actor) -> Result<Vec<TokenInfo>> {
        let inner = &*self.inner;
        inner.recover()?;
        let cat = inner.lock_catalog_for_read()?;
        inner.actor_role(&cat, actor, "token.list")?;
        inner.list(&actor.org, Some(&actor.user))
    }

    /// Every token of the actor's organization (Settings › API Tokens);
    /// Owner only. Oldest first.
    ///
    /// **Blocks** as [`TokenStore::list_own`], for every token of the
    /// organization.
    ///
    /// # Errors
    /// [`Error::Forbidden`] unless the actor is the Owner; [`Error::Io`] or
    /// [`Error::Corrupt`] if storage fails; on a shared store
    /// [`Error::Unavailable`] when the replica cannot catch up with the
    /// change log (it fails closed).
    ///
    /// ```
    /// use tokenvault::{Actor, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// store.add_member("acme", "bob", Role::User)?;
    /// store.generate(&Actor::new("acme", "bob"), Default::default())?;
    /// assert_eq!(store.list_org(&Actor::new("acme", "ann"))?.len(), 1);
    /// assert!(store.list_org(&Actor::new("acme", "bob")).is_err());
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn list_org(&self, actor: &Actor) -> Result<Vec<TokenInfo>> {
        let inner = &*self.inner;
        inner.recover()?;
        let cat = inner.lock_catalog_for_read()?;
        let role = inner.actor_role(&cat, actor, "token.list_org")?;
        if !may(role, Action::ListOrg) {
            return Err(inner.deny(
                actor,
                "token.list_org",
                None,
                "only the Owner may list every token",
            ));
        }
        inner.list(&actor.org, None)
    }
}

impl Inner {
    /// After the sync of an issue failed: the token is taken out of memory
    /// at once (it no longer verifies, is not listed and does not count
    /// against its member's cap), and the backend is told, so that an open
    /// that finds its record after all removes it. Then the storage is
    /// reopened where it can be.
    #[cold]
    fn unissue(&self, rec: &RefreshRecord) {
        self.backend.note_failed_issue(&rec.id);
        {
            let mut cat = self.mem.catalog_write();
            self.mem.apply(
                &mut cat,
                &[Change::DeleteRefresh {
                    id: rec.id,
                    org: rec.org.clone(),
                    user: rec.user.clone(),
                }],
                &Default::default(),
            );
        }
        // A storage reopened before this call's sync failed may hold the
        // record durably already (read back from what the failed sync left
        // in the cache): it goes now.
        if self.recover().is_ok() && matches!(self.backend.get_refresh(&rec.id), Ok(Some(_))) {
            let gone = Change::DeleteRefresh {
                id: rec.id,
                org: rec.org.clone(),
                user: rec.user.clone(),
            };
            // Under the catalog, as every commit (a reload waits for it).
            let committed = self.commit_apply(&mut self.mem.catalog_write(), &[gone]);
            if let Ok(ticket) = committed {
                let _ = self.sync_with(ticket, true);
            }
        }
    }

    pub(super) fn info_of(&self, r: RefreshRecord, now: u64) -> TokenInfo {
        let hot = self.mem.refresh(&r.id);
        let (last_refresh, client) = hot.as_ref().map_or((None, None), |h| {
            let _family = h.lock_family();
            (h.last_refresh(), self.mem.client_of(&r.id))
        });
        // A token spent by a rotation on use shows the end of its leeway.
        let expires_at = r.effective_expiry();
        // The stored revocation says who and why; otherwise the one rule
        // (on the record's own expiry where memory does not hold it).
        let usable = match &hot {
            Some(h) => h.usable(now),
            None if expires_at.is_some_and(|e| e <= now) => Usable::Expired,
            None if r.life.pending_until != 0 => Usable::Pending,
            None if r.life.disabled => Usable::Disabled,
            None => Usable::Yes(r.role_at_issue),
        };
        let state = match r.state {
            StoredState::Revoked { at, by, reason } => TokenState::Revoked { at, by, reason },
            StoredState::Active => match usable {
                Usable::Yes(_) => TokenState::Active,
                Usable::Expired => TokenState::Expired,
                Usable::Disabled => TokenState::Disabled,
                Usable::Pending => TokenState::Pending,
                Usable::Revoked | Usable::CutOff | Usable::Removed => TokenState::Revoked {
                    at: hot.as_ref().map_or(0, |h| h.member().cutoff()),
                    by: HOST.into(),
                    reason: Some("cutoff or membership".into()),
                },
            },
        };
        TokenInfo {
            id: TokenId(r.id),
            org: r.org,
            user: r.user,
            role_at_issue: r.role_at_issue,
            scopes: r.scopes,
            label: r.label,
            created_at: r.created_at,
            created_by: r.created_by,
            expires_at,
            last_refresh,
            last_used_ip: client.as_ref().and_then(ClientInfo::ip),
            last_used_agent: client.and_then(|c| c.agent.map(String::from)),
            state,
        }
    }

    /// The tokens of `org` (of its member `user`), oldest first. The
    /// caller holds the catalog (shared), so that no write runs meanwhile.
    pub(super) fn list(&self, org: &str, user: Option<&str>) -> Result<Vec<TokenInfo>> {
        let unreadable = self.backend.unreadable_refresh() + self.unlisted;
        if unreadable != 0 {
            return Err(Error::Corrupt(format!(
                "{unreadable} refresh records found unreadable when the store was opened: \
                 whose they are is unknown, so no list can be shown complete (they never \
                 verify; check_integrity names them; the count is taken again at the next open)"
            )));
        }
        let now = self.now();
        let mut recs = self.backend.list_refresh(org, user)?;
        recs.sort_by_key(|r| (r.created_at, r.id));
        Ok(recs.into_iter().map(|r| self.info_of(r, now)).collect())
    }
}

#[cfg(test)]
mod tests {
    use crate::{Actor, Config, GenerateOptions, Role, StoreKey};

    /// The cap counts a member's own live tokens, also when the backend
    /// names another member's token whose id begins as one of theirs does
    /// (the embedded backend lists ids by their first six bytes): here
    /// bob's live token is moved on disk under such an id, and ann, one
    /// live and one revoked token under a cap of two, may still issue.
    #[test]
    fn the_cap_counts_only_the_members_own_tokens_among_ids_that_begin_alike() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = || {
            Config::new(dir.path())
                .key(StoreKey::from_bytes([3; 32]))
                .max_live_tokens_per_member(2)
        };
        let store = cfg().open().unwrap();
        store.add_member("acme", "olivia", Role::Owner).unwrap();
        store.add_member("acme", "ann", Role::User).unwrap();
        store.add_member("acme", "bob", Role::User).unwrap();
        let (ann, bob) = (Actor::new("acme", "ann"), Actor::new("acme", "bob"));
        let live = store.generate(&ann, GenerateOptions::default()).unwrap();
        let gone = store.generate(&ann, GenerateOptions::default()).unwrap();
        store.revoke(&ann, &gone.info.id, None).unwrap();
        let theirs = store.generate(&bob, GenerateOptions::default()).unwrap();
        store.close().unwrap();
        crate::storage::move_refresh_record(dir.path(), theirs.info.id.0, live.info.id.0);
        let store = cfg().open().unwrap();
        assert_eq!(store.list_own(&bob).unwrap().len(), 1);
        store
            .generate(&ann, GenerateOptions::default())
            .expect("ann holds one live token of two");
        let refused = store.generate(&ann, GenerateOptions::default());
        assert!(
            matches!(refused, Err(crate::Error::Limit(_))),
            "{refused:?}"
        );
    }
}
