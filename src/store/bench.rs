//! A back door for benchmarks: not part of the supported API. Compiled only
//! with the internal `__bench` feature (see Cargo.toml).

use super::*;

impl TokenStore {
    /// **For benchmarks only; not part of the supported API.** Issues
    /// `count` refresh tokens to the actor, as [`TokenStore::generate`] with
    /// default options would, and exchanges each of them `exchanges` times,
    /// writing in atomic batches of up to 2,048 tokens (one audit event per
    /// batch) and flushing once at the end, so that a benchmark builds a
    /// store of a million tokens in seconds. `sink` receives each refresh
    /// token with its access tokens. The cap of live tokens per member
    /// ([`Config::max_live_tokens_per_member`]) does not apply here, nor
    /// do the ordinary write path's other steps: no recovery of a failed
    /// storage first, no group-commit writer count, and on a shared store
    /// neither the management lock nor a catch-up (a test that uses it
    /// there catches up itself).
    ///
    /// # Errors
    /// [`Error::Forbidden`] if the actor is not a member;
    /// [`Error::InvalidArgument`] if `exchanges` exceeds the cap of live
    /// access tokens per refresh token; [`Error::Io`] if storage fails.
    ///
    /// ```
    /// use tokenvault::{Actor, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// let mut access = Vec::new();
    /// store.bulk_issue_for_benchmarks(&Actor::new("acme", "ann"), 3, 1, &mut |_, a| {
    ///     access.extend(a)
    /// })?;
    /// assert_eq!(access.len(), 3);
    /// assert!(store.verify(access[0].expose()).is_ok());
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    ///
    /// **Blocks** for the whole batch: its writes and, at the end, one
    /// sync; its time grows with the batch.
    #[doc(hidden)]
    pub fn bulk_issue_for_benchmarks(
        &self,
        actor: &Actor,
        count: usize,
        exchanges: usize,
        sink: &mut dyn FnMut(token::SecretToken, Vec<token::SecretToken>),
    ) -> Result<()> {
        const BATCH: usize = 2048;
        let inner = &*self.inner;
        if exchanges > inner.cap {
            return Err(Error::InvalidArgument(
                "more exchanges per token than the cap of live access tokens".into(),
            ));
        }
        let mut done = 0;
        while done < count {
            let n = BATCH.min(count - done);
            let mut cat = inner.mem.catalog_write();
            let role = inner.actor_role(&cat, actor, "token.bulk_generate")?;
            let scopes = inner.policy.names(inner.policy.narrow(role, None)?);
            let now = inner.now();
            let mut changes = Vec::with_capacity(n * (2 + exchanges) + 1);
            let mut secrets = Vec::with_capacity(n);
            for _ in 0..n {
                let (id, secret) = loop {
                    let (id, secret) = token::random_id_and_secret()?;
                    if !inner.mem.has_refresh(&id.0) {
                        break (id, secret);
                    }
                };
                changes.push(Change::IssueRefresh(RefreshRecord {
                    id: id.0,
                    org: actor.org.clone(),
                    user: actor.user.clone(),
                    role_at_issue: role,
                    scopes: scopes.clone(),
                    label: None,
                    created_at: now,
                    created_by: actor.user.clone(),
                    expires_at: None,
                    state: StoredState::Active,
                    verifier: verifier(&inner.refresh_key, &secret.0),
                    life: Default::default(),
                    issue: None,
                }));
                let mut access = Vec::with_capacity(exchanges);
                for _ in 0..exchanges {
                    let (aid, asecret) = loop {
                        let (aid, asecret) = token::random_id_and_secret()?;
                        if !inner.mem.has_access(&aid.0) {
                            break (aid, asecret);
                        }
                    };
                    let rec = AccessRecord {
                        id: aid.0,
                        refresh_id: id.0,
                        issued_at: now,
                        expires_at: now.saturating_add(inner.access_ttl),
                        revoked: false,
                        verifier: verifier(&inner.access_key, &asecret.0),
                        scopes: None,
                    };
                    changes.push(Change::PutAccess(rec));
                    access.push((aid, asecret));
                }
                secrets.push((id, secret, access));
            }
            changes.push(inner.event(
                &actor.org,
                &actor.user,
                "token.bulk_generate",
                Some(format!("{n} tokens")),
                "ok",
            )?);
            inner.commit_apply(&mut cat, &changes)?;
            drop(cat);
            for (id, secret, access) in secrets {
                let tokens = access
                    .iter()
                    .map(|(aid, s)| token::encode(&inner.prefix, TokenKind::Access, aid, s))
                    .collect();
                sink(
                    token::encode(&inner.prefix, TokenKind::Refresh, &id, &secret),
                    tokens,
                );
            }
            done += n;
        }
        self.flush()
    }
}
