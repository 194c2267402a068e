//! An organization's token policy: the longest a token may live, and how
//! long it may stay unused.

use super::*;
use crate::codec::OrgPolicyRecord;

impl TokenStore {
    /// The token policy of the actor's organization (Owner only).
    ///
    /// Does not block: it reads memory (on a shared store, after catching
    /// up with the change log, which may take a database round trip).
    ///
    /// # Errors
    /// [`Error::Forbidden`] unless the actor is the Owner; on a shared store
    /// [`Error::Unavailable`] when the replica cannot catch up.
    ///
    /// ```
    /// use tokenvault::{Actor, OrgPolicy, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// assert_eq!(store.org_policy(&Actor::new("acme", "ann"))?, OrgPolicy::default());
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn org_policy(&self, actor: &Actor) -> Result<OrgPolicy> {
        let inner = &*self.inner;
        inner.recover()?;
        let cat = inner.lock_catalog_for_read()?;
        let member = inner.owner_of(&cat, actor, "org.policy")?;
        Ok(public(member.org().policy()))
    }

    /// Replaces the token policy of the actor's organization (Owner only;
    /// audited as `org.policy`; durable on return). It applies at once:
    /// tokens issued or rotated from now on expire within `max_lifetime`
    /// (those without an explicit expiry get it; asking for more is
    /// refused), and every token of the organization, older ones included,
    /// stops working (as expired) once past `max_lifetime` since its
    /// creation or `unused_expiry` since its last exchange. Loosening the
    /// policy brings such tokens back, unless they were purged. With
    /// `rotate_on_use`, OAuth refreshes ([`TokenStore::oauth_refresh`])
    /// rotate the refresh token from now on; turning it off stops that
    /// (tokens spent already stay spent). Returns the policy now in force.
    ///
    /// **Blocks** for one durable commit, as [`TokenStore::revoke`] (an
    /// fdatasync: about 0.2–0.4 ms on an idle disk).
    ///
    /// # Errors
    /// [`Error::Forbidden`] unless the actor is the Owner;
    /// [`Error::InvalidArgument`] (kind `usage`) for a zero duration;
    /// [`Error::Io`] if storage fails. Nothing changes on an error.
    ///
    /// ```
    /// use tokenvault::{Actor, Error, GenerateOptions, OrgPolicy, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// let ann = Actor::new("acme", "ann");
    /// let day = 86_400;
    /// store.set_org_policy(&ann, OrgPolicy::default().max_lifetime(Some(30 * day)))?;
    /// // Without an explicit expiry, a new token gets the maximum.
    /// let t = store.generate(&ann, Default::default())?;
    /// assert_eq!(t.info.expires_at, Some(t.info.created_at + 30 * day));
    /// // Asking for more is refused.
    /// let e = store.generate(&ann, GenerateOptions::default().expires_in(31 * day));
    /// assert!(matches!(e, Err(Error::InvalidArgument(_))));
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn set_org_policy(&self, actor: &Actor, policy: OrgPolicy) -> Result<OrgPolicy> {
        if policy.max_lifetime == Some(0) || policy.unused_expiry == Some(0) {
            return Err(Error::InvalidArgument(
                "max_lifetime and unused_expiry must be positive (or none)".into(),
            ));
        }
        let inner = &*self.inner;
        let mut cat = inner.lock_for_write()?;
        inner.owner_of(&cat, actor, "org.policy")?;
        let rec = OrgPolicyRecord {
            max_lifetime: policy.max_lifetime,
            unused_expiry: policy.unused_expiry,
            rotate_on_use: policy.rotate_on_use,
        };
        let secs = |v: Option<u64>| v.map_or_else(|| "none".to_string(), |s| s.to_string());
        let target = format!(
            "max_lifetime={} unused_expiry={} rotate_on_use={}",
            secs(rec.max_lifetime),
            secs(rec.unused_expiry),
            rec.rotate_on_use
        );
        let changes = vec![
            Change::SetOrgPolicy {
                org: actor.org.clone(),
                policy: rec,
            },
            inner.event(&actor.org, &actor.user, "org.policy", Some(target), "ok")?,
        ];
        let ticket = inner.commit_apply(&mut cat, &changes)?;
        drop(cat);
        inner.sync(ticket)?;
        Ok(public(rec))
    }
}

fn public(r: OrgPolicyRecord) -> OrgPolicy {
    OrgPolicy {
        max_lifetime: r.max_lifetime,
        unused_expiry: r.unused_expiry,
        rotate_on_use: r.rotate_on_use,
    }
}

impl Inner {
    /// The actor's member entry if they are their organization's Owner;
    /// otherwise the refusal, audited.
    fn owner_of<'c>(
        &self,
        cat: &'c Catalog,
        actor: &Actor,
        action: &str,
    ) -> Result<&'c crate::memory::MemberArc> {
        let role = self.actor_role(cat, actor, action)?;
        if !may(role, Action::RevokeOther) {
            return Err(self.deny(
                actor,
                action,
                None,
                "only the Owner may read or set the organization's token policy",
            ));
        }
        cat.member(&actor.org, &actor.user)
            .ok_or_else(|| Error::Forbidden("the actor is not a member".into()))
    }

    /// The expiry a token issued (or rotated) at `now` gets under its
    /// organization's maximum lifetime: `asked` (an absolute time, or
    /// `None` for none) if within it, the maximum if none was asked; a
    /// rotation (`cap`) is cut to the maximum instead of refused.
    pub(super) fn expiry_within(
        &self,
        member: &crate::memory::MemberHot,
        now: u64,
        asked: Option<u64>,
        cap: bool,
    ) -> Result<Option<u64>> {
        let Some(max) = member.org().policy().max_lifetime else {
            return Ok(asked);
        };
        let limit = now.saturating_add(max);
        match asked {
            None => Ok(Some(limit)),
            Some(at) if at <= limit => Ok(Some(at)),
            Some(_) if cap => Ok(Some(limit)),
            Some(_) => Err(Error::InvalidArgument(format!(
                "the organization allows tokens to live at most {max} seconds"
            ))),
        }
    }
}
