//! The sharded maps from token id to entry that verification reads.
//! Read from anywhere; changed only by memory's own mutators.

use std::sync::{PoisonError, TryLockError};

use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard, ShardedLockWriteGuard};

use crate::idmap::{HoldsId, IdMap, Placed, SlotKey};

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
struct Shard<V, K>(ShardedLock<IdMap<V, K>>);

impl<V, K> Shard<V, K> {
    fn read(&self) -> ShardedLockReadGuard<'_, IdMap<V, K>> {
        // A panic while writing leaves the map as the panicking call left
        // it, as with `parking_lot`: no poisoning.
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }
    fn write(&self) -> ShardedLockWriteGuard<'_, IdMap<V, K>> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
    fn try_read(&self) -> Option<ShardedLockReadGuard<'_, IdMap<V, K>>> {
        match self.0.try_read() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }
}

/// A map from token id to `V`, split into shards each behind its own lock;
/// each slot keeps `K` of its entry's id (see [`SlotKey`]).
pub(crate) struct Sharded<V, K = [u8; 16]> {
    shards: Box<[Shard<V, K>]>,
}

impl<V, K: SlotKey<V>> Sharded<V, K> {
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
    /// Within a shard, slots come from bytes the shard does not use (see
    /// [`IdMap`]), so they stay evenly spread.
    fn shard(&self, id: &[u8; 16]) -> &Shard<V, K> {
        &self.shards[shard_index(id)]
    }

    pub(crate) fn with<R>(&self, id: &[u8; 16], f: impl FnOnce(Option<&V>) -> R) -> R {
        let g = self.shard(id).read();
        f(g.get(id))
    }

    /// Inserts `v` at `id` (see the two `insert`s below, which name the
    /// id each kind of map takes).
    fn insert_at(&self, id: [u8; 16], v: V) {
        let i = shard_index(&id);
        let mut g = self.shards[i].write();
        if g.capacity() == 0 && i > 0 {
            // A shard's first entry. Ids are random, so shards fill alike,
            // and a store being loaded (in key order) has just filled the
            // shard before this one: room for as many, and some, at once
            // rather than growing step by step. (Not waiting for that
            // shard: it may be another loader's.)
            let hint = self.shards[i - 1].try_read().map_or(0, |p| p.len());
            g.reserve_like(hint);
        }
        g.insert(id, v);
    }

    /// Inserts `v` at `id` unless `id` is taken; says whether it did.
    fn insert_new_at(&self, id: [u8; 16], v: V) -> bool {
        let i = shard_index(&id);
        let mut g = self.shards[i].write();
        if g.capacity() == 0 && i > 0 {
            // As `insert_at`.
            let hint = self.shards[i - 1].try_read().map_or(0, |p| p.len());
            g.reserve_like(hint);
        }
        g.insert_new(id, v)
    }

    pub(super) fn remove(&self, id: &[u8; 16]) -> Option<V> {
        self.shard(id).write().remove(id)
    }

    pub(crate) fn contains(&self, id: &[u8; 16]) -> bool {
        self.shard(id).read().contains_key(id)
    }

    /// Sizes each shard to what it holds (see [`IdMap::fit`]), one shard
    /// at a time.
    pub(super) fn fit(&self) {
        for s in self.shards.iter() {
            s.write().fit();
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// Every entry, taken out.
    pub(super) fn into_entries(self) -> Vec<([u8; 16], V)> {
        let mut out = Vec::new();
        for s in self.shards.into_vec() {
            let map = s.0.into_inner().unwrap_or_else(PoisonError::into_inner);
            out.extend(map);
        }
        out
    }

    /// The ids this map holds and `other` does not.
    pub(super) fn ids_not_in<W, L: SlotKey<W>>(&self, other: &Sharded<W, L>) -> Vec<[u8; 16]> {
        let mut out = Vec::new();
        self.for_each(|id, _| {
            if !other.contains(id) {
                out.push(*id);
            }
            true
        });
        out
    }

    /// Visits every entry, shard by shard; `f` returns false to stop.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&[u8; 16], &V) -> bool) {
        for s in self.shards.iter() {
            let g = s.read();
            for (k, v) in g.iter() {
                if !f(&k, v) {
                    return;
                }
            }
        }
    }
}

/// A map whose slots keep whole ids: the caller names the id.
impl<V> Sharded<V, [u8; 16]> {
    /// Inserts `v` at `id`, replacing what was there.
    pub(super) fn insert(&self, id: [u8; 16], v: V) {
        self.insert_at(id, v);
    }

    /// Inserts `v` at `id` unless `id` is taken; says whether it did.
    pub(super) fn insert_new(&self, id: [u8; 16], v: V) -> bool {
        self.insert_new_at(id, v)
    }
}

/// A map whose values hold their ids ([`Placed`] slots): the id is the
/// value's own, so that no value can be put under another id (a lookup of
/// that id would then miss it, and one of its own find it).
impl<V: HoldsId> Sharded<V, Placed> {
    /// Inserts `v` at its id, replacing what was there.
    pub(super) fn insert(&self, v: V) {
        self.insert_at(v.held_id(), v);
    }

    /// Inserts `v` at its id unless the id is taken; says whether it did.
    pub(super) fn insert_new(&self, v: V) -> bool {
        self.insert_new_at(v.held_id(), v)
    }
}

impl<V: Clone, K: SlotKey<V>> Sharded<V, K> {
    pub(crate) fn get(&self, id: &[u8; 16]) -> Option<V> {
        self.with(id, |v| v.cloned())
    }
}
