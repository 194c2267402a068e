//! Last use (the lifecycle issue's item 6): an exchange records its time
//! and, when the host passes it, the client's address and user agent; lists
//! and `get` show them as `last_used_ip` / `last_used_agent` beside
//! `last_refresh`, through the library, after a close and reopen (and a
//! purge), and through the HTTP front, which passes the connection's peer
//! address and the `User-Agent` header. The agent is bounded, loses its
//! control characters, and one that carries a token is never recorded
//! (invariant 1).

mod common;

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use tokenvault::{Actor, ClientInfo, ManualClock, Role, TokenStore};

const T0: u64 = 1_800_000_000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Opens the store at `path`, waiting while the previous handle's sled
/// threads still hold the file lock (released shortly after a close).
fn open(path: &Path, clock: &ManualClock) -> TokenStore {
    open_with(|| common::store::keyed(path, 3).clock(clock.clone()))
}

/// [`open`] for any configuration.
fn open_with(config: impl Fn() -> tokenvault::Config) -> TokenStore {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match config().open() {
            Err(tokenvault::Error::Io(e)) if e.contains("lock") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            r => return r.unwrap(),
        }
    }
}

#[test]
fn an_exchange_from_a_client_shows_in_lists_and_get() {
    let store = TokenStore::temporary().unwrap();
    let (olivia, _, uma) = common::store::seed_acme(&store);
    let t = store.generate(&uma, Default::default()).unwrap();
    let quiet = store.generate(&uma, Default::default()).unwrap();
    let before = &store.list_own(&uma).unwrap()[0];
    assert_eq!(
        (
            before.last_refresh,
            before.last_used_ip,
            before.last_used_agent.clone()
        ),
        (None, None, None)
    );

    let client = ClientInfo::new(Some(ip("203.0.113.7")), Some("deploy-bot/1.2 (linux)"));
    let grant = store
        .exchange_from::<&str>(t.token.expose(), None, &client)
        .unwrap();
    store.verify(grant.access_token.expose()).unwrap();
    for info in [
        store.get(&uma, &t.info.id).unwrap(),
        store.get(&olivia, &t.info.id).unwrap(),
        store
            .list_org(&olivia)
            .unwrap()
            .into_iter()
            .find(|i| i.id == t.info.id)
            .unwrap(),
    ] {
        assert_eq!(info.last_refresh, Some(grant.issued_at));
        assert_eq!(info.last_used_ip, Some(ip("203.0.113.7")));
        assert_eq!(
            info.last_used_agent.as_deref(),
            Some("deploy-bot/1.2 (linux)")
        );
    }
    // The other token is untouched.
    let other = store.get(&uma, &quiet.info.id).unwrap();
    assert_eq!((other.last_used_ip, other.last_used_agent), (None, None));

    // Narrowed, from another client (IPv6): the latest wins.
    let v6 = ClientInfo::new(Some(ip("2001:db8::5")), None);
    let g = store
        .exchange_from(t.token.expose(), Some(&["read"]), &v6)
        .unwrap();
    assert!(!store
        .verify(g.access_token.expose())
        .unwrap()
        .scopes
        .contains("incident-write"));
    let info = store.get(&uma, &t.info.id).unwrap();
    assert_eq!(info.last_used_ip, Some(ip("2001:db8::5")));
    assert_eq!(info.last_used_agent, None);

    // A plain exchange names no client: the last use has none.
    store.exchange(t.token.expose()).unwrap();
    let info = store.get(&uma, &t.info.id).unwrap();
    assert_eq!((info.last_used_ip, info.last_used_agent), (None, None));
    assert!(info.last_refresh.is_some());
}

#[test]
fn a_refused_exchange_records_nothing() {
    let store = TokenStore::temporary().unwrap();
    let (_, _, uma) = common::store::seed_acme(&store);
    let t = store.generate(&uma, Default::default()).unwrap();
    let client = ClientInfo::new(Some(ip("198.51.100.1")), Some("probe/1"));
    // A scope the token does not grant, an empty list: refused, nothing kept.
    let err = store
        .exchange_from(t.token.expose(), Some(&["org-admin"]), &client)
        .unwrap_err();
    assert_eq!(err.kind(), "insufficient_scope");
    let err = store
        .exchange_from::<&str>(t.token.expose(), Some(&[]), &client)
        .unwrap_err();
    assert_eq!(err.kind(), "usage");
    // A wrong secret (another token's text, tampered).
    let mut bad = t.token.expose().to_string();
    bad.pop();
    assert!(store.exchange_from::<&str>(&bad, None, &client).is_err());
    let info = store.get(&uma, &t.info.id).unwrap();
    assert_eq!(
        (info.last_refresh, info.last_used_ip, info.last_used_agent),
        (None, None, None)
    );
    // A revoked token: refused, nothing kept either.
    store.revoke(&uma, &t.info.id, None).unwrap();
    assert!(store
        .exchange_from::<&str>(t.token.expose(), None, &client)
        .is_err());
    assert_eq!(store.get(&uma, &t.info.id).unwrap().last_used_ip, None);
}

#[test]
fn the_last_client_survives_close_purge_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let clock = ManualClock::new(T0);
    let store = open(&path, &clock);
    let (_, _, uma) = common::store::seed_acme(&store);
    let t = store.generate(&uma, Default::default()).unwrap();
    let kept = store.generate(&uma, Default::default()).unwrap();
    let a = ClientInfo::new(Some(ip("192.0.2.10")), Some("sync-agent/3"));
    let b = ClientInfo::new(Some(ip("2001:db8::1")), Some("cron/1 ü"));
    store
        .exchange_from::<&str>(t.token.expose(), None, &a)
        .unwrap();
    store
        .exchange_from::<&str>(kept.token.expose(), None, &b)
        .unwrap();
    // Same client again, later: the time moves, the client stays.
    clock.advance(10);
    store
        .exchange_from::<&str>(kept.token.expose(), None, &b)
        .unwrap();
    store.close().unwrap();

    let store = open(&path, &clock);
    let shown = |store: &TokenStore, id| {
        let i = store.get(&uma, id).unwrap();
        (i.last_refresh, i.last_used_ip, i.last_used_agent)
    };
    assert_eq!(
        shown(&store, &t.info.id),
        (
            Some(T0),
            Some(ip("192.0.2.10")),
            Some("sync-agent/3".into())
        )
    );
    assert_eq!(
        shown(&store, &kept.info.id),
        (
            Some(T0 + 10),
            Some(ip("2001:db8::1")),
            Some("cron/1 ü".into())
        )
    );
    // The purge removes the access records that told the time: the last
    // use, client included, is written back and outlives them.
    clock.advance(7_200);
    let r = store.purge_expired(100).unwrap();
    assert_eq!(r.access_removed, 3);
    store.close().unwrap();
    let store = open(&path, &clock);
    assert_eq!(
        shown(&store, &t.info.id),
        (
            Some(T0),
            Some(ip("192.0.2.10")),
            Some("sync-agent/3".into())
        )
    );
    assert_eq!(
        shown(&store, &kept.info.id),
        (
            Some(T0 + 10),
            Some(ip("2001:db8::1")),
            Some("cron/1 ü".into())
        )
    );
    assert!(store.check_integrity().unwrap().is_clean());
    // A plain exchange clears the client, durably too.
    store.exchange(t.token.expose()).unwrap();
    store.close().unwrap();
    let store = open(&path, &clock);
    assert_eq!(shown(&store, &t.info.id), (Some(T0 + 7_210), None, None));
    assert!(store.check_integrity().unwrap().is_clean());
    store.close().unwrap();
}

#[test]
fn the_agent_is_bounded_and_cleaned() {
    let store = TokenStore::temporary().unwrap();
    let (_, _, uma) = common::store::seed_acme(&store);
    let t = store.generate(&uma, Default::default()).unwrap();
    // 300 three-byte characters with control characters between them.
    let raw: String = std::iter::repeat_n("€\u{7}", 300).collect::<String>() + "\r\nX-Evil: 1";
    let client = ClientInfo::new(None, Some(&raw));
    store
        .exchange_from::<&str>(t.token.expose(), None, &client)
        .unwrap();
    let agent = store
        .get(&uma, &t.info.id)
        .unwrap()
        .last_used_agent
        .unwrap();
    assert!(
        agent.len() <= ClientInfo::MAX_AGENT,
        "{} bytes",
        agent.len()
    );
    assert_eq!(agent, "€".repeat(ClientInfo::MAX_AGENT / 3));
    assert!(!agent.chars().any(char::is_control));
    // Nothing but control characters and blanks: no agent at all.
    let empty = ClientInfo::new(None, Some(" \u{0}\t\n "));
    assert_eq!(empty.user_agent(), None);
    assert!(empty.is_empty());
}

#[test]
fn an_agent_that_carries_a_token_is_never_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let clock = ManualClock::new(T0);
    let store = open(&path, &clock);
    let (_, _, uma) = common::store::seed_acme(&store);
    let t = store.generate(&uma, Default::default()).unwrap();
    let secret = t.token.expose().to_string();
    let access = store.exchange(&secret).unwrap().access_token;
    // The store's own refresh token, an access token cut short by the
    // bound (the prefix catches it), and a token of another prefix.
    let foreign = format!("ghx_a_{}", "Z".repeat(72));
    let agents = [
        format!("curl/8 {secret}"),
        format!("{}{}", "x".repeat(250), access.expose()),
        format!("bot {foreign} v1"),
        // A piece of one, in the store's prefix.
        format!("wrapper/1 {}", &secret[..24]),
    ];
    for agent in &agents {
        let client = ClientInfo::new(Some(ip("192.0.2.99")), Some(agent));
        store.exchange_from::<&str>(&secret, None, &client).unwrap();
        let info = store.get(&uma, &t.info.id).unwrap();
        assert_eq!(info.last_used_agent, None, "{agent}");
        // The address is kept: it is no secret.
        assert_eq!(info.last_used_ip, Some(ip("192.0.2.99")));
    }
    // Made directly, a value never holds a token of any prefix either,
    // nor shows one in its Debug output.
    let c = ClientInfo::new(None, Some(&format!("x {foreign}")));
    assert_eq!(c.user_agent(), None);
    assert!(!format!("{c:?}").contains(&foreign));
    // And nothing of the secrets reached the files.
    store.close().unwrap();
    let payload = &secret[4..40];
    for entry in walk(&path) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes
                .windows(payload.len())
                .any(|w| w == payload.as_bytes()),
            "{} holds part of a secret",
            entry.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn the_async_face_records_the_client() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = tokenvault::AsyncTokenStore::temporary().await.unwrap();
        store.add_member("acme", "ann", Role::Owner).await.unwrap();
        let ann = Actor::new("acme", "ann");
        let t = store.generate(&ann, Default::default()).await.unwrap();
        let client = ClientInfo::new(Some(ip("192.0.2.1")), Some("async/1"));
        store
            .exchange_from(t.token.expose(), Some(&["read"]), &client)
            .await
            .unwrap();
        let info = &store.list_own(&ann).await.unwrap()[0];
        assert_eq!(info.last_used_ip, Some(ip("192.0.2.1")));
        assert_eq!(info.last_used_agent.as_deref(), Some("async/1"));
    });
}

/// Through the HTTP front on a real loopback connection: the peer address
/// and the `User-Agent` of `GET /oauth/access-token` and `POST
/// /oauth/token` show up in `GET /v3/refresh-token` and
/// `GET /v3/refresh-token/{id}`; `X-Forwarded-For` is not believed.
#[cfg(feature = "http")]
#[test]
fn http_exchanges_record_the_peer_and_the_user_agent() {
    use common::http::{client, Server};
    use serde_json::Value;
    use tokenvault::http::HttpConfig;

    let store = TokenStore::temporary().unwrap();
    let (olivia, _, uma) = common::store::seed_acme(&store);
    let s = Server::start(&store, HttpConfig::default());
    let t = store.generate(&uma, Default::default()).unwrap();
    let id = t.info.id.to_string();
    let bearer = {
        let o = store.generate(&olivia, Default::default()).unwrap();
        store.exchange(o.token.expose()).unwrap().access_token
    };
    let item = || -> Value {
        let res = client()
            .get(s.url("/v3/refresh-token"))
            .bearer_auth(bearer.expose())
            .send()
            .unwrap();
        assert_eq!(res.status(), 200);
        let v: Value = res.json().unwrap();
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id.as_str())
            .unwrap()
            .clone()
    };
    let before = item();
    assert!(before["last_used_ip"].is_null(), "{before}");
    assert!(before["last_used_agent"].is_null(), "{before}");

    let res = client()
        .get(s.url("/oauth/access-token"))
        .header("X-Refresh-Token", t.token.expose())
        .header("User-Agent", "acme-cli/2.0")
        .header("X-Forwarded-For", "203.0.113.50")
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    let after = item();
    assert_eq!(after["last_used_ip"], "127.0.0.1", "{after}");
    assert_eq!(after["last_used_agent"], "acme-cli/2.0", "{after}");
    assert_ne!(after["last_refresh"], "0001-01-01T00:00:00Z", "{after}");
    let res = client()
        .get(s.url(&format!("/v3/refresh-token/{id}")))
        .bearer_auth(bearer.expose())
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    let one: Value = res.json().unwrap();
    assert_eq!(one["data"]["last_used_ip"], "127.0.0.1", "{one}");
    assert_eq!(one["data"]["last_used_agent"], "acme-cli/2.0", "{one}");

    // RFC 6749 §6 refresh, another agent.
    let res = client()
        .post(s.url("/oauth/token"))
        .header("User-Agent", "oauth-client/5")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=refresh_token&refresh_token={}",
            t.token.expose()
        ))
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    let after = item();
    assert_eq!(after["last_used_agent"], "oauth-client/5", "{after}");
    assert_eq!(after["last_used_ip"], "127.0.0.1", "{after}");

    // An agent that carries the token itself is not recorded.
    let res = client()
        .get(s.url("/oauth/access-token"))
        .header("X-Refresh-Token", t.token.expose())
        .header("User-Agent", format!("leaky {}", t.token.expose()))
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    let after = item();
    assert!(after["last_used_agent"].is_null(), "{after}");
    assert_eq!(after["last_used_ip"], "127.0.0.1", "{after}");
    let info = store.get(&uma, &t.info.id).unwrap();
    assert_eq!(info.last_used_agent, None);
}

/// The router served without `serve_on` (here, called in process) knows no
/// peer: the agent is recorded, the address is null.
#[cfg(feature = "http")]
#[test]
fn a_router_without_a_peer_records_the_agent_only() {
    use tower::ServiceExt;
    let store = TokenStore::temporary().unwrap();
    let (_, _, uma) = common::store::seed_acme(&store);
    let t = store.generate(&uma, Default::default()).unwrap();
    let app = tokenvault::http::router(store.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let req = axum::http::Request::get("/oauth/access-token")
        .header("x-refresh-token", t.token.expose())
        .header("user-agent", "in-process/1")
        .header("x-forwarded-for", "203.0.113.50")
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = rt.block_on(app.oneshot(req)).unwrap();
    assert_eq!(resp.status(), 200);
    let info = store.get(&uma, &t.info.id).unwrap();
    assert_eq!(info.last_used_agent.as_deref(), Some("in-process/1"));
    assert_eq!(info.last_used_ip, None);
}

/// Against a PostgreSQL server (`TOKENVAULT_PG_URL`, as `.ci/postgres.sh`
/// sets it): the client is stored in the columns of migration 3 and read
/// back by replicas opened afterwards.
#[cfg(feature = "postgres")]
#[test]
#[ignore = "needs PostgreSQL: .ci/postgres.sh"]
fn the_last_client_on_a_shared_store() {
    let Some(db) = common::pg::ScratchDb::new("last_use") else {
        return;
    };
    let clock = ManualClock::new(T0);
    let open = db.replicas_on(&clock);
    let one = open();
    let (_, _, uma) = common::store::seed_acme(&one);
    let t = one.generate(&uma, Default::default()).unwrap();
    let c = ClientInfo::new(Some(ip("192.0.2.77")), Some("fleet/1"));
    one.exchange_from::<&str>(t.token.expose(), None, &c)
        .unwrap();
    let info = one.get(&uma, &t.info.id).unwrap();
    assert_eq!(info.last_used_ip, Some(ip("192.0.2.77")));
    assert_eq!(info.last_used_agent.as_deref(), Some("fleet/1"));
    one.close().unwrap();
    // A replica opened afterwards loads it from the snapshot.
    let three = open();
    let info = three.get(&uma, &t.info.id).unwrap();
    assert_eq!(info.last_refresh, Some(T0));
    assert_eq!(info.last_used_ip, Some(ip("192.0.2.77")));
    assert_eq!(info.last_used_agent.as_deref(), Some("fleet/1"));
    // A newer client through it, then a plain exchange that clears it.
    clock.advance(5);
    let v6 = ClientInfo::new(Some(ip("2001:db8::9")), Some("fleet/2"));
    three
        .exchange_from::<&str>(t.token.expose(), None, &v6)
        .unwrap();
    three.close().unwrap();
    let four = open();
    let info = four.get(&uma, &t.info.id).unwrap();
    assert_eq!(info.last_used_ip, Some(ip("2001:db8::9")));
    assert_eq!(info.last_used_agent.as_deref(), Some("fleet/2"));
    four.exchange(t.token.expose()).unwrap();
    four.close().unwrap();
    let five = open();
    let info = five.get(&uma, &t.info.id).unwrap();
    assert_eq!((info.last_used_ip, info.last_used_agent), (None, None));
    five.close().unwrap();
}

/// The longest access token lifetime a store takes (2^30 - 1 seconds, what
/// memory keeps of it) verifies with its issue and expiry as granted, also
/// after a close and reopen; one second more is refused before anything
/// opens.
#[test]
fn the_longest_access_lifetime_round_trips_and_a_longer_one_is_refused() {
    let max = (1u64 << 30) - 1;
    let refused = tokenvault::Config::temporary()
        .access_ttl(Duration::from_secs(max + 1))
        .open();
    assert!(
        matches!(&refused, Err(tokenvault::Error::InvalidArgument(m)) if m.contains("access_ttl")),
        "{:?}",
        refused.err()
    );
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let config = || {
        common::store::keyed(dir.path(), 3)
            .clock(clock.clone())
            .access_ttl(Duration::from_secs(max))
    };
    let store = config().open().unwrap();
    let (_, _, uma) = common::store::seed_acme(&store);
    let t = store.generate(&uma, Default::default()).unwrap();
    clock.advance(5);
    let grant = store.exchange(t.token.expose()).unwrap();
    assert_eq!((grant.issued_at, grant.expires_at), (T0 + 5, T0 + 5 + max));
    let p = store.verify(grant.access_token.expose()).unwrap();
    assert_eq!((p.issued_at, p.expires_at), (T0 + 5, T0 + 5 + max));
    store.close().unwrap();
    let store = open_with(config);
    let p = store.verify(grant.access_token.expose()).unwrap();
    assert_eq!((p.issued_at, p.expires_at), (T0 + 5, T0 + 5 + max));
    assert_eq!(
        store.get(&uma, &t.info.id).unwrap().last_refresh,
        Some(T0 + 5)
    );
}
