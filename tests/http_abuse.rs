//! One abusive client against `serve_on`, over loopback: an attacker bound
//! to 127.0.0.2 holds and re-opens connections (idle, slow heads, slow and
//! missing bodies, a `Content-Length` of 100 MB with no body) while
//! legitimate clients on 127.0.0.1 keep getting correct answers; the per-peer
//! and global caps answer 503 with `Retry-After`; a connection without a
//! request head is closed; a body over the limit is refused before the
//! bearer, and the bearer is checked before any body is read; refusals and
//! odd requests keep the log short. Linux loopback accepts the whole
//! 127.0.0.0/8, so each address is a peer of its own. Every loop is bounded.
#![cfg(feature = "http")]

mod common;
#[cfg(feature = "cli")]
#[path = "support/serve.rs"]
mod serve;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::http::{captured, Server};
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::Value;
use tokenvault::http::HttpConfig;
use tokenvault::{Actor, GenerateOptions, Role, TokenStore};

// ----- harness -----

/// acme: olivia (Owner), uma (User).
fn seeded() -> TokenStore {
    let store = TokenStore::temporary().unwrap();
    store.add_member("acme", "olivia", Role::Owner).unwrap();
    store.add_member("acme", "uma", Role::User).unwrap();
    store
}

/// A member's refresh token (made through the library) and its id.
fn refresh_of(store: &TokenStore, user: &str) -> (String, String) {
    let t = store
        .generate(&Actor::new("acme", user), GenerateOptions::default())
        .unwrap();
    (t.token.expose().to_string(), t.info.id.to_string())
}

/// A member's access token, through the exchange endpoint.
fn bearer_of(s: &Server, store: &TokenStore, user: &str) -> String {
    let (refresh, _) = refresh_of(store, user);
    let res = Client::new()
        .get(s.url("/oauth/access-token"))
        .header("X-Refresh-Token", refresh)
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let v: Value = res.json().unwrap();
    v["data"]["access_token"].as_str().unwrap().to_string()
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A blocking connection to `addr` from the local address `from`, on a
/// socket that `socket` makes; reads time out after 20 s.
fn connect_on(
    socket: impl FnOnce() -> std::io::Result<tokio::net::TcpSocket>,
    from: IpAddr,
    addr: SocketAddr,
) -> std::io::Result<TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let s = rt.block_on(async {
        let sock = socket()?;
        sock.bind(SocketAddr::new(from, 0))?;
        sock.connect(addr).await
    })?;
    let s = s.into_std()?;
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    Ok(s)
}

/// A blocking connection to `addr` from the local address `from`.
fn connect_from(from: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    connect_on(tokio::net::TcpSocket::new_v4, from, addr)
}

/// A request for a route that does not exist (404), kept alive.
const NOPE: &[u8] = b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n";

/// [`NOPE`], asking the server to close the connection after it answers.
const NOPE_CLOSE: &[u8] = b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

/// Sends `request` on `c` and checks that the first bytes of the answer
/// start with `want` (e.g. `HTTP/1.1 404`).
fn answered(c: &mut TcpStream, request: &[u8], want: &str) {
    c.write_all(request).unwrap();
    let mut buf = [0u8; 512];
    let k = c.read(&mut buf).unwrap();
    assert!(
        buf[..k].starts_with(want.as_bytes()),
        "{}",
        String::from_utf8_lossy(&buf[..k])
    );
}

/// Everything the server sends until it closes or 20 s pass.
fn read_all(mut c: TcpStream) -> String {
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends a request on a fresh connection from `from` and returns the reply.
fn send_from(from: IpAddr, addr: SocketAddr, bytes: &[u8]) -> String {
    let mut c = connect_from(from, addr).unwrap();
    let _ = c.write_all(bytes);
    read_all(c)
}

// ----- the acceptance test -----

/// What the attacker's connections do, in turn.
#[derive(Clone, Copy)]
enum Hold {
    /// Connects and sends nothing.
    Idle,
    /// Sends a head a byte at a time and never finishes it.
    SlowHead,
    /// A complete head, then the body a byte at a time.
    SlowBody,
    /// Announces 100 MB and sends none of it.
    MissingBody,
    /// Under the limit, with a made-up bearer, and no body.
    MissingSmallBody,
    /// One request, then idles on the kept-alive connection.
    KeepAliveIdle,
}

const HOLDS: [Hold; 6] = [
    Hold::Idle,
    Hold::SlowHead,
    Hold::SlowBody,
    Hold::MissingBody,
    Hold::MissingSmallBody,
    Hold::KeepAliveIdle,
];

#[derive(Default)]
struct AttackCounts {
    opened: AtomicU64,
    answered_503: AtomicU64,
}

async fn write_all(c: &tokio::net::TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        c.writable().await?;
        match c.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn read_some(c: &tokio::net::TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        c.readable().await?;
        match c.try_read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            r => return r,
        }
    }
}

/// One attacker connection: holds it the way `hold` says until the server
/// closes it or `stop` is set (and at most 30 s).
async fn hold_one(server: SocketAddr, hold: Hold, stop: &AtomicBool, counts: &AttackCounts) {
    let Ok(sock) = tokio::net::TcpSocket::new_v4() else {
        return;
    };
    if sock.bind(SocketAddr::new(loopback(2), 0)).is_err() {
        return;
    }
    let Ok(c) = sock.connect(server).await else {
        return;
    };
    counts.opened.fetch_add(1, Ordering::Relaxed);
    let head: &[u8] = match hold {
        Hold::Idle => b"",
        Hold::SlowHead => b"GET /v3/refresh-token HTTP/1.1\r\nHost: x\r\n",
        Hold::SlowBody => {
            b"POST /v3/refresh-token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        }
        Hold::MissingBody => {
            b"POST /oauth/revoke HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000000\r\n\r\n"
        }
        Hold::MissingSmallBody => {
            b"POST /oauth/introspect HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tva_made_up\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n"
        }
        Hold::KeepAliveIdle => NOPE,
    };
    if write_all(&c, head).await.is_err() {
        return;
    }
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let mut first = true;
    while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(30) {
        let dribble = matches!(hold, Hold::SlowHead | Hold::SlowBody);
        match tokio::time::timeout(Duration::from_millis(200), read_some(&c, &mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => {
                if first && buf[..n].starts_with(b"HTTP/1.1 503") {
                    counts.answered_503.fetch_add(1, Ordering::Relaxed);
                }
                first = false;
            }
            Err(_) => {
                if dribble && write_all(&c, b"x").await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Keeps `holders` attacker connections from 127.0.0.2, each re-opened a
/// moment after the server closes it, until `stop`.
fn attack(
    server: SocketAddr,
    holders: usize,
    stop: Arc<AtomicBool>,
    counts: Arc<AttackCounts>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("attacker runtime");
        rt.block_on(async move {
            let mut tasks = Vec::new();
            for i in 0..holders {
                let (stop, counts) = (stop.clone(), counts.clone());
                tasks.push(tokio::spawn(async move {
                    // Bounded: at most 2,000 connections per holder.
                    for round in i..i + 2_000 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        hold_one(server, HOLDS[round % HOLDS.len()], &stop, &counts).await;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        });
    })
}

/// A bound a legitimate request stays far below unless it is starved: it
/// is shorter than any of the attacker's holds (the 5 s first-head deadline,
/// the 10 s header-read timeout), so a request that had to wait one out
/// fails.
const NOT_STARVED: Duration = Duration::from_secs(4);

/// The acceptance test: with the server's defaults but a cap of 64
/// connections, 100 attacker connections from 127.0.0.2 do not keep 4
/// clients on 127.0.0.1 from getting correct answers to 99 % of 480
/// requests, each within [`NOT_STARVED`].
#[test]
fn an_attacker_on_one_address_does_not_starve_the_others() {
    let store = seeded();
    let s = Server::start(&store, HttpConfig::default().max_connections(64));
    let olivia = bearer_of(&s, &store, "olivia");
    let uma = bearer_of(&s, &store, "uma");
    let (_, uma_id) = refresh_of(&store, "uma");

    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(AttackCounts::default());
    let attacker = attack(s.addr, 100, stop.clone(), counts.clone());
    // Let the attacker take what it can first.
    std::thread::sleep(Duration::from_secs(1));

    const CLIENTS: usize = 4;
    const REQUESTS: usize = 120;
    let good = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (url, olivia, uma, uma_id) = (s.url(""), olivia.clone(), uma.clone(), uma_id.clone());
        let (good, failures) = (good.clone(), failures.clone());
        clients.push(std::thread::spawn(move || {
            let client = Client::builder()
                .local_address(loopback(1))
                .timeout(NOT_STARVED)
                .build()
                .expect("client");
            for i in 0..REQUESTS {
                let started = Instant::now();
                let outcome: Result<(), String> = if (i + c) % 2 == 0 {
                    // The Owner's list holds Uma's token.
                    client
                        .get(format!("{url}/v3/refresh-token"))
                        .bearer_auth(&olivia)
                        .send()
                        .map_err(|e| e.to_string())
                        .and_then(|r| {
                            let status = r.status();
                            let v: Value = r.json().map_err(|e| e.to_string())?;
                            let has = v["data"]
                                .as_array()
                                .is_some_and(|a| a.iter().any(|t| t["id"] == uma_id.as_str()));
                            if status == StatusCode::OK && has {
                                Ok(())
                            } else {
                                Err(format!("list: {status} {v}"))
                            }
                        })
                } else {
                    client
                        .post(format!("{url}/oauth/introspect"))
                        .bearer_auth(&olivia)
                        .header("Content-Type", "application/x-www-form-urlencoded")
                        .body(format!("token={uma}"))
                        .send()
                        .map_err(|e| e.to_string())
                        .and_then(|r| {
                            let v: Value = r.json().map_err(|e| e.to_string())?;
                            if v["active"] == true && v["sub"] == "uma" {
                                Ok(())
                            } else {
                                Err(format!("introspect: {v}"))
                            }
                        })
                };
                match outcome {
                    Ok(()) if started.elapsed() < NOT_STARVED => {
                        good.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(()) => failures
                        .lock()
                        .unwrap()
                        .push(format!("answered after {:?}", started.elapsed())),
                    Err(e) => failures.lock().unwrap().push(e),
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }));
    }
    for c in clients {
        c.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    attacker.join().unwrap();

    let total = (CLIENTS * REQUESTS) as u64;
    let good = good.load(Ordering::Relaxed);
    let opened = counts.opened.load(Ordering::Relaxed);
    let refused = counts.answered_503.load(Ordering::Relaxed);
    let failures = failures.lock().unwrap();
    eprintln!(
        "legitimate: {good} of {total} answered correctly; attacker: {opened} connections, \
         {refused} answered 503; first failures: {:?}",
        &failures[..failures.len().min(5)]
    );
    // The attack was real: far more connections than the server serves.
    assert!(opened > 64, "the attacker opened only {opened} connections");
    assert!(
        good * 100 >= total * 99,
        "only {good} of {total} legitimate requests were answered correctly in time"
    );
    // The server still answers the attacker's address once it stops.
    drop(s);
}

// ----- the caps answer 503 -----

/// The status line of a raw HTTP answer.
fn status_of(reply: &str) -> &str {
    reply.split("\r\n").next().unwrap_or("")
}

/// The JSON body of a raw HTTP answer (null if none).
fn body_of(reply: &str) -> Value {
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// Asks for [`NOPE_CLOSE`] from `from`, on a fresh connection each time,
/// until the reply starts with `want` (the server may notice a closed
/// connection a moment late): at most 100 tries 50 ms apart. Returns the
/// last reply.
fn ask_until(from: IpAddr, addr: SocketAddr, want: &str) -> String {
    let mut reply = String::new();
    for _ in 0..100 {
        reply = send_from(from, addr, NOPE_CLOSE);
        if reply.starts_with(want) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reply
}

/// Checks that `reply` is a 503 that says to retry after a second, with a
/// JSON body of status 503 whose message contains `says`.
fn assert_refused(reply: &str, says: &str) {
    assert_eq!(
        status_of(reply),
        "HTTP/1.1 503 Service Unavailable",
        "{reply}"
    );
    assert!(
        reply
            .to_ascii_lowercase()
            .contains("\r\nretry-after: 1\r\n"),
        "{reply}"
    );
    let v = body_of(reply);
    assert_eq!(v["meta"]["status"], 503, "{reply}");
    assert!(
        v["meta"]["error_message"]
            .as_str()
            .is_some_and(|m| m.contains(says)),
        "{reply}"
    );
}

/// Opens connections from `from` until the server has taken `n` of them as
/// open (a request answered on each proves it is served).
fn held(from: IpAddr, addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut c = connect_from(from, addr).unwrap();
            answered(&mut c, NOPE, "HTTP/1.1 404");
            c
        })
        .collect()
}

#[test]
fn a_peer_over_its_cap_gets_503_with_retry_after() {
    let store = seeded();
    let cfg = HttpConfig::default()
        .max_connections(16)
        .max_connections_per_peer(2);
    let s = Server::start(&store, cfg);
    let holds = held(loopback(2), s.addr, 2);

    let reply = send_from(loopback(2), s.addr, NOPE);
    assert_refused(&reply, "this address");

    // Another address is served meanwhile.
    let reply = send_from(loopback(1), s.addr, NOPE_CLOSE);
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");

    // Once the held connections close, the address is served again (the
    // server notices the close a moment later: bounded retries).
    drop(holds);
    let reply = ask_until(loopback(2), s.addr, "HTTP/1.1 404");
    assert!(
        reply.starts_with("HTTP/1.1 404"),
        "the address stayed refused after its connections closed: {reply}"
    );
}

/// Opens `n` connections from `from`, each in the middle of a request (a
/// revocation with a valid bearer whose declared body never comes): none of
/// them may be closed for a new connection. Each is returned once the
/// handler reads the body (the server's `100 Continue` says so).
fn busy(from: IpAddr, addr: SocketAddr, bearer: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut c = connect_from(from, addr).unwrap();
            let head = format!(
                "POST /oauth/revoke HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {bearer}\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nExpect: 100-continue\r\n\
                 Content-Length: 40\r\n\r\n"
            );
            answered(&mut c, head.as_bytes(), "HTTP/1.1 100");
            c
        })
        .collect()
}

#[test]
fn a_full_server_answers_503_with_retry_after() {
    let store = seeded();
    let cfg = HttpConfig::default()
        .max_connections(3)
        .max_connections_per_peer(2);
    let s = Server::start(&store, cfg);
    let bearer = bearer_of(&s, &store, "uma");
    // Every slot is busy with a request (its body is awaited): nothing can
    // be closed for a newcomer.
    let _a = busy(loopback(2), s.addr, &bearer, 2);
    let _b = busy(loopback(3), s.addr, &bearer, 1);
    // The exchange's own connection may still be closing: bounded retries
    // until the three busy ones are all the server holds.
    let reply = ask_until(loopback(4), s.addr, "HTTP/1.1 503");
    assert_refused(&reply, "as many connections");
}

/// Whether the server has closed `c` (reads end, or fail with a reset).
fn closed_by_server(c: &mut TcpStream) -> bool {
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// At the cap, a new connection is served by closing the connection idle
/// the longest, one that never presented an accepted token before one that
/// did.
#[test]
fn a_full_server_closes_the_longest_idle_connection_for_a_new_one() {
    let store = seeded();
    let cfg = HttpConfig::default()
        .max_connections(3)
        .max_connections_per_peer(3);
    let s = Server::start(&store, cfg);
    let bearer = bearer_of(&s, &store, "uma");
    // A connection that presented an accepted bearer, then idles.
    let mut trusted = connect_from(loopback(2), s.addr).unwrap();
    let req = format!(
        "POST /oauth/introspect HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {bearer}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 7\r\n\r\ntoken=x"
    );
    answered(&mut trusted, req.as_bytes(), "HTTP/1.1 200");
    // Two anonymous ones, the first idle longer than the second.
    let mut older = held(loopback(3), s.addr, 1).pop().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let _newer = held(loopback(4), s.addr, 1);
    // The exchange's own connection may still hold its slot a moment.
    let reply = ask_until(loopback(5), s.addr, "HTTP/1.1 404");
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
    assert!(
        closed_by_server(&mut older),
        "the longest idle anonymous connection was closed"
    );
    // The trusted connection, idle longer still, is served on.
    answered(&mut trusted, NOPE, "HTTP/1.1 404");
}

/// A client that pipelines requests and never reads the answers is closed
/// once its answers have waited the write timeout.
#[test]
fn a_client_that_reads_no_answer_is_closed_after_the_write_timeout() {
    let store = seeded();
    let cfg = HttpConfig::default().write_timeout(Duration::from_millis(500));
    let s = Server::start(&store, cfg);
    let c = connect_from(loopback(2), s.addr).unwrap();
    // A tiny receive window, so that answers back up quickly.
    c.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let chunk = NOPE.repeat(512);
    let mut c = c;
    let start = Instant::now();
    let mut sent = 0usize;
    // Writes until the server stops reading (its answers are unread) or
    // closes the connection; bounded.
    while start.elapsed() < Duration::from_secs(60) {
        match c.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    assert!(sent > 0);
    // Then nothing: the server must close it, well within 20 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut closed = false;
    let mut buf = vec![0u8; 64 * 1024];
    c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    // Reading now would unstall it: wait first, then drain to the end.
    std::thread::sleep(Duration::from_secs(2));
    let mut got = Vec::new();
    while Instant::now() < deadline {
        match c.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                closed = true;
                break;
            }
            Err(_) => {}
        }
    }
    let asked = sent / NOPE.len();
    let answered = String::from_utf8_lossy(&got)
        .matches("HTTP/1.1 404")
        .count();
    eprintln!("stalled client: {asked} requests sent, {answered} answers read, closed: {closed}");
    assert!(
        closed,
        "the stalled connection stayed open after {asked} requests"
    );
    assert!(
        answered < asked,
        "the server answered all {asked} requests: it waited for the reader"
    );
}

// ----- the first request head -----

#[test]
fn a_connection_without_a_request_head_is_closed() {
    let store = seeded();
    let cfg = HttpConfig::default()
        .first_request_timeout(Duration::from_millis(200))
        .header_read_timeout(Duration::from_secs(30));
    let s = Server::start(&store, cfg);

    // Nothing sent: closed without an answer (the client's own 20 s read
    // timeout, shorter than the 30 s header-read timeout, tells a close by
    // the server from a connection kept open).
    let mut c = connect_from(loopback(2), s.addr).unwrap();
    let mut out = Vec::new();
    let closed = match c.read_to_end(&mut out) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(
        closed && out.is_empty(),
        "the idle connection was kept open"
    );

    // A head sent a byte at a time is cut off the same way.
    let mut c = connect_from(loopback(2), s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut closed = false;
    for b in b"GET /v3/refresh-token HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
        if c.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 64];
        match c.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Err(e) if e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::TimedOut => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    assert!(closed, "a head dribbled for 150 × 50 ms was never cut off");

    // A kept-alive connection idles past the first deadline: its later
    // heads have the header-read timeout.
    let mut c = connect_from(loopback(1), s.addr).unwrap();
    for _ in 0..2 {
        answered(&mut c, NOPE, "HTTP/1.1 404");
        std::thread::sleep(Duration::from_millis(600));
    }
}

// ----- bodies -----

#[test]
fn bodies_are_read_only_after_the_bearer_and_never_over_the_limit() {
    let store = seeded();
    // A request timeout far beyond the test's 20 s read timeout: an answer
    // that waited for the body would come too late to be read.
    let cfg = HttpConfig::default()
        .max_body_bytes(1024)
        .request_timeout(Duration::from_secs(120));
    let s = Server::start(&store, cfg);
    let olivia = bearer_of(&s, &store, "olivia");
    let uma = bearer_of(&s, &store, "uma");
    let ask = |head: String| send_from(loopback(1), s.addr, head.as_bytes());

    // A declared body over the limit: 413 at once, with or without a bearer,
    // on every route, and no byte of it is awaited.
    for (route, auth) in [
        ("/v3/refresh-token", String::new()),
        (
            "/v3/refresh-token",
            format!("Authorization: Bearer {olivia}\r\n"),
        ),
        ("/oauth/revoke", String::new()),
        (
            "/oauth/introspect",
            format!("Authorization: Bearer {olivia}\r\n"),
        ),
        ("/nope", String::new()),
    ] {
        let reply = ask(format!(
            "POST {route} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n"
        ));
        assert_eq!(
            status_of(&reply),
            "HTTP/1.1 413 Payload Too Large",
            "{route}: {reply}"
        );
        assert_eq!(body_of(&reply)["meta"]["status"], 413, "{reply}");
    }
    // The same words as a chunked body found too large while read.
    let chunk = "x".repeat(2000);
    let reply = ask(format!(
        "POST /v3/refresh-token HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {olivia}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         {:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    ));
    assert_eq!(
        status_of(&reply),
        "HTTP/1.1 413 Payload Too Large",
        "{reply}"
    );
    let declared = ask(
        "POST /v3/refresh-token HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n".to_string(),
    );
    assert_eq!(body_of(&reply), body_of(&declared));
    // On the RFC 7009 / 7662 routes, with RFC 6749's members, as a form
    // found too large while read.
    let form = format!("token={}", "t".repeat(2000));
    let read = ask(format!(
        "POST /oauth/introspect HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {olivia}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n{:x}\r\n{form}\r\n0\r\n\r\n",
        form.len()
    ));
    assert_eq!(status_of(&read), "HTTP/1.1 413 Payload Too Large", "{read}");
    let declared = ask(
        "POST /oauth/introspect HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n".to_string(),
    );
    assert_eq!(body_of(&read), body_of(&declared));
    assert_eq!(body_of(&read)["error"], "invalid_request", "{read}");

    // Under the limit but never sent: the bearer is refused at once, before
    // the body would be awaited.
    for (route, auth, want) in [
        (
            "/v3/refresh-token",
            String::new(),
            "HTTP/1.1 401 Unauthorized",
        ),
        (
            "/v3/refresh-token",
            "Authorization: Bearer tva_made_up\r\n".to_string(),
            "HTTP/1.1 401 Unauthorized",
        ),
        (
            "/v3/refresh-token",
            format!("Authorization: Bearer {uma}\r\n"),
            "HTTP/1.1 403 Forbidden",
        ),
        ("/oauth/revoke", String::new(), "HTTP/1.1 401 Unauthorized"),
        (
            "/oauth/introspect",
            "Authorization: Bearer tva_made_up\r\n".to_string(),
            "HTTP/1.1 401 Unauthorized",
        ),
    ] {
        let reply = ask(format!(
            "POST {route} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        ));
        assert_eq!(status_of(&reply), want, "{route}: {reply}");
    }
    // Nothing was made by any of it.
    assert_eq!(
        store.list_own(&Actor::new("acme", "olivia")).unwrap().len(),
        1
    );
}

// ----- logs -----

/// The number after `key=` in a captured line.
fn field(line: &str, key: &str) -> Option<u64> {
    let rest = line.split(&format!(" {key}=")).nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[test]
fn refused_connections_are_logged_as_counts() {
    let log = captured();
    let store = seeded();
    let cfg = HttpConfig::default()
        .max_connections(16)
        .max_connections_per_peer(1);
    let s = Server::start(&store, cfg);
    let addr = s.addr;
    let _hold = held(loopback(2), addr, 1);
    const REFUSED: u64 = 40;
    for _ in 0..REFUSED {
        let reply = send_from(loopback(2), addr, NOPE);
        assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    }
    drop(_hold);
    // Stopping the server writes the count not written yet.
    drop(s);
    let lines: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(&format!("addr={addr}")) && l.contains("refused="))
        .cloned()
        .collect();
    // One line at the first refusal, one for the rest (well within the ten
    // seconds between two lines), or a few if the machine is very slow.
    assert!(!lines.is_empty() && lines.len() <= 3, "{lines:#?}");
    let total: u64 = lines.iter().filter_map(|l| field(l, "refused")).sum();
    assert_eq!(total, REFUSED, "{lines:#?}");
    assert!(
        lines[0].contains("1 connection refused in the last"),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .skip(1)
            .any(|l| l.contains("connections refused in the last")),
        "{lines:#?}"
    );
}

#[test]
fn odd_requests_keep_log_lines_short() {
    let log = captured();
    let store = seeded();
    let s = Server::start(&store, HttpConfig::default());
    // A method of 20,000 letters (within the head bound), and a path of
    // 20,000 letters.
    let method = "A".repeat(20_000);
    let reply = send_from(
        loopback(1),
        s.addr,
        format!("{method} /v3/refresh-token HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert!(reply.starts_with("HTTP/1.1 405"), "{reply}");
    let path = "b".repeat(20_000);
    let reply = send_from(
        loopback(1),
        s.addr,
        format!("GET /{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
    // Beyond the head bound: refused or cut off, never served.
    let long = "C".repeat(40_000);
    let reply = send_from(
        loopback(1),
        s.addr,
        format!("{long} / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 431") || reply.starts_with("HTTP/1.1 400"),
        "{reply}"
    );
    drop(s);
    let lines = log.lock().unwrap().clone();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("method=\"other\"") && l.contains("status=405")),
        "{lines:#?}"
    );
    for l in &lines {
        assert!(l.len() < 512, "a log line of {} bytes", l.len());
        for text in [&method, &path, &long] {
            assert!(!l.contains(&text[..64]), "{l}");
        }
    }
}

// ----- the command line -----

/// `tokenvault serve` takes the connection limits as flags, and its
/// standard error counts refused connections.
#[cfg(feature = "cli")]
#[test]
fn serve_flags_set_the_connection_limits() {
    use std::io::BufRead;
    use std::process::Stdio;

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tv.db");
    let init = serve::tv(&db).arg("init").output().unwrap();
    assert!(init.status.success(), "{init:?}");
    let mut child = serve::tv(&db)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--max-connections",
            "8",
            "--max-connections-per-peer",
            "1",
            "--first-request-timeout",
            "30s",
        ])
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    /// Kills the server however the test ends.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stderr = child.stderr.take().unwrap();
    let _child = Kill(child);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            // Without terminal colours, whatever the subscriber decides.
            if tx.send(serve::strip_ansi(&line)).is_err() {
                break;
            }
        }
    });
    let wait_for = |needle: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
                if l.contains(needle) {
                    return l;
                }
            }
        }
        panic!("serve never logged {needle:?}");
    };
    let listening = wait_for("listening");
    let addr: SocketAddr = listening
        .split("addr=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {listening:?}"));

    let _hold = held(loopback(2), addr, 1);
    let reply = send_from(loopback(2), addr, NOPE);
    assert_eq!(
        status_of(&reply),
        "HTTP/1.1 503 Service Unavailable",
        "{reply}"
    );
    let reply = send_from(loopback(1), addr, NOPE_CLOSE);
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
    let line = wait_for("refused in the last");
    assert!(line.contains("1 connection refused"), "{line}");
}

// ----- IPv6 networks -----

/// A connection from the IPv6 address `from`.
fn connect_from_v6(from: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = || {
        let sock = tokio::net::TcpSocket::new_v6()?;
        // The address is routed to this host (a local route), not assigned
        // to an interface: binding it needs IPV6_FREEBIND.
        let one: libc::c_int = 1;
        // SAFETY: a valid descriptor and an int option of the right size.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&sock),
                libc::IPPROTO_IPV6,
                libc::IPV6_FREEBIND,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(sock)
    };
    connect_on(socket, from, addr)
}

/// A local route for a /56 on the loopback device, removed on drop.
struct LocalRoute(&'static str);

impl Drop for LocalRoute {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["-6", "route", "del", "local", self.0, "dev", "lo"])
            .status();
    }
}

/// Several /64 networks of one /56, bound for real: each /64 has its own
/// per-peer count, and two addresses of one /64 share theirs. Needs
/// `ip -6 route add local …/56 dev lo` (root, or CAP_NET_ADMIN); where that
/// is refused the test says so and checks nothing more (the keying itself
/// is unit-tested in `src/http/server/caps.rs`).
#[test]
fn each_ipv6_64_of_a_56_counts_as_one_peer() {
    const NET: &str = "fd00:7465:6b6e:100::/56";
    let added = std::process::Command::new("ip")
        .args(["-6", "route", "add", "local", NET, "dev", "lo"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !added {
        eprintln!("note: `ip -6 route add local {NET} dev lo` is not permitted here; skipped binding several /64s");
        return;
    }
    let _route = LocalRoute(NET);
    let store = seeded();
    let cfg = HttpConfig::default()
        .max_connections(16)
        .max_connections_per_peer(2);
    let listener = std::net::TcpListener::bind("[::1]:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let s = Server::start_on(&store, cfg, addr);
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    let hold = |from: IpAddr| {
        let mut c = connect_from_v6(from, s.addr).unwrap();
        answered(&mut c, NOPE, "HTTP/1.1 404");
        c
    };
    let ask = |from: IpAddr| {
        let mut c = connect_from_v6(from, s.addr).unwrap();
        let _ = c.write_all(NOPE_CLOSE);
        read_all(c)
    };
    // Two hosts of the first /64 take its whole share.
    let _a = hold(ip("fd00:7465:6b6e:100::1"));
    let _b = hold(ip("fd00:7465:6b6e:100:ffff::2"));
    let reply = ask(ip("fd00:7465:6b6e:100::3"));
    assert_eq!(
        status_of(&reply),
        "HTTP/1.1 503 Service Unavailable",
        "{reply}"
    );
    // Every other /64 of the /56 is a peer of its own.
    for net in ["101", "17f", "1ff"] {
        let reply = ask(ip(&format!("fd00:7465:6b6e:{net}::1")));
        assert!(reply.starts_with("HTTP/1.1 404"), "{net}: {reply}");
    }
}
