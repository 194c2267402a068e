//! Which tokens a member holds is kept in memory (each member's list), not
//! in a stored index: lists, the audit and bulk revocation must still see
//! every stored token of a member removed and added again, before and
//! after a purge, a close and a reopen.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokenvault::{Actor, Error, ManualClock, RevokeScope, Role, TokenStore};

const T0: u64 = 1_800_000_000;

fn open(path: &Path, clock: &ManualClock) -> TokenStore {
    common::store::keyed(path, 7)
        .clock(clock.clone())
        .retention(Duration::from_secs(10))
        .open()
        .unwrap()
}

/// A scratch directory, the path of a store in it, and a clock at `T0`.
fn scratch() -> (tempfile::TempDir, PathBuf, ManualClock) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    (dir, path, ManualClock::new(T0))
}

/// A store with the Owner ann and the User bob of `acme`.
fn seeded(path: &Path, clock: &ManualClock) -> (TokenStore, Actor, Actor) {
    let store = open(path, clock);
    store.add_member("acme", "ann", Role::Owner).unwrap();
    store.add_member("acme", "bob", Role::User).unwrap();
    (store, Actor::new("acme", "ann"), Actor::new("acme", "bob"))
}

fn ids(v: &[tokenvault::TokenInfo]) -> Vec<String> {
    let mut x: Vec<String> = v.iter().map(|t| t.id.to_string()).collect();
    x.sort();
    x
}

fn generate_events(store: &TokenStore, owner: &Actor) -> usize {
    let events = store.audit(owner, 100).unwrap();
    events
        .iter()
        .filter(|e| e.action == "token.generate")
        .count()
}

#[test]
fn a_member_removed_and_added_again_keeps_every_token_listed() {
    let (_dir, path, clock) = scratch();
    let (store, ann, bob) = seeded(&path, &clock);
    let t1 = store.generate(&bob, Default::default()).unwrap();
    store.remove_member("acme", "bob").unwrap();
    assert_eq!(store.list_org(&ann).unwrap().len(), 1);
    store.add_member("acme", "bob", Role::User).unwrap();
    let t2 = store.generate(&bob, Default::default()).unwrap();
    assert_eq!(store.list_own(&bob).unwrap().len(), 2);
    // Removed again: only t2 was still active.
    assert_eq!(store.remove_member("acme", "bob").unwrap(), 1);
    assert!(store.verify_refresh(t2.token.expose()).is_err());
    store.add_member("acme", "bob", Role::User).unwrap();
    let t3 = store.generate(&bob, Default::default()).unwrap();
    assert_eq!(
        ids(&store.list_own(&bob).unwrap()),
        ids(&[t1.info.clone(), t2.info.clone(), t3.info.clone()])
    );
    // The purge takes t1 and t2 (revoked, past retention).
    clock.advance(100);
    let purged = store.purge_expired(1000).unwrap();
    assert_eq!(purged.refresh_removed, 2);
    assert_eq!(
        ids(&store.list_own(&bob).unwrap()),
        vec![t3.info.id.to_string()]
    );
    assert_eq!(generate_events(&store, &ann), 3);
    store.close().unwrap();

    let store = open(&path, &clock);
    assert_eq!(
        ids(&store.list_own(&bob).unwrap()),
        vec![t3.info.id.to_string()]
    );
    assert_eq!(generate_events(&store, &ann), 3);
    assert_eq!(store.revoke_all(&ann, RevokeScope::Org, None).unwrap(), 1);
    assert!(matches!(
        store.verify_refresh(t3.token.expose()),
        Err(Error::Revoked)
    ));
}

#[test]
fn a_member_removed_before_a_reopen_is_listed_until_purged() {
    let (_dir, path, clock) = scratch();
    let (store, ann, bob) = seeded(&path, &clock);
    let t1 = store.generate(&bob, Default::default()).unwrap();
    store.remove_member("acme", "bob").unwrap();
    drop(store);

    // Reopened, the removed member's token hangs on a stand-in.
    let store = open(&path, &clock);
    assert_eq!(
        ids(&store.list_org(&ann).unwrap()),
        vec![t1.info.id.to_string()]
    );
    store.add_member("acme", "bob", Role::User).unwrap();
    let t2 = store.generate(&bob, Default::default()).unwrap();
    assert_eq!(store.list_own(&bob).unwrap().len(), 2);
    assert_eq!(store.remove_member("acme", "bob").unwrap(), 1);
    assert!(store.verify_refresh(t2.token.expose()).is_err());
    clock.advance(100);
    store.purge_expired(1000).unwrap();
    assert!(store.list_org(&ann).unwrap().is_empty());
    drop(store);

    let store = open(&path, &clock);
    assert!(store.list_org(&ann).unwrap().is_empty());
    assert_eq!(generate_events(&store, &ann), 2);
}
