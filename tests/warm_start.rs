//! Warm start: `close` copies the token records into files the next open
//! reads instead of sled's trees. The open that reads them must see what an
//! open reading the trees sees; files the database no longer vouches for
//! (written before later writes, or damaged) must never be read.

mod common;

use std::path::{Path, PathBuf};

use common::raw_sled;
use tokenvault::{
    Actor, Config, GenerateOptions, ManualClock, RevokeScope, Role, StoreKey, TokenStore,
};

const T0: u64 = 1_800_000_000;

fn open(path: &Path, clock: &ManualClock) -> TokenStore {
    common::store::keyed(path, 5)
        .clock(clock.clone())
        .max_access_per_refresh(3)
        .open()
        .unwrap()
}

/// A directory for a store, the store's path in it, and its clock.
fn fresh() -> (tempfile::TempDir, PathBuf, ManualClock) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.db");
    (dir, path, ManualClock::new(T0))
}

fn warm_dir(path: &Path) -> PathBuf {
    path.join("warm-start")
}

/// Every token string made by [`populate`], for verification.
struct Made {
    refresh: Vec<String>,
    access: Vec<String>,
}

/// The text of an access token exchanged for `refresh`.
fn exchange(store: &TokenStore, refresh: &str) -> String {
    let grant = store.exchange(refresh).unwrap();
    grant.access_token.expose().to_string()
}

/// A store with a bit of everything: roles, a demoted and a removed member,
/// revoked tokens (one by one, a member's all, an org's cutoff), evicted,
/// revoked and expired access tokens, exchanges without access record left.
fn populate(store: &TokenStore, clock: &ManualClock) -> Made {
    let mut made = Made {
        refresh: Vec::new(),
        access: Vec::new(),
    };
    for org in ["acme", "globex"] {
        store.add_member(org, "owner", Role::Owner).unwrap();
        for (user, role) in [
            ("ada", Role::Admin),
            ("bob", Role::User),
            ("cy", Role::User),
            ("di", Role::Stakeholder),
        ] {
            store.add_member(org, user, role).unwrap();
        }
        let owner = Actor::new(org, "owner");
        for (n, user) in ["owner", "ada", "bob", "cy", "di"].iter().enumerate() {
            let me = Actor::new(org, *user);
            for k in 0..4 {
                let t = if k == 3 {
                    store
                        .assign(&owner, user, GenerateOptions::default().label("assigned"))
                        .unwrap()
                } else {
                    let opts = GenerateOptions::default().label(format!("{user} {k}"));
                    let opts = if k == 2 { opts.expires_in(3_600) } else { opts };
                    store.generate(&me, opts).unwrap()
                };
                // 0 to 4 exchanges: the fourth evicts the oldest.
                for _ in 0..(n + k) % 5 {
                    made.access.push(exchange(store, t.token.expose()));
                    clock.advance(7);
                }
                if k == 1 && n % 2 == 0 {
                    store.revoke(&owner, &t.info.id, Some("test")).unwrap();
                }
                made.refresh.push(t.token.expose().to_string());
            }
        }
        store.set_role(org, "ada", Role::User).unwrap();
        store.remove_member(org, "cy").unwrap();
        store
            .revoke_all(&owner, RevokeScope::Member("bob".into()), Some(T0 + 30))
            .unwrap();
    }
    store.revoke_access(&made.access[1]).unwrap();
    store
        .revoke_all(
            &Actor::new("globex", "owner"),
            RevokeScope::Org,
            Some(T0 + 20),
        )
        .unwrap();
    // Some access tokens expire; a purge drops them, leaving families
    // whose last exchange only the store's own record remembers.
    clock.advance(3_000);
    for _ in 0..3 {
        let t = store
            .generate(&Actor::new("acme", "di"), GenerateOptions::default())
            .unwrap();
        made.access.push(exchange(store, t.token.expose()));
        made.refresh.push(t.token.expose().to_string());
    }
    clock.advance(1_000);
    while store.purge_expired(1_000).unwrap().more {}
    made
}

/// What a user of the store can see of it: every token verified, every
/// list of every member, the counts.
fn observe(store: &TokenStore, made: &Made) -> Vec<String> {
    let mut seen = Vec::new();
    for t in &made.refresh {
        seen.push(format!(
            "{:?}",
            store.verify_refresh(t).map(|i| (i.id, i.state))
        ));
    }
    for t in &made.access {
        seen.push(format!("{:?}", store.verify(t)));
    }
    for org in ["acme", "globex"] {
        for user in ["owner", "ada", "bob", "cy", "di"] {
            let me = Actor::new(org, user);
            seen.push(format!("{:?}", store.list_own(&me)));
            seen.push(format!("{:?}", store.list_org(&me)));
        }
    }
    let mut stats = store.stats().unwrap();
    stats.disk_bytes = 0;
    stats.warm_start = false;
    seen.push(format!("{stats:?}"));
    // Without the audit events: denied calls above add some.
    let mut report = store.check_integrity().unwrap();
    report.events = 0;
    seen.push(format!("{report:?}"));
    seen
}

/// Fails at the first entry where two observations differ.
fn assert_same(got: &[String], want: &[String], what: &str) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g, w, "{what}: entry {i} differs");
    }
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
}

/// Whether the meta tree holds a warm-start marker.
fn has_marker(path: &Path) -> bool {
    let db = raw_sled(path);
    let has = db
        .open_tree("meta")
        .unwrap()
        .contains_key("warm_start")
        .unwrap();
    drop(db);
    has
}

#[test]
fn a_warm_open_sees_what_a_cold_open_sees() {
    let (_dir, path, clock) = fresh();
    let store = open(&path, &clock);
    let made = populate(&store, &clock);
    let before = observe(&store, &made);
    store.close().unwrap();
    assert!(warm_dir(&path).is_dir(), "close wrote no warm-start files");
    assert!(has_marker(&path));

    let store = open(&path, &clock);
    assert!(store.stats().unwrap().warm_start, "the open read no files");
    assert!(!warm_dir(&path).exists(), "the open left its files behind");
    let warm = observe(&store, &made);
    assert_same(&warm, &before, "a warm open and the store closed");
    // Dropped without `close`: the next open reads the trees.
    drop(store);
    assert!(!has_marker(&path));
    let store = open(&path, &clock);
    assert!(!store.stats().unwrap().warm_start);
    let cold = observe(&store, &made);
    assert_same(&cold, &warm, "cold and warm opens");
    // Whatever is not in the observation still behaves alike: the cap
    // evicts the oldest access token of a family in both.
    let fam = made.refresh.last().unwrap();
    let first = store.exchange(fam).unwrap();
    for _ in 0..3 {
        store.exchange(fam).unwrap();
    }
    assert!(store.verify(first.access_token.expose()).is_err());
}

#[test]
fn the_warm_files_are_what_the_open_reads() {
    // A refresh record deleted from sled's tree behind the store's back (the
    // marker left in place) is still loaded: the open read the files, not
    // the tree. (`verify` reads memory only.)
    let (_dir, path, clock) = fresh();
    let store = open(&path, &clock);
    store.add_member("acme", "ann", Role::Owner).unwrap();
    let ann = Actor::new("acme", "ann");
    let t = store.generate(&ann, GenerateOptions::default()).unwrap();
    let grant = store.exchange(t.token.expose()).unwrap();
    store.close().unwrap();
    let db = raw_sled(&path);
    let removed = db
        .open_tree("refresh")
        .unwrap()
        .remove(t.info.id.as_bytes())
        .unwrap();
    assert!(removed.is_some());
    db.flush().unwrap();
    drop(db);
    let store = open(&path, &clock);
    assert!(store.stats().unwrap().warm_start);
    let who = store.verify(grant.access_token.expose()).unwrap();
    assert_eq!(who.refresh_id, t.info.id);
    // Without the files (dropped, not closed), the tree is read: the access
    // token has no parent.
    drop(store);
    let store = open(&path, &clock);
    assert!(store.verify(grant.access_token.expose()).is_err());
}

#[test]
fn writes_after_a_warm_open_outlive_the_files_it_read() {
    let (dir, path, clock) = fresh();
    let store = open(&path, &clock);
    store.add_member("acme", "ann", Role::Owner).unwrap();
    store.add_member("acme", "bob", Role::User).unwrap();
    let ann = Actor::new("acme", "ann");
    let bob = Actor::new("acme", "bob");
    let doomed = store.generate(&bob, GenerateOptions::default()).unwrap();
    let grant = store.exchange(doomed.token.expose()).unwrap();
    store.close().unwrap();
    // Keep a copy of the files this close wrote.
    let saved = dir.path().join("saved");
    std::fs::create_dir(&saved).unwrap();
    for e in std::fs::read_dir(warm_dir(&path)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), saved.join(e.file_name())).unwrap();
    }

    let store = open(&path, &clock);
    store.revoke(&ann, &doomed.info.id, None).unwrap();
    store.set_role("acme", "bob", Role::Stakeholder).unwrap();
    let later = store.generate(&ann, GenerateOptions::default()).unwrap();
    // A crash: no close.
    drop(store);
    // The old files put back where the store keeps them.
    std::fs::create_dir(warm_dir(&path)).unwrap();
    for e in std::fs::read_dir(&saved).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), warm_dir(&path).join(e.file_name())).unwrap();
    }

    let store = open(&path, &clock);
    assert!(!store.stats().unwrap().warm_start, "stale files were read");
    assert!(store.verify_refresh(doomed.token.expose()).is_err());
    assert!(store.verify(grant.access_token.expose()).is_err());
    assert_eq!(
        store.verify_refresh(later.token.expose()).unwrap().id,
        later.info.id
    );
    assert_eq!(store.member_role("acme", "bob"), Some(Role::Stakeholder));
    assert!(!warm_dir(&path).exists(), "stale files were left behind");
}

#[test]
fn damaged_warm_files_are_not_read() {
    let clock = ManualClock::new(T0);
    // Bytes flipped, a file cut short, a file missing, a byte of every
    // entry's value, the last exchanges' file: each open falls back to
    // sled's trees and sees the store as it was closed, nothing of the
    // damaged files kept. (Otherwise the largest file is damaged: it holds
    // records whichever way the key space was cut.)
    type Damage = fn(&Path);
    let damages: [(&str, Damage); 5] = [
        ("flipped", |d| {
            let f = largest(d);
            let mut b = std::fs::read(&f).unwrap();
            let mut flipped = 0;
            for at in (100..b.len()).step_by(61) {
                b[at] ^= 0x01;
                flipped += 1;
            }
            assert!(flipped > 10, "too small a file to damage");
            std::fs::write(&f, b).unwrap();
        }),
        ("cut", |d| {
            let f = largest(d);
            let b = std::fs::read(&f).unwrap();
            std::fs::write(&f, &b[..b.len() - 3]).unwrap();
        }),
        ("missing", |d| std::fs::remove_file(largest(d)).unwrap()),
        // The layout intact, only the hash tells: every entry is handed
        // over before the damage is known.
        ("a byte of each value", |d| {
            let f = largest(d);
            let mut b = std::fs::read(&f).unwrap();
            let mut at = 8 + 16;
            let mut flipped = 0;
            while at + 6 <= b.len() {
                let klen = usize::from(b[at + 1]);
                let vlen = u32::from_le_bytes(b[at + 2..at + 6].try_into().unwrap()) as usize;
                let end = at + 6 + klen + vlen;
                if vlen > 0 {
                    b[end - 1] ^= 0x01;
                    flipped += 1;
                }
                at = end;
            }
            assert!(flipped > 10 && at == b.len(), "not the entry layout");
            std::fs::write(&f, b).unwrap();
        }),
        ("the last exchanges", |d| {
            let f = last_file(d);
            let mut b = std::fs::read(&f).unwrap();
            assert!(b.len() > 8 + 16, "no last exchange written");
            let end = b.len() - 1;
            b[end] ^= 0x01;
            std::fs::write(&f, b).unwrap();
        }),
    ];
    for (what, damage) in damages {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.db");
        let store = open(&path, &clock);
        let made = populate(&store, &clock);
        let before = observe(&store, &made);
        store.close().unwrap();
        damage(&warm_dir(&path));
        let store = open(&path, &clock);
        assert!(
            !store.stats().unwrap().warm_start,
            "{what}: damaged files read"
        );
        assert_same(&observe(&store, &made), &before, what);
        assert!(!warm_dir(&path).exists(), "{what}: files left behind");
    }
}

/// The warm-start file of the last exchanges: the last one.
fn last_file(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.parse::<u32>().unwrap()
        })
        .unwrap()
}

/// The largest warm-start file in `dir`.
fn largest(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap()
}

#[test]
fn a_wrong_key_or_unwritable_files_cost_only_the_warm_start() {
    let (_dir, path, clock) = fresh();
    let store = open(&path, &clock);
    let made = populate(&store, &clock);
    let before = observe(&store, &made);
    store.close().unwrap();
    // Opening with another key fails; the files are not used later.
    let wrong = Config::new(&path)
        .key(StoreKey::from_bytes([6; 32]))
        .clock(clock.clone())
        .open();
    assert!(matches!(wrong, Err(tokenvault::Error::KeyMismatch)));
    let store = open(&path, &clock);
    assert!(!store.stats().unwrap().warm_start);
    assert_same(&observe(&store, &made), &before, "after a wrong key");
    // A file where the directory of the files would go: `close` makes
    // none, and says nothing of it.
    drop(store);
    std::fs::write(warm_dir(&path), b"in the way").unwrap();
    let store = open(&path, &clock);
    store.close().unwrap();
    assert!(!has_marker(&path));
    let store = open(&path, &clock);
    assert!(!store.stats().unwrap().warm_start);
    assert_same(&observe(&store, &made), &before, "after files not written");
}
