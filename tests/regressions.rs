//! Named regression tests for core bugs that the model, fuzz, crash and race
//! tests of issue 3 found; each says in two lines what went wrong.

use tokenvault::{Config, Role, StoreKey};

// Found by the Reopen op of tests/model_ops.rs: dropping a store and opening
// it again at once failed with `Io("could not acquire lock")`, because sled
// 0.34 lets go of its file lock a little after the last handle is dropped.
#[test]
fn regression_reopen_right_after_drop_waits_for_sleds_lock() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("tokens.db");
    let cfg = || Config::new(&path).key(StoreKey::from_bytes([9; 32]));
    let store = cfg().open().expect("first open");
    store
        .add_member("acme", "ann", Role::Owner)
        .expect("add owner");
    drop(store);
    for round in 0..40 {
        let store = cfg()
            .open()
            .unwrap_or_else(|e| panic!("reopen {round} right after a drop: {e}"));
        assert_eq!(store.member_role("acme", "ann"), Some(Role::Owner));
    }
}

// A lock held by a live store is still refused (after the short wait), so
// two handles never write one database.
#[test]
fn second_open_of_a_live_store_is_refused() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("tokens.db");
    let cfg = || Config::new(&path).key(StoreKey::from_bytes([9; 32]));
    let live = cfg().open().expect("first open");
    let err = cfg().open().expect_err("a second open of a live store");
    assert_eq!(err.kind(), "io", "{err}");
    drop(live);
}
