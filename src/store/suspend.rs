//! Suspension: `disable` and `enable`, a reversible stop that revocation
//! is not.

use super::*;

impl TokenStore {
    /// Suspends a refresh token: until it is enabled again, neither it
    /// nor any access token derived from it exchanges or verifies (they
    /// answer [`Error::Disabled`], after the secret matched), and lists
    /// show it as `disabled`. Its holder or the Owner of its organization
    /// may. Disabling a disabled token changes nothing and succeeds.
    /// Audited (`token.disable`); durable and in force on return. Returns
    /// the token as lists now show it.
    ///
    /// **Blocks** for one durable commit, as [`TokenStore::revoke`] (an
    /// fdatasync shared with concurrent callers: about 0.2–0.4 ms on an
    /// idle disk).
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown id or a token of another
    /// organization; [`Error::Forbidden`] if the actor is not a member, or
    /// neither the holder nor the Owner; [`Error::Revoked`] or
    /// [`Error::Expired`] for a token that is gone already (nothing to
    /// suspend); [`Error::Io`] if storage fails; on a shared store
    /// [`Error::Unavailable`] when the replica cannot catch up. Nothing
    /// changes on an error.
    ///
    /// ```
    /// use tokenvault::{Actor, Error, Role, TokenState, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// let ann = Actor::new("acme", "ann");
    /// let t = store.generate(&ann, Default::default())?;
    /// let access = store.exchange(t.token.expose())?.access_token;
    /// let info = store.disable(&ann, &t.info.id)?;
    /// assert_eq!(info.state, TokenState::Disabled);
    /// assert!(matches!(store.verify(access.expose()), Err(Error::Disabled)));
    /// assert!(matches!(store.exchange(t.token.expose()), Err(Error::Disabled)));
    /// store.enable(&ann, &t.info.id)?;
    /// assert!(store.verify(access.expose()).is_ok());
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn disable(&self, actor: &Actor, id: &TokenId) -> Result<TokenInfo> {
        self.suspend(actor, id, true)
    }

    /// Restores a token suspended by [`TokenStore::disable`]: it and its
    /// access tokens work again, unless it was revoked or expired
    /// meanwhile (then that is the answer). Its holder or the Owner may.
    /// Enabling a token that is not disabled changes nothing and succeeds.
    /// Audited (`token.enable`); durable on return. Returns the token as
    /// lists now show it.
    ///
    /// **Blocks** as [`TokenStore::disable`].
    ///
    /// # Errors
    /// As [`TokenStore::disable`]: [`Error::Revoked`] or [`Error::Expired`]
    /// when the token was revoked or expired meanwhile (it stays so).
    ///
    /// ```
    /// use tokenvault::{Actor, Role, TokenState, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// store.add_member("acme", "bob", Role::User)?;
    /// let bob = Actor::new("acme", "bob");
    /// let t = store.generate(&bob, Default::default())?;
    /// store.disable(&bob, &t.info.id)?;
    /// // The Owner may enable it too.
    /// let info = store.enable(&Actor::new("acme", "ann"), &t.info.id)?;
    /// assert_eq!(info.state, TokenState::Active);
    /// assert!(store.exchange(t.token.expose()).is_ok());
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn enable(&self, actor: &Actor, id: &TokenId) -> Result<TokenInfo> {
        self.suspend(actor, id, false)
    }

    fn suspend(&self, actor: &Actor, id: &TokenId, disable: bool) -> Result<TokenInfo> {
        let action = if disable {
            "token.disable"
        } else {
            "token.enable"
        };
        let inner = &*self.inner;
        let mut cat = inner.lock_for_write()?;
        let role = inner.actor_role(&cat, actor, action)?;
        inner.find_refresh(&mut cat, &id.0)?;
        let hot = inner.mem.refresh(&id.0);
        inner.check_holder_or_owner(actor, role, id, hot.clone(), action, Action::RevokeOther)?;
        let hot = hot.ok_or_else(|| Error::NotFound(format!("no token with id {id}")))?;
        let now = inner.now();
        let mut rec = inner.record_of(id)?;
        let usable = hot.usable(now);
        if usable == Usable::Pending {
            return Err(Error::Conflict(format!(
                "token {id} is not claimed yet: revoke it, or let its member claim it"
            )));
        }
        if !usable.is_live() {
            // Gone for good, or expired: nothing to suspend or restore.
            usable.check()?;
            return Err(Error::Revoked);
        }
        let changes = match usable {
            Usable::Disabled if disable => None,
            Usable::Yes(_) if !disable => None,
            _ => {
                rec.life.disabled = disable;
                Some(vec![
                    Change::SetDisabled {
                        id: id.0,
                        disabled: disable,
                    },
                    inner.event(&actor.org, &actor.user, action, Some(id.to_string()), "ok")?,
                ])
            }
        };
        let Some(changes) = changes else {
            // Already so, perhaps by a call whose sync failed: this answer,
            // too, says it is durable.
            drop(cat);
            inner.sync_written()?;
            return Ok(inner.info_of(rec, now));
        };
        let ticket = inner.commit_apply(&mut cat, &changes)?;
        let info = inner.info_of(rec, now);
        drop(cat);
        inner.sync(ticket)?;
        Ok(info)
    }
}
