//! The per-request guard every route [`guarded`] wraps passes through:
//! header and head bounds, a declared body over the cap refused before
//! authentication, the request timeout, and one log line per request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;

use super::caps::{credential_accepted, Credentialed};
use super::TARGET;
use crate::http::error::ApiError;
use crate::http::HttpConfig;

struct Limits {
    max_header_bytes: usize,
    head_bytes: usize,
    max_body_bytes: usize,
    request_timeout: Duration,
}

/// Marks a request that a guard has taken in charge, so that a guard
/// further in (a router's own, under [`serve_on`](super::serve_on)'s) lets
/// it through: each request is bounded, timed and logged once, by the
/// outermost guard.
#[derive(Clone, Copy)]
struct Guarded;

/// Marks a response the log line gives at DEBUG rather than INFO (the
/// health endpoints, which probes call every few seconds).
#[derive(Clone, Copy)]
pub(crate) struct Quiet;

/// Wraps every route of `router` (the host's too) in the guard and bounds
/// the bodies its extractors read to [`HttpConfig::max_body_bytes`] (a
/// route's own `DefaultBodyLimit` still wins): what
/// [`serve_on`](super::serve_on) serves.
pub(crate) fn serving(router: Router, cfg: &HttpConfig) -> Router {
    guarded(
        router.layer(axum::extract::DefaultBodyLimit::max(cfg.max_body_bytes)),
        cfg,
    )
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

async fn guard(State(limits): State<Arc<Limits>>, mut req: Request, next: Next) -> Response {
    if req.extensions().get::<Guarded>().is_some() {
        return next.run(req).await;
    }
    req.extensions_mut().insert(Guarded);
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
    let took = start.elapsed();
    #[cfg(feature = "metrics")]
    crate::http::metrics_route::request(&route, res.status(), took);
    if has_token && route != "-" && credential_accepted(res.status()) {
        res.extensions_mut().insert(Credentialed);
    }
    let status = res.status().as_u16();
    let latency = took.as_secs_f64() * 1e3;
    let peer = PeerText(peer);
    if res.extensions().get::<Quiet>().is_some() {
        tracing::debug!(target: TARGET, method, route = %route, status, latency, peer = %peer, "request");
    } else {
        tracing::info!(target: TARGET, method, route = %route, status, latency, peer = %peer, "request");
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
