//! Exchange and verification. Each reads memory through the read gate
//! (`read.rs`).

use std::borrow::Cow;

use super::read::Reach;
use super::*;

impl TokenStore {
    /// Trades a refresh token for a short-lived access token
    /// (`GET /oauth/access-token`) and records the time as `last_refresh`.
    /// Lazily durable unless [`Config::durable_exchange`] is set.
    ///
    /// **Blocks** for one sled insert, lazily durable: about 15 µs median (perf
    /// report, `exchange_ns`); with [`Config::durable_exchange`], for an
    /// fdatasync as [`TokenStore::generate`].
    ///
    /// # Errors
    /// [`Error::Malformed`] for a string that is not a refresh token;
    /// [`Error::InvalidToken`] for an unknown id or a wrong secret;
    /// [`Error::Revoked`] / [`Error::Expired`] (said only after the secret
    /// matched); [`Error::Unavailable`] on a shared (PostgreSQL) store whose
    /// replica is stale, or whose read of a token it does not hold met a
    /// database error (it fails closed, see [`TokenStore::verify`]);
    /// [`Error::Io`] if writing the access token fails, or when the store
    /// reopened its storage after a fault while the call ran (try again);
    /// [`Error::Limit`] when the replica's budget of reads for tokens it does
    /// not hold is spent.
    ///
    /// Blocks: a write to storage (sled, microseconds, plus a sync when
    /// exchanges are durable; PostgreSQL, one transaction, about a
    /// millisecond on a local server), and on a shared store one more
    /// database round trip for a refresh token this replica does not hold.
    ///
    /// ```
    /// use tokenvault::{Actor, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// let t = store.generate(&Actor::new("acme", "ann"), Default::default())?;
    /// let grant = store.exchange(t.token.expose())?;
    /// assert_eq!(grant.token_type, "Bearer");
    /// assert!(grant.expires_at > grant.issued_at);
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn exchange(&self, refresh_token: &str) -> Result<AccessGrant> {
        crate::observe::exchange(self.exchange_unobserved::<&str>(refresh_token, None, None))
    }

    /// [`TokenStore::exchange`] (or, with `scopes`,
    /// [`TokenStore::exchange_with_scopes`]) on behalf of a client the host
    /// describes: its address and user agent are recorded as the token's
    /// last use, shown by lists and `get` ([`TokenInfo::last_used_ip`],
    /// [`TokenInfo::last_used_agent`]) beside `last_refresh`. The HTTP front
    /// passes the peer's address and `User-Agent`.
    ///
    /// The client is kept with the token's last exchange: it is written in
    /// the same batch as the access record (no write and no sync of its
    /// own), and only when it differs from the one recorded before. An
    /// agent that carries what looks like a token is dropped (never a
    /// secret in a record). A plain [`TokenStore::exchange`] records no
    /// client, so the one shown is always that of the last exchange.
    ///
    /// **Blocks** as [`TokenStore::exchange`]: one write to storage, lazily
    /// durable (about 15 µs median on sled; a transaction on PostgreSQL).
    ///
    /// # Errors
    /// As [`TokenStore::exchange`], and with `scopes` as
    /// [`TokenStore::exchange_with_scopes`] (an empty list or more than 64
    /// names is [`Error::InvalidArgument`]). On an error nothing is
    /// recorded.
    ///
    /// ```
    /// use tokenvault::{Actor, ClientInfo, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// let ann = Actor::new("acme", "ann");
    /// let t = store.generate(&ann, Default::default())?;
    /// let client = ClientInfo::new(Some("203.0.113.7".parse().unwrap()), Some("deploy-bot/1.2"));
    /// store.exchange_from::<&str>(t.token.expose(), None, &client)?;
    /// let info = &store.list_own(&ann)?[0];
    /// assert_eq!(info.last_used_ip, client.ip());
    /// assert_eq!(info.last_used_agent.as_deref(), Some("deploy-bot/1.2"));
    /// assert!(info.last_refresh.is_some());
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn exchange_from<S: AsRef<str>>(
        &self,
        refresh_token: &str,
        scopes: Option<&[S]>,
        client: &ClientInfo,
    ) -> Result<AccessGrant> {
        if let Some(scopes) = scopes {
            check_scope_count(scopes.len())?;
        }
        crate::observe::exchange(self.exchange_unobserved(refresh_token, scopes, Some(client)))
    }

    /// [`TokenStore::exchange`], with an access token narrowed to `scopes`
    /// (RFC 6749 §3.3 and §6: the `scope` of a refresh at
    /// `POST /oauth/token`): it grants at most those, however its holder's
    /// role changes later, and still never more than its refresh token's
    /// scopes cut to the holder's current role. Every name must be among the
    /// scopes the refresh token grants now (its scopes within the holder's
    /// current role); repeats count once. The narrowing is stored with the
    /// access record (both backends) and answered by [`TokenStore::verify`],
    /// [`TokenStore::authorize`] and introspection.
    ///
    /// **Blocks** as [`TokenStore::exchange`]: one write to storage, lazily
    /// durable (microseconds on sled; a transaction on PostgreSQL).
    ///
    /// # Errors
    /// As [`TokenStore::exchange`]; and, once the refresh token checked out,
    /// [`Error::InsufficientScope`] naming the first scope it does not grant
    /// (nothing is written), or [`Error::InvalidArgument`] for an empty
    /// list or more than 64 names.
    ///
    /// ```
    /// use tokenvault::{Actor, Error, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "bob", Role::User)?;
    /// let t = store.generate(&Actor::new("acme", "bob"), Default::default())?;
    /// let grant = store.exchange_with_scopes(t.token.expose(), &["read"])?;
    /// let who = store.verify(grant.access_token.expose())?;
    /// assert!(who.scopes.contains("read"));
    /// assert!(!who.scopes.contains("incident-write"));
    /// assert!(matches!(
    ///     store.exchange_with_scopes(t.token.expose(), &["user-write"]),
    ///     Err(Error::InsufficientScope(_))
    /// ));
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn exchange_with_scopes<S: AsRef<str>>(
        &self,
        refresh_token: &str,
        scopes: &[S],
    ) -> Result<AccessGrant> {
        check_scope_count(scopes.len())?;
        crate::observe::exchange(self.exchange_unobserved(refresh_token, Some(scopes), None))
    }

    fn exchange_unobserved<S: AsRef<str>>(
        &self,
        refresh_token: &str,
        scopes: Option<&[S]>,
        client: Option<&ClientInfo>,
    ) -> Result<AccessGrant> {
        let inner = &*self.inner;
        // What may be kept of the client: not an agent that carries one of
        // this store's tokens. Borrowed (no allocation) unless cut.
        let client: Option<Cow<'_, ClientInfo>> = client
            .map(|c| match c.agent_carries_token(&inner.prefix) {
                true => Cow::Owned(c.without_agent()),
                false => Cow::Borrowed(c),
            })
            .filter(|c| !c.is_empty());
        let parsed = token::parse(&inner.prefix, TokenKind::Refresh, refresh_token)?;
        let fresh = inner.read_refresh(&parsed.id.0)?;
        let generation = inner.generation();
        let v = verifier(&inner.refresh_key, &parsed.secret.0);
        let parent = fresh
            .refresh(&parsed.id.0)
            .filter(|r| r.verifier_matches(&v))
            .ok_or(Error::InvalidToken)?;
        let now = inner.now();
        // A spent token presented past its leeway is a reuse (see
        // `rotate_on_use.rs`): its family is revoked.
        let role = parent
            .usable(now)
            .check()
            .map_err(|e| inner.refused(&parent, e))?;
        let scopes = match scopes {
            None => None,
            Some(asked) => {
                let grants = parent.scopes().and(inner.policy.mask(role));
                let mut names: Vec<String> = Vec::with_capacity(asked.len());
                for s in asked {
                    let s = s.as_ref();
                    match inner.policy.bit(s) {
                        Some(b) if grants.contains(b) => names.push(s.to_string()),
                        _ => {
                            let shown: String = s.chars().take(64).collect();
                            return Err(Error::InsufficientScope(shown));
                        }
                    }
                }
                names.sort();
                names.dedup();
                Some(names)
            }
        };
        let (mut aid, asecret) = token::random_id_and_secret()?;
        let expires_at = now
            .saturating_add(inner.access_ttl)
            .min(parent.expires_at());
        let access_verifier = verifier(&inner.access_key, &asecret.0);
        let ticket = {
            let mut book = parent.lock_family();
            // The id takes its place in the order of issue under the
            // family's lock, so that a family's records are written in
            // that order (see `token::stamp_issue_order`).
            loop {
                token::stamp_issue_order(&mut aid);
                if !inner.mem.has_access(&aid.0) {
                    break;
                }
                aid = token::random_id_and_secret()?.0;
            }
            let rec = AccessRecord {
                id: aid.0,
                refresh_id: parent.id(),
                issued_at: now,
                expires_at,
                revoked: false,
                verifier: access_verifier,
                scopes,
            };
            // Checked again under the family's lock: a purge holds the lock
            // of every family it touches until memory agrees with disk, so
            // no access record is written for a family being deleted (an
            // orphan), nor for one revoked or expired meanwhile.
            if !inner.mem.has_refresh(&parent.id()) {
                return Err(Error::InvalidToken);
            }
            parent.usable(inner.now()).check()?;
            // Past the cap, the oldest is evicted in the same atomic batch
            // (more than one only if the cap was lowered since they were
            // made).
            let mut changes = Vec::with_capacity(2);
            if let Some(excess) = (book.live_count() + 1).checked_sub(inner.cap) {
                for id in inner.family_live(&parent, excess)? {
                    changes.push(Change::DeleteAccess {
                        refresh_id: parent.id(),
                        id,
                    });
                }
            }
            changes.push(Change::PutAccess(rec));
            // The client of this exchange, in the same batch, only when it
            // is not the one recorded already.
            if !inner.mem.client_is(&parent.id(), client.as_deref()) {
                changes.push(Change::PutLastRefresh {
                    id: parent.id(),
                    at: now,
                    client: client.map(Cow::into_owned),
                });
            }
            let _gate = inner.gate(generation)?;
            let ticket = inner.commit(&changes)?;
            inner.mem.apply_family(&parent, &mut book, &changes);
            ticket
        };
        if inner.durable_exchange {
            inner.sync(ticket)?;
        } else {
            inner.lazy(ticket)?;
        }
        Ok(AccessGrant {
            access_token: token::encode(&inner.prefix, TokenKind::Access, &aid, &asecret),
            expires_at,
            issued_at: now,
            refresh_token: token::SecretToken::from_str_unchecked(refresh_token),
            token_type: "Bearer",
            access_id: aid,
            refresh_id: TokenId(parent.id()),
        })
    }

    /// Checks an access token (`Authorization: Bearer …`) and says whom it
    /// speaks for.
    ///
    /// On an embedded store it reads memory only and never blocks: no disk,
    /// no global lock, no allocation. On a store shared through PostgreSQL
    /// (feature `postgres`), a replica that has not synchronised within its
    /// staleness bound fails closed rather than answer from stale memory,
    /// and a token this replica does not hold yet (minted on another
    /// replica) is read from the database once: that call blocks for one
    /// database round trip. From async code, use [`TokenStore::try_verify`]
    /// first and run this one off the async workers only on its miss (the
    /// HTTP front's layer and extractor do).
    ///
    /// Does not block on an embedded store: memory only, about 0.3 µs (perf
    /// report, `verify_hot_ns`; about 1 µs for a first touch after an open).
    ///
    /// # Errors
    /// [`Error::Malformed`], [`Error::InvalidToken`], [`Error::Revoked`] (the
    /// token, its refresh token, or its holder's membership is gone),
    /// [`Error::Expired`]; on a shared store also [`Error::Unavailable`] (the
    /// replica is stale, or the database could not be read: try again
    /// later) and [`Error::Limit`] (too many reads of tokens this replica
    /// does not hold: try again).
    ///
    /// ```
    /// use tokenvault::{Actor, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "bob", Role::User)?;
    /// let t = store.generate(&Actor::new("acme", "bob"), Default::default())?;
    /// let grant = store.exchange(t.token.expose())?;
    /// let who = store.verify(grant.access_token.expose())?;
    /// assert_eq!(&*who.user, "bob");
    /// assert!(who.scopes.contains("incident-write"));
    /// assert!(!who.scopes.contains("user-write"));
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn verify(&self, access_token: &str) -> Result<Principal> {
        match self.verify_reaching(access_token, Reach::Database)? {
            Some(p) => Ok(p),
            // Unreachable: a read that may reach the database always gets
            // its view. Answered as an unknown token all the same.
            None => Err(Error::InvalidToken),
        }
    }

    /// [`TokenStore::verify`] from memory alone, for a caller that must not
    /// block (an async worker): `Ok(None)` when the answer needs a database
    /// read, which only a store shared through PostgreSQL ever does (a token
    /// this replica does not hold yet; then call [`TokenStore::verify`] where
    /// blocking is fine, e.g. in `tokio::task::spawn_blocking`). On an
    /// embedded store it is exactly [`TokenStore::verify`] and never `None`.
    /// Never blocks: no disk, no database, no lock beyond a shard's read
    /// lock (two for an access token narrowed at exchange).
    ///
    /// # Errors
    /// As [`TokenStore::verify`], except that it never reads the database:
    /// a stale replica is [`Error::Unavailable`] here too.
    ///
    /// ```
    /// use tokenvault::{Actor, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "bob", Role::User)?;
    /// let t = store.generate(&Actor::new("acme", "bob"), Default::default())?;
    /// let access = store.exchange(t.token.expose())?.access_token;
    /// let who = match store.try_verify(access.expose())? {
    ///     Some(p) => p,
    ///     // Only on a shared store: this replica must read the token first.
    ///     None => store.verify(access.expose())?,
    /// };
    /// assert_eq!(&*who.user, "bob");
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn try_verify(&self, access_token: &str) -> Result<Option<Principal>> {
        self.verify_reaching(access_token, Reach::Memory)
    }

    #[inline(always)]
    fn verify_reaching(&self, access_token: &str, reach: Reach) -> Result<Option<Principal>> {
        crate::observe::verification(self.verify_unobserved(access_token, reach))
    }

    #[inline(always)]
    fn verify_unobserved(&self, access_token: &str, reach: Reach) -> Result<Option<Principal>> {
        let inner = &*self.inner;
        let kind = TokenKind::Access;
        let u = token::parse_unchecked(&inner.prefix, kind, access_token)?;
        let Some(fresh) =
            inner.read_access(&u.parsed.id.0, || u.checksum_ok(&inner.prefix, kind), reach)?
        else {
            return Ok(None);
        };
        let now = inner.now();
        let checksum_mismatch = || Error::Malformed("checksum mismatch");
        fresh.access_with(&u.parsed.id.0, |a| {
            // The refresh entry, likely a second miss in a large store,
            // loads while the secret is hashed (found or not, the hash is
            // computed: an unknown id costs what a wrong secret costs).
            if let Some(a) = a {
                a.prefetch_refresh();
            }
            let v = verifier(&inner.access_key, &u.parsed.secret.0);
            // The verify rule (see `token::Unchecked`): checksum first.
            let a = match a {
                Some(a) if a.verifier_matches(&v) => a,
                _ if !u.checksum_ok(&inner.prefix, kind) => return Err(checksum_mismatch()),
                _ => return Err(Error::InvalidToken),
            };
            if !a.checksum_ok(&u, &inner.prefix, kind) {
                return Err(checksum_mismatch());
            }
            let r = a.refresh();
            let role = a.usable(now).check()?;
            let (org, user) = r.member().names();
            Ok(Some(Principal {
                org,
                user,
                role,
                scopes: Scopes {
                    set: r
                        .scopes()
                        .and(fresh.access_scopes_of(&u.parsed.id.0, a))
                        .and(inner.policy.mask(role)),
                    names: inner.scope_names,
                },
                refresh_id: TokenId(r.id()),
                access_id: u.parsed.id,
                issued_at: a.issued_at(),
                expires_at: a.expires_at(),
            }))
        })
    }

    /// Checks a refresh token without exchanging it, and says which token it
    /// is: for a front that must know a presented refresh token's holder
    /// (RFC 7662 introspection, RFC 7009 revocation, a rate limit keyed by
    /// token). Records nothing and issues nothing.
    ///
    /// **Blocks** for one record read from sled: 2 µs at 100,000 tokens, 17 µs
    /// at a million (perf report, `floor_ns`).
    ///
    /// # Errors
    /// As [`TokenStore::exchange`]: [`Error::Malformed`],
    /// [`Error::InvalidToken`] for an unknown id or a wrong secret, then
    /// [`Error::Revoked`] (the token, a cutoff, or the holder's membership)
    /// or [`Error::Expired`]; [`Error::Io`] or [`Error::Corrupt`] if its
    /// record cannot be read; on a shared store [`Error::Unavailable`]
    /// instead of `Io` (a stale replica, or a database error: it fails
    /// closed, never answering from stale memory) and [`Error::Limit`] as
    /// for [`TokenStore::verify`].
    ///
    /// Blocks for one read of the token's record (sled: microseconds;
    /// PostgreSQL: a round trip, and one more for a token this replica does
    /// not hold).
    ///
    /// ```
    /// use tokenvault::{Actor, Error, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// let ann = Actor::new("acme", "ann");
    /// let t = store.generate(&ann, Default::default())?;
    /// let info = store.verify_refresh(t.token.expose())?;
    /// assert_eq!((info.id, info.user.as_str()), (t.info.id, "ann"));
    /// store.revoke(&ann, &t.info.id, None)?;
    /// assert!(matches!(store.verify_refresh(t.token.expose()), Err(Error::Revoked)));
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn verify_refresh(&self, refresh_token: &str) -> Result<TokenInfo> {
        let inner = &*self.inner;
        let parsed = token::parse(&inner.prefix, TokenKind::Refresh, refresh_token)?;
        let fresh = inner.read_refresh(&parsed.id.0)?;
        let v = verifier(&inner.refresh_key, &parsed.secret.0);
        let hot = fresh
            .refresh(&parsed.id.0)
            .filter(|r| r.verifier_matches(&v))
            .ok_or(Error::InvalidToken)?;
        let now = inner.now();
        hot.usable(now).check()?;
        // Purged between the two reads: as good as unknown.
        let rec = fresh
            .refresh_record(&hot.id())?
            .ok_or(Error::InvalidToken)?;
        Ok(inner.info_of(rec, now))
    }

    /// [`TokenStore::verify`], then requires `scope` among the effective
    /// scopes.
    ///
    /// Does not block on an embedded store, as [`TokenStore::verify`].
    ///
    /// # Errors
    /// As [`TokenStore::verify`], and [`Error::InsufficientScope`] when the
    /// scope is not granted.
    ///
    /// ```
    /// use tokenvault::{Actor, Error, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "bob", Role::User)?;
    /// let t = store.generate(&Actor::new("acme", "bob"), Default::default())?;
    /// let access = store.exchange(t.token.expose())?.access_token;
    /// assert!(store.authorize(access.expose(), "read").is_ok());
    /// assert!(matches!(
    ///     store.authorize(access.expose(), "user-write"),
    ///     Err(Error::InsufficientScope(_))
    /// ));
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn authorize(&self, access_token: &str, scope: &str) -> Result<Principal> {
        let p = self.verify(access_token)?;
        if p.scopes.contains(scope) {
            Ok(p)
        } else {
            Err(Error::InsufficientScope(scope.into()))
        }
    }
}

/// An access token is narrowed to between 1 and 64 scopes.
fn check_scope_count(n: usize) -> Result<()> {
    if n == 0 || n > 64 {
        return Err(Error::InvalidArgument(
            "an access token is narrowed to between 1 and 64 scopes".into(),
        ));
    }
    Ok(())
}
