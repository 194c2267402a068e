//! The token lifecycle beyond issue and revoke: suspension (`disable`,
//! `enable`) and rotation with a grace period (`rotate`). Each is checked
//! against the holder-or-Owner policy (DESIGN.md invariants 4 and 7),
//! audited, in force for the token's access tokens as well, durable across
//! a reopen, and refused with a clear error that changes nothing.

mod common;

use std::time::Duration;

use tokenvault::{
    Actor, Error, GenerateOptions, ManualClock, OrgPolicy, Role, TokenState, TokenStore,
};

const T0: u64 = 1_700_000_000;

/// A store on a manual clock with `acme` (olivia Owner, adam Admin, uma
/// User) and `beta` (bea Owner).
fn store_at(clock: &ManualClock) -> (TokenStore, Actor, Actor, Actor, Actor) {
    let store = tokenvault::Config::temporary()
        .clock(clock.clone())
        .open()
        .unwrap();
    let (olivia, adam, uma) = common::store::seed_acme(&store);
    store.add_member("beta", "bea", Role::Owner).unwrap();
    (store, olivia, adam, uma, Actor::new("beta", "bea"))
}

fn audit_actions(store: &TokenStore, owner: &Actor, n: usize) -> Vec<String> {
    store
        .audit(owner, n)
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect()
}

#[test]
fn a_disabled_token_and_its_access_tokens_stop_until_enabled() {
    let clock = ManualClock::new(T0);
    let (store, olivia, _, uma, _) = store_at(&clock);
    let t = store.generate(&uma, Default::default()).unwrap();
    let access = store.exchange(t.token.expose()).unwrap().access_token;

    let info = store.disable(&uma, &t.info.id).unwrap();
    assert_eq!(info.state, TokenState::Disabled);
    assert_eq!(info.state.as_str(), "disabled");
    for e in [
        store.verify(access.expose()).unwrap_err(),
        store.exchange(t.token.expose()).unwrap_err(),
        store.verify_refresh(t.token.expose()).unwrap_err(),
        store.authorize(access.expose(), "read").unwrap_err(),
    ] {
        assert!(matches!(e, Error::Disabled), "{e:?}");
        assert_eq!(e.kind(), "disabled");
    }
    assert_eq!(store.list_own(&uma).unwrap()[0].state, TokenState::Disabled);
    assert_eq!(
        store.list_org(&olivia).unwrap()[0].state,
        TokenState::Disabled
    );
    assert_eq!(
        store.get(&uma, &t.info.id).unwrap().state,
        TokenState::Disabled
    );
    // Again: nothing to do, the same answer.
    assert_eq!(
        store.disable(&uma, &t.info.id).unwrap().state,
        TokenState::Disabled
    );
    // A wrong secret still says nothing about the token's state.
    let mut wrong = access.expose().to_string();
    let last = wrong.pop().unwrap();
    wrong.push(if last == 'a' { 'b' } else { 'a' });
    let e = store.verify(&wrong).unwrap_err();
    assert!(!matches!(e, Error::Disabled), "{e:?}");

    // The Owner enables it: the token and its access token work again.
    let info = store.enable(&olivia, &t.info.id).unwrap();
    assert_eq!(info.state, TokenState::Active);
    assert_eq!(&*store.verify(access.expose()).unwrap().user, "uma");
    store.exchange(t.token.expose()).unwrap();
    assert_eq!(
        store.enable(&uma, &t.info.id).unwrap().state,
        TokenState::Active
    );

    let actions = audit_actions(&store, &olivia, 3);
    assert!(actions.contains(&"token.enable".to_string()), "{actions:?}");
    assert!(
        store
            .audit(&olivia, 100)
            .unwrap()
            .iter()
            .any(|e| e.action == "token.disable"
                && e.actor == "uma"
                && e.target.as_deref() == Some(&*t.info.id.to_string())),
        "the suspension is audited"
    );
}

#[test]
fn enabling_does_not_bring_back_a_token_revoked_or_expired_meanwhile() {
    let clock = ManualClock::new(T0);
    let (store, olivia, _, uma, _) = store_at(&clock);
    let revoked = store.generate(&uma, Default::default()).unwrap();
    store.disable(&uma, &revoked.info.id).unwrap();
    store
        .revoke(&olivia, &revoked.info.id, Some("gone"))
        .unwrap();
    let e = store.enable(&uma, &revoked.info.id).unwrap_err();
    assert!(matches!(e, Error::Revoked), "{e:?}");
    assert!(matches!(
        store.exchange(revoked.token.expose()),
        Err(Error::Revoked)
    ));
    assert!(matches!(
        store.get(&uma, &revoked.info.id).unwrap().state,
        TokenState::Revoked { .. }
    ));

    let short = store
        .generate(&uma, GenerateOptions::default().expires_in(60))
        .unwrap();
    store.disable(&uma, &short.info.id).unwrap();
    clock.advance(61);
    let e = store.enable(&uma, &short.info.id).unwrap_err();
    assert!(matches!(e, Error::Expired), "{e:?}");
    assert_eq!(
        store.get(&uma, &short.info.id).unwrap().state,
        TokenState::Expired
    );
    // Nothing left to suspend either.
    assert!(matches!(
        store.disable(&uma, &short.info.id),
        Err(Error::Expired)
    ));
}

#[test]
fn suspension_follows_the_holder_or_owner_rule_and_refusals_change_nothing() {
    let clock = ManualClock::new(T0);
    let (store, olivia, adam, uma, bea) = store_at(&clock);
    let t = store.generate(&uma, Default::default()).unwrap();
    let id = t.info.id;
    let before = store.audit(&olivia, 1000).unwrap().len();
    for call in [TokenStore::disable, TokenStore::enable] {
        // Another member: forbidden, audited as a refusal.
        assert_eq!(call(&store, &adam, &id).unwrap_err().kind(), "forbidden");
        // Another organization's Owner: as an unknown id.
        assert_eq!(call(&store, &bea, &id).unwrap_err().kind(), "not_found");
        // Not a member.
        let mallory = Actor::new("acme", "mallory");
        assert_eq!(call(&store, &mallory, &id).unwrap_err().kind(), "forbidden");
        // Unknown id.
        let unknown = tokenvault::TokenId::from_bytes([9; 16]);
        assert_eq!(
            call(&store, &uma, &unknown).unwrap_err().kind(),
            "not_found"
        );
    }
    assert_eq!(store.get(&uma, &id).unwrap().state, TokenState::Active);
    store.exchange(t.token.expose()).unwrap();
    let events = store.audit(&olivia, 1000).unwrap();
    assert!(events.len() > before, "refusals are audited");
    assert!(events
        .iter()
        .all(|e| !(e.action == "token.disable" && e.outcome == "ok")));
}

#[test]
fn rotation_copies_the_token_and_ends_the_old_one_after_the_grace_period() {
    let clock = ManualClock::new(T0);
    let (store, olivia, _, uma, _) = store_at(&clock);
    let old = store
        .generate(
            &uma,
            GenerateOptions::default()
                .label("ci")
                .scopes(["read"])
                .expires_in(30 * 86_400),
        )
        .unwrap();
    let old_access = store.exchange(old.token.expose()).unwrap().access_token;

    let r = store
        .rotate(&uma, &old.info.id, Duration::from_secs(3_600))
        .unwrap();
    let new = &r.issued.info;
    assert_eq!(r.replaces, old.info.id);
    assert_eq!(r.old_expires_at, T0 + 3_600);
    assert_ne!(new.id, old.info.id);
    assert_eq!(new.user, "uma");
    assert_eq!(new.scopes, vec!["read".to_string()]);
    assert_eq!(new.label.as_deref(), Some("ci"));
    assert_eq!(new.expires_at, old.info.expires_at);
    assert_eq!(new.state, TokenState::Active);
    assert_ne!(r.issued.token.expose(), old.token.expose());

    // During the grace period both work, the old access token too.
    store.verify(old_access.expose()).unwrap();
    store.exchange(old.token.expose()).unwrap();
    store.exchange(r.issued.token.expose()).unwrap();
    assert_eq!(
        store.get(&uma, &old.info.id).unwrap().expires_at,
        Some(T0 + 3_600)
    );
    assert_eq!(store.list_own(&uma).unwrap().len(), 2);

    // Rotating it again is a conflict, and changes nothing.
    let e = store.rotate(&uma, &old.info.id, None).unwrap_err();
    assert_eq!(e.kind(), "conflict", "{e:?}");
    assert_eq!(store.list_own(&uma).unwrap().len(), 2);

    // After the grace period the old token and its access tokens are
    // expired; the new one works.
    clock.advance(3_600);
    assert!(matches!(
        store.verify(old_access.expose()),
        Err(Error::Expired)
    ));
    assert!(matches!(
        store.exchange(old.token.expose()),
        Err(Error::Expired)
    ));
    assert_eq!(
        store.get(&uma, &old.info.id).unwrap().state,
        TokenState::Expired
    );
    let new_access = store
        .exchange(r.issued.token.expose())
        .unwrap()
        .access_token;
    store.verify(new_access.expose()).unwrap();

    let ev = &store.audit(&olivia, 1).unwrap()[0];
    assert_eq!(ev.action, "token.rotate");
    assert_eq!(ev.actor, "uma");
    let target = ev.target.as_deref().unwrap();
    assert!(
        target.contains(&old.info.id.to_string()) && target.contains(&new.id.to_string()),
        "{target}"
    );
}

#[test]
fn the_grace_period_never_outlives_the_old_token_and_zero_ends_it_at_once() {
    let clock = ManualClock::new(T0);
    let (store, olivia, _, uma, _) = store_at(&clock);
    // Expires in 10 minutes: a day's grace ends with it.
    let t = store
        .generate(&uma, GenerateOptions::default().expires_in(600))
        .unwrap();
    let r = store.rotate(&uma, &t.info.id, None).unwrap();
    assert_eq!(r.old_expires_at, T0 + 600);
    assert_eq!(r.issued.info.expires_at, Some(T0 + 600));

    // The default grace is 24 hours.
    let t = store.generate(&uma, Default::default()).unwrap();
    let r = store.rotate(&uma, &t.info.id, None).unwrap();
    assert_eq!(r.old_expires_at, T0 + 86_400);
    assert_eq!(r.issued.info.expires_at, None);

    // Grace 0: the old one is gone at once. The Owner may rotate.
    let t = store.generate(&uma, Default::default()).unwrap();
    let access = store.exchange(t.token.expose()).unwrap().access_token;
    let r = store.rotate(&olivia, &t.info.id, 0).unwrap();
    assert_eq!(r.old_expires_at, T0);
    assert_eq!(r.issued.info.created_by, "olivia");
    assert_eq!(r.issued.info.user, "uma");
    assert!(matches!(store.verify(access.expose()), Err(Error::Expired)));
    assert!(matches!(
        store.exchange(t.token.expose()),
        Err(Error::Expired)
    ));
    store.exchange(r.issued.token.expose()).unwrap();
}

#[test]
fn rotation_refusals_change_nothing() {
    let clock = ManualClock::new(T0);
    let (store, olivia, adam, uma, bea) = store_at(&clock);
    let t = store.generate(&uma, Default::default()).unwrap();
    let id = t.info.id;
    let count = |s: &TokenStore| s.list_org(&olivia).unwrap().len();
    let n = count(&store);
    let week = 7 * 86_400;
    let refused: Vec<(Actor, u64, &str)> = vec![
        (uma.clone(), week + 1, "usage"),
        (adam.clone(), 60, "forbidden"),
        (bea.clone(), 60, "not_found"),
        (Actor::new("acme", "mallory"), 60, "forbidden"),
    ];
    for (actor, grace, kind) in refused {
        let e = store.rotate(&actor, &id, grace).unwrap_err();
        assert_eq!(e.kind(), kind, "{actor:?} {grace}: {e:?}");
        assert_eq!(count(&store), n);
        assert_eq!(store.get(&uma, &id).unwrap().expires_at, None);
    }
    // The longest grace is accepted.
    store.rotate(&uma, &id, week).unwrap();

    // A revoked, a disabled and an expired token cannot be rotated.
    let revoked = store.generate(&uma, Default::default()).unwrap().info.id;
    store.revoke(&uma, &revoked, None).unwrap();
    assert_eq!(
        store.rotate(&uma, &revoked, 60).unwrap_err().kind(),
        "revoked"
    );
    let disabled = store.generate(&uma, Default::default()).unwrap().info.id;
    store.disable(&uma, &disabled).unwrap();
    assert_eq!(
        store.rotate(&uma, &disabled, 60).unwrap_err().kind(),
        "disabled"
    );
    let short = store
        .generate(&uma, GenerateOptions::default().expires_in(5))
        .unwrap()
        .info
        .id;
    clock.advance(5);
    assert_eq!(
        store.rotate(&uma, &short, 60).unwrap_err().kind(),
        "expired"
    );
    let n = count(&store);
    assert_eq!(n, 5, "one rotation made one token; refusals none");
}

#[test]
fn a_rotated_token_narrows_to_a_demoted_members_role() {
    let clock = ManualClock::new(T0);
    let (store, _, adam, _, _) = store_at(&clock);
    let t = store.generate(&adam, Default::default()).unwrap();
    assert!(t.info.scopes.contains(&"user-write".to_string()));
    store.set_role("acme", "adam", Role::User).unwrap();
    let r = store.rotate(&adam, &t.info.id, 60).unwrap();
    assert_eq!(r.issued.info.role_at_issue, Role::User);
    assert!(!r.issued.info.scopes.contains(&"user-write".to_string()));
    assert!(r.issued.info.scopes.contains(&"read".to_string()));
}

#[test]
fn suspension_and_rotation_survive_a_reopen_without_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let clock = ManualClock::new(T0);
    let (disabled, rotated, successor) = {
        let store = common::store::keyed(&path, 3)
            .clock(clock.clone())
            .open()
            .unwrap();
        let (_, _, uma) = common::store::seed_acme(&store);
        let d = store.generate(&uma, Default::default()).unwrap();
        store.disable(&uma, &d.info.id).unwrap();
        let o = store.generate(&uma, Default::default()).unwrap();
        let r = store.rotate(&uma, &o.info.id, 100).unwrap();
        // Dropped without close: each call was durable on return.
        drop(store);
        (d, o, r)
    };
    let store = common::store::keyed(&path, 3)
        .clock(clock.clone())
        .open()
        .unwrap();
    let uma = Actor::new("acme", "uma");
    assert!(matches!(
        store.exchange(disabled.token.expose()),
        Err(Error::Disabled)
    ));
    assert_eq!(
        store.get(&uma, &disabled.info.id).unwrap().state,
        TokenState::Disabled
    );
    store.exchange(rotated.token.expose()).unwrap();
    store.exchange(successor.issued.token.expose()).unwrap();
    assert_eq!(
        store.rotate(&uma, &rotated.info.id, 0).unwrap_err().kind(),
        "conflict"
    );
    clock.advance(100);
    assert!(matches!(
        store.exchange(rotated.token.expose()),
        Err(Error::Expired)
    ));
    store.enable(&uma, &disabled.info.id).unwrap();
    store.exchange(disabled.token.expose()).unwrap();
    assert!(store.check_integrity().unwrap().is_clean());
    store.close().unwrap();
}

#[test]
fn max_lifetime_bounds_new_tokens_and_stops_older_ones_at_use() {
    let clock = ManualClock::new(T0);
    let (store, olivia, _, uma, bea) = store_at(&clock);
    let old = store.generate(&uma, Default::default()).unwrap();
    let old_access = store.exchange(old.token.expose()).unwrap().access_token;
    let legacy = store.generate(&uma, Default::default()).unwrap();
    let day = 86_400;

    // Only the Owner reads or sets it; refusals change nothing.
    assert_eq!(store.org_policy(&olivia).unwrap(), OrgPolicy::default());
    assert_eq!(store.org_policy(&uma).unwrap_err().kind(), "forbidden");
    let p = OrgPolicy::default().max_lifetime(Some(10 * day));
    assert_eq!(
        store.set_org_policy(&uma, p).unwrap_err().kind(),
        "forbidden"
    );
    for bad in [
        OrgPolicy::default().max_lifetime(Some(0)),
        OrgPolicy::default().unused_expiry(Some(0)),
    ] {
        assert_eq!(
            store.set_org_policy(&olivia, bad).unwrap_err().kind(),
            "usage"
        );
    }
    assert_eq!(store.org_policy(&olivia).unwrap(), OrgPolicy::default());

    assert_eq!(store.set_org_policy(&olivia, p).unwrap(), p);
    assert_eq!(store.org_policy(&olivia).unwrap(), p);
    let ev = &store.audit(&olivia, 1).unwrap()[0];
    assert_eq!(ev.action, "org.policy");
    // Another organization is not touched.
    assert_eq!(store.org_policy(&bea).unwrap(), OrgPolicy::default());
    let b = store.generate(&bea, Default::default()).unwrap();
    assert_eq!(b.info.expires_at, None);

    // New tokens: the maximum when none is asked, refused beyond it.
    let t = store.generate(&uma, Default::default()).unwrap();
    assert_eq!(t.info.expires_at, Some(T0 + 10 * day));
    let n = store.list_own(&uma).unwrap().len();
    let e = store
        .generate(&uma, GenerateOptions::default().expires_in(10 * day + 1))
        .unwrap_err();
    assert_eq!(e.kind(), "usage");
    let e = store
        .assign(
            &olivia,
            "uma",
            GenerateOptions::default().expires_in(11 * day),
        )
        .unwrap_err();
    assert_eq!(e.kind(), "usage");
    assert_eq!(store.list_own(&uma).unwrap().len(), n);
    let short = store
        .generate(&uma, GenerateOptions::default().expires_in(day))
        .unwrap();
    assert_eq!(short.info.expires_at, Some(T0 + day));
    // A rotation is cut to the maximum rather than refused.
    let r = store.rotate(&uma, &old.info.id, 60).unwrap();
    assert_eq!(r.issued.info.expires_at, Some(T0 + 10 * day));

    // The older token (no expiry) stops once past the maximum, at use.
    clock.advance(9 * day);
    store
        .verify(
            store
                .exchange(r.issued.token.expose())
                .unwrap()
                .access_token
                .expose(),
        )
        .unwrap();
    clock.advance(day);
    let beta = store.exchange(b.token.expose());
    assert!(beta.is_ok(), "beta has no policy: {beta:?}");
    for tok in [&t.token, &r.issued.token, &legacy.token] {
        assert!(matches!(store.exchange(tok.expose()), Err(Error::Expired)));
    }
    assert!(matches!(
        store.verify(old_access.expose()),
        Err(Error::Expired)
    ));
    assert_eq!(
        store.get(&uma, &legacy.info.id).unwrap().state,
        TokenState::Expired
    );
    // Loosened: the older token works again; the newer ones keep the
    // expiry they were issued with.
    store.set_org_policy(&olivia, OrgPolicy::default()).unwrap();
    store.exchange(legacy.token.expose()).unwrap();
    assert!(matches!(
        store.exchange(t.token.expose()),
        Err(Error::Expired)
    ));
}

#[test]
fn unused_tokens_expire_at_use_and_go_with_the_purge() {
    let clock = ManualClock::new(T0);
    let store = tokenvault::Config::temporary()
        .clock(clock.clone())
        .retention(std::time::Duration::from_secs(100))
        .open()
        .unwrap();
    let (olivia, _, uma) = common::store::seed_acme(&store);
    let used = store.generate(&uma, Default::default()).unwrap();
    let idle = store.generate(&uma, Default::default()).unwrap();
    store
        .set_org_policy(&olivia, OrgPolicy::default().unused_expiry(Some(1_000)))
        .unwrap();
    // Each exchange restarts the count.
    for _ in 0..3 {
        clock.advance(900);
        store.exchange(used.token.expose()).unwrap();
    }
    assert!(matches!(
        store.exchange(idle.token.expose()),
        Err(Error::Expired)
    ));
    assert_eq!(
        store.get(&uma, &idle.info.id).unwrap().state,
        TokenState::Expired
    );
    assert_eq!(
        store.get(&uma, &used.info.id).unwrap().state,
        TokenState::Active
    );
    // Past the retention, the purge removes the unused one only.
    clock.advance(200);
    while store.purge_expired(1000).unwrap().more {}
    let ids: Vec<_> = store
        .list_own(&uma)
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids, vec![used.info.id]);
}

#[test]
fn the_policy_survives_a_reopen_without_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let clock = ManualClock::new(T0);
    let p = OrgPolicy::default()
        .max_lifetime(Some(3_600))
        .unused_expiry(Some(600));
    {
        let store = common::store::keyed(&path, 3)
            .clock(clock.clone())
            .open()
            .unwrap();
        let (olivia, _, _) = common::store::seed_acme(&store);
        store.set_org_policy(&olivia, p).unwrap();
        drop(store);
    }
    let store = common::store::keyed(&path, 3)
        .clock(clock.clone())
        .open()
        .unwrap();
    let olivia = Actor::new("acme", "olivia");
    assert_eq!(store.org_policy(&olivia).unwrap(), p);
    let t = store.generate(&olivia, Default::default()).unwrap();
    assert_eq!(t.info.expires_at, Some(T0 + 3_600));
    clock.advance(600);
    assert!(matches!(
        store.exchange(t.token.expose()),
        Err(Error::Expired)
    ));
    assert!(store.check_integrity().unwrap().is_clean());
    store.close().unwrap();
}

#[test]
fn a_pending_assignment_shows_its_secret_only_to_its_member_once() {
    let clock = ManualClock::new(T0);
    let (store, olivia, adam, uma, bea) = store_at(&clock);
    // Only the Owner assigns, pending or not.
    let e = store
        .assign_pending(&adam, "uma", Default::default())
        .unwrap_err();
    assert_eq!(e.kind(), "forbidden");
    let info = store
        .assign_pending(&olivia, "uma", GenerateOptions::default().label("ci"))
        .unwrap();
    assert_eq!(info.state, TokenState::Pending);
    assert_eq!(info.created_by, "olivia");
    assert_eq!(store.list_own(&uma).unwrap()[0].state, TokenState::Pending);
    assert_eq!(
        store.list_org(&olivia).unwrap()[0].state,
        TokenState::Pending
    );
    let ev = &store.audit(&olivia, 1).unwrap()[0];
    assert_eq!(ev.action, "token.assign");
    // Nobody but uma claims it; a pending token cannot be suspended or
    // rotated.
    assert_eq!(
        store.claim(&olivia, &info.id).unwrap_err().kind(),
        "forbidden"
    );
    assert_eq!(
        store.claim(&adam, &info.id).unwrap_err().kind(),
        "forbidden"
    );
    assert_eq!(store.claim(&bea, &info.id).unwrap_err().kind(), "not_found");
    assert_eq!(
        store.disable(&uma, &info.id).unwrap_err().kind(),
        "conflict"
    );
    assert_eq!(
        store.rotate(&uma, &info.id, 0).unwrap_err().kind(),
        "conflict"
    );
    assert_eq!(
        store.get(&uma, &info.id).unwrap().state,
        TokenState::Pending
    );

    let t = store.claim(&uma, &info.id).unwrap();
    assert_eq!(t.info.id, info.id);
    assert_eq!(t.info.state, TokenState::Active);
    assert_eq!(t.info.label.as_deref(), Some("ci"));
    let a = store.exchange(t.token.expose()).unwrap().access_token;
    assert_eq!(&*store.verify(a.expose()).unwrap().user, "uma");
    assert_eq!(store.claim(&uma, &info.id).unwrap_err().kind(), "conflict");
    let ev = &store.audit(&olivia, 1).unwrap()[0];
    assert_eq!(
        (ev.action.as_str(), ev.actor.as_str()),
        ("token.claim", "uma")
    );

    // Unclaimed for 7 days: expired. The Owner may revoke one meanwhile.
    let late = store
        .assign_pending(&olivia, "uma", Default::default())
        .unwrap();
    let gone = store
        .assign_pending(&olivia, "uma", Default::default())
        .unwrap();
    store.revoke(&olivia, &gone.id, None).unwrap();
    assert_eq!(store.claim(&uma, &gone.id).unwrap_err().kind(), "revoked");
    clock.advance(7 * 86_400);
    assert_eq!(store.claim(&uma, &late.id).unwrap_err().kind(), "expired");
    assert_eq!(
        store.get(&uma, &late.id).unwrap().state,
        TokenState::Expired
    );
    // The plain assignment still returns the secret.
    let plain = store.assign(&olivia, "uma", Default::default()).unwrap();
    store.exchange(plain.token.expose()).unwrap();
}

#[test]
fn a_pending_token_and_its_claim_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let (waiting, claimed, secret) = {
        let store = common::store::keyed(&path, 3)
            .pending_claim_window(Duration::from_secs(3_600))
            .open()
            .unwrap();
        let (olivia, _, uma) = common::store::seed_acme(&store);
        let w = store
            .assign_pending(&olivia, "uma", Default::default())
            .unwrap();
        let c = store
            .assign_pending(&olivia, "uma", Default::default())
            .unwrap();
        let t = store.claim(&uma, &c.id).unwrap();
        drop(store);
        (w, c, t.token.expose().to_string())
    };
    let store = common::store::keyed(&path, 3).open().unwrap();
    let uma = Actor::new("acme", "uma");
    assert_eq!(
        store.get(&uma, &waiting.id).unwrap().state,
        TokenState::Pending
    );
    assert_eq!(
        store.get(&uma, &claimed.id).unwrap().state,
        TokenState::Active
    );
    store.exchange(&secret).unwrap();
    assert_eq!(
        store.claim(&uma, &claimed.id).unwrap_err().kind(),
        "conflict"
    );
    let t = store.claim(&uma, &waiting.id).unwrap();
    store.exchange(t.token.expose()).unwrap();
    assert!(store.check_integrity().unwrap().is_clean());
    store.close().unwrap();
}

/// Against a PostgreSQL server (`TOKENVAULT_PG_URL`, as `.ci/postgres.sh`
/// sets it): a suspension, an enable and a rotation made through one
/// replica are in force on another at once (it catches up), and after a
/// reopen.
#[cfg(feature = "postgres")]
#[test]
#[ignore = "needs PostgreSQL: .ci/postgres.sh"]
fn lifecycle_on_a_shared_store() {
    let Some(db) = common::pg::ScratchDb::new("lifecycle") else {
        return;
    };
    let clock = ManualClock::new(T0);
    let open = db.replicas_on(&clock);
    {
        let (one, two) = (open(), open());
        let (olivia, _, uma) = common::store::seed_acme(&one);
        let t = one.generate(&uma, Default::default()).unwrap();
        let access = one.exchange(t.token.expose()).unwrap().access_token;
        two.verify(access.expose()).unwrap();
        one.disable(&uma, &t.info.id).unwrap();
        two.catch_up().unwrap();
        assert!(matches!(two.verify(access.expose()), Err(Error::Disabled)));
        assert!(matches!(
            two.exchange(t.token.expose()),
            Err(Error::Disabled)
        ));
        assert_eq!(
            two.get(&olivia, &t.info.id).unwrap().state,
            TokenState::Disabled
        );
        // Enabled through the other replica.
        two.enable(&olivia, &t.info.id).unwrap();
        one.catch_up().unwrap();
        one.verify(access.expose()).unwrap();

        let r = two.rotate(&uma, &t.info.id, 50).unwrap();
        one.catch_up().unwrap();
        one.exchange(r.issued.token.expose()).unwrap();
        assert_eq!(
            one.rotate(&uma, &t.info.id, 0).unwrap_err().kind(),
            "conflict"
        );
        clock.advance(50);
        assert!(matches!(one.verify(access.expose()), Err(Error::Expired)));
        assert!(matches!(two.verify(access.expose()), Err(Error::Expired)));
        one.disable(&uma, &r.issued.info.id).unwrap();
        assert!(matches!(
            one.exchange(r.issued.token.expose()),
            Err(Error::Disabled)
        ));
        // An organization's policy set through one replica is in force on
        // the other.
        let p = OrgPolicy::default().unused_expiry(Some(500));
        two.set_org_policy(&olivia, p).unwrap();
        one.catch_up().unwrap();
        assert_eq!(one.org_policy(&olivia).unwrap(), p);
        let idle = one.generate(&olivia, Default::default()).unwrap();
        clock.advance(500);
        two.catch_up().unwrap();
        assert!(matches!(
            two.exchange(idle.token.expose()),
            Err(Error::Expired)
        ));
        // Expiry (here: unused for 500 s) is said before suspension.
        assert!(matches!(
            two.exchange(r.issued.token.expose()),
            Err(Error::Expired)
        ));
        let d = one.generate(&olivia, Default::default()).unwrap();
        one.disable(&olivia, &d.info.id).unwrap();
        // Assigned pending on one replica, claimed on the other.
        let pend = one
            .assign_pending(&olivia, "uma", Default::default())
            .unwrap();
        two.catch_up().unwrap();
        assert_eq!(two.get(&uma, &pend.id).unwrap().state, TokenState::Pending);
        let claimed = two.claim(&uma, &pend.id).unwrap();
        one.catch_up().unwrap();
        one.exchange(claimed.token.expose()).unwrap();
        assert_eq!(one.claim(&uma, &pend.id).unwrap_err().kind(), "conflict");
        one.close().unwrap();
        two.close().unwrap();
        // A replica opened afresh loads the states from the database.
        let three = open();
        assert!(matches!(
            three.exchange(d.token.expose()),
            Err(Error::Disabled)
        ));
        assert!(matches!(
            three.exchange(r.issued.token.expose()),
            Err(Error::Expired)
        ));
        assert!(matches!(
            three.exchange(t.token.expose()),
            Err(Error::Expired)
        ));
        assert_eq!(three.org_policy(&olivia).unwrap(), p);
        three.exchange(claimed.token.expose()).unwrap();
        assert!(three.check_integrity().unwrap().is_clean());
        three.close().unwrap();
    }
}
