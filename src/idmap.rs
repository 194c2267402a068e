//! A map from 16-byte random ids to values, in one flat table.
//!
//! Every token the store holds sits in such a table (memory's maps by token
//! id), so their cost per entry
//! is most of the store's memory per token, and a lookup of one is the
//! verification's first read of main memory. A general hash map pays for
//! both twice: its table grows by doubling (at a random size it is on
//! average three quarters full, and just after growing, half), and a
//! lookup reads a control byte in one place and the entry in another.
//!
//! [`IdMap`] keeps each entry (key and value, inline) in one array whose
//! size is any number, not a power of two: sized once to the number it is
//! reserved for (as when a store loads), and grown by half when it would
//! pass 85 % full, so that a table filled step by step is between 57 % and
//! 85 % full (removals can leave it emptier: it never shrinks). It finds an id by linear probing from the slot the id's own
//! bits choose, in Robin Hood order (an entry far from its home slot is
//! never passed by one nearer to its own), so that a lookup reads one
//! place of memory, the entry found a slot or two from where it began,
//! and a lookup of an absent id stops as early as that of a present one.
//! Removal shifts the entries after it back (no tombstones).
//!
//! Ids are random (the store draws them), so their bits are the hash: the
//! second eight bytes of the id choose the slot. A table of values that
//! hold their own id (the refresh entries) keeps only the four highest of
//! those bytes in each slot ([`Placed`]) and compares the whole id in the
//! value it finds. An
//! id presented by a client costs at most the probe of an absent one; it
//! cannot place anything in the table.

/// For the standard maps and sets of ids that remain (a member's token
/// lists): ids are random, so a fold of their bytes is already a good
/// hash, the second eight bytes XORed with the first eight rotated.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
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

/// What a slot keeps of its entry's id: enough to place the entry (the
/// id's bits, see [`bits`]) and, with the entry, to tell its id whole.
pub(crate) trait SlotKey<V>: Copy + Eq {
    /// What the slot of `id` keeps.
    fn of(id: &[u8; 16]) -> Self;
    /// The bits that place the entry (those of its id).
    fn bits(&self) -> u64;
    /// Whether `v`, kept under `Self::of(id)`, is the entry of `id`.
    fn confirms(v: &V, id: &[u8; 16]) -> bool;
    /// The whole id of the entry `v` kept under `self`.
    fn id(&self, v: &V) -> [u8; 16];
}

/// The whole id, in the slot: for values that do not hold their own.
impl<V> SlotKey<V> for [u8; 16] {
    #[inline(always)]
    fn of(id: &[u8; 16]) -> Self {
        *id
    }
    #[inline(always)]
    fn bits(&self) -> u64 {
        bits(self)
    }
    #[inline(always)]
    fn confirms(_: &V, _: &[u8; 16]) -> bool {
        true
    }
    #[inline(always)]
    fn id(&self, _: &V) -> [u8; 16] {
        *self
    }
}

/// A value that holds its own id (as a refresh entry does).
pub(crate) trait HoldsId {
    fn held_id(&self) -> [u8; 16];
}

/// Only the id's bits that place it (the high 32 of its [`bits`]), in the
/// slot: for values that hold their whole id, which a lookup compares
/// once these match (another id's entry passes this first test once in
/// four billion). A quarter of the key's bytes per slot: with a 4-byte
/// value (a refresh entry's slab reference), an 8-byte slot.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placed(u32);

impl<V: HoldsId> SlotKey<V> for Placed {
    #[inline(always)]
    fn of(id: &[u8; 16]) -> Self {
        Placed((bits(id) >> 32) as u32)
    }
    #[inline(always)]
    fn bits(&self) -> u64 {
        u64::from(self.0) << 32
    }
    #[inline(always)]
    fn confirms(v: &V, id: &[u8; 16]) -> bool {
        v.held_id() == *id
    }
    #[inline(always)]
    fn id(&self, v: &V) -> [u8; 16] {
        v.held_id()
    }
}

/// One slot: what it keeps of a key and its value, or nothing (`val` is
/// `None`; the key is then meaningless).
pub(crate) struct Slot<K, V> {
    key: K,
    val: Option<V>,
}

/// Entries per 100 slots at most; a table about to pass it grows.
const MAX_LOAD_PERCENT: usize = 85;

/// How full [`IdMap::fit`] leaves a table: below [`MAX_LOAD_PERCENT`], so
/// that a few more entries (5 % of it) fit before it grows.
const FIT_LOAD_PERCENT: usize = 80;

/// A map from 16-byte ids to `V` (see the module doc), each slot keeping
/// `K` of its entry's id: the whole id, or for values that hold theirs,
/// only its bits that place it ([`Placed`]).
pub(crate) struct IdMap<V, K = [u8; 16]> {
    slots: Box<[Slot<K, V>]>,
    len: usize,
}

impl<V, K: SlotKey<V>> Default for IdMap<V, K> {
    fn default() -> Self {
        IdMap::new()
    }
}

/// The id's own bits, as a number.
#[inline(always)]
fn bits(key: &[u8; 16]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&key[8..]);
    u64::from_le_bytes(b)
}

fn empty_slots<K: SlotKey<V>, V>(n: usize) -> Box<[Slot<K, V>]> {
    let key = K::of(&[0; 16]);
    (0..n).map(|_| Slot { key, val: None }).collect()
}

impl<V, K: SlotKey<V>> IdMap<V, K> {
    /// An empty map (no allocation until the first insert).
    pub(crate) fn new() -> Self {
        IdMap {
            slots: Box::new([]),
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// How many entries it holds before it grows.
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len() * MAX_LOAD_PERCENT / 100
    }

    /// The slot where the search for `key` begins: the id's bits scaled to
    /// the table's size (a multiply, not a division).
    #[inline(always)]
    fn home(&self, key: &K) -> usize {
        ((key.bits() as u128 * self.slots.len() as u128) >> 64) as usize
    }

    /// How far slot `i` is from the home slot of `key`.
    #[inline(always)]
    fn distance(&self, i: usize, key: &K) -> usize {
        let home = self.home(key);
        if i >= home {
            i - home
        } else {
            i + self.slots.len() - home
        }
    }

    #[inline(always)]
    fn next(&self, i: usize) -> usize {
        if i + 1 == self.slots.len() {
            0
        } else {
            i + 1
        }
    }

    /// The slot holding `key`, if any.
    #[inline(always)]
    fn find(&self, key: &[u8; 16]) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let k = K::of(key);
        let mut i = self.home(&k);
        let mut d = 0;
        loop {
            let s = &self.slots[i];
            let v = s.val.as_ref()?;
            if s.key == k && K::confirms(v, key) {
                return Some(i);
            }
            // In Robin Hood order, `key` would sit before any entry nearer
            // to its own home than `key` is to its.
            if self.distance(i, &s.key) < d {
                return None;
            }
            d += 1;
            i = self.next(i);
        }
    }

    #[inline(always)]
    pub(crate) fn get(&self, key: &[u8; 16]) -> Option<&V> {
        let i = self.find(key)?;
        self.slots[i].val.as_ref()
    }

    pub(crate) fn contains_key(&self, key: &[u8; 16]) -> bool {
        self.find(key).is_some()
    }

    /// Makes room for `additional` more entries without growing.
    pub(crate) fn reserve(&mut self, additional: usize) {
        let want = self.len.saturating_add(additional);
        if want > self.capacity() {
            self.resize(want.saturating_mul(100) / MAX_LOAD_PERCENT + 1);
        }
    }

    /// Makes room for as many entries as a sibling table holding
    /// `sibling` (a shard beside this one, of ids from the same random
    /// source: shards fill alike, within a few percent of each other, the
    /// deviation of a count being its square root), and some.
    pub(crate) fn reserve_like(&mut self, sibling: usize) {
        self.reserve(sibling + sibling / 16 + 16);
    }

    /// Sizes the table to what it holds, and some: to about
    /// [`FIT_LOAD_PERCENT`] full, if it is emptier than that. For a table
    /// filled in an order its reservations could not foresee (a store's
    /// access tokens load family by family, so every shard of them fills
    /// at once, each grown step by step), which leaves it anywhere between
    /// 57 % and 85 % full. A table as full or fuller is left as it is.
    pub(crate) fn fit(&mut self) {
        let slots = self.len.saturating_mul(100) / FIT_LOAD_PERCENT + 1;
        if slots < self.slots.len() {
            self.resize(slots);
        }
    }

    fn resize(&mut self, slots: usize) {
        let old = std::mem::replace(&mut self.slots, empty_slots(slots.max(1)));
        self.len = 0;
        for s in old.into_vec() {
            if let Some(v) = s.val {
                self.put_absent(s.key, v);
            }
        }
    }

    /// Inserts `val` at `key`, returning the value it replaces. (A value
    /// that holds its id must hold `key`.)
    pub(crate) fn insert(&mut self, key: [u8; 16], val: V) -> Option<V> {
        debug_assert!(K::confirms(&val, &key), "a value under another id");
        if let Some(i) = self.find(&key) {
            return self.slots[i].val.replace(val);
        }
        self.insert_absent(K::of(&key), val);
        None
    }

    /// Inserts `val` at `key` unless `key` is taken; says whether it did.
    pub(crate) fn insert_new(&mut self, key: [u8; 16], val: V) -> bool {
        debug_assert!(K::confirms(&val, &key), "a value under another id");
        if self.find(&key).is_some() {
            return false;
        }
        self.insert_absent(K::of(&key), val);
        true
    }

    /// Inserts an entry whose key the map does not hold.
    fn insert_absent(&mut self, key: K, val: V) {
        if self.len + 1 > self.capacity() {
            // Half again as large: grown step by step, a table is between
            // 57 % and 85 % full.
            let n = self.slots.len();
            self.resize((n + n / 2).max(8));
        }
        self.put_absent(key, val);
    }

    /// Puts an entry whose key the map does not hold in a table with room
    /// for it: from its home slot on, taking the place of the first entry
    /// nearer to its own home, which moves on in its stead.
    fn put_absent(&mut self, mut key: K, val: V) {
        let mut val = Some(val);
        let mut i = self.home(&key);
        let mut d = 0;
        loop {
            if self.slots[i].val.is_none() {
                self.slots[i] = Slot { key, val };
                self.len += 1;
                return;
            }
            let theirs = self.distance(i, &self.slots[i].key);
            if theirs < d {
                let s = &mut self.slots[i];
                std::mem::swap(&mut s.key, &mut key);
                std::mem::swap(&mut s.val, &mut val);
                d = theirs;
            }
            d += 1;
            i = self.next(i);
        }
    }

    /// Removes `key`, returning its value.
    pub(crate) fn remove(&mut self, key: &[u8; 16]) -> Option<V> {
        let mut i = self.find(key)?;
        let val = self.slots[i].val.take();
        self.len -= 1;
        // The entries after it that are not at home move back one slot.
        loop {
            let j = self.next(i);
            let shift = match &self.slots[j].val {
                Some(_) => self.distance(j, &self.slots[j].key) > 0,
                None => false,
            };
            if !shift {
                return val;
            }
            let moved = Slot {
                key: self.slots[j].key,
                val: self.slots[j].val.take(),
            };
            self.slots[i] = moved;
            i = j;
        }
    }

    /// Removes every entry, keeping the table.
    #[cfg(test)]
    pub(crate) fn clear(&mut self) {
        for s in self.slots.iter_mut() {
            s.val = None;
        }
        self.len = 0;
    }

    /// Every entry, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = ([u8; 16], &V)> {
        self.slots
            .iter()
            .filter_map(|s| s.val.as_ref().map(|v| (s.key.id(v), v)))
    }
}

impl<V, K: SlotKey<V>> IntoIterator for IdMap<V, K> {
    type Item = ([u8; 16], V);
    type IntoIter = std::iter::FilterMap<
        std::vec::IntoIter<Slot<K, V>>,
        fn(Slot<K, V>) -> Option<([u8; 16], V)>,
    >;
    fn into_iter(self) -> Self::IntoIter {
        fn entry<K: SlotKey<V>, V>(s: Slot<K, V>) -> Option<([u8; 16], V)> {
            s.val.map(|v| (s.key.id(&v), v))
        }
        self.slots.into_vec().into_iter().filter_map(entry::<K, V>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u32),
        InsertNew(u8, u32),
        Remove(u8),
        Get(u8),
        Reserve(u8),
        Fit,
        Clear,
    }

    /// Ids from a small pool, so operations meet the same ids, with bits
    /// that often share a home slot (the pool's ids differ in few bits),
    /// and many ids to each value of the bits a [`Placed`] key keeps (so
    /// that it matches ids other than the one sought).
    fn id(n: u8) -> [u8; 16] {
        let mut k = [0u8; 16];
        k[0] = n;
        k[15] = (n % 32) / 4;
        k[8] = (n % 32).wrapping_mul(37);
        k
    }

    /// A value that holds its id, for either kind of key.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    struct Entry {
        id: [u8; 16],
        n: u32,
    }

    impl HoldsId for Entry {
        fn held_id(&self) -> [u8; 16] {
            self.id
        }
    }

    fn entry(k: u8, n: u32) -> Entry {
        Entry { id: id(k), n }
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (any::<u8>(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            2 => (any::<u8>(), any::<u32>()).prop_map(|(k, v)| Op::InsertNew(k, v)),
            4 => any::<u8>().prop_map(Op::Remove),
            3 => any::<u8>().prop_map(Op::Get),
            1 => any::<u8>().prop_map(Op::Reserve),
            1 => Just(Op::Fit),
            1 => Just(Op::Clear),
        ]
    }

    /// Runs `ops` on a map keyed by `K` and on a `HashMap`: they answer
    /// alike, and the table keeps its Robin Hood order.
    fn against_a_hash_map<K: SlotKey<Entry>>(ops: Vec<Op>) -> Result<(), TestCaseError> {
        let mut m: IdMap<Entry, K> = IdMap::new();
        let mut model: HashMap<[u8; 16], Entry> = HashMap::new();
        for op in ops {
            match op {
                Op::Insert(k, v) => prop_assert_eq!(
                    m.insert(id(k), entry(k, v)),
                    model.insert(id(k), entry(k, v))
                ),
                Op::InsertNew(k, v) => {
                    let fresh = !model.contains_key(&id(k));
                    if fresh {
                        model.insert(id(k), entry(k, v));
                    }
                    prop_assert_eq!(m.insert_new(id(k), entry(k, v)), fresh);
                }
                Op::Remove(k) => prop_assert_eq!(m.remove(&id(k)), model.remove(&id(k))),
                Op::Get(k) => {
                    prop_assert_eq!(m.get(&id(k)), model.get(&id(k)));
                    prop_assert_eq!(m.contains_key(&id(k)), model.contains_key(&id(k)));
                }
                Op::Reserve(n) => {
                    m.reserve(n as usize);
                    prop_assert!(m.capacity() >= m.len() + n as usize);
                }
                Op::Fit => m.fit(),
                Op::Clear => {
                    m.clear();
                    model.clear();
                }
            }
            prop_assert_eq!(m.len(), model.len());
            prop_assert!(m.len() <= m.capacity());
            // Robin Hood order: along the table, an entry is at most one
            // slot farther from its home than the entry before it.
            let n = m.slots.len();
            for i in 0..n {
                let j = (i + 1) % n;
                if m.slots[j].val.is_some() {
                    let dj = m.distance(j, &m.slots[j].key);
                    match &m.slots[i].val {
                        Some(_) => {
                            let di = m.distance(i, &m.slots[i].key);
                            prop_assert!(
                                dj <= di + 1,
                                "slot {} is {} from home after {}",
                                j,
                                dj,
                                di
                            );
                        }
                        None => prop_assert_eq!(dj, 0, "slot {} after an empty one", j),
                    }
                }
            }
        }
        let mut seen: Vec<([u8; 16], Entry)> = m.iter().map(|(k, v)| (k, *v)).collect();
        let mut want: Vec<([u8; 16], Entry)> = model.into_iter().collect();
        seen.sort_unstable();
        want.sort_unstable();
        prop_assert_eq!(&seen, &want);
        let mut taken: Vec<([u8; 16], Entry)> = m.into_iter().collect();
        taken.sort_unstable();
        prop_assert_eq!(taken, want);
        Ok(())
    }

    proptest! {
        /// Any sequence of operations answers as a `HashMap` does, with the
        /// whole id in each slot.
        #[test]
        fn behaves_as_a_hash_map(ops in proptest::collection::vec(op(), 1..400)) {
            against_a_hash_map::<[u8; 16]>(ops)?;
        }

        /// The same with only the id's placing bits in each slot: ids that
        /// share them are told apart by the id the value holds.
        #[test]
        fn behaves_as_a_hash_map_with_placed_keys(ops in proptest::collection::vec(op(), 1..400)) {
            against_a_hash_map::<Placed>(ops)?;
        }
    }

    /// A slot keeping only the placing bits of a refresh entry's id and
    /// its 4-byte slab reference is one word, against 20 bytes with the
    /// whole id.
    #[test]
    fn placed_slots_are_one_word() {
        use std::mem::size_of;
        type Ref = std::num::NonZeroU32;
        assert_eq!(size_of::<Slot<Placed, Ref>>(), 8);
        assert_eq!(size_of::<Slot<[u8; 16], Ref>>(), 20);
    }

    /// A table grown step by step and fitted holds every entry it held,
    /// in about 80 % of the slots it had (no fewer than that, so the next
    /// inserts do not grow it at once), and stays in Robin Hood order; one
    /// already as full is left alone.
    #[test]
    fn a_fitted_table_keeps_its_entries_in_fewer_slots() {
        let ids: Vec<[u8; 16]> = (0..5_000u32)
            .map(|i| {
                let mut k = [0u8; 16];
                k.copy_from_slice(&blake3::hash(&i.to_le_bytes()).as_bytes()[..16]);
                k
            })
            .collect();
        let mut m: IdMap<usize> = IdMap::new();
        for (i, k) in ids.iter().enumerate() {
            m.insert(*k, i);
        }
        // Grown by half at a time: 5,000 entries sit in a table well
        // under 80 % full (6,634 slots, 75 %, or more).
        let before = m.slots.len();
        assert!(ids.len() * 100 / before < 78, "{before} slots");
        m.fit();
        let after = m.slots.len();
        assert!(after < before, "fitted from {before} to {after} slots");
        let load = ids.len() * 100 / after;
        assert!((79..=80).contains(&load), "{load} % full in {after} slots");
        assert!(
            m.capacity() >= ids.len() + ids.len() / 20,
            "room for 5 % more"
        );
        assert_eq!(m.len(), ids.len());
        for (i, k) in ids.iter().enumerate() {
            assert_eq!(m.get(k), Some(&i));
        }
        for i in 0..after {
            if m.slots[i].val.is_some() {
                let j = (i + 1) % after;
                if m.slots[j].val.is_some() {
                    let (di, dj) = (
                        m.distance(i, &m.slots[i].key),
                        m.distance(j, &m.slots[j].key),
                    );
                    assert!(dj <= di + 1, "slot {j} is {dj} from home after {di}");
                }
            }
        }
        m.fit();
        assert_eq!(m.slots.len(), after, "a fitted table is left as it is");
        let mut empty: IdMap<u8> = IdMap::new();
        empty.fit();
        assert_eq!(empty.len(), 0);
        assert!(empty.insert_new(ids[0], 1) && empty.get(&ids[0]) == Some(&1));
    }

    /// Reserved for what it will hold, a table of random ids is filled to
    /// most of its size without growing, and every id is found.
    #[test]
    fn a_reserved_table_fills_without_growing() {
        let n = 10_000;
        let mut m: IdMap<usize> = IdMap::new();
        m.reserve(n);
        let slots = m.slots.len();
        let ids: Vec<[u8; 16]> = (0..n as u32)
            .map(|i| *blake3::hash(&i.to_le_bytes()).as_bytes())
            .map(|h| {
                let mut k = [0u8; 16];
                k.copy_from_slice(&h[..16]);
                k
            })
            .collect();
        for (i, k) in ids.iter().enumerate() {
            assert!(m.insert_new(*k, i));
        }
        assert_eq!(m.slots.len(), slots, "no growth");
        assert!(n * 100 / slots >= 80, "{n} entries in {slots} slots");
        for (i, k) in ids.iter().enumerate() {
            assert_eq!(m.get(k), Some(&i));
        }
        let mut absent = ids[0];
        absent[3] ^= 1;
        assert_eq!(m.get(&absent), None);
    }
}
