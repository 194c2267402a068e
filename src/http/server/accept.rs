//! The accept loop of [`serve_on`]: admission under the connection caps,
//! one task per connection with its head deadlines, eviction and graceful
//! shutdown, and the drain that waits for every connection to let go of the
//! router.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::caps::{Credentialed, Peers, Slots};
use super::refuse::{
    turn_away, Refusal, Refusals, BUSY_FULL, BUSY_PEER, MAX_LINGERING, REFUSAL_LOG_EVERY,
};
use super::socket::{bound_send_buffer, Watched};
use super::TARGET;
use crate::http::HttpConfig;

/// Serves `app` (any axum router: [`app`](crate::http::app), or a host's router with
/// [`router`](crate::http::router) merged in) on `listener` over HTTP/1.1 until
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
    serve_conns(listener, app, cfg, None, shutdown).await
}

/// What a connection's bytes pass through: TLS (feature `tls`) or nothing.
#[cfg(feature = "tls")]
pub(crate) type Tls = Option<crate::http::TlsFiles>;
#[cfg(not(feature = "tls"))]
pub(crate) type Tls = Option<std::convert::Infallible>;

/// A connection's byte stream, plain or TLS.
trait ConnIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> ConnIo for T {}

/// [`serve_on`], with each connection's bytes through `tls` when given.
pub(crate) async fn serve_conns<F>(
    listener: TcpListener,
    app: Router,
    cfg: &HttpConfig,
    tls: Tls,
    shutdown: F,
) -> io::Result<()>
where
    F: Future<Output = ()> + Send,
{
    let local = listener.local_addr()?;
    // The request bounds, the timeout and the body cap on every route,
    // the host's included.
    let app = super::guard::serving(app, cfg);
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
        let tls = tls.clone();
        conns.spawn(async move {
            let state = slot.shared.clone();
            let evicted = state.evict.notified();
            tokio::pin!(evicted);
            let _permits = (slot, peer_permit);
            #[cfg(feature = "metrics")]
            let _counted = crate::http::metrics_route::OpenConnection::new();
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(head);
            // The TLS handshake has the first request's deadline too.
            let io: Box<dyn ConnIo> = match tls {
                None => Box::new(io),
                #[cfg(feature = "tls")]
                Some(files) => {
                    let acceptor = files.acceptor();
                    match tokio::time::timeout(first_deadline, acceptor.accept(io)).await {
                        Ok(Ok(s)) => Box::new(s),
                        Ok(Err(e)) => {
                            tracing::debug!(target: TARGET, %peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(target: TARGET, %peer, "connection closed: no TLS handshake in time");
                            return;
                        }
                    }
                }
                #[cfg(not(feature = "tls"))]
                Some(never) => match never {},
            };
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
