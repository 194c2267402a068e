//! The model test (`tests/model/`) for rotation on use: fixed sequences of
//! `oauth_refresh`, policy changes, clock moves and reopens run on a real
//! store and on the model side by side (every answer must match, and the
//! invariants the harness checks after each step must hold), then random
//! sequences biased towards those operations.

mod model;

use model::{Op, Opts, Tok};
use proptest::prelude::*;

fn plain() -> Opts {
    Opts {
        label: None,
        scopes: None,
        expires_in: None,
    }
}

fn rotating(on: bool) -> Op {
    Op::SetPolicy {
        org: 0,
        user: 0,
        max_lifetime: None,
        unused_expiry: None,
        rotate_on_use: on,
    }
}

fn run(ops: &[Op]) -> model::RunStats {
    match model::run_ops(ops) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

/// acme: ann (0) Owner, bob (1) Admin, cat (2) User. `Tok::Own(0)` is the
/// newest refresh token, `Own(1)` the one before, and so on.
#[test]
fn rotation_on_use_agrees_with_the_model_across_reopens() {
    let refresh = |i| Op::OAuthRefresh(Tok::Own(i), &[]);
    let stats = run(&[
        rotating(true),
        Op::Generate {
            org: 0,
            user: 2,
            opts: plain(),
        },
        Op::Exchange(Tok::Own(0)),
        // Rotates: the first token is spent, the second is new.
        refresh(0),
        Op::Verify(Tok::Own(0)),
        Op::Verify(Tok::Own(1)),
        Op::Reopen,
        // Within the leeway, a retry with the spent one rotates again.
        refresh(1),
        Op::ListOwn { org: 0, user: 2 },
        Op::OAuthRefresh(Tok::Own(0), &["read"]),
        Op::Advance(30),
        // The old access token died with its spent token.
        Op::Verify(Tok::Own(3)),
        Op::Reopen,
        // Reuse of the first token: the whole family is revoked.
        Op::Exchange(Tok::Own(3)),
        Op::ListOrg { org: 0, user: 0 },
        Op::Verify(Tok::Own(0)),
        Op::Exchange(Tok::Own(0)),
        Op::Reopen,
        Op::OAuthRefresh(Tok::Own(0), &[]),
        // Manual rotation of a spent token is a conflict.
        Op::Rotate {
            org: 0,
            user: 2,
            tok: Tok::Own(2),
            grace: 0,
        },
        // A fresh token; wrong secrets and unknown scopes spend nothing.
        Op::Generate {
            org: 0,
            user: 1,
            opts: plain(),
        },
        Op::OAuthRefresh(Tok::WrongSecret(0), &[]),
        Op::OAuthRefresh(Tok::Own(0), &["billing"]),
        Op::OAuthRefresh(Tok::Own(0), &["user-write", "read"]),
        Op::Advance(299),
        // Its spent token, past the leeway, through the narrowed refresh.
        Op::OAuthRefresh(Tok::Own(1), &["read"]),
        Op::Verify(Tok::Own(0)),
        // Off again: a refresh is a plain exchange.
        rotating(false),
        Op::Generate {
            org: 0,
            user: 0,
            opts: plain(),
        },
        Op::OAuthRefresh(Tok::Own(0), &[]),
        Op::OAuthRefresh(Tok::Own(0), &[]),
        Op::Reopen,
        Op::Purge { limit: 1000 },
        Op::Advance(3600),
        Op::Purge { limit: 1000 },
        Op::Reopen,
    ]);
    assert!(stats.exchanges >= 6, "{stats:?}");
    assert!(stats.revocations >= 2, "{stats:?}");
}

/// Random sequences where about one operation in four is a refresh and the
/// policy of acme is switched often.
fn biased_op() -> impl Strategy<Value = Op> {
    let any_op =
        any::<[u8; model::OP_BYTES]>().prop_map(|c| model::decode_op(&mut model::Bytes::new(&c)));
    let narrowing = prop::sample::select(vec![
        &[][..],
        &["read"][..],
        &["incident-write"][..],
        &["billing"][..],
    ]);
    prop_oneof![
        5 => any_op,
        2 => (0u8..4, narrowing).prop_map(|(i, s)| Op::OAuthRefresh(Tok::Own(i), s)),
        1 => any::<bool>().prop_map(rotating),
        1 => (0u8..4).prop_map(|u| Op::Generate { org: 0, user: u % 3, opts: plain() }),
        1 => prop::sample::select(vec![1u64, 29, 30, 31, 300]).prop_map(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("TOKENVAULT_PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200)
    ))]

    #[test]
    fn random_sequences_with_refreshes_agree_with_the_model(
        ops in prop::collection::vec(biased_op(), 1..40)
    ) {
        model::run_ops(&ops).map_err(TestCaseError::fail)?;
    }
}
