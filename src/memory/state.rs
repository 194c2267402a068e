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
    /// token's; for a rotated token, the end of its grace period).
    Expired,
    /// Suspended (`disable`): usable again once enabled, unless revoked or
    /// expired meanwhile.
    Disabled,
    /// Assigned pending and not claimed yet: it has no secret, so nobody
    /// can present it.
    Pending,
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
            Usable::Disabled => Err(Error::Disabled),
            // Unreachable through a secret (there is none yet): answered as
            // an unknown token.
            Usable::Pending => Err(Error::InvalidToken),
        }
    }

    /// Usable now or once enabled again: what counts against a member's
    /// cap of live tokens, and what the purge keeps.
    #[inline]
    pub(crate) fn is_live(self) -> bool {
        matches!(self, Usable::Yes(_) | Usable::Disabled | Usable::Pending)
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
    /// revocation first, then its member's removal, a cutoff, expiry (its
    /// own; a rotated token's grace period ends as one; so do the limits of
    /// its organization's policy: its maximum lifetime, and a time unused),
    /// and suspension.
    #[inline]
    pub(crate) fn usable(&self, now: u64) -> Usable {
        if self.is_revoked() {
            return Usable::Revoked;
        }
        let Some(role) = self.member.role() else {
            return Usable::Removed;
        };
        if u64::from(self.created_at) < self.member.cutoff() {
            return Usable::CutOff;
        }
        if self.ends_at() <= now {
            return Usable::Expired;
        }
        if self.is_pending() {
            return Usable::Pending;
        }
        if self.is_disabled() {
            return Usable::Disabled;
        }
        Usable::Yes(role)
    }

    /// Whether a revocation of this token itself would still change it
    /// (one that is cut off or whose member left can still be revoked:
    /// that is written down).
    #[inline]
    pub(crate) fn revocable(&self) -> bool {
        !self.is_revoked()
    }
}

impl AccessHot {
    /// Whether the access token is usable at `now`, and if not, why: its
    /// own revocation, then its refresh token's state
    /// ([`RefreshHot::usable`]), then its own expiry (which is said before
    /// its refresh token's suspension).
    #[inline]
    pub(crate) fn usable(&self, now: u64) -> Usable {
        if self.is_revoked() {
            return Usable::Revoked;
        }
        match self.refresh.usable(now) {
            Usable::Yes(_) | Usable::Disabled if self.expires_at() <= now => Usable::Expired,
            other => other,
        }
    }

    /// Whether a revocation of this access token would still change it.
    #[inline]
    pub(crate) fn revocable(&self) -> bool {
        !self.is_revoked()
    }

    /// Asks the processor to start loading what verification reads of the
    /// refresh entry (its first [`RefreshHot::HOT_BYTES`] bytes: one cache
    /// line for ten slots in sixteen, two for the other six), without
    /// waiting for it: verification calls this as soon as it has found
    /// the access entry, then hashes the presented secret while the entry,
    /// likely a miss in a large store, comes from main memory. Changes
    /// nothing (a hint); elsewhere than x86-64, nothing.
    #[inline(always)]
    pub(crate) fn prefetch_refresh(&self) {
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let p = super::RefreshArc::as_ptr(&self.refresh).cast::<i8>();
            // SAFETY: a prefetch is a hint that never faults, reads no
            // value and writes nothing; `p` and the last of the hot bytes
            // point into a live slot (the reference is held by `self`).
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(p);
                _mm_prefetch::<_MM_HINT_T0>(p.add(RefreshHot::HOT_BYTES - 1));
            }
        }
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
            life: Default::default(),
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
            scopes: None,
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

    /// A memory holding `records`, and its catalog.
    fn loaded(records: Vec<Stored>) -> (Memory, Catalog) {
        let mem = Memory::new(Arc::new(Policy::default()));
        let mut cat = Catalog::default();
        mem.load(&mut cat, records);
        (mem, cat)
    }

    /// An access entry's revocation and its checksum memo share one word:
    /// neither undoes the other, in either order, and a wrong checksum is
    /// still refused once the right one is known.
    #[test]
    fn revocation_and_checksum_memo_keep_each_other() {
        use crate::token::{self, TokenKind};
        let (mem, _) = loaded(vec![
            member("ann", Role::Admin, 0),
            Stored::Refresh(refresh(1, "ann", 100, None)),
            Stored::Access(access(11, 1, 2_000)),
            Stored::Access(access(12, 1, 2_000)),
        ]);
        assert!(std::mem::size_of::<AccessHot>() <= 72);
        let (kind, prefix) = (TokenKind::Access, "tv");
        let text = |id: u8| token::encode_raw(prefix, kind, [id; 16], [7; 32]);
        let good = |id: u8| token::parse_unchecked(prefix, kind, &text(id)).unwrap();
        let bad = |id: u8| {
            // The same token with its last checksum digit changed.
            let mut t = text(id).into_bytes();
            let last = t.last_mut().unwrap();
            *last = if *last == b'0' { b'1' } else { b'0' };
            token::parse_unchecked(prefix, kind, std::str::from_utf8(&t).unwrap()).unwrap()
        };
        let with = |id: u8, f: &dyn Fn(&AccessHot)| mem.access.with(&[id; 16], |a| f(a.unwrap()));
        // Memo first, then the revocation.
        with(11, &|a| {
            assert!(a.checksum_ok(&good(11), prefix, kind));
            assert_eq!(a.usable(1_500), Usable::Yes(Role::Admin));
            a.mark_revoked();
            assert_eq!(a.usable(1_500), Usable::Revoked);
            assert!(!a.revocable());
            assert!(a.checksum_ok(&good(11), prefix, kind));
            assert!(!a.checksum_ok(&bad(11), prefix, kind));
            assert_eq!(a.usable(1_500), Usable::Revoked);
        });
        // The revocation first, then the memo.
        with(12, &|a| {
            a.mark_revoked();
            assert!(!a.checksum_ok(&bad(12), prefix, kind));
            assert!(a.checksum_ok(&good(12), prefix, kind));
            assert!(!a.checksum_ok(&bad(12), prefix, kind));
            assert_eq!(a.usable(1_500), Usable::Revoked);
        });
    }

    /// Each reason, and the order in which they are said: a revoked token
    /// says revoked also when expired; an access token of a cut-off family
    /// says revoked also when it expired itself.
    #[test]
    fn each_reason_and_its_error() {
        let (mem, _) = loaded(vec![
            member("ann", Role::Admin, 0),
            member("cat", Role::User, 500),
            Stored::Refresh(refresh(1, "ann", 100, None)),
            Stored::Refresh(refresh(2, "ann", 100, Some(1_000))),
            Stored::Refresh(refresh(3, "cat", 100, None)),
            // Held by someone who is not a member.
            Stored::Refresh(refresh(4, "gone", 100, None)),
            Stored::Access(access(11, 1, 2_000)),
            Stored::Access(access(13, 3, 200)),
        ]);
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
        r(2).mark_revoked();
        assert_eq!(r(2).usable(5_000), Usable::Revoked);
        assert!(!r(2).revocable());
        mem.access.with(&[11; 16], |a| a.unwrap().mark_revoked());
        assert_eq!(a(11), Usable::Revoked);

        assert_eq!(Usable::Yes(Role::User).check().unwrap(), Role::User);
        for gone in [Usable::Revoked, Usable::CutOff, Usable::Removed] {
            assert!(gone.is_revoked() && !gone.is_live());
            assert!(matches!(gone.check(), Err(Error::Revoked)));
        }
        assert!(!Usable::Expired.is_revoked() && !Usable::Expired.is_live());
        assert!(matches!(Usable::Expired.check(), Err(Error::Expired)));
        assert!(Usable::Disabled.is_live() && !Usable::Disabled.is_revoked());
        assert!(matches!(Usable::Disabled.check(), Err(Error::Disabled)));
    }

    /// Times past what an entry holds are held as its latest second, so
    /// that what it decides comes sooner, never later: an expiry ends the
    /// token then (never stays never), a policy's maximum lifetime counts
    /// from a creation held earlier, and a cutoff set later than it cuts
    /// the token off. Below it, every time is held whole.
    #[test]
    fn times_past_what_an_entry_holds_only_bring_its_end_sooner() {
        use crate::codec::OrgPolicyRecord;
        use crate::memory::entries::HELD_TIME_MAX;
        let far = HELD_TIME_MAX + 1_000;
        let (mem, mut cat) = loaded(vec![
            member("ann", Role::Admin, 0),
            Stored::Refresh(refresh(1, "ann", 100, Some(far))),
            Stored::Refresh(refresh(2, "ann", far, None)),
            Stored::Refresh(refresh(
                3,
                "ann",
                HELD_TIME_MAX - 5,
                Some(HELD_TIME_MAX - 1),
            )),
        ]);
        let r = |id: u8| mem.refresh.get(&[id; 16]).expect("loaded");
        assert_eq!(r(1).expires_at(), HELD_TIME_MAX);
        assert_eq!(r(1).usable(HELD_TIME_MAX - 1), Usable::Yes(Role::Admin));
        assert_eq!(r(1).usable(far - 1), Usable::Expired, "ends sooner");
        assert_eq!(r(2).expires_at(), u64::MAX, "never stays never");
        assert_eq!(r(2).usable(u64::MAX - 1), Usable::Yes(Role::Admin));
        assert_eq!(r(3).expires_at(), HELD_TIME_MAX - 1, "held whole");
        assert_eq!(r(3).usable(HELD_TIME_MAX - 2), Usable::Yes(Role::Admin));
        assert_eq!(r(3).usable(HELD_TIME_MAX - 1), Usable::Expired);
        // A rotation never lengthens a life.
        r(3).mark_rotated(u64::MAX);
        assert_eq!(r(3).expires_at(), HELD_TIME_MAX - 1);
        // An exchange past the cap is held at it.
        r(2).note_use(far + 7);
        assert_eq!(r(2).last_refresh(), Some(HELD_TIME_MAX));
        // A maximum lifetime of 10 s: token 2, made at `far`, is held as
        // made at the cap, so it ends 10 s after the cap, sooner than it
        // would.
        cat.org_mut("acme").hot.set_policy(&OrgPolicyRecord {
            max_lifetime: Some(10),
            unused_expiry: None,
            rotate_on_use: false,
        });
        assert_eq!(r(2).ends_at(), HELD_TIME_MAX + 10);
        assert_eq!(r(2).usable(far), Usable::Expired);
        // A cutoff just past the cap cuts off token 2, made later (at
        // `far`), as if it were made at the cap.
        cat.org_mut("acme")
            .hot
            .set_policy(&OrgPolicyRecord::default());
        cat.org_mut("acme").hot.raise_cutoff(HELD_TIME_MAX + 1);
        assert_eq!(r(2).usable(far + 2), Usable::CutOff);
    }

    /// A refresh record revoked at `at`.
    fn revoked(id: u8, at: u64) -> RefreshRecord {
        RefreshRecord {
            state: StoredState::Revoked {
                at,
                by: "ann".into(),
                reason: None,
            },
            ..refresh(id, "ann", 100, None)
        }
    }

    /// A refresh token's revocation time is kept beside its entry by id:
    /// the first revocation's, loaded with it, as reloaded after a fault,
    /// and gone with the token.
    #[test]
    fn a_revocation_time_is_kept_by_id_until_the_token_goes() {
        use crate::change::{Change, Committed};
        let (mem, mut cat) = loaded(vec![
            member("ann", Role::Admin, 0),
            Stored::Refresh(refresh(1, "ann", 100, None)),
            Stored::Refresh(revoked(2, 300)),
        ]);
        assert_eq!(
            (mem.revoked_at(&[1; 16]), mem.revoked_at(&[2; 16])),
            (0, 300)
        );
        assert!(mem.refresh.get(&[2; 16]).unwrap().is_revoked());
        let revoke = |at| Change::RevokeRefresh {
            id: [1; 16],
            at,
            by: "ann".into(),
            reason: None,
        };
        mem.apply(&mut cat, &[revoke(700)], &Committed::default());
        assert_eq!(mem.revoked_at(&[1; 16]), 700);
        mem.apply(&mut cat, &[revoke(900)], &Committed::default());
        assert_eq!(mem.revoked_at(&[1; 16]), 700, "the first revocation's");
        // Memory reloaded (after a storage fault): token 1's time as
        // reloaded, token 2's gone with its revocation (not on disk).
        let reloaded = Memory::new(Arc::new(Policy::default()));
        reloaded.load(
            &mut reloaded.catalog_write(),
            vec![
                member("ann", Role::Admin, 0),
                Stored::Refresh(revoked(1, 650)),
                Stored::Refresh(refresh(2, "ann", 100, None)),
            ],
        );
        mem.replace_with(&mut cat, reloaded);
        assert_eq!(
            (mem.revoked_at(&[1; 16]), mem.revoked_at(&[2; 16])),
            (650, 0)
        );
        mem.apply(
            &mut cat,
            &[Change::DeleteRefresh {
                id: [1; 16],
                org: "acme".into(),
                user: "ann".into(),
            }],
            &Committed::default(),
        );
        assert_eq!((mem.revoked_at(&[1; 16]), mem.refresh_count()), (0, 1));
    }

    /// The scopes an access token was narrowed to are kept by its id while
    /// its entry lives: put in with it (loaded or exchanged), taken out
    /// with it, and swapped with memory reloaded after a fault; a token not
    /// narrowed has none kept and may grant every scope (before its
    /// refresh token's and its holder's role cut them).
    #[test]
    fn narrowed_scopes_live_as_long_as_their_entry() {
        use crate::change::Change;
        use crate::memory::entries::ALL_SCOPES;
        let read = Policy::default().set_of(&["read".to_string()]);
        assert_ne!(read, ALL_SCOPES);
        let narrowed = |id: u8| AccessRecord {
            scopes: Some(vec!["read".into()]),
            ..access(id, 1, 2_000)
        };
        let (mem, mut cat) = loaded(vec![
            member("ann", Role::Admin, 0),
            Stored::Refresh(refresh(1, "ann", 100, None)),
            Stored::Access(narrowed(11)),
            Stored::Access(access(12, 1, 2_000)),
        ]);
        let scopes = |mem: &Memory, id: u8| {
            mem.access
                .with(&[id; 16], |a| a.map(|a| mem.access_scopes_of(&[id; 16], a)))
        };
        assert_eq!(
            (scopes(&mem, 11), scopes(&mem, 12)),
            (Some(read), Some(ALL_SCOPES))
        );
        assert_eq!(mem.narrowed.len(), 1);
        let parent = mem.refresh(&[1; 16]).unwrap();
        let family = |changes: &[Change]| {
            mem.apply_family(&parent, &mut parent.lock_family(), changes);
        };
        family(&[Change::PutAccess(narrowed(13))]);
        assert_eq!((scopes(&mem, 13), mem.narrowed.len()), (Some(read), 2));
        family(&[Change::DeleteAccess {
            refresh_id: [1; 16],
            id: [11; 16],
        }]);
        assert_eq!((scopes(&mem, 11), mem.narrowed.len()), (None, 1));
        assert!(mem.narrowed.get(&[11; 16]).is_none());
        // Reloaded: 12 narrowed now (as its record says), 13 gone.
        let reloaded = Memory::new(Arc::new(Policy::default()));
        reloaded.load(
            &mut reloaded.catalog_write(),
            vec![
                member("ann", Role::Admin, 0),
                Stored::Refresh(refresh(1, "ann", 100, None)),
                Stored::Access(narrowed(12)),
            ],
        );
        mem.replace_with(&mut cat, reloaded);
        assert_eq!((scopes(&mem, 12), scopes(&mem, 13)), (Some(read), None));
        assert_eq!(mem.narrowed.len(), 1);
        assert!(mem.narrowed.get(&[13; 16]).is_none());
    }
}
