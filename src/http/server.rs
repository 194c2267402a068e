//! Per-request guard (header bounds, timeout, one log line) and the
//! connection loop (head size, header-read timeout, connection cap, graceful
//! shutdown).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::error::ApiError;
use super::{app, HttpConfig};
use crate::TokenStore;

const TARGET: &str = "tokenvault::http";

struct Limits {
    max_header_bytes: usize,
    head_bytes: usize,
    request_timeout: Duration,
}

/// Wraps `router` in the per-request guard.
pub(crate) fn guarded(router: Router, cfg: &HttpConfig) -> Router {
    let limits = Arc::new(Limits {
        max_header_bytes: cfg.max_header_bytes,
        head_bytes: cfg.head_bytes(),
        request_timeout: cfg.request_timeout,
    });
    router.layer(middleware::from_fn_with_state(limits, guard))
}

async fn guard(State(limits): State<Arc<Limits>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    // The route template only: a raw path or query could hold anything.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "-".to_string(), |m| m.as_str().to_string());
    let mut total = 0usize;
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
    } else {
        match tokio::time::timeout(limits.request_timeout, next.run(req)).await {
            Ok(res) => res,
            Err(_) => ApiError::new(StatusCode::REQUEST_TIMEOUT, "the request took too long")
                .into_response(),
        }
    };
    tracing::info!(
        target: TARGET,
        method = %method,
        route = %route,
        status = res.status().as_u16(),
        ms = start.elapsed().as_millis() as u64,
        "request"
    );
    res
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
/// [`HttpConfig::shutdown_grace`] to finish.
///
/// Each connection must send its request head within
/// [`HttpConfig::header_read_timeout`] (idle keep-alive included) and keep
/// it within the head bound (else 431); at most
/// [`HttpConfig::max_connections`] are served at once.
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
    listener.local_addr()?;
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let head = cfg.head_bytes();
    let header_timeout = cfg.header_read_timeout;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut shutdown => break,
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
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(target: TARGET, %peer, "connection refused: too many open connections");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let svc = TowerToHyperService::new(app.clone());
        let mut stop = stop_rx.clone();
        conns.spawn(async move {
            let _slot = slot;
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(head);
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            let mut stopping = false;
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(target: TARGET, %peer, error = %e, "connection ended");
                        }
                        break;
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
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(cfg.shutdown_grace, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(target: TARGET, open = conns.len(), "shutdown grace over; closing open connections");
        conns.abort_all();
    }
    Ok(())
}
