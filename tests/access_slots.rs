//! Access records live in per-family slots (schema version 2): an exchange
//! past the cap replaces the oldest record in one write. These tests check
//! that what verifies in memory is what verifies after a reopen, that the
//! store stays consistent (invariant 6) across eviction, purge, a lowered
//! cap, and the upgrade of a version-1 store.

mod common;

use common::raw_sled;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokenvault::{Actor, Config, IssuedToken, ManualClock, Role, TokenStore};

const T0: u64 = 1_800_000_000;

/// Opens the store, waiting a little if the previous handle's sled
/// background threads still hold the database lock (they release it
/// shortly after the handle is dropped).
fn open(path: &Path, cap: usize, clock: &ManualClock) -> TokenStore {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = common::store::keyed(path, 7)
            .max_access_per_refresh(cap)
            .clock(clock.clone())
            .open();
        match r {
            Err(tokenvault::Error::Io(e))
                if e.contains("lock") && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            r => return r.unwrap(),
        }
    }
}

/// A scratch directory, the path of a store in it and a clock at `T0`.
struct Scratch {
    _dir: tempfile::TempDir,
    path: PathBuf,
    clock: ManualClock,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        Scratch {
            _dir: dir,
            path,
            clock: ManualClock::new(T0),
        }
    }
}

fn verifies(store: &TokenStore, tokens: &[String]) -> Vec<bool> {
    tokens.iter().map(|t| store.verify(t).is_ok()).collect()
}

/// Makes ann the Owner of `acme` and issues her one refresh token.
fn ann_token(store: &TokenStore) -> IssuedToken {
    store.add_member("acme", "ann", Role::Owner).unwrap();
    store
        .generate(&Actor::new("acme", "ann"), Default::default())
        .unwrap()
}

/// Exchanges `refresh` and returns the access token it gives.
fn exchange(store: &TokenStore, refresh: &IssuedToken) -> String {
    store
        .exchange(refresh.token.expose())
        .unwrap()
        .access_token
        .expose()
        .to_string()
}

/// `n` exchanges of `refresh`, the clock moved one second before each.
fn exchange_ticking(
    store: &TokenStore,
    clock: &ManualClock,
    refresh: &IssuedToken,
    n: usize,
) -> Vec<String> {
    (0..n)
        .map(|_| {
            clock.advance(1);
            exchange(store, refresh)
        })
        .collect()
}

#[test]
fn eviction_survives_a_reopen() {
    let scratch = Scratch::new();
    let (path, clock) = (&scratch.path, &scratch.clock);
    let store = open(path, 3, clock);
    let t = ann_token(&store);
    let mut access = exchange_ticking(&store, clock, &t, 5);
    let expected = vec![false, false, true, true, true];
    assert_eq!(verifies(&store, &access), expected);
    store.flush().unwrap();
    drop(store);
    let store = open(path, 3, clock);
    assert_eq!(verifies(&store, &access), expected);
    assert_eq!(store.stats().unwrap().access_tokens, 3);
    let report = store.check_integrity().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.access_tokens, 3);
    // Slots now hold, in slot order, the 4th, 5th and 3rd token: the next
    // exchange must still evict the oldest (the 3rd), not slot 0.
    clock.advance(1);
    access.push(exchange(&store, &t));
    assert_eq!(
        verifies(&store, &access),
        vec![false, false, false, true, true, true]
    );
}

/// Among access tokens issued in the same second, the cap evicts the
/// first issued, before and after a reopen (after `close`, and after a
/// plain drop): the records say the second, and an access id carries its
/// order within it. Twenty families: a store that ordered a second's
/// tokens any other way (by id, say) would evict the wrong one in about
/// half of them.
#[test]
fn the_cap_evicts_the_first_issued_of_a_second_across_reopens() {
    let scratch = Scratch::new();
    let (path, clock) = (&scratch.path, &scratch.clock);
    let store = open(path, 2, clock);
    store.add_member("acme", "ann", Role::Owner).unwrap();
    let families: Vec<IssuedToken> = (0..20)
        .map(|_| {
            store
                .generate(&Actor::new("acme", "ann"), Default::default())
                .unwrap()
        })
        .collect();
    // The clock stands still: every token of this test is issued in the
    // same second.
    let mut issued: Vec<Vec<String>> = families
        .iter()
        .map(|t| vec![exchange(&store, t), exchange(&store, t)])
        .collect();
    // One more exchange of each family: only its last two verify.
    let exchange_all = |store: &TokenStore, issued: &mut Vec<Vec<String>>, when: &str| {
        for (t, tokens) in families.iter().zip(issued.iter_mut()) {
            tokens.push(exchange(store, t));
            let mut expected = vec![false; tokens.len()];
            let n = expected.len();
            expected[n - 2..].fill(true);
            assert_eq!(verifies(store, tokens), expected, "{when}");
        }
    };
    store.close().unwrap();
    let store = open(path, 2, clock);
    exchange_all(&store, &mut issued, "after close and open");
    store.flush().unwrap();
    drop(store);
    let store = open(path, 2, clock);
    exchange_all(&store, &mut issued, "after a drop and open");
    exchange_all(&store, &mut issued, "in the same process");
}

/// A family with records past slot 0 keeps every one across reopens
/// (after a plain drop, which loads from the trees, and after `close`,
/// which loads from the warm-start files): the open finds which families
/// to keep the slots of, so that a new record never takes a taken slot.
#[test]
fn a_family_past_slot_0_keeps_every_record_across_reopens() {
    let scratch = Scratch::new();
    let (path, clock) = (&scratch.path, &scratch.clock);
    let store = open(path, 10, clock);
    let t = ann_token(&store);
    let mut access = exchange_ticking(&store, clock, &t, 3);
    store.flush().unwrap();
    drop(store);
    let store = open(path, 10, clock);
    access.extend(exchange_ticking(&store, clock, &t, 2));
    store.close().unwrap();
    let store = open(path, 10, clock);
    access.extend(exchange_ticking(&store, clock, &t, 2));
    store.flush().unwrap();
    drop(store);
    let store = open(path, 10, clock);
    assert_eq!(verifies(&store, &access), vec![true; 7]);
    assert_eq!(store.stats().unwrap().access_tokens, 7);
    let report = store.check_integrity().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.access_tokens, 7);
}

#[test]
fn a_lowered_cap_evicts_the_surplus_on_the_next_exchange() {
    let scratch = Scratch::new();
    let (path, clock) = (&scratch.path, &scratch.clock);
    let store = open(path, 5, clock);
    let t = ann_token(&store);
    let mut access = exchange_ticking(&store, clock, &t, 5);
    drop(store);
    let store = open(path, 2, clock);
    // Nothing is evicted until the family is written again.
    assert_eq!(verifies(&store, &access), vec![true; 5]);
    clock.advance(1);
    access.push(exchange(&store, &t));
    let expected = vec![false, false, false, false, true, true];
    assert_eq!(verifies(&store, &access), expected);
    drop(store);
    let store = open(path, 2, clock);
    assert_eq!(verifies(&store, &access), expected);
    assert!(store.check_integrity().unwrap().is_clean());
}

#[test]
fn purge_frees_slots_and_keeps_the_last_exchange_time() {
    let scratch = Scratch::new();
    let (path, clock) = (&scratch.path, &scratch.clock);
    let store = open(path, 3, clock);
    let t = ann_token(&store);
    let ann = Actor::new("acme", "ann");
    for _ in 0..3 {
        store.exchange(t.token.expose()).unwrap();
    }
    clock.advance(3_600);
    let r = store.purge_expired(100).unwrap();
    assert_eq!(r.access_removed, 3);
    assert_eq!(store.list_own(&ann).unwrap()[0].last_refresh, Some(T0));
    drop(store);
    // The last exchange time outlives the records that told it.
    let store = open(path, 3, clock);
    assert_eq!(store.list_own(&ann).unwrap()[0].last_refresh, Some(T0));
    let access: Vec<_> = (0..3).map(|_| exchange(&store, &t)).collect();
    assert_eq!(verifies(&store, &access), vec![true; 3]);
    drop(store);
    let store = open(path, 3, clock);
    assert_eq!(verifies(&store, &access), vec![true; 3]);
    assert_eq!(
        store.list_own(&ann).unwrap()[0].last_refresh,
        Some(T0 + 3_600)
    );
    assert!(store.check_integrity().unwrap().is_clean());
}

#[test]
fn a_revoked_access_token_stays_revoked_in_its_slot() {
    let scratch = Scratch::new();
    let (path, clock) = (&scratch.path, &scratch.clock);
    let store = open(path, 3, clock);
    let t = ann_token(&store);
    let a = store.exchange(t.token.expose()).unwrap().access_token;
    let b = store.exchange(t.token.expose()).unwrap().access_token;
    store.revoke_access(a.expose()).unwrap();
    drop(store);
    let store = open(path, 3, clock);
    assert!(store.verify(a.expose()).is_err());
    assert!(store.verify(b.expose()).is_ok());
    assert!(store.check_integrity().unwrap().is_clean());
}

/// A store written with the version-1 layout (access records keyed by
/// refresh id ‖ access id) opens, is upgraded, and verifies the same.
#[test]
fn a_version_1_store_is_upgraded_on_open() {
    let scratch = Scratch::new();
    let (path, clock) = (&scratch.path, &scratch.clock);
    let store = open(path, 3, clock);
    let t = ann_token(&store);
    let mut access = exchange_ticking(&store, clock, &t, 3);
    let ids: Vec<_> = access
        .iter()
        .map(|a| tokenvault::token::inspect("tv", a).unwrap().1)
        .collect();
    store.flush().unwrap();
    drop(store);
    {
        // Rewrite the access tree to the version-1 layout.
        let raw = raw_sled(path);
        let tree = raw.open_tree("access").unwrap();
        let rows: Vec<_> = tree.iter().map(|kv| kv.unwrap()).collect();
        assert_eq!(rows.len(), 3);
        for (k, v) in rows {
            assert_eq!(k.len(), 20);
            // Find which access record this is by trying each id.
            let id = ids
                .iter()
                .find(|id| v.windows(16).any(|w| w == id.as_bytes()))
                .unwrap();
            let mut old = k[..16].to_vec();
            old.extend_from_slice(id.as_bytes());
            tree.remove(&k).unwrap();
            tree.insert(old, v).unwrap();
        }
        // Versions 1 and 2 also kept a member index on disk.
        raw.open_tree("refresh_by_member")
            .unwrap()
            .insert(b"\x04acme\x03ann0123456789abcdef", &b""[..])
            .unwrap();
        raw.open_tree("meta")
            .unwrap()
            .insert("schema", "1")
            .unwrap();
        raw.flush().unwrap();
    }
    let store = open(path, 3, clock);
    assert_eq!(verifies(&store, &access), vec![true; 3]);
    let report = store.check_integrity().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    // The member index is rebuilt from the records, not read from disk.
    let ann = Actor::new("acme", "ann");
    let listed = store.list_own(&ann).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id.to_string(), t.info.id.to_string());
    // The oldest is evicted first, as before the upgrade.
    clock.advance(1);
    access.push(exchange(&store, &t));
    assert_eq!(verifies(&store, &access), vec![false, true, true, true]);
    drop(store);
    let raw = raw_sled(path);
    assert_eq!(
        raw.open_tree("meta")
            .unwrap()
            .get("schema")
            .unwrap()
            .unwrap()
            .as_ref(),
        b"4"
    );
    let names = raw.tree_names();
    assert!(!names.iter().any(|n| n.as_ref() == b"refresh_by_member"));
    let tree = raw.open_tree("access").unwrap();
    assert!(tree.iter().keys().all(|k| k.unwrap().len() == 20));
}

#[test]
fn durable_exchange_with_slots() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let store = Config::new(&path)
        .durable_exchange(true)
        .max_access_per_refresh(2)
        .access_ttl(Duration::from_secs(60))
        .open()
        .unwrap();
    let t = ann_token(&store);
    let grants: Vec<_> = (0..4).map(|_| exchange(&store, &t)).collect();
    assert_eq!(verifies(&store, &grants), vec![false, false, true, true]);
    assert!(store.check_integrity().unwrap().is_clean());
}
