//! Serving: the entry points ([`serve`], [`serve_with`], [`serve_on`]),
//! the per-request guard (`guard.rs`), the accept loop (`accept.rs`), the
//! connection caps (`caps.rs`), a connection's socket (`socket.rs`) and the
//! connections turned away over a cap (`refuse.rs`).

mod accept;
mod builder;
mod caps;
mod guard;
mod refuse;
mod socket;

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpListener;

#[cfg(feature = "tls")]
pub(crate) use accept::serve_conns;
pub use accept::serve_on;
pub use builder::Server;
pub(crate) use guard::{guarded, method_not_allowed, not_found, truncated, Quiet};
pub(crate) use refuse::RETRY_AFTER_SECS;

use super::{app_composed, HttpConfig};
use crate::TokenStore;

pub(crate) const TARGET: &str = "tokenvault::http";

/// Serves [`app`](crate::http::app) for `store` on `addr` with default settings until Ctrl-C
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
    serve_on(
        listener,
        app_composed(store, cfg, true),
        cfg,
        shutdown_signal(),
    )
    .await
}

pub(super) async fn shutdown_signal() {
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
