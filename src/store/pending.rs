//! Claiming a token the Owner assigned pending: the secret goes to the
//! member it was assigned to, never to the Owner.

use super::*;

impl TokenStore {
    /// The member claims a token the Owner assigned to them pending
    /// ([`TokenStore::assign_pending`]): its secret is made now and shown
    /// in the answer, once; the token is then active, with the expiry it
    /// was assigned with. Only that member may claim it, once. Audited
    /// (`token.claim`); durable on return.
    ///
    /// **Blocks** for one durable commit, as [`TokenStore::generate`] (an
    /// fdatasync: about 0.2–0.4 ms on an idle disk).
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown id or a token of another
    /// organization; [`Error::Forbidden`] if the actor is not a member or
    /// not the member it was assigned to (the Owner included);
    /// [`Error::Conflict`] for a token claimed already (or never pending);
    /// [`Error::Revoked`] if it was revoked meanwhile, [`Error::Expired`]
    /// if its claim window passed; [`Error::Io`] if storage fails. Nothing
    /// changes on an error.
    ///
    /// ```
    /// use tokenvault::{Actor, Error, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// store.add_member("acme", "bob", Role::User)?;
    /// let (ann, bob) = (Actor::new("acme", "ann"), Actor::new("acme", "bob"));
    /// let info = store.assign_pending(&ann, "bob", Default::default())?;
    /// assert!(matches!(store.claim(&ann, &info.id), Err(Error::Forbidden(_))));
    /// let t = store.claim(&bob, &info.id)?;
    /// assert_eq!(t.info.user, "bob");
    /// assert!(matches!(store.claim(&bob, &info.id), Err(Error::Conflict(_))));
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn claim(&self, actor: &Actor, id: &TokenId) -> Result<IssuedToken> {
        let inner = &*self.inner;
        let action = "token.claim";
        let (_, secret) = token::random_id_and_secret()?;
        let check = verifier(&inner.refresh_key, &secret.0);
        let mut cat = inner.lock_for_write()?;
        inner.actor_role(&cat, actor, action)?;
        inner.find_refresh(&mut cat, &id.0)?;
        let unknown = || Error::NotFound(format!("no token with id {id}"));
        let hot = inner.mem.refresh(&id.0).ok_or_else(unknown)?;
        if *hot.member().org_id() != *actor.org {
            return Err(unknown());
        }
        if *hot.member().user() != *actor.user {
            return Err(inner.deny_named(
                actor,
                action,
                id.to_string(),
                "only the member a token was assigned to may claim it",
            ));
        }
        let now = inner.now();
        let usable = hot.usable(now);
        if usable.is_revoked() || usable == Usable::Expired {
            usable.check()?;
        }
        if !hot.is_pending() {
            return Err(Error::Conflict(format!(
                "token {id} is not waiting to be claimed (claimed already, or never pending)"
            )));
        }
        let mut rec = inner.record_of(id)?;
        rec.verifier = check;
        rec.life.pending_until = 0;
        let changes = vec![
            Change::Claim(rec.clone()),
            inner.event(&actor.org, &actor.user, action, Some(id.to_string()), "ok")?,
        ];
        let ticket = inner.commit_apply(&mut cat, &changes)?;
        let info = inner.info_of(rec, now);
        drop(cat);
        inner.sync(ticket)?;
        Ok(IssuedToken {
            token: token::encode(&inner.prefix, TokenKind::Refresh, id, &secret),
            info,
        })
    }
}
