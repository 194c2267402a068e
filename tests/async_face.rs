//! The async face (`AsyncTokenStore`, cargo feature `tokio`), the close
//! report, and the natural `#[tokio::main]` shutdown of a server:
//! `serve_on(..).await?; store.close()?` with a client that has sent half
//! of a request must end with the last handle's close (checkpoint and
//! warm-start files), not a flush-only close.
#![cfg(all(feature = "tokio", feature = "http"))]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Extension, Router};
use tokenvault::http::{app, serve_on, HttpConfig};
use tokenvault::{Actor, AsyncTokenStore, Error, GenerateOptions, Role, TokenStore};

/// A generous bound for anything a test waits on (a loaded 2-core machine).
const PATIENCE: Duration = Duration::from_secs(60);

/// Reads one HTTP/1.1 response with a `content-length` from `s`.
fn read_response(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).expect("reading the response head");
        assert_eq!(n, 1, "the server closed the connection mid-head");
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).expect("an ASCII head");
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .expect("a content-length");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("reading the body");
    head + &String::from_utf8_lossy(&body)
}

/// The natural shutdown, on a runtime like `#[tokio::main]`'s (`multi`) or
/// a current-thread one: a client exchanges a token over a keep-alive
/// connection, then sends a host route the head and half the body of an
/// upload and stays; once that request's handler (holding a handle of the
/// store, as a host's handlers do) is waiting for the rest, the server is
/// told to stop. Once `serve_on` returns, closing the store must be the
/// last handle's.
fn natural_shutdown(multi: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.db");
    let store = TokenStore::open(&path).unwrap();
    store.add_member("acme", "olivia", Role::Owner).unwrap();
    let issued = store
        .generate(&Actor::new("acme", "olivia"), GenerateOptions::default())
        .unwrap();
    let refresh = issued.token.expose().to_string();

    let rt = if multi {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    }
    .enable_all()
    .build()
    .unwrap();

    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let started = Arc::new(Mutex::new(Some(started_tx)));
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (addr_tx, addr_rx) = mpsc::channel::<SocketAddr>();
    let client = std::thread::spawn(move || {
        let addr = addr_rx
            .recv_timeout(PATIENCE)
            .expect("the server's address");
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        write!(
            s,
            "GET /oauth/access-token HTTP/1.1\r\nhost: x\r\nx-refresh-token: {refresh}\r\n\r\n"
        )
        .unwrap();
        let answer = read_response(&mut s);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // The head of an upload and ten of its thousand bytes.
        s.write_all(b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n0123456789")
            .unwrap();
        s.flush().unwrap();
        // Stays connected until the test is done with the server.
        let _ = release_rx.recv_timeout(PATIENCE);
        drop(s);
    });

    let began = Instant::now();
    let report = rt.block_on(async {
        let cfg = HttpConfig::default().shutdown_grace(Duration::from_millis(200));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        addr_tx.send(listener.local_addr()?).unwrap();
        // Stop once the upload's handler runs (and waits for its body).
        let shutdown = async {
            // Bounded, so that a client that failed cannot hang the test.
            let _ = tokio::time::timeout(PATIENCE, started_rx).await;
        };
        let upload = post(
            move |Extension(store): Extension<AsyncTokenStore>, req: Request| {
                let started = started.clone();
                async move {
                    if let Some(tx) = started.lock().unwrap().take() {
                        let _ = tx.send(());
                    }
                    let body = axum::body::to_bytes(req.into_body(), 1 << 20).await;
                    let _ = store.flush().await;
                    if body.is_ok() {
                        StatusCode::NO_CONTENT
                    } else {
                        StatusCode::BAD_REQUEST
                    }
                }
            },
        );
        let host = Router::new()
            .route("/upload", upload)
            .layer(Extension(AsyncTokenStore::from(store.clone())));
        let router = app(store.clone(), &cfg).merge(host);
        // The natural shutdown of a host's `main`.
        serve_on(listener, router, &cfg, shutdown).await?;
        let report = store.close()?;
        Ok::<_, Box<dyn std::error::Error>>(report)
    });
    let _ = release_tx.send(());
    client.join().unwrap();
    let report = report.expect("serving and closing");
    eprintln!(
        "close report after serve_on ({}): {report:?} ({report}); shutdown took {:?}",
        if multi {
            "multi-thread"
        } else {
            "current-thread"
        },
        began.elapsed()
    );
    assert!(
        report.last_handle,
        "serve_on returned while its connections still held the store: {report}"
    );
    assert_eq!(report.handles_remaining, 0);
    assert!(report.checkpoint, "no checkpoint: {report}");
    assert!(report.warm_start_files, "no warm-start files: {report}");

    // And the store opens from the warm-start files the close wrote.
    let store = TokenStore::open(&path).unwrap();
    assert!(store.stats().unwrap().warm_start);
    assert_eq!(
        store.verify_refresh(issued.token.expose()).unwrap().id,
        issued.info.id
    );
}

#[test]
fn natural_shutdown_with_a_half_sent_request_checkpoints_multi_thread() {
    natural_shutdown(true);
}

#[test]
fn natural_shutdown_with_a_half_sent_request_checkpoints_current_thread() {
    natural_shutdown(false);
}

#[test]
fn close_reports_the_handles_that_remain() {
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::open(dir.path().join("tokens.db")).unwrap();
    let (a, b) = (store.clone(), store.clone());
    let r = store.close().unwrap();
    assert!(!r.last_handle && !r.checkpoint && !r.warm_start_files);
    assert_eq!(r.handles_remaining, 2);
    assert!(r.to_string().contains("2 other handles"), "{r}");
    let r = a.close().unwrap();
    assert_eq!((r.last_handle, r.handles_remaining), (false, 1));
    let r = b.close().unwrap();
    assert!(r.last_handle && r.checkpoint && r.warm_start_files, "{r}");
    assert_eq!(r.handles_remaining, 0);
}

#[test]
fn close_timeout_waits_for_the_other_handles() {
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::open(dir.path().join("tokens.db")).unwrap();
    let other = store.clone();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        // Holds its handle until the close is under way.
        go_rx.recv_timeout(PATIENCE).unwrap();
        drop(other);
    });
    let closer = std::thread::spawn(move || store.close_timeout(PATIENCE));
    go_tx.send(()).unwrap();
    let r = closer.join().unwrap().unwrap();
    holder.join().unwrap();
    assert!(r.last_handle && r.checkpoint, "{r}");
}

#[test]
fn close_timeout_gives_up_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::open(dir.path().join("tokens.db")).unwrap();
    let other = store.clone();
    let r = store.close_timeout(Duration::from_millis(30)).unwrap();
    assert!(!r.last_handle, "{r}");
    assert_eq!(r.handles_remaining, 1);
    // The other handle still works, and closes for good.
    other.add_member("acme", "ann", Role::Owner).unwrap();
    assert!(other.close().unwrap().last_handle);
}

#[tokio::test(flavor = "current_thread")]
async fn the_async_face_runs_store_calls_off_the_async_thread() {
    let store = AsyncTokenStore::temporary().await.unwrap();
    let worker = std::thread::current().id();
    let ran_on = store
        .run(|_| Ok::<_, Error>(std::thread::current().id()))
        .await
        .unwrap();
    assert_ne!(ran_on, worker, "the call ran on the async worker");

    store.add_member("acme", "ann", Role::Owner).await.unwrap();
    store.add_member("acme", "bob", Role::User).await.unwrap();
    let ann = Actor::new("acme", "ann");
    let t = store
        .assign(&ann, "bob", GenerateOptions::default().label("ci"))
        .await
        .unwrap();
    let grant = store.exchange(t.token.expose()).await.unwrap();
    assert_eq!(
        &*store.verify(grant.access_token.expose()).unwrap().user,
        "bob"
    );
    assert!(matches!(
        store.authorize(grant.access_token.expose(), "user-write"),
        Err(Error::InsufficientScope(_))
    ));
    assert_eq!(store.list_org(&ann).await.unwrap().len(), 1);
    // Bad input: a clear error, nothing changed.
    assert!(matches!(
        store.add_member("", "x", Role::User).await,
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(store.members("acme").len(), 2);

    // Both faces are one store.
    let sync: TokenStore = store.clone().into_sync();
    sync.revoke(&ann, &t.info.id, None).unwrap();
    assert!(matches!(
        store.verify(grant.access_token.expose()),
        Err(Error::Revoked)
    ));
    let back = AsyncTokenStore::from(sync);
    // Two members added, one token assigned, one revoked.
    let events = back.audit(&ann, 100).await.unwrap();
    assert_eq!(events.len(), 4, "{events:?}");
    let id = t.info.id.to_string();
    assert!(events
        .iter()
        .any(|e| e.action.contains("revoke") && e.target.as_deref() == Some(id.as_str())));
    drop(back);
    let r = store.close_timeout(PATIENCE).await.unwrap();
    assert!(r.last_handle, "{r}");
}
