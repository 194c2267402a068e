//! The HTTP front (`tokenvault::http`), over real loopback HTTP with a real client
//! (reqwest, and raw TCP for what a client library will not send): the seed
//! story end to end through Squadcast's endpoints, each refusal of DESIGN.md's
//! policy table, RFC 7009 revocation and RFC 7662 introspection, the
//! per-token rate limit, the bearer layer on host routes with a User and an
//! Admin token, and malformed, oversized and slow requests, which must get
//! their 4xx without a panic or a hang. A test also checks that the request
//! log never holds a token (invariant 1). Every server binds 127.0.0.1:0.
#![cfg(feature = "http")]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use axum::routing::{get, post};
use axum::{Extension, Router};
use common::http::{captured, client, raw, Server};
use reqwest::blocking::Response;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokenvault::http::{self, require_bearer, require_scope, Authorized, HttpConfig, RateLimit};
use tokenvault::token::encode_raw;
use tokenvault::{Actor, GenerateOptions, Role, TokenId, TokenKind, TokenStore};

// ----- harness -----

/// acme: olivia (Owner), adam (Admin), uma (User), sam (Stakeholder);
/// globex: gina (Owner), gus (User).
fn seeded() -> TokenStore {
    let store = TokenStore::temporary().unwrap();
    common::store::seed_acme(&store);
    store.add_member("acme", "sam", Role::Stakeholder).unwrap();
    store.add_member("globex", "gina", Role::Owner).unwrap();
    store.add_member("globex", "gus", Role::User).unwrap();
    store
}

/// A refresh token made through the library (the profile page of the host).
fn refresh_of(store: &TokenStore, org: &str, user: &str) -> (String, String) {
    let t = store
        .generate(&Actor::new(org, user), GenerateOptions::default())
        .unwrap();
    (t.token.expose().to_string(), t.info.id.to_string())
}

fn exchange(s: &Server, refresh: &str) -> Response {
    client()
        .get(s.url("/oauth/access-token"))
        .header("X-Refresh-Token", refresh)
        .send()
        .unwrap()
}

/// Exchanges through the endpoint and returns the access token.
fn access(s: &Server, refresh: &str) -> String {
    let res = exchange(s, refresh);
    assert_eq!(res.status(), StatusCode::OK);
    let v: Value = res.json().unwrap();
    v["data"]["access_token"].as_str().unwrap().to_string()
}

/// A member's access token, via a library-made refresh token.
fn bearer_of(s: &Server, store: &TokenStore, org: &str, user: &str) -> String {
    let (refresh, _) = refresh_of(store, org, user);
    access(s, &refresh)
}

fn list(s: &Server, bearer: &str) -> Response {
    client()
        .get(s.url("/v3/refresh-token"))
        .bearer_auth(bearer)
        .send()
        .unwrap()
}

fn create(s: &Server, bearer: &str, body: Value) -> Response {
    client()
        .post(s.url("/v3/refresh-token"))
        .bearer_auth(bearer)
        .json(&body)
        .send()
        .unwrap()
}

fn delete(s: &Server, bearer: &str, id: &str) -> Response {
    client()
        .delete(s.url(&format!("/v3/refresh-token/{id}")))
        .bearer_auth(bearer)
        .send()
        .unwrap()
}

fn form(s: &Server, path: &str, bearer: Option<&str>, body: &str) -> Response {
    let mut rb = client()
        .post(s.url(path))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body.to_string());
    if let Some(b) = bearer {
        rb = rb.bearer_auth(b);
    }
    rb.send().unwrap()
}

fn introspect(s: &Server, bearer: &str, token: &str) -> Value {
    let res = form(
        s,
        "/oauth/introspect",
        Some(bearer),
        &format!("token={token}"),
    );
    assert_eq!(res.status(), StatusCode::OK);
    res.json().unwrap()
}

/// Checks Squadcast's error envelope and returns the status.
fn refusal(res: Response) -> (StatusCode, Value) {
    let status = res.status();
    let v: Value = res.json().expect("a JSON error body");
    assert_eq!(v["meta"]["status"], json!(status.as_u16()), "{v}");
    assert!(v["meta"]["error_message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    (status, v)
}

fn challenge(res: &Response) -> String {
    res.headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// Every header of an answer but `date` (which names the second) and
/// `content-length` (the body is compared on its own), sorted.
fn answer_headers(res: &Response) -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = res
        .headers()
        .iter()
        .filter(|(n, _)| !matches!(n.as_str(), "date" | "content-length"))
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("?").to_string()))
        .collect();
    h.sort();
    h
}

fn ids_of(v: &Value) -> Vec<String> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect()
}

// ----- the seed story -----

#[test]
fn seed_story_end_to_end() {
    let store = seeded();
    let s = Server::start(&store, HttpConfig::default());
    let (olivia_refresh, _) = refresh_of(&store, "acme", "olivia");

    // The exchange answers Squadcast's shape.
    let res = exchange(&s, &olivia_refresh);
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let grant: Value = res.json().unwrap();
    let d = &grant["data"];
    assert_eq!(d["type"], "Bearer");
    assert_eq!(d["refresh_token"], json!(olivia_refresh));
    assert!(d["access_token"].as_str().unwrap().starts_with("tva_"));
    let (iat, exp) = (
        d["issued_at"].as_u64().unwrap(),
        d["expires_at"].as_u64().unwrap(),
    );
    assert_eq!(exp - iat, 3600);
    let olivia = d["access_token"].as_str().unwrap().to_string();

    // The Owner generates her own token over HTTP: the secret once, in `token`.
    let res = create(&s, &olivia, json!({"user_id": "olivia", "label": "ci"}));
    assert_eq!(res.status(), StatusCode::CREATED);
    let own: Value = res.json().unwrap();
    let own = &own["data"];
    assert!(own["token"].as_str().unwrap().starts_with("tvr_"));
    assert_eq!(own["organization_id"], "acme");
    assert_eq!(own["user_id"], "olivia");
    assert_eq!(own["last_refresh"], "0001-01-01T00:00:00Z");
    assert_eq!(own["deleted"], false);
    assert_eq!(own["rate_limit"], 60);

    // ...and assigns one to Uma, a User.
    let res = create(&s, &olivia, json!({"user_id": "uma"}));
    assert_eq!(res.status(), StatusCode::CREATED);
    let assigned: Value = res.json().unwrap();
    let uma_refresh = assigned["data"]["token"].as_str().unwrap().to_string();
    let uma_id = assigned["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(assigned["data"]["user_id"], "uma");

    // Uma's client exchanges it; the assigned token shows in her own list,
    // masked, with its last exchange.
    let uma = access(&s, &uma_refresh);
    let res = list(&s, &uma);
    assert_eq!(res.status(), StatusCode::OK);
    let mine: Value = res.json().unwrap();
    assert_eq!(ids_of(&mine), vec![uma_id.clone()]);
    let t = &mine["data"][0];
    let hint = t["token"].as_str().unwrap();
    assert_eq!(hint, format!("tvr_****{}", &uma_id[28..]));
    assert_ne!(hint, uma_refresh);
    let last = t["last_refresh"].as_str().unwrap();
    assert!(
        last.ends_with('Z') && last.len() == 20 && last != "0001-01-01T00:00:00Z",
        "{last}"
    );
    assert_eq!(t["deleted"], false);
    assert!(t["rate_limit"].is_u64());

    // The Owner lists every token of the org: hers (2) and Uma's.
    let all: Value = list(&s, &olivia).json().unwrap();
    assert_eq!(ids_of(&all).len(), 3);
    assert!(ids_of(&all).contains(&uma_id));
    for t in all["data"].as_array().unwrap() {
        let text = t.to_string();
        assert!(!text.contains(&uma_refresh) && !text.contains(&olivia_refresh));
    }

    // Revoking Uma's token revokes her access token with it.
    let res = delete(&s, &olivia, &uma_id);
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let (status, _) = refusal(list(&s, &uma));
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let res = exchange(&s, &uma_refresh);
    assert!(challenge(&res).contains("invalid_token"));
    assert_eq!(refusal(res).0, StatusCode::UNAUTHORIZED);
    let all: Value = list(&s, &olivia).json().unwrap();
    let revoked = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == json!(uma_id))
        .unwrap();
    assert_eq!(revoked["deleted"], true);
}

// ----- the policy table -----

#[test]
fn each_refusal_of_the_policy_table() {
    let store = seeded();
    let s = Server::start(&store, HttpConfig::default());
    let olivia = bearer_of(&s, &store, "acme", "olivia");
    let adam = bearer_of(&s, &store, "acme", "adam");
    let uma = bearer_of(&s, &store, "acme", "uma");
    let sam = bearer_of(&s, &store, "acme", "sam");
    let gina = bearer_of(&s, &store, "globex", "gina");
    let (_, uma_token) = refresh_of(&store, "acme", "uma"); // its public id

    // A User and a Stakeholder lack `user-write`: 403 insufficient_scope.
    for who in [&uma, &sam] {
        let res = create(&s, who, json!({"user_id": "uma"}));
        let c = challenge(&res);
        assert!(c.contains(r#"error="insufficient_scope""#), "{c}");
        assert!(c.contains(r#"scope="user-write""#), "{c}");
        assert_eq!(refusal(res).0, StatusCode::FORBIDDEN);
        assert_eq!(
            refusal(delete(&s, who, &uma_token)).0,
            StatusCode::FORBIDDEN
        );
    }

    // An Admin generates for herself but may not assign to another member.
    assert_eq!(
        create(&s, &adam, json!({"user_id": "adam"})).status(),
        StatusCode::CREATED
    );
    assert_eq!(
        refusal(create(&s, &adam, json!({"user_id": "uma"}))).0,
        StatusCode::FORBIDDEN
    );
    // An Admin lists only her own tokens, not the org's.
    let adams: Value = list(&s, &adam).json().unwrap();
    assert!(adams["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["user_id"] == "adam"));
    assert!(!ids_of(&adams).contains(&uma_token));
    // A User's list is her own too.
    let umas: Value = list(&s, &uma).json().unwrap();
    assert!(ids_of(&umas).contains(&uma_token));
    assert!(umas["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["user_id"] == "uma"));

    // An Admin may not revoke another member's token; it stays usable.
    assert_eq!(
        refusal(delete(&s, &adam, &uma_token)).0,
        StatusCode::FORBIDDEN
    );
    let all: Value = list(&s, &olivia).json().unwrap();
    let t = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == json!(uma_token))
        .unwrap()
        .clone();
    assert_eq!(t["deleted"], false);

    // Nothing crosses an org: the Owner of globex sees, assigns and revokes
    // nothing of acme.
    let ginas: Value = list(&s, &gina).json().unwrap();
    assert!(ginas["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["organization_id"] == "globex"));
    // Another org's token id is answered exactly as an unknown id: same
    // status, same headers, the same words (each naming the id asked for).
    let unknown = "0123456789abcdef0123456789abcdef";
    let theirs = delete(&s, &gina, &uma_token);
    let none = delete(&s, &gina, unknown);
    assert_eq!(theirs.status(), StatusCode::NOT_FOUND);
    assert_eq!(answer_headers(&theirs), answer_headers(&none));
    let (theirs, none): (Value, Value) = (theirs.json().unwrap(), none.json().unwrap());
    assert_eq!(
        theirs,
        json!({"meta": {"status": 404, "error_message": format!("not found: no token with id {uma_token}")}})
    );
    assert_eq!(
        none,
        json!({"meta": {"status": 404, "error_message": format!("not found: no token with id {unknown}")}})
    );
    let (t, n) = (
        create(&s, &gina, json!({"user_id": "uma"})),
        create(&s, &gina, json!({"user_id": "nobody"})),
    );
    assert_eq!(answer_headers(&t), answer_headers(&n));
    let (t, n): (Value, Value) = (t.json().unwrap(), n.json().unwrap());
    assert_eq!(t["meta"]["status"], 404);
    assert_eq!(
        t["meta"]["error_message"]
            .as_str()
            .unwrap()
            .replace("uma", "nobody"),
        n["meta"]["error_message"].as_str().unwrap()
    );

    // The Owner: unknown member 404, unknown or garbled id 404, scopes
    // beyond the member's role 422.
    assert_eq!(
        refusal(create(&s, &olivia, json!({"user_id": "nobody"}))).0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        refusal(delete(&s, &olivia, &"0".repeat(32))).0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        refusal(delete(&s, &olivia, "not-an-id")).0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        refusal(create(
            &s,
            &olivia,
            json!({"user_id": "uma", "scopes": ["user-write"]})
        ))
        .0,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    // Bad bodies: 422.
    for body in [
        json!({}),
        json!([]),
        json!({"user_id": ""}),
        json!({"user_id": true}),
    ] {
        assert_eq!(
            refusal(create(&s, &olivia, body)).0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
    let res = client()
        .post(s.url("/v3/refresh-token"))
        .bearer_auth(&olivia)
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(refusal(res).0, StatusCode::UNPROCESSABLE_ENTITY);

    // The Owner revokes the member's token; the member revokes her own.
    assert_eq!(
        delete(&s, &olivia, &uma_token).status(),
        StatusCode::NO_CONTENT
    );
    let (_, adam_token) = refresh_of(&store, "acme", "adam");
    assert_eq!(
        delete(&s, &adam, &adam_token).status(),
        StatusCode::NO_CONTENT
    );
    // Revoking again changes nothing and succeeds.
    assert_eq!(
        delete(&s, &adam, &adam_token).status(),
        StatusCode::NO_CONTENT
    );

    // Without a token, or with a bad one: 401.
    let res = client().get(s.url("/v3/refresh-token")).send().unwrap();
    let c = challenge(&res);
    assert!(
        c.starts_with("Bearer realm=") && !c.contains("error="),
        "{c}"
    );
    assert_eq!(refusal(res).0, StatusCode::UNAUTHORIZED);
    let res = list(&s, "tva_forged");
    assert!(challenge(&res).contains(r#"error="invalid_token""#));
    assert_eq!(refusal(res).0, StatusCode::UNAUTHORIZED);

    // A removed member's access token stops at once.
    store.remove_member("acme", "uma").unwrap();
    assert_eq!(refusal(list(&s, &uma)).0, StatusCode::UNAUTHORIZED);
    // A demoted Admin loses `user-write` at once.
    store.set_role("acme", "adam", Role::User).unwrap();
    assert_eq!(
        refusal(create(&s, &adam, json!({"user_id": "adam"}))).0,
        StatusCode::FORBIDDEN
    );
}

/// Every route answers another organization's token or id exactly as an
/// unknown one: status, headers and body.
#[test]
fn another_orgs_tokens_are_answered_as_unknown_ones() {
    let store = seeded();
    let s = Server::start(&store, HttpConfig::default());
    let gina = bearer_of(&s, &store, "globex", "gina");
    let (uma_refresh, uma_id) = refresh_of(&store, "acme", "uma");
    let uma_access = access(&s, &uma_refresh);
    let unknown_refresh = encode_raw("tv", TokenKind::Refresh, [9; 16], [7; 32]);
    let unknown_access = encode_raw("tv", TokenKind::Access, [9; 16], [7; 32]);
    let unknown_id = TokenId::from_bytes([9; 16]).to_string();
    let answer = |res: Response| {
        let status = res.status();
        let headers = answer_headers(&res);
        (status, headers, res.text().unwrap())
    };
    let same_but_id = |theirs: (StatusCode, Vec<(String, String)>, String),
                       none: (StatusCode, Vec<(String, String)>, String)| {
        assert_eq!(theirs.0, none.0);
        assert_eq!(theirs.1, none.1);
        assert_eq!(theirs.2.replace(&uma_id, &unknown_id), none.2);
    };
    for path in ["/oauth/revoke", "/oauth/introspect"] {
        for (theirs, none) in [
            (&uma_refresh, &unknown_refresh),
            (&uma_access, &unknown_access),
        ] {
            let t = answer(form(&s, path, Some(&gina), &format!("token={theirs}")));
            let n = answer(form(&s, path, Some(&gina), &format!("token={none}")));
            assert_eq!(t.0, StatusCode::OK, "{path}");
            same_but_id(t, n);
        }
    }
    same_but_id(
        answer(delete(&s, &gina, &uma_id)),
        answer(delete(&s, &gina, &unknown_id)),
    );
    // None of it touched Uma's tokens.
    assert!(store.verify(&uma_access).is_ok());
    assert!(store.verify_refresh(&uma_refresh).is_ok());
}

/// The route table of docs/http.md, row by row: `GET /v3/refresh-token` needs `read` and
/// lists the whole org only for the Owner whose token also holds
/// `user-write`; `POST` and `DELETE` need `user-write`, and `read` is not
/// needed for them.
#[test]
fn scopes_govern_the_management_calls() {
    let store = seeded();
    let s = Server::start(&store, HttpConfig::default());
    let narrowed = |user: &str, scopes: &[&str]| {
        let t = store
            .generate(
                &Actor::new("acme", user),
                GenerateOptions {
                    scopes: Some(scopes.iter().map(|s| s.to_string()).collect()),
                    ..Default::default()
                },
            )
            .unwrap();
        access(&s, t.token.expose())
    };
    let (_, uma_token) = refresh_of(&store, "acme", "uma");
    let (_, adam_token) = refresh_of(&store, "acme", "adam");
    let owner_full = bearer_of(&s, &store, "acme", "olivia");
    let owner_read = narrowed("olivia", &["read"]);
    let owner_write = narrowed("olivia", &["user-write"]);
    let owner_other = narrowed("olivia", &["squad-read"]);
    let owner_both = narrowed("olivia", &["read", "user-write"]);
    let admin_full = bearer_of(&s, &store, "acme", "adam");
    let user_full = bearer_of(&s, &store, "acme", "uma");
    let stakeholder_full = bearer_of(&s, &store, "acme", "sam");
    let users_of = |res: Response| -> Vec<String> {
        assert_eq!(res.status(), StatusCode::OK);
        let v: Value = res.json().unwrap();
        let mut u: Vec<String> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["user_id"].as_str().unwrap().to_string())
            .collect();
        u.sort();
        u.dedup();
        u
    };
    let insufficient = |res: Response, scope: &str| {
        let c = challenge(&res);
        assert!(c.contains(r#"error="insufficient_scope""#), "{c}");
        assert!(c.contains(&format!(r#"scope="{scope}""#)), "{c}");
        assert_eq!(refusal(res).0, StatusCode::FORBIDDEN);
    };

    // GET: the whole org for the Owner with read and user-write ...
    for t in [&owner_full, &owner_both] {
        assert_eq!(users_of(list(&s, t)), ["adam", "olivia", "sam", "uma"]);
    }
    // ... her own tokens when her token holds read alone ...
    assert_eq!(users_of(list(&s, &owner_read)), ["olivia"]);
    // ... and the caller's own for everyone else.
    assert_eq!(users_of(list(&s, &admin_full)), ["adam"]);
    assert_eq!(users_of(list(&s, &user_full)), ["uma"]);
    assert_eq!(users_of(list(&s, &stakeholder_full)), ["sam"]);
    // Without read, no list at all, even for the Owner holding user-write.
    insufficient(list(&s, &owner_write), "read");
    insufficient(list(&s, &owner_other), "read");

    // POST and DELETE need user-write; read is not enough.
    insufficient(
        create(&s, &owner_read, json!({"user_id": "uma"})),
        "user-write",
    );
    insufficient(delete(&s, &owner_read, &uma_token), "user-write");
    insufficient(
        create(&s, &owner_other, json!({"user_id": "uma"})),
        "user-write",
    );
    assert_eq!(
        create(&s, &owner_write, json!({"user_id": "uma"})).status(),
        StatusCode::CREATED
    );
    assert_eq!(
        delete(&s, &owner_write, &uma_token).status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        delete(&s, &admin_full, &adam_token).status(),
        StatusCode::NO_CONTENT
    );
    // Nothing the refusals touched changed: Uma's token fell only to the
    // Owner's user-write call.
    let acme = store.list_org(&Actor::new("acme", "olivia")).unwrap();
    let revoked: Vec<String> = acme
        .iter()
        .filter(|i| matches!(i.state, tokenvault::TokenState::Revoked { .. }))
        .map(|i| i.id.to_string())
        .collect();
    let mut want = vec![uma_token.clone(), adam_token.clone()];
    want.sort();
    let mut got = revoked;
    got.sort();
    assert_eq!(got, want);
}

// ----- RFC 7009 and RFC 7662 -----

#[test]
fn rfc7662_introspection() {
    let store = seeded();
    let s = Server::start(&store, HttpConfig::default());
    let olivia = bearer_of(&s, &store, "acme", "olivia");
    let (uma_refresh, _) = refresh_of(&store, "acme", "uma");
    let uma = access(&s, &uma_refresh);
    let gus = bearer_of(&s, &store, "globex", "gus");

    let v = introspect(&s, &olivia, &uma);
    assert_eq!(v["active"], true);
    assert_eq!(v["sub"], "uma");
    assert_eq!(v["token_type"], "Bearer");
    let scopes: Vec<&str> = v["scope"].as_str().unwrap().split(' ').collect();
    assert!(scopes.contains(&"incident-write") && !scopes.contains(&"user-write"));
    assert_eq!(
        v["exp"].as_u64().unwrap() - v["iat"].as_u64().unwrap(),
        3600
    );

    let v = introspect(&s, &olivia, &uma_refresh);
    assert_eq!(v["active"], true);
    assert_eq!(v["sub"], "uma");
    assert_eq!(v["token_type"], "refresh_token");
    assert!(v["iat"].is_u64());

    // Anything not live, and anything of another org, is just inactive.
    let long = "x".repeat(5000);
    for t in ["", "garbage", "tva_x", long.as_str()] {
        let res = form(
            &s,
            "/oauth/introspect",
            Some(&olivia),
            &format!("token={t}"),
        );
        if t.is_empty() {
            assert_eq!(refusal(res).0, StatusCode::BAD_REQUEST);
        } else {
            assert_eq!(res.json::<Value>().unwrap(), json!({"active": false}));
        }
    }
    assert_eq!(introspect(&s, &gus, &uma), json!({"active": false}));
    assert_eq!(introspect(&s, &gus, &uma_refresh), json!({"active": false}));
    store
        .revoke(
            &Actor::new("acme", "uma"),
            &store.verify_refresh(&uma_refresh).unwrap().id,
            None,
        )
        .unwrap();
    assert_eq!(introspect(&s, &olivia, &uma), json!({"active": false}));
    assert_eq!(
        introspect(&s, &olivia, &uma_refresh),
        json!({"active": false})
    );

    // Guarded by a bearer token; the body must hold `token`.
    let res = form(&s, "/oauth/introspect", None, "token=x");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = form(
        &s,
        "/oauth/introspect",
        Some(&olivia),
        "token_type_hint=access_token",
    );
    let (status, v) = refusal(res);
    assert_eq!(
        (status, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    let res = client()
        .post(s.url("/oauth/introspect"))
        .bearer_auth(&olivia)
        .header("Content-Type", "text/plain")
        .body("token=x")
        .send()
        .unwrap();
    assert_eq!(refusal(res).0, StatusCode::BAD_REQUEST);
}

#[test]
fn rfc7009_revocation() {
    let store = seeded();
    let s = Server::start(&store, HttpConfig::default());
    let olivia = bearer_of(&s, &store, "acme", "olivia");
    let gina = bearer_of(&s, &store, "globex", "gina");
    let (uma_refresh, _) = refresh_of(&store, "acme", "uma");
    let uma1 = access(&s, &uma_refresh);
    let uma2 = access(&s, &uma_refresh);
    // An RFC 7009 revocation with the form `body`.
    let revoke = |bearer: Option<&str>, body: &str| form(&s, "/oauth/revoke", bearer, body);

    // An unknown or malformed token: 200 all the same.
    for t in ["unknown", "tvr_zzzz", "tva_"] {
        let res = revoke(Some(&olivia), &format!("token={t}"));
        assert_eq!(res.status(), StatusCode::OK);
    }

    // Another org's caller cannot revoke acme's token: 200, nothing changes.
    let res = revoke(Some(&gina), &format!("token={uma1}"));
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(list(&s, &uma1).status(), StatusCode::OK);

    // An access token alone: the refresh token and its other access tokens
    // stay usable.
    let body = format!("token={uma1}&token_type_hint=access_token");
    assert_eq!(revoke(Some(&uma2), &body).status(), StatusCode::OK);
    assert_eq!(refusal(list(&s, &uma1)).0, StatusCode::UNAUTHORIZED);
    assert_eq!(list(&s, &uma2).status(), StatusCode::OK);
    assert_eq!(exchange(&s, &uma_refresh).status(), StatusCode::OK);

    // A refresh token (a wrong hint does not matter): it and every access
    // token derived from it.
    let body = format!("token={uma_refresh}&token_type_hint=access_token");
    assert_eq!(revoke(Some(&olivia), &body).status(), StatusCode::OK);
    assert_eq!(refusal(list(&s, &uma2)).0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        refusal(exchange(&s, &uma_refresh)).0,
        StatusCode::UNAUTHORIZED
    );
    // Again: 200.
    let body = format!("token={uma_refresh}");
    assert_eq!(revoke(Some(&olivia), &body).status(), StatusCode::OK);
    // The audit trail names the holder as the one who revoked.
    let events = store.audit(&Actor::new("acme", "olivia"), 50).unwrap();
    assert!(events
        .iter()
        .any(|e| e.action == "token.revoke" && e.actor == "uma" && e.outcome == "ok"));

    // Guarded by a bearer token; `token` is required.
    let res = revoke(None, &format!("token={uma_refresh}"));
    assert!(challenge(&res).starts_with("Bearer"));
    assert_eq!(refusal(res).0, StatusCode::UNAUTHORIZED);
    let (status, v) = refusal(revoke(Some(&olivia), ""));
    assert_eq!(
        (status, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
}

// ----- rate limit -----

#[test]
fn exchanges_are_rate_limited_per_refresh_token() {
    let store = seeded();
    let cfg = HttpConfig::default().rate_limit(RateLimit {
        per_minute: 1,
        burst: 2,
    });
    let s = Server::start(&store, cfg);
    let (a, a_id) = refresh_of(&store, "acme", "uma");
    let (b, _) = refresh_of(&store, "acme", "uma");

    // Failed attempts cost nothing: ids are public, so a well-formed token
    // with a's id and a wrong secret must not drain a's bucket.
    let a_id: TokenId = a_id.parse().unwrap();
    let forged = encode_raw("tv", TokenKind::Refresh, *a_id.as_bytes(), [7; 32]);
    for _ in 0..5 {
        assert_eq!(refusal(exchange(&s, &forged)).0, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(exchange(&s, &a).status(), StatusCode::OK);
    assert_eq!(exchange(&s, &a).status(), StatusCode::OK);
    let res = exchange(&s, &a);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(refusal(res).0, StatusCode::TOO_MANY_REQUESTS);
    // Another token has its own bucket.
    let b_access = access(&s, &b);
    // Lists report the limit.
    let v: Value = list(&s, &b_access).json().unwrap();
    assert!(v["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["rate_limit"] == 1));
}

// ----- the layer on host routes -----

fn sample_app(store: &TokenStore) -> Router {
    Router::new()
        .route(
            "/incidents",
            post(|Authorized(p): Authorized| async move { format!("incident by {}", p.user) })
                .layer(require_scope(store, "incident-write")),
        )
        .route(
            "/users",
            post(|a: Authorized| async move { format!("user made by {}", a.user) })
                .layer(require_scope(store, "user-write")),
        )
        .route(
            "/me",
            get(|a: Authorized| async move { format!("{} {}", a.user, a.role) }),
        )
        .route_layer(require_bearer(store))
        .route(
            "/extension",
            get(|a: Authorized| async move { a.org.to_string() }).layer(Extension(store.clone())),
        )
        .route(
            "/unwired",
            get(|a: Authorized| async move { a.org.to_string() }),
        )
        .merge(http::router(store.clone()))
}

#[test]
fn bearer_layer_guards_host_routes() {
    let store = seeded();
    let s = Server::start_app(sample_app(&store), HttpConfig::default());
    let uma = bearer_of(&s, &store, "acme", "uma");
    let adam = bearer_of(&s, &store, "acme", "adam");
    let c = client();
    let call = |path: &str, bearer: Option<&str>| {
        let mut rb = if path == "/me" || path == "/extension" || path == "/unwired" {
            c.get(s.url(path))
        } else {
            c.post(s.url(path))
        };
        if let Some(b) = bearer {
            rb = rb.bearer_auth(b);
        }
        rb.send().unwrap()
    };

    // The User: incidents yes, users no (RFC 6750 insufficient_scope).
    let res = call("/incidents", Some(&uma));
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().unwrap(), "incident by uma");
    let res = call("/users", Some(&uma));
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let ch = challenge(&res);
    assert!(
        ch.contains(r#"error="insufficient_scope""#) && ch.contains(r#"scope="user-write""#),
        "{ch}"
    );
    // The Admin: both.
    assert_eq!(call("/incidents", Some(&adam)).status(), StatusCode::OK);
    let res = call("/users", Some(&adam));
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().unwrap(), "user made by adam");
    assert_eq!(call("/me", Some(&adam)).text().unwrap(), "adam admin");
    assert_eq!(call("/extension", Some(&uma)).text().unwrap(), "acme");

    // No token: 401 with a bare challenge; a bad token: invalid_token.
    for path in ["/incidents", "/users", "/me", "/extension"] {
        let res = call(path, None);
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{path}");
        let ch = challenge(&res);
        assert!(
            ch.starts_with("Bearer realm=\"tokenvault\"") && !ch.contains("error="),
            "{ch}"
        );
        let res = call(path, Some("tva_not_a_token"));
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert!(challenge(&res).contains(r#"error="invalid_token""#));
    }
    let res = c
        .post(s.url("/incidents"))
        .header("Authorization", "Basic dXNlcjpwYXNz")
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // Without the layer or the extension, the extractor refuses (a wiring
    // mistake), never lets the request through.
    assert_eq!(
        call("/unwired", Some(&uma)).status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );

    // The Admin demoted: user-write is gone at once; removed: nothing works.
    store.set_role("acme", "adam", Role::User).unwrap();
    assert_eq!(call("/users", Some(&adam)).status(), StatusCode::FORBIDDEN);
    store.remove_member("acme", "adam").unwrap();
    let res = call("/incidents", Some(&adam));
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(challenge(&res).contains(r#"error="invalid_token""#));
}

// ----- malformed, oversized, slow -----

#[test]
fn malformed_and_oversized_requests() {
    let store = seeded();
    let cfg = HttpConfig::default()
        .max_body_bytes(1024)
        .max_header_bytes(1024);
    let s = Server::start(&store, cfg);
    let olivia = bearer_of(&s, &store, "acme", "olivia");
    let c = client();

    // The exchange: missing header 400; garbage, overlong 401; two headers 400.
    let res = c.get(s.url("/oauth/access-token")).send().unwrap();
    assert_eq!(refusal(res).0, StatusCode::BAD_REQUEST);
    let long = "A".repeat(900);
    for bad in ["", "garbage", "tvr_", long.as_str()] {
        assert_eq!(
            refusal(exchange(&s, bad)).0,
            StatusCode::UNAUTHORIZED,
            "{bad}"
        );
    }
    let res = c
        .get(s.url("/oauth/access-token"))
        .header("X-Refresh-Token", "a")
        .header("X-Refresh-Token", "b")
        .send()
        .unwrap();
    assert_eq!(refusal(res).0, StatusCode::BAD_REQUEST);
    // Bytes that are not text in the header.
    let reply = raw(
        s.addr,
        b"GET /oauth/access-token HTTP/1.1\r\nHost: x\r\nX-Refresh-Token: \xff\xfe\x80\r\nConnection: close\r\n\r\n",
        Duration::from_secs(20),
    );
    assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");

    // An access token where a refresh token belongs, and the reverse.
    let res = exchange(&s, &olivia);
    assert_eq!(refusal(res).0, StatusCode::UNAUTHORIZED);
    let (olivia_refresh, _) = refresh_of(&store, "acme", "olivia");
    assert_eq!(
        refusal(list(&s, &olivia_refresh)).0,
        StatusCode::UNAUTHORIZED
    );

    // A body over the limit: 413; a header over the limit: 431.
    let res = create(
        &s,
        &olivia,
        json!({"user_id": "olivia", "label": "x".repeat(4096)}),
    );
    assert_eq!(refusal(res).0, StatusCode::PAYLOAD_TOO_LARGE);
    let res = c
        .get(s.url("/v3/refresh-token"))
        .bearer_auth(&olivia)
        .header("X-Padding", "p".repeat(2000))
        .send()
        .unwrap();
    assert_eq!(refusal(res).0, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // A head far beyond the bound is cut off by the server itself.
    let mut huge = b"GET /v3/refresh-token HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..200 {
        huge.extend_from_slice(format!("X-H{i}: {}\r\n", "q".repeat(500)).as_bytes());
    }
    huge.extend_from_slice(b"\r\n");
    let reply = raw(s.addr, &huge, Duration::from_secs(20));
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 431"),
        "{reply}"
    );
    // Not HTTP at all.
    let reply = raw(
        s.addr,
        b"\x16\x03\x01\x00\xa5hello\r\n\r\n",
        Duration::from_secs(20),
    );
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 400"),
        "{reply}"
    );
    // A label with control characters is refused by the store: 422.
    let res = create(
        &s,
        &olivia,
        json!({"user_id": "olivia", "label": "a\u{7}b"}),
    );
    assert_eq!(refusal(res).0, StatusCode::UNPROCESSABLE_ENTITY);

    // Unknown routes and methods keep the envelope.
    assert_eq!(
        refusal(c.get(s.url("/nope")).send().unwrap()).0,
        StatusCode::NOT_FOUND
    );
    let res = c.put(s.url("/v3/refresh-token")).send().unwrap();
    assert_eq!(refusal(res).0, StatusCode::METHOD_NOT_ALLOWED);

    // After all that the server still answers.
    assert_eq!(list(&s, &olivia).status(), StatusCode::OK);
    assert!(store.check_integrity().unwrap().is_clean());
}

#[test]
fn slow_clients_are_cut_off() {
    let store = seeded();
    let cfg = HttpConfig::default()
        .header_read_timeout(Duration::from_millis(300))
        .request_timeout(Duration::from_millis(500));
    let s = Server::start(&store, cfg);
    let olivia = bearer_of(&s, &store, "acme", "olivia");

    // A head that never ends: the server closes the connection (the client's
    // own 30 s read timeout only guards against a hang of the test).
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(b"GET /v3/refresh-token HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    let mut buf = Vec::new();
    let closed = match c.read_to_end(&mut buf) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(closed, "the server kept a stalled connection open");

    // A body announced but never sent: 408.
    let req = format!(
        "POST /v3/refresh-token HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {olivia}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    );
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(req.as_bytes()).unwrap();
    let mut reply = [0u8; 64];
    let n = c.read(&mut reply).unwrap();
    let reply = String::from_utf8_lossy(&reply[..n]);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    // Nothing was created.
    assert_eq!(
        store.list_own(&Actor::new("acme", "olivia")).unwrap().len(),
        1
    );
}

// ----- logging -----

#[test]
fn one_log_line_per_request_and_never_a_token() {
    let log = captured();
    let store = seeded();
    let s = Server::start(&store, HttpConfig::default());
    let (refresh, _) = refresh_of(&store, "acme", "olivia");
    let bearer = access(&s, &refresh);
    let made: Value = create(&s, &bearer, json!({"user_id": "uma"}))
        .json()
        .unwrap();
    let assigned = made["data"]["token"].as_str().unwrap().to_string();
    let _ = exchange(&s, &format!("{}x", &refresh[..refresh.len() - 1]));
    let _ = form(
        &s,
        "/oauth/revoke",
        Some(&bearer),
        &format!("token={assigned}"),
    );
    let _ = client()
        .get(s.url(&format!("/v3/refresh-token/{refresh}?token={refresh}")))
        .send()
        .unwrap();
    drop(s);

    let lines = log.lock().unwrap().clone();
    let requests = lines
        .iter()
        .filter(|l| l.starts_with("tokenvault::http") && l.contains("message=request"))
        .count();
    assert!(requests >= 5, "{lines:#?}");
    assert!(lines
        .iter()
        .any(|l| l.contains("route=/v3/refresh-token") && l.contains("status=201")));
    for l in &lines {
        for secret in [&refresh, &bearer, &assigned] {
            assert!(!l.contains(secret.as_str()), "a token reached the log: {l}");
        }
        assert!(
            !l.contains(&refresh[4..20]),
            "part of a token reached the log: {l}"
        );
    }
}

/// HEAD on the exchange route is refused and exchanges nothing (axum would
/// otherwise run the GET handler for it).
#[test]
fn head_does_not_exchange() {
    let store = seeded();
    let s = Server::start(&store, HttpConfig::default());
    let (refresh, _) = refresh_of(&store, "acme", "uma");
    let res = client()
        .head(s.url("/oauth/access-token"))
        .header("X-Refresh-Token", &refresh)
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    let uma = Actor::new("acme", "uma");
    assert_eq!(store.list_own(&uma).unwrap()[0].last_refresh, None);
    // GET still exchanges.
    assert_eq!(exchange(&s, &refresh).status(), StatusCode::OK);
    assert!(store.list_own(&uma).unwrap()[0].last_refresh.is_some());
}

// ----- one token by id, its label, and the paged list -----

fn show(s: &Server, bearer: &str, id: &str) -> Response {
    client()
        .get(s.url(&format!("/v3/refresh-token/{id}")))
        .bearer_auth(bearer)
        .send()
        .unwrap()
}

fn relabel(s: &Server, bearer: &str, id: &str, body: &str) -> Response {
    client()
        .patch(s.url(&format!("/v3/refresh-token/{id}")))
        .bearer_auth(bearer)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .unwrap()
}

#[test]
fn get_and_patch_one_token_for_its_holder_or_the_owner() {
    let store = seeded();
    let s = Server::start(&store, HttpConfig::default());
    let uma = bearer_of(&s, &store, "acme", "uma");
    let adam = bearer_of(&s, &store, "acme", "adam");
    let gina = bearer_of(&s, &store, "globex", "gina");
    let olivia = {
        let t = store
            .generate(
                &Actor::new("acme", "olivia"),
                GenerateOptions::default().scopes(["read", "user-write"]),
            )
            .unwrap();
        access(&s, t.token.expose())
    };
    let (_, id) = refresh_of(&store, "acme", "uma");

    // The holder: the list's item, with its label.
    let res = show(&s, &uma, &id);
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let got: Value = res.json().unwrap();
    let listed: Value = list(&s, &uma).json().unwrap();
    let mut item = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap()
        .clone();
    item["label"] = Value::Null;
    assert_eq!(got["data"], item);

    let res = relabel(&s, &uma, &id, r#"{"label": "ci runner"}"#);
    assert_eq!(res.status(), StatusCode::OK);
    let got: Value = res.json().unwrap();
    assert_eq!(got["data"]["label"], "ci runner");
    assert_eq!(got["data"]["id"], id.as_str());
    let tid: TokenId = id.parse().unwrap();
    let uma_actor = Actor::new("acme", "uma");
    assert_eq!(
        store.get(&uma_actor, &tid).unwrap().label.as_deref(),
        Some("ci runner")
    );

    // The Owner reads and relabels; the label may go.
    let got: Value = show(&s, &olivia, &id).json().unwrap();
    assert_eq!(got["data"]["label"], "ci runner");
    let res = relabel(&s, &olivia, &id, r#"{"label": null}"#);
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(store.get(&uma_actor, &tid).unwrap().label, None);
    relabel(&s, &uma, &id, r#"{"label": "kept"}"#);

    // Another member: 403; another org's Owner and unknown ids: 404 alike.
    assert_eq!(refusal(show(&s, &adam, &id)).0, StatusCode::FORBIDDEN);
    assert_eq!(
        refusal(relabel(&s, &adam, &id, r#"{"label": "mine"}"#)).0,
        StatusCode::FORBIDDEN
    );
    let (st, foreign) = refusal(show(&s, &gina, &id));
    assert_eq!(st, StatusCode::NOT_FOUND);
    let unknown = "0123456789abcdef0123456789abcdef";
    let (st2, unknown_body) = refusal(show(&s, &gina, unknown));
    assert_eq!(st2, StatusCode::NOT_FOUND);
    assert_eq!(
        foreign["meta"]["error_message"]
            .as_str()
            .unwrap()
            .replace(&id, "ID"),
        unknown_body["meta"]["error_message"]
            .as_str()
            .unwrap()
            .replace(unknown, "ID")
    );
    assert_eq!(
        refusal(relabel(&s, &gina, &id, r#"{"label": "x"}"#)).0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        refusal(show(&s, &uma, "not-an-id")).0,
        StatusCode::NOT_FOUND
    );

    // Bad bodies and labels: 422; no bearer: 401.
    for body in [
        r#"{}"#,
        "[]",
        "nope",
        r#"{"label": 7}"#,
        r#"{"label": "a\u0007b"}"#,
    ] {
        assert_eq!(
            refusal(relabel(&s, &uma, &id, body)).0,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}"
        );
    }
    let long = format!(r#"{{"label": "{}"}}"#, "x".repeat(257));
    assert_eq!(
        refusal(relabel(&s, &uma, &id, &long)).0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let res = client()
        .get(s.url(&format!("/v3/refresh-token/{id}")))
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // Scope `read` is needed, and enough.
    let with_scopes = |scopes: &[&str]| {
        let t = store
            .generate(
                &uma_actor,
                GenerateOptions::default().scopes(scopes.iter().copied()),
            )
            .unwrap();
        access(&s, t.token.expose())
    };
    let no_read = with_scopes(&["incident-write"]);
    assert_eq!(refusal(show(&s, &no_read, &id)).0, StatusCode::FORBIDDEN);
    assert_eq!(
        refusal(relabel(&s, &no_read, &id, r#"{"label": "x"}"#)).0,
        StatusCode::FORBIDDEN
    );
    let read_only = with_scopes(&["read"]);
    assert_eq!(show(&s, &read_only, &id).status(), StatusCode::OK);
    assert_eq!(
        store.get(&uma_actor, &tid).unwrap().label.as_deref(),
        Some("kept")
    );
}

#[test]
fn the_list_pages_with_after_and_limit() {
    let store = seeded();
    let s = Server::start(&store, HttpConfig::default());
    let uma = bearer_of(&s, &store, "acme", "uma");
    for _ in 0..4 {
        refresh_of(&store, "acme", "uma");
    }
    let page = |q: &str| -> Response {
        client()
            .get(s.url(&format!("/v3/refresh-token{q}")))
            .bearer_auth(&uma)
            .send()
            .unwrap()
    };
    let whole: Value = page("").json().unwrap();
    assert_eq!(
        whole.as_object().unwrap().len(),
        1,
        "only `data` without limit"
    );
    let whole = whole["data"].as_array().unwrap().clone();
    assert_eq!(whole.len(), 5);

    let mut walked = Vec::new();
    let mut q = "?limit=2".to_string();
    loop {
        let res = page(&q);
        assert_eq!(res.status(), StatusCode::OK);
        let v: Value = res.json().unwrap();
        let mut k: Vec<&String> = v.as_object().unwrap().keys().collect();
        k.sort();
        assert_eq!(k, ["data", "next"]);
        walked.extend(v["data"].as_array().unwrap().iter().cloned());
        if v["next"].is_null() {
            break;
        }
        assert_eq!(v["next"], walked.last().unwrap()["id"]);
        q = format!("?after={}&limit=2", v["next"].as_str().unwrap());
    }
    assert_eq!(walked, whole);
    let rest: Value = page(&format!("?after={}", whole[1]["id"].as_str().unwrap()))
        .json()
        .unwrap();
    assert_eq!(rest["data"].as_array().unwrap(), &whole[2..].to_vec());
    assert!(rest.get("next").is_none());
    for bad in ["?limit=0", "?limit=x", "?after=zz"] {
        assert_eq!(refusal(page(bad)).0, StatusCode::BAD_REQUEST, "{bad}");
    }
    // A cursor from another list is a bad request of its own kind (422).
    let (_, other) = refresh_of(&store, "acme", "adam");
    assert_eq!(
        refusal(page(&format!("?after={other}"))).0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}
