//! The host's say over bearer refusals: a [`Rejection`] (why a request's
//! bearer was refused, and the answer tokenvault would give) and the
//! [`OnRejection`] hook that turns it into the host's own response, for the
//! [`BearerLayer`](super::BearerLayer) and the
//! [`Authorized`](super::Authorized) extractor.

use std::fmt;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;

use super::error::ApiError;
use crate::Error;

/// Why a request's bearer token was refused, handed to an
/// [`OnRejection`] hook.
///
/// It holds the store's [`Error`] when the store refused the token
/// ([`Error::Malformed`], [`Error::InvalidToken`], [`Error::Expired`],
/// [`Error::Revoked`], [`Error::InsufficientScope`] for a missing scope,
/// [`Error::Unavailable`] for a shared store's stale replica, ...), and none
/// when the request never got that far: no `Authorization` header, another
/// scheme than `Bearer`, a repeated, empty, overlong or garbled header, or a
/// shared store's read-throughs all busy. Either way,
/// [`default_refusal`](Self::default_refusal) is the answer tokenvault gives
/// without a hook (Squadcast's `{"meta": …}` envelope with the RFC 6750
/// challenge), and `into_response` gives that answer.
///
/// ```
/// use axum::http::StatusCode;
/// use tokenvault::http::Rejection;
///
/// fn status_for(r: &Rejection) -> StatusCode {
///     match r.error() {
///         Some(tokenvault::Error::Expired) => StatusCode::UNAUTHORIZED,
///         Some(_) => r.status(),
///         None if r.missing_credentials() => StatusCode::UNAUTHORIZED,
///         None => StatusCode::BAD_REQUEST,
///     }
/// }
/// # let _ = status_for;
/// ```
#[derive(Debug)]
pub struct Rejection {
    error: Option<Error>,
    default: Box<ApiError>,
    missing: bool,
}

impl Rejection {
    /// A refusal by the store.
    pub(crate) fn store(error: Error) -> Self {
        Rejection {
            default: Box::new(ApiError::of(&error)),
            error: Some(error),
            missing: false,
        }
    }

    /// A refusal before the store was asked (the header, or no place for a
    /// read-through). `missing` when the request carried no bearer token at
    /// all.
    pub(crate) fn front(default: ApiError, missing: bool) -> Self {
        Rejection {
            error: None,
            default: Box::new(default),
            missing,
        }
    }

    /// The store's refusal of the token, if the store was asked; `None`
    /// for a missing or unusable `Authorization` header (see
    /// [`missing_credentials`](Self::missing_credentials)) or no place for a
    /// shared store's read-through (503).
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }

    /// The store's refusal, taken.
    pub fn into_error(self) -> Option<Error> {
        self.error
    }

    /// Whether the request carried no bearer token at all: no
    /// `Authorization` header, or one of another scheme (RFC 6750 §3.1's
    /// case for a bare challenge).
    pub fn missing_credentials(&self) -> bool {
        self.missing
    }

    /// The answer tokenvault gives without a hook.
    pub fn default_refusal(&self) -> &ApiError {
        &self.default
    }

    /// The status of [`default_refusal`](Self::default_refusal): 400, 401,
    /// 403 (a missing scope), 429, 503 or 500.
    pub fn status(&self) -> StatusCode {
        self.default.status()
    }

    /// The default answer, taken (what [`IntoResponse`] sends).
    pub fn into_default(self) -> ApiError {
        *self.default
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        self.default.into_response()
    }
}

/// A host's hook for bearer refusals: it turns a [`Rejection`] into the
/// host's own response (its own error body, status or headers) in place of
/// Squadcast's envelope.
///
/// Give it to a [`BearerLayer`](super::BearerLayer) with
/// [`BearerLayer::on_rejection`](super::BearerLayer::on_rejection), and to
/// the [`Authorized`](super::Authorized) extractor (when it verifies by
/// itself) as a request extension, `axum::Extension(hook)`. The hook runs on
/// the async worker that handles the request: keep it quick and never
/// block in it. Without a hook, tokenvault answers
/// [`Rejection::default_refusal`].
///
/// ```
/// use axum::http::StatusCode;
/// use axum::response::IntoResponse;
/// use axum::{routing::get, Extension, Json, Router};
/// use tokenvault::http::{require_bearer, Authorized, OnRejection};
///
/// let hook = OnRejection::new(|r| {
///     let body = Json(serde_json::json!({"error": "unauthorized", "status": r.status().as_u16()}));
///     (r.status(), body).into_response()
/// });
/// let store = tokenvault::TokenStore::temporary()?;
/// let app: Router = Router::new()
///     .route("/me", get(|a: Authorized| async move { a.user.to_string() }))
///     .route_layer(require_bearer(&store).on_rejection(hook.clone()))
///     // ...and for routes where the extractor verifies by itself:
///     .layer(Extension(store.clone()))
///     .layer(Extension(hook));
/// # drop(app);
/// # Ok::<(), tokenvault::Error>(())
/// ```
#[derive(Clone)]
pub struct OnRejection(Arc<dyn Fn(Rejection) -> Response + Send + Sync>);

impl OnRejection {
    /// A hook calling `f` for every refusal.
    pub fn new<F>(f: F) -> Self
    where
        F: Fn(Rejection) -> Response + Send + Sync + 'static,
    {
        OnRejection(Arc::new(f))
    }

    /// The host's response for `rejection`.
    pub fn respond(&self, rejection: Rejection) -> Response {
        (self.0)(rejection)
    }
}

impl fmt::Debug for OnRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OnRejection(..)")
    }
}

/// A host's response carried by an [`ApiError`] in place of its own
/// answer: taken by the first `into_response`.
#[derive(Clone)]
pub(crate) struct Replacement(Arc<Mutex<Option<Response>>>);

impl Replacement {
    pub(crate) fn new(res: Response) -> Self {
        Replacement(Arc::new(Mutex::new(Some(res))))
    }

    pub(crate) fn take(&self) -> Option<Response> {
        self.0.lock().take()
    }
}

impl fmt::Debug for Replacement {
    // The host's response may hold anything: never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Replacement(..)")
    }
}
