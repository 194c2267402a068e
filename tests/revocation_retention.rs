//! A refresh token revoked itself stays stored (listed, as revoked) for the
//! store's retention counted from its revocation, then goes with the
//! purge: the same whether the store ran on, was closed and opened again
//! (its warm start), or was dropped without a close (a load from the
//! records).

mod common;

use std::path::Path;
use std::time::Duration;

use tokenvault::{Actor, ManualClock, Role, TokenStore};

const T0: u64 = 1_800_000_000;
const RETENTION: u64 = 100;

fn open(path: &Path, clock: &ManualClock) -> TokenStore {
    common::store::keyed(path, 11)
        .clock(clock.clone())
        .retention(Duration::from_secs(RETENTION))
        .open()
        .unwrap()
}

/// The ids of the organization's stored tokens, sorted.
fn stored(store: &TokenStore, owner: &Actor) -> Vec<String> {
    let mut ids: Vec<String> = store
        .list_org(owner)
        .unwrap()
        .iter()
        .map(|t| t.id.to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn a_revoked_token_is_kept_for_its_retention_from_its_revocation() {
    for how in ["runs on", "closed", "dropped"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let clock = ManualClock::new(T0);
        let store = open(&path, &clock);
        store.add_member("acme", "ann", Role::Owner).unwrap();
        store.add_member("acme", "bob", Role::User).unwrap();
        let (ann, bob) = (Actor::new("acme", "ann"), Actor::new("acme", "bob"));
        let early = store.generate(&bob, Default::default()).unwrap().info.id;
        let late = store.generate(&bob, Default::default()).unwrap().info.id;
        clock.set(T0 + 10);
        store.revoke(&ann, &early, None).unwrap();
        clock.set(T0 + 50);
        store.revoke(&ann, &late, None).unwrap();
        let store = match how {
            "runs on" => store,
            "closed" => {
                store.close().unwrap();
                open(&path, &clock)
            }
            _ => {
                drop(store);
                open(&path, &clock)
            }
        };
        let mut both = vec![early.to_string(), late.to_string()];
        both.sort();

        clock.set(T0 + 10 + RETENTION - 1);
        store.purge_expired(1000).unwrap();
        assert_eq!(stored(&store, &ann), both, "{how}: within retention");

        clock.set(T0 + 10 + RETENTION);
        store.purge_expired(1000).unwrap();
        assert_eq!(
            stored(&store, &ann),
            vec![late.to_string()],
            "{how}: the first one's retention is over"
        );

        clock.set(T0 + 50 + RETENTION);
        store.purge_expired(1000).unwrap();
        assert!(stored(&store, &ann).is_empty(), "{how}: both gone");
    }
}
