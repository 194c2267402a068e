//! The entries of memory: organizations, members, refresh and access tokens.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

#[cfg(test)]
use super::family::unlocked;
use super::family::{FamilyCell, FamilyGuard};

use super::{MemberArc, RefreshArc};
use crate::codec::{AccessRecord, OrgPolicyRecord};
use crate::policy::{Role, ScopeSet};
use crate::token::{TokenKind, Unchecked};

/// A refresh entry's lifecycle flag: suspended.
pub(crate) const LIFE_DISABLED: u8 = 1;
/// A refresh entry's lifecycle flag: replaced by a rotation.
pub(crate) const LIFE_ROTATED: u8 = 2;
/// A refresh entry's lifecycle flag: assigned pending, not claimed yet
/// (its expiry is then the end of the claim window).
pub(crate) const LIFE_PENDING: u8 = 4;
/// A refresh entry's lifecycle flag: spent by a rotation on use (set with
/// [`LIFE_ROTATED`]; presented after its expiry, it is a reuse).
pub(crate) const LIFE_SPENT: u8 = 8;
/// A refresh entry's lifecycle flag: revoked itself (one-way; when, memory
/// keeps beside the entry, for the purge's retention).
pub(super) const LIFE_REVOKED: u8 = 16;
/// A refresh entry's lifecycle flag: exchanged at least once (its last use
/// is then the time of its last exchange).
const LIFE_REFRESHED: u8 = 32;

/// The latest time a refresh entry holds to the second: 2106-02-07
/// 06:28:14 UTC, the last second a `u32` counts less one (which stands for
/// "never" in an expiry). A later time is held as this one, so that what
/// the entry decides can only come sooner: a creation or last use held
/// earlier than it was makes a policy's limit and a cutoff apply sooner, an
/// expiry held earlier ends the token sooner. Records keep the times they
/// are given whole; only one the store takes from an entry (an access
/// token's expiry, capped at its refresh token's; the last use a purge
/// writes back; a token's reported last refresh) is the time held.
pub(crate) const HELD_TIME_MAX: u64 = u32::MAX as u64 - 1;

/// An expiry of "never", as a refresh entry holds it.
const HELD_NEVER: u32 = u32::MAX;

/// A time as a refresh entry holds it (see [`HELD_TIME_MAX`]).
#[inline]
pub(super) fn held_time(t: u64) -> u32 {
    // Lossless below the cap.
    t.min(HELD_TIME_MAX) as u32
}

/// An expiry as a refresh entry holds it: `u64::MAX` (never) as never,
/// any other time as [`held_time`] holds it.
#[inline]
pub(super) fn held_expiry(t: u64) -> u32 {
    if t == u64::MAX {
        HELD_NEVER
    } else {
        held_time(t)
    }
}

/// An expiry a refresh entry holds, as a time (`u64::MAX`: never).
#[inline]
fn expiry_of(held: u32) -> u64 {
    if held == HELD_NEVER {
        u64::MAX
    } else {
        u64::from(held)
    }
}

/// What memory keeps of a token's verifier (the keyed blake3 of its
/// secret, which its stored record holds whole): the first 16 bytes.
/// Matching them by chance takes 2^128 guesses of a secret against a key
/// the guesser does not know, as many as guessing the token's id and
/// secret outright; and it halves what each entry spends on it.
#[derive(Clone, Copy)]
pub(crate) struct VerifierHalf([u8; 16]);

impl VerifierHalf {
    pub(crate) fn of(verifier: &[u8; 32]) -> VerifierHalf {
        let mut half = [0u8; 16];
        half.copy_from_slice(&verifier[..16]);
        VerifierHalf(half)
    }
    /// Whether `verifier` (of a presented secret) matches, in constant
    /// time: the words are folded without branching and only the result
    /// is compared.
    #[inline]
    pub(crate) fn matches(&self, verifier: &[u8; 32]) -> bool {
        use subtle::ConstantTimeEq;
        let word = |b: &[u8], i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i * 8..i * 8 + 8]);
            u64::from_ne_bytes(w)
        };
        let acc = (word(&self.0, 0) ^ word(verifier, 0)) | (word(&self.0, 1) ^ word(verifier, 1));
        acc.ct_eq(&0).into()
    }
}

/// Marks a member that is no longer in the organization.
pub(crate) const ROLE_REMOVED: u8 = u8::MAX;

pub(crate) struct OrgHot {
    pub(super) id: Arc<str>,
    pub(super) not_before: AtomicU64,
    /// The organization's token policy: the longest a token may live and
    /// stay unused (seconds; `u64::MAX`: no limit), and rotation on use.
    max_lifetime: AtomicU64,
    unused_expiry: AtomicU64,
    rotate_on_use: AtomicBool,
}

impl OrgHot {
    pub(super) fn new(id: &str) -> OrgHot {
        OrgHot {
            id: Arc::from(id),
            not_before: AtomicU64::new(0),
            max_lifetime: AtomicU64::new(u64::MAX),
            unused_expiry: AtomicU64::new(u64::MAX),
            rotate_on_use: AtomicBool::new(false),
        }
    }
    /// Replaces the organization's token policy.
    pub(super) fn set_policy(&self, p: &OrgPolicyRecord) {
        self.max_lifetime
            .store(p.max_lifetime.unwrap_or(u64::MAX), Ordering::Release);
        self.unused_expiry
            .store(p.unused_expiry.unwrap_or(u64::MAX), Ordering::Release);
        self.rotate_on_use.store(p.rotate_on_use, Ordering::Release);
    }
    /// The organization's token policy.
    pub(crate) fn policy(&self) -> OrgPolicyRecord {
        let limit = |a: &AtomicU64| Some(a.load(Ordering::Acquire)).filter(|v| *v != u64::MAX);
        OrgPolicyRecord {
            max_lifetime: limit(&self.max_lifetime),
            unused_expiry: limit(&self.unused_expiry),
            rotate_on_use: self.rotate_on_use.load(Ordering::Acquire),
        }
    }
    /// When a token created at `created_at` and last used at `last_used`
    /// reaches a limit of this policy (`u64::MAX`: never).
    #[inline]
    pub(crate) fn policy_end(&self, created_at: u64, last_used: u64) -> u64 {
        let life = self.max_lifetime.load(Ordering::Acquire);
        let idle = self.unused_expiry.load(Ordering::Acquire);
        created_at
            .saturating_add(life)
            .min(last_used.saturating_add(idle))
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
    /// How many refresh tokens are stored for this organization and user
    /// id (what the cap on a member's live tokens counts first). Shared by
    /// every `MemberHot` of the same ids (a member removed and added again
    /// is a new one; their tokens are counted together). The ids
    /// themselves are the backend's to list.
    pub(super) held: Arc<Mutex<usize>>,
    /// Unique for the life of the process: the key of the names cache.
    uid: u64,
}

/// A member's count of stored tokens, locked (see
/// [`MemberHot::lock_held`]): read outside memory, raised only by
/// [`super::Memory::put_issued`].
pub(crate) struct HeldTokens<'a>(MutexGuard<'a, usize>);

impl HeldTokens<'_> {
    /// How many refresh tokens are stored for the member's ids, live or
    /// not.
    pub(crate) fn len(&self) -> usize {
        *self.0
    }
    /// Counts one more.
    pub(super) fn add_one(&mut self) {
        *self.0 += 1;
    }
}

static NEXT_MEMBER_UID: AtomicU64 = AtomicU64::new(1);

const NAME_CACHE: usize = 256;

/// A member's uid, with this thread's copies of its names once it was met
/// twice in a row in its cache entry.
type CachedNames = Option<(u64, Option<(Arc<str>, Arc<str>)>)>;

thread_local! {
    /// Per thread, recently verified members (direct mapped by member uid)
    /// and copies of the names of those met again.
    static NAMES: RefCell<Vec<CachedNames>> = RefCell::new(vec![None; NAME_CACHE]);
}

impl MemberHot {
    pub(super) fn new(org: Arc<OrgHot>, user: &str, role: u8, not_before: u64) -> MemberHot {
        Self::sharing(org, user, role, not_before, Arc::default())
    }

    /// A member whose tokens are counted with `held` (those of an earlier
    /// member of the same ids).
    pub(super) fn sharing(
        org: Arc<OrgHot>,
        user: &str,
        role: u8,
        not_before: u64,
        held: Arc<Mutex<usize>>,
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

    /// The organization and user ids for a [`crate::Principal`]. For a
    /// member this thread verifies again and again, clones of copies the
    /// thread owns (a small cache per thread), so that threads verifying
    /// the same member's tokens at once do not bounce one reference count
    /// between their cores; the copies are made on the member's second
    /// visit in a row to its cache entry. For a member met once (random
    /// traffic over many members, where copies would be evicted before
    /// they are used again), clones of the shared names: no allocation.
    pub(crate) fn names(&self) -> (Arc<str>, Arc<str>) {
        let shared = || (self.org.id.clone(), self.user.clone());
        NAMES
            .try_with(|cache| {
                let mut cache = cache.borrow_mut();
                let entry = &mut cache[(self.uid % NAME_CACHE as u64) as usize];
                match entry {
                    Some((uid, Some((org, user)))) if *uid == self.uid => {
                        (org.clone(), user.clone())
                    }
                    Some((uid, copies @ None)) if *uid == self.uid => {
                        let org: Arc<str> = Arc::from(&*self.org.id);
                        let user: Arc<str> = Arc::from(&*self.user);
                        *copies = Some((org.clone(), user.clone()));
                        (org, user)
                    }
                    _ => {
                        *entry = Some((self.uid, None));
                        shared()
                    }
                }
            })
            // The thread is ending: the shared copies do.
            .unwrap_or_else(|_| shared())
    }

    #[inline]
    pub(crate) fn org_id(&self) -> &str {
        &self.org.id
    }
    #[inline]
    pub(crate) fn user(&self) -> &str {
        &self.user
    }
    /// The member's count of stored tokens, locked: an issue holds it from
    /// counting the member's tokens (the cap) to putting the new one in
    /// memory.
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
    /// The member's organization.
    #[inline]
    pub(crate) fn org(&self) -> &OrgHot {
        &self.org
    }
    /// The latest of the member's and the organization's cutoffs.
    #[inline]
    pub(crate) fn cutoff(&self) -> u64 {
        self.not_before
            .load(Ordering::Acquire)
            .max(self.org.not_before.load(Ordering::Acquire))
    }
}

/// A scope set as a refresh entry holds it: in two 4-byte halves, so that
/// nothing in the entry is aligned to more than 4 and its slab slot is 68
/// bytes rather than 72.
#[derive(Clone, Copy)]
pub(super) struct HeldScopes([u32; 2]);

impl From<ScopeSet> for HeldScopes {
    fn from(s: ScopeSet) -> HeldScopes {
        HeldScopes([s.0 as u32, (s.0 >> 32) as u32])
    }
}

impl HeldScopes {
    #[inline(always)]
    fn get(self) -> ScopeSet {
        ScopeSet(u64::from(self.0[0]) | (u64::from(self.0[1]) << 32))
    }
}

/// Laid out in declaration order (`repr(C)`): what verification and the
/// policy checks read comes first (its first 25 bytes: the member, its
/// creation, the scopes, its expiry and last use, its lifecycle flags),
/// then its id, and what only writers read (the verifier, which an
/// exchange compares; the family's lock and count) after them. 64 bytes,
/// aligned to 4 (see [`HeldScopes`]): with its
/// reference count, a 68-byte slot of its memory's slab (see
/// `entries_keep_their_sizes` and `slab.rs`).
/// Its times are held in 4 bytes each (see [`HELD_TIME_MAX`]); when it was
/// revoked, memory keeps beside it (only revoked tokens have such a time).
#[repr(C)]
pub(crate) struct RefreshHot {
    pub(super) member: MemberArc,
    /// When it was made (held, see [`held_time`]).
    pub(super) created_at: u32,
    pub(super) scopes: HeldScopes,
    /// When it expires ([`held_expiry`]: `u32::MAX` when never). Only
    /// lowered, by a rotation (the end of its grace period).
    pub(super) expires_at: AtomicU32,
    /// When it was last exchanged (0 until [`LIFE_REFRESHED`] is set;
    /// held): with its creation, what an organization's expiry of unused
    /// tokens counts from.
    pub(super) last_used: AtomicU32,
    /// Lifecycle flags ([`LIFE_DISABLED`], [`LIFE_ROTATED`], ...).
    pub(super) life: AtomicU8,
    pub(super) id: [u8; 16],
    pub(super) verifier: VerifierHalf,
    /// The family's lock (one byte, in what would be padding; made by
    /// `family::unlocked`): it guards `family`, reached only through a
    /// [`FamilyGuard`].
    pub(super) family_lock: parking_lot::RawMutex,
    pub(super) family: FamilyCell,
}

impl RefreshHot {
    /// How many of its first bytes verification and the policy checks
    /// read: to its lifecycle flags.
    pub(super) const HOT_BYTES: usize = std::mem::offset_of!(RefreshHot, life) + 1;

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
    /// Whether `verifier` (of a presented secret) is the token's, in
    /// constant time.
    #[inline]
    pub(crate) fn verifier_matches(&self, verifier: &[u8; 32]) -> bool {
        self.verifier.matches(verifier)
    }
    #[inline]
    pub(crate) fn scopes(&self) -> ScopeSet {
        self.scopes.get()
    }
    /// `u64::MAX` when the token never expires (for a rotated token, the
    /// end of its grace period if that comes first).
    #[inline]
    pub(crate) fn expires_at(&self) -> u64 {
        expiry_of(self.expires_at.load(Ordering::Acquire))
    }
    /// When the token stops being usable by expiry: its own, or a limit of
    /// its organization's policy (`u64::MAX`: never).
    #[inline]
    pub(crate) fn ends_at(&self) -> u64 {
        let own = self.expires_at();
        let created = u64::from(self.created_at);
        let used = u64::from(self.last_used.load(Ordering::Acquire)).max(created);
        let policy = self.member.org.policy_end(created, used);
        own.min(policy)
    }
    /// Notes a use (an exchange) at `at`, unless a later one is known.
    pub(super) fn note_use(&self, at: u64) {
        self.last_used.fetch_max(held_time(at), Ordering::AcqRel);
        self.set_life(LIFE_REFRESHED);
    }
    /// When the token was last exchanged, if known.
    #[inline]
    pub(crate) fn last_refresh(&self) -> Option<u64> {
        (self.life() & LIFE_REFRESHED != 0)
            .then(|| u64::from(self.last_used.load(Ordering::Acquire)))
    }
    /// The lifecycle flags.
    #[inline]
    fn life(&self) -> u8 {
        self.life.load(Ordering::Acquire)
    }
    fn set_life(&self, flags: u8) {
        self.life.fetch_or(flags, Ordering::AcqRel);
    }
    /// Revoked itself.
    #[inline]
    pub(crate) fn is_revoked(&self) -> bool {
        self.life() & LIFE_REVOKED != 0
    }
    /// Suspended (`disable`) and not enabled since.
    #[inline]
    pub(crate) fn is_disabled(&self) -> bool {
        self.life() & LIFE_DISABLED != 0
    }
    /// Assigned pending and not claimed yet.
    #[inline]
    pub(crate) fn is_pending(&self) -> bool {
        self.life() & LIFE_PENDING != 0
    }
    /// Replaced by a rotation (it dies at the end of its grace period).
    #[inline]
    pub(crate) fn is_rotated(&self) -> bool {
        self.life() & LIFE_ROTATED != 0
    }
    /// Spent by a rotation on use.
    #[inline]
    pub(crate) fn is_spent(&self) -> bool {
        self.life() & LIFE_SPENT != 0
    }
    /// Marks the token spent by a rotation on use, dying at `dies_at`
    /// (never later than it would have).
    pub(super) fn mark_spent(&self, dies_at: u64) {
        self.expires_at
            .fetch_min(held_expiry(dies_at), Ordering::AcqRel);
        self.set_life(LIFE_ROTATED | LIFE_SPENT);
    }
    /// Suspends or restores the token.
    pub(super) fn set_disabled(&self, disabled: bool) {
        if disabled {
            self.set_life(LIFE_DISABLED);
        } else {
            self.life.fetch_and(!LIFE_DISABLED, Ordering::AcqRel);
        }
    }
    /// Marks the token rotated, dying at `dies_at` (never later than its
    /// own expiry).
    pub(super) fn mark_rotated(&self, dies_at: u64) {
        self.expires_at
            .fetch_min(held_expiry(dies_at), Ordering::AcqRel);
        self.set_life(LIFE_ROTATED);
    }
    /// Marks the token revoked itself (one-way; memory keeps when, see
    /// `Memory::note_revoked`).
    pub(super) fn mark_revoked(&self) {
        self.set_life(LIFE_REVOKED);
    }
    /// The family's lock and count: a writer holds it from counting the
    /// family's access tokens (and reading which they are) to
    /// [`super::Memory::apply_family`], which alone changes the count.
    /// Blocks while another holds it.
    #[inline]
    pub(crate) fn lock_family(&self) -> FamilyGuard<'_> {
        FamilyGuard::lock(&self.family_lock, &self.family)
    }
}

/// Marks an access entry narrowed at exchange, in its state word (see
/// [`AccessHot::state`]): the scopes it was narrowed to are in memory's
/// map of them, by the token's id. Above the checksum memo's 32 bits,
/// which only ever OR into the word, as this does (set once, when the
/// entry is made).
const ACCESS_NARROWED: u64 = 1 << 32;

/// Marks an access entry revoked, in its state word.
const ACCESS_REVOKED: u64 = 1 << 33;

/// Where an access entry's lifetime (its expiry less its issue, in
/// seconds) sits in its state word: the 30 bits above [`ACCESS_REVOKED`],
/// set once when the entry is made.
const ACCESS_LIFETIME_SHIFT: u32 = 34;

/// Every scope: what an access token not narrowed at exchange may grant at
/// most, before its refresh token's scopes and its holder's role cut it.
pub(crate) const ALL_SCOPES: ScopeSet = ScopeSet(u64::MAX);

/// 32 bytes: with its 16-byte key, a 48-byte slot of its table. What is
/// not in it: the scopes an access token was narrowed to at exchange
/// (few are), which memory keeps in a map of their own (see
/// [`AccessHot::is_narrowed`]).
pub(crate) struct AccessHot {
    pub(super) refresh: RefreshArc,
    /// When it expires, held in 4 bytes as a refresh entry holds its times
    /// (see [`HELD_TIME_MAX`]: a later expiry ends it in 2106).
    expires_at: u32,
    pub(super) verifier: VerifierHalf,
    /// The token's checksum memo (see `token::Unchecked::checksum_ok_memo`:
    /// the low 32 bits), whether it was narrowed ([`ACCESS_NARROWED`]) and
    /// whether it is revoked itself ([`ACCESS_REVOKED`]), and its lifetime
    /// (bits 34 to 63, see [`ACCESS_LIFETIME_SHIFT`]): what
    /// [`AccessHot::issued_at`] counts back from its expiry. Every change
    /// ORs bits in, so none is lost to another.
    state: AtomicU64,
}

impl AccessHot {
    /// The one way an access entry is made: from its record, in the
    /// family of `refresh`, `narrowed` if its record names the scopes it
    /// was narrowed to (which memory then keeps beside it).
    ///
    /// A lifetime longer than [`crate::config::MAX_ACCESS_TTL_SECS`], which
    /// no store issues, is kept as that: the issue is then shown later than
    /// stored; the expiry, which decides, is kept (as held).
    pub(super) fn new(refresh: RefreshArc, rec: &AccessRecord, narrowed: bool) -> AccessHot {
        let expires_at = held_time(rec.expires_at);
        let lifetime = u64::from(expires_at)
            .saturating_sub(rec.issued_at)
            .min(crate::config::MAX_ACCESS_TTL_SECS);
        let revoked = if rec.revoked { ACCESS_REVOKED } else { 0 };
        let narrowed = if narrowed { ACCESS_NARROWED } else { 0 };
        AccessHot {
            refresh,
            expires_at,
            verifier: VerifierHalf::of(&rec.verifier),
            state: AtomicU64::new((lifetime << ACCESS_LIFETIME_SHIFT) | revoked | narrowed),
        }
    }

    /// The refresh token of its family.
    #[inline]
    pub(crate) fn refresh(&self) -> &RefreshArc {
        &self.refresh
    }
    /// Whether `verifier` (of a presented secret) is the token's, in
    /// constant time.
    #[inline]
    pub(crate) fn verifier_matches(&self, verifier: &[u8; 32]) -> bool {
        self.verifier.matches(verifier)
    }
    /// When it was issued: its expiry less its lifetime.
    #[inline]
    pub(crate) fn issued_at(&self) -> u64 {
        let lifetime = self.state.load(Ordering::Relaxed) >> ACCESS_LIFETIME_SHIFT;
        self.expires_at().saturating_sub(lifetime)
    }
    #[inline]
    pub(crate) fn expires_at(&self) -> u64 {
        u64::from(self.expires_at)
    }
    /// Whether it was narrowed at exchange: the scopes it may grant at
    /// most are then those memory keeps for it (`Memory::access_scopes_of`);
    /// otherwise every scope ([`ALL_SCOPES`]), before its refresh token's
    /// scopes and its holder's current role cut them.
    #[inline]
    pub(crate) fn is_narrowed(&self) -> bool {
        self.state.load(Ordering::Relaxed) & ACCESS_NARROWED != 0
    }
    /// Marks the access token revoked itself (one-way).
    pub(super) fn mark_revoked(&self) {
        self.state.fetch_or(ACCESS_REVOKED, Ordering::AcqRel);
    }
    /// Whether the access token is revoked itself.
    #[inline]
    pub(crate) fn is_revoked(&self) -> bool {
        self.state.load(Ordering::Acquire) & ACCESS_REVOKED != 0
    }
    /// The verify rule's checksum check for a token whose secret matched
    /// this entry, with this entry's memo (see
    /// `token::Unchecked::checksum_ok_memo`): only the first check hashes.
    #[inline]
    pub(crate) fn checksum_ok(&self, u: &Unchecked, prefix: &str, kind: TokenKind) -> bool {
        u.checksum_ok_memo(prefix, kind, &self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(org: &Arc<OrgHot>, user: &str) -> MemberHot {
        MemberHot::new(org.clone(), user, Role::User as u8, 0)
    }

    /// A refresh entry of ann's, made at 100, never expiring, with the
    /// lifecycle flags `life`.
    fn entry(org: &Arc<OrgHot>, life: u8) -> RefreshHot {
        RefreshHot {
            member: super::super::member_arc(member(org, "ann")),
            created_at: 100,
            scopes: ScopeSet(1).into(),
            expires_at: AtomicU32::new(HELD_NEVER),
            last_used: AtomicU32::new(0),
            life: AtomicU8::new(life),
            id: [1; 16],
            verifier: VerifierHalf([2; 16]),
            family_lock: unlocked(),
            family: FamilyCell::new(),
        }
    }

    /// The entries keep their sizes: an access entry in a 48-byte slot of
    /// its table, a refresh entry in a 68-byte slot of its slab (64 bytes
    /// and a 4-byte reference count), with what
    /// verification reads of it in its first 25 bytes and its id in the
    /// next 16, its family's lock and count in the last 8, and named in its
    /// table by an 8-byte slot; a member is named by 4 bytes.
    #[test]
    fn entries_keep_their_sizes() {
        assert_eq!(std::mem::size_of::<AccessHot>(), 32);
        assert_eq!(std::mem::size_of::<Option<AccessHot>>(), 32);
        assert_eq!(
            std::mem::size_of::<crate::idmap::Slot<[u8; 16], AccessHot>>(),
            48
        );
        assert_eq!(
            std::mem::size_of::<crate::idmap::Slot<crate::idmap::Placed, super::super::RefreshArc>>(
            ),
            8
        );
        assert_eq!(std::mem::size_of::<RefreshHot>(), 64);
        assert_eq!(std::mem::align_of::<RefreshHot>(), 4);
        assert_eq!(RefreshHot::HOT_BYTES, 25);
        assert_eq!(std::mem::offset_of!(RefreshHot, id), 25);
        assert_eq!(std::mem::offset_of!(RefreshHot, family_lock), 57);
        assert_eq!(std::mem::offset_of!(RefreshHot, family), 60);
        assert_eq!(std::mem::size_of::<super::super::MemberArc>(), 4);
    }

    /// An access entry's issue, expiry, narrowing, revocation and checksum
    /// memo share its state word without touching each other; an expiry
    /// past what the entry holds is held as its last second.
    #[test]
    fn an_access_entry_keeps_its_issue_beside_its_states() {
        let org = Arc::new(OrgHot::new("acme"));
        let slab = super::super::slab::Slab::new();
        let refresh = slab.alloc(entry(&org, 0));
        let rec = |issued_at, expires_at, revoked| AccessRecord {
            id: [3; 16],
            refresh_id: [1; 16],
            issued_at,
            expires_at,
            revoked,
            verifier: [4; 32],
            scopes: None,
        };
        let max = crate::config::MAX_ACCESS_TTL_SECS;
        let now = 1_800_000_000;
        let a = AccessHot::new(refresh.clone(), &rec(now, now + max, false), true);
        assert_eq!(
            (
                a.issued_at(),
                a.expires_at(),
                a.is_revoked(),
                a.is_narrowed()
            ),
            (now, now + max, false, true)
        );
        a.state.fetch_or(u64::from(u32::MAX), Ordering::Relaxed);
        a.mark_revoked();
        assert_eq!(
            (
                a.issued_at(),
                a.expires_at(),
                a.is_revoked(),
                a.is_narrowed()
            ),
            (now, now + max, true, true)
        );
        // An expiry past what the entry holds ends it sooner, in 2106; its
        // issue counts back from there.
        let b = AccessHot::new(refresh.clone(), &rec(5, u64::MAX, true), false);
        assert_eq!(
            (
                b.issued_at(),
                b.expires_at(),
                b.is_revoked(),
                b.is_narrowed()
            ),
            (HELD_TIME_MAX - max, HELD_TIME_MAX, true, false)
        );
        let c = AccessHot::new(refresh, &rec(9, 4, false), false);
        assert_eq!((c.issued_at(), c.expires_at()), (4, 4));
    }

    /// A refresh entry's scopes, held in two halves, are the set it was
    /// given, every bit of it.
    #[test]
    fn held_scopes_keep_every_bit() {
        for bits in [
            0,
            1,
            1 << 31,
            1 << 32,
            1 << 63 | 5,
            u64::MAX,
            0x8000_0001_0000_8001,
        ] {
            assert_eq!(HeldScopes::from(ScopeSet(bits)).get(), ScopeSet(bits));
        }
    }

    /// A refresh entry's lifecycle flags: each set and cleared on its
    /// own, a revocation keeping the others; its expiry only lowered; and
    /// the last exchange known only once there was one, the latest kept.
    #[test]
    fn the_lifecycle_flags_keep_each_other() {
        let org = Arc::new(OrgHot::new("acme"));
        let hot = entry(&org, LIFE_PENDING);
        assert!(hot.is_pending() && !hot.is_disabled() && !hot.is_revoked());
        assert_eq!(hot.last_refresh(), None);
        hot.set_disabled(true);
        hot.note_use(50);
        assert_eq!(
            hot.last_refresh(),
            Some(50),
            "an exchange before creation is kept"
        );
        assert_eq!((hot.expires_at(), hot.ends_at()), (u64::MAX, u64::MAX));
        hot.mark_revoked();
        assert!(hot.is_revoked() && hot.is_disabled() && hot.is_pending());
        hot.set_disabled(false);
        hot.mark_rotated(500);
        assert!(hot.is_revoked() && !hot.is_disabled() && hot.is_rotated() && !hot.is_spent());
        assert_eq!(hot.expires_at(), 500);
        hot.mark_spent(400);
        hot.mark_rotated(450);
        assert!(hot.is_spent() && hot.is_rotated());
        assert_eq!(hot.expires_at(), 400, "only lowered");
        hot.note_use(300);
        hot.note_use(200);
        assert_eq!(hot.last_refresh(), Some(300));
        assert!(hot.is_pending() && hot.is_spent() && hot.is_revoked());
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
        // Met once in its entry: the shared names; twice in a row and
        // after: this thread's own copies, the same ones each time.
        let m = &members[5];
        let first = m.names();
        assert!(Arc::ptr_eq(&first.1, &m.user) && Arc::ptr_eq(&first.0, &org.id));
        let second = m.names();
        assert!(!Arc::ptr_eq(&second.1, &m.user) && !Arc::ptr_eq(&second.0, &org.id));
        let third = m.names();
        assert!(Arc::ptr_eq(&second.1, &third.1) && Arc::ptr_eq(&second.0, &third.0));
        assert_eq!((&*third.0, &*third.1), ("acme", "user5"));
        std::thread::scope(|s| {
            s.spawn(|| {
                for (i, m) in members.iter().enumerate().rev() {
                    assert_eq!(&*m.names().1, format!("user{i}").as_str());
                }
            });
        });
    }
}
