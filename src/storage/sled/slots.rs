//! Where each stored access record sits in its family: its slot, the last
//! four bytes of its key (`access_key`). The rest of the crate names an
//! access token by its id and its refresh token's; the backend turns that
//! into a key, gives a new record a free slot, and gives it its evicted
//! predecessor's slot when an exchange past the cap deletes the oldest in
//! the same batch (so that the exchange is one insert).
//!
//! Only the families with a record past slot 0 are kept in memory (see
//! [`Slots`]); the others, nearly all, have their one key read off the
//! access tree when written. Changed only after a write succeeded (a
//! failed write leaves them as they were).

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;

use parking_lot::{Mutex, MutexGuard};

use crate::error::Result;
use crate::idmap::IdHasher;

const SHARDS: usize = 64;

/// A family's stripe, by its leading bits.
fn shard_of(family: &[u8; 16]) -> usize {
    family[0] as usize * SHARDS / 256
}

/// The slots of one family's stored access records.
///
/// Inline, without a heap allocation, in the common states: no record, or
/// one record in slot 0 and no other slot below the highest (a refresh
/// token exchanged and each new access token evicting the last). Any other
/// state is a [`Wide`] on the heap; every change settles back to the
/// inline form when it can, so two families in the same state compare
/// equal.
#[derive(Default, Clone, Debug, PartialEq, Eq)]
pub(super) enum Family {
    /// No record.
    #[default]
    Empty,
    /// One record, in slot 0, and no free slot.
    One([u8; 16]),
    /// Anything else.
    Wide(Box<Wide>),
}

/// A family's slots in general.
#[derive(Default, Clone, Debug, PartialEq, Eq)]
pub(super) struct Wide {
    /// Each stored record's id and slot, in the order they were read (by
    /// slot) and put.
    live: VecDeque<([u8; 16], u32)>,
    /// Slots below `next` that no record holds.
    free: Vec<u32>,
    /// One past the highest slot taken (as read, or given since).
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

    /// The ids of the family's first `limit` records, oldest first
    /// (records are put in the order they are issued, and a load orders
    /// what it reads).
    fn ids(&self, limit: usize) -> Vec<[u8; 16]> {
        match self {
            Family::Empty => Vec::new(),
            Family::One(id) => vec![*id],
            Family::Wide(w) => w.live.iter().take(limit).map(|(id, _)| *id).collect(),
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

    /// Whether a record sits past slot 0: such a family is kept in memory
    /// (see [`Slots`]); any other reads back from the tree alike.
    fn is_wide(&self) -> bool {
        match self {
            Family::Wide(w) => w.live.iter().any(|(_, s)| *s != 0),
            _ => false,
        }
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        match self {
            Family::Empty => true,
            Family::One(_) => false,
            Family::Wide(w) => w.live.is_empty(),
        }
    }

    /// Notes a record found stored in `slot` while reading (free slots
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

    /// Once every record is read: the unused slots below the highest are
    /// free.
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

/// The slots of the families that hold a record past slot 0, by family.
type Wides = HashMap<[u8; 16], Family, BuildHasherDefault<IdHasher>>;

/// The families' slots, striped by family: a writer holds its family's
/// stripe from reading the family's slots to writing its record, so two
/// writers never choose the same slot.
///
/// Every family with a record past slot 0 is kept here (the load finds
/// them: [`Slots::loaded`]), so that its writers do not read all its
/// records each time (an exchange into a family of 10,000 live access
/// tokens would). A family not kept has at most one record, in slot 0
/// (every family of a refresh token whose exchanges each evict the last:
/// nearly all), and its slots are read off the access tree with one
/// lookup of that key ([`read_slot_0`]; not a scan, which in sled copies
/// the whole leaf).
pub(super) struct Slots {
    stripes: Box<[Mutex<Wides>]>,
    /// Families a load found with a record past slot 0, read and kept by
    /// [`Slots::finish_load`].
    found: Mutex<Vec<[u8; 16]>>,
}

/// The slots of a family that is not kept (so has no record past slot
/// 0), read from its slot-0 key (a record that does not decode or names
/// another family reads as none, as the load skips it).
///
/// # Errors
///
/// `io` (or `corrupt`) when sled fails to read the tree.
fn read_slot_0(access: &sled::Tree, family: &[u8; 16]) -> Result<Family> {
    let v = access
        .get(super::access_key(family, 0))
        .map_err(super::io)?;
    Ok(match v.map(|v| crate::codec::decode_access(&v)) {
        Some(Ok(rec)) if rec.refresh_id == *family => Family::One(rec.id),
        _ => Family::Empty,
    })
}

/// The slots of `family`'s stored access records, read from the access
/// tree: the keys under its prefix (a key of another layout, or a record
/// that does not decode or names another family, is skipped, as the load
/// skips it; its slot reads as free).
///
/// # Errors
///
/// `io` (or `corrupt`) when sled fails to read the tree.
pub(super) fn read(access: &sled::Tree, family: &[u8; 16]) -> Result<Family> {
    // Oldest first, as the records are put while the store runs: by issue
    // time, then by the order of issue an access id carries.
    let mut found: Vec<(u64, u64, [u8; 16], u32)> = Vec::new();
    for kv in access.scan_prefix(family) {
        let (k, v) = kv.map_err(super::io)?;
        if let (Some(slot), Ok(rec)) = (super::slot_of(&k), crate::codec::decode_access(&v)) {
            if rec.refresh_id == *family {
                found.push((
                    rec.issued_at,
                    crate::token::issue_order(&rec.id),
                    rec.id,
                    slot,
                ));
            }
        }
    }
    found.sort_unstable();
    let mut fam = Family::default();
    for (_, _, id, slot) in found {
        fam.loaded(id, slot);
    }
    fam.finish_load();
    Ok(fam)
}

/// Some stripes, locked (in stripe order) by a writer of a batch: it plans
/// on copies of the families' slots, and puts them back only if the write
/// succeeded.
pub(super) struct Locked<'a> {
    stripes: Vec<(usize, MutexGuard<'a, Wides>)>,
}

impl Locked<'_> {
    fn stripe(&mut self, family: &[u8; 16]) -> &mut Wides {
        let i = shard_of(family);
        let at = self
            .stripes
            .iter()
            .position(|(s, _)| *s == i)
            .expect("the stripes of every family of the batch are locked");
        &mut self.stripes[at].1
    }

    /// A copy of the family's slots, to plan on.
    ///
    /// # Errors
    ///
    /// Those of [`read`].
    pub(super) fn copy(&mut self, access: &sled::Tree, family: &[u8; 16]) -> Result<Family> {
        match self.stripe(family).get(family) {
            Some(f) => Ok(f.clone()),
            None => read_slot_0(access, family),
        }
    }

    /// Puts planned families back, once the batch is written.
    pub(super) fn put_back(&mut self, planned: Vec<([u8; 16], Family)>) {
        for (id, f) in planned {
            let stripe = self.stripe(&id);
            if f.is_wide() {
                stripe.insert(id, f);
            } else {
                stripe.remove(&id);
            }
        }
    }
}

impl Slots {
    pub(super) fn new() -> Slots {
        Slots {
            stripes: (0..SHARDS).map(|_| Mutex::default()).collect(),
            found: Mutex::default(),
        }
    }

    /// Runs `f` on the family's slots under its stripe's lock; `f` changes
    /// them only once its write succeeded.
    ///
    /// # Errors
    ///
    /// Those of [`read`], and `f`'s.
    pub(super) fn with<R>(
        &self,
        access: &sled::Tree,
        family: &[u8; 16],
        f: impl FnOnce(&mut Family) -> Result<R>,
    ) -> Result<R> {
        let mut stripe = self.stripes[shard_of(family)].lock();
        let mut fam = match stripe.remove(family) {
            Some(fam) => fam,
            None => read_slot_0(access, family)?,
        };
        let r = f(&mut fam);
        if fam.is_wide() {
            stripe.insert(*family, fam);
        }
        r
    }

    /// Locks the stripes of `families`, in stripe order.
    pub(super) fn lock(&self, families: impl Iterator<Item = [u8; 16]>) -> Locked<'_> {
        let mut idx: Vec<usize> = families.map(|f| shard_of(&f)).collect();
        idx.sort_unstable();
        idx.dedup();
        Locked {
            stripes: idx
                .into_iter()
                .map(|i| (i, self.stripes[i].lock()))
                .collect(),
        }
    }

    /// Forgets everything (before a load).
    pub(super) fn clear(&self) {
        for s in self.stripes.iter() {
            s.lock().clear();
        }
        self.found.lock().clear();
    }

    /// Notes a record found stored in `slot` of `family` while loading
    /// (from several threads at once): a slot past 0 makes the family one
    /// to keep.
    pub(super) fn loaded(&self, family: &[u8; 16], slot: u32) {
        if slot != 0 {
            self.found.lock().push(*family);
        }
    }

    /// Once every record is loaded: the families found with a record past
    /// slot 0, read from `access` and kept.
    ///
    /// # Errors
    ///
    /// Those of [`read`].
    pub(super) fn finish_load(&self, access: &sled::Tree) -> Result<()> {
        let mut found = std::mem::take(&mut *self.found.lock());
        found.sort_unstable();
        found.dedup();
        for family in found {
            let fam = read(access, &family)?;
            if fam.is_wide() {
                self.stripes[shard_of(&family)].lock().insert(family, fam);
            }
        }
        Ok(())
    }

    /// The ids of `family`'s first `limit` stored records, oldest first:
    /// from memory for a family kept here, else from its slot-0 key (one
    /// lookup, not a scan).
    ///
    /// # Errors
    ///
    /// Those of [`read_slot_0`].
    pub(super) fn ids(
        &self,
        access: &sled::Tree,
        family: &[u8; 16],
        limit: usize,
    ) -> Result<Vec<[u8; 16]>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let stripe = self.stripes[shard_of(family)].lock();
        match stripe.get(family) {
            Some(f) => Ok(f.ids(limit)),
            None => Ok(read_slot_0(access, family)?.ids(limit)),
        }
    }

    /// Forgets a family (its records were removed outside a batch).
    pub(super) fn drop_family(&self, family: &[u8; 16]) {
        self.stripes[shard_of(family)].lock().remove(family);
    }

    /// The family's slots, if they are kept in memory (for tests).
    #[cfg(test)]
    pub(super) fn kept(&self, family: &[u8; 16]) -> Option<Family> {
        self.stripes[shard_of(family)].lock().get(family).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes an access record of `family` issued at `issued_at` under
    /// the key of `slot`.
    fn put_record(access: &sled::Tree, family: u8, id: [u8; 16], issued_at: u64, slot: u32) {
        let rec = crate::codec::AccessRecord {
            id,
            refresh_id: [family; 16],
            issued_at,
            expires_at: issued_at + 1,
            revoked: false,
            verifier: [0; 32],
            scopes: None,
        };
        let v = crate::codec::encode_access(&rec).unwrap();
        access
            .insert(super::super::access_key(&[family; 16], slot), v)
            .unwrap();
    }

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
    fn reading_finds_the_gaps() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let access = db.open_tree("access").unwrap();
        let put = |family: u8, id: u8, slot: u32| put_record(&access, family, [id; 16], 1, slot);
        put(5, 1, 4);
        put(5, 2, 1);
        // Skipped: a record under another family's key, a value that does
        // not decode, a key of another layout.
        access
            .insert(super::super::access_key(&[5; 16], 3), &b"junk"[..])
            .unwrap();
        access.insert([5u8; 17], &b"junk"[..]).unwrap();
        let f = read(&access, &[5; 16]).unwrap();
        let Family::Wide(w) = &f else {
            panic!("two records in slots 4 and 1 are held wide: {f:?}")
        };
        assert_eq!(w.next, 5);
        let mut free = w.free.clone();
        free.sort_unstable();
        assert_eq!(free, vec![0, 2, 3]);
        assert_eq!(f.slot_of(&[1; 16]), Some(4));
        assert_eq!(f.slot_of(&[2; 16]), Some(1));
        // One record in slot 0 reads inline; alone in slot 2, it is wide
        // with slots 0 and 1 free; no record: empty.
        put(6, 7, 0);
        put(8, 9, 2);
        assert_eq!(read(&access, &[6; 16]).unwrap(), Family::One([7; 16]));
        let f = read(&access, &[8; 16]).unwrap();
        assert_eq!((f.slot_of(&[9; 16]), f.free_slot()), (Some(2), 1));
        assert_eq!(read(&access, &[7; 16]).unwrap(), Family::Empty);
        // Under its stripe's lock, the same.
        let slots = Slots::new();
        let got = slots.with(&access, &[6; 16], |f| Ok(f.clone())).unwrap();
        assert_eq!(got, Family::One([7; 16]));
    }

    /// A family read from the tree lists its records oldest first (by
    /// issue time, then by the order of issue the ids carry), whatever
    /// slots they sit in; `ids` answers the same for a kept family and one
    /// read off its slot-0 key, and new records come after.
    #[test]
    fn reading_orders_a_family_by_issue() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let access = db.open_tree("access").unwrap();
        let id = |order: u8, tail: u8| {
            let mut id = [tail; 16];
            id[1..8].copy_from_slice(&[0, 0, 0, 0, 0, 0, order]);
            id
        };
        let put = |family: u8, id: [u8; 16], issued_at: u64, slot: u32| {
            put_record(&access, family, id, issued_at, slot)
        };
        // Slot order, id order and issue order all differ.
        put(5, id(2, 1), 100, 0);
        put(5, id(1, 9), 100, 1);
        put(5, id(9, 3), 99, 2);
        put(5, id(0, 7), 101, 3);
        let oldest_first = vec![id(9, 3), id(1, 9), id(2, 1), id(0, 7)];
        assert_eq!(
            read(&access, &[5; 16]).unwrap().ids(usize::MAX),
            oldest_first
        );
        let slots = Slots::new();
        slots.loaded(&[5; 16], 3);
        slots.finish_load(&access).unwrap();
        assert_eq!(
            slots.ids(&access, &[5; 16], usize::MAX).unwrap(),
            oldest_first
        );
        assert_eq!(slots.ids(&access, &[5; 16], 2).unwrap(), oldest_first[..2]);
        assert!(slots.ids(&access, &[5; 16], 0).unwrap().is_empty());
        slots
            .with(&access, &[5; 16], |f| {
                f.replace(&id(9, 3), id(3, 4));
                Ok(())
            })
            .unwrap();
        assert_eq!(
            slots.ids(&access, &[5; 16], usize::MAX).unwrap(),
            vec![id(1, 9), id(2, 1), id(0, 7), id(3, 4)]
        );
        put(6, id(4, 4), 100, 0);
        assert_eq!(
            slots.ids(&access, &[6; 16], usize::MAX).unwrap(),
            vec![id(4, 4)]
        );
        assert!(slots.ids(&access, &[7; 16], usize::MAX).unwrap().is_empty());
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
