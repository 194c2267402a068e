//! `GET /openapi.json`: the OpenAPI 3.1 document of the HTTP front, served
//! when [`HttpConfig::openapi`](super::HttpConfig::openapi) is on.
//!
//! The document is `docs/openapi.json`, built into the crate. The test
//! `tests/openapi.rs` keeps it and the routers in step: it fails on a route
//! the document lacks, a documented route the routers do not answer, or a
//! document that is not OpenAPI 3.1.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

/// The document, as committed.
pub(crate) const DOCUMENT: &str = include_str!("../../docs/openapi.json");

/// `GET /openapi.json`.
pub(crate) async fn document() -> Response {
    let mut res = DOCUMENT.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}
