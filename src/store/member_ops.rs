//! Membership changes made by a member of the organization rather than by
//! the host (the HTTP front's member routes): the store checks that the
//! actor is the Owner, answers a user who is not a member of the actor's
//! organization as unknown, and records the change (or the refusal) in the
//! audit trail in the actor's name. The changes themselves are those of
//! `members.rs`.

use super::*;

impl TokenStore {
    /// [`TokenStore::set_role`] on the authority of `actor`, who must be
    /// the Owner of the organization of `user`.
    pub(crate) fn set_role_as(&self, actor: &Actor, user: &str, role: Role) -> Result<()> {
        const ACTION: &str = "member.role";
        let inner = &*self.inner;
        let mut cat = inner.lock_for_write()?;
        let by = inner.actor_role(&cat, actor, ACTION)?;
        let current = cat
            .member(&actor.org, user)
            .and_then(|m| m.role())
            .ok_or_else(|| Error::NotFound("no such member".into()))?;
        if by != Role::Owner {
            return Err(inner.deny_named(
                actor,
                ACTION,
                user.into(),
                "only the Owner may change a member's role",
            ));
        }
        if role == Role::Owner && current != Role::Owner {
            return Err(Error::Conflict(
                "the Owner changes only by a transfer of ownership".into(),
            ));
        }
        if current == Role::Owner && role != Role::Owner {
            return Err(Error::Conflict(
                "the Owner's role changes only by a transfer of ownership".into(),
            ));
        }
        let changes = [
            Change::SetRole {
                org: actor.org.clone(),
                user: user.into(),
                role,
            },
            inner.event(
                &actor.org,
                &actor.user,
                ACTION,
                Some(format!("{user} to {role}")),
                "ok",
            )?,
        ];
        let ticket = inner.commit_apply(&mut cat, &changes)?;
        drop(cat);
        inner.sync(ticket)
    }

    /// [`TokenStore::remove_member`] on the authority of `actor`, who must
    /// be the Owner of the organization of `user`. Returns how many
    /// refresh tokens were revoked.
    pub(crate) fn remove_member_as(&self, actor: &Actor, user: &str) -> Result<usize> {
        const ACTION: &str = "member.remove";
        let inner = &*self.inner;
        let mut cat = inner.lock_for_write()?;
        let by = inner.actor_role(&cat, actor, ACTION)?;
        let role = cat
            .member(&actor.org, user)
            .and_then(|m| m.role())
            .ok_or_else(|| Error::NotFound("no such member".into()))?;
        if by != Role::Owner {
            return Err(inner.deny_named(
                actor,
                ACTION,
                user.into(),
                "only the Owner may remove a member",
            ));
        }
        if role == Role::Owner {
            return Err(Error::Conflict(
                "the Owner cannot be removed; transfer ownership first".into(),
            ));
        }
        let now = inner.now();
        let changes = [
            inner.revoke_many(
                &actor.org,
                Some(user),
                u64::MAX,
                now,
                &actor.user,
                "member removed",
            ),
            Change::RemoveMember {
                org: actor.org.clone(),
                user: user.into(),
            },
            inner.event(&actor.org, &actor.user, ACTION, Some(user.into()), "ok")?,
        ];
        let (ticket, done) = inner.commit_apply_counted(&mut cat, &changes)?;
        drop(cat);
        inner.sync(ticket)?;
        Ok(done.revoked.len())
    }
}
