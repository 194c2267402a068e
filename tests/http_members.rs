//! Member operations over HTTP (an Owner demotes, promotes, removes a member
//! and revokes every token of a member or of the organization), over real
//! loopback HTTP: each behind the Owner's `user-write`, audited in the
//! caller's name, refused to a non-Owner and to a token without the scope,
//! and 404 for another organization's member exactly as for nobody.
#![cfg(feature = "http")]

mod common;

use common::http::{client, Server};
use reqwest::blocking::Response;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokenvault::http::HttpConfig;
use tokenvault::{Actor, Error, GenerateOptions, Role, TokenStore};

/// acme: olivia (Owner), adam (Admin), uma (User); globex: gina (Owner),
/// gus (User).
fn seeded() -> TokenStore {
    let store = TokenStore::temporary().unwrap();
    common::store::seed_acme(&store);
    store.add_member("globex", "gina", Role::Owner).unwrap();
    store.add_member("globex", "gus", Role::User).unwrap();
    store
}

/// A refresh token of `org/user` and an access token made from it.
fn tokens(store: &TokenStore, org: &str, user: &str) -> (String, String) {
    let t = store
        .generate(&Actor::new(org, user), GenerateOptions::default())
        .unwrap();
    let a = store.exchange(t.token.expose()).unwrap().access_token;
    (t.token.expose().to_string(), a.expose().to_string())
}

fn send(s: &Server, method: &str, path: &str, bearer: &str, body: Option<Value>) -> Response {
    let c = client();
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = c.request(m, s.url(path)).bearer_auth(bearer);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().unwrap()
}

/// `PATCH /v3/members/USER` with the body `{"role": ROLE}`.
fn patch_role(s: &Server, user: &str, bearer: &str, role: &str) -> Response {
    send(
        s,
        "PATCH",
        &format!("/v3/members/{user}"),
        bearer,
        Some(json!({ "role": role })),
    )
}

fn answer(res: Response) -> (StatusCode, Value) {
    let status = res.status();
    let v = res.json().unwrap_or(Value::Null);
    (status, v)
}

#[test]
fn the_owner_demotes_and_promotes_and_others_are_refused() {
    let store = seeded();
    let s = Server::start(&store, HttpConfig::default());
    let (_, olivia) = tokens(&store, "acme", "olivia");
    let (_, adam) = tokens(&store, "acme", "adam");
    let (_, uma) = tokens(&store, "acme", "uma");
    let (_, gina) = tokens(&store, "globex", "gina");

    // The Owner demotes the Admin: at once, adam's token loses user-write.
    assert!(store.verify(&adam).unwrap().scopes.contains("user-write"));
    let (st, v) = answer(patch_role(&s, "adam", &olivia, "user"));
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        json!({"data": {"organization_id": "acme", "user_id": "adam", "role": "user"}})
    );
    assert_eq!(store.member_role("acme", "adam"), Some(Role::User));
    assert!(!store.verify(&adam).unwrap().scopes.contains("user-write"));
    // ...and promotes him back.
    let (st, _) = answer(patch_role(&s, "adam", &olivia, "admin"));
    assert_eq!(st, StatusCode::OK);
    assert_eq!(store.member_role("acme", "adam"), Some(Role::Admin));

    // An Admin holds user-write but is not the Owner: 403, nothing changes.
    let (st, v) = answer(patch_role(&s, "uma", &adam, "stakeholder"));
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["meta"]["status"], 403);
    assert_eq!(store.member_role("acme", "uma"), Some(Role::User));
    // A User's token lacks user-write: 403 insufficient_scope.
    let res = patch_role(&s, "adam", &uma, "user");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("insufficient_scope"));
    assert_eq!(store.member_role("acme", "adam"), Some(Role::Admin));

    // Another organization's member is answered exactly as nobody.
    let foreign = answer(patch_role(&s, "gus", &olivia, "admin"));
    let nobody = answer(patch_role(&s, "nobody", &olivia, "admin"));
    assert_eq!(foreign.0, StatusCode::NOT_FOUND);
    assert_eq!(foreign, nobody);
    assert_eq!(store.member_role("globex", "gus"), Some(Role::User));
    // Their own Owner may.
    let (st, _) = answer(patch_role(&s, "gus", &gina, "admin"));
    assert_eq!(st, StatusCode::OK);

    // Not to or from Owner; a bad body changes nothing.
    for (user, body, want) in [
        ("adam", json!({"role": "owner"}), StatusCode::CONFLICT),
        ("olivia", json!({"role": "admin"}), StatusCode::CONFLICT),
        (
            "adam",
            json!({"role": "emperor"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "adam",
            json!({"rank": "user"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("adam", json!(["user"]), StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let (st, v) = answer(send(
            &s,
            "PATCH",
            &format!("/v3/members/{user}"),
            &olivia,
            Some(body.clone()),
        ));
        assert_eq!(st, want, "{user} {body}: {v}");
    }
    assert_eq!(store.member_role("acme", "adam"), Some(Role::Admin));
    assert_eq!(store.member_role("acme", "olivia"), Some(Role::Owner));

    // Audited in the caller's name, the refusal too.
    let owner = Actor::new("acme", "olivia");
    let audit = store.audit(&owner, 100).unwrap();
    let changed = audit
        .iter()
        .filter(|e| e.action == "member.role" && e.actor == "olivia" && e.outcome == "ok")
        .count();
    assert_eq!(changed, 2, "{audit:#?}");
    assert!(
        audit.iter().any(|e| e.action == "member.role"
            && e.actor == "adam"
            && e.outcome.starts_with("denied")
            && e.target.as_deref() == Some("uma")),
        "{audit:#?}"
    );
}

#[test]
fn the_owner_removes_a_member_and_revokes_in_bulk() {
    let store = seeded();
    let s = Server::start(&store, HttpConfig::default());
    let (_, olivia) = tokens(&store, "acme", "olivia");
    let (_, adam) = tokens(&store, "acme", "adam");
    let (uma_refresh, uma) = tokens(&store, "acme", "uma");
    let (_, gina) = tokens(&store, "globex", "gina");
    let (gus_refresh, gus) = tokens(&store, "globex", "gus");

    // revoke-all of a member: the Admin may not for another, 404 abroad.
    let (st, _) = answer(send(&s, "POST", "/v3/members/uma/revoke-all", &adam, None));
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(store.verify(&uma).is_ok());
    let foreign = answer(send(
        &s,
        "POST",
        "/v3/members/gus/revoke-all",
        &olivia,
        None,
    ));
    let nobody = answer(send(
        &s,
        "POST",
        "/v3/members/nobody/revoke-all",
        &olivia,
        None,
    ));
    assert_eq!(foreign.0, StatusCode::NOT_FOUND);
    assert_eq!(foreign, nobody);
    assert!(store.verify(&gus).is_ok());
    let (st, v) = answer(send(
        &s,
        "POST",
        "/v3/members/uma/revoke-all",
        &olivia,
        None,
    ));
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        json!({"data": {"organization_id": "acme", "user_id": "uma", "revoked": 1}})
    );
    assert!(matches!(store.verify(&uma), Err(Error::Revoked)));
    assert!(matches!(
        store.verify_refresh(&uma_refresh),
        Err(Error::Revoked)
    ));
    // A cutoff in the future is bad input.
    let (st, _) = answer(send(
        &s,
        "POST",
        "/v3/members/uma/revoke-all",
        &olivia,
        Some(json!({"before": u64::MAX / 2})),
    ));
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);

    // Remove: the Admin may not, another org's member is nobody, the Owner
    // cannot be removed, then the Owner removes uma.
    let (_, uma_again) = {
        store.add_member("acme", "ute", Role::User).unwrap();
        tokens(&store, "acme", "ute")
    };
    let (st, _) = answer(send(&s, "DELETE", "/v3/members/ute", &adam, None));
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert_eq!(store.member_role("acme", "ute"), Some(Role::User));
    let foreign = answer(send(&s, "DELETE", "/v3/members/gus", &olivia, None));
    let nobody = answer(send(&s, "DELETE", "/v3/members/nobody", &olivia, None));
    assert_eq!(foreign.0, StatusCode::NOT_FOUND);
    assert_eq!(foreign, nobody);
    assert_eq!(store.member_role("globex", "gus"), Some(Role::User));
    let (st, _) = answer(send(&s, "DELETE", "/v3/members/olivia", &olivia, None));
    assert_eq!(st, StatusCode::CONFLICT);
    let (st, v) = answer(send(&s, "DELETE", "/v3/members/ute", &olivia, None));
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        json!({"data": {"organization_id": "acme", "user_id": "ute", "revoked": 1}})
    );
    assert_eq!(store.member_role("acme", "ute"), None);
    assert!(store.verify(&uma_again).is_err());

    // revoke-all of the organization: the Owner only, and only its own.
    let (st, _) = answer(send(&s, "POST", "/v3/org/revoke-all", &adam, None));
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(store.verify(&adam).is_ok());
    let (st, v) = answer(send(&s, "POST", "/v3/org/revoke-all", &olivia, None));
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["organization_id"], "acme");
    assert_eq!(v["data"]["revoked"], 2, "olivia's and adam's");
    assert!(matches!(store.verify(&adam), Err(Error::Revoked)));
    assert!(matches!(store.verify(&olivia), Err(Error::Revoked)));
    assert!(store.verify(&gina).is_ok());
    assert!(store.verify_refresh(&gus_refresh).is_ok());

    let audit = store.audit(&Actor::new("acme", "olivia"), 100).unwrap();
    for action in ["member.remove", "token.revoke_all"] {
        assert!(
            audit
                .iter()
                .any(|e| e.action == action && e.actor == "olivia" && e.outcome == "ok"),
            "{action}: {audit:#?}"
        );
    }
    assert!(
        audit.iter().any(|e| e.action == "member.remove"
            && e.actor == "adam"
            && e.outcome.starts_with("denied")),
        "{audit:#?}"
    );
}

#[test]
fn member_routes_need_a_bearer_before_reading_the_body() {
    let store = seeded();
    let s = Server::start(&store, HttpConfig::default());
    for (method, path) in [
        ("PATCH", "/v3/members/adam"),
        ("DELETE", "/v3/members/adam"),
        ("POST", "/v3/members/adam/revoke-all"),
        ("POST", "/v3/org/revoke-all"),
    ] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let res = client()
            .request(m, s.url(path))
            .body("not json")
            .send()
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    assert_eq!(store.member_role("acme", "adam"), Some(Role::Admin));
}
