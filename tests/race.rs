//! Race tests (DESIGN.md invariants 2, 3 and 6): threads exchange
//! and verify while another thread revokes, demotes or removes the holder.
//! Once a revoke (or demotion, or removal) call has returned, no
//! verification or exchange that starts afterwards may succeed for that
//! family (or grant the lost scope). A second test races purge against
//! exchange and single access-token revocation and requires a clean
//! `check_integrity()` after every round.
//!
//! Each test runs [`ROUNDS`] rounds (about two seconds each in debug);
//! `TOKENVAULT_RACE_ROUNDS` changes it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::Duration;

use tokenvault::{
    Actor, Clock, Config, Error, GenerateOptions, ManualClock, RevokeScope, Role, TokenStore,
};

/// Rounds per test in CI.
const ROUNDS: u64 = 150;
/// Threads that exchange and verify while the revoker acts.
const WORKERS: usize = 3;

fn rounds() -> u64 {
    std::env::var("TOKENVAULT_RACE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ROUNDS)
}

/// A tiny deterministic generator for jitter.
fn jitter(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Revoke,
    RevokeMember,
    RevokeBefore,
    RevokeOrgBefore,
    Remove,
    Demote,
}

const ACTIONS: [Action; 6] = [
    Action::Revoke,
    Action::RevokeMember,
    Action::RevokeBefore,
    Action::RevokeOrgBefore,
    Action::Remove,
    Action::Demote,
];

/// Opens `config` and makes olivia the Owner of acme.
fn with_owner(config: Config) -> (TokenStore, Actor) {
    let store = config.open().expect("store");
    store
        .add_member("acme", "olivia", Role::Owner)
        .expect("owner");
    (store, Actor::new("acme", "olivia"))
}

#[test]
fn invariant_2_and_3_nothing_verifies_after_revocation_returns() {
    let clock = ManualClock::new(1_700_000_000);
    let (store, owner) = with_owner(Config::temporary().clock(clock.clone()));
    let mut seed = 0x0123_4567_89AB_CDEF_u64;
    let (mut verified_before, mut refused_after) = (0u64, 0u64);
    for round in 0..rounds() {
        let action = ACTIONS[(round % ACTIONS.len() as u64) as usize];
        let user = format!("m{round}");
        store
            .add_member("acme", &user, Role::Admin)
            .expect("member");
        let holder = Actor::new("acme", user.as_str());
        let issued = store
            .generate(&holder, GenerateOptions::default())
            .expect("generate");
        let first = store.exchange(issued.token.expose()).expect("exchange");
        // Cutoffs revoke what was created strictly before them.
        clock.advance(1);
        let done = AtomicBool::new(false);
        let stop = AtomicBool::new(false);
        let start = Barrier::new(WORKERS + 1);
        let (ok_before, refused) = (AtomicU64::new(0), AtomicU64::new(0));
        std::thread::scope(|s| {
            for w in 0..WORKERS {
                let (store, issued, first) = (&store, &issued, &first);
                let (done, stop, start) = (&done, &stop, &start);
                let (ok_before, refused) = (&ok_before, &refused);
                s.spawn(move || {
                    start.wait();
                    let mut mine = vec![first.access_token.clone()];
                    let mut i = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        i += 1;
                        // Read the flag first: everything below starts after
                        // the revoker's call returned if the flag is set.
                        let after = done.load(Ordering::SeqCst);
                        if (i + w as u64).is_multiple_of(8) {
                            let r = store.exchange(issued.token.expose());
                            match (&r, action, after) {
                                (Ok(g), _, _) => {
                                    assert!(
                                        !after || matches!(action, Action::Demote),
                                        "round {round}: invariant 2: exchange succeeded after {action:?} returned"
                                    );
                                    mine.push(g.access_token.clone());
                                }
                                (Err(Error::Revoked), _, _) => {}
                                (Err(e), _, _) => panic!("round {round}: exchange: {e}"),
                            }
                        }
                        for t in &mine {
                            let r = store.verify(t.expose());
                            match (&r, after) {
                                (Ok(p), true) => {
                                    assert_eq!(
                                        action,
                                        Action::Demote,
                                        "round {round}: invariant 2: verify succeeded after {action:?} returned"
                                    );
                                    assert!(
                                        !p.scopes.contains("user-write") && p.role == Role::User,
                                        "round {round}: invariant 3: demoted holder still has {:?} as {:?}",
                                        p.scopes,
                                        p.role
                                    );
                                    refused.fetch_add(1, Ordering::Relaxed);
                                }
                                (Ok(_), false) => {
                                    ok_before.fetch_add(1, Ordering::Relaxed);
                                }
                                (Err(Error::Revoked), _) => {
                                    if after {
                                        refused.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                                // Evicted by the cap of live access tokens.
                                (Err(Error::InvalidToken), _) => {}
                                (Err(e), _) => panic!("round {round}: verify: {e}"),
                            }
                        }
                        if mine.len() > 12 {
                            mine.drain(1..6);
                        }
                    }
                });
            }
            start.wait();
            // Let the workers get going, for a varying while.
            let spin = jitter(&mut seed) % 3000;
            let t0 = std::time::Instant::now();
            while t0.elapsed() < Duration::from_micros(spin) {
                std::hint::spin_loop();
            }
            let now = clock.now();
            match action {
                Action::Revoke => store
                    .revoke(&owner, &issued.info.id, Some("race"))
                    .expect("revoke"),
                Action::RevokeMember => {
                    store
                        .revoke_all(&owner, RevokeScope::Member(user.clone()), None)
                        .expect("revoke_all member");
                }
                Action::RevokeBefore => {
                    store
                        .revoke_all(&owner, RevokeScope::Member(user.clone()), Some(now))
                        .expect("revoke_all member before");
                }
                Action::RevokeOrgBefore => {
                    store
                        .revoke_all(&owner, RevokeScope::Org, Some(now))
                        .expect("revoke_all org before");
                }
                Action::Remove => {
                    store.remove_member("acme", &user).expect("remove");
                }
                Action::Demote => store.set_role("acme", &user, Role::User).expect("demote"),
            }
            done.store(true, Ordering::SeqCst);
            // Give every worker time to start calls after the return.
            std::thread::sleep(Duration::from_millis(3));
            stop.store(true, Ordering::SeqCst);
        });
        verified_before += ok_before.load(Ordering::Relaxed);
        refused_after += refused.load(Ordering::Relaxed);
        let report = store.check_integrity().expect("check_integrity");
        assert!(report.is_clean(), "round {round}: {:?}", report.problems);
    }
    eprintln!(
        "race test: {} rounds, {verified_before} verifications before and {refused_after} checked after the call returned",
        rounds()
    );
    assert!(
        verified_before > 0,
        "no verification ran before a revocation"
    );
    assert!(refused_after > 0, "no verification ran after a revocation");
}

#[test]
fn invariant_6_purge_racing_exchange_and_revoke_access_leaves_no_orphan() {
    let clock = ManualClock::new(1_700_000_000);
    // Retention zero: a revoked family is purgeable at once, so purge races
    // with the calls that still hold it.
    let (store, owner) = with_owner(
        Config::temporary()
            .clock(clock.clone())
            .retention(Duration::ZERO),
    );
    store.add_member("acme", "uma", Role::User).expect("member");
    let uma = Actor::new("acme", "uma");
    for round in 0..rounds() * 2 {
        let issued = store
            .generate(&uma, GenerateOptions::default())
            .expect("generate");
        let grants: Vec<_> = (0..4)
            .map(|_| store.exchange(issued.token.expose()).expect("exchange"))
            .collect();
        let start = Barrier::new(3);
        std::thread::scope(|s| {
            s.spawn(|| {
                start.wait();
                for g in &grants {
                    match store.revoke_access(g.access_token.expose()) {
                        Ok(()) | Err(Error::InvalidToken) => {}
                        Err(e) => panic!("round {round}: revoke_access: {e}"),
                    }
                }
            });
            s.spawn(|| {
                start.wait();
                for _ in 0..4 {
                    match store.exchange(issued.token.expose()) {
                        Ok(_) | Err(Error::Revoked) | Err(Error::InvalidToken) => {}
                        Err(e) => panic!("round {round}: exchange: {e}"),
                    }
                }
            });
            start.wait();
            store.revoke(&owner, &issued.info.id, None).expect("revoke");
            while store.purge_expired(1000).expect("purge").more {}
        });
        while store.purge_expired(1000).expect("purge").more {}
        let report = store.check_integrity().expect("check_integrity");
        assert!(
            report.is_clean(),
            "round {round}: invariant 6: {:?}",
            report.problems
        );
        for g in &grants {
            assert!(store.verify(g.access_token.expose()).is_err());
        }
    }
}

/// Issues run side by side (under a shared lock) but never across a
/// membership change: while two threads issue tokens to a member as fast as
/// they can, the Owner removes the member. Every token an issue returned is
/// revoked once the removal has returned, in memory and on disk; a re-added
/// member gets none of them back.
#[test]
fn invariant_2_issues_racing_member_removal_all_end_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let open = || {
        Config::new(&path)
            .key(tokenvault::StoreKey::from_bytes([5; 32]))
            .open()
            .unwrap()
    };
    let store = open();
    store.add_member("acme", "olivia", Role::Owner).unwrap();
    let olivia = Actor::new("acme", "olivia");
    let uma = Actor::new("acme", "uma");
    let mut seed = 0x1234_5678_9abc_def1u64;
    let mut issued = Vec::new();
    for _ in 0..rounds().min(40) {
        store.add_member("acme", "uma", Role::User).unwrap();
        let stop = AtomicBool::new(false);
        let pause = jitter(&mut seed) % 3_000;
        let got: Vec<String> = std::thread::scope(|s| {
            let issuers: Vec<_> = (0..2)
                .map(|t| {
                    let (store, uma, olivia, stop) = (&store, &uma, &olivia, &stop);
                    s.spawn(move || {
                        let mut got = Vec::new();
                        while !stop.load(Ordering::Relaxed) {
                            let r = if t == 0 {
                                store.generate(uma, GenerateOptions::default())
                            } else {
                                store.assign(olivia, "uma", GenerateOptions::default())
                            };
                            match r {
                                Ok(tok) => got.push(tok.token.expose().to_string()),
                                Err(e) => {
                                    assert!(["forbidden", "not_found"].contains(&e.kind()), "{e}");
                                    break;
                                }
                            }
                        }
                        got
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_micros(pause));
            store.remove_member("acme", "uma").unwrap();
            // Removal has returned: nothing issued so far may work.
            stop.store(true, Ordering::Relaxed);
            issuers
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        for t in &got {
            let e = store.exchange(t).unwrap_err();
            assert_eq!(e.kind(), "revoked", "{e}");
        }
        issued.extend(got);
    }
    assert!(!issued.is_empty(), "no issue won the race: nothing tested");
    for t in store.list_org(&olivia).unwrap() {
        assert!(
            !matches!(t.state, tokenvault::TokenState::Active),
            "{} is still active",
            t.id
        );
    }
    drop(store);
    let store = open();
    store.add_member("acme", "uma", Role::User).unwrap();
    for t in &issued {
        let e = store.exchange(t).unwrap_err();
        assert_eq!(e.kind(), "revoked", "{e}");
    }
    assert!(store.check_integrity().unwrap().is_clean());
}
