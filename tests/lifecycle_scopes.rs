//! Access tokens narrowed at exchange (`exchange_with_scopes`, the `scope`
//! of `POST /oauth/token`): the narrowing is the access token's own, never
//! widens anything (DESIGN.md invariant 3: still cut to the refresh token's
//! scopes and the holder's current role), is refused with a clear error that
//! writes nothing, survives a reopen on sled, and holds on every replica of
//! a shared (PostgreSQL) store.

mod common;

use tokenvault::{Error, GenerateOptions, Role, TokenStore};

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn a_narrowed_access_token_grants_only_what_it_was_narrowed_to() {
    let store = TokenStore::temporary().unwrap();
    let (_olivia, adam, _uma) = common::store::seed_acme(&store);
    let t = store.generate(&adam, GenerateOptions::default()).unwrap();
    let g = store
        .exchange_with_scopes(t.token.expose(), &["user-write", "read", "read"])
        .unwrap();
    let access = g.access_token.expose();
    let who = store.verify(access).unwrap();
    assert_eq!(sorted(who.scopes.to_vec()), ["read", "user-write"]);
    store.authorize(access, "user-write").unwrap();
    assert!(matches!(
        store.authorize(access, "service-write"),
        Err(Error::InsufficientScope(_))
    ));
    // A plain exchange of the same token is not narrowed.
    let plain = store.exchange(t.token.expose()).unwrap().access_token;
    store.authorize(plain.expose(), "service-write").unwrap();

    // The narrowing never widens: a demotion cuts it further at once, and a
    // promotion gives back no more than it was narrowed to.
    store.set_role("acme", "adam", Role::User).unwrap();
    assert_eq!(store.verify(access).unwrap().scopes.to_vec(), ["read"]);
    store.set_role("acme", "adam", Role::Admin).unwrap();
    assert_eq!(
        sorted(store.verify(access).unwrap().scopes.to_vec()),
        ["read", "user-write"]
    );
    // Revoking the refresh token still ends it.
    store.revoke(&adam, &t.info.id, None).unwrap();
    assert!(matches!(store.verify(access), Err(Error::Revoked)));
}

#[test]
fn a_scope_outside_the_token_is_refused_and_writes_nothing() {
    let store = TokenStore::temporary().unwrap();
    let (_olivia, _adam, uma) = common::store::seed_acme(&store);
    let narrow = GenerateOptions {
        scopes: Some(vec!["read".into(), "incident-write".into()]),
        ..Default::default()
    };
    let t = store.generate(&uma, narrow).unwrap();
    let tok = t.token.expose();
    // Beyond the role, beyond the token, unknown, empty.
    for bad in [
        &["user-write"][..],
        &["read", "squad-read"][..],
        &["no-such-scope"][..],
    ] {
        match store.exchange_with_scopes(tok, bad) {
            Err(Error::InsufficientScope(s)) => assert!(bad.contains(&s.as_str()), "{s}"),
            other => panic!("expected insufficient_scope for {bad:?}, got {other:?}"),
        }
    }
    let none: [&str; 0] = [];
    assert_eq!(
        store.exchange_with_scopes(tok, &none).unwrap_err().kind(),
        "usage"
    );
    // Nothing was issued by the refusals.
    assert!(store.verify_refresh(tok).unwrap().last_refresh.is_none());
    // A refresh token that no longer works is refused as by `exchange`.
    store.revoke(&uma, &t.info.id, None).unwrap();
    assert!(matches!(
        store.exchange_with_scopes(tok, &["read"]),
        Err(Error::Revoked)
    ));
}

#[test]
fn the_narrowing_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let (narrowed, plain) = {
        let store = common::store::keyed(&path, 5).open().unwrap();
        let (_, _, uma) = common::store::seed_acme(&store);
        let t = store.generate(&uma, Default::default()).unwrap();
        let n = store
            .exchange_with_scopes(t.token.expose(), &["squad-read"])
            .unwrap()
            .access_token;
        let p = store.exchange(t.token.expose()).unwrap().access_token;
        store.close().unwrap();
        (n, p)
    };
    // Reopened twice: once from the checkpoint the close wrote, once more
    // after a close that finds nothing new (both load the records).
    for _ in 0..2 {
        let store = common::store::keyed(&path, 5).open().unwrap();
        let who = store.verify(narrowed.expose()).unwrap();
        assert_eq!(who.scopes.to_vec(), ["squad-read"]);
        assert!(store
            .verify(plain.expose())
            .unwrap()
            .scopes
            .contains("incident-write"));
        assert!(store.check_integrity().unwrap().is_clean());
        store.close().unwrap();
    }
}

/// Durable exchanges dropped without `close`: the reopen walks sled's trees
/// (no warm-start files), and a narrowed record decodes there too.
#[test]
fn the_narrowing_survives_a_reopen_without_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let narrowed = {
        let store = common::store::keyed(&path, 6)
            .durable_exchange(true)
            .open()
            .unwrap();
        let (_, adam, _) = common::store::seed_acme(&store);
        let t = store.generate(&adam, Default::default()).unwrap();
        let n = store
            .exchange_with_scopes(t.token.expose(), &["service-write", "read"])
            .unwrap()
            .access_token;
        drop(store);
        n
    };
    let store = common::store::keyed(&path, 6).open().unwrap();
    assert_eq!(
        sorted(store.verify(narrowed.expose()).unwrap().scopes.to_vec()),
        ["read", "service-write"]
    );
    assert!(store.check_integrity().unwrap().is_clean());
    store.close().unwrap();
}

/// Against a PostgreSQL server (`TOKENVAULT_PG_URL`, as `.ci/postgres.sh`
/// sets it): an access token narrowed through one replica verifies with its
/// narrowed scopes on another (read through from the database), and on a
/// replica opened afresh.
#[cfg(feature = "postgres")]
#[test]
#[ignore = "needs PostgreSQL: .ci/postgres.sh"]
fn the_narrowing_holds_on_every_replica() {
    let Some(db) = common::pg::ScratchDb::new("scopes") else {
        return;
    };
    let open = db.replicas();
    let (narrowed, plain) = {
        let (one, two) = (open(), open());
        let (_, adam, _) = common::store::seed_acme(&one);
        let t = one.generate(&adam, Default::default()).unwrap();
        let n = one
            .exchange_with_scopes(t.token.expose(), &["read", "user-write"])
            .unwrap()
            .access_token;
        let p = one.exchange(t.token.expose()).unwrap().access_token;
        two.catch_up().unwrap();
        let who = two.verify(n.expose()).unwrap();
        assert_eq!(sorted(who.scopes.to_vec()), ["read", "user-write"]);
        assert!(matches!(
            two.authorize(n.expose(), "service-write"),
            Err(Error::InsufficientScope(_))
        ));
        two.authorize(p.expose(), "service-write").unwrap();
        // Narrowed through the second replica, checked on the first.
        let m = two
            .exchange_with_scopes(t.token.expose(), &["squad-read"])
            .unwrap()
            .access_token;
        assert_eq!(
            one.verify(m.expose()).unwrap().scopes.to_vec(),
            ["squad-read"]
        );
        one.close().unwrap();
        two.close().unwrap();
        (n, p)
    };
    let three = open();
    assert_eq!(
        sorted(three.verify(narrowed.expose()).unwrap().scopes.to_vec()),
        ["read", "user-write"]
    );
    three.authorize(plain.expose(), "service-write").unwrap();
    assert!(three.check_integrity().unwrap().is_clean());
    three.close().unwrap();
    drop(open);
    drop(db);
}
