//! Rotation on use with reuse detection (RFC 9700 §4.14): under an
//! organization's `rotate_on_use`, `oauth_refresh` returns a new refresh
//! token and spends the one presented; a spent token presented again after
//! the leeway revokes its whole family (every token descended from the same
//! original, and their access tokens), audited and durable; within the
//! leeway a retry rotates again. Without the policy, and through plain
//! `exchange`, nothing rotates.

mod common;

use std::time::Duration;

use tokenvault::{Actor, Config, Error, ManualClock, OrgPolicy, TokenState, TokenStore};

const T0: u64 = 1_700_000_000;
const NONE: &[&str] = &[];

fn store_with(clock: &ManualClock, leeway: u64) -> (TokenStore, Actor, Actor) {
    let store = Config::temporary()
        .clock(clock.clone())
        .rotation_leeway(Duration::from_secs(leeway))
        .open()
        .unwrap();
    let (olivia, _, uma) = common::store::seed_acme(&store);
    (store, olivia, uma)
}

fn rotating(store: &TokenStore, owner: &Actor) {
    store
        .set_org_policy(owner, OrgPolicy::default().rotate_on_use(true))
        .unwrap();
}

fn actions(store: &TokenStore, owner: &Actor, n: usize) -> Vec<String> {
    store
        .audit(owner, n)
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect()
}

#[test]
fn without_the_policy_a_refresh_is_a_plain_exchange() {
    let clock = ManualClock::new(T0);
    let (store, olivia, uma) = store_with(&clock, 0);
    let t = store.generate(&uma, Default::default()).unwrap();
    let g = store.oauth_refresh(t.token.expose(), NONE).unwrap();
    assert!(g.refresh_token.is_none());
    assert_eq!(g.access.refresh_id, t.info.id);
    // The token stays usable, again and again.
    store.oauth_refresh(t.token.expose(), &["read"]).unwrap();
    store.exchange(t.token.expose()).unwrap();
    assert_eq!(store.list_org(&olivia).unwrap().len(), 1);
    assert_eq!(
        store.org_policy(&olivia).unwrap(),
        OrgPolicy::default(),
        "off by default"
    );
}

#[test]
fn a_refresh_rotates_and_the_new_token_copies_the_old_one() {
    let clock = ManualClock::new(T0);
    let (store, olivia, uma) = store_with(&clock, 0);
    let opts = tokenvault::GenerateOptions::default()
        .scopes(["read"])
        .label("ci bot")
        .expires_in(86_400);
    let t = store.generate(&uma, opts).unwrap();
    let old_access = store.exchange(t.token.expose()).unwrap().access_token;
    rotating(&store, &olivia);
    assert!(store.org_policy(&olivia).unwrap().rotate_on_use);
    clock.advance(10);

    let g = store.oauth_refresh(t.token.expose(), NONE).unwrap();
    let new = g.refresh_token.clone().expect("rotated");
    assert_ne!(new.expose(), t.token.expose());
    assert_ne!(g.access.refresh_id, t.info.id);
    // The access token is the new refresh token's.
    let who = store.verify(g.access.access_token.expose()).unwrap();
    assert_eq!(who.refresh_id, g.access.refresh_id);
    assert_eq!(&*who.user, "uma");

    let info = store.get(&uma, &g.access.refresh_id).unwrap();
    assert_eq!(info.user, "uma");
    assert_eq!(info.scopes, vec!["read".to_string()]);
    assert_eq!(info.label.as_deref(), Some("ci bot"));
    assert_eq!(info.expires_at, t.info.expires_at);
    assert_eq!(info.created_by, "uma");
    assert_eq!(info.state, TokenState::Active);

    // The old token is spent (leeway 0: at once), its access tokens too.
    for e in [
        store.verify(old_access.expose()).unwrap_err(),
        store.verify_refresh(t.token.expose()).unwrap_err(),
    ] {
        assert!(matches!(e, Error::Expired), "{e:?}");
    }
    assert_eq!(
        store.get(&uma, &t.info.id).unwrap().state,
        TokenState::Expired
    );
    // A spent token is rotated once: rotating it by hand is a conflict.
    assert_eq!(
        store.rotate(&uma, &t.info.id, 0).unwrap_err().kind(),
        "conflict"
    );
    assert!(actions(&store, &olivia, 1).contains(&"token.rotate_on_use".to_string()));

    // The chain goes on; plain exchange of the live token does not rotate.
    let g2 = store.oauth_refresh(new.expose(), &["read"]).unwrap();
    assert!(g2.refresh_token.is_some());
    let third = g2.refresh_token.unwrap();
    let a = store.exchange(third.expose()).unwrap();
    assert_eq!(a.refresh_token.expose(), third.expose());
    store.exchange(third.expose()).unwrap();
}

/// The heart of it: a spent token presented again after the leeway
/// revokes every token of its family (the original, the successor in use
/// and any descendant), with their access tokens, with the reason "reuse
/// detected"; other tokens of the same member are untouched. Durable:
/// after a reopen the family stays revoked.
#[test]
fn reuse_of_a_spent_token_revokes_the_whole_family() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let clock = ManualClock::new(T0);
    let open = || {
        common::store::keyed(&path, 7)
            .clock(clock.clone())
            .open()
            .unwrap()
    };
    let (first, second, third, bystander, bystander_access, third_access) = {
        let store = open();
        let (olivia, _, uma) = common::store::seed_acme(&store);
        rotating(&store, &olivia);
        let first = store.generate(&uma, Default::default()).unwrap();
        let bystander = store.generate(&uma, Default::default()).unwrap();
        let bystander_access = store.exchange(bystander.token.expose()).unwrap();
        let g1 = store.oauth_refresh(first.token.expose(), NONE).unwrap();
        let second = g1.refresh_token.unwrap();
        let g2 = store.oauth_refresh(second.expose(), NONE).unwrap();
        let third = g2.refresh_token.unwrap();
        let third_access = g2.access.access_token.clone();
        store.verify(third_access.expose()).unwrap();

        // The thief presents the first, spent token.
        let e = store.oauth_refresh(first.token.expose(), NONE).unwrap_err();
        assert!(matches!(e, Error::Revoked), "{e:?}");
        // Nothing of the family works any more.
        assert!(matches!(
            store.verify(third_access.expose()),
            Err(Error::Revoked)
        ));
        for t in [first.token.expose(), second.expose(), third.expose()] {
            assert!(matches!(store.exchange(t), Err(Error::Revoked)));
            assert!(matches!(store.oauth_refresh(t, NONE), Err(Error::Revoked)));
        }
        let list = store.list_own(&uma).unwrap();
        assert_eq!(list.len(), 4);
        let revoked: Vec<_> = list
            .iter()
            .filter(|i| {
                matches!(&i.state, TokenState::Revoked { reason: Some(r), by, .. }
                    if r == "reuse detected" && by == "tokenvault")
            })
            .collect();
        assert_eq!(revoked.len(), 3, "{list:?}");
        assert!(revoked.iter().all(|i| i.id != bystander.info.id));
        // Another token of the same member is not of the family.
        store
            .verify(bystander_access.access_token.expose())
            .unwrap();
        store.exchange(bystander.token.expose()).unwrap();
        let acts = actions(&store, &olivia, 10);
        assert!(
            acts.contains(&"token.reuse_detected".to_string()),
            "{acts:?}"
        );
        drop(store);
        (
            first,
            second,
            third,
            bystander,
            bystander_access,
            third_access,
        )
    };
    // After a reopen (memory rebuilt from disk).
    let store = open();
    for t in [first.token.expose(), second.expose(), third.expose()] {
        assert!(matches!(store.exchange(t), Err(Error::Revoked)));
    }
    assert!(matches!(
        store.verify(third_access.expose()),
        Err(Error::Revoked)
    ));
    store
        .verify(bystander_access.access_token.expose())
        .unwrap();
    store.exchange(bystander.token.expose()).unwrap();
    assert!(store.check_integrity().unwrap().is_clean());
}

/// Reuse is detected wherever the spent token is traded: through plain
/// `exchange` too, and also after the policy was turned off.
#[test]
fn reuse_through_plain_exchange_also_revokes_the_family() {
    let clock = ManualClock::new(T0);
    let (store, olivia, uma) = store_with(&clock, 0);
    rotating(&store, &olivia);
    let first = store.generate(&uma, Default::default()).unwrap();
    let next = store
        .oauth_refresh(first.token.expose(), NONE)
        .unwrap()
        .refresh_token
        .unwrap();
    store.set_org_policy(&olivia, OrgPolicy::default()).unwrap();
    assert!(matches!(
        store.exchange(first.token.expose()),
        Err(Error::Revoked)
    ));
    assert!(matches!(store.exchange(next.expose()), Err(Error::Revoked)));
}

/// Within the leeway a client that lost the answer retries with the spent
/// token: it gets a fresh access token and another successor; the leeway is
/// not extended by the retry. After it, the spent token is a reuse.
#[test]
fn within_the_leeway_a_retry_rotates_again() {
    let clock = ManualClock::new(T0);
    let (store, olivia, uma) = store_with(&clock, 30);
    rotating(&store, &olivia);
    let opts = tokenvault::GenerateOptions::default().expires_in(86_400);
    let first = store.generate(&uma, opts).unwrap();
    let old_access = store.exchange(first.token.expose()).unwrap().access_token;
    let lost = store.oauth_refresh(first.token.expose(), NONE).unwrap();
    // Lists show the spent token dying at the end of the leeway.
    assert_eq!(
        store.get(&uma, &first.info.id).unwrap().expires_at,
        Some(T0 + 30)
    );
    // The old token and its access tokens work for the leeway.
    store.verify(old_access.expose()).unwrap();
    clock.advance(20);
    let retry = store.oauth_refresh(first.token.expose(), NONE).unwrap();
    let kept = retry.refresh_token.unwrap();
    assert_ne!(kept.expose(), lost.refresh_token.unwrap().expose());
    // The retry's successor keeps the original expiry, not the leeway's.
    assert_eq!(
        store
            .get(&uma, &retry.access.refresh_id)
            .unwrap()
            .expires_at,
        first.info.expires_at
    );
    store.verify(retry.access.access_token.expose()).unwrap();
    // Dies at the first spend's end (T0 + 30), not the retry's.
    clock.advance(10);
    assert!(matches!(
        store.verify(old_access.expose()),
        Err(Error::Expired)
    ));
    assert!(matches!(
        store.oauth_refresh(first.token.expose(), NONE),
        Err(Error::Revoked)
    ));
    // Both successors were of the family.
    assert!(matches!(store.exchange(kept.expose()), Err(Error::Revoked)));
}

/// The leeway is bounded: more than five minutes is cut to five minutes.
#[test]
fn the_leeway_is_at_most_five_minutes() {
    let clock = ManualClock::new(T0);
    let (store, olivia, uma) = store_with(&clock, 3600);
    rotating(&store, &olivia);
    let first = store.generate(&uma, Default::default()).unwrap();
    store.oauth_refresh(first.token.expose(), NONE).unwrap();
    clock.advance(299);
    store.oauth_refresh(first.token.expose(), NONE).unwrap();
    clock.advance(1);
    assert!(matches!(
        store.oauth_refresh(first.token.expose(), NONE),
        Err(Error::Revoked)
    ));
}

/// A refusal spends nothing: a scope the token does not grant, a disabled
/// or revoked token, a wrong secret.
#[test]
fn a_refused_refresh_spends_nothing() {
    let clock = ManualClock::new(T0);
    let (store, olivia, uma) = store_with(&clock, 0);
    rotating(&store, &olivia);
    let t = store.generate(&uma, Default::default()).unwrap();
    let before = store.list_own(&uma).unwrap().len();
    let e = store
        .oauth_refresh(t.token.expose(), &["org-admin"])
        .unwrap_err();
    assert_eq!(e.kind(), "insufficient_scope");
    let many: Vec<String> = (0..65).map(|i| format!("s{i}")).collect();
    assert_eq!(
        store
            .oauth_refresh(t.token.expose(), &many)
            .unwrap_err()
            .kind(),
        "usage"
    );
    let mut wrong = t.token.expose().to_string();
    wrong.replace_range(10..11, if &wrong[10..11] == "A" { "B" } else { "A" });
    assert!(store.oauth_refresh(&wrong, NONE).is_err());
    store.disable(&uma, &t.info.id).unwrap();
    assert!(matches!(
        store.oauth_refresh(t.token.expose(), NONE),
        Err(Error::Disabled)
    ));
    store.enable(&uma, &t.info.id).unwrap();
    assert_eq!(store.list_own(&uma).unwrap().len(), before);
    // Still usable, and its first refresh rotates.
    assert!(store
        .oauth_refresh(t.token.expose(), NONE)
        .unwrap()
        .refresh_token
        .is_some());
    // A revoked token is refused as revoked, and nothing else is touched.
    let other = store.generate(&uma, Default::default()).unwrap();
    store.revoke(&uma, &other.info.id, None).unwrap();
    assert!(matches!(
        store.oauth_refresh(other.token.expose(), NONE),
        Err(Error::Revoked)
    ));
}

/// A token rotated by hand (`rotate`, in its grace period) is not rotated
/// again on use: its refresh is a plain exchange.
#[test]
fn a_token_rotated_by_hand_is_not_rotated_on_use() {
    let clock = ManualClock::new(T0);
    let (store, olivia, uma) = store_with(&clock, 0);
    rotating(&store, &olivia);
    let t = store.generate(&uma, Default::default()).unwrap();
    store.rotate(&uma, &t.info.id, 600).unwrap();
    let g = store.oauth_refresh(t.token.expose(), NONE).unwrap();
    assert!(g.refresh_token.is_none());
    assert_eq!(g.access.refresh_id, t.info.id);
}

#[cfg(feature = "tokio")]
#[tokio::test]
async fn the_async_face_rotates_too() {
    let store = tokenvault::AsyncTokenStore::temporary().await.unwrap();
    store
        .add_member("acme", "ann", tokenvault::Role::Owner)
        .await
        .unwrap();
    let ann = Actor::new("acme", "ann");
    store
        .set_org_policy(&ann, OrgPolicy::default().rotate_on_use(true))
        .await
        .unwrap();
    let t = store.generate(&ann, Default::default()).await.unwrap();
    let g = store.oauth_refresh(t.token.expose(), NONE).await.unwrap();
    let next = g.refresh_token.unwrap();
    assert!(matches!(
        store.oauth_refresh(t.token.expose(), NONE).await,
        Err(Error::Revoked)
    ));
    assert!(matches!(
        store.exchange(next.expose()).await,
        Err(Error::Revoked)
    ));
}

/// Against a PostgreSQL server (`TOKENVAULT_PG_URL`, as `.ci/postgres.sh`
/// sets it): a rotation on use through one replica is in force on another,
/// a reuse presented to the other revokes the family everywhere, and a
/// replica opened afresh reads it all back.
#[cfg(feature = "postgres")]
#[test]
#[ignore = "needs PostgreSQL: .ci/postgres.sh"]
fn rotation_on_use_on_a_shared_store() {
    let Some(db) = common::pg::ScratchDb::new("rotate_on_use") else {
        return;
    };
    let clock = ManualClock::new(T0);
    let open = db.replicas_on(&clock);
    {
        let (one, two) = (open(), open());
        let (olivia, _, uma) = common::store::seed_acme(&one);
        rotating(&one, &olivia);
        let first = one.generate(&uma, Default::default()).unwrap();
        let keep = one.generate(&uma, Default::default()).unwrap();
        two.catch_up().unwrap();
        assert!(two.org_policy(&olivia).unwrap().rotate_on_use);
        let g = two.oauth_refresh(first.token.expose(), NONE).unwrap();
        let second = g.refresh_token.unwrap();
        one.catch_up().unwrap();
        assert!(matches!(
            one.exchange(first.token.expose()),
            Err(Error::Revoked)
        ));
        two.catch_up().unwrap();
        assert!(matches!(
            two.verify(g.access.access_token.expose()),
            Err(Error::Revoked)
        ));
        assert!(matches!(two.exchange(second.expose()), Err(Error::Revoked)));
        two.exchange(keep.token.expose()).unwrap();
        one.close().unwrap();
        two.close().unwrap();
        let three = open();
        assert!(matches!(
            three.exchange(second.expose()),
            Err(Error::Revoked)
        ));
        three.exchange(keep.token.expose()).unwrap();
        assert!(three.check_integrity().unwrap().is_clean());
        three.close().unwrap();
    }
}
