//! In-memory verification state, kept coherent with every write.
//!
//! Verification reads only these structures: sharded maps, each shard
//! behind a read lock whose lock word is the reading thread's own
//! (crossbeam's `ShardedLock`), plus atomics; so the verify path touches no
//! disk, takes no global lock, and writes no memory another core reads. Writers update them after the storage commit
//! and before returning (calls that change membership or roles hold the
//! store's catalog exclusively; token issues share it).

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use std::sync::{PoisonError, TryLockError};

use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard, ShardedLockWriteGuard};
use parking_lot::Mutex;

use crate::policy::{Role, ScopeSet};

/// Marks a member that is no longer in the organization.
pub(crate) const ROLE_REMOVED: u8 = u8::MAX;

pub(crate) struct OrgHot {
    pub id: Arc<str>,
    pub not_before: AtomicU64,
}

pub(crate) struct MemberHot {
    pub org: Arc<OrgHot>,
    pub user: Arc<str>,
    pub role: AtomicU8,
    pub not_before: AtomicU64,
    /// The refresh tokens stored for this organization and user id, with
    /// the sequence number of the issue event each record carries (0:
    /// none): what lists and the audit read instead of a stored index.
    /// Shared by every `MemberHot` of the same ids (a member removed and
    /// added again is a new one; their tokens are listed together).
    pub held: Arc<Mutex<TokenIds>>,
    /// Unique for the life of the process: the key of the names cache.
    uid: u64,
}

/// Refresh token ids, each with its issue event's sequence number.
pub(crate) type TokenIds = HashMap<[u8; 16], u64, BuildHasherDefault<IdHasher>>;

static NEXT_MEMBER_UID: AtomicU64 = AtomicU64::new(1);

const NAME_CACHE: usize = 256;

type NameSlot = Option<(u64, Arc<str>, Arc<str>)>;

thread_local! {
    /// Per thread, copies of recently verified members' names (direct
    /// mapped by member uid).
    static NAMES: RefCell<Vec<NameSlot>> = RefCell::new(vec![None; NAME_CACHE]);
}

impl MemberHot {
    pub(crate) fn new(org: Arc<OrgHot>, user: &str, role: u8, not_before: u64) -> MemberHot {
        Self::sharing(org, user, role, not_before, Arc::default())
    }

    /// A member whose tokens are listed with `held` (those of an earlier
    /// member of the same ids).
    pub(crate) fn sharing(
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
                let slot = &mut cache[(self.uid % NAME_CACHE as u64) as usize];
                match slot {
                    Some((uid, org, user)) if *uid == self.uid => (org.clone(), user.clone()),
                    _ => {
                        let org: Arc<str> = Arc::from(&*self.org.id);
                        let user: Arc<str> = Arc::from(&*self.user);
                        *slot = Some((self.uid, org.clone(), user.clone()));
                        (org, user)
                    }
                }
            })
            // The thread is ending: the shared copies do.
            .unwrap_or_else(|_| (self.org.id.clone(), self.user.clone()))
    }

    pub(crate) fn role(&self) -> Option<Role> {
        Role::from_index(self.role.load(Ordering::Acquire))
    }
    pub(crate) fn set_role(&self, role: Option<Role>) {
        let v = role.map_or(ROLE_REMOVED, |r| r as u8);
        self.role.store(v, Ordering::Release);
    }
    /// The latest of the member's and the organization's cutoffs.
    pub(crate) fn cutoff(&self) -> u64 {
        self.not_before
            .load(Ordering::Acquire)
            .max(self.org.not_before.load(Ordering::Acquire))
    }
}

/// Mutable bookkeeping of a refresh token, touched only by writers.
#[derive(Default)]
pub(crate) struct RefreshExtra {
    pub last_refresh: Option<u64>,
    /// Live access ids with their slots, oldest first.
    pub live: Vec<([u8; 16], u32)>,
    /// One past the highest slot used; slots below it may be taken.
    pub next_slot: u32,
}

impl RefreshExtra {
    /// The slot for a new access record of a family holding `live.len() <
    /// cap` records: the next unused one, or a gap left by a purge.
    pub(crate) fn free_slot(&self, cap: usize) -> u32 {
        if (self.next_slot as usize) < cap {
            return self.next_slot;
        }
        let mut used: Vec<u32> = self.live.iter().map(|(_, s)| *s).collect();
        used.sort_unstable();
        let mut want = 0u32;
        for s in used {
            if s > want {
                break;
            }
            want = s + 1;
        }
        want
    }
}

pub(crate) struct RefreshHot {
    pub id: [u8; 16],
    pub member: Arc<MemberHot>,
    pub verifier: [u8; 32],
    pub scopes: ScopeSet,
    pub created_at: u64,
    /// `u64::MAX` when the token never expires.
    pub expires_at: u64,
    pub revoked: AtomicBool,
    /// When it was revoked (for the purge's retention); 0 if never.
    pub revoked_at: AtomicU64,
    pub extra: Mutex<RefreshExtra>,
}

impl RefreshHot {
    pub(crate) fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
            || self.member.role().is_none()
            || self.created_at < self.member.cutoff()
    }
}

pub(crate) struct AccessHot {
    pub refresh: Arc<RefreshHot>,
    pub verifier: [u8; 32],
    pub issued_at: u64,
    pub expires_at: u64,
    /// Where its record is stored within its family.
    pub slot: u32,
    pub revoked: AtomicBool,
    /// The token's checksum once a verification has computed it
    /// (`CHECK_KNOWN` set), so that later ones compare instead of hashing.
    pub check: AtomicU64,
}

/// Marks [`AccessHot::check`] as holding the checksum in its low 32 bits.
pub(crate) const CHECK_KNOWN: u64 = 1 << 32;

/// Ids are random, so a fold of their bytes is already a good hash: the
/// second eight bytes, XORed with the first eight rotated. The leading
/// byte, which picks the shard (and so is nearly fixed within one), lands
/// on bits 5 to 12, where it is XORed with random bits of the second half:
/// buckets and tags stay evenly spread.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(b);
        }
    }
}

type IdMap<V> = HashMap<[u8; 16], V, BuildHasherDefault<IdHasher>>;

const SHARDS: usize = 128;

fn shard_index(id: &[u8; 16]) -> usize {
    id[0] as usize * SHARDS / 256
}

/// One shard on cache lines of its own (128 bytes: a line and the one the
/// prefetcher pairs with it), so that a writer of one shard does not evict
/// another's table header from other cores.
///
/// Its lock is sharded too: a reader takes only the lock word of its own
/// thread (one of eight, on lines of their own), a writer takes all of
/// them. Verifications are reads, nearly all of them, and two threads
/// verifying tokens of random ids visit every shard in turn: with one lock
/// word per shard, most reads would find it last written by the other
/// core and wait for its cache line to come over.
#[repr(align(128))]
struct Shard<V>(ShardedLock<IdMap<V>>);

impl<V> Shard<V> {
    fn read(&self) -> ShardedLockReadGuard<'_, IdMap<V>> {
        // A panic while writing leaves the map as the panicking call left
        // it, as with `parking_lot`: no poisoning.
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }
    fn write(&self) -> ShardedLockWriteGuard<'_, IdMap<V>> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
    fn try_read(&self) -> Option<ShardedLockReadGuard<'_, IdMap<V>>> {
        match self.0.try_read() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }
}

/// A map from token id to `V`, split into shards each behind its own lock.
pub(crate) struct Sharded<V> {
    shards: Box<[Shard<V>]>,
}

impl<V> Sharded<V> {
    pub(crate) fn new() -> Self {
        Sharded {
            shards: (0..SHARDS)
                .map(|_| Shard(ShardedLock::new(IdMap::default())))
                .collect(),
        }
    }

    /// The shard of `id`: by its leading bits, so that ids in key order
    /// (as a store's trees hold them, and as opening a store loads them)
    /// fill one shard after another, each while its table is in the cache,
    /// and threads loading different key ranges write different shards.
    /// Within a shard, buckets come from bytes the shard does not use
    /// (see [`IdHasher`]), so they stay evenly spread.
    fn shard(&self, id: &[u8; 16]) -> &Shard<V> {
        &self.shards[shard_index(id)]
    }

    pub(crate) fn with<R>(&self, id: &[u8; 16], f: impl FnOnce(Option<&V>) -> R) -> R {
        let g = self.shard(id).read();
        f(g.get(id))
    }

    pub(crate) fn insert(&self, id: [u8; 16], v: V) {
        let i = shard_index(&id);
        let mut g = self.shards[i].write();
        if g.capacity() == 0 && i > 0 {
            // A shard's first entry. Ids are random, so shards fill alike,
            // and a store being loaded (in key order) has just filled the
            // shard before this one: room for as many, and some, at once
            // rather than growing step by step. (Not waiting for that
            // shard: it may be another loader's.)
            let hint = self.shards[i - 1].try_read().map_or(0, |p| p.len());
            g.reserve(hint + hint / 8);
        }
        g.insert(id, v);
    }

    /// Inserts `v` unless `id` is taken; says whether it did.
    pub(crate) fn insert_new(&self, id: [u8; 16], v: V) -> bool {
        let i = shard_index(&id);
        let mut g = self.shards[i].write();
        if g.capacity() == 0 && i > 0 {
            // As `insert`.
            let hint = self.shards[i - 1].try_read().map_or(0, |p| p.len());
            g.reserve(hint + hint / 8);
        }
        match g.entry(id) {
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(v);
                true
            }
            std::collections::hash_map::Entry::Occupied(_) => false,
        }
    }

    pub(crate) fn remove(&self, id: &[u8; 16]) -> Option<V> {
        self.shard(id).write().remove(id)
    }

    pub(crate) fn contains(&self, id: &[u8; 16]) -> bool {
        self.shard(id).read().contains_key(id)
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// Visits every entry, shard by shard; `f` returns false to stop.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&[u8; 16], &V) -> bool) {
        for s in self.shards.iter() {
            let g = s.read();
            for (k, v) in g.iter() {
                if !f(k, v) {
                    return;
                }
            }
        }
    }
}

impl<V: Clone> Sharded<V> {
    pub(crate) fn get(&self, id: &[u8; 16]) -> Option<V> {
        self.with(id, |v| v.cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(org: &Arc<OrgHot>, user: &str) -> MemberHot {
        MemberHot::new(org.clone(), user, Role::User as u8, 0)
    }

    /// The per-thread names cache never answers with another member's
    /// names, also when members share a cache slot, and on any thread.
    #[test]
    fn names_come_from_the_right_member() {
        let org = Arc::new(OrgHot {
            id: Arc::from("acme"),
            not_before: AtomicU64::new(0),
        });
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
