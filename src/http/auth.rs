//! Bearer verification for host routes: the [`Authorized`] extractor and the
//! [`BearerLayer`] that requires a verified access token, and optionally
//! scopes, on a route or a whole router (RFC 6750).

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Request};
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};

use tokio::sync::Semaphore;

use super::error::ApiError;
use super::reject::{OnRejection, Rejection};
use crate::token::SecretToken;
use crate::{Principal, TokenStore};

/// Longest `Authorization` value looked at; tokens are far shorter.
const MAX_AUTHORIZATION: usize = 1024;

/// The `Bearer` token of a request, or the refusal RFC 6750 prescribes.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Result<&str, Rejection> {
    let missing = |m: &str| Rejection::front(ApiError::no_credentials(m), true);
    let bad = |e: ApiError| Rejection::front(e, false);
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(missing(
            "missing Authorization header (Authorization: Bearer <access token>)",
        ));
    };
    if values.next().is_some() {
        return Err(bad(ApiError::bad_request(
            "more than one Authorization header",
        )));
    }
    if value.len() > MAX_AUTHORIZATION {
        return Err(bad(ApiError::invalid_token("the bearer token is too long")));
    }
    let value = value.to_str().map_err(|_| {
        bad(ApiError::bad_request(
            "the Authorization header is not visible ASCII",
        ))
    })?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(missing(
            "the Authorization header must use the Bearer scheme",
        ));
    }
    let token = token.trim_matches(' ');
    if token.is_empty() {
        return Err(bad(ApiError::bad_request("empty bearer token")));
    }
    Ok(token)
}

/// How many bearer verifications that must read a shared store's database
/// (a token this replica does not hold yet) run at once, in this process,
/// off the async workers. Each holds one of tokio's blocking threads (and
/// then a pooled database connection) for one round trip.
pub(crate) const READ_THROUGHS: usize = 32;

/// How long a request that needs a read-through waits (without blocking a
/// worker) for one of the [`READ_THROUGHS`] places before it is answered 503
/// with `Retry-After`.
pub(crate) const READ_THROUGH_WAIT: Duration = Duration::from_secs(2);

static READ_THROUGH_SLOTS: Semaphore = Semaphore::const_new(READ_THROUGHS);

/// Verifies the request's bearer token and, if given, requires every scope of
/// `scopes` among its effective scopes.
///
/// Never blocks an async worker. On an embedded store, and on a shared
/// store for a token the replica holds, it answers inline from memory
/// ([`TokenStore::try_verify`]: no disk, no database). On a shared store, a
/// token the replica does not hold yet is read through on tokio's blocking
/// pool ([`TokenStore::verify`] in `spawn_blocking`), at most
/// [`READ_THROUGHS`] at once in the process; the request then waits for one
/// database round trip, plus up to [`READ_THROUGH_WAIT`] for a place, past
/// which it is answered 503 with `Retry-After`.
pub(crate) async fn authenticate(
    store: &TokenStore,
    headers: &HeaderMap,
    scopes: &[String],
) -> Result<Principal, ApiError> {
    authenticate_or_reject(store, headers, scopes)
        .await
        .map_err(Rejection::into_default)
}

/// [`authenticate`] with the refusal as a [`Rejection`], for a host's hook.
async fn authenticate_or_reject(
    store: &TokenStore,
    headers: &HeaderMap,
    scopes: &[String],
) -> Result<Principal, Rejection> {
    let token = bearer_token(headers)?;
    let p = match store.try_verify(token).map_err(Rejection::store)? {
        Some(p) => p,
        None => verify_off_worker(store, token).await?,
    };
    require_scopes(p, scopes)
}

/// [`authenticate`]'s answer from memory alone: `Ok(None)` when the token
/// must be read through first (a shared store's miss).
fn authenticate_now(
    store: &TokenStore,
    headers: &HeaderMap,
    scopes: &[String],
) -> Result<Option<Principal>, Rejection> {
    let token = bearer_token(headers)?;
    match store.try_verify(token).map_err(Rejection::store)? {
        Some(p) => require_scopes(p, scopes).map(Some),
        None => Ok(None),
    }
}

fn require_scopes(p: Principal, scopes: &[String]) -> Result<Principal, Rejection> {
    if let Some(missing) = scopes.iter().find(|s| !p.scopes.contains(s)) {
        return Err(Rejection::store(crate::Error::InsufficientScope(
            missing.clone(),
        )));
    }
    Ok(p)
}

/// [`TokenStore::verify`] on tokio's blocking pool, within the
/// read-through bound.
#[cold]
async fn verify_off_worker(store: &TokenStore, token: &str) -> Result<Principal, Rejection> {
    let permit = match tokio::time::timeout(READ_THROUGH_WAIT, READ_THROUGH_SLOTS.acquire()).await {
        Ok(Ok(permit)) => permit,
        _ => {
            tracing::warn!(
                target: "tokenvault::http",
                limit = READ_THROUGHS,
                "bearer read-throughs at their limit; answering 503"
            );
            return Err(Rejection::front(ApiError::unavailable(), false));
        }
    };
    let store = store.clone();
    let token = SecretToken::from_str_unchecked(token);
    let r = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        store.verify(token.expose())
    })
    .await;
    match r {
        Ok(r) => r.map_err(Rejection::store),
        Err(e) => {
            tracing::error!(target: "tokenvault::http", error = %e, "bearer verification task failed");
            Err(Rejection::front(ApiError::internal(), false))
        }
    }
}

/// Verifies the bearer of a request for the layer or the extractor: inline
/// when memory answers, else as [`authenticate`] does.
async fn authenticate_owned(
    store: TokenStore,
    headers: HeaderMap,
    scopes: Arc<[String]>,
) -> Result<Principal, Rejection> {
    authenticate_or_reject(&store, &headers, &scopes).await
}

/// The verified principal of a request: who its `Authorization: Bearer`
/// access token speaks for.
///
/// Take it as a handler argument behind a [`BearerLayer`] (which verified the
/// token and put the principal in the request), or on a router that carries
/// the store as an [`axum::Extension`], in which case the extractor verifies
/// the token itself. Otherwise it answers 500, a wiring mistake. It refuses
/// as RFC 6750 says: 401 with `WWW-Authenticate: Bearer
/// error="invalid_token"` for a bad, revoked or expired token; 503 with
/// `Retry-After` when a shared store's replica cannot answer (stale, or its
/// database unreachable).
/// A host answers these its own way with an [`OnRejection`] hook among the
/// request's extensions (`axum::Extension(hook)`), or on the
/// [`BearerLayer`] in front.
///
/// When it waits: behind a [`BearerLayer`] never (the layer verified).
/// Verifying itself, it answers on the async worker from memory, without
/// blocking, on an embedded store and for any token a shared store's
/// replica holds ([`TokenStore::try_verify`]). Only for a token a shared
/// store's replica does not hold yet (minted on another replica) does the
/// request wait: for one database round trip, run on tokio's blocking pool
/// (never on the worker), at most 32 at once per process; past a 2 s wait
/// for one of those places it is answered 503.
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
            return match authenticate_or_reject(store, &parts.headers, &[]).await {
                Ok(p) => Ok(Authorized(p)),
                Err(r) => Err(match parts.extensions.get::<OnRejection>() {
                    Some(hook) => {
                        let default = r.default_refusal().clone();
                        default.replaced_by(hook.respond(r))
                    }
                    None => r.into_default(),
                }),
            };
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
/// missing, 400 `invalid_request` for a garbled header, 503 with
/// `Retry-After` when a shared store's replica cannot answer. A host
/// answers them its own way with [`on_rejection`](Self::on_rejection).
///
/// It never blocks an async worker. On an embedded store, and on a shared
/// store for a token the replica holds, it verifies inline from memory
/// ([`TokenStore::try_verify`]: no disk, no database, no wait). On a shared
/// (PostgreSQL) store, a token the replica does not hold yet (minted on
/// another replica) is read through on tokio's blocking pool
/// ([`TokenStore::verify`] in `spawn_blocking`): that request waits for one
/// database round trip, plus, when 32 such reads are already running in the
/// process, up to 2 s for a place, after which it is answered 503. A
/// replica's `read_through_per_second` budget applies as well (429 past it).
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
    hook: Option<OnRejection>,
}

impl std::fmt::Debug for BearerLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerLayer")
            .field("scopes", &self.scopes)
            .field("on_rejection", &self.hook.is_some())
            .finish_non_exhaustive()
    }
}

impl BearerLayer {
    /// Requires a live access token of `store`, with no particular scope.
    pub fn new(store: &TokenStore) -> Self {
        BearerLayer {
            store: store.clone(),
            scopes: Arc::from(Vec::new()),
            hook: None,
        }
    }

    /// Also requires `scope` (in addition to any scope required already).
    pub fn scope(self, scope: impl Into<String>) -> Self {
        let mut v: Vec<String> = self.scopes.to_vec();
        v.push(scope.into());
        BearerLayer {
            store: self.store,
            scopes: Arc::from(v),
            hook: self.hook,
        }
    }

    /// Answers refusals with the host's `hook` instead of Squadcast's
    /// envelope (see [`OnRejection`]): the hook is handed the store's
    /// [`Error`](crate::Error), or the missing / malformed header case, and
    /// what tokenvault would have answered. Without it (the default), the
    /// refusals are those described on [`BearerLayer`].
    ///
    /// ```
    /// use axum::http::StatusCode;
    /// use axum::response::IntoResponse;
    /// use tokenvault::http::{require_bearer, OnRejection};
    ///
    /// let store = tokenvault::TokenStore::temporary()?;
    /// let layer = require_bearer(&store).on_rejection(OnRejection::new(|r| {
    ///     if r.missing_credentials() {
    ///         (StatusCode::SEE_OTHER, [("location", "/login")]).into_response()
    ///     } else {
    ///         (r.status(), "not allowed").into_response()
    ///     }
    /// }));
    /// # drop(layer);
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn on_rejection(mut self, hook: OnRejection) -> Self {
        self.hook = Some(hook);
        self
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
        // The clone is the one that was made ready (tower's rule).
        let ready = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, ready);
        match authenticate_now(&self.layer.store, req.headers(), &self.layer.scopes) {
            Ok(Some(p)) => {
                req.extensions_mut().insert(Authorized(p));
                Box::pin(async move { ready.call(req).await })
            }
            // A shared store's replica must read the token first: off the
            // async worker, within the read-through bound.
            Ok(None) => {
                let store = self.layer.store.clone();
                let scopes = self.layer.scopes.clone();
                let headers = req.headers().clone();
                let hook = self.layer.hook.clone();
                Box::pin(async move {
                    match authenticate_owned(store, headers, scopes).await {
                        Ok(p) => {
                            req.extensions_mut().insert(Authorized(p));
                            ready.call(req).await
                        }
                        Err(r) => Ok(refuse(hook.as_ref(), r)),
                    }
                })
            }
            Err(r) => {
                let res = refuse(self.layer.hook.as_ref(), r);
                Box::pin(async move { Ok(res) })
            }
        }
    }
}

/// The answer to a refusal: the host's hook's, or the default.
fn refuse(hook: Option<&OnRejection>, r: Rejection) -> Response {
    match hook {
        Some(h) => h.respond(r),
        None => r.into_response(),
    }
}
