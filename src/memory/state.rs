//! A token's state: the one rule that says whether a refresh or access
//! token is usable now, and if not, why. Every path that honours a token
//! (verify, authorize, exchange, verify_refresh, the lists, introspection,
//! the cap on live tokens, the purge) asks it, and [`Usable::check`] is the
//! one place that turns a reason into an [`Error`]. A state added to the
//! lifecycle (disabled, pending, rotated with a grace period, spent on use)
//! is a variant here, a branch of [`RefreshHot::usable`] and an arm of
//! [`Usable::check`].
//!
//! Whether a *revocation* still changes a token is the other half:
//! [`RefreshHot::revocable`] here, and, for the stored records that the
//! backends revoke inside their transactions, `StoredState::revocable` in
//! the codec.

use std::sync::atomic::Ordering;

use super::entries::{AccessHot, RefreshHot};
use crate::error::{Error, Result};
use crate::policy::Role;

/// Whether a token is usable now and, if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Usable {
    /// Usable, on behalf of a member whose current role is this.
    Yes(Role),
    /// Revoked itself (for an access token: it or its refresh token).
    Revoked,
    /// Created before a cutoff of its member or organization.
    CutOff,
    /// Its member is no longer in the organization.
    Removed,
    /// Past its expiry (for an access token: its own or its refresh
    /// token's).
    Expired,
}

impl Usable {
    /// The holder's role when usable; otherwise the error a caller gets,
    /// said only after the token's secret matched.
    #[inline]
    pub(crate) fn check(self) -> Result<Role> {
        match self {
            Usable::Yes(role) => Ok(role),
            Usable::Revoked | Usable::CutOff | Usable::Removed => Err(Error::Revoked),
            Usable::Expired => Err(Error::Expired),
        }
    }

    #[inline]
    pub(crate) fn is_usable(self) -> bool {
        matches!(self, Usable::Yes(_))
    }

    /// Gone for good, as against expired (the purge keeps each for its
    /// own time).
    #[inline]
    pub(crate) fn is_revoked(self) -> bool {
        matches!(self, Usable::Revoked | Usable::CutOff | Usable::Removed)
    }
}

impl RefreshHot {
    /// Whether the refresh token is usable at `now`, and if not, why: a
    /// revocation first, then its member's removal, a cutoff, and expiry.
    #[inline]
    pub(crate) fn usable(&self, now: u64) -> Usable {
        if self.revoked.load(Ordering::Acquire) {
            return Usable::Revoked;
        }
        let Some(role) = self.member.role() else {
            return Usable::Removed;
        };
        if self.created_at < self.member.cutoff() {
            return Usable::CutOff;
        }
        if self.expires_at <= now {
            return Usable::Expired;
        }
        Usable::Yes(role)
    }

    /// Whether a revocation of this token itself would still change it
    /// (one that is cut off or whose member left can still be revoked:
    /// that is written down).
    #[inline]
    pub(crate) fn revocable(&self) -> bool {
        !self.revoked.load(Ordering::Acquire)
    }
}

impl AccessHot {
    /// Whether the access token is usable at `now`, and if not, why: its
    /// own revocation, then its refresh token's state
    /// ([`RefreshHot::usable`]), then its own expiry.
    #[inline]
    pub(crate) fn usable(&self, now: u64) -> Usable {
        if self.revoked.load(Ordering::Acquire) {
            return Usable::Revoked;
        }
        match self.refresh.usable(now) {
            Usable::Yes(_) if self.expires_at <= now => Usable::Expired,
            other => other,
        }
    }

    /// Whether a revocation of this access token would still change it.
    #[inline]
    pub(crate) fn revocable(&self) -> bool {
        !self.revoked.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{AccessRecord, MemberRecord, RefreshRecord, StoredState};
    use crate::memory::{Catalog, Memory, Stored};
    use crate::policy::Policy;
    use std::sync::Arc;

    fn refresh(id: u8, user: &str, created_at: u64, expires_at: Option<u64>) -> RefreshRecord {
        RefreshRecord {
            id: [id; 16],
            org: "acme".into(),
            user: user.into(),
            role_at_issue: Role::User,
            scopes: vec!["read".into()],
            label: None,
            created_at,
            created_by: user.into(),
            expires_at,
            state: StoredState::Active,
            verifier: [id; 32],
            issue: None,
        }
    }

    fn access(id: u8, parent: u8, expires_at: u64) -> AccessRecord {
        AccessRecord {
            id: [id; 16],
            refresh_id: [parent; 16],
            issued_at: 100,
            expires_at,
            revoked: false,
            verifier: [id; 32],
        }
    }

    fn member(user: &str, role: Role, not_before: u64) -> Stored {
        Stored::Member(MemberRecord {
            org: "acme".into(),
            user: user.into(),
            role,
            not_before,
        })
    }

    /// Each reason, and the order in which they are said: a revoked token
    /// says revoked also when expired; an access token of a cut-off family
    /// says revoked also when it expired itself.
    #[test]
    fn each_reason_and_its_error() {
        let mem = Memory::new(Arc::new(Policy::default()));
        let mut cat = Catalog::default();
        mem.load(
            &mut cat,
            vec![
                member("ann", Role::Admin, 0),
                member("cat", Role::User, 500),
                Stored::Refresh(refresh(1, "ann", 100, None)),
                Stored::Refresh(refresh(2, "ann", 100, Some(1_000))),
                Stored::Refresh(refresh(3, "cat", 100, None)),
                // Held by someone who is not a member.
                Stored::Refresh(refresh(4, "gone", 100, None)),
                Stored::Access(access(11, 1, 2_000)),
                Stored::Access(access(13, 3, 200)),
            ],
        );
        let r = |id: u8| mem.refresh.get(&[id; 16]).expect("loaded");
        let a = |id: u8| {
            mem.access
                .with(&[id; 16], |a| a.expect("loaded").usable(1_500))
        };
        assert_eq!(r(1).usable(1_500), Usable::Yes(Role::Admin));
        assert_eq!(r(2).usable(999), Usable::Yes(Role::Admin));
        assert_eq!(r(2).usable(1_000), Usable::Expired);
        assert_eq!(r(3).usable(0), Usable::CutOff);
        assert_eq!(r(4).usable(0), Usable::Removed);
        assert_eq!(a(11), Usable::Yes(Role::Admin));
        assert_eq!(a(13), Usable::CutOff);
        assert!(mem.access.with(&[11; 16], |a| a.unwrap().usable(2_000)) == Usable::Expired);

        // A revocation comes first, before expiry.
        r(2).mark_revoked(1_200);
        assert_eq!(r(2).usable(5_000), Usable::Revoked);
        assert!(!r(2).revocable());
        mem.access.with(&[11; 16], |a| a.unwrap().mark_revoked());
        assert_eq!(a(11), Usable::Revoked);

        assert_eq!(Usable::Yes(Role::User).check().unwrap(), Role::User);
        for gone in [Usable::Revoked, Usable::CutOff, Usable::Removed] {
            assert!(gone.is_revoked() && !gone.is_usable());
            assert!(matches!(gone.check(), Err(Error::Revoked)));
        }
        assert!(!Usable::Expired.is_revoked());
        assert!(matches!(Usable::Expired.check(), Err(Error::Expired)));
    }
}
