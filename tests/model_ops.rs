//! Model-based test of the whole public API: random operation
//! sequences run on a real store and on the plain-map model of
//! `tests/model/model.rs` (driven by `tests/model/harness.rs`); every answer must match, and after every operation
//! DESIGN.md's invariants 2 (a revoked family never verifies again, also
//! after a reopen), 3 (scopes within the holder's current role), 4 (a failed
//! call changes nothing), 6 (`check_integrity` is clean) and 7 (orgs are
//! isolated) must hold.
//!
//! CI runs [`DEFAULT_CASES`] cases of up to 48 operations; set
//! `TOKENVAULT_PROPTEST_CASES` for a longer run, e.g.
//! `TOKENVAULT_PROPTEST_CASES=20000 cargo test --release --test model_ops`.

mod model;

use model::{Before, Op, Opts, Tok};
use proptest::prelude::*;
use tokenvault::Role;

/// Cases per CI run (about 45 s in debug on two cores).
const DEFAULT_CASES: u32 = 1000;

fn cases() -> u32 {
    std::env::var("TOKENVAULT_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

fn ops_strategy() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(any::<[u8; model::OP_BYTES]>(), 1..48).prop_map(|chunks| {
        chunks
            .iter()
            .map(|c| model::decode_op(&mut model::Bytes::new(c)))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn invariants_2_3_4_6_7_hold_for_random_operation_sequences(ops in ops_strategy()) {
        model::run_ops(&ops).map_err(TestCaseError::fail)?;
    }
}

fn plain() -> Opts {
    Opts {
        label: None,
        scopes: None,
        expires_in: None,
    }
}

fn run(ops: &[Op]) -> model::RunStats {
    match model::run_ops(ops) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

/// The seeded members: acme = ann (Owner, 0), bob (Admin, 1), cat (User, 2);
/// beta = dan (Owner, 3), ann (User).
const ACME: u8 = 0;
const BETA: u8 = 1;
const ANN: u8 = 0;
const BOB: u8 = 1;
const CAT: u8 = 2;
const DAN: u8 = 3;

#[test]
fn invariant_2_revoked_family_stays_revoked_across_reopen() {
    let stats = run(&[
        Op::Generate {
            org: ACME,
            user: CAT,
            opts: plain(),
        },
        Op::Exchange(Tok::Own(0)),
        Op::Exchange(Tok::Own(0)),
        Op::Verify(Tok::Own(0)),
        Op::Revoke {
            org: ACME,
            user: ANN,
            tok: Tok::Own(0),
            reason: Some("lost"),
        },
        Op::Verify(Tok::Own(0)),
        Op::Reopen,
        Op::Verify(Tok::Own(1)),
        Op::Exchange(Tok::Own(0)),
    ]);
    assert_eq!(
        (stats.exchanges, stats.revocations, stats.reopens),
        (2, 1, 1)
    );
}

#[test]
fn invariant_3_demotion_and_removal_cut_scopes_at_once() {
    let stats = run(&[
        Op::Generate {
            org: ACME,
            user: BOB,
            opts: plain(),
        },
        Op::Exchange(Tok::Own(0)),
        Op::Authorize(Tok::Own(0), "user-write"),
        Op::SetRole {
            org: ACME,
            user: BOB,
            role: Role::Stakeholder,
        },
        Op::Authorize(Tok::Own(0), "user-write"),
        Op::Authorize(Tok::Own(0), "read"),
        Op::Reopen,
        Op::Authorize(Tok::Own(0), "incident-write"),
        Op::RemoveMember {
            org: ACME,
            user: BOB,
        },
        Op::Verify(Tok::Own(0)),
        Op::AddMember {
            org: ACME,
            user: BOB,
            role: Role::Admin,
        },
        Op::Verify(Tok::Own(0)),
        Op::Exchange(Tok::Own(0)),
    ]);
    assert_eq!(stats.exchanges, 1);
}

#[test]
fn invariant_4_and_7_denied_and_cross_org_calls_change_nothing() {
    let stats = run(&[
        Op::Generate {
            org: ACME,
            user: CAT,
            opts: plain(),
        },
        // dan owns beta, not acme: every call on acme's token is refused.
        Op::Revoke {
            org: BETA,
            user: DAN,
            tok: Tok::Own(0),
            reason: None,
        },
        Op::Assign {
            org: ACME,
            actor: BOB,
            user: CAT,
            opts: plain(),
        },
        Op::ListOrg {
            org: ACME,
            user: BOB,
        },
        Op::RevokeAll {
            org: ACME,
            user: BOB,
            member: Some(CAT),
            before: None,
        },
        Op::RevokeAll {
            org: BETA,
            user: ANN,
            member: None,
            before: None,
        },
        // ann is Owner of acme but only a User of beta.
        Op::Assign {
            org: BETA,
            actor: ANN,
            user: DAN,
            opts: plain(),
        },
        Op::RevokeAll {
            org: ACME,
            user: ANN,
            member: None,
            before: Some(Before::Ahead(5)),
        },
        Op::Exchange(Tok::Own(0)),
    ]);
    assert_eq!(stats.exchanges, 1);
}

#[test]
fn bulk_cutoffs_latest_wins_and_purge_clears_dead_families() {
    let stats = run(&[
        Op::Generate {
            org: ACME,
            user: CAT,
            opts: plain(),
        },
        Op::Exchange(Tok::Own(0)),
        Op::Advance(30),
        Op::Generate {
            org: ACME,
            user: CAT,
            opts: plain(),
        },
        Op::Exchange(Tok::Own(0)),
        Op::Advance(30),
        // Member cutoff before the second token, then an older org cutoff:
        // the later member cutoff still rules.
        Op::RevokeAll {
            org: ACME,
            user: CAT,
            member: Some(CAT),
            before: Some(Before::Ago(1)),
        },
        Op::RevokeAll {
            org: ACME,
            user: ANN,
            member: None,
            before: Some(Before::Ago(400)),
        },
        Op::Reopen,
        Op::Verify(Tok::Own(0)),
        Op::Verify(Tok::Own(1)),
        Op::Advance(601),
        Op::Purge { limit: 1 },
        Op::Reopen,
        Op::Purge { limit: 1000 },
    ]);
    assert_eq!(stats.reopens, 2);
}

/// The cap on a member's live refresh tokens holds on the store as in the
/// model: past it an issue fails with `limit` on both; a revoked or
/// expired token frees a place.
#[test]
fn the_live_token_cap_is_mirrored() {
    let generate = |expires_in| Op::Generate {
        org: ACME,
        user: CAT,
        opts: Opts {
            label: None,
            scopes: None,
            expires_in,
        },
    };
    let at_cap: Vec<Op> = (0..model::LIVE_CAP).map(|_| generate(None)).collect();
    let mut past = at_cap.clone();
    past.push(generate(None));
    past.push(Op::Assign {
        org: ACME,
        actor: ANN,
        user: CAT,
        opts: plain(),
    });
    assert_eq!(run(&past).ok, run(&at_cap).ok, "issues past the cap failed");
    let mut freed = at_cap.clone();
    freed.push(Op::Revoke {
        org: ACME,
        user: CAT,
        tok: Tok::Own(0),
        reason: None,
    });
    freed.push(generate(Some(30)));
    freed.push(generate(None));
    freed.push(Op::Advance(30));
    freed.push(generate(None));
    // The revocation, the short-lived token, the clock move and the last
    // token succeed; the issue between them, at the cap again, does not.
    assert_eq!(run(&freed).ok, run(&at_cap).ok + 4);
}

/// Suspension and rotation against the model, across reopens: a disabled
/// family answers `disabled` until enabled (by the Owner here), a rotated
/// token works through its grace period and then expires while its
/// successor works, a second rotation is a conflict, and neither another
/// member nor another organization's Owner may do either.
#[test]
fn lifecycle_calls_agree_with_the_model_across_reopens() {
    let stats = run(&[
        Op::Generate {
            org: ACME,
            user: CAT,
            opts: plain(),
        },
        Op::Exchange(Tok::Own(0)),
        Op::Suspend {
            org: ACME,
            user: CAT,
            tok: Tok::Own(0),
            disable: true,
        },
        Op::Verify(Tok::Own(0)),
        Op::Exchange(Tok::Own(0)),
        Op::Reopen,
        Op::Verify(Tok::Own(0)),
        Op::Suspend {
            org: ACME,
            user: BOB,
            tok: Tok::Own(0),
            disable: false,
        },
        Op::Suspend {
            org: BETA,
            user: DAN,
            tok: Tok::Own(0),
            disable: false,
        },
        Op::Suspend {
            org: ACME,
            user: ANN,
            tok: Tok::Own(0),
            disable: false,
        },
        Op::Verify(Tok::Own(0)),
        Op::Rotate {
            org: ACME,
            user: CAT,
            tok: Tok::Own(0),
            grace: 300,
        },
        Op::Exchange(Tok::Own(1)),
        Op::Exchange(Tok::Own(0)),
        Op::Rotate {
            org: ACME,
            user: CAT,
            tok: Tok::Own(1),
            grace: 0,
        },
        Op::Rotate {
            org: ACME,
            user: BOB,
            tok: Tok::Own(0),
            grace: 0,
        },
        Op::Reopen,
        Op::Advance(300),
        Op::Exchange(Tok::Own(1)),
        Op::Exchange(Tok::Own(0)),
        Op::ListOrg {
            org: ACME,
            user: ANN,
        },
        Op::Purge { limit: 1000 },
        Op::Rotate {
            org: ACME,
            user: ANN,
            tok: Tok::Own(0),
            grace: 7 * 86_400 + 1,
        },
        Op::Rotate {
            org: ACME,
            user: ANN,
            tok: Tok::Own(0),
            grace: 0,
        },
        Op::Exchange(Tok::Own(1)),
        Op::Exchange(Tok::Own(0)),
    ]);
    // Exchanges: the first, both tokens in the grace period, the successor
    // after it, and the last successor.
    assert_eq!((stats.exchanges, stats.reopens), (5, 2));
}

/// A pending assignment against the model: no secret exchanges until its
/// member claims it (the Owner may not), then the claimed one does, also
/// after a reopen; an unclaimed one expires after its window.
#[test]
fn pending_assignments_agree_with_the_model() {
    let stats = run(&[
        Op::AssignPending {
            org: ACME,
            actor: ANN,
            user: CAT,
            opts: plain(),
        },
        Op::Exchange(Tok::Own(0)),
        Op::Claim {
            org: ACME,
            user: ANN,
            tok: Tok::Own(0),
        },
        Op::Reopen,
        Op::Claim {
            org: ACME,
            user: CAT,
            tok: Tok::Own(0),
        },
        Op::Exchange(Tok::Own(0)),
        Op::Claim {
            org: ACME,
            user: CAT,
            tok: Tok::Own(0),
        },
        Op::AssignPending {
            org: ACME,
            actor: ANN,
            user: BOB,
            opts: plain(),
        },
        Op::ListOrg {
            org: ACME,
            user: ANN,
        },
        Op::Reopen,
        Op::Advance(7 * 86_400),
        Op::Claim {
            org: ACME,
            user: BOB,
            tok: Tok::Own(0),
        },
        Op::Purge { limit: 1000 },
    ]);
    assert_eq!((stats.exchanges, stats.reopens), (1, 2));
}

/// Narrowed exchanges: within the token's scopes (repeats count once),
/// refused beyond them or the holder's role, and the narrowing cut further
/// by a demotion, never widened by a promotion, across a reopen.
#[test]
fn narrowed_exchanges_agree_with_the_model() {
    let stats = run(&[
        Op::Generate {
            org: ACME,
            user: BOB,
            opts: plain(),
        },
        Op::ExchangeScoped(Tok::Own(0), &["user-write", "read", "read"]),
        Op::ExchangeScoped(Tok::Own(0), &["org-admin"]),
        Op::ExchangeScoped(Tok::Own(0), &["billing"]),
        Op::Authorize(Tok::Own(0), "user-write"),
        Op::Authorize(Tok::Own(0), "service-write"),
        Op::Reopen,
        Op::Verify(Tok::Own(0)),
        Op::Authorize(Tok::Own(0), "service-write"),
        Op::SetRole {
            org: ACME,
            user: BOB,
            role: Role::User,
        },
        Op::Authorize(Tok::Own(0), "user-write"),
        Op::ExchangeScoped(Tok::Own(0), &["user-write"]),
        Op::SetRole {
            org: ACME,
            user: BOB,
            role: Role::Admin,
        },
        Op::Reopen,
        Op::Verify(Tok::Own(0)),
        Op::Authorize(Tok::Own(0), "user-write"),
        Op::Authorize(Tok::Own(0), "squad-create"),
    ]);
    assert_eq!((stats.exchanges, stats.reopens), (1, 2));
}

/// Exchanges that name their client: lists show the last one's address and
/// agent (an agent carrying a token never), a plain exchange clears them,
/// and they survive a purge of the access records and reopens.
#[test]
fn last_use_clients_agree_with_the_model() {
    let stats = run(&[
        Op::Generate {
            org: ACME,
            user: BOB,
            opts: plain(),
        },
        Op::ExchangeFrom(Tok::Own(0), 0),
        Op::ListOwn {
            org: ACME,
            user: BOB,
        },
        Op::Reopen,
        Op::ListOrg {
            org: ACME,
            user: ANN,
        },
        Op::ExchangeFrom(Tok::Own(0), 3),
        Op::ExchangeFrom(Tok::Own(0), 3),
        Op::Advance(3_600),
        Op::Purge { limit: 1000 },
        Op::Reopen,
        Op::ListOwn {
            org: ACME,
            user: BOB,
        },
        Op::ExchangeFrom(Tok::Own(0), 1),
        Op::Exchange(Tok::Own(0)),
        Op::Reopen,
        Op::ListOwn {
            org: ACME,
            user: BOB,
        },
        Op::ExchangeFrom(Tok::Own(0), 2),
        Op::Reopen,
        Op::ListOwn {
            org: ACME,
            user: BOB,
        },
    ]);
    assert_eq!((stats.exchanges, stats.reopens), (6, 4));
}
