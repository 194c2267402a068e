//! The HTTP front as a host embeds it, over real loopback HTTP: a host's
//! hook shaping the bearer refusals of the layer and the extractor (and the
//! default left as it was), `ConnectInfo<SocketAddr>` in handlers under
//! `serve_on`, the request limits on a host's own routes, one `HttpConfig`
//! through `Server`, and the health endpoints (`/readyz` answering 503 on a
//! full disk, which needs root to mount a small tmpfs).
#![cfg(feature = "http")]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::http::StatusCode as AxStatus;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use common::http::{captured, client, raw, Server};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokenvault::http::{self, require_bearer, require_scope, Authorized, HttpConfig, OnRejection};
use tokenvault::{Actor, GenerateOptions, TokenStore};

// ----- harness -----

fn seeded() -> (TokenStore, Actor, Actor, Actor) {
    let store = TokenStore::temporary().unwrap();
    let (o, a, u) = common::store::seed_acme(&store);
    (store, o, a, u)
}

/// An access token of `actor`, made through the library.
fn bearer(store: &TokenStore, actor: &Actor) -> String {
    let t = store.generate(actor, GenerateOptions::default()).unwrap();
    store
        .exchange(t.token.expose())
        .unwrap()
        .access_token
        .expose()
        .to_string()
}

fn status_line(answer: &str) -> &str {
    answer.lines().next().unwrap_or("")
}

/// `tokenvault::http::Server` on a runtime of its own, stopped on drop.
struct Served {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Served {
    fn start(server: http::Server) -> Served {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                server
                    .serve_until(listener, async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        Served {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ----- the rejection hook -----

/// The host's own refusal: a teapot with what the hook was told.
fn teapot() -> OnRejection {
    OnRejection::new(|r| {
        let body = json!({
            "host_error": r.error().map_or("none", |e| e.kind()),
            "missing": r.missing_credentials(),
            "default_status": r.status().as_u16(),
        });
        (AxStatus::IM_A_TEAPOT, Json(body)).into_response()
    })
}

#[test]
fn a_host_hook_shapes_bearer_refusals_and_the_default_stays_squadcasts() {
    let (store, olivia, _adam, uma) = seeded();
    let hook = teapot();
    let app = Router::new()
        .route(
            "/hooked",
            get(|a: Authorized| async move { a.user.to_string() })
                .layer(require_bearer(&store).on_rejection(hook.clone())),
        )
        .route(
            "/hooked-scope",
            get(|a: Authorized| async move { a.user.to_string() })
                .layer(require_scope(&store, "user-write").on_rejection(hook.clone())),
        )
        .route(
            "/plain",
            get(|a: Authorized| async move { a.user.to_string() }).layer(require_bearer(&store)),
        )
        .merge(
            Router::new()
                .route(
                    "/extracted",
                    get(|a: Authorized| async move { a.user.to_string() }),
                )
                .layer(Extension(store.clone()))
                .layer(Extension(hook)),
        );
    let s = Server::start_app(app, HttpConfig::default());
    let c = client();
    let good = bearer(&store, &uma);
    let revoked = {
        let t = store.generate(&uma, GenerateOptions::default()).unwrap();
        let a = store.exchange(t.token.expose()).unwrap().access_token;
        store.revoke(&olivia, &t.info.id, None).unwrap();
        a.expose().to_string()
    };

    // The default: Squadcast's envelope and RFC 6750's challenges.
    let res = c.get(s.url("/plain")).send().unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.headers()["www-authenticate"].to_str().unwrap(),
        r#"Bearer realm="tokenvault""#
    );
    let v: Value = res.json().unwrap();
    assert_eq!(v["meta"]["status"], 401);
    let res = c.get(s.url("/plain")).bearer_auth(&revoked).send().unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains(r#"error="invalid_token""#));
    let v: Value = res.json().unwrap();
    assert_eq!(v["meta"]["status"], 401);
    assert!(v.get("host_error").is_none());

    // The hook, on the layer: no header, a revoked token, a garbled header.
    for (path, label) in [("/hooked", "layer"), ("/extracted", "extractor")] {
        let res = c.get(s.url(path)).send().unwrap();
        assert_eq!(res.status(), StatusCode::IM_A_TEAPOT, "{label}");
        let v: Value = res.json().unwrap();
        assert_eq!(
            v,
            json!({"host_error": "none", "missing": true, "default_status": 401}),
            "{label}"
        );
        let res = c.get(s.url(path)).bearer_auth(&revoked).send().unwrap();
        assert_eq!(res.status(), StatusCode::IM_A_TEAPOT, "{label}");
        assert!(res.headers().get("www-authenticate").is_none(), "{label}");
        let v: Value = res.json().unwrap();
        assert_eq!(
            v,
            json!({"host_error": "revoked", "missing": false, "default_status": 401}),
            "{label}"
        );
        let res = c
            .get(s.url(path))
            .header("Authorization", "Bearer a")
            .header("Authorization", "Bearer b")
            .send()
            .unwrap();
        let v: Value = res.json().unwrap();
        assert_eq!(
            v,
            json!({"host_error": "none", "missing": false, "default_status": 400}),
            "{label}"
        );
        // A good token passes through to the handler.
        let res = c.get(s.url(path)).bearer_auth(&good).send().unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{label}");
        assert_eq!(res.text().unwrap(), "uma");
    }
    // A missing scope is the store's `insufficient_scope`.
    let res = c
        .get(s.url("/hooked-scope"))
        .bearer_auth(&good)
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::IM_A_TEAPOT);
    let v: Value = res.json().unwrap();
    assert_eq!(v["host_error"], "insufficient_scope");
    assert_eq!(v["default_status"], 403);
}

// ----- ConnectInfo -----

#[test]
fn handlers_see_the_peer_address_under_serve_on() {
    let (store, _, _, uma) = seeded();
    let app = Router::new()
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        )
        .route(
            "/me",
            get(
                |a: Authorized, ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                    format!("{} {}", a.user, peer)
                },
            )
            .layer(require_bearer(&store)),
        )
        .merge(http::app(store.clone(), &HttpConfig::default()));
    let s = Server::start_app(app, HttpConfig::default());
    let mut conn = TcpStream::connect(s.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let me = conn.local_addr().unwrap();
    conn.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = conn.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with(&me.to_string()), "{out}");

    let res = client()
        .get(s.url("/me"))
        .bearer_auth(bearer(&store, &uma))
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().unwrap();
    assert!(text.starts_with("uma 127.0.0.1:"), "{text}");
}

// ----- the limits on a host's routes -----

#[test]
fn serve_on_bounds_every_route_the_hosts_included() {
    let store = TokenStore::temporary().unwrap();
    let cfg = HttpConfig::default().max_body_bytes(1024);
    let app = Router::new()
        .route("/host", get(|| async { "host" }))
        .route(
            "/host-body",
            post(|b: Bytes| async move { b.len().to_string() }),
        )
        .merge(http::app(store.clone(), &cfg));
    let s = Server::start_app(app, cfg);
    let wait = Duration::from_secs(30);

    // A 49 KB head in headers of 7 KB each (each under the 8 KiB bound).
    let mut req = String::from("GET /host HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for i in 0..7 {
        req.push_str(&format!("X-Filler-{i}: {}\r\n", "a".repeat(7000)));
    }
    req.push_str("\r\n");
    let answer = raw(s.addr, req.as_bytes(), wait);
    assert!(
        status_line(&answer).contains(" 431"),
        "a 49 KB head to a host route: {}",
        status_line(&answer)
    );
    // One header over 8 KiB, in a head under 32 KiB.
    let req = format!(
        "GET /host HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
        "b".repeat(9 * 1024)
    );
    let answer = raw(s.addr, req.as_bytes(), wait);
    assert!(status_line(&answer).contains(" 431"), "{answer}");
    // A declared body over the cap, at once.
    let req =
        "POST /host-body HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 4096\r\n\r\n";
    let answer = raw(s.addr, req.as_bytes(), wait);
    assert!(status_line(&answer).contains(" 413"), "{answer}");
    // A chunked body over the cap, as it streams.
    let chunk = "c".repeat(2048);
    let req = format!(
        "POST /host-body HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n{chunk}\r\n0\r\n\r\n"
    );
    let answer = raw(s.addr, req.as_bytes(), wait);
    assert!(status_line(&answer).contains(" 413"), "{answer}");
    // Within the bounds, the host's routes answer.
    let res = client()
        .post(s.url("/host-body"))
        .body(vec![b'x'; 512])
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().unwrap(), "512");
    let res = client().get(s.url("/host")).send().unwrap();
    assert_eq!(res.text().unwrap(), "host");
}

// ----- one config through Server -----

#[test]
fn server_takes_one_config_for_every_route() {
    let (store, _, _, uma) = seeded();
    let cfg = HttpConfig::default().max_body_bytes(1024).openapi(true);
    let mine = Router::new()
        .route(
            "/incidents",
            post(
                |Authorized(p): Authorized,
                 ConnectInfo(peer): ConnectInfo<SocketAddr>,
                 body: Bytes| async move {
                    format!("{} {} {}", p.user, peer.ip(), body.len())
                },
            ),
        )
        .route_layer(require_scope(&store, "incident-write"));
    let s = Served::start(http::Server::new(store.clone(), cfg).merge(mine));
    let c = client();
    let token = bearer(&store, &uma);

    let res = c
        .post(s.url("/incidents"))
        .bearer_auth(&token)
        .body(vec![b'x'; 100])
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().unwrap(), "uma 127.0.0.1 100");
    // The one config's body cap holds on the host's route.
    let res = c
        .post(s.url("/incidents"))
        .bearer_auth(&token)
        .body(vec![b'x'; 2000])
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // tokenvault's routes, the OpenAPI document, health, and the 404.
    let res = c.get(s.url("/v3/refresh-token")).send().unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = c.get(s.url("/openapi.json")).send().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = c.get(s.url("/healthz")).send().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().unwrap(), "ok\n");
    let res = c.get(s.url("/readyz")).send().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().unwrap(), "ready\n");
    let res = c.get(s.url("/nowhere")).send().unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let v: Value = res.json().unwrap();
    assert_eq!(v["meta"]["status"], 404);
}

// ----- health -----

#[test]
fn health_is_off_on_the_mountable_routers_unless_asked() {
    let store = TokenStore::temporary().unwrap();
    let s = Server::start(&store, HttpConfig::default());
    let res = client().get(s.url("/healthz")).send().unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    drop(s);
    let s = Server::start(&store, HttpConfig::default().health(true));
    let c = client();
    let res = c.get(s.url("/healthz")).send().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let res = c.get(s.url("/readyz")).send().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().unwrap(), "ready\n");
    // Not rate limited: many probes in a row all answer.
    for _ in 0..50 {
        assert_eq!(
            c.get(s.url("/healthz")).send().unwrap().status(),
            StatusCode::OK
        );
    }
}

#[test]
fn health_probes_are_logged_at_debug_not_info() {
    let log = captured();
    let store = TokenStore::temporary().unwrap();
    let s = Served::start(http::Server::new(store.clone(), HttpConfig::default()));
    let c = client();
    for path in ["/healthz", "/readyz", "/v3/refresh-token"] {
        let _ = c.get(s.url(path)).send().unwrap();
    }
    drop(s);
    let lines = log.lock().unwrap().clone();
    let request = |route: &str, level: &str| {
        lines.iter().any(|l| {
            l.starts_with("tokenvault::http")
                && l.contains("message=request")
                && l.contains(&format!("route={route} "))
                && l.ends_with(&format!("level={level}"))
        })
    };
    for route in ["/healthz", "/readyz"] {
        assert!(request(route, "DEBUG"), "{route}: {lines:#?}");
        assert!(!request(route, "INFO"), "{route}: {lines:#?}");
    }
    assert!(request("/v3/refresh-token", "INFO"), "{lines:#?}");
}

/// A tmpfs of `size` on a fresh directory (root only), unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let required = std::env::var_os("TOKENVAULT_FAULTS_REQUIRED").is_some();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(!required, "TOKENVAULT_FAULTS_REQUIRED is set, but not root");
            eprintln!("note: skipped, not running as root (a full disk needs a tmpfs)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                !required,
                "TOKENVAULT_FAULTS_REQUIRED is set, but mount failed"
            );
            eprintln!("note: skipped, mount -t tmpfs failed");
            return None;
        }
        Some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

/// Polls `url` until it answers `want`, for up to a minute.
fn eventually_status(url: &str, want: StatusCode) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let res = client().get(url).send().unwrap();
        let status = res.status();
        let text = res.text().unwrap();
        if status == want {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{url} still answers {status} {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "needs root (mounts a tmpfs): cargo test --test http_hosts -- --ignored"]
fn readyz_answers_503_while_the_disk_is_full() {
    let Some(fs) = Tmpfs::mount("4m") else { return };
    let path = fs.0.path().join("tokens.db");
    let store = TokenStore::open(&path).unwrap();
    let (_, _, uma) = common::store::seed_acme(&store);
    let s = Served::start(http::Server::new(store.clone(), HttpConfig::default()));
    let url = s.url("/readyz");
    assert_eq!(eventually_status(&url, StatusCode::OK), "ready\n");

    // Fill the disk, then write until the store fails.
    let ballast = fs.0.path().join("ballast");
    {
        let mut f = std::fs::File::create(&ballast).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    let mut failed = false;
    for _ in 0..100_000 {
        if store.generate(&uma, GenerateOptions::default()).is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed, "the disk never filled");
    let text = eventually_status(&url, StatusCode::SERVICE_UNAVAILABLE);
    assert!(text.starts_with("not ready: "), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(!text.contains(fs.0.path().to_str().unwrap()), "{text}");

    // Room again: ready again.
    std::fs::remove_file(&ballast).unwrap();
    assert_eq!(eventually_status(&url, StatusCode::OK), "ready\n");
    drop(s);
}
