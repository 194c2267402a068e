//! Bearer verification for host routes: the [`Authorized`] extractor and the
//! [`BearerLayer`] that requires a verified access token, and optionally
//! scopes, on a route or a whole router (RFC 6750).

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Request};
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};

use super::error::ApiError;
use crate::{Principal, TokenStore};

/// Longest `Authorization` value looked at; tokens are far shorter.
const MAX_AUTHORIZATION: usize = 1024;

/// The `Bearer` token of a request, or the refusal RFC 6750 prescribes.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(ApiError::no_credentials(
            "missing Authorization header (Authorization: Bearer <access token>)",
        ));
    };
    if values.next().is_some() {
        return Err(ApiError::bad_request("more than one Authorization header"));
    }
    if value.len() > MAX_AUTHORIZATION {
        return Err(ApiError::invalid_token("the bearer token is too long"));
    }
    let value = value
        .to_str()
        .map_err(|_| ApiError::bad_request("the Authorization header is not visible ASCII"))?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::no_credentials(
            "the Authorization header must use the Bearer scheme",
        ));
    }
    let token = token.trim_matches(' ');
    if token.is_empty() {
        return Err(ApiError::bad_request("empty bearer token"));
    }
    Ok(token)
}

/// Verifies the request's bearer token and, if given, requires every scope of
/// `scopes` among its effective scopes. Memory only: no disk, no blocking.
pub(crate) fn authenticate(
    store: &TokenStore,
    headers: &HeaderMap,
    scopes: &[String],
) -> Result<Principal, ApiError> {
    let token = bearer_token(headers)?;
    let p = store.verify(token)?;
    if let Some(missing) = scopes.iter().find(|s| !p.scopes.contains(s)) {
        return Err(crate::Error::InsufficientScope(missing.clone()).into());
    }
    Ok(p)
}

/// The verified principal of a request: who its `Authorization: Bearer`
/// access token speaks for.
///
/// Take it as a handler argument behind a [`BearerLayer`] (which verified the
/// token and put the principal in the request), or on a router that carries
/// the store as an [`axum::Extension`], in which case the extractor verifies
/// the token itself. Otherwise it answers 500, a wiring mistake. It refuses
/// as RFC 6750 says: 401 with `WWW-Authenticate: Bearer
/// error="invalid_token"` for a bad, revoked or expired token.
///
/// ```
/// use axum::{routing::get, Extension, Router};
/// use tokenvault::http::Authorized;
///
/// async fn whoami(Authorized(p): Authorized) -> String {
///     format!("{} of {} ({})", p.user, p.org, p.role)
/// }
///
/// let store = tokenvault::TokenStore::temporary()?;
/// // Verified by the extractor, through the store in an extension:
/// let app: Router = Router::new()
///     .route("/whoami", get(whoami))
///     .layer(Extension(store.clone()));
/// // ...or by the layer, which also checks a scope:
/// let guarded: Router = Router::new()
///     .route("/whoami", get(whoami))
///     .layer(tokenvault::http::require_scope(&store, "read"));
/// # drop((app, guarded));
/// # Ok::<(), tokenvault::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Authorized(pub Principal);

impl Deref for Authorized {
    type Target = Principal;
    fn deref(&self) -> &Principal {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Authorized {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        if let Some(a) = parts.extensions.get::<Authorized>() {
            return Ok(a.clone());
        }
        if let Some(store) = parts.extensions.get::<TokenStore>() {
            return authenticate(store, &parts.headers, &[]).map(Authorized);
        }
        tracing::error!(
            target: "tokenvault::http",
            "Authorized used on a route without tokenvault's BearerLayer or Extension(TokenStore)"
        );
        Err(ApiError::internal())
    }
}

/// A tower layer that lets a request through only with a live access token
/// (`Authorization: Bearer …`) granting every required scope, and hands the
/// principal to the handler as [`Authorized`].
///
/// Refusals follow RFC 6750 with Squadcast's JSON envelope: 401 with
/// `WWW-Authenticate: Bearer realm="tokenvault"` when no token is given, 401
/// with `error="invalid_token"` for a malformed, unknown, revoked or expired
/// one, 403 with `error="insufficient_scope"` (and the scope) when a scope is
/// missing, 400 `invalid_request` for a garbled header. Verification reads
/// memory only.
///
/// Put it on one route (`MethodRouter::layer` or `Router::route_layer`) or on
/// a whole router (`Router::layer`). A scope the store's policy does not name
/// is never granted, so such a route refuses everyone.
///
/// ```
/// use axum::{routing::{get, post}, Router};
/// use tokenvault::http::{require_bearer, require_scope, Authorized};
///
/// let store = tokenvault::TokenStore::temporary()?;
/// let app: Router = Router::new()
///     .route(
///         "/incidents",
///         post(|Authorized(p): Authorized| async move { format!("filed by {}", p.user) })
///             .layer(require_scope(&store, "incident-write")),
///     )
///     .route("/profile", get(|a: Authorized| async move { a.user.to_string() }))
///     .route_layer(require_bearer(&store));
/// # drop(app);
/// # Ok::<(), tokenvault::Error>(())
/// ```
#[derive(Clone)]
pub struct BearerLayer {
    store: TokenStore,
    scopes: Arc<[String]>,
}

impl std::fmt::Debug for BearerLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerLayer")
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl BearerLayer {
    /// Requires a live access token of `store`, with no particular scope.
    pub fn new(store: &TokenStore) -> Self {
        BearerLayer {
            store: store.clone(),
            scopes: Arc::from(Vec::new()),
        }
    }

    /// Also requires `scope` (in addition to any scope required already).
    pub fn scope(self, scope: impl Into<String>) -> Self {
        let mut v: Vec<String> = self.scopes.to_vec();
        v.push(scope.into());
        BearerLayer {
            store: self.store,
            scopes: Arc::from(v),
        }
    }
}

/// A [`BearerLayer`] requiring a live access token of `store`.
pub fn require_bearer(store: &TokenStore) -> BearerLayer {
    BearerLayer::new(store)
}

/// A [`BearerLayer`] requiring a live access token of `store` that grants
/// `scope`.
pub fn require_scope(store: &TokenStore, scope: impl Into<String>) -> BearerLayer {
    BearerLayer::new(store).scope(scope)
}

impl<S> Layer<S> for BearerLayer {
    type Service = Bearer<S>;
    fn layer(&self, inner: S) -> Bearer<S> {
        Bearer {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service a [`BearerLayer`] wraps around a route.
#[derive(Clone)]
pub struct Bearer<S> {
    inner: S,
    layer: BearerLayer,
}

impl<S> std::fmt::Debug for Bearer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bearer")
            .field("layer", &self.layer)
            .finish_non_exhaustive()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, B> Service<Request<B>> for Bearer<S>
where
    S: Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        match authenticate(&self.layer.store, req.headers(), &self.layer.scopes) {
            Ok(p) => {
                req.extensions_mut().insert(Authorized(p));
                // The clone is the one that was made ready (tower's rule).
                let ready = self.inner.clone();
                let mut ready = std::mem::replace(&mut self.inner, ready);
                Box::pin(async move { ready.call(req).await })
            }
            Err(e) => Box::pin(async move { Ok(e.into_response()) }),
        }
    }
}
