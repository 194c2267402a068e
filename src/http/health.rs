//! `GET /healthz` (the process answers) and `GET /readyz` (the store can
//! take writes and, on a shared store, this replica is fresh), for load
//! balancers and orchestrators. Each answers `200` or `503` with one line of
//! plain text; neither is rate limited, and their requests are logged at
//! DEBUG, not INFO.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::server::Quiet;
use crate::AsyncTokenStore;

/// How long `/readyz` waits for the store's durable sync before it answers
/// 503 (a disk that takes longer is not ready to serve writes).
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// The two routes, on their own state (the store's async face).
pub(crate) fn health_routes(store: AsyncTokenStore) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Arc::new(store))
}

fn line(status: StatusCode, text: String) -> Response {
    let mut res = (status, format!("{text}\n")).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res.extensions_mut().insert(Quiet);
    res
}

/// `GET /healthz`: 200 `ok` whenever the process answers at all.
async fn healthz() -> Response {
    line(StatusCode::OK, "ok".into())
}

/// `GET /readyz`: 200 `ready`, or 503 `not ready: <reason>`.
async fn readyz(State(store): State<Arc<AsyncTokenStore>>) -> Response {
    match readiness(&store).await {
        Ok(()) => line(StatusCode::OK, "ready".into()),
        Err(why) => {
            tracing::debug!(target: "tokenvault::http", reason = %why, "not ready");
            let mut res = line(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}"));
            res.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(super::server::RETRY_AFTER_SECS),
            );
            res
        }
    }
}

/// Why the store is not ready, in a few words that name no path, id or
/// token: a shared store's replica past its staleness bound, or a store
/// whose storage cannot make a write durable now (a failed disk, a full
/// one, a storage being opened again after a fault, a sync slower than
/// [`READY_TIMEOUT`]).
async fn readiness(store: &AsyncTokenStore) -> Result<(), String> {
    #[cfg(feature = "postgres")]
    if let Some(s) = store.sync_status() {
        if !s.fresh {
            return Err(format!(
                "this replica is stale (change log applied up to {}, {})",
                s.applied_seq,
                if s.connected {
                    "connected"
                } else {
                    "not connected to the database"
                }
            ));
        }
    }
    match tokio::time::timeout(READY_TIMEOUT, store.flush()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(match e.kind() {
            "unavailable" => "the store cannot answer for now (unavailable)".to_string(),
            "io" => "the store's storage cannot make writes durable (io)".to_string(),
            kind => format!("the store's durable sync failed ({kind})"),
        }),
        Err(_) => Err(format!(
            "the store's durable sync took longer than {} s",
            READY_TIMEOUT.as_secs()
        )),
    }
}
