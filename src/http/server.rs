//! Per-request guard (header bounds, timeout, one log line) and the
//! connection loop (head size, header-read timeout, connection cap, graceful
//! shutdown).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::error::ApiError;
use super::{app, HttpConfig};
use crate::TokenStore;

const TARGET: &str = "tokenvault::http";

struct Limits {
    max_header_bytes: usize,
    head_bytes: usize,
    max_body_bytes: usize,
    request_timeout: Duration,
}

/// Wraps `router` in the per-request guard.
pub(crate) fn guarded(router: Router, cfg: &HttpConfig) -> Router {
    let limits = Arc::new(Limits {
        max_header_bytes: cfg.max_header_bytes,
        head_bytes: cfg.head_bytes(),
        max_body_bytes: cfg.max_body_bytes,
        request_timeout: cfg.request_timeout,
    });
    router.layer(middleware::from_fn_with_state(limits, guard))
}

/// The method as logged: a standard one by name, anything else as `other`,
/// so that a client cannot put text of its own in the log.
pub(crate) fn method_class(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// The text of a 413, as the body extractors word it.
pub(crate) const BODY_TOO_LARGE: &str = "Failed to buffer the request body: length limit exceeded";

/// Longest route text logged (routes are templates, so this only guards
/// against a host's own long template).
const MAX_LOGGED_ROUTE: usize = 128;

/// `s` cut to at most `max` bytes on a character boundary.
pub(crate) fn truncated(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The declared body length, if the request declares a valid one.
fn declared_length(req: &Request) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

async fn guard(State(limits): State<Arc<Limits>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = method_class(req.method());
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    // The route template only: a raw path or query could hold anything.
    let route = req.extensions().get::<MatchedPath>().map_or_else(
        || "-".to_string(),
        |m| truncated(m.as_str(), MAX_LOGGED_ROUTE).to_string(),
    );
    // The request line counts against the head bound too.
    let mut total = req
        .method()
        .as_str()
        .len()
        .saturating_add(req.uri().path_and_query().map_or(0, |p| p.as_str().len()));
    let has_token = req.headers().contains_key(header::AUTHORIZATION)
        || req.headers().contains_key("x-refresh-token");
    let mut too_big = false;
    for (name, value) in req.headers() {
        total = total.saturating_add(name.as_str().len() + value.len());
        too_big |= value.len() > limits.max_header_bytes;
    }
    let res = if too_big || total > limits.head_bytes {
        ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request header fields too large",
        )
        .into_response()
    } else if declared_length(&req).is_some_and(|n| n > limits.max_body_bytes as u64) {
        // At once, before authentication and without reading a byte of it;
        // worded as the body extractors word it, RFC 6749's members included
        // on the RFC 7009 / 7662 routes.
        let e = ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, BODY_TOO_LARGE);
        let rfc = matches!(route.as_str(), "/oauth/revoke" | "/oauth/introspect");
        if rfc { e.rfc() } else { e }.into_response()
    } else {
        match tokio::time::timeout(limits.request_timeout, next.run(req)).await {
            Ok(res) => res,
            Err(_) => ApiError::new(StatusCode::REQUEST_TIMEOUT, "the request took too long")
                .into_response(),
        }
    };
    let mut res = res;
    if has_token && route != "-" && credential_accepted(res.status()) {
        res.extensions_mut().insert(Credentialed);
    }
    let took = start.elapsed();
    #[cfg(feature = "metrics")]
    super::metrics_route::request(&route, res.status(), took);
    tracing::info!(
        target: TARGET,
        method,
        route = %route,
        status = res.status().as_u16(),
        latency = took.as_secs_f64() * 1e3,
        peer = %PeerText(peer),
        "request"
    );
    res
}

/// A request's peer address as logged (`-` when unknown: a host serving
/// the router itself without connect info).
struct PeerText(Option<SocketAddr>);

impl std::fmt::Display for PeerText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(a) => a.fmt(f),
            None => f.write_str("-"),
        }
    }
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route")
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route",
    )
}

/// Serves [`app`] for `store` on `addr` with default settings until Ctrl-C
/// or SIGTERM, then lets open requests finish. This is what
/// `tokenvault serve --listen ADDR` runs.
///
/// # Errors
/// The I/O error if `addr` cannot be bound.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// let store = tokenvault::TokenStore::open("tokens.db").expect("store");
/// tokenvault::http::serve(store, "127.0.0.1:8080".parse().unwrap()).await?;
/// # Ok(()) }
/// ```
pub async fn serve(store: TokenStore, addr: SocketAddr) -> io::Result<()> {
    serve_with(store, addr, &HttpConfig::default()).await
}

/// [`serve`] with settings.
///
/// # Errors
/// The I/O error if `addr` cannot be bound.
///
/// ```no_run
/// use tokenvault::http::{serve_with, HttpConfig, RateLimit};
/// # async fn run() -> std::io::Result<()> {
/// let store = tokenvault::TokenStore::open("tokens.db").expect("store");
/// let cfg = HttpConfig::default().rate_limit(RateLimit { per_minute: 10, burst: 3 });
/// serve_with(store, "127.0.0.1:8080".parse().unwrap(), &cfg).await?;
/// # Ok(()) }
/// ```
pub async fn serve_with(store: TokenStore, addr: SocketAddr, cfg: &HttpConfig) -> io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(target: TARGET, addr = %listener.local_addr()?, "listening");
    serve_on(listener, app(store, cfg), cfg, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Serves `app` (any axum router: [`app`], or a host's router with
/// [`router`](super::router) merged in) on `listener` over HTTP/1.1 until
/// `shutdown` completes, then stops accepting and gives open requests
/// [`HttpConfig::shutdown_grace`] to finish. It returns only once every
/// connection is closed and has let go of `app` (and so of the store's
/// handles it holds): a [`TokenStore::close`](crate::TokenStore::close)
/// right after it is the last handle's, unless a store call cut short
/// is still finishing on a blocking thread (then
/// [`close_timeout`](crate::TokenStore::close_timeout) waits for it).
///
/// Each connection must send its first request head within
/// [`HttpConfig::first_request_timeout`] and every later one within
/// [`HttpConfig::header_read_timeout`] (idle keep-alive included), and keep
/// it within the head bound (else 431). An answer the client does not read
/// within [`HttpConfig::write_timeout`] closes the connection. At most
/// [`HttpConfig::connections_per_peer`] are served for one peer address (an
/// IPv4 address or an IPv6 /64); one more is answered `503 Service
/// Unavailable` with `Retry-After` and closed. At most
/// [`HttpConfig::max_connections`] are served at once: a new one takes the
/// place of the connection idle or stalled longest (one that never
/// presented an accepted token first), and is answered `503` only when
/// every connection is in the middle of a request. Refused connections are
/// logged as a count, at most once per ten seconds.
///
/// Runs until `shutdown` completes (it blocks nothing: the connections are
/// tasks of the caller's tokio runtime).
///
/// # Errors
/// The I/O error if the listener's address cannot be read. Failed accepts
/// and broken connections are logged and skipped.
///
/// ```
/// use tokenvault::http::{app, serve_on, HttpConfig};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let store = tokenvault::TokenStore::temporary().expect("store");
/// let cfg = HttpConfig::default();
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// // Stops at once here; a real server passes e.g. Ctrl-C.
/// serve_on(listener, app(store, &cfg), &cfg, async {}).await?;
/// # Ok(()) }
/// ```
pub async fn serve_on<F>(
    listener: TcpListener,
    app: Router,
    cfg: &HttpConfig,
    shutdown: F,
) -> io::Result<()>
where
    F: Future<Output = ()> + Send,
{
    let local = listener.local_addr()?;
    let slots = Slots::new(cfg.max_connections);
    let peers = Peers::new(cfg.connections_per_peer());
    let lingering = Arc::new(Semaphore::new(MAX_LINGERING));
    let mut refused = Refusals::new(local);
    let mut tick = tokio::time::interval(REFUSAL_LOG_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let head = cfg.head_bytes();
    let header_timeout = cfg.header_read_timeout;
    let first_deadline = cfg.first_head_deadline();
    let write_timeout = cfg.write_timeout_in_force();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            _ = tick.tick() => {
                refused.flush(false);
                continue;
            }
            a = listener.accept() => a,
        };
        while conns.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // E.g. out of file descriptors: back off instead of spinning.
                tracing::warn!(target: TARGET, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(peer_permit) = peers.enter(peer.ip()) else {
            refused.note(Refusal::Peer);
            turn_away(stream, BUSY_PEER, &lingering);
            continue;
        };
        let Some(slot) = slots.admit() else {
            drop(peer_permit);
            refused.note(Refusal::Full);
            turn_away(stream, BUSY_FULL, &lingering);
            continue;
        };
        let _ = stream.set_nodelay(true);
        bound_send_buffer(&stream);
        let seen = Arc::new(AtomicBool::new(false));
        let mark = seen.clone();
        let started = slot.shared.clone();
        let answered = slot.shared.clone();
        let svc = TowerToHyperService::new(
            app.clone()
                .map_request(move |mut req: Request<_>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    mark.store(true, Ordering::Relaxed);
                    started.busy.fetch_add(1, Ordering::AcqRel);
                    req
                })
                .map_response(move |res: Response| {
                    if res.extensions().get::<Credentialed>().is_some() {
                        answered.trusted.store(true, Ordering::Relaxed);
                    }
                    answered.busy.fetch_sub(1, Ordering::AcqRel);
                    answered.touch();
                    res
                }),
        );
        let io = Watched {
            io: stream,
            slot: slot.shared.clone(),
            write_timeout,
            stalled: None,
        };
        let mut stop = stop_rx.clone();
        conns.spawn(async move {
            let state = slot.shared.clone();
            let evicted = state.evict.notified();
            tokio::pin!(evicted);
            let _permits = (slot, peer_permit);
            #[cfg(feature = "metrics")]
            let _counted = super::metrics_route::OpenConnection::new();
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(head);
            let conn = builder.serve_connection(TokioIo::new(io), svc);
            tokio::pin!(conn);
            // A connection that has not sent one whole request head by then
            // is closed, whatever it is sending.
            let first = tokio::time::sleep(first_deadline);
            tokio::pin!(first);
            let mut waiting_first = true;
            let mut stopping = false;
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(target: TARGET, %peer, error = %e, "connection ended");
                        }
                        break;
                    }
                    _ = &mut evicted => {
                        tracing::debug!(target: TARGET, %peer, "connection closed: its slot went to a new connection");
                        break;
                    }
                    _ = &mut first, if waiting_first => {
                        waiting_first = false;
                        if !seen.load(Ordering::Relaxed) {
                            tracing::debug!(target: TARGET, %peer, "connection closed: no request head in time");
                            break;
                        }
                    }
                    _ = stop.changed(), if !stopping => {
                        stopping = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        });
    }
    drop(listener);
    refused.flush(true);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(cfg.shutdown_grace, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(target: TARGET, open = conns.len(), "shutdown grace over; closing open connections");
        conns.abort_all();
        // An aborted task lets go of its connection (and of the router's
        // handle of the store) only when the runtime next reaches it: wait
        // for that, so that a `close` right after this returns is the last
        // handle's.
        while conns.join_next().await.is_some() {}
    }
    drop(app);
    Ok(())
}

/// The send buffer asked for each connection (the kernel may double it).
/// Left to itself Linux grows it to 4 MiB for a client that does not read,
/// and the server would answer some 25,000 pipelined requests into it
/// before the write timeout even starts; the answers of this API are small,
/// so 32 KiB costs a client nothing.
const SEND_BUFFER: LibcInt = 32 * 1024;

#[cfg(unix)]
type LibcInt = libc::c_int;
#[cfg(not(unix))]
type LibcInt = i32;

/// Sets [`SEND_BUFFER`] on `stream` (best effort).
#[cfg(unix)]
#[allow(unsafe_code)]
fn bound_send_buffer(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = SEND_BUFFER;
    // SAFETY: a valid descriptor for the duration of the call, and an int
    // option passed with its own size.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(not(unix))]
fn bound_send_buffer(_: &TcpStream) {}

/// Seconds a turned-away client is asked to wait (also the `Retry-After` of
/// a 503 for a store that cannot answer for now).
pub(crate) const RETRY_AFTER_SECS: u64 = 1;

/// Turned-away connections given a moment to read their 503 before the
/// socket closes (the rest are closed at once).
const MAX_LINGERING: usize = 64;

/// How long a turned-away connection lingers, and how much of what it sends
/// is read and dropped meanwhile.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 16 * 1024;

/// The longest interval between two log lines about refused connections.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

const BUSY_FULL: &str = "the server is serving as many connections as it may; retry shortly";
const BUSY_PEER: &str = "too many connections from this address; retry shortly";

/// The whole `503` answer for a connection over a cap.
fn busy_response(message: &str) -> Vec<u8> {
    let body = serde_json::json!({"meta": {"status": 503, "error_message": message}}).to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: {RETRY_AFTER_SECS}\r\ncache-control: no-store\r\nconnection: close\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answers `503` without reading the request (the socket's buffer is empty
/// on a fresh connection, so the write does not wait), then closes the
/// connection, after a short linger if one is free so that the client reads
/// the answer rather than a reset.
fn turn_away(stream: TcpStream, message: &'static str, lingering: &Arc<Semaphore>) {
    thread_local! {
        static ANSWERS: (Vec<u8>, Vec<u8>) = (busy_response(BUSY_FULL), busy_response(BUSY_PEER));
    }
    ANSWERS.with(|(full, peer)| {
        let answer = if message == BUSY_FULL { full } else { peer };
        let _ = stream.try_write(answer);
    });
    let Ok(permit) = lingering.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let mut stream = stream;
        let _ = tokio::time::timeout(LINGER, async {
            let _ =
                std::future::poll_fn(|cx| std::pin::Pin::new(&mut stream).poll_shutdown(cx)).await;
            let mut buf = [0u8; 1024];
            let mut read = 0;
            while read < LINGER_BYTES {
                if stream.readable().await.is_err() {
                    break;
                }
                match stream.try_read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => read += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            }
        })
        .await;
    });
}

/// Which key a peer's connections count under: the IPv4 address, or the
/// /64 network of an IPv6 one (one host easily holds a whole /64).
fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Open connections per peer key.
#[derive(Clone)]
struct Peers {
    cap: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection counted for its peer until dropped.
struct PeerPermit {
    peers: Peers,
    key: IpAddr,
}

impl Peers {
    fn new(cap: usize) -> Self {
        Peers {
            cap,
            open: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn enter(&self, ip: IpAddr) -> Option<PeerPermit> {
        let key = peer_key(ip);
        let mut open = self.open.lock();
        let n = open.entry(key).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(PeerPermit {
            peers: self.clone(),
            key,
        })
    }
}

impl Drop for PeerPermit {
    fn drop(&mut self) {
        let mut open = self.peers.open.lock();
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Marks a response to a request that presented a bearer or refresh token
/// the route accepted: its connection is kept over anonymous ones when the
/// server is full.
#[derive(Clone, Copy)]
pub(crate) struct Credentialed;

/// Whether the answer `status` on a matched route shows that the request's
/// bearer or refresh token was accepted (the routes check it before
/// anything else, and answer 400 or 401 when it is missing or bad).
fn credential_accepted(status: StatusCode) -> bool {
    !matches!(
        status,
        StatusCode::BAD_REQUEST
            | StatusCode::UNAUTHORIZED
            | StatusCode::REQUEST_TIMEOUT
            | StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    ) && !status.is_server_error()
}

/// What the server knows of one open connection, for choosing which one
/// to close when a new one arrives at [`HttpConfig::max_connections`].
struct SlotState {
    /// When (milliseconds from [`Slots::base`]) the connection last moved a
    /// byte or finished an answer: for an idle or stalled connection, how
    /// long it has been so.
    last: AtomicU64,
    /// Requests being handled (not closable meanwhile).
    busy: AtomicU32,
    /// Whether a request on it presented an accepted token.
    trusted: AtomicBool,
    /// Told to close when its slot goes to a new connection.
    evict: Notify,
    base: Instant,
}

impl SlotState {
    fn touch(&self) {
        self.last.store(millis_since(self.base), Ordering::Relaxed);
    }
}

fn millis_since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The connections being served, at most `cap`.
#[derive(Clone)]
struct Slots {
    cap: usize,
    base: Instant,
    open: Arc<Mutex<SlotTable>>,
}

#[derive(Default)]
struct SlotTable {
    next: u64,
    by_id: HashMap<u64, Arc<SlotState>>,
}

/// A connection's place, given back when it is dropped.
struct Slot {
    slots: Slots,
    id: u64,
    shared: Arc<SlotState>,
}

impl Slots {
    fn new(cap: usize) -> Self {
        Slots {
            cap: cap.max(1),
            base: Instant::now(),
            open: Arc::new(Mutex::new(SlotTable::default())),
        }
    }

    /// A place for a new connection: a free one, or else the place of the
    /// connection idle or stalled longest (one that never presented an
    /// accepted token first), which is told to close. `None` when every
    /// connection is handling a request.
    fn admit(&self) -> Option<Slot> {
        let mut t = self.open.lock();
        if t.by_id.len() >= self.cap {
            let victim = t
                .by_id
                .iter()
                .filter(|(_, s)| s.busy.load(Ordering::Acquire) == 0)
                .min_by_key(|(_, s)| {
                    (
                        s.trusted.load(Ordering::Relaxed),
                        s.last.load(Ordering::Relaxed),
                    )
                })
                .map(|(id, _)| *id)?;
            if let Some(s) = t.by_id.remove(&victim) {
                s.evict.notify_one();
            }
        }
        t.next += 1;
        let id = t.next;
        let shared = Arc::new(SlotState {
            last: AtomicU64::new(millis_since(self.base)),
            busy: AtomicU32::new(0),
            trusted: AtomicBool::new(false),
            evict: Notify::new(),
            base: self.base,
        });
        t.by_id.insert(id, shared.clone());
        Some(Slot {
            slots: self.clone(),
            id,
            shared,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.open.lock().by_id.remove(&self.id);
    }
}

/// A connection's socket, watched: reads and writes mark it active, and a
/// write that cannot hand over its bytes within the write timeout (the
/// client reads no answer) fails, which closes the connection.
struct Watched {
    io: TcpStream,
    slot: Arc<SlotState>,
    write_timeout: Duration,
    /// Running since a write first found the socket full.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Watched {
    fn wrote(
        &mut self,
        cx: &mut Context<'_>,
        wanted: usize,
        r: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match r {
            Poll::Pending => {
                let t = self.write_timeout;
                let timer = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(t)));
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client read no answer within the write timeout",
                    )));
                }
                Poll::Pending
            }
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.slot.touch();
                }
                // Only a write taken whole ends the stall: a client that
                // reads a byte now and then does not restart the clock.
                if n >= wanted {
                    self.stalled = None;
                }
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.slot.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.wrote(cx, buf.len(), r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let wanted = bufs.iter().map(|b| b.len()).sum();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.wrote(cx, wanted, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[derive(Clone, Copy)]
enum Refusal {
    Full,
    Peer,
}

/// Refused connections, logged as counts: the first of a quiet spell at
/// once, the rest at most once per [`REFUSAL_LOG_EVERY`].
struct Refusals {
    addr: SocketAddr,
    full: u64,
    peer: u64,
    since: Instant,
    last_line: Option<Instant>,
}

impl Refusals {
    fn new(addr: SocketAddr) -> Self {
        Refusals {
            addr,
            full: 0,
            peer: 0,
            since: Instant::now(),
            last_line: None,
        }
    }

    fn note(&mut self, why: Refusal) {
        if self.full + self.peer == 0 {
            self.since = Instant::now();
        }
        #[cfg(feature = "metrics")]
        super::metrics_route::connection_refused(match why {
            Refusal::Full => "full",
            Refusal::Peer => "peer",
        });
        match why {
            Refusal::Full => self.full += 1,
            Refusal::Peer => self.peer += 1,
        }
        let quiet = self
            .last_line
            .is_none_or(|t| t.elapsed() >= REFUSAL_LOG_EVERY);
        if quiet {
            self.flush(true);
        }
    }

    /// Logs the refusals counted since the last line, if any, when `now` or
    /// when the last line is old enough.
    fn flush(&mut self, now: bool) {
        let total = self.full + self.peer;
        if total == 0 {
            return;
        }
        if !now
            && self
                .last_line
                .is_some_and(|t| t.elapsed() < REFUSAL_LOG_EVERY)
        {
            return;
        }
        let secs = self.since.elapsed().as_secs();
        tracing::warn!(
            target: TARGET,
            addr = %self.addr,
            refused = total,
            server_full = self.full,
            peer_over_cap = self.peer,
            "{total} connection{} refused in the last {secs}s (503, server full or too many from one address)",
            if total == 1 { "" } else { "s" },
        );
        self.full = 0;
        self.peer = 0;
        self.last_line = Some(Instant::now());
        self.since = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_count_per_ipv4_address_and_ipv6_network() {
        let v4: IpAddr = "10.0.0.7".parse().unwrap();
        assert_eq!(peer_key(v4), v4);
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        assert_eq!(peer_key(mapped), v4);
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(peer_key(a), peer_key(b));
        assert_ne!(peer_key(a), peer_key(c));
    }

    #[test]
    fn every_address_of_an_ipv6_56_is_keyed_by_its_64() {
        let base: Ipv6Addr = "2001:db8:ab:cd00::".parse().unwrap();
        let s = base.segments();
        let mut keys = std::collections::HashSet::new();
        for net in 0u16..256 {
            let key_of = |host: [u16; 4]| {
                peer_key(IpAddr::V6(Ipv6Addr::new(
                    s[0],
                    s[1],
                    s[2],
                    s[3] | net,
                    host[0],
                    host[1],
                    host[2],
                    host[3],
                )))
            };
            let key = key_of([0, 0, 0, 1]);
            // Any host of the /64 counts under the same key...
            for host in [[0, 0, 0, 2], [0xffff; 4], [0x1234, 0, 0xabcd, 7]] {
                assert_eq!(key_of(host), key, "/64 number {net}");
            }
            // ...which is the /64 itself.
            assert_eq!(
                key,
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3] | net, 0, 0, 0, 0))
            );
            keys.insert(key);
        }
        // A /56 holds 256 keys, one per /64.
        assert_eq!(keys.len(), 256);
    }

    #[test]
    fn at_the_cap_the_longest_idle_anonymous_slot_is_given_up() {
        let slots = Slots::new(3);
        let a = slots.admit().expect("free");
        let b = slots.admit().expect("free");
        let c = slots.admit().expect("free");
        // a: trusted and idle longest; b: anonymous, idle; c: busy.
        a.shared.trusted.store(true, Ordering::Relaxed);
        a.shared.last.store(0, Ordering::Relaxed);
        b.shared.last.store(5, Ordering::Relaxed);
        c.shared.last.store(1, Ordering::Relaxed);
        c.shared.busy.store(1, Ordering::Relaxed);
        let d = slots.admit().expect("b is closable");
        d.shared.busy.store(1, Ordering::Relaxed);
        assert!(!slots.open.lock().by_id.contains_key(&b.id));
        // b was told to close (the permit is stored for its waiter).
        let told = b.shared.evict.notified();
        tokio_test_ready(told);
        // Next goes the trusted one, not the busy one.
        let _e = slots.admit().expect("a is closable");
        assert!(!slots.open.lock().by_id.contains_key(&a.id));
        // Only busy ones are left: none can be closed.
        _e.shared.busy.store(1, Ordering::Relaxed);
        assert!(slots.admit().is_none());
        drop(c);
        assert!(
            slots.admit().is_some(),
            "a closed connection frees its slot"
        );
    }

    /// Polls `f` once and asserts it is ready.
    fn tokio_test_ready<F: Future>(f: F) {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        assert!(f.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn a_peer_permit_is_given_back_on_drop() {
        let peers = Peers::new(2);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let one = peers.enter(ip).expect("first");
        let two = peers.enter(ip).expect("second");
        assert!(peers.enter(ip).is_none());
        let three = peers
            .enter(other)
            .expect("another address has its own count");
        drop(one);
        let again = peers.enter(ip).expect("a permit came back");
        drop((two, three, again));
        assert!(
            peers.open.lock().is_empty(),
            "no entry outlives its connections"
        );
    }

    #[test]
    fn methods_are_logged_by_class() {
        assert_eq!(method_class(&Method::GET), "GET");
        assert_eq!(method_class(&Method::DELETE), "DELETE");
        let odd = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_class(&odd), "other");
        let long = Method::from_bytes("X".repeat(5000).as_bytes()).unwrap();
        assert_eq!(method_class(&long), "other");
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncated("abc", 5), "abc");
        assert_eq!(truncated("abcdef", 3), "abc");
        assert_eq!(truncated("aé", 2), "a");
        assert_eq!(truncated("", 0), "");
    }

    #[test]
    fn the_busy_answer_is_complete_http() {
        let a = String::from_utf8(busy_response(BUSY_PEER)).unwrap();
        let (head, body) = a.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(head.contains("\r\nretry-after: 1\r\n"));
        assert!(head.contains(&format!("\r\ncontent-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["meta"]["status"], 503);
        assert_eq!(v["meta"]["error_message"], BUSY_PEER);
    }
}
