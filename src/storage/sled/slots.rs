//! Where each stored access record sits in its family: its slot, the last
//! four bytes of its key (`access_key`). The rest of the crate names an
//! access token by its id and its refresh token's; this table, the
//! backend's own, turns that into a key, gives a new record a free slot,
//! and gives it its evicted predecessor's slot when an exchange past the
//! cap deletes the oldest in the same batch (so that the exchange is one
//! insert).
//!
//! Built by [`Slots::loaded`] from the keys while the store loads, changed
//! only after a write to the access tree succeeded (a failed write leaves
//! it as it was). A writer holds the lock of its family's shard from
//! choosing a slot to noting it, so two writers never choose the same one.

use std::collections::VecDeque;

use parking_lot::{Mutex, MutexGuard};

type Families = crate::idmap::IdMap<Family>;

const SHARDS: usize = 64;

/// By the family's leading bits: a load, which meets families in key
/// order, fills one shard after another, each sized from the one before
/// (see [`Slots::loaded`]).
fn shard_of(family: &[u8; 16]) -> usize {
    family[0] as usize * SHARDS / 256
}

/// The slots of one family's stored access records.
///
/// Held inline in its table's entry, without a heap allocation, in the
/// common states: no record, or one record in slot 0 with no other slot
/// ever given (a refresh token exchanged and each new access token
/// evicting the last). Any other state is a [`Wide`] on the heap; every
/// change settles back to the inline form when it can, so two families in
/// the same state compare equal.
#[derive(Default, Clone, Debug, PartialEq, Eq)]
pub(super) enum Family {
    /// No record and no slot ever given.
    #[default]
    Empty,
    /// One record, in slot 0, the only slot ever given.
    One([u8; 16]),
    /// Anything else.
    Wide(Box<Wide>),
}

/// A family's slots in general.
#[derive(Default, Clone, Debug, PartialEq, Eq)]
pub(super) struct Wide {
    /// Each stored record's id and slot, in the order they were put (so
    /// the oldest, which the cap evicts, is found first).
    live: VecDeque<([u8; 16], u32)>,
    /// Slots below `next` that no record holds.
    free: Vec<u32>,
    /// One past the highest slot ever given.
    next: u32,
}

impl Wide {
    /// Forgets the record `id` without freeing its slot; returns the slot.
    fn take(&mut self, id: &[u8; 16]) -> Option<u32> {
        let i = match self.live.front() {
            Some((x, _)) if x == id => 0,
            _ => self.live.iter().position(|(x, _)| x == id)?,
        };
        self.live.remove(i).map(|(_, s)| s)
    }

    fn put(&mut self, id: [u8; 16], slot: u32) {
        if let Some(i) = self.free.iter().rposition(|s| *s == slot) {
            self.free.swap_remove(i);
        }
        self.next = self.next.max(slot.saturating_add(1));
        self.live.push_back((id, slot));
    }
}

impl Family {
    /// The general form of this state, to change (see [`Family::settle`]).
    fn wide(&mut self) -> &mut Wide {
        let w = match std::mem::take(self) {
            Family::Empty => Wide::default(),
            Family::One(id) => Wide {
                live: VecDeque::from([(id, 0)]),
                free: Vec::new(),
                next: 1,
            },
            Family::Wide(w) => *w,
        };
        *self = Family::Wide(Box::new(w));
        match self {
            Family::Wide(w) => w,
            _ => unreachable!("just made wide"),
        }
    }

    /// Back to an inline form if the state has one.
    fn settle(&mut self) {
        if let Family::Wide(w) = self {
            if w.free.is_empty() {
                match (w.next, w.live.front()) {
                    (0, None) => *self = Family::Empty,
                    (1, Some(&(id, 0))) => *self = Family::One(id),
                    _ => {}
                }
            }
        }
    }

    /// The slot of the record `id`, if it is stored.
    pub(super) fn slot_of(&self, id: &[u8; 16]) -> Option<u32> {
        match self {
            Family::Empty => None,
            Family::One(x) => (x == id).then_some(0),
            Family::Wide(w) => w.live.iter().find(|(x, _)| x == id).map(|(_, s)| *s),
        }
    }

    /// Forgets the record `id` and frees its slot; returns the slot.
    pub(super) fn remove(&mut self, id: &[u8; 16]) -> Option<u32> {
        // Unknown ids change nothing (and allocate nothing).
        self.slot_of(id)?;
        let w = self.wide();
        let slot = w.take(id);
        if let Some(s) = slot {
            w.free.push(s);
        }
        self.settle();
        slot
    }

    /// A slot no record holds (not yet noted: see [`Family::put`]).
    pub(super) fn free_slot(&self) -> u32 {
        match self {
            Family::Empty => 0,
            Family::One(_) => 1,
            Family::Wide(w) => w.free.last().copied().unwrap_or(w.next),
        }
    }

    /// Notes the record `id` in `slot` (one [`Family::free_slot`] gave, or
    /// one that an eviction released).
    pub(super) fn put(&mut self, id: [u8; 16], slot: u32) {
        if let (Family::Empty, 0) = (&*self, slot) {
            *self = Family::One(id);
            return;
        }
        self.wide().put(id, slot);
        self.settle();
    }

    /// The slot the new record `new` of a batch "evict `old`, put `new`"
    /// takes: `old`'s if it is stored, a free one otherwise. Noted here;
    /// the caller writes the record.
    pub(super) fn replace(&mut self, old: &[u8; 16], new: [u8; 16]) -> u32 {
        if let Family::One(x) = self {
            if x == old {
                *x = new;
                return 0;
            }
        }
        let w = self.wide();
        let slot = match w.take(old) {
            Some(s) => s,
            None => w.free.last().copied().unwrap_or(w.next),
        };
        w.put(new, slot);
        self.settle();
        slot
    }

    pub(super) fn is_empty(&self) -> bool {
        match self {
            Family::Empty => true,
            Family::One(_) => false,
            Family::Wide(w) => w.live.is_empty(),
        }
    }

    /// Notes a record found stored in `slot` while loading (free slots
    /// are found by [`Family::finish_load`]).
    fn loaded(&mut self, id: [u8; 16], slot: u32) {
        if let (Family::Empty, 0) = (&*self, slot) {
            *self = Family::One(id);
            return;
        }
        let w = self.wide();
        w.next = w.next.max(slot.saturating_add(1));
        w.live.push_back((id, slot));
        self.settle();
    }

    /// Once every record is loaded: the unused slots below the highest
    /// are free.
    fn finish_load(&mut self) {
        let Family::Wide(w) = self else { return };
        if w.live.len() != w.next as usize {
            let mut used: Vec<u32> = w.live.iter().map(|(_, s)| *s).collect();
            used.sort_unstable();
            w.free = (0..w.next)
                .filter(|s| used.binary_search(s).is_err())
                .collect();
        }
        self.settle();
    }
}

/// The slot table of every family, sharded by family.
pub(super) struct Slots {
    shards: Box<[Mutex<Families>]>,
}

/// Some shards of the table, locked (in shard order) by a writer of a
/// batch: it plans on copies of the families, and puts them back only if
/// the write succeeded.
pub(super) struct Locked<'a> {
    shards: Vec<(usize, MutexGuard<'a, Families>)>,
}

impl Locked<'_> {
    fn shard(&mut self, family: &[u8; 16]) -> &mut Families {
        let i = shard_of(family);
        let at = self
            .shards
            .iter()
            .position(|(s, _)| *s == i)
            .expect("the shards of every family of the batch are locked");
        &mut self.shards[at].1
    }

    /// A copy of the family's slots, to plan on.
    pub(super) fn copy(&mut self, family: &[u8; 16]) -> Family {
        self.shard(family).get(family).cloned().unwrap_or_default()
    }

    /// Puts planned families back (`None`: the family is gone).
    pub(super) fn put_back(&mut self, planned: Vec<([u8; 16], Option<Family>)>) {
        for (id, f) in planned {
            match f {
                Some(f) if !f.is_empty() => {
                    self.shard(&id).insert(id, f);
                }
                _ => {
                    self.shard(&id).remove(&id);
                }
            }
        }
    }
}

impl Slots {
    pub(super) fn new() -> Slots {
        Slots {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// Runs `f` on the family's slots, under its shard's lock; a family
    /// left empty is dropped.
    pub(super) fn with<R>(&self, family: &[u8; 16], f: impl FnOnce(&mut Family) -> R) -> R {
        let mut shard = self.shards[shard_of(family)].lock();
        let fam = shard.get_or_insert_with(*family, Family::default);
        let r = f(fam);
        if fam.is_empty() {
            shard.remove(family);
        }
        r
    }

    /// Locks the shards of `families`, in shard order.
    pub(super) fn lock(&self, families: impl Iterator<Item = [u8; 16]>) -> Locked<'_> {
        let mut idx: Vec<usize> = families.map(|f| shard_of(&f)).collect();
        idx.sort_unstable();
        idx.dedup();
        Locked {
            shards: idx
                .into_iter()
                .map(|i| (i, self.shards[i].lock()))
                .collect(),
        }
    }

    /// Forgets everything (before a load).
    pub(super) fn clear(&self) {
        for s in self.shards.iter() {
            s.lock().clear();
        }
    }

    /// Notes a record found stored in `slot` of `family` while loading
    /// (from several threads at once).
    pub(super) fn loaded(&self, family: &[u8; 16], id: [u8; 16], slot: u32) {
        let i = shard_of(family);
        let mut shard = self.shards[i].lock();
        if shard.capacity() == 0 && i > 0 {
            // A shard's first family: ids are random, so shards fill
            // alike, and the shard before it has just been filled (unless
            // another loader holds it: not waited for). Room for as many,
            // and some, at once rather than growing step by step.
            let hint = self.shards[i - 1].try_lock().map_or(0, |p| p.len());
            shard.reserve_like(hint);
        }
        shard
            .get_or_insert_with(*family, Family::default)
            .loaded(id, slot);
    }

    /// Once every record is loaded: each family's unused slots below its
    /// highest are free, and each shard is sized to what it holds (see
    /// `IdMap::fit`: a shard whose reservation missed grew step by step).
    pub(super) fn finish_load(&self) {
        for s in self.shards.iter() {
            let mut shard = s.lock();
            for fam in shard.values_mut() {
                fam.finish_load();
            }
            shard.fit();
        }
    }

    /// Forgets a family (its records were removed outside a batch).
    pub(super) fn drop_family(&self, family: &[u8; 16]) {
        self.shards[shard_of(family)].lock().remove(family);
    }

    /// The family's slots, if it has records (for tests).
    #[cfg(test)]
    pub(super) fn family(&self, family: &[u8; 16]) -> Option<Family> {
        self.shards[shard_of(family)].lock().get(family).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_reuses_freed_and_evicted_slots() {
        let mut f = Family::default();
        for n in 0..3u8 {
            let s = f.free_slot();
            f.put([n; 16], s);
        }
        assert_eq!(f.slot_of(&[2; 16]), Some(2));
        // Eviction: the new record takes the oldest's slot.
        assert_eq!(f.replace(&[0; 16], [9; 16]), 0);
        assert_eq!(f.slot_of(&[0; 16]), None);
        assert_eq!(f.slot_of(&[9; 16]), Some(0));
        // A purge frees a slot; the next record takes it, then a new one.
        assert_eq!(f.remove(&[1; 16]), Some(1));
        assert_eq!(f.free_slot(), 1);
        f.put([10; 16], 1);
        assert_eq!(f.free_slot(), 3);
        // Evicting what is not stored takes a free slot.
        assert_eq!(f.replace(&[77; 16], [11; 16]), 3);
        assert_eq!(f.remove(&[77; 16]), None);
    }

    #[test]
    fn loading_finds_the_gaps() {
        let s = Slots::new();
        let fam = [5; 16];
        s.loaded(&fam, [1; 16], 4);
        s.loaded(&fam, [2; 16], 1);
        s.finish_load();
        let f = s.family(&fam).unwrap();
        let Family::Wide(w) = &f else {
            panic!("two records in slots 4 and 1 are held wide: {f:?}")
        };
        assert_eq!(w.next, 5);
        let mut free = w.free.clone();
        free.sort_unstable();
        assert_eq!(free, vec![0, 2, 3]);
        assert_eq!(f.slot_of(&[1; 16]), Some(4));
        // One record in slot 0 loads inline; alone in slot 2, it is wide
        // with slots 0 and 1 free.
        s.loaded(&[6; 16], [7; 16], 0);
        s.loaded(&[8; 16], [9; 16], 2);
        s.finish_load();
        assert_eq!(s.family(&[6; 16]), Some(Family::One([7; 16])));
        let f = s.family(&[8; 16]).unwrap();
        assert_eq!((f.slot_of(&[9; 16]), f.free_slot()), (Some(2), 1));
    }

    /// The common life of a family (issued, exchanged, each exchange
    /// evicting the last access token) stays inline, and every state that
    /// has an inline form settles back to it.
    #[test]
    fn the_common_states_are_inline() {
        let mut f = Family::default();
        assert_eq!(f.free_slot(), 0);
        f.put([1; 16], 0);
        assert_eq!(f, Family::One([1; 16]));
        assert_eq!(f.replace(&[1; 16], [2; 16]), 0);
        assert_eq!(f, Family::One([2; 16]));
        assert_eq!(f.slot_of(&[2; 16]), Some(0));
        assert_eq!(f.slot_of(&[1; 16]), None);
        // A second record goes wide; evicting the first and then the
        // second's removal leave slot 0 taken and slot 1 free: wide still.
        assert_eq!(f.free_slot(), 1);
        f.put([3; 16], 1);
        assert!(matches!(f, Family::Wide(_)), "{f:?}");
        assert_eq!(f.replace(&[2; 16], [4; 16]), 0);
        assert_eq!(f.remove(&[3; 16]), Some(1));
        assert!(matches!(f, Family::Wide(_)), "{f:?}");
        // Slot 1 is taken again and its record replaced by the one in
        // slot 0 going: one record in slot 1 is not the inline state.
        f.put([5; 16], 1);
        assert_eq!(f.remove(&[4; 16]), Some(0));
        assert_eq!((f.slot_of(&[5; 16]), f.free_slot()), (Some(1), 0));
        assert!(!f.is_empty());
        // Removing the last record leaves an empty family.
        assert_eq!(f.remove(&[5; 16]), Some(1));
        assert!(f.is_empty());
        let mut one = Family::One([6; 16]);
        assert_eq!(one.remove(&[7; 16]), None);
        assert_eq!(one, Family::One([6; 16]));
        assert_eq!(one.remove(&[6; 16]), Some(0));
        assert!(one.is_empty());
        assert_eq!(one.free_slot(), 0);
    }
}
