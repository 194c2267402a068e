//! `TokenStore::close`: every write survives it, a store closed while other
//! handles are open keeps working through them, and closing the last handle
//! leaves sled checkpointed (the next open has no log to replay).

mod common;

use std::path::Path;

use tokenvault::{Actor, Error, Role, TokenStore};

fn open(path: &Path) -> TokenStore {
    common::store::keyed(path, 7).open().unwrap()
}

/// The log position of sled's newest snapshot in `dir` (sled 0.34 names
/// them `snap.<position in hex>`), or 0 if there is none.
fn newest_snapshot(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let hex = name.strip_prefix("snap.")?;
            u64::from_str_radix(hex, 16).ok()
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn closing_the_last_handle_checkpoints_and_keeps_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.db");
    let store = open(&path);
    store.add_member("acme", "ann", Role::Owner).unwrap();
    store.add_member("acme", "bob", Role::User).unwrap();
    let ann = Actor::new("acme", "ann");
    let bob = Actor::new("acme", "bob");
    let mut kept = Vec::new();
    for _ in 0..50 {
        let t = store.generate(&bob, Default::default()).unwrap();
        let grant = store.exchange(t.token.expose()).unwrap();
        kept.push((t, grant));
    }
    let (revoked, revoked_grant) = kept.pop().unwrap();
    store.revoke(&ann, &revoked.info.id, None).unwrap();
    // The snapshot sled wrote when this store opened it: before any token.
    let before = newest_snapshot(&path);
    store.close().unwrap();
    let after = newest_snapshot(&path);
    assert!(
        after > before,
        "close wrote no newer snapshot ({before:#x} -> {after:#x})"
    );

    let store = open(&path);
    for (t, grant) in &kept {
        assert_eq!(
            store.verify_refresh(t.token.expose()).unwrap().id,
            t.info.id
        );
        let who = store.verify(grant.access_token.expose()).unwrap();
        assert_eq!(&*who.user, "bob");
    }
    assert!(matches!(
        store.verify(revoked_grant.access_token.expose()),
        Err(Error::Revoked)
    ));
    assert!(matches!(
        store.verify_refresh(revoked.token.expose()),
        Err(Error::Revoked)
    ));
}

#[test]
fn closing_one_of_several_handles_only_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.db");
    let store = open(&path);
    let other = store.clone();
    store.add_member("acme", "ann", Role::Owner).unwrap();
    let ann = Actor::new("acme", "ann");
    let first = store.generate(&ann, Default::default()).unwrap();
    store.close().unwrap();
    // The other handle still serves, reads and writes.
    assert_eq!(
        other.verify_refresh(first.token.expose()).unwrap().id,
        first.info.id
    );
    let second = other.generate(&ann, Default::default()).unwrap();
    other.close().unwrap();

    let store = open(&path);
    for t in [&first, &second] {
        assert_eq!(
            store.verify_refresh(t.token.expose()).unwrap().id,
            t.info.id
        );
    }
}
