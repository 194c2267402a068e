//! [`Server`]: one entry point that takes the store and one [`HttpConfig`]
//! once, composes tokenvault's routes, the health endpoints and the host's
//! own router, and serves them all under the same limits.

use std::future::Future;
use std::io;

use axum::Router;
use tokio::net::TcpListener;

use super::{serve_on, shutdown_signal, TARGET};
use crate::http::{app_composed, HttpConfig};
use crate::TokenStore;

/// tokenvault's HTTP front and a host's own routes, served together: the
/// recommended way to run the HTTP front inside a host service.
///
/// [`Server::new`] takes the store and the one [`HttpConfig`]; the host adds
/// its routes with [`merge`](Self::merge) (guarded by
/// [`BearerLayer`](super::super::BearerLayer) or the
/// [`Authorized`](super::super::Authorized) extractor as it likes), then
/// [`serve`](Self::serve) or [`serve_until`](Self::serve_until) a listener.
/// What the server gives every route, the host's included:
///
/// - the request limits of [`serve_on`]: the request head (32 KiB by
///   default) and each header (8 KiB), declared and streamed bodies
///   ([`HttpConfig::max_body_bytes`]; a host route that needs larger bodies
///   sets its own `axum::extract::DefaultBodyLimit`), the request, head and
///   write timeouts, the connection caps, and one log line per request;
/// - `axum::extract::ConnectInfo<SocketAddr>`, the peer's address;
/// - `GET /healthz` and `GET /readyz` (unless
///   [`HttpConfig::health`] is off), and `GET /openapi.json` when
///   [`HttpConfig::openapi`] is on;
/// - Squadcast's 404 and 405 envelopes for paths and methods nobody
///   answers. The host's router must therefore not set a fallback of its
///   own (axum refuses to merge two); a host that wants its own should
///   compose [`router_with`](super::super::router_with) into its router and
///   pass it to [`serve_on`], which gives the same limits.
///
/// ```
/// use axum::{extract::ConnectInfo, routing::get, Router};
/// use std::net::SocketAddr;
/// use tokenvault::http::{require_scope, Authorized, HttpConfig, Server};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = tokenvault::TokenStore::temporary()?;
/// let mine: Router = Router::new()
///     .route(
///         "/incidents",
///         get(|Authorized(p): Authorized, ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
///             format!("{} from {peer}", p.user)
///         }),
///     )
///     .route_layer(require_scope(&store, "read"));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// Server::new(store, HttpConfig::default())
///     .merge(mine)
///     // Stops at once here; `serve(listener)` runs until Ctrl-C or SIGTERM.
///     .serve_until(listener, async {})
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Server {
    store: TokenStore,
    cfg: HttpConfig,
    host: Router,
}

impl Server {
    /// tokenvault's routes for `store`, with `cfg` for them, for the
    /// health endpoints and for the server. Does not block.
    pub fn new(store: TokenStore, cfg: HttpConfig) -> Self {
        Server {
            store,
            cfg,
            host: Router::new(),
        }
    }

    /// Adds the host's routes (a router without a fallback; see
    /// [`Server`]). May be called more than once. Does not block.
    ///
    /// # Panics
    /// As `axum::Router::merge`: when a route of `host` overlaps one
    /// already added (tokenvault's included, e.g. `/healthz` while
    /// [`HttpConfig::health`] is on), or when `host` has a fallback.
    pub fn merge(mut self, host: Router) -> Self {
        self.host = self.host.merge(host);
        self
    }

    /// The composed router, as [`serve`](Self::serve) serves it but
    /// without the connection-level limits (for a test through
    /// `tower::ServiceExt::oneshot`, or a host with a server of its own).
    ///
    /// # Panics
    /// As [`merge`](Self::merge), when the host's routes overlap
    /// tokenvault's.
    pub fn into_router(self) -> Router {
        let Server { store, cfg, host } = self;
        host.merge(app_composed(store, &cfg, true))
    }

    /// Serves on `listener` until Ctrl-C or SIGTERM, then lets open
    /// requests finish (see [`serve_on`]). Runs as long as the server does
    /// (it blocks no thread: connections are tasks of the caller's tokio
    /// runtime), and returns once every connection has let go of the store.
    ///
    /// # Errors
    /// The I/O error if the listener's address cannot be read.
    ///
    /// # Panics
    /// As [`into_router`](Self::into_router).
    ///
    /// ```no_run
    /// use tokenvault::http::{HttpConfig, Server};
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = tokenvault::TokenStore::open("tokens.db")?;
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    /// Server::new(store.clone(), HttpConfig::default()).serve(listener).await?;
    /// let report = store.close()?;
    /// assert!(report.last_handle);
    /// # Ok(()) }
    /// ```
    pub async fn serve(self, listener: TcpListener) -> io::Result<()> {
        self.serve_until(listener, shutdown_signal()).await
    }

    /// [`serve`](Self::serve) until `shutdown` completes.
    ///
    /// # Errors
    /// The I/O error if the listener's address cannot be read.
    ///
    /// # Panics
    /// As [`into_router`](Self::into_router).
    ///
    /// ```
    /// use tokenvault::http::{HttpConfig, Server};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let store = tokenvault::TokenStore::temporary().expect("store");
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// drop(stop); // a real host sends on it when it shuts down
    /// Server::new(store, HttpConfig::default())
    ///     .serve_until(listener, async { let _ = stopped.await; })
    ///     .await
    /// # }
    /// ```
    pub async fn serve_until<F>(self, listener: TcpListener, shutdown: F) -> io::Result<()>
    where
        F: Future<Output = ()> + Send,
    {
        let cfg = self.cfg.clone();
        let app = self.into_router();
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(target: TARGET, %addr, "listening");
        }
        serve_on(listener, app, &cfg, shutdown).await
    }
}
