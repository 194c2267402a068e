//! A back door for benchmarks: not part of the supported API. Compiled only
//! with the internal `__bench` feature (see Cargo.toml).

use super::*;

/// Tokens (refresh tokens with their access tokens) per atomic batch of
/// the bulk builder: large enough that the per-commit costs of the engine
/// (one transaction, one audit event per holder) are spread thin, small
/// enough that a batch's changes stay a few MiB.
const BATCH: usize = 8192;

impl TokenStore {
    /// **For benchmarks only; not part of the supported API.** Issues
    /// `count` refresh tokens to the actor, as [`TokenStore::generate`] with
    /// default options would, and exchanges each of them `exchanges` times:
    /// [`TokenStore::bulk_issue_many_for_benchmarks`] for one holder.
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
        self.bulk_issue_many_for_benchmarks(&[(actor.clone(), count)], exchanges, &mut |_, r, a| {
            sink(r, a)
        })
    }

    /// **For benchmarks only; not part of the supported API.** Issues
    /// `count` refresh tokens to each `(actor, count)` of `holders`, as
    /// [`TokenStore::generate`] with default options would, and exchanges
    /// each of them `exchanges` times, so that a benchmark builds a store
    /// of ten million tokens in minutes. Batches span holders: atomic
    /// batches of up to 8,192 refresh tokens with their access tokens (one
    /// audit event per holder in each), the ids and secrets of a batch
    /// drawn from the operating system in one call, no sync between
    /// batches and one at the end. `sink` receives each refresh token with
    /// its access tokens and the index of its holder in `holders`, in
    /// order. The cap of live tokens per member
    /// ([`Config::max_live_tokens_per_member`]) does not apply here, nor
    /// do the ordinary write path's other steps: no recovery of a failed
    /// storage first, no group-commit writer count, and on a shared store
    /// neither the management lock nor a catch-up (a test that uses it
    /// there catches up itself). Every holder is checked before anything
    /// is written; a batch that fails leaves the earlier ones in place.
    ///
    /// # Errors
    /// [`Error::Forbidden`] if an actor is not a member;
    /// [`Error::InvalidArgument`] if `exchanges` exceeds the cap of live
    /// access tokens per refresh token; [`Error::Io`] if storage or the
    /// operating system's random source fails.
    ///
    /// ```
    /// use tokenvault::{Actor, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// store.add_member("acme", "bob", Role::User)?;
    /// let holders = [(Actor::new("acme", "ann"), 2), (Actor::new("acme", "bob"), 3)];
    /// let mut made = Vec::new();
    /// store.bulk_issue_many_for_benchmarks(&holders, 1, &mut |who, _, a| {
    ///     made.push((who, a))
    /// })?;
    /// assert_eq!(made.iter().map(|(who, _)| *who).collect::<Vec<_>>(), [0, 0, 1, 1, 1]);
    /// assert!(store.verify(made[4].1[0].expose()).is_ok());
    /// // A holder who is not a member: refused, nothing issued to anyone.
    /// let with_stranger = [(Actor::new("acme", "ann"), 1), (Actor::new("acme", "zed"), 1)];
    /// let refused = store.bulk_issue_many_for_benchmarks(&with_stranger, 1, &mut |_, _, _| {});
    /// assert!(refused.is_err());
    /// assert_eq!(store.stats()?.access_tokens, 5);
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    ///
    /// **Blocks** for the whole build: its writes and, at the end, one
    /// sync; about 10 to 30 µs per token on a busy two-core machine.
    #[doc(hidden)]
    pub fn bulk_issue_many_for_benchmarks(
        &self,
        holders: &[(Actor, usize)],
        exchanges: usize,
        sink: &mut dyn FnMut(usize, token::SecretToken, Vec<token::SecretToken>),
    ) -> Result<()> {
        let inner = &*self.inner;
        if exchanges > inner.cap {
            return Err(Error::InvalidArgument(
                "more exchanges per token than the cap of live access tokens".into(),
            ));
        }
        // Every holder is a member, and their scopes, before any write.
        let granted = {
            let cat = inner.mem.catalog_read();
            holders
                .iter()
                .map(|(actor, _)| {
                    let role = inner.actor_role(&cat, actor, "token.bulk_generate")?;
                    Ok((role, inner.policy.names(inner.policy.narrow(role, None)?)))
                })
                .collect::<Result<Vec<_>>>()?
        };
        let per_token = 1 + exchanges;
        // (holder, tokens left of theirs)
        let mut next = (0usize, holders.first().map_or(0, |h| h.1));
        let mut random = Vec::new();
        while next.0 < holders.len() {
            // This batch: runs of (holder, count) up to BATCH tokens.
            let mut runs: Vec<(usize, usize)> = Vec::new();
            let mut room = BATCH;
            while room > 0 && next.0 < holders.len() {
                let take = next.1.min(room);
                if take > 0 {
                    runs.push((next.0, take));
                    room -= take;
                }
                next.1 -= take;
                if next.1 == 0 {
                    next.0 += 1;
                    next.1 = holders.get(next.0).map_or(0, |h| h.1);
                }
            }
            let n: usize = runs.iter().map(|r| r.1).sum();
            if n == 0 {
                continue;
            }
            random.resize(n * per_token * token::PAYLOAD_LEN, 0);
            token::os_random(&mut random)?;
            let mut draws = random.chunks_exact(token::PAYLOAD_LEN);
            let mut draw = || {
                let b = draws.next().expect("drawn for every token of the batch");
                let mut id = [0u8; 16];
                id.copy_from_slice(&b[..16]);
                let mut secret = token::Secret([0u8; 32]);
                secret.0.copy_from_slice(&b[16..]);
                (TokenId(id), secret)
            };
            let mut cat = inner.mem.catalog_write();
            let now = inner.now();
            let mut changes = Vec::with_capacity(n * per_token + runs.len());
            let mut secrets = Vec::with_capacity(n);
            for &(h, count) in &runs {
                let actor = &holders[h].0;
                let (role, scopes) = &granted[h];
                for _ in 0..count {
                    let (id, secret) = loop {
                        let (id, secret) = draw();
                        if !inner.mem.has_refresh(&id.0) {
                            break (id, secret);
                        }
                        // A repeated id (never seen in practice): a fresh draw.
                        let (id, secret) = token::random_id_and_secret()?;
                        if !inner.mem.has_refresh(&id.0) {
                            break (id, secret);
                        }
                    };
                    changes.push(Change::IssueRefresh(RefreshRecord {
                        id: id.0,
                        org: actor.org.clone(),
                        user: actor.user.clone(),
                        role_at_issue: *role,
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
                            let (aid, asecret) = draw();
                            if !inner.mem.has_access(&aid.0) {
                                break (aid, asecret);
                            }
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
                    secrets.push((h, id, secret, access));
                }
                changes.push(inner.event(
                    &actor.org,
                    &actor.user,
                    "token.bulk_generate",
                    Some(format!("{count} tokens")),
                    "ok",
                )?);
            }
            inner.commit_apply(&mut cat, &changes)?;
            drop(cat);
            drop(changes);
            for (h, id, secret, access) in secrets {
                let tokens = access
                    .iter()
                    .map(|(aid, s)| token::encode(&inner.prefix, TokenKind::Access, aid, s))
                    .collect();
                sink(
                    h,
                    token::encode(&inner.prefix, TokenKind::Refresh, &id, &secret),
                    tokens,
                );
            }
        }
        zeroize::Zeroize::zeroize(&mut random);
        self.flush()
    }
}
