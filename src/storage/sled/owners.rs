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

/// A member's token ids, each with the sequence number of the issue event
/// its record carries (0: none).
type Tokens = HashMap<[u8; 16], u64, BuildHasherDefault<IdHasher>>;

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
                held.reserve(run.len());
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
                .map(|t| t.keys().copied().collect())
                .unwrap_or_default(),
            (Some(users), None) => users.values().flat_map(|t| t.keys().copied()).collect(),
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
                    .flat_map(|t| t.iter().filter(|(_, s)| **s != 0).map(|(i, s)| (*i, *s)))
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
