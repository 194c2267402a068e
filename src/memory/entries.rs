//! The entries of memory: organizations, members, refresh and access tokens.

use std::cell::RefCell;
use std::collections::HashSet;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use super::live::Live;
use super::maps::IdHasher;
use crate::codec::AccessRecord;
use crate::policy::{Role, ScopeSet};
use crate::token::{TokenKind, Unchecked};

/// Marks a member that is no longer in the organization.
pub(crate) const ROLE_REMOVED: u8 = u8::MAX;

pub(crate) struct OrgHot {
    pub(super) id: Arc<str>,
    pub(super) not_before: AtomicU64,
}

impl OrgHot {
    pub(super) fn new(id: &str) -> OrgHot {
        OrgHot {
            id: Arc::from(id),
            not_before: AtomicU64::new(0),
        }
    }
    /// Raises the organization's cutoff to `at` (the latest wins).
    pub(super) fn raise_cutoff(&self, at: u64) {
        self.not_before.fetch_max(at, Ordering::AcqRel);
    }
}

pub(crate) struct MemberHot {
    pub(super) org: Arc<OrgHot>,
    pub(super) user: Arc<str>,
    pub(super) role: AtomicU8,
    pub(super) not_before: AtomicU64,
    /// The refresh tokens stored for this organization and user id (what
    /// the cap on a member's live tokens counts). Shared by every `MemberHot` of the same ids (a member removed and
    /// added again is a new one; their tokens are listed together).
    pub(super) held: Arc<Mutex<TokenIds>>,
    /// Unique for the life of the process: the key of the names cache.
    uid: u64,
}

/// Refresh token ids.
pub(crate) type TokenIds = HashSet<[u8; 16], BuildHasherDefault<IdHasher>>;

/// A member's token list, locked (see [`MemberHot::lock_held`]): read
/// outside memory, extended only by [`super::Memory::put_issued`].
pub(crate) struct HeldTokens<'a>(MutexGuard<'a, TokenIds>);

impl HeldTokens<'_> {
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
    pub(crate) fn ids(&self) -> impl Iterator<Item = &[u8; 16]> {
        self.0.iter()
    }
    pub(super) fn insert(&mut self, id: [u8; 16]) {
        self.0.insert(id);
    }
}

static NEXT_MEMBER_UID: AtomicU64 = AtomicU64::new(1);

const NAME_CACHE: usize = 256;

type CachedNames = Option<(u64, Arc<str>, Arc<str>)>;

thread_local! {
    /// Per thread, copies of recently verified members' names (direct
    /// mapped by member uid).
    static NAMES: RefCell<Vec<CachedNames>> = RefCell::new(vec![None; NAME_CACHE]);
}

impl MemberHot {
    pub(super) fn new(org: Arc<OrgHot>, user: &str, role: u8, not_before: u64) -> MemberHot {
        Self::sharing(org, user, role, not_before, Arc::default())
    }

    /// A member whose tokens are listed with `held` (those of an earlier
    /// member of the same ids).
    pub(super) fn sharing(
        org: Arc<OrgHot>,
        user: &str,
        role: u8,
        not_before: u64,
        held: Arc<Mutex<TokenIds>>,
    ) -> MemberHot {
        MemberHot {
            org,
            user: Arc::from(user),
            role: AtomicU8::new(role),
            not_before: AtomicU64::new(not_before),
            held,
            uid: NEXT_MEMBER_UID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The organization and user ids for a [`crate::Principal`]: clones of
    /// copies the calling thread owns (a small cache per thread), so that
    /// threads verifying the same member's tokens at once do not bounce one
    /// reference count between their cores.
    pub(crate) fn names(&self) -> (Arc<str>, Arc<str>) {
        NAMES
            .try_with(|cache| {
                let mut cache = cache.borrow_mut();
                let entry = &mut cache[(self.uid % NAME_CACHE as u64) as usize];
                match entry {
                    Some((uid, org, user)) if *uid == self.uid => (org.clone(), user.clone()),
                    _ => {
                        let org: Arc<str> = Arc::from(&*self.org.id);
                        let user: Arc<str> = Arc::from(&*self.user);
                        *entry = Some((self.uid, org.clone(), user.clone()));
                        (org, user)
                    }
                }
            })
            // The thread is ending: the shared copies do.
            .unwrap_or_else(|_| (self.org.id.clone(), self.user.clone()))
    }

    #[inline]
    pub(crate) fn org_id(&self) -> &str {
        &self.org.id
    }
    #[inline]
    pub(crate) fn user(&self) -> &str {
        &self.user
    }
    /// The member's token list, locked: an issue holds it from counting
    /// the member's tokens (the cap) to putting the new one in memory.
    #[inline]
    pub(crate) fn lock_held(&self) -> HeldTokens<'_> {
        HeldTokens(self.held.lock())
    }

    /// `None` once the member is removed.
    #[inline]
    pub(crate) fn role(&self) -> Option<Role> {
        Role::from_index(self.role.load(Ordering::Acquire))
    }
    pub(super) fn set_role(&self, role: Option<Role>) {
        let v = role.map_or(ROLE_REMOVED, |r| r as u8);
        self.role.store(v, Ordering::Release);
    }
    /// Raises the member's own cutoff to `at` (the latest wins).
    pub(super) fn raise_cutoff(&self, at: u64) {
        self.not_before.fetch_max(at, Ordering::AcqRel);
    }
    /// The latest of the member's and the organization's cutoffs.
    #[inline]
    pub(crate) fn cutoff(&self) -> u64 {
        self.not_before
            .load(Ordering::Acquire)
            .max(self.org.not_before.load(Ordering::Acquire))
    }
}

/// Mutable bookkeeping of a refresh token, touched only by writers.
#[derive(Default)]
pub(crate) struct RefreshExtra {
    pub(super) last_refresh: Option<u64>,
    /// Live access ids, oldest first (one held inline).
    pub(super) live: Live,
}

impl RefreshExtra {
    /// The family's live access ids, oldest first.
    #[inline]
    pub(crate) fn live(&self) -> &[[u8; 16]] {
        self.live.as_slice()
    }
    /// When the token was last exchanged, if known.
    #[inline]
    pub(crate) fn last_refresh(&self) -> Option<u64> {
        self.last_refresh
    }
}

pub(crate) struct RefreshHot {
    pub(super) id: [u8; 16],
    pub(super) member: Arc<MemberHot>,
    pub(super) verifier: [u8; 32],
    pub(super) scopes: ScopeSet,
    pub(super) created_at: u64,
    /// `u64::MAX` when the token never expires.
    pub(super) expires_at: u64,
    pub(super) revoked: AtomicBool,
    /// When it was revoked (for the purge's retention); 0 if never.
    pub(super) revoked_at: AtomicU64,
    pub(super) extra: Mutex<RefreshExtra>,
}

impl RefreshHot {
    #[inline]
    pub(crate) fn id(&self) -> [u8; 16] {
        self.id
    }
    /// The member the token hangs on (a removed member's stand-in for a
    /// token of someone no longer in the organization).
    #[inline]
    pub(crate) fn member(&self) -> &MemberHot {
        &self.member
    }
    #[inline]
    pub(crate) fn verifier(&self) -> &[u8; 32] {
        &self.verifier
    }
    #[inline]
    pub(crate) fn scopes(&self) -> ScopeSet {
        self.scopes
    }
    /// `u64::MAX` when the token never expires.
    #[inline]
    pub(crate) fn expires_at(&self) -> u64 {
        self.expires_at
    }
    /// When the token itself was revoked; 0 if never.
    #[inline]
    pub(crate) fn revoked_at(&self) -> u64 {
        self.revoked_at.load(Ordering::Acquire)
    }
    /// Marks the token revoked itself at `at` (one-way).
    pub(super) fn mark_revoked(&self, at: u64) {
        self.revoked_at.store(at, Ordering::Release);
        self.revoked.store(true, Ordering::Release);
    }
    /// The family's lock and bookkeeping: a writer holds it from reading
    /// the live list to [`super::Memory::apply_family`], which alone
    /// changes it.
    #[inline]
    pub(crate) fn lock_family(&self) -> MutexGuard<'_, RefreshExtra> {
        self.extra.lock()
    }
}

pub(crate) struct AccessHot {
    pub(super) refresh: Arc<RefreshHot>,
    pub(super) verifier: [u8; 32],
    pub(super) issued_at: u64,
    pub(super) expires_at: u64,
    pub(super) revoked: AtomicBool,
    /// The token's checksum memo (see `token::Unchecked::checksum_ok_memo`).
    pub(super) check: AtomicU64,
}

impl AccessHot {
    /// The one way an access entry is made: from its record, in the
    /// family of `refresh`.
    pub(super) fn new(refresh: Arc<RefreshHot>, rec: &AccessRecord) -> AccessHot {
        AccessHot {
            refresh,
            verifier: rec.verifier,
            issued_at: rec.issued_at,
            expires_at: rec.expires_at,
            revoked: AtomicBool::new(rec.revoked),
            check: AtomicU64::new(0),
        }
    }

    /// The refresh token of its family.
    #[inline]
    pub(crate) fn refresh(&self) -> &Arc<RefreshHot> {
        &self.refresh
    }
    #[inline]
    pub(crate) fn verifier(&self) -> &[u8; 32] {
        &self.verifier
    }
    #[inline]
    pub(crate) fn issued_at(&self) -> u64 {
        self.issued_at
    }
    #[inline]
    pub(crate) fn expires_at(&self) -> u64 {
        self.expires_at
    }
    /// Marks the access token revoked itself (one-way).
    pub(super) fn mark_revoked(&self) {
        self.revoked.store(true, Ordering::Release);
    }
    /// The verify rule's checksum check for a token whose secret matched
    /// this entry, with this entry's memo (see
    /// `token::Unchecked::checksum_ok_memo`): only the first check hashes.
    #[inline]
    pub(crate) fn checksum_ok(&self, u: &Unchecked, prefix: &str, kind: TokenKind) -> bool {
        u.checksum_ok_memo(prefix, kind, &self.check)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(org: &Arc<OrgHot>, user: &str) -> MemberHot {
        MemberHot::new(org.clone(), user, Role::User as u8, 0)
    }

    /// The per-thread names cache never answers with another member's
    /// names, also when members share a cache entry, and on any thread.
    #[test]
    fn names_come_from_the_right_member() {
        let org = Arc::new(OrgHot::new("acme"));
        let members: Vec<MemberHot> = (0..3 * NAME_CACHE)
            .map(|i| member(&org, &format!("user{i}")))
            .collect();
        for _ in 0..2 {
            for (i, m) in members.iter().enumerate() {
                let (o, u) = m.names();
                assert_eq!((&*o, &*u), ("acme", format!("user{i}").as_str()));
            }
        }
        std::thread::scope(|s| {
            s.spawn(|| {
                for (i, m) in members.iter().enumerate().rev() {
                    assert_eq!(&*m.names().1, format!("user{i}").as_str());
                }
            });
        });
    }
}
