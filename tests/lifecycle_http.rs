//! The HTTP front's lifecycle routes: `POST /v3/refresh-token/{id}/rotate`
//! (201, the new token as `POST /v3/refresh-token` answers it plus
//! `replaces` and `old_expires_at`), `…/disable` and `…/enable` (200, the
//! token as the list shows it), `"state"` in list items, a disabled
//! token's bearer answered 401 `invalid_token`, and the holder-or-Owner
//! rule with another organization's token as an unknown id.
#![cfg(feature = "http")]

mod common;

use common::http::{client, Server};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokenvault::http::HttpConfig;
use tokenvault::{Actor, Role, TokenStore};

/// An access token of `org/user` (scopes of their role).
fn bearer(store: &TokenStore, org: &str, user: &str) -> (String, String) {
    let t = store
        .generate(&Actor::new(org, user), Default::default())
        .unwrap();
    let a = store.exchange(t.token.expose()).unwrap().access_token;
    (a.expose().to_string(), t.info.id.to_string())
}

fn post(s: &Server, path: &str, bearer: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut rb = client().post(s.url(path)).bearer_auth(bearer);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let res = rb.send().unwrap();
    let status = res.status();
    let text = res.text().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn get(s: &Server, path: &str, bearer: &str) -> (StatusCode, Value) {
    let res = client()
        .get(s.url(path))
        .bearer_auth(bearer)
        .send()
        .unwrap();
    let status = res.status();
    (status, res.json().unwrap_or(Value::Null))
}

fn setup() -> (TokenStore, Server) {
    let store = TokenStore::temporary().unwrap();
    common::store::seed_acme(&store);
    store.add_member("beta", "bea", Role::Owner).unwrap();
    let s = Server::start(&store, HttpConfig::default());
    (store, s)
}

#[test]
fn disable_and_enable_answer_the_token_as_the_list_shows_it() {
    let (store, s) = setup();
    let (uma, _) = bearer(&store, "acme", "uma");
    let (olivia, _) = bearer(&store, "acme", "olivia");
    let (bea, _) = bearer(&store, "beta", "bea");
    let (adam, _) = bearer(&store, "acme", "adam");
    // The token to suspend, with its own access token.
    let t = store
        .generate(&Actor::new("acme", "uma"), Default::default())
        .unwrap();
    let id = t.info.id.to_string();
    let access = store.exchange(t.token.expose()).unwrap().access_token;

    let (code, body) = get(&s, "/v3/refresh-token", &uma);
    assert_eq!(code, StatusCode::OK);
    assert!(body["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["state"] == "active"));

    let (code, body) = post(&s, &format!("/v3/refresh-token/{id}/disable"), &uma, None);
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["id"], id);
    assert_eq!(body["data"]["state"], "disabled");
    assert_eq!(body["data"]["deleted"], false);
    let (_, shown) = get(&s, &format!("/v3/refresh-token/{id}"), &uma);
    assert_eq!(body["data"], shown["data"], "as GET shows it");

    // The disabled token's access token: 401 invalid_token.
    let res = client()
        .get(s.url("/v3/refresh-token"))
        .bearer_auth(access.expose())
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let challenge = res.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("invalid_token"), "{challenge}");
    // Its exchange is refused too.
    let res = client()
        .get(s.url("/oauth/access-token"))
        .header("X-Refresh-Token", t.token.expose())
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // Lists show the state.
    let (_, mine) = get(&s, "/v3/refresh-token", &uma);
    let item = mine["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id)
        .unwrap()
        .clone();
    assert_eq!(item["state"], "disabled");
    let (_, all) = get(&s, "/v3/refresh-token?limit=50", &olivia);
    assert!(all["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["id"] == id && i["state"] == "disabled"));

    // Another member: 403; another organization: 404 as an unknown id.
    let (code, _) = post(&s, &format!("/v3/refresh-token/{id}/enable"), &adam, None);
    assert_eq!(code, StatusCode::FORBIDDEN);
    let (code, foreign) = post(&s, &format!("/v3/refresh-token/{id}/enable"), &bea, None);
    let unknown = format!("/v3/refresh-token/{}/enable", "0".repeat(32));
    let (code2, _) = post(&s, &unknown, &bea, None);
    assert_eq!(
        (code, code2),
        (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND),
        "{foreign}"
    );
    let (code, _) = post(&s, "/v3/refresh-token/nope/enable", &uma, None);
    assert_eq!(code, StatusCode::NOT_FOUND);

    // The Owner enables it.
    let (code, body) = post(&s, &format!("/v3/refresh-token/{id}/enable"), &olivia, None);
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["state"], "active");
    let (code, _) = get(&s, "/v3/refresh-token", access.expose());
    assert_eq!(code, StatusCode::OK);

    // Without a bearer: 401, nothing changed.
    let res = client()
        .post(s.url(&format!("/v3/refresh-token/{id}/disable")))
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(store.exchange(t.token.expose()).is_ok());
}

#[test]
fn rotate_answers_201_with_the_new_token_and_the_old_ones_end() {
    let (store, s) = setup();
    let (uma, _) = bearer(&store, "acme", "uma");
    let (adam, _) = bearer(&store, "acme", "adam");
    let (bea, _) = bearer(&store, "beta", "bea");
    let t = store
        .generate(
            &Actor::new("acme", "uma"),
            tokenvault::GenerateOptions::default().label("ci"),
        )
        .unwrap();
    let id = t.info.id.to_string();
    let path = format!("/v3/refresh-token/{id}/rotate");

    // Refusals first: each changes nothing.
    for (who, body, want) in [
        (&adam, json!({"grace": 60}), StatusCode::FORBIDDEN),
        (&bea, json!({"grace": 60}), StatusCode::NOT_FOUND),
        (&uma, json!({"grace": -1}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            &uma,
            json!({"grace": "1h"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            &uma,
            json!({"grace": 604_801}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let (code, b) = post(&s, &path, who, Some(body.clone()));
        assert_eq!(code, want, "{body}: {b}");
    }
    assert_eq!(
        store
            .list_own(&Actor::new("acme", "uma"))
            .unwrap()
            .iter()
            .filter(|i| i.label.as_deref() == Some("ci"))
            .count(),
        1
    );

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (code, body) = post(&s, &path, &uma, Some(json!({"grace": 0})));
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let d = &body["data"];
    let mut keys: Vec<&str> = d.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "deleted",
            "id",
            "last_refresh",
            "last_used_agent",
            "last_used_ip",
            "old_expires_at",
            "organization_id",
            "rate_limit",
            "replaces",
            "state",
            "token",
            "user_id"
        ]
    );
    assert_eq!(d["replaces"], id);
    assert_eq!(d["user_id"], "uma");
    assert_eq!(d["organization_id"], "acme");
    let old_end = d["old_expires_at"].as_u64().unwrap();
    assert!(old_end >= before && old_end <= before + 5, "{old_end}");
    let new_token = d["token"].as_str().unwrap();
    assert!(new_token.starts_with("tvr_"));
    // Grace 0: the old token is expired, the new one exchanges.
    assert!(matches!(
        store.exchange(t.token.expose()),
        Err(tokenvault::Error::Expired)
    ));
    store.exchange(new_token).unwrap();
    // Again: 409.
    let (code, _) = post(&s, &path, &uma, Some(json!({"grace": 0})));
    assert_eq!(code, StatusCode::CONFLICT);

    // No body at all: the default grace of 24 hours.
    let other = store
        .generate(&Actor::new("acme", "uma"), Default::default())
        .unwrap();
    let (code, body) = post(
        &s,
        &format!("/v3/refresh-token/{}/rotate", other.info.id),
        &uma,
        None,
    );
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let left = body["data"]["old_expires_at"].as_u64().unwrap() - before;
    assert!((86_390..=86_410).contains(&left), "{left}");
}

#[test]
fn a_pending_assignment_is_claimed_by_its_member_only() {
    let (store, s) = setup();
    let (olivia, _) = bearer(&store, "acme", "olivia");
    let (uma, _) = bearer(&store, "acme", "uma");
    let (adam, _) = bearer(&store, "acme", "adam");
    let (code, body) = post(
        &s,
        "/v3/refresh-token",
        &olivia,
        Some(json!({"user_id": "uma", "pending": true})),
    );
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let d = &body["data"];
    assert_eq!(d["state"], "pending");
    let hint = d["token"].as_str().unwrap();
    assert!(
        hint.starts_with("tvr_****"),
        "no secret for the Owner: {hint}"
    );
    let id = d["id"].as_str().unwrap().to_string();
    let (code, _) = post(
        &s,
        "/v3/refresh-token",
        &olivia,
        Some(json!({"user_id": "uma", "pending": 1})),
    );
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);

    let path = format!("/v3/refresh-token/{id}/claim");
    for who in [&olivia, &adam] {
        let (code, _) = post(&s, &path, who, None);
        assert_eq!(code, StatusCode::FORBIDDEN);
    }
    let (code, body) = post(&s, &path, &uma, None);
    assert_eq!(code, StatusCode::CREATED, "{body}");
    assert_eq!(body["data"]["id"], id);
    assert_eq!(body["data"]["state"], "active");
    let secret = body["data"]["token"].as_str().unwrap();
    store.exchange(secret).unwrap();
    let (code, _) = post(&s, &path, &uma, None);
    assert_eq!(code, StatusCode::CONFLICT);
}
