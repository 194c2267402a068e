//! Who holds which refresh token, for the queries by owner: a list of an
//! organization's or a member's tokens, a bulk revocation, and the audit
//! trail's issue events (which sled keeps inside the token records).
//!
//! sled has no index tree by owner (schema 3 dropped it: it made every
//! issue a transaction over two trees). This table is the backend's own, in
//! memory: built by [`Owners::loaded`] from the refresh records while the
//! store loads, and changed only after a write succeeded, so it names
//! exactly the records on disk. It is not the store's memory: nothing above
//! `storage/` reads it.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use parking_lot::{Mutex, RwLock};

use crate::idmap::IdHasher;

/// How many tokens a member's list holds in a plain list; past it, in a
/// hash map.
const FEW: usize = 256;

/// A member's token ids, each with the sequence number of the issue event
/// its record carries (0: none). Most members hold few tokens (the cap on
/// live tokens is 100 unless the host raises it), and for them a list
/// sized to what it holds takes 24 bytes a token, where a hash map at its
/// usual load takes 32: a plain list, scanned, up to [`FEW`]; a hash map
/// beyond, so that a member with many tokens costs no more per call.
#[derive(Debug)]
enum Tokens {
    Few(Vec<([u8; 16], u64)>),
    Many(HashMap<[u8; 16], u64, BuildHasherDefault<IdHasher>>),
}

impl Default for Tokens {
    fn default() -> Self {
        Tokens::Few(Vec::new())
    }
}

impl Tokens {
    /// Notes `id` with `seq` (replacing the sequence number of an `id`
    /// already held).
    fn insert(&mut self, id: [u8; 16], seq: u64) {
        match self {
            Tokens::Few(v) => {
                if let Some(t) = v.iter_mut().find(|(x, _)| *x == id) {
                    t.1 = seq;
                } else if v.len() < FEW {
                    v.push((id, seq));
                } else {
                    let mut m: HashMap<_, _, _> = v.drain(..).collect();
                    m.insert(id, seq);
                    *self = Tokens::Many(m);
                }
            }
            Tokens::Many(m) => {
                m.insert(id, seq);
            }
        }
    }

    /// Notes each of `found` (ids and sequence numbers), none of which it
    /// holds (a load's records, each found once): a plain list is sized
    /// once for them, and not searched.
    fn extend(&mut self, found: impl ExactSizeIterator<Item = ([u8; 16], u64)>) {
        match self {
            Tokens::Few(v) => {
                v.reserve_exact(found.len());
                v.extend(found);
                if v.len() > FEW {
                    *self = Tokens::Many(v.drain(..).collect());
                }
            }
            Tokens::Many(m) => m.extend(found),
        }
    }

    fn remove(&mut self, id: &[u8; 16]) {
        match self {
            Tokens::Few(v) => {
                if let Some(i) = v.iter().position(|(x, _)| x == id) {
                    v.swap_remove(i);
                }
            }
            Tokens::Many(m) => {
                m.remove(id);
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Tokens::Few(v) => v.is_empty(),
            Tokens::Many(m) => m.is_empty(),
        }
    }

    /// Each token: its id and its issue event's sequence number.
    fn iter(&self) -> Box<dyn Iterator<Item = ([u8; 16], u64)> + '_> {
        match self {
            Tokens::Few(v) => Box::new(v.iter().copied()),
            Tokens::Many(m) => Box::new(m.iter().map(|(i, s)| (*i, *s))),
        }
    }
}

/// An organization's tokens, by user id.
type OrgTokens = HashMap<Box<str>, Tokens>;

/// Organizations' tokens, by organization id.
type Orgs = HashMap<Box<str>, OrgTokens>;

const SHARDS: usize = 32;

/// The tokens of `org`'s member `user` in `orgs`, an empty list made for
/// them if they had none (the names copied only then).
fn tokens_of<'a>(orgs: &'a mut Orgs, org: &str, user: &str) -> &'a mut Tokens {
    if !orgs.contains_key(org) {
        orgs.insert(org.into(), OrgTokens::default());
    }
    let users = orgs.get_mut(org).expect("just made");
    if !users.contains_key(user) {
        users.insert(user.into(), Tokens::default());
    }
    users.get_mut(user).expect("just made")
}

fn shard_of(org: &str) -> usize {
    let mut h = DefaultHasher::new();
    org.hash(&mut h);
    (h.finish() % SHARDS as u64) as usize
}

pub(super) struct Owners {
    shards: Box<[RwLock<Orgs>]>,
    /// Records found by each loader thread (by its part), merged into the
    /// table by [`Owners::finish_load`]: the threads do not meet on the
    /// table's locks.
    found: Box<[Mutex<Found>]>,
}

/// The longest organization and user ids, together, that a
/// [`MemberKey`] holds inline.
const INLINE_NAMES: usize = 46;

/// A member's organization and user ids as one key: inline when they are
/// short (as ids are), so that finding a member compares bytes in the
/// table's own slot rather than in two strings elsewhere on the heap (at
/// ten million tokens, those misses were most of the time a load spent
/// here).
#[derive(PartialEq, Eq, Hash)]
enum MemberKey {
    /// The lengths of the two ids, then their bytes, zero-padded.
    Inline([u8; INLINE_NAMES + 2]),
    /// Longer ids: the organization id's length (u32, little-endian),
    /// then both ids.
    Boxed(Box<[u8]>),
}

impl MemberKey {
    fn of(org: &str, user: &str) -> MemberKey {
        let (o, u) = (org.as_bytes(), user.as_bytes());
        if o.len() + u.len() <= INLINE_NAMES {
            let mut k = [0u8; INLINE_NAMES + 2];
            // Both lengths fit a byte: together they are at most 46.
            k[0] = o.len() as u8;
            k[1] = u.len() as u8;
            k[2..2 + o.len()].copy_from_slice(o);
            k[2 + o.len()..2 + o.len() + u.len()].copy_from_slice(u);
            MemberKey::Inline(k)
        } else {
            let len = u32::try_from(o.len()).unwrap_or(u32::MAX).to_le_bytes();
            MemberKey::Boxed([&len[..], o, u].concat().into_boxed_slice())
        }
    }
}

/// What one loader part found: each member met, once (its key, and its
/// ids), and each token as its member's number in `names`, its id and its
/// issue event's sequence number, in the order found.
#[derive(Default)]
struct Found {
    members: HashMap<MemberKey, u32>,
    names: Vec<(Box<str>, Box<str>)>,
    tokens: Vec<(u32, [u8; 16], u64)>,
}

impl Found {
    fn note(&mut self, org: &str, user: &str, id: [u8; 16], seq: u64) {
        let next = self.names.len() as u32;
        let member = *self.members.entry(MemberKey::of(org, user)).or_insert(next);
        if member == next {
            self.names.push((org.into(), user.into()));
        }
        self.tokens.push((member, id, seq));
    }
}

impl Owners {
    pub(super) fn new(parts: usize) -> Owners {
        Owners {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            found: (0..parts.max(1)).map(|_| Mutex::default()).collect(),
        }
    }

    /// Notes a stored refresh record found by loader part `part`.
    pub(super) fn loaded(&self, part: usize, org: &str, user: &str, id: [u8; 16], seq: u64) {
        let mut found = self.found[part % self.found.len()].lock();
        found.note(org, user, id, seq);
    }

    /// Forgets everything (before a load).
    pub(super) fn clear(&self) {
        for s in self.shards.iter() {
            s.write().clear();
        }
        for f in self.found.iter() {
            *f.lock() = Found::default();
        }
    }

    /// Merges what the loader threads found into the table, member by
    /// member: each member's list sized once for what one part found.
    pub(super) fn finish_load(&self) {
        for part in self.found.iter() {
            let Found {
                members,
                names,
                mut tokens,
            } = std::mem::take(&mut *part.lock());
            drop(members);
            tokens.sort_unstable_by_key(|t| t.0);
            for run in tokens.chunk_by(|a, b| a.0 == b.0) {
                let (org, user) = &names[run[0].0 as usize];
                let mut shard = self.shards[shard_of(org)].write();
                let held = tokens_of(&mut shard, org, user);
                held.extend(run.iter().map(|&(_, id, seq)| (id, seq)));
            }
        }
    }

    /// Notes a refresh record just written (`seq`: its issue event's, or 0).
    pub(super) fn issued(&self, org: &str, user: &str, id: [u8; 16], seq: u64) {
        let mut shard = self.shards[shard_of(org)].write();
        tokens_of(&mut shard, org, user).insert(id, seq);
    }

    /// Forgets a refresh record just deleted.
    pub(super) fn deleted(&self, org: &str, user: &str, id: &[u8; 16]) {
        let mut shard = self.shards[shard_of(org)].write();
        let Some(users) = shard.get_mut(org) else {
            return;
        };
        if let Some(tokens) = users.get_mut(user) {
            tokens.remove(id);
            if tokens.is_empty() {
                users.remove(user);
            }
        }
        if users.is_empty() {
            shard.remove(org);
        }
    }

    /// The ids of the tokens of `org` (of its member `user` only, when
    /// given), sorted.
    pub(super) fn ids(&self, org: &str, user: Option<&str>) -> Vec<[u8; 16]> {
        let shard = self.shards[shard_of(org)].read();
        let mut out: Vec<[u8; 16]> = match (shard.get(org), user) {
            (None, _) => Vec::new(),
            (Some(users), Some(u)) => users
                .get(u)
                .map(|t| t.iter().map(|(id, _)| id).collect())
                .unwrap_or_default(),
            (Some(users), None) => users
                .values()
                .flat_map(|t| t.iter().map(|(id, _)| id))
                .collect(),
        };
        out.sort_unstable();
        out
    }

    /// The tokens of `org` whose records carry their issue event, with its
    /// sequence number.
    pub(super) fn issue_events(&self, org: &str) -> Vec<([u8; 16], u64)> {
        let shard = self.shards[shard_of(org)].read();
        shard
            .get(org)
            .map(|users| {
                users
                    .values()
                    .flat_map(|t| t.iter().filter(|(_, s)| *s != 0))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Members are told apart however their ids split the same bytes, with
    /// short ids (held inline) and long ones (boxed), and across parts.
    #[test]
    fn members_whose_ids_join_alike_stay_apart() {
        let long = "o".repeat(40);
        let pairs: Vec<(String, String)> = vec![
            ("ab".into(), "c".into()),
            ("a".into(), "bc".into()),
            ("abc".into(), String::new()),
            (long.clone(), "u".repeat(10)),
            (format!("{long}u"), "u".repeat(9)),
            (long.clone(), "u".repeat(6)),
        ];
        assert!(MemberKey::of("ab", "c") != MemberKey::of("a", "bc"));
        assert!(matches!(
            MemberKey::of(&long, &"u".repeat(10)),
            MemberKey::Boxed(_)
        ));
        assert!(matches!(
            MemberKey::of(&long, &"u".repeat(6)),
            MemberKey::Inline(_)
        ));
        let o = Owners::new(2);
        for (i, (org, user)) in pairs.iter().enumerate() {
            // Each member's two tokens found by different parts.
            o.loaded(0, org, user, [i as u8; 16], 1);
            o.loaded(1, org, user, [100 + i as u8; 16], 0);
        }
        o.finish_load();
        for (i, (org, user)) in pairs.iter().enumerate() {
            assert_eq!(
                o.ids(org, Some(user)),
                vec![[i as u8; 16], [100 + i as u8; 16]],
                "{org}/{user}"
            );
        }
        assert_eq!(o.ids("ab", None).len(), 2);
        assert_eq!(o.ids(&long, None).len(), 4);
    }

    proptest::proptest! {
        /// A member's list answers as a hash map does, through its change
        /// from a plain list to a hash map past `FEW` tokens.
        #[test]
        fn a_members_list_behaves_as_a_hash_map(
            ops in proptest::collection::vec((0u8..4, 0u32..700, proptest::prelude::any::<u64>()), 1..300)
        ) {
            let id = |n: u32| {
                let mut k = [0u8; 16];
                k[..4].copy_from_slice(&n.to_le_bytes());
                k
            };
            let mut t = Tokens::default();
            let mut model: HashMap<[u8; 16], u64> = HashMap::new();
            let mut next_new = 1_000u32;
            let last = ops.len() - 1;
            for (step, (op, n, seq)) in ops.into_iter().enumerate() {
                match op {
                    0 | 1 => {
                        t.insert(id(n), seq);
                        model.insert(id(n), seq);
                    }
                    2 => {
                        t.remove(&id(n));
                        model.remove(&id(n));
                    }
                    _ => {
                        // A batch of ids it does not hold, as a load finds.
                        let batch: Vec<([u8; 16], u64)> = (0..n % 64)
                            .map(|i| (id(next_new + i), seq))
                            .collect();
                        next_new += n % 64;
                        model.extend(batch.iter().copied());
                        t.extend(batch.into_iter());
                    }
                }
                proptest::prop_assert_eq!(t.is_empty(), model.is_empty());
                if step % 16 == 0 || step == last {
                    let mut seen: Vec<([u8; 16], u64)> = t.iter().collect();
                    let mut want: Vec<([u8; 16], u64)> =
                        model.iter().map(|(i, s)| (*i, *s)).collect();
                    seen.sort_unstable();
                    want.sort_unstable();
                    proptest::prop_assert_eq!(seen, want);
                }
                if let Tokens::Few(v) = &t {
                    proptest::prop_assert!(v.len() <= FEW);
                }
            }
        }
    }

    /// A member's list of a few tokens is a plain list sized to them; past
    /// `FEW`, a hash map.
    #[test]
    fn few_tokens_sit_in_a_plain_list() {
        let o = Owners::new(1);
        for i in 0..100u8 {
            o.loaded(0, "acme", "ann", [i; 16], 1);
        }
        for i in 0..=FEW as u32 {
            let mut id = [7u8; 16];
            id[..4].copy_from_slice(&i.to_le_bytes());
            o.loaded(0, "acme", "bob", id, 0);
        }
        o.finish_load();
        let shard = o.shards[shard_of("acme")].read();
        let users = shard.get("acme").expect("acme");
        match users.get("ann") {
            Some(Tokens::Few(v)) => assert_eq!((v.len(), v.capacity()), (100, 100)),
            other => panic!("ann's 100 tokens: {other:?}"),
        }
        assert!(matches!(users.get("bob"), Some(Tokens::Many(m)) if m.len() == FEW + 1));
    }

    #[test]
    fn the_table_answers_by_organization_and_member() {
        let o = Owners::new(2);
        o.loaded(0, "acme", "ann", [2; 16], 7);
        o.loaded(1, "acme", "bob", [1; 16], 0);
        o.loaded(1, "other", "ann", [3; 16], 9);
        assert!(o.ids("acme", None).is_empty(), "not sorted in yet");
        o.finish_load();
        o.issued("acme", "ann", [4; 16], 11);
        assert_eq!(o.ids("acme", None), vec![[1; 16], [2; 16], [4; 16]]);
        assert_eq!(o.ids("acme", Some("ann")), vec![[2; 16], [4; 16]]);
        assert_eq!(o.ids("acme", Some("cat")), Vec::<[u8; 16]>::new());
        let mut ev = o.issue_events("acme");
        ev.sort_unstable();
        assert_eq!(ev, vec![([2; 16], 7), ([4; 16], 11)]);
        o.deleted("acme", "ann", &[2; 16]);
        o.deleted("acme", "ann", &[4; 16]);
        assert_eq!(o.ids("acme", None), vec![[1; 16]]);
        o.deleted("acme", "bob", &[1; 16]);
        assert!(o.shards[shard_of("acme")].read().get("acme").is_none());
        assert_eq!(o.ids("other", Some("ann")), vec![[3; 16]]);
        o.clear();
        assert!(o.ids("other", None).is_empty());
    }
}
