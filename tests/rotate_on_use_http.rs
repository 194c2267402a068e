//! Rotation on use over real loopback HTTP: with the organization's
//! `rotate_on_use` on, `POST /oauth/token` answers a new `refresh_token`
//! (RFC 6749 §6) beside the access token, a spent token presented again
//! is `invalid_grant` and revokes its family, the `oauth2` crate follows
//! the rotation, and Squadcast's `GET /oauth/access-token` keeps its
//! behaviour (no rotation).
#![cfg(feature = "http")]

mod common;

use common::http::{client, Server};
use oauth2::basic::BasicClient;
use oauth2::{ClientId, RefreshToken, TokenResponse, TokenUrl};
use reqwest::blocking::Response;
use reqwest::StatusCode;
use serde_json::Value;
use tokenvault::http::HttpConfig;
use tokenvault::{Actor, Error, OrgPolicy, TokenState, TokenStore};

fn store(rotate: bool) -> (TokenStore, Actor, Actor) {
    let store = TokenStore::temporary().unwrap();
    let (olivia, _adam, uma) = common::store::seed_acme(&store);
    store
        .set_org_policy(&olivia, OrgPolicy::default().rotate_on_use(rotate))
        .unwrap();
    (store, olivia, uma)
}

fn refresh(server: &Server, token: &str) -> Response {
    client()
        .post(server.url("/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("grant_type=refresh_token&refresh_token={token}"))
        .send()
        .expect("request")
}

#[test]
fn the_token_endpoint_returns_a_new_refresh_token_and_refuses_reuse() {
    let (store, olivia, uma) = store(true);
    let t = store.generate(&uma, Default::default()).unwrap();
    let server = Server::start(&store, HttpConfig::default());

    let res = refresh(&server, t.token.expose());
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let v: Value = res.json().unwrap();
    let next = v["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_string();
    assert_ne!(next, t.token.expose());
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    for k in [
        "access_token",
        "token_type",
        "expires_in",
        "scope",
        "refresh_token",
    ] {
        assert!(keys.contains(&k), "{v}");
    }
    let access = v["access_token"].as_str().unwrap().to_string();
    store.verify(&access).unwrap();

    // The next refresh uses the new token, and rotates again.
    let v: Value = refresh(&server, &next).json().unwrap();
    let third = v["refresh_token"]
        .as_str()
        .expect("rotated again")
        .to_string();

    // The first token again: invalid_grant, and the family is revoked.
    let res = refresh(&server, t.token.expose());
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let e: Value = res.json().unwrap();
    assert_eq!(e["error"], "invalid_grant", "{e}");
    assert!(matches!(store.verify(&access), Err(Error::Revoked)));
    let e: Value = refresh(&server, &third).json().unwrap();
    assert_eq!(e["error"], "invalid_grant", "{e}");
    let revoked = store
        .list_org(&olivia)
        .unwrap()
        .into_iter()
        .filter(|i| matches!(&i.state, TokenState::Revoked { reason: Some(r), .. } if r == "reuse detected"))
        .count();
    assert_eq!(revoked, 3);
}

#[test]
fn without_the_policy_the_answer_has_no_refresh_token() {
    let (store, _olivia, uma) = store(false);
    let t = store.generate(&uma, Default::default()).unwrap();
    let server = Server::start(&store, HttpConfig::default());
    for _ in 0..2 {
        let v: Value = refresh(&server, t.token.expose()).json().unwrap();
        assert!(v["access_token"].is_string(), "{v}");
        assert!(v.get("refresh_token").is_none(), "{v}");
    }
}

#[test]
fn the_squadcast_route_does_not_rotate() {
    let (store, _olivia, uma) = store(true);
    let t = store.generate(&uma, Default::default()).unwrap();
    let server = Server::start(&store, HttpConfig::default());
    for _ in 0..2 {
        let res = client()
            .get(server.url("/oauth/access-token"))
            .header("X-Refresh-Token", t.token.expose())
            .send()
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let v: Value = res.json().unwrap();
        assert_eq!(v["data"]["refresh_token"], t.token.expose(), "{v}");
    }
    // Still usable at the token endpoint, where it then rotates.
    let v: Value = refresh(&server, t.token.expose()).json().unwrap();
    assert!(v["refresh_token"].is_string(), "{v}");
}

/// A real OAuth 2 client (the `oauth2` crate) follows the rotation: it
/// reads the new refresh token from the answer and uses it next.
#[test]
fn the_oauth2_crate_follows_the_rotation() {
    let (store, _olivia, uma) = store(true);
    let t = store.generate(&uma, Default::default()).unwrap();
    let server = Server::start(&store, HttpConfig::default());
    let oauth = BasicClient::new(ClientId::new("any-client".into()))
        .set_token_uri(TokenUrl::new(server.url("/oauth/token")).unwrap());
    let http = |req: oauth2::HttpRequest| -> Result<oauth2::HttpResponse, reqwest::Error> {
        let (parts, body) = req.into_parts();
        let res = client()
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()?;
        let mut out = oauth2::http::Response::builder().status(res.status());
        for (k, v) in res.headers() {
            out = out.header(k, v);
        }
        Ok(out.body(res.bytes()?.to_vec()).expect("response"))
    };
    let mut current = RefreshToken::new(t.token.expose().to_string());
    for _ in 0..3 {
        let answer = oauth
            .exchange_refresh_token(&current)
            .request(&http)
            .expect("refreshed");
        store.verify(answer.access_token().secret()).unwrap();
        let next = answer.refresh_token().expect("a new refresh token").clone();
        assert_ne!(next.secret(), current.secret());
        current = next;
    }
}
