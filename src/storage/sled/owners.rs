//! Who holds which refresh token, for the queries by owner: a list of an
//! organization's or a member's tokens, a bulk revocation, and the audit
//! trail's issue events (which sled keeps inside the token records).
//!
//! sled has no index tree by owner (schema 3 dropped it: it made every
//! issue a transaction over two trees). This table is the backend's own, in
//! memory: built by [`Owners::loaded`] from the refresh records while the
//! store loads, and changed only after a write succeeded. It is not the
//! store's memory: nothing above `storage/` reads it.
//!
//! It keeps 12 bytes a token (in a member's plain list; more in the hash
//! maps of a member with many): the first [`PREFIX`] bytes of its id and
//! the sequence number of the issue event its record carries. The backend
//! reads the records themselves by that prefix (a range of the refresh
//! tree, whose keys are the ids) and keeps those of the owner asked for,
//! so an answer names exactly the records on disk whatever the table
//! holds twice: two ids that begin alike (ids are random: one pair in 2^48
//! within a member), or the entry a rewritten record left. Every stored
//! record of a member has an entry of its prefix in the member's list; an
//! entry's number is its record's, 0 when the record carries no issue
//! event, or [`SEQ_READ`] when the record must be read to learn it.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use parking_lot::{Mutex, RwLock};

use crate::member_index::MemberIndex;

/// How many of an id's first bytes the table keeps.
pub(super) const PREFIX: usize = 6;

/// The first [`PREFIX`] bytes of a refresh token's id.
pub(super) type Prefix = [u8; PREFIX];

/// An entry's sequence number when the record must be read to learn it:
/// when two records of a member begin alike and one of them is deleted
/// (the table cannot tell which one stays), or when the number does not
/// fit the entry's six bytes (2^48 events). Never an event's own number
/// in the entry.
pub(super) const SEQ_READ: u64 = (1 << 48) - 1;

/// How many tokens a member's list holds in a plain list; past it, in a
/// hash map.
const FEW: usize = 256;

/// One token of a member's list: its id's prefix and its issue event's
/// sequence number (see the module doc), in 12 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Entry([u8; 12]);

impl Entry {
    fn new(id: &[u8; 16], seq: u64) -> Entry {
        let mut e = [0u8; 12];
        e[..PREFIX].copy_from_slice(&id[..PREFIX]);
        e[PREFIX..].copy_from_slice(&seq.min(SEQ_READ).to_le_bytes()[..12 - PREFIX]);
        Entry(e)
    }

    fn prefix(&self) -> Prefix {
        first_bytes(&self.0)
    }

    fn seq(&self) -> u64 {
        let mut b = [0u8; 8];
        b[..12 - PREFIX].copy_from_slice(&self.0[PREFIX..]);
        u64::from_le_bytes(b)
    }

    fn to_be_read(self) -> Entry {
        let mut e = self.0;
        e[PREFIX..].copy_from_slice(&SEQ_READ.to_le_bytes()[..12 - PREFIX]);
        Entry(e)
    }
}

/// A prefix as a number, the key of [`Many`]'s maps.
fn number(p: &Prefix) -> u64 {
    let mut b = [0u8; 8];
    b[..PREFIX].copy_from_slice(p);
    u64::from_le_bytes(b)
}

fn prefix_of(n: u64) -> Prefix {
    first_bytes(&n.to_le_bytes())
}

/// For maps keyed by a prefix as a number: its bits are random (ids are),
/// and a multiplication spreads them to the high bits, which the map reads
/// as well as the low ones.
#[derive(Default)]
struct PrefixHasher(u64);

impl Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

type ByPrefix<V> = HashMap<u64, V, BuildHasherDefault<PrefixHasher>>;

/// The list of a member holding many tokens: one sequence number per
/// prefix ([`SEQ_READ`] when several records share the prefix), and how
/// many more records than one share each prefix that several share.
#[derive(Debug, Default)]
struct Many {
    seqs: ByPrefix<u64>,
    more: ByPrefix<u32>,
}

impl Many {
    fn insert(&mut self, e: Entry) {
        let key = number(&e.prefix());
        match self.seqs.get_mut(&key) {
            None => {
                self.seqs.insert(key, e.seq());
            }
            Some(seq) => {
                *seq = SEQ_READ;
                *self.more.entry(key).or_insert(0) += 1;
            }
        }
    }

    fn remove(&mut self, p: &Prefix) {
        let key = number(p);
        match self.more.get_mut(&key) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                self.more.remove(&key);
            }
            None => {
                self.seqs.remove(&key);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.seqs.len() + self.more.values().map(|n| *n as usize).sum::<usize>()
    }
}

/// A member's tokens. Most members hold few (the cap on live tokens is
/// 100 unless the host raises it): for them a plain list sized to what it
/// holds, 12 bytes a token, scanned; past [`FEW`], hash maps, so that a
/// member with many tokens costs no more per call.
#[derive(Debug)]
enum Tokens {
    Few(Vec<Entry>),
    Many(Many),
}

impl Default for Tokens {
    fn default() -> Self {
        Tokens::Few(Vec::new())
    }
}

impl Tokens {
    /// Notes a record written under `e`'s prefix. Two entries of one
    /// prefix in a plain list keep their numbers: each names the record
    /// that carries it.
    fn insert(&mut self, e: Entry) {
        match self {
            Tokens::Few(v) if v.len() < FEW => v.push(e),
            Tokens::Few(v) => {
                let mut m = Many::default();
                for x in v.drain(..).chain(std::iter::once(e)) {
                    m.insert(x);
                }
                *self = Tokens::Many(m);
            }
            Tokens::Many(m) => m.insert(e),
        }
    }

    /// Notes each of `found` (a load's records, each found once): a plain
    /// list is sized once for them.
    fn extend(&mut self, found: impl ExactSizeIterator<Item = Entry>) {
        match self {
            Tokens::Few(v) => {
                v.reserve_exact(found.len());
                v.extend(found);
                if v.len() > FEW {
                    let mut m = Many::default();
                    for x in v.drain(..) {
                        m.insert(x);
                    }
                    *self = Tokens::Many(m);
                }
            }
            Tokens::Many(m) => found.for_each(|e| m.insert(e)),
        }
    }

    /// Forgets one record of prefix `p`, just deleted. Which of several is
    /// unknown here: the others' numbers are then to be read.
    fn remove(&mut self, p: &Prefix) {
        match self {
            Tokens::Few(v) => {
                if let Some(i) = v.iter().position(|e| e.prefix() == *p) {
                    v.swap_remove(i);
                    for e in v.iter_mut().filter(|e| e.prefix() == *p) {
                        *e = e.to_be_read();
                    }
                }
            }
            Tokens::Many(m) => m.remove(p),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Tokens::Few(v) => v.is_empty(),
            Tokens::Many(m) => m.seqs.is_empty(),
        }
    }

    /// Each entry: a prefix and its number (a prefix that several records
    /// share comes once from the hash maps, with [`SEQ_READ`]).
    fn iter(&self) -> Box<dyn Iterator<Item = (Prefix, u64)> + '_> {
        match self {
            Tokens::Few(v) => Box::new(v.iter().map(|e| (e.prefix(), e.seq()))),
            Tokens::Many(m) => Box::new(m.seqs.iter().map(|(p, s)| (prefix_of(*p), *s))),
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

/// The first [`PREFIX`] bytes of `id`.
pub(super) fn prefix(id: &[u8; 16]) -> Prefix {
    first_bytes(id)
}

/// The first [`PREFIX`] bytes of `b` (at least that long).
fn first_bytes(b: &[u8]) -> Prefix {
    let mut p = [0u8; PREFIX];
    p.copy_from_slice(&b[..PREFIX]);
    p
}

pub(super) struct Owners {
    shards: Box<[RwLock<Orgs>]>,
    /// Records found by each loader thread (by its part), merged into the
    /// table by [`Owners::finish_load`]: the threads do not meet on the
    /// table's locks.
    found: Box<[Mutex<Found>]>,
}

/// What one loader part found: each member met, once (numbered by a
/// [`MemberIndex`], whose lookup reads one cache line), and each token as
/// its member's number and its entry, in the order found.
#[derive(Default)]
struct Found {
    members: MemberIndex,
    tokens: Vec<(u32, Entry)>,
}

impl Found {
    fn note(&mut self, org: &str, user: &str, id: [u8; 16], seq: u64) {
        let member = self.members.get_or_insert(org, user);
        self.tokens.push((member, Entry::new(&id, seq)));
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
                mut tokens,
            } = std::mem::take(&mut *part.lock());
            tokens.sort_unstable_by_key(|t| t.0);
            for run in tokens.chunk_by(|a, b| a.0 == b.0) {
                let (org, user) = members.names(run[0].0);
                let mut shard = self.shards[shard_of(org)].write();
                let held = tokens_of(&mut shard, org, user);
                held.extend(run.iter().map(|&(_, e)| e));
            }
        }
    }

    /// Notes a refresh record just written (`seq`: its issue event's, or 0).
    pub(super) fn issued(&self, org: &str, user: &str, id: [u8; 16], seq: u64) {
        let mut shard = self.shards[shard_of(org)].write();
        tokens_of(&mut shard, org, user).insert(Entry::new(&id, seq));
    }

    /// Forgets a refresh record just deleted.
    pub(super) fn deleted(&self, org: &str, user: &str, id: &[u8; 16]) {
        let mut shard = self.shards[shard_of(org)].write();
        let Some(users) = shard.get_mut(org) else {
            return;
        };
        if let Some(tokens) = users.get_mut(user) {
            tokens.remove(&prefix(id));
            if tokens.is_empty() {
                users.remove(user);
            }
        }
        if users.is_empty() {
            shard.remove(org);
        }
    }

    /// The prefixes of the ids of the tokens of `org` (of its member
    /// `user` only, when given), sorted, each once: every record of theirs
    /// has one of them (others may have them too).
    pub(super) fn prefixes(&self, org: &str, user: Option<&str>) -> Vec<Prefix> {
        let shard = self.shards[shard_of(org)].read();
        let mut out: Vec<Prefix> = match (shard.get(org), user) {
            (None, _) => Vec::new(),
            (Some(users), Some(u)) => users
                .get(u)
                .map(|t| t.iter().map(|(p, _)| p).collect())
                .unwrap_or_default(),
            (Some(users), None) => users
                .values()
                .flat_map(|t| t.iter().map(|(p, _)| p))
                .collect(),
        };
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The tokens of `org` whose records carry their issue event, or may
    /// ([`SEQ_READ`]): each prefix with its number.
    pub(super) fn issue_events(&self, org: &str) -> Vec<(Prefix, u64)> {
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

    impl Tokens {
        fn len(&self) -> usize {
            match self {
                Tokens::Few(v) => v.len(),
                Tokens::Many(m) => m.len(),
            }
        }
    }

    /// An entry is 12 bytes and gives back the prefix and the number it
    /// was made with; a number too large for it is to be read.
    #[test]
    fn an_entry_keeps_a_prefix_and_a_number_in_twelve_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 12);
        let id: [u8; 16] = std::array::from_fn(|i| i as u8 + 1);
        for seq in [0, 1, 7 << 40, SEQ_READ - 1] {
            let e = Entry::new(&id, seq);
            assert_eq!((e.prefix(), e.seq()), ([1, 2, 3, 4, 5, 6], seq));
            assert_eq!(e.to_be_read().seq(), SEQ_READ);
        }
        assert_eq!(Entry::new(&id, SEQ_READ).seq(), SEQ_READ);
        assert_eq!(Entry::new(&id, u64::MAX).seq(), SEQ_READ);
        assert_eq!(prefix_of(number(&prefix(&id))), prefix(&id));
    }

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
        let o = Owners::new(2);
        for (i, (org, user)) in pairs.iter().enumerate() {
            // Each member's two tokens found by different parts.
            o.loaded(0, org, user, [i as u8; 16], 1);
            o.loaded(1, org, user, [100 + i as u8; 16], 0);
        }
        o.finish_load();
        for (i, (org, user)) in pairs.iter().enumerate() {
            assert_eq!(
                o.prefixes(org, Some(user)),
                vec![[i as u8; PREFIX], [100 + i as u8; PREFIX]],
                "{org}/{user}"
            );
        }
        assert_eq!(o.prefixes("ab", None).len(), 2);
        assert_eq!(o.prefixes(&long, None).len(), 4);
    }

    proptest::proptest! {
        /// Through issues, deletions and loads of ids that often begin
        /// alike, and the list's change from a plain list to hash maps
        /// past `FEW` tokens, a member's list holds an entry per record:
        /// of its prefix, with its number or one to read, and every
        /// number it holds is a record's of that prefix.
        #[test]
        fn a_members_list_names_every_record(
            ops in proptest::collection::vec((0u8..4, 0u32..700, 0u64..(1 << 49)), 1..400)
        ) {
            // Ids of 8 prefixes: many records share one.
            let id = |n: u32| {
                let mut k = [0u8; 16];
                k[0] = (n % 8) as u8;
                k[8..12].copy_from_slice(&n.to_le_bytes());
                k
            };
            let mut t = Tokens::default();
            let mut model: HashMap<[u8; 16], u64> = HashMap::new();
            let mut next_new = 1_000u32;
            let last = ops.len() - 1;
            for (step, (op, n, seq)) in ops.into_iter().enumerate() {
                let seq = if n % 3 == 0 { 0 } else { seq };
                match op {
                    0 => {
                        // An issue: a new id.
                        next_new += 1;
                        t.insert(Entry::new(&id(next_new), seq));
                        model.insert(id(next_new), seq);
                    }
                    1 | 2 => {
                        // A deletion of a stored record, if there is one.
                        let held: Option<[u8; 16]> =
                            model.keys().min_by_key(|k| (k[8..12].to_vec(), n % 2)).copied();
                        let held = if op == 1 { held } else {
                            model.keys().find(|k| k[0] == (n % 8) as u8).copied()
                        };
                        if let Some(k) = held {
                            t.remove(&prefix(&k));
                            model.remove(&k);
                        }
                    }
                    _ => {
                        // A batch of new ids, as a load finds.
                        let batch: Vec<Entry> = (0..n % 64)
                            .map(|i| Entry::new(&id(next_new + 1 + i), seq + u64::from(i)))
                            .collect();
                        for i in 0..n % 64 {
                            model.insert(id(next_new + 1 + i), seq + u64::from(i));
                        }
                        next_new += n % 64;
                        t.extend(batch.into_iter());
                    }
                }
                proptest::prop_assert_eq!(t.is_empty(), model.is_empty());
                proptest::prop_assert_eq!(t.len(), model.len());
                if step % 16 == 0 || step == last {
                    let entries: Vec<(Prefix, u64)> = t.iter().collect();
                    for (k, s) in &model {
                        let want = (*s).min(SEQ_READ);
                        proptest::prop_assert!(
                            entries.iter().any(|(p, e)| *p == prefix(k) && (*e == want || *e == SEQ_READ)),
                            "record {:?} ({}) has no entry", k, s
                        );
                    }
                    for (p, e) in &entries {
                        if *e != SEQ_READ {
                            proptest::prop_assert!(
                                model.iter().any(|(k, s)| prefix(k) == *p && *s == *e),
                                "entry {:?} {} names no record", p, e
                            );
                        }
                    }
                }
                if let Tokens::Few(v) = &t {
                    proptest::prop_assert!(v.len() <= FEW);
                }
            }
        }
    }

    /// A member's list of a few tokens is a plain list sized to them; past
    /// `FEW`, hash maps.
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
        assert!(o.prefixes("acme", None).is_empty(), "not sorted in yet");
        o.finish_load();
        o.issued("acme", "ann", [4; 16], 11);
        assert_eq!(o.prefixes("acme", None), vec![[1; 6], [2; 6], [4; 6]]);
        assert_eq!(o.prefixes("acme", Some("ann")), vec![[2; 6], [4; 6]]);
        assert_eq!(o.prefixes("acme", Some("cat")), Vec::<Prefix>::new());
        let mut ev = o.issue_events("acme");
        ev.sort_unstable();
        assert_eq!(ev, vec![([2; 6], 7), ([4; 6], 11)]);
        o.deleted("acme", "ann", &[2; 16]);
        o.deleted("acme", "ann", &[4; 16]);
        assert_eq!(o.prefixes("acme", None), vec![[1; 6]]);
        o.deleted("acme", "bob", &[1; 16]);
        assert!(o.shards[shard_of("acme")].read().get("acme").is_none());
        assert_eq!(o.prefixes("other", Some("ann")), vec![[3; 6]]);
        o.clear();
        assert!(o.prefixes("other", None).is_empty());
    }

    /// Two tokens of a member whose ids begin alike: listed once by their
    /// prefix, each with its number; once one is deleted, the other's
    /// number is to be read (the table cannot tell which one went).
    #[test]
    fn a_deletion_among_ids_that_begin_alike_leaves_the_number_to_be_read() {
        let o = Owners::new(1);
        let (mut a, mut b) = ([5u8; 16], [5u8; 16]);
        a[15] = 1;
        b[15] = 2;
        o.issued("acme", "ann", a, 7);
        o.issued("acme", "ann", b, 8);
        assert_eq!(o.prefixes("acme", None), vec![[5; 6]]);
        let mut ev = o.issue_events("acme");
        ev.sort_unstable();
        assert_eq!(ev, vec![([5; 6], 7), ([5; 6], 8)]);
        o.deleted("acme", "ann", &a);
        assert_eq!(o.issue_events("acme"), vec![([5; 6], SEQ_READ)]);
        assert_eq!(o.prefixes("acme", Some("ann")), vec![[5; 6]]);
        o.deleted("acme", "ann", &b);
        assert!(o.prefixes("acme", None).is_empty());
    }
}
