//! Named regression tests for core bugs that the model, fuzz, crash and race
//! tests found, each with a two-line `// postmortem:` of what went wrong. A
//! bug the model found is kept as its operation sequence, run on a real
//! store and on the model through the model harness (`tests/model/`), next
//! to the fixed scenario first written for it; a bug that needs threads is
//! kept as the fixed scenario that shows it.

mod model;

use model::{Op, Opts, Tok};
use tokenvault::{Config, Role, StoreKey};

/// Runs `ops` through the model harness; a disagreement fails the test
/// with the failing step.
fn run(ops: &[Op]) -> model::RunStats {
    match model::run_ops(ops) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

/// The harness's seeded acme and its Owner ann.
const ACME: u8 = 0;
const ANN: u8 = 0;

// postmortem: model_ops' Reopen op found an open right after a drop failing with
// `Io("could not acquire lock")`: sled 0.34 frees its file lock a little later.
#[test]
fn regression_reopen_right_after_drop_ops() {
    let mut ops = vec![
        Op::Generate {
            org: ACME,
            user: ANN,
            opts: Opts {
                label: None,
                scopes: None,
                expires_in: None,
            },
        },
        Op::Exchange(Tok::Own(0)),
    ];
    for _ in 0..40 {
        ops.push(Op::Reopen);
        ops.push(Op::Verify(Tok::Own(0)));
    }
    let stats = run(&ops);
    assert_eq!((stats.exchanges, stats.reopens), (1, 40));
}

// postmortem: the same bug in the form it was first kept in, a fixed scenario:
// forty opens, each right after the previous handle was dropped.
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

// postmortem: race.rs found revoke_access writing its access record while a purge
// deleted the family: an orphan access record (invariant 6) that nothing purged.
#[test]
fn regression_purge_racing_revoke_access_leaves_no_orphan_access_record() {
    use std::time::Duration;
    use tokenvault::{Actor, ManualClock};
    let store = Config::temporary()
        .clock(ManualClock::new(1_700_000_000))
        .retention(Duration::ZERO)
        .open()
        .expect("store");
    store.add_member("acme", "ann", Role::Owner).expect("owner");
    let ann = Actor::new("acme", "ann");
    for round in 0..300 {
        let issued = store.generate(&ann, Default::default()).expect("generate");
        let grants: Vec<_> = (0..4)
            .map(|_| store.exchange(issued.token.expose()).expect("exchange"))
            .collect();
        store.revoke(&ann, &issued.info.id, None).expect("revoke");
        let start = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            s.spawn(|| {
                start.wait();
                for g in &grants {
                    let r = store.revoke_access(g.access_token.expose());
                    assert!(r.is_ok() || r.as_ref().is_err_and(|e| e.kind() == "invalid_token"));
                }
            });
            start.wait();
            store.purge_expired(1000).expect("purge");
        });
        while store.purge_expired(1000).expect("purge").more {}
        let report = store.check_integrity().expect("check_integrity");
        assert!(report.is_clean(), "round {round}: {:?}", report.problems);
    }
}
