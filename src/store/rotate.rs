//! Rotation with overlap: a new token with the old one's settings, and the
//! old one dying after a grace period.

use std::time::Duration;

use super::*;

/// The grace period of a rotation, in whole seconds: how long the old
/// token (and its access tokens) keep working beside the new one. Never
/// past the old token's own expiry.
///
/// Made from a [`Duration`], from plain seconds (`u64`), or from an
/// `Option<Duration>` where `None` is the default ([`Grace::DEFAULT`], 24
/// hours). At most [`Grace::MAX`] (7 days); 0 ends the old token at once.
///
/// ```
/// use std::time::Duration;
/// use tokenvault::Grace;
/// assert_eq!(Grace::from(Duration::from_secs(90)).secs(), 90);
/// assert_eq!(Grace::from(None).secs(), 24 * 3600);
/// assert_eq!(Grace::from(0).secs(), 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grace(u64);

impl Grace {
    /// 24 hours, when none is given.
    pub const DEFAULT: Grace = Grace(24 * 3600);
    /// 7 days, the longest a rotation may leave the old token working.
    pub const MAX: Grace = Grace(7 * 24 * 3600);

    /// The grace period in seconds. Does not block.
    pub fn secs(self) -> u64 {
        self.0
    }
}

impl Default for Grace {
    fn default() -> Self {
        Grace::DEFAULT
    }
}

impl From<Duration> for Grace {
    /// Whole seconds (a fraction is dropped).
    fn from(d: Duration) -> Self {
        Grace(d.as_secs())
    }
}

impl From<u64> for Grace {
    /// Plain seconds.
    fn from(secs: u64) -> Self {
        Grace(secs)
    }
}

impl From<Option<Duration>> for Grace {
    /// `None`: the default, 24 hours.
    fn from(d: Option<Duration>) -> Self {
        d.map_or(Grace::DEFAULT, Grace::from)
    }
}

/// What [`TokenStore::rotate`] made: the new token (its secret shown
/// once), the token it replaces, and when that one dies.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Rotated {
    /// The new token: the secret, shown this once, and what lists show.
    pub issued: IssuedToken,
    /// The token it replaces.
    pub replaces: TokenId,
    /// When the replaced token and its access tokens stop working (Unix
    /// seconds): the end of the grace period, or its own expiry if sooner.
    pub old_expires_at: u64,
}

impl TokenStore {
    /// Rotates a refresh token: a new token for the same member, with the
    /// old one's scopes (within the member's current role), label and
    /// expiry; the old token and its access tokens keep working for
    /// `grace` (see [`Grace`]: a [`Duration`], seconds, or `None` for 24
    /// hours; at most 7 days; 0 ends it at once), never past their own
    /// expiry, then answer [`Error::Expired`]. Its holder or the Owner of
    /// its organization may (as for [`TokenStore::revoke`]); the new token
    /// is created by the actor. Audited (`token.rotate`, the target naming
    /// both tokens); durable on return.
    ///
    /// **Blocks** for one durable commit, as [`TokenStore::generate`] (an
    /// fdatasync shared with concurrent callers: about 0.2–0.4 ms on an
    /// idle disk).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (kind `usage`) for a grace period over 7
    /// days; [`Error::NotFound`] for an unknown id or a token of another
    /// organization; [`Error::Forbidden`] if the actor is not a member, or
    /// neither the holder nor the Owner; [`Error::Conflict`] for a token
    /// rotated already; [`Error::Revoked`], [`Error::Expired`] or
    /// [`Error::Disabled`] for a token that cannot be used now;
    /// [`Error::Io`] if storage fails; on a shared store
    /// [`Error::Unavailable`] when the replica cannot catch up. Nothing
    /// changes on an error (except after `Io`, as for
    /// [`TokenStore::revoke`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokenvault::{Actor, Error, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// let ann = Actor::new("acme", "ann");
    /// let old = store.generate(&ann, Default::default())?;
    /// let r = store.rotate(&ann, &old.info.id, Duration::from_secs(3600))?;
    /// assert_eq!(r.replaces, old.info.id);
    /// // Both work during the grace period.
    /// assert!(store.exchange(old.token.expose()).is_ok());
    /// assert!(store.exchange(r.issued.token.expose()).is_ok());
    /// // A token is rotated once.
    /// assert!(matches!(store.rotate(&ann, &old.info.id, None), Err(Error::Conflict(_))));
    /// // With no grace, the old token dies at once.
    /// let now = store.rotate(&ann, &r.issued.info.id, 0)?;
    /// assert!(matches!(store.exchange(r.issued.token.expose()), Err(Error::Expired)));
    /// assert!(store.exchange(now.issued.token.expose()).is_ok());
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn rotate(&self, actor: &Actor, id: &TokenId, grace: impl Into<Grace>) -> Result<Rotated> {
        let grace = grace.into();
        if grace.0 > Grace::MAX.0 {
            return Err(Error::InvalidArgument(format!(
                "the grace period may be at most {} seconds (7 days)",
                Grace::MAX.0
            )));
        }
        let inner = &*self.inner;
        let action = "token.rotate";
        let (new_id, secret) = loop {
            let (id, secret) = token::random_id_and_secret()?;
            if !inner.mem.has_refresh(&id.0) {
                break (id, secret);
            }
        };
        let check = verifier(&inner.refresh_key, &secret.0);
        let mut cat = inner.lock_for_write()?;
        let role = inner.actor_role(&cat, actor, action)?;
        inner.find_refresh(&mut cat, &id.0)?;
        let hot = inner.mem.refresh(&id.0);
        inner.check_holder_or_owner(actor, role, id, hot.clone(), action, Action::RevokeOther)?;
        let hot = hot.ok_or_else(|| Error::NotFound(format!("no token with id {id}")))?;
        let now = inner.now();
        let usable = hot.usable(now);
        if usable.is_revoked() {
            usable.check()?;
        }
        if hot.is_pending() && !usable.is_revoked() && usable != Usable::Expired {
            return Err(Error::Conflict(format!(
                "token {id} is not claimed yet: nothing to rotate"
            )));
        }
        if hot.is_rotated() {
            return Err(Error::Conflict(format!(
                "token {id} was rotated already: rotate its successor"
            )));
        }
        let holder_role = usable.check()?;
        let old = inner.record_of(id)?;
        let scopes = inner
            .policy
            .set_of(&old.scopes)
            .and(inner.policy.mask(holder_role));
        let holder = cat
            .member(&old.org, &old.user)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("no token with id {id}")))?;
        let expires_at = inner.expiry_within(&holder, now, old.expires_at, true)?;
        let dies_at = now
            .saturating_add(grace.0)
            .min(old.expires_at.unwrap_or(u64::MAX));
        let new = RefreshRecord {
            id: new_id.0,
            org: old.org.clone(),
            user: old.user.clone(),
            role_at_issue: holder_role,
            scopes: inner.policy.names(scopes),
            label: old.label.clone(),
            created_at: now,
            created_by: actor.user.clone(),
            expires_at,
            state: StoredState::Active,
            verifier: check,
            issue: None,
            life: Default::default(),
        };
        let changes = vec![
            Change::Rotate {
                old: id.0,
                dies_at,
                new: new.clone(),
            },
            inner.event(
                &actor.org,
                &actor.user,
                action,
                Some(format!("{id} to {new_id} for {}", old.user)),
                "ok",
            )?,
        ];
        let ticket = inner.commit_apply(&mut cat, &changes)?;
        let info = inner.info_of(new, now);
        drop(cat);
        inner.sync(ticket)?;
        Ok(Rotated {
            issued: IssuedToken {
                token: token::encode(&inner.prefix, TokenKind::Refresh, &new_id, &secret),
                info,
            },
            replaces: *id,
            old_expires_at: dies_at,
        })
    }
}
