//! The HTTP front (cargo feature `http`): Squadcast's token endpoints ready to
//! mount in an axum router, a tower layer that guards a host's own routes,
//! and a small server.
//!
//! # Endpoints of [`router`]
//!
//! | route | auth | answer |
//! |---|---|---|
//! | `GET /oauth/access-token` | header `X-Refresh-Token` | 200 `{"data": {"access_token", "expires_at", "issued_at", "refresh_token", "type": "Bearer"}}` |
//! | `GET /v3/refresh-token` | Bearer, scope `read` | 200 `{"data": [{"id", "organization_id", "user_id", "token", "last_refresh", "last_used_ip", "last_used_agent", "rate_limit", "deleted"}]}`: the org's for the Owner whose token also grants `user-write`, else the caller's own |
//! | `GET /v3/refresh-token?after=ID&limit=N` | Bearer, scope `read` | the same list a page at a time: the tokens after `after` (an id of the list), at most `limit`; with `limit`, `"next"` beside `"data"` (the next page's cursor, or null) |
//! | `GET /v3/refresh-token/{id}` | Bearer, scope `read` | 200 `{"data": {…, "label"}}` for the token's holder or the Owner; 403 another member; 404 unknown or another organization's |
//! | `PATCH /v3/refresh-token/{id}` `{"label": "…" or null}` | Bearer, scope `read` | 200 `{"data": {…, "label"}}` with the new label (holder or Owner; audited); 422 a bad label or body |
//! | `POST /v3/refresh-token` `{"user_id": …}` | Bearer, scope `user-write` | 201 `{"data": {…}}`, `token` holding the secret this once |
//! | `DELETE /v3/refresh-token/{id}` | Bearer, scope `user-write` | 204; revokes the token and its access tokens; 404 for an unknown id or another organization's, alike |
//! | `POST /oauth/revoke` (RFC 7009) | Bearer of the same org | 200, even for an unknown token |
//! | `POST /oauth/introspect` (RFC 7662) | Bearer of the same org | 200 `{"active": false}` or `{"active": true, "scope", "sub", "exp", "iat", "token_type"}` |
//! | `POST /oauth/token` (RFC 6749 §6) | form `grant_type=refresh_token&refresh_token=…`, optional `scope`; no client authentication | 200 `{"access_token", "token_type": "Bearer", "expires_in", "scope"}`, plus `"refresh_token"` (the new one) when the organization rotates on use; 400 `{"error", "error_description"}` |
//! | `GET /openapi.json` | none; only with [`HttpConfig::openapi`] | 200 the OpenAPI 3.1 document of these routes (`docs/openapi.json`) |
//! | `PATCH /v3/members/{user}` `{"role": …}` | Bearer, scope `user-write`; the Owner | 200 `{"data": {"organization_id", "user_id", "role"}}`; 409 to or from `owner` |
//! | `DELETE /v3/members/{user}` | Bearer, scope `user-write`; the Owner | 200 `{"data": {"organization_id", "user_id", "revoked"}}`; 409 for the Owner |
//! | `POST /v3/members/{user}/revoke-all`, optional `{"before": T}` | Bearer, scope `user-write`; the Owner, or the member for their own | 200 `{"data": {"organization_id", "user_id", "revoked"}}` |
//! | `POST /v3/org/revoke-all`, optional `{"before": T}` | Bearer, scope `user-write`; the Owner | 200 `{"data": {"organization_id", "revoked"}}` |
//! | `GET /healthz`, `GET /readyz` | none; see [`HttpConfig::health`] | 200 or 503, one line of text |
//!
//! The member routes act as [`TokenStore::set_role`],
//! [`TokenStore::remove_member`] and [`TokenStore::revoke_all`] do, on the
//! authority of the bearer's holder: the Owner (an Admin's `user-write` is
//! not enough), audited in their name; a user who is not a member of their
//! organization, another organization's member included, is 404 `no such
//! member`, exactly as nobody.
//!
//! Times in `expires_at`/`issued_at`/`exp`/`iat` are Unix seconds;
//! `last_refresh` is RFC 3339 (`0001-01-01T00:00:00Z` when never exchanged).
//! `last_used_ip` and `last_used_agent` name the client of that last
//! exchange (through `GET /oauth/access-token` or `POST /oauth/token`): the
//! connection's peer address as [`serve_on`] sees it (no `X-Forwarded-For`
//! or `Forwarded` header is believed) and its `User-Agent`, at most 256
//! bytes, without control characters, dropped if it carries a token; each
//! null when unknown.
//! In lists, `token` is a masked hint, `tvr_****` and the last four hex
//! digits of the public id: the store never keeps the secret, and the hint
//! is derived from nothing secret. `deleted` is true once revoked;
//! `rate_limit` is the exchanges a minute the server allows the token.
//! `POST` also takes optional `label`, `scopes` and `expires_in` (seconds).
//!
//! Refusals use Squadcast's envelope `{"meta": {"status", "error_message"}}`:
//! 400 missing or garbled header, 401 malformed / unknown / revoked /
//! expired token (with an RFC 6750 `WWW-Authenticate` challenge), 403 the
//! policy table or a missing scope, 404 unknown id, 409 conflict, 413 body
//! too large, 422 bad body, 429 rate limit (with `Retry-After`) or a
//! store limit ([`Error::Limit`](crate::Error::Limit), without), 431 header
//! too large, 408 request too slow, 503 (with `Retry-After`) for a
//! connection over [`serve_on`]'s caps or a store that cannot answer for
//! now ([`Error::Unavailable`](crate::Error::Unavailable): a shared store's
//! stale replica), 500 any other store failure. Responses carrying tokens are
//! `Cache-Control: no-store`. Another organization's token or id is
//! answered exactly as an unknown one, on every route.
//!
//! The management calls act as the principal of the bearer token: the store
//! reads that member's current role and applies DESIGN.md's policy table,
//! exactly as [`TokenStore::generate`], [`TokenStore::assign`],
//! [`TokenStore::list_own`], [`TokenStore::list_org`] and
//! [`TokenStore::revoke`] do. `/oauth/revoke` revokes an access token alone,
//! or a refresh token with every access token derived from it, on the
//! authority of whoever presents it ([`TokenStore::revoke_refresh`]); a token
//! of another organization is treated as unknown (200, nothing changes;
//! `{"active": false}` for introspection).
//!
//! # Limits
//! Request bodies, each header, and the request head (request line
//! included) are bounded; a declared body over the bound gets 413 before
//! authentication, and otherwise the bearer is checked before any body is
//! read. A request must complete within a timeout; a new connection must
//! send its first request head within a short deadline, and every later
//! head within another; an answer left unread past a write timeout closes
//! its connection. [`serve_on`] serves a bounded number of connections per
//! peer address, and a bounded number in all, making room for a newcomer by
//! closing the connection idle or stalled longest ([`HttpConfig`]). Exchanges are
//! rate limited per refresh token ([`RateLimit`]); only exchanges whose
//! token verified are counted, so the public id of a token is not enough to
//! exhaust its bucket.
//!
//! # For hosts
//! [`Server`] takes the store and one [`HttpConfig`] and serves these
//! routes beside a host's own under the same limits. A host shapes the
//! refusals of [`BearerLayer`] and [`Authorized`] with an [`OnRejection`]
//! hook. Handlers served by [`serve_on`] (and so by [`Server`]) may take
//! `axum::extract::ConnectInfo<SocketAddr>`.
//!
//! # Logging
//! One `tracing` event per request at INFO, target `tokenvault::http`:
//! method (a standard one by name, any other as `other`), route template
//! (never the raw path or query), status, `latency` (milliseconds, a float)
//! and `peer` (the client's address and port, `-` when the router is served
//! without [`serve_on`]). No token, header or body is ever logged. Refused
//! connections are a WARN line with counts, at most one per ten seconds.
//!
//! # Metrics and TLS
//! With the `metrics` feature the front counts requests by route template
//! and status (`tokenvault_http_requests_total`, and their time in
//! `tokenvault_http_request_seconds`), connections open and refused, and
//! [`metrics_router`] answers `GET /metrics` for a listener of its own. With
//! the `tls` feature [`serve_tls_on`] serves HTTPS with a [`TlsFiles`]
//! certificate that [`TlsFiles::reload`] (or SIGHUP through
//! [`reload_on_sighup`]) swaps for new connections.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! let store = tokenvault::TokenStore::open("tokens.db").expect("store");
//! tokenvault::http::serve(store, "127.0.0.1:8080".parse().unwrap()).await
//! # }
//! ```

mod auth;
mod client;
mod error;
mod health;
mod member_routes;
#[cfg(feature = "metrics")]
mod metrics_route;
mod oauth;
mod openapi;
mod ratelimit;
mod reject;
mod routes;
mod server;
#[cfg(feature = "tls")]
mod tls;
mod token_routes;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, patch, post};
use axum::Router;

pub use auth::{require_bearer, require_scope, Authorized, Bearer, BearerLayer};
pub use error::ApiError;
#[cfg(feature = "metrics")]
pub use metrics_route::{metrics_router, record_store_gauges, Render};
pub use ratelimit::RateLimit;
pub use reject::{OnRejection, Rejection};
pub use server::{serve, serve_on, serve_with, Server};
#[cfg(all(feature = "tls", unix))]
pub use tls::reload_on_sighup;
#[cfg(feature = "tls")]
pub use tls::{serve_tls_on, TlsFiles};

use crate::{AsyncTokenStore, TokenStore};

/// Settings of the HTTP front. Every one has a default; see each method.
///
/// ```
/// use std::time::Duration;
/// use tokenvault::http::{HttpConfig, RateLimit};
/// let cfg = HttpConfig::default()
///     .rate_limit(RateLimit { per_minute: 30, burst: 5 })
///     .max_body_bytes(8 * 1024)
///     .request_timeout(Duration::from_secs(10));
/// assert_eq!(cfg.rate_limit_settings(), Some(RateLimit { per_minute: 30, burst: 5 }));
/// ```
#[derive(Debug, Clone)]
pub struct HttpConfig {
    rate_limit: Option<RateLimit>,
    max_body_bytes: usize,
    max_header_bytes: usize,
    request_timeout: Duration,
    header_read_timeout: Duration,
    first_request_timeout: Duration,
    write_timeout: Duration,
    max_connections: usize,
    max_connections_per_peer: Option<usize>,
    shutdown_grace: Duration,
    openapi: bool,
    health: Option<bool>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            rate_limit: Some(RateLimit::default()),
            max_body_bytes: 16 * 1024,
            max_header_bytes: 8 * 1024,
            request_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            first_request_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(20),
            max_connections: 1024,
            max_connections_per_peer: None,
            shutdown_grace: Duration::from_secs(10),
            openapi: false,
            health: None,
        }
    }
}

impl HttpConfig {
    /// The per-refresh-token limit on exchanges (default 60 a minute, bursts
    /// of 10; zeros are raised to one).
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// No rate limit on exchanges (`rate_limit` then shows 0 in lists).
    pub fn no_rate_limit(mut self) -> Self {
        self.rate_limit = None;
        self
    }

    /// The rate limit in force, if any.
    pub fn rate_limit_settings(&self) -> Option<RateLimit> {
        self.rate_limit.map(|l| RateLimit {
            per_minute: l.per_minute.max(1),
            burst: l.burst.max(1),
        })
    }

    /// Largest request body in bytes (default 16 KiB, at least 64); larger
    /// ones get 413, at once and before authentication when the request
    /// declares its `Content-Length`.
    pub fn max_body_bytes(mut self, n: usize) -> Self {
        self.max_body_bytes = n.max(64);
        self
    }

    /// Largest single header value in bytes (default 8 KiB, at least 256);
    /// a larger one gets 431. The whole request head (request line and every
    /// header) may be four times this, and at least 8 KiB, when served by
    /// [`serve_on`].
    pub fn max_header_bytes(mut self, n: usize) -> Self {
        self.max_header_bytes = n.max(256);
        self
    }

    /// How long one request may take, body included (default 30 s, at least
    /// 1 ms); a slower one gets 408.
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d.max(Duration::from_millis(1));
        self
    }

    /// How long a connection may take to send a request head, idle
    /// keep-alive time included (default 10 s, at least 1 ms); then
    /// [`serve_on`] closes it. The first head of a connection has the
    /// shorter [`first_request_timeout`](Self::first_request_timeout).
    pub fn header_read_timeout(mut self, d: Duration) -> Self {
        self.header_read_timeout = d.max(Duration::from_millis(1));
        self
    }

    /// How long a new connection may take to send its first complete
    /// request head (default 5 s, at least 1 ms, and never more than
    /// [`header_read_timeout`](Self::header_read_timeout)); then
    /// [`serve_on`] closes it. Later heads on a kept-alive connection have
    /// the header-read timeout.
    pub fn first_request_timeout(mut self, d: Duration) -> Self {
        self.first_request_timeout = d.max(Duration::from_millis(1));
        self
    }

    /// How long an answer may wait for the client to read it (default
    /// 20 s, at least 1 ms, and never more than the
    /// [`request_timeout`](Self::request_timeout)): when [`serve_on`]
    /// cannot hand the bytes of an answer to the socket for that long, the
    /// client has stopped reading and the connection is closed.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokenvault::http::HttpConfig;
    /// let cfg = HttpConfig::default().write_timeout(Duration::from_secs(60));
    /// assert_eq!(cfg.write_timeout_in_force(), Duration::from_secs(30));
    /// ```
    pub fn write_timeout(mut self, d: Duration) -> Self {
        self.write_timeout = d.max(Duration::from_millis(1));
        self
    }

    /// The write timeout in force (see [`write_timeout`](Self::write_timeout)).
    pub fn write_timeout_in_force(&self) -> Duration {
        self.write_timeout.min(self.request_timeout)
    }

    /// Connections [`serve_on`] serves at once (default 1024, at least 1).
    /// When a new connection arrives and all are taken, the one that has
    /// been idle between requests, or stalled with its answer unread, the
    /// longest is closed to make room, preferring connections that have
    /// not presented an accepted bearer or refresh token; only when every
    /// connection is in the middle of a request is the new one answered
    /// `503 Service Unavailable` with `Retry-After` and closed.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Connections [`serve_on`] serves at once for one peer address (an
    /// IPv4 address, or an IPv6 /64 network); one more is answered `503`
    /// with `Retry-After` and closed. Default: an eighth of
    /// [`max_connections`](Self::max_connections) (128 of 1024), at least
    /// 1 and at most `max_connections`. Behind a reverse proxy every
    /// connection comes from the proxy's address: raise it to
    /// `max_connections` there.
    ///
    /// ```
    /// use tokenvault::http::HttpConfig;
    /// assert_eq!(HttpConfig::default().connections_per_peer(), 128);
    /// assert_eq!(HttpConfig::default().max_connections(64).connections_per_peer(), 8);
    /// let cfg = HttpConfig::default().max_connections(64).max_connections_per_peer(100);
    /// assert_eq!(cfg.connections_per_peer(), 64);
    /// ```
    pub fn max_connections_per_peer(mut self, n: usize) -> Self {
        self.max_connections_per_peer = Some(n.max(1));
        self
    }

    /// The per-peer connection cap in force (see
    /// [`max_connections_per_peer`](Self::max_connections_per_peer)).
    pub fn connections_per_peer(&self) -> usize {
        self.max_connections_per_peer
            .unwrap_or(self.max_connections / 8)
            .clamp(1, self.max_connections)
    }

    /// How long [`serve_on`] lets open requests finish after the shutdown
    /// signal (default 10 s).
    pub fn shutdown_grace(mut self, d: Duration) -> Self {
        self.shutdown_grace = d;
        self
    }

    /// Whether the routers also answer `GET /openapi.json` with the OpenAPI
    /// 3.1 document of every route (the text of `docs/openapi.json`, built
    /// into the crate). Off by default: a public service may prefer not to
    /// describe itself.
    ///
    /// ```
    /// use tokenvault::http::HttpConfig;
    /// assert!(!HttpConfig::default().openapi_enabled());
    /// assert!(HttpConfig::default().openapi(true).openapi_enabled());
    /// ```
    pub fn openapi(mut self, on: bool) -> Self {
        self.openapi = on;
        self
    }

    /// Whether `GET /openapi.json` is served (see [`openapi`](Self::openapi)).
    pub fn openapi_enabled(&self) -> bool {
        self.openapi
    }

    /// Whether `GET /healthz` and `GET /readyz` are served. By default they
    /// are by [`Server`], [`serve`] and [`serve_with`] (what `tokenvault
    /// serve` runs), and not by [`router`], [`router_with`] and [`app`],
    /// which a host merges into a router that may have health routes of its
    /// own; `health(true)` adds them there too, `health(false)` leaves them
    /// out everywhere.
    ///
    /// `/healthz` answers `200 ok` while the process answers at all;
    /// `/readyz` answers `200 ready` when the store can make a write
    /// durable now (one [`TokenStore::flush`], on a blocking thread, within
    /// 5 s) and, on a shared (PostgreSQL) store, this replica is within its
    /// staleness bound; otherwise `503 not ready: <reason>` with
    /// `Retry-After`. Each is one line of plain text, `Cache-Control:
    /// no-store`; neither is rate limited, and their requests are logged at
    /// DEBUG rather than INFO.
    ///
    /// ```
    /// use tokenvault::http::HttpConfig;
    /// assert_eq!(HttpConfig::default().health_enabled(), None);
    /// assert_eq!(HttpConfig::default().health(false).health_enabled(), Some(false));
    /// ```
    pub fn health(mut self, on: bool) -> Self {
        self.health = Some(on);
        self
    }

    /// Whether the health endpoints were turned on or off; `None` for the
    /// default of each entry point (see [`health`](Self::health)).
    pub fn health_enabled(&self) -> Option<bool> {
        self.health
    }

    /// The first head's deadline: never longer than any head's.
    pub(crate) fn first_head_deadline(&self) -> Duration {
        self.first_request_timeout.min(self.header_read_timeout)
    }

    pub(crate) fn head_bytes(&self) -> usize {
        self.max_header_bytes.saturating_mul(4).max(8 * 1024)
    }
}

/// The endpoints with default settings ([`HttpConfig::default`]), to mount in
/// a host's router (`Router::merge`). See the [module documentation](self)
/// for the routes and their shapes.
///
/// ```
/// let store = tokenvault::TokenStore::temporary()?;
/// let app: axum::Router = axum::Router::new()
///     .route("/health", axum::routing::get(|| async { "ok" }))
///     .merge(tokenvault::http::router(store));
/// # drop(app);
/// # Ok::<(), tokenvault::Error>(())
/// ```
pub fn router(store: TokenStore) -> Router {
    router_with(store, &HttpConfig::default())
}

/// The endpoints with the given settings. It sets no fallback, so it merges
/// into a router that has one; [`app`] adds Squadcast-shaped 404s.
///
/// ```
/// use tokenvault::http::{router_with, HttpConfig, RateLimit};
/// let store = tokenvault::TokenStore::temporary()?;
/// let cfg = HttpConfig::default().rate_limit(RateLimit { per_minute: 6, burst: 2 });
/// let app: axum::Router = router_with(store, &cfg);
/// # drop(app);
/// # Ok::<(), tokenvault::Error>(())
/// ```
pub fn router_with(store: TokenStore, cfg: &HttpConfig) -> Router {
    server::guarded(routes(store, cfg), cfg)
}

/// [`router_with`] plus a Squadcast-shaped 404 for every other path and 405
/// for a wrong method: what [`serve`] serves.
///
/// ```
/// use tokenvault::http::{app, HttpConfig};
/// let store = tokenvault::TokenStore::temporary()?;
/// let app: axum::Router = app(store, &HttpConfig::default());
/// # drop(app);
/// # Ok::<(), tokenvault::Error>(())
/// ```
pub fn app(store: TokenStore, cfg: &HttpConfig) -> Router {
    app_composed(store, cfg, false)
}

/// [`app`], with the health endpoints unless `cfg` says otherwise when
/// `health_default`.
pub(crate) fn app_composed(store: TokenStore, cfg: &HttpConfig, health_default: bool) -> Router {
    let health = cfg.health.unwrap_or(health_default);
    let async_store = AsyncTokenStore::from(store.clone());
    let r = routes(store, cfg);
    let r = if health {
        r.merge(health::health_routes(async_store))
    } else {
        r
    };
    let r = r
        .fallback(server::not_found)
        .method_not_allowed_fallback(server::method_not_allowed);
    server::guarded(r, cfg)
}

/// The routes of [`router_with`] (`tests/openapi.rs` reads this function:
/// every route registered here is in `docs/openapi.json`).
fn routes(store: TokenStore, cfg: &HttpConfig) -> Router {
    let state = Arc::new(routes::AppState {
        store: store.into(),
        limiter: cfg.rate_limit.map(ratelimit::RateLimiter::new),
    });
    let r = Router::new()
        // axum answers HEAD with the GET handler unless told otherwise, and
        // this GET changes state (an exchange): HEAD is refused.
        .route(
            "/oauth/access-token",
            get(routes::access_token).head(server::method_not_allowed),
        )
        .route(
            "/v3/refresh-token",
            get(token_routes::list).post(routes::create),
        )
        .route(
            "/v3/refresh-token/{id}",
            delete(routes::delete)
                .get(token_routes::show)
                .patch(token_routes::label),
        )
        .route("/v3/refresh-token/{id}/rotate", post(token_routes::rotate))
        .route("/v3/refresh-token/{id}/claim", post(token_routes::claim))
        .route(
            "/v3/refresh-token/{id}/disable",
            post(token_routes::disable),
        )
        .route("/v3/refresh-token/{id}/enable", post(token_routes::enable))
        .route("/oauth/revoke", post(routes::revoke))
        .route("/oauth/introspect", post(routes::introspect))
        .route("/oauth/token", post(oauth::token))
        .route(
            "/v3/members/{user}",
            patch(member_routes::set_role).delete(member_routes::remove),
        )
        .route(
            "/v3/members/{user}/revoke-all",
            post(member_routes::revoke_member),
        )
        .route("/v3/org/revoke-all", post(member_routes::revoke_org));
    let r = if cfg.openapi {
        r.route("/openapi.json", get(openapi::document))
    } else {
        r
    };
    r.with_state(state)
        .layer(DefaultBodyLimit::max(cfg.max_body_bytes))
}
