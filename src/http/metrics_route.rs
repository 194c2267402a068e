//! `GET /metrics` for a listener of its own (cargo features `http` and
//! `metrics`), and the HTTP front's own metrics: requests by route template
//! and status, connections open and refused.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::TokenStore;

/// What renders the installed recorder's metrics as text (e.g.
/// `metrics_exporter_prometheus::PrometheusHandle::render`).
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// A router answering `GET /metrics` with what `render` returns, in the
/// Prometheus text format (`text/plain; version=0.0.4`), after setting the
/// store's gauges ([`record_store_gauges`]) on a blocking thread. Serve it
/// on a listener of its own, away from the public API (`tokenvault serve
/// --metrics-listen ADDR` does).
///
/// ```
/// use std::sync::Arc;
/// let store = tokenvault::TokenStore::temporary()?;
/// let app = tokenvault::http::metrics_router(store, Arc::new(|| String::new()));
/// # drop(app);
/// # Ok::<(), tokenvault::Error>(())
/// ```
pub fn metrics_router(store: TokenStore, render: Render) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state((store, render))
}

async fn scrape(State((store, render)): State<(TokenStore, Render)>) -> Response {
    let done = tokio::task::spawn_blocking(move || {
        // A store that cannot count now still has its counters to show.
        let _ = record_store_gauges(&store);
        render()
    })
    .await;
    match done {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "metrics unavailable\n").into_response(),
    }
}

/// Sets the gauges that describe the store as it stands: refresh tokens by
/// state (`tokenvault_tokens{state}`: `active`, `revoked`, `expired`),
/// access records, members and bytes on disk; on a replica of a shared
/// store (feature `postgres`) also its staleness, freshness, connection,
/// applied sequence number, and its reconnect, reload and read-through
/// counts. Call it before each scrape (the route of [`metrics_router`]
/// does).
///
/// **Blocks** as [`TokenStore::stats`]: a walk of memory and a size of the
/// store's files, milliseconds for a million tokens.
///
/// # Errors
/// What [`TokenStore::stats`] returns; the gauges are then left as they
/// were.
///
/// ```
/// let store = tokenvault::TokenStore::temporary()?;
/// tokenvault::http::record_store_gauges(&store)?;
/// # Ok::<(), tokenvault::Error>(())
/// ```
pub fn record_store_gauges(store: &TokenStore) -> crate::Result<()> {
    let s = store.stats()?;
    for (state, n) in [
        ("active", s.active),
        ("revoked", s.revoked),
        ("expired", s.expired),
    ] {
        metrics::gauge!("tokenvault_tokens", "state" => state).set(n as f64);
    }
    metrics::gauge!("tokenvault_access_tokens").set(s.access_tokens as f64);
    metrics::gauge!("tokenvault_members").set(s.members as f64);
    metrics::gauge!("tokenvault_disk_bytes").set(s.disk_bytes as f64);
    #[cfg(feature = "postgres")]
    if let Some(r) = store.sync_status() {
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        let stale = r.since_last_sync.map_or(f64::INFINITY, |d| d.as_secs_f64());
        metrics::gauge!("tokenvault_replica_staleness_seconds").set(stale);
        metrics::gauge!("tokenvault_replica_fresh").set(flag(r.fresh));
        metrics::gauge!("tokenvault_replica_connected").set(flag(r.connected));
        metrics::gauge!("tokenvault_replica_applied_seq").set(r.applied_seq as f64);
        metrics::counter!("tokenvault_replica_reconnects_total").absolute(r.reconnects);
        metrics::counter!("tokenvault_replica_reloads_total").absolute(r.reloads);
        metrics::counter!("tokenvault_replica_read_throughs_total").absolute(r.read_throughs);
    }
    Ok(())
}

/// Counts one answered request under its route template (`-` when no
/// route matched) and status, and times it.
pub(crate) fn request(route: &str, status: StatusCode, took: Duration) {
    let route = route.to_owned();
    metrics::counter!("tokenvault_http_requests_total",
        "route" => route.clone(), "status" => status.as_u16().to_string())
    .increment(1);
    metrics::histogram!("tokenvault_http_request_seconds", "route" => route)
        .record(took.as_secs_f64());
}

/// Counts a connection in `tokenvault_http_connections_open` while it
/// lives.
pub(crate) struct OpenConnection(metrics::Gauge);

impl OpenConnection {
    pub(crate) fn new() -> Self {
        let g = metrics::gauge!("tokenvault_http_connections_open");
        g.increment(1.0);
        OpenConnection(g)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// A connection was answered 503 and closed: `full` (at the cap, every
/// connection busy) or `peer` (too many from its address).
pub(crate) fn connection_refused(reason: &'static str) {
    metrics::counter!("tokenvault_http_connections_refused_total", "reason" => reason).increment(1);
}
