//! Many attacking addresses against `tokenvault serve`, over loopback
//! (Linux accepts the whole 127.0.0.0/8, so each address is a peer of its
//! own): (i) nine addresses, 127.0.0.10–18, each holding as many
//! connections as the per-peer cap allows, each sending one cheap
//! unauthenticated request every 4 s and reconnecting when closed; (ii)
//! the same nine addresses as slow readers, pipelining requests until the
//! answers fill the socket buffers and then neither reading nor writing;
//! (iii) one address's whole per-peer share of slow readers, after which a
//! new connection from that address must be served within 45 s.
//!
//! Meanwhile a legitimate client on 127.0.0.19 opens a new connection per
//! request: some unauthenticated (401), some exchanging a refresh token,
//! some revoking one with a valid bearer. At least 95 % of its requests must
//! be answered (not 503, not dropped) within [`ANSWER_BOUND`].
//!
//! In CI the limits are small (`--max-connections 64`, per peer 8, nine
//! addresses × 8). With `TOKENVAULT_ABUSE_FULL=1` the server runs with its
//! default limits (1,024 connections, 128 per peer, nine addresses × 128,
//! about 2,300 descriptors: the test raises `RLIMIT_NOFILE`).
#![cfg(all(feature = "http", feature = "cli"))]

use std::io::{BufRead, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokenvault::{Actor, GenerateOptions, Role, TokenStore};

/// How long the legitimate client waits for one answer.
const ANSWER_BOUND: Duration = Duration::from_secs(10);
/// How long each attack lasts while the legitimate client is measured.
const ATTACK_FOR: Duration = Duration::from_secs(25);
/// The share of legitimate requests that must be answered.
const MIN_SHARE: f64 = 0.95;

struct Scale {
    max_connections: usize,
    per_peer: usize,
    full: bool,
}

fn scale() -> Scale {
    if std::env::var("TOKENVAULT_ABUSE_FULL").is_ok_and(|v| v == "1") {
        Scale {
            max_connections: 1024,
            per_peer: 128,
            full: true,
        }
    } else {
        Scale {
            max_connections: 64,
            per_peer: 8,
            full: false,
        }
    }
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// Raises the soft descriptor limit to the hard one (the child server
/// inherits it).
fn raise_nofile() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `r`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max.min(65_536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// The `serve` child, killed however the test ends.
struct ServeChild(Child);

impl Drop for ServeChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the legitimate client needs: tokens to exchange and to revoke, and
/// a bearer for the revocations.
struct Fixture {
    _dir: tempfile::TempDir,
    _server: ServeChild,
    addr: SocketAddr,
    to_exchange: Vec<String>,
    to_revoke: Vec<String>,
}

fn start(s: &Scale) -> Fixture {
    raise_nofile();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tokens.db");
    let store = TokenStore::open(&db).unwrap();
    store.add_member("acme", "olivia", Role::Owner).unwrap();
    store.add_member("acme", "uma", Role::User).unwrap();
    let uma = Actor::new("acme", "uma");
    let mut tokens: Vec<String> = (0..90)
        .map(|_| {
            store
                .generate(&uma, GenerateOptions::default())
                .unwrap()
                .token
                .expose()
                .to_string()
        })
        .collect();
    store.close().unwrap();
    let to_revoke = tokens.split_off(30);
    let bin = env!("CARGO_BIN_EXE_tokenvault");
    let mut child = Command::new(bin)
        .env_remove("TOKENVAULT_DB")
        .env("NO_COLOR", "1")
        .arg("--db")
        .arg(&db)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--max-connections", &s.max_connections.to_string()])
        .args(["--max-connections-per-peer", &s.per_peer.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let server = ServeChild(child);
    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if !sent && line.contains("listening") {
                if let Some(a) = line
                    .split("addr=")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|a| a.parse().ok())
                {
                    let _ = tx.send(a);
                    sent = true;
                }
            }
            // Keeps draining, so the server never blocks on its log.
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("serve never said where it listens");
    Fixture {
        _dir: dir,
        _server: server,
        addr,
        to_exchange: tokens,
        to_revoke,
    }
}

/// A connection to `addr` from `from`, with a small receive buffer when
/// `small_window` (a slow reader's answers then back up sooner).
async fn connect(
    from: IpAddr,
    addr: SocketAddr,
    small_window: bool,
) -> std::io::Result<tokio::net::TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    if small_window {
        sock.set_recv_buffer_size(4096)?;
    }
    sock.bind(SocketAddr::new(from, 0))?;
    tokio::time::timeout(Duration::from_secs(10), sock.connect(addr))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

const NOPE: &[u8] = b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n";

/// Attack (i), one connection at a time: a cheap request every 4 s, the
/// answer read; a new connection when the server closes this one.
async fn keep_alive_attacker(from: IpAddr, addr: SocketAddr, stop: Arc<AtomicBool>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut c) = connect(from, addr, false).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut buf = [0u8; 1024];
        loop {
            if stop.load(Ordering::Relaxed) || c.write_all(NOPE).await.is_err() {
                break;
            }
            match tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 && !buf[..n].starts_with(b"HTTP/1.1 503") => {}
                _ => break,
            }
            tokio::time::sleep(Duration::from_secs(4)).await;
        }
        // Closed, refused or evicted: back for another slot at once (a
        // breath, so that the test does not spin the shared machine).
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Attacks (ii) and (iii), one connection at a time: requests pipelined
/// until the server stops taking them (its answers are unread), then
/// nothing at all; a new connection when the server closes this one, if
/// `again`. Returns once this connection is stalled, through `stalled`.
async fn slow_reader(
    from: IpAddr,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    again: bool,
    stalled: Arc<AtomicU64>,
) {
    use tokio::io::AsyncWriteExt;
    let chunk = NOPE.repeat(256);
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut c) = connect(from, addr, true).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        // Writes until a write waits a whole second.
        let mut sent = 0usize;
        loop {
            match tokio::time::timeout(Duration::from_secs(1), c.write_all(&chunk)).await {
                Ok(Ok(())) => sent += chunk.len(),
                Ok(Err(_)) => break,
                Err(_) => {
                    stalled.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
            if stop.load(Ordering::Relaxed) || sent > 64 << 20 {
                break;
            }
        }
        // Holds the connection, reading nothing, until the server closes
        // it (a reset: its unread requests make the close abortive).
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            if !matches!(c.take_error(), Ok(None)) {
                break;
            }
            let mut peek = [0u8; 1];
            match tokio::time::timeout(Duration::from_millis(500), c.peek(&mut peek)).await {
                // Answers are waiting, unread: peek returns at once, so pace.
                Ok(Ok(n)) if n > 0 => tokio::time::sleep(Duration::from_millis(500)).await,
                Ok(_) => break,
                Err(_) => {}
            }
        }
        if !again {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One legitimate request on a new connection from 127.0.0.19: whether it
/// was answered (not 503, not dropped) within [`ANSWER_BOUND`], and its
/// status line.
fn legit_request(addr: SocketAddr, request: &str) -> (bool, String) {
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Ok(c) = rt.block_on(connect(loopback(19), addr, false)) else {
        return (false, "connect failed".into());
    };
    let Ok(mut c) = c.into_std() else {
        return (false, "socket".into());
    };
    let _ = c.set_nonblocking(false);
    let _ = c.set_read_timeout(Some(ANSWER_BOUND));
    if c.write_all(request.as_bytes()).is_err() {
        return (false, "write failed".into());
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < ANSWER_BOUND {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&got);
    let status = text.lines().next().unwrap_or("").to_string();
    let complete = text.contains("\r\n\r\n");
    let ok = complete
        && status.starts_with("HTTP/1.1 ")
        && !status.starts_with("HTTP/1.1 503")
        && started.elapsed() <= ANSWER_BOUND;
    (
        ok,
        if status.is_empty() {
            "dropped".into()
        } else {
            status
        },
    )
}

/// The legitimate client for `dur`: a request every ~150 ms, cycling
/// through a 401, an exchange and a revocation. Returns (answered, sent,
/// statuses seen).
fn legit_client(f: &Fixture, dur: Duration) -> (usize, usize, Vec<String>) {
    let mut answered = 0;
    let mut sent = 0;
    let mut seen = Vec::new();
    let mut bearer: Option<String> = None;
    let (mut ex, mut rv) = (0usize, 0usize);
    let start = Instant::now();
    let mut i = 0usize;
    while start.elapsed() < dur {
        let req = match i % 3 {
            0 => "GET /v3/refresh-token HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tva_not-a-token\r\nConnection: close\r\n\r\n".to_string(),
            1 => {
                let t = &f.to_exchange[ex % f.to_exchange.len()];
                ex += 1;
                format!("GET /oauth/access-token HTTP/1.1\r\nHost: x\r\nX-Refresh-Token: {t}\r\nConnection: close\r\n\r\n")
            }
            _ => match (&bearer, f.to_revoke.get(rv)) {
                (Some(b), Some(t)) => {
                    rv += 1;
                    let body = format!("token={t}");
                    format!(
                        "POST /oauth/revoke HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {b}\r\n\
                         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
                         Connection: close\r\n\r\n{body}",
                        body.len()
                    )
                }
                _ => {
                    let t = &f.to_exchange[ex % f.to_exchange.len()];
                    ex += 1;
                    format!("GET /oauth/access-token HTTP/1.1\r\nHost: x\r\nX-Refresh-Token: {t}\r\nConnection: close\r\n\r\n")
                }
            },
        };
        i += 1;
        sent += 1;
        let (ok, status) = legit_request(f.addr, &req);
        if ok {
            answered += 1;
        }
        if bearer.is_none() && status.starts_with("HTTP/1.1 200") && req.contains("X-Refresh-Token")
        {
            // The bearer for the revocations comes from an answered exchange.
            bearer = exchange_bearer(f.addr, &f.to_exchange[0]);
        }
        seen.push(status);
        std::thread::sleep(Duration::from_millis(150));
    }
    (answered, sent, seen)
}

/// An access token from an exchange (retried a few times; `None` if the
/// server is unreachable).
fn exchange_bearer(addr: SocketAddr, refresh: &str) -> Option<String> {
    for _ in 0..5 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        let c = rt.block_on(connect(loopback(19), addr, false)).ok()?;
        let mut c = c.into_std().ok()?;
        c.set_nonblocking(false).ok()?;
        c.set_read_timeout(Some(ANSWER_BOUND)).ok()?;
        let req = format!("GET /oauth/access-token HTTP/1.1\r\nHost: x\r\nX-Refresh-Token: {refresh}\r\nConnection: close\r\n\r\n");
        c.write_all(req.as_bytes()).ok()?;
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        if let Some((_, body)) = out.split_once("\r\n\r\n") {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
                if let Some(t) = v["data"]["access_token"].as_str() {
                    return Some(t.to_string());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    None
}

fn attack_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn report(name: &str, answered: usize, sent: usize, seen: &[String]) {
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for s in seen {
        *counts.entry(s.as_str()).or_default() += 1;
    }
    eprintln!("{name}: legitimate requests answered {answered}/{sent}; statuses {counts:?}");
    assert!(sent >= 10, "too few requests to judge: {sent}");
    assert!(
        answered as f64 >= MIN_SHARE * sent as f64,
        "{name}: only {answered} of {sent} legitimate requests answered within {ANSWER_BOUND:?}"
    );
}

/// Waits (bounded) until `n` attacker connections hold their places.
fn wait_for(what: &str, counter: &AtomicU64, n: u64, bound: Duration) {
    let deadline = Instant::now() + bound;
    while counter.load(Ordering::Relaxed) < n {
        assert!(
            Instant::now() < deadline,
            "{what}: only {} of {n} after {bound:?}",
            counter.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// (i) Nine addresses keep every slot with a cheap request every 4 s.
#[test]
fn nine_addresses_sending_every_4_s_do_not_starve_a_tenth() {
    let s = scale();
    let f = start(&s);
    let rt = attack_runtime();
    let stop = Arc::new(AtomicBool::new(false));
    for a in 10..=18u8 {
        for _ in 0..s.per_peer {
            rt.spawn(keep_alive_attacker(loopback(a), f.addr, stop.clone()));
        }
    }
    // Lets the attack take the server first.
    std::thread::sleep(Duration::from_secs(if s.full { 10 } else { 3 }));
    let (answered, sent, seen) = legit_client(&f, ATTACK_FOR);
    stop.store(true, Ordering::Relaxed);
    rt.shutdown_timeout(Duration::from_secs(5));
    report("nine addresses, a request every 4 s", answered, sent, &seen);
}

/// (ii) Nine addresses of slow readers.
#[test]
fn nine_addresses_of_slow_readers_do_not_starve_a_tenth() {
    let s = scale();
    let f = start(&s);
    let rt = attack_runtime();
    let stop = Arc::new(AtomicBool::new(false));
    let stalled = Arc::new(AtomicU64::new(0));
    for a in 10..=18u8 {
        for _ in 0..s.per_peer {
            rt.spawn(slow_reader(
                loopback(a),
                f.addr,
                stop.clone(),
                true,
                stalled.clone(),
            ));
        }
    }
    // The attack is real once the server holds its full share of stalled
    // connections.
    wait_for(
        "stalled connections",
        &stalled,
        s.max_connections as u64,
        Duration::from_secs(120),
    );
    let (answered, sent, seen) = legit_client(&f, ATTACK_FOR);
    stop.store(true, Ordering::Relaxed);
    rt.shutdown_timeout(Duration::from_secs(5));
    eprintln!("slow readers stalled: {}", stalled.load(Ordering::Relaxed));
    report("nine addresses of slow readers", answered, sent, &seen);
}

/// (iii) One address's whole share of slow readers: that address is served
/// again within 45 s, and a tenth address meanwhile.
#[test]
fn a_stalled_address_is_served_again_within_45_s() {
    let s = scale();
    let f = start(&s);
    let rt = attack_runtime();
    let stop = Arc::new(AtomicBool::new(false));
    let stalled = Arc::new(AtomicU64::new(0));
    for _ in 0..s.per_peer {
        rt.spawn(slow_reader(
            loopback(10),
            f.addr,
            stop.clone(),
            false,
            stalled.clone(),
        ));
    }
    wait_for(
        "stalled connections",
        &stalled,
        s.per_peer as u64,
        Duration::from_secs(120),
    );
    let stalled_at = Instant::now();
    let (answered, sent, seen) = legit_client(&f, Duration::from_secs(5));
    // The address is at its cap for now; within 45 s it is served again.
    let mut served = None;
    let mut refused = 0;
    while stalled_at.elapsed() < Duration::from_secs(45) {
        let rt1 = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        if let Ok(c) = rt1.block_on(connect(loopback(10), f.addr, false)) {
            let mut c = c.into_std().unwrap();
            c.set_nonblocking(false).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = c.write_all(b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut out = String::new();
            let _ = c.read_to_string(&mut out);
            if out.starts_with("HTTP/1.1 404") {
                served = Some(stalled_at.elapsed());
                break;
            }
            refused += 1;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    stop.store(true, Ordering::Relaxed);
    rt.shutdown_timeout(Duration::from_secs(5));
    eprintln!("stalled address: refused {refused} times, served again after {served:?}");
    report("one address of slow readers", answered, sent, &seen);
    assert!(
        served.is_some(),
        "the stalled address was still refused 45 s later ({refused} tries)"
    );
}
