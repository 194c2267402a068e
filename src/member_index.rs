//! A compact map from a member's names (organization and user id) to a
//! number, for the loads that look up the member of every token.
//!
//! An open hands over millions of refresh records, each naming its member,
//! while writing memory's tables at random: whatever a lookup reads has
//! likely left the cache by the next lookup of the same member. A map of
//! `String` keys reads, per lookup, its buckets and then each key's bytes
//! wherever the heap put them (in a 10M open, two such lookups per record
//! took a third of the open). This one keeps each member in a slot of one
//! cache line: the member's number, a tag of the names' hash, and the
//! names themselves when they are short (as ids are). A lookup reads one
//! slot and, when the tag matches, compares the names it holds; longer
//! names are compared where the index keeps every member's names, one
//! after the other, in one buffer. Exact: a tag only picks what to
//! compare. (`docs/performance.md`, "Members found in one cache line
//! during the open", has what it saved.)
//!
//! The hash is std's keyed SipHash (`RandomState`): names come from users,
//! and a map whose hash they could predict could be made to collide.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

/// How many bytes of names (organization and user id together) a slot
/// holds: those of longer names are compared where [`MemberIndex`] keeps
/// every member's names.
const INLINE: usize = 54;

/// A slot: the member's number plus one (0: empty), the high 32 bits of
/// its names' hash, and its names, when short enough, in the slot's own
/// cache line: a lookup that finds the tag compares bytes it already read.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Slot {
    number: u32,
    tag: u32,
    /// The two lengths when the names are inline, else `[u8::MAX; 2]`.
    lens: [u8; 2],
    inline: [u8; INLINE],
}

const EMPTY: Slot = Slot {
    number: 0,
    tag: 0,
    lens: [0; 2],
    inline: [0; INLINE],
};

/// Numbers of members by their names (see the module doc). Numbers are
/// dense, in the order of insertion, from 0.
pub(crate) struct MemberIndex {
    state: RandomState,
    /// A power of two long, at most half full.
    slots: Vec<Slot>,
    /// Every member's organization then user id, member after member.
    names: String,
    /// Where member `i`'s organization and user id end in `names` (its
    /// organization begins where member `i - 1`'s user id ends).
    ends: Vec<(usize, usize)>,
    /// Tests: every hash made to collide (one tag, four homes), so that
    /// every lookup compares names.
    #[cfg(test)]
    collide: bool,
}

impl Default for MemberIndex {
    fn default() -> Self {
        MemberIndex::new()
    }
}

impl MemberIndex {
    /// An empty index (no allocation until the first insert).
    pub(crate) fn new() -> MemberIndex {
        MemberIndex {
            state: RandomState::new(),
            slots: Vec::new(),
            names: String::new(),
            ends: Vec::new(),
            #[cfg(test)]
            collide: false,
        }
    }

    /// The names of member `i` (organization, user id).
    ///
    /// # Panics
    ///
    /// If `i` is not a number this index gave out.
    pub(crate) fn names(&self, i: u32) -> (&str, &str) {
        let i = i as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1].1 };
        let (org_end, user_end) = self.ends[i];
        (&self.names[start..org_end], &self.names[org_end..user_end])
    }

    fn hash(&self, org: &str, user: &str) -> u64 {
        let hash = self.state.hash_one((org, user));
        #[cfg(test)]
        if self.collide {
            return hash & 3;
        }
        hash
    }

    /// The slot where `hash`'s search begins.
    fn home(&self, hash: u64) -> usize {
        (hash as usize) & (self.slots.len() - 1)
    }

    /// Whether `slot` (taken) is the member named.
    fn holds(&self, slot: &Slot, org: &str, user: &str) -> bool {
        let (o, u) = (org.as_bytes(), user.as_bytes());
        match slot.lens {
            [ol, ul] if usize::from(ol) + usize::from(ul) <= INLINE => {
                let (ol, ul) = (usize::from(ol), usize::from(ul));
                ol == o.len()
                    && ul == u.len()
                    && slot.inline[..ol] == *o
                    && slot.inline[ol..ol + ul] == *u
            }
            _ => self.names(slot.number - 1) == (org, user),
        }
    }

    /// The number of the member named, or the empty slot where it would go.
    fn find(&self, hash: u64, org: &str, user: &str) -> Result<u32, usize> {
        let tag = (hash >> 32) as u32;
        let mut i = self.home(hash);
        loop {
            let s = &self.slots[i];
            if s.number == 0 {
                return Err(i);
            }
            if s.tag == tag && self.holds(s, org, user) {
                return Ok(s.number - 1);
            }
            i = (i + 1) & (self.slots.len() - 1);
        }
    }

    /// The number of the member named, if it holds it.
    pub(crate) fn get(&self, org: &str, user: &str) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        self.find(self.hash(org, user), org, user).ok()
    }

    /// The slot of member `n` named `org`, `user` with `hash`.
    fn slot_of(n: u32, hash: u64, org: &str, user: &str) -> Slot {
        let mut slot = Slot {
            number: n + 1,
            tag: (hash >> 32) as u32,
            lens: [u8::MAX; 2],
            inline: [0; INLINE],
        };
        let (o, u) = (org.as_bytes(), user.as_bytes());
        if o.len() + u.len() <= INLINE {
            // Both fit a byte: together they are at most `INLINE`.
            slot.lens = [o.len() as u8, u.len() as u8];
            slot.inline[..o.len()].copy_from_slice(o);
            slot.inline[o.len()..o.len() + u.len()].copy_from_slice(u);
        }
        slot
    }

    /// The number of the member named, given it now if it had none (the
    /// next number).
    pub(crate) fn get_or_insert(&mut self, org: &str, user: &str) -> u32 {
        if (self.ends.len() + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let hash = self.hash(org, user);
        match self.find(hash, org, user) {
            Ok(n) => n,
            Err(i) => {
                // The slot keeps the number plus one in 32 bits: more
                // members than that would need more memory than exists.
                let n = u32::try_from(self.ends.len())
                    .ok()
                    .filter(|&n| n < u32::MAX)
                    .expect("fewer than 2^32 - 1 members");
                self.names.push_str(org);
                let org_end = self.names.len();
                self.names.push_str(user);
                self.ends.push((org_end, self.names.len()));
                self.slots[i] = Self::slot_of(n, hash, org, user);
                n
            }
        }
    }

    /// Twice the slots (16 at first), every member placed again.
    fn grow(&mut self) {
        let len = (self.slots.len() * 2).max(16);
        let mut slots = vec![EMPTY; len];
        for n in 0..self.ends.len() as u32 {
            let (org, user) = self.names(n);
            let hash = self.hash(org, user);
            let mut i = (hash as usize) & (len - 1);
            while slots[i].number != 0 {
                i = (i + 1) & (len - 1);
            }
            slots[i] = Self::slot_of(n, hash, org, user);
        }
        self.slots = slots;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_that_join_alike_are_different_members() {
        let mut ix = MemberIndex::new();
        let a = ix.get_or_insert("ab", "c");
        let b = ix.get_or_insert("a", "bc");
        assert_ne!(a, b);
        assert_eq!(ix.names(a), ("ab", "c"));
        assert_eq!(ix.names(b), ("a", "bc"));
        assert_eq!(ix.get("abc", ""), None);
        // Names too long for a slot, and names that fill it exactly.
        let long = "o".repeat(INLINE);
        let c = ix.get_or_insert(&long, "u");
        let d = ix.get_or_insert(&long, "");
        let e = ix.get_or_insert(&long[1..], "u");
        assert_eq!([c, d, e], [2, 3, 4]);
        assert_eq!(ix.get(&long, "u"), Some(c));
        assert_eq!(ix.get(&long, ""), Some(d));
        assert_eq!(ix.get(&long[1..], "u"), Some(e));
        assert_eq!(ix.get(&long[1..], ""), None);
        assert_eq!(ix.names(c), (long.as_str(), "u"));
    }

    proptest! {
        /// Against a `HashMap`: every member met gets the next number, once,
        /// and is found by its names, through the table's growth; names
        /// never met are not found. Also with every hash colliding.
        #[test]
        fn each_member_has_one_number(
            met in proptest::collection::vec(("[a-c]{0,3}|o{50,60}", "[a-c]{0,3}"), 0..200),
            asked in proptest::collection::vec(("[a-d]{0,3}|o{50,60}", "[a-d]{0,3}"), 0..50),
            collide: bool,
        ) {
            let mut ix = MemberIndex::new();
            // Colliding hashes: every lookup decides by the names alone.
            ix.collide = collide;
            let mut model = std::collections::HashMap::new();
            for (org, user) in &met {
                let next = model.len() as u32;
                let want = *model.entry((org.clone(), user.clone())).or_insert(next);
                prop_assert_eq!(ix.get_or_insert(org, user), want);
                prop_assert_eq!(ix.names(want), (org.as_str(), user.as_str()));
            }
            for (org, user) in met.iter().chain(&asked) {
                prop_assert_eq!(
                    ix.get(org, user),
                    model.get(&(org.clone(), user.clone())).copied()
                );
            }
        }
    }
}
