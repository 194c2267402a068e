//! Rotation on use with reuse detection (RFC 9700 §4.14): under its
//! organization's `rotate_on_use`, an OAuth client's refresh returns a new
//! refresh token and spends the one presented; a spent token presented
//! again after the leeway revokes its whole rotation family.

use super::*;
use crate::codec::Lifecycle;
use crate::token::SecretToken;
use crate::ClientInfo;

/// The longest [`Config::rotation_leeway`] honoured, in seconds (5
/// minutes): enough for a client to retry a lost answer, short enough that
/// a stolen spent token is not a second credential.
pub(super) const MAX_ROTATION_LEEWAY: u64 = 300;

/// The audit action of a rotation on use.
const ACTION_ROTATE: &str = "token.rotate_on_use";
/// The audit action of the revocation of a family on reuse.
const ACTION_REUSE: &str = "token.reuse_detected";
/// The reason a reused token's family is revoked with.
const REUSE_REASON: &str = "reuse detected";
/// Who revokes a family on reuse (no member asked for it).
const REUSE_BY: &str = "tokenvault";

/// What [`TokenStore::oauth_refresh`] answers: the access token, and the
/// new refresh token when the refresh rotated it (RFC 6749 §6).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OAuthGrant {
    /// The access token. When the refresh rotated, it belongs to the new
    /// refresh token (`access.refresh_id` is the new one's id, and
    /// `access.refresh_token` its secret).
    pub access: AccessGrant,
    /// The new refresh token, shown this once, when the holder's
    /// organization rotates on use; the token presented is then spent.
    /// `None` when the refresh did not rotate.
    pub refresh_token: Option<SecretToken>,
}

/// What a refresh does with the token presented, decided under the
/// catalog's write lock.
enum Plan {
    /// A plain exchange of the token presented.
    Plain,
    /// Rotated: the successor's token text.
    Rotated(SecretToken),
}

impl TokenStore {
    /// The refresh of an OAuth client (`POST /oauth/token` with
    /// `grant_type=refresh_token`, RFC 6749 §6): an access token for
    /// `refresh_token`, narrowed to `scopes` when any are given (as
    /// [`TokenStore::exchange_with_scopes`]; an empty list is a plain
    /// [`TokenStore::exchange`]).
    ///
    /// When the holder's organization has `rotate_on_use` on (see
    /// [`TokenStore::set_org_policy`]), the refresh also rotates: a new
    /// refresh token (returned in [`OAuthGrant::refresh_token`], its secret
    /// shown this once) copies the old one's holder, scopes (within the
    /// holder's current role), label, expiry and creator, and joins its
    /// rotation family; the access token is the new one's; the presented
    /// token is spent: it and its access tokens die after
    /// [`Config::rotation_leeway`] (default 0: at once). Within the leeway
    /// the spent token may be presented again (a client that lost the
    /// answer retries): each such retry rotates again, to another
    /// successor in the same family, and the leeway is not extended.
    /// After it, presenting the spent token (here or to
    /// [`TokenStore::exchange`]) is a reuse: every token of its family (the
    /// original and every successor, with their access tokens) is revoked
    /// with the reason "reuse detected", audited as `token.reuse_detected`,
    /// durable, and the call answers [`Error::Revoked`]. A rotation is
    /// audited as `token.rotate_on_use` and durable before the call
    /// returns. A token rotated by [`TokenStore::rotate`] (in its grace
    /// period) is not rotated again on use: its refresh is a plain
    /// exchange. Without the policy this is exactly
    /// [`TokenStore::exchange`] (or `exchange_with_scopes`), with no new
    /// refresh token.
    ///
    /// **Blocks**: without rotation as [`TokenStore::exchange`]; with it,
    /// for one durable commit (an fdatasync shared with concurrent callers,
    /// about 0.2–0.4 ms on an idle disk; on PostgreSQL a transaction) and
    /// then the exchange's write.
    ///
    /// # Errors
    /// As [`TokenStore::exchange_with_scopes`] (an unknown or malformed
    /// token, [`Error::Revoked`], [`Error::Expired`],
    /// [`Error::Disabled`], [`Error::InsufficientScope`] for a scope the
    /// token does not grant: then nothing is spent); [`Error::Revoked`]
    /// for a reuse (its family is then revoked);
    /// [`Error::InvalidArgument`] for more than 64 scopes; [`Error::Io`]
    /// if storage fails; on a shared store [`Error::Unavailable`] when the
    /// replica cannot catch up. If the rotation was committed and the
    /// exchange that follows fails, the successor exists but was not
    /// shown: the spent token may be retried within the leeway.
    ///
    /// ```
    /// use tokenvault::{Actor, Error, OrgPolicy, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// let ann = Actor::new("acme", "ann");
    /// store.set_org_policy(&ann, OrgPolicy::default().rotate_on_use(true))?;
    /// let first = store.generate(&ann, Default::default())?;
    /// let g = store.oauth_refresh(first.token.expose(), &[] as &[&str])?;
    /// let second = g.refresh_token.expect("rotated");
    /// assert!(store.verify(g.access.access_token.expose()).is_ok());
    /// // The next refresh uses the new token.
    /// let g2 = store.oauth_refresh(second.expose(), &["read"])?;
    /// let third = g2.refresh_token.expect("rotated");
    /// // Presenting a spent token again revokes the whole family.
    /// assert!(matches!(
    ///     store.oauth_refresh(first.token.expose(), &[] as &[&str]),
    ///     Err(Error::Revoked)
    /// ));
    /// assert!(matches!(store.exchange(third.expose()), Err(Error::Revoked)));
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn oauth_refresh<S: AsRef<str>>(
        &self,
        refresh_token: &str,
        scopes: &[S],
    ) -> Result<OAuthGrant> {
        self.oauth_refresh_with(refresh_token, scopes, None)
    }

    /// [`TokenStore::oauth_refresh`] for a host that names the client (the
    /// HTTP front passes the peer address and the `User-Agent`): its
    /// exchange records `client` as the token's last use (the new token's,
    /// when the refresh rotated), as [`TokenStore::exchange_from`] does.
    ///
    /// **Blocks** as [`TokenStore::oauth_refresh`].
    ///
    /// # Errors
    /// As [`TokenStore::oauth_refresh`].
    ///
    /// ```
    /// use tokenvault::{Actor, ClientInfo, OrgPolicy, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// let ann = Actor::new("acme", "ann");
    /// store.set_org_policy(&ann, OrgPolicy::default().rotate_on_use(true))?;
    /// let t = store.generate(&ann, Default::default())?;
    /// let app = ClientInfo::new(None, Some("ann-app/3.0"));
    /// let g = store.oauth_refresh_from(t.token.expose(), &[] as &[&str], &app)?;
    /// let new = store.get(&ann, &g.access.refresh_id)?;
    /// assert_eq!(new.last_used_agent.as_deref(), Some("ann-app/3.0"));
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn oauth_refresh_from<S: AsRef<str>>(
        &self,
        refresh_token: &str,
        scopes: &[S],
        client: &ClientInfo,
    ) -> Result<OAuthGrant> {
        self.oauth_refresh_with(refresh_token, scopes, Some(client))
    }

    fn oauth_refresh_with<S: AsRef<str>>(
        &self,
        refresh_token: &str,
        scopes: &[S],
        client: Option<&ClientInfo>,
    ) -> Result<OAuthGrant> {
        if scopes.len() > 64 {
            return Err(Error::InvalidArgument(
                "an access token is narrowed to at most 64 scopes".into(),
            ));
        }
        let inner = &*self.inner;
        let parsed = token::parse(&inner.prefix, TokenKind::Refresh, refresh_token)?;
        let fresh = inner.read_refresh(&parsed.id.0)?;
        let v = verifier(&inner.refresh_key, &parsed.secret.0);
        let hot = fresh
            .refresh(&parsed.id.0)
            .filter(|r| r.verifier_matches(&v))
            .ok_or(Error::InvalidToken)?;
        // Only a token its organization rotates, or one spent already,
        // takes the write path; every other refresh is an exchange.
        let plan = if hot.is_spent() || rotates(&hot) {
            self.rotate_on_use(&parsed.id, scopes)?
        } else {
            Plan::Plain
        };
        let (presented, new) = match &plan {
            Plan::Plain => (refresh_token, None),
            Plan::Rotated(t) => (t.expose(), Some(t.clone())),
        };
        let access = match (client, scopes.is_empty()) {
            (Some(c), true) => self.exchange_from::<&str>(presented, None, c)?,
            (Some(c), false) => self.exchange_from(presented, Some(scopes), c)?,
            (None, true) => self.exchange(presented)?,
            (None, false) => self.exchange_with_scopes(presented, scopes)?,
        };
        Ok(OAuthGrant {
            access,
            refresh_token: new,
        })
    }

    /// Spends the token `id` (whose secret the caller checked) and makes
    /// its successor; or, for a spent token past its leeway, revokes its
    /// family; or, if the policy no longer rotates it, says so.
    fn rotate_on_use<S: AsRef<str>>(&self, id: &TokenId, scopes: &[S]) -> Result<Plan> {
        let inner = &*self.inner;
        let (new_id, secret) = loop {
            let (id, secret) = token::random_id_and_secret()?;
            if !inner.mem.has_refresh(&id.0) {
                break (id, secret);
            }
        };
        let check = verifier(&inner.refresh_key, &secret.0);
        let mut cat = inner.lock_for_write()?;
        inner.find_refresh(&mut cat, &id.0)?;
        // Purged meanwhile: as good as unknown.
        let hot = inner.mem.refresh(&id.0).ok_or(Error::InvalidToken)?;
        let now = inner.now();
        let usable = hot.usable(now);
        if hot.is_spent() && usable == Usable::Expired {
            let ticket = inner.revoke_family(&mut cat, id, now)?;
            drop(cat);
            inner.sync(ticket)?;
            return Err(Error::Revoked);
        }
        let role = usable.check()?;
        if !hot.is_spent() && !rotates(&hot) {
            // The policy changed since the caller looked.
            return Ok(Plan::Plain);
        }
        // Checked before anything is spent: a refusal changes nothing.
        let grants = hot.scopes().and(inner.policy.mask(role));
        for s in scopes {
            let s = s.as_ref();
            if !inner.policy.bit(s).is_some_and(|b| grants.contains(b)) {
                return Err(Error::InsufficientScope(s.chars().take(64).collect()));
            }
        }
        let old = inner.record_of(id)?;
        let holder = cat
            .member(&old.org, &old.user)
            .cloned()
            .ok_or(Error::Revoked)?;
        let expires_at = inner.expiry_within(&holder, now, old.expires_at, true)?;
        let dies_at = now
            .saturating_add(inner.rotation_leeway)
            .min(old.expires_at.unwrap_or(u64::MAX));
        let new = RefreshRecord {
            id: new_id.0,
            org: old.org.clone(),
            user: old.user.clone(),
            role_at_issue: role,
            scopes: inner.policy.names(grants),
            label: old.label.clone(),
            created_at: now,
            created_by: old.created_by.clone(),
            expires_at,
            state: StoredState::Active,
            verifier: check,
            issue: None,
            life: Lifecycle {
                family: Some(old.family_root()),
                ..Lifecycle::default()
            },
        };
        let target = format!("{id} to {new_id} for {}", old.user);
        let changes = vec![
            Change::RotateOnUse {
                old: id.0,
                dies_at,
                new,
            },
            inner.event(&old.org, &old.user, ACTION_ROTATE, Some(target), "ok")?,
        ];
        let ticket = inner.commit_apply(&mut cat, &changes)?;
        drop(cat);
        inner.sync(ticket)?;
        Ok(Plan::Rotated(token::encode(
            &inner.prefix,
            TokenKind::Refresh,
            &new_id,
            &secret,
        )))
    }
}

/// Whether the refresh of this token rotates it: its organization rotates
/// on use, and it was not rotated by `rotate` already.
fn rotates(hot: &RefreshHot) -> bool {
    hot.member().org().policy().rotate_on_use && !hot.is_rotated()
}

impl Inner {
    /// For a path that found the token `hot` (its secret checked) not
    /// usable with `e`: if it is a spent token past its leeway, that is a
    /// reuse, and its family is revoked (durable on return) and the answer
    /// is [`Error::Revoked`]; otherwise `e`.
    pub(super) fn refused(&self, hot: &RefreshHot, e: Error) -> Error {
        if !matches!(e, Error::Expired) || !hot.is_spent() {
            return e;
        }
        let id = TokenId(hot.id());
        let run = || -> Result<Error> {
            let mut cat = self.lock_for_write()?;
            self.find_refresh(&mut cat, &id.0)?;
            let Some(hot) = self.mem.refresh(&id.0) else {
                return Ok(Error::InvalidToken);
            };
            let now = self.now();
            match hot.usable(now) {
                Usable::Expired => {}
                // Revoked meanwhile (its family already, most likely).
                other => return Ok(other.check().err().unwrap_or(e)),
            }
            let ticket = self.revoke_family(&mut cat, &id, now)?;
            drop(cat);
            self.sync(ticket)?;
            Ok(Error::Revoked)
        };
        run().unwrap_or_else(|fault| fault)
    }

    /// Revokes the rotation family of the spent token `id` (reuse
    /// detected), audited; returns the ticket to sync. The caller holds
    /// the catalog exclusively.
    fn revoke_family(&self, cat: &mut Catalog, id: &TokenId, now: u64) -> Result<u64> {
        let rec = self.record_of(id)?;
        let family = rec.family_root();
        let changes = vec![
            Change::RevokeFamily {
                org: rec.org.clone(),
                user: rec.user.clone(),
                family,
                at: now,
                by: REUSE_BY.into(),
                reason: Some(REUSE_REASON.into()),
            },
            self.event(
                &rec.org,
                &rec.user,
                ACTION_REUSE,
                Some(format!(
                    "{id} presented after it was spent: family {} of {} revoked",
                    TokenId(family),
                    rec.user
                )),
                "ok",
            )?,
        ];
        self.commit_apply(cat, &changes)
    }
}
