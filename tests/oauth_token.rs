//! `POST /oauth/token` (RFC 6749 §6) over real loopback HTTP: a refresh by
//! the `oauth2` crate as a real OAuth 2 client, then each refusal of §5.2
//! with raw requests (reqwest), the `scope` rules, the §5.1 headers and the
//! shared rate limit. Every server binds 127.0.0.1:0.
#![cfg(feature = "http")]

mod common;

use common::http::{client, Server};
use oauth2::basic::{BasicClient, BasicErrorResponseType, BasicTokenResponse};
use oauth2::{
    ClientId, EndpointNotSet, EndpointSet, RefreshToken, RequestTokenError, Scope, TokenResponse,
    TokenUrl,
};
use reqwest::blocking::Response;
use reqwest::StatusCode;
use serde_json::Value;
use tokenvault::http::{HttpConfig, RateLimit};
use tokenvault::{Actor, GenerateOptions, IssuedToken, SecretToken, TokenStore};

/// oauth2's synchronous HTTP client, made of reqwest's blocking one.
fn http_client(req: oauth2::HttpRequest) -> Result<oauth2::HttpResponse, reqwest::Error> {
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
    let bytes = res.bytes()?.to_vec();
    Ok(out.body(bytes).expect("response"))
}

fn store() -> (TokenStore, Actor, Actor) {
    let store = TokenStore::temporary().unwrap();
    let (olivia, _adam, uma) = common::store::seed_acme(&store);
    (store, olivia, uma)
}

/// A store seeded with acme, one token of uma's and a server on it.
fn served_token() -> (TokenStore, Actor, Actor, IssuedToken, Server) {
    let (store, olivia, uma) = store();
    let t = store.generate(&uma, GenerateOptions::default()).unwrap();
    let server = Server::start(&store, HttpConfig::default());
    (store, olivia, uma, t, server)
}

/// The `oauth2` crate's client of `server`'s token endpoint.
fn oauth_client(
    server: &Server,
) -> BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet> {
    BasicClient::new(ClientId::new("any-client".into()))
        .set_token_uri(TokenUrl::new(server.url("/oauth/token")).unwrap())
}

/// The scopes an answer grants, sorted.
fn granted_scopes(answer: &BasicTokenResponse) -> Vec<String> {
    let mut granted: Vec<String> = answer
        .scopes()
        .expect("scope")
        .iter()
        .map(|s| s.to_string())
        .collect();
    granted.sort();
    granted
}

/// The form of a plain refresh of `refresh`.
fn refresh_form(refresh: &SecretToken) -> String {
    format!(
        "grant_type=refresh_token&refresh_token={}",
        refresh.expose()
    )
}

fn post_form(server: &Server, body: &str) -> Response {
    client()
        .post(server.url("/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_string())
        .send()
        .expect("request")
}

/// A §5.2 refusal: status 400, `error` as given, a description, no caching.
fn assert_refused(res: Response, error: &str) -> String {
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert_eq!(res.headers()["pragma"], "no-cache");
    let v: Value = res.json().expect("JSON body");
    assert_eq!(v["error"], error, "{v}");
    let d = v["error_description"].as_str().expect("description");
    assert!(!d.is_empty());
    d.to_string()
}

#[test]
fn the_oauth2_crate_refreshes_and_the_token_verifies() {
    let (store, _olivia, uma, t, server) = served_token();
    let oauth = oauth_client(&server);
    let refresh = RefreshToken::new(t.token.expose().to_string());
    let answer = oauth
        .exchange_refresh_token(&refresh)
        .request(&http_client)
        .expect("refreshed");
    assert_eq!(answer.token_type().as_ref(), "bearer");
    let ttl = answer.expires_in().expect("expires_in").as_secs();
    assert!(ttl > 0 && ttl <= 24 * 3600, "{ttl}");
    let who = store
        .verify(answer.access_token().secret())
        .expect("verifies");
    assert_eq!(&*who.user, "uma");
    let granted = granted_scopes(&answer);
    let mut held = who.scopes.to_vec();
    held.sort();
    assert_eq!(granted, held);
    // Asking again for exactly those scopes also works.
    let again = oauth
        .exchange_refresh_token(&refresh)
        .add_scopes(held.iter().cloned().map(Scope::new))
        .request(&http_client)
        .expect("refreshed with scope");
    assert!(store.verify(again.access_token().secret()).is_ok());

    // Revoked: the client sees invalid_grant.
    store.revoke(&uma, &t.info.id, None).unwrap();
    match oauth.exchange_refresh_token(&refresh).request(&http_client) {
        Err(RequestTokenError::ServerResponse(e)) => {
            assert_eq!(*e.error(), BasicErrorResponseType::InvalidGrant)
        }
        other => panic!("expected invalid_grant, got {other:?}"),
    }
}

#[test]
fn answer_shape_and_headers_follow_section_5_1() {
    let (store, _olivia, _uma, t, server) = served_token();
    let res = post_form(
        &server,
        &format!(
            "grant_type=refresh_token&refresh_token={}&client_id=whatever",
            t.token.expose()
        ),
    );
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert_eq!(res.headers()["pragma"], "no-cache");
    let v: Value = res.json().unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 4, "{v}");
    assert_eq!(v["token_type"], "Bearer");
    assert!(v["expires_in"].as_u64().unwrap() > 0);
    let access = v["access_token"].as_str().unwrap();
    let who = store.verify(access).unwrap();
    let mut scope: Vec<&str> = v["scope"].as_str().unwrap().split(' ').collect();
    scope.sort();
    let mut held = who.scopes.to_vec();
    held.sort();
    assert_eq!(scope, held);
    // The exchange was recorded like any other.
    let info = store.verify_refresh(t.token.expose()).unwrap();
    assert!(info.last_refresh.is_some());
}

#[test]
fn each_refusal_of_section_5_2() {
    let (store, _olivia, uma) = store();
    let live = store.generate(&uma, GenerateOptions::default()).unwrap();
    let revoked = store.generate(&uma, GenerateOptions::default()).unwrap();
    store.revoke(&uma, &revoked.info.id, None).unwrap();
    let server = Server::start(&store, HttpConfig::default());
    let live_t = live.token.expose();

    // invalid_request: no body, wrong media type, missing or repeated fields.
    assert_refused(post_form(&server, ""), "invalid_request");
    let res = client()
        .post(server.url("/oauth/token"))
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"grant_type":"refresh_token","refresh_token":"{live_t}"}}"#
        ))
        .send()
        .unwrap();
    assert_refused(res, "invalid_request");
    assert_refused(
        post_form(&server, "grant_type=refresh_token"),
        "invalid_request",
    );
    assert_refused(
        post_form(&server, &format!("refresh_token={live_t}")),
        "invalid_request",
    );
    assert_refused(
        post_form(
            &server,
            &format!("grant_type=refresh_token&refresh_token={live_t}&refresh_token={live_t}"),
        ),
        "invalid_request",
    );

    // unsupported_grant_type.
    for g in [
        "password",
        "client_credentials",
        "authorization_code",
        "REFRESH_TOKEN",
    ] {
        let body = format!("grant_type={g}&refresh_token={live_t}");
        assert_refused(post_form(&server, &body), "unsupported_grant_type");
    }

    // invalid_grant: malformed, unknown, wrong secret, too long, revoked,
    // expired, and a holder no longer a member.
    let mut wrong_secret = live_t.to_string();
    let last = wrong_secret.pop().unwrap();
    wrong_secret.push(if last == 'A' { 'B' } else { 'A' });
    let unknown = {
        let other = TokenStore::temporary().unwrap();
        let (_, _, u) = common::store::seed_acme(&other);
        other
            .generate(&u, GenerateOptions::default())
            .unwrap()
            .token
            .expose()
            .to_string()
    };
    for bad in [
        "nonsense".to_string(),
        wrong_secret,
        unknown,
        "tvr_".to_string() + &"x".repeat(400),
        revoked.token.expose().to_string(),
    ] {
        let body = format!("grant_type=refresh_token&refresh_token={bad}");
        let d = assert_refused(post_form(&server, &body), "invalid_grant");
        assert!(!d.contains(&bad), "the description never echoes the token");
    }

    // invalid_scope: a scope the token lacks (alone, or beside one it has),
    // an unknown one, and an empty one.
    let body = format!("grant_type=refresh_token&refresh_token={live_t}&scope=user-write");
    let d = assert_refused(post_form(&server, &body), "invalid_scope");
    assert!(d.contains("user-write"), "{d}");
    let body = format!("grant_type=refresh_token&refresh_token={live_t}&scope=read+user-write");
    let d = assert_refused(post_form(&server, &body), "invalid_scope");
    assert!(d.contains("user-write"), "{d}");
    let body = format!("grant_type=refresh_token&refresh_token={live_t}&scope=no-such-scope");
    assert_refused(post_form(&server, &body), "invalid_scope");
    let body = format!("grant_type=refresh_token&refresh_token={live_t}&scope=+");
    assert_refused(post_form(&server, &body), "invalid_scope");
    // None of these issued anything.
    assert!(store.verify_refresh(live_t).unwrap().last_refresh.is_none());
    // The live token still refreshes.
    let body = format!("grant_type=refresh_token&refresh_token={live_t}");
    assert_eq!(post_form(&server, &body).status(), StatusCode::OK);
}

/// A `scope` that is a strict subset of the refresh token's narrows the
/// access token (RFC 6749 §3.3): the answer's `scope` says the granted set,
/// and verification, `authorize` and introspection answer with it.
#[test]
fn a_scope_subset_narrows_the_access_token() {
    let (store, olivia, _uma, t, server) = served_token();
    let oauth = oauth_client(&server);
    let refresh = RefreshToken::new(t.token.expose().to_string());
    let answer = oauth
        .exchange_refresh_token(&refresh)
        .add_scope(Scope::new("read".into()))
        .add_scope(Scope::new("squad-read".into()))
        .add_scope(Scope::new("read".into()))
        .request(&http_client)
        .expect("refreshed with a narrower scope");
    let granted = granted_scopes(&answer);
    assert_eq!(granted, ["read", "squad-read"]);
    let access = answer.access_token().secret();
    let who = store.verify(access).unwrap();
    let mut held = who.scopes.to_vec();
    held.sort();
    assert_eq!(held, ["read", "squad-read"]);
    store.authorize(access, "read").unwrap();
    assert!(matches!(
        store.authorize(access, "incident-write"),
        Err(tokenvault::Error::InsufficientScope(_))
    ));
    // A plain refresh of the same token still grants all of its scopes.
    let full = oauth
        .exchange_refresh_token(&refresh)
        .request(&http_client)
        .expect("refreshed");
    assert!(store
        .verify(full.access_token().secret())
        .unwrap()
        .scopes
        .contains("incident-write"));
    // Introspection answers with the narrowed set.
    let bearer = store
        .exchange(
            store
                .generate(&olivia, GenerateOptions::default())
                .unwrap()
                .token
                .expose(),
        )
        .unwrap()
        .access_token;
    let v: Value = client()
        .post(server.url("/oauth/introspect"))
        .bearer_auth(bearer.expose())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={access}"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["active"], true, "{v}");
    let mut scope: Vec<&str> = v["scope"].as_str().unwrap().split(' ').collect();
    scope.sort();
    assert_eq!(scope, ["read", "squad-read"]);
}

#[test]
fn expired_and_removed_holders_are_invalid_grant() {
    let store = TokenStore::temporary().unwrap();
    let (_olivia, adam, uma) = common::store::seed_acme(&store);
    let short = store
        .generate(&uma, GenerateOptions::default().expires_in(1))
        .unwrap();
    let adams = store.generate(&adam, GenerateOptions::default()).unwrap();
    store.remove_member("acme", "adam").unwrap();
    let server = Server::start(&store, HttpConfig::default());
    let body = refresh_form(&adams.token);
    assert_refused(post_form(&server, &body), "invalid_grant");
    // Wait, with a generous bound, for the one-second token to expire.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while store.verify_refresh(short.token.expose()).is_ok() {
        assert!(std::time::Instant::now() < deadline, "token never expired");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let body = refresh_form(&short.token);
    let d = assert_refused(post_form(&server, &body), "invalid_grant");
    assert!(d.contains("expired"), "{d}");
}

#[test]
fn refreshes_share_the_exchange_rate_limit() {
    let (store, _olivia, uma) = store();
    let t = store.generate(&uma, GenerateOptions::default()).unwrap();
    let cfg = HttpConfig::default().rate_limit(RateLimit {
        per_minute: 1,
        burst: 2,
    });
    let server = Server::start(&store, cfg);
    let body = refresh_form(&t.token);
    let squadcast_exchange = || {
        client()
            .get(server.url("/oauth/access-token"))
            .header("x-refresh-token", t.token.expose())
            .send()
            .unwrap()
    };
    // One through Squadcast's route, one here: the bucket of two is spent.
    assert_eq!(squadcast_exchange().status(), StatusCode::OK);
    assert_eq!(post_form(&server, &body).status(), StatusCode::OK);
    let res = post_form(&server, &body);
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
    let v: Value = res.json().unwrap();
    assert_eq!(v["error"], "slow_down");
    assert_eq!(squadcast_exchange().status(), StatusCode::TOO_MANY_REQUESTS);
}
