//! `POST /oauth/token`: RFC 6749 §6, refreshing an access token.
//!
//! A public client (RFC 6749 §2.1): no client authentication; a `client_id`
//! parameter, or an `Authorization` header, is accepted and ignored. The
//! answer is §5.1's, the refusals §5.2's, both as JSON and never cached.
//! Under the holder's organization's `rotate_on_use`, the refresh rotates
//! (`TokenStore::oauth_refresh`): the answer gains `refresh_token`, and a
//! spent token presented again is `invalid_grant` (its family revoked).

use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, FromRequest, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::client::{client_of, peer_of};
use super::error::ApiError;
use super::routes::AppState;
use crate::token::SecretToken;
use crate::{ClientInfo, Error, TokenStore};

/// Longest refresh token text looked at (the longest prefix gives 90
/// characters).
const MAX_TOKEN_TEXT: usize = 256;

/// Longest `scope` parameter looked at.
const MAX_SCOPE_TEXT: usize = 1024;

/// The form of a token request. Any other parameter (`client_id`,
/// `client_secret`, …) is ignored; a repeated one is refused.
#[derive(Deserialize)]
struct TokenRequest {
    grant_type: Option<String>,
    refresh_token: Option<String>,
    scope: Option<String>,
}

/// A refusal of the token endpoint: RFC 6749 §5.2's JSON body
/// `{"error", "error_description"}`.
struct OAuthError {
    status: StatusCode,
    code: &'static str,
    description: String,
    retry_after: Option<u64>,
}

impl OAuthError {
    fn bad(code: &'static str, description: impl Into<String>) -> Self {
        OAuthError {
            status: StatusCode::BAD_REQUEST,
            code,
            description: description.into(),
            retry_after: None,
        }
    }

    fn invalid_request(description: impl Into<String>) -> Self {
        OAuthError::bad("invalid_request", description)
    }

    fn invalid_grant(description: impl Into<String>) -> Self {
        OAuthError::bad("invalid_grant", description)
    }

    fn invalid_scope(description: impl Into<String>) -> Self {
        OAuthError::bad("invalid_scope", description)
    }
}

impl From<Error> for OAuthError {
    fn from(e: Error) -> Self {
        match e {
            // The grant itself is bad: a string that is no refresh token, an
            // unknown one, a wrong secret, revoked (a cutoff or the holder's
            // membership gone included) or expired. The store's text names
            // no secret.
            Error::Malformed(_)
            | Error::InvalidToken
            | Error::Revoked
            | Error::Expired
            | Error::Disabled => OAuthError::invalid_grant(e.to_string()),
            // Everything else keeps the status the other routes give it
            // (503 with Retry-After for a stale replica, 429 for a store
            // limit, 500 logged without details for a failure).
            other => OAuthError::from(ApiError::from(other)),
        }
    }
}

impl From<ApiError> for OAuthError {
    fn from(a: ApiError) -> Self {
        let status = a.status();
        let code = match status {
            StatusCode::SERVICE_UNAVAILABLE => "temporarily_unavailable",
            StatusCode::TOO_MANY_REQUESTS => "slow_down",
            StatusCode::PAYLOAD_TOO_LARGE => "invalid_request",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request",
        };
        OAuthError {
            status,
            code,
            description: a.message().to_string(),
            retry_after: a.retry_after(),
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.code, "error_description": self.description });
        let mut res = no_store((self.status, Json(body)).into_response());
        if let Some(s) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        res
    }
}

/// RFC 6749 §5.1: `Cache-Control: no-store` and `Pragma: no-cache` on every
/// answer of the token endpoint.
fn no_store(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    res
}

/// `POST /oauth/token` with `grant_type=refresh_token&refresh_token=…` and
/// an optional `scope`.
pub(crate) async fn token(State(app): State<Arc<AppState>>, req: Request) -> Response {
    match refresh(app, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn refresh(app: Arc<AppState>, req: Request) -> Result<Response, OAuthError> {
    let client = client_of(req.headers(), peer_of(req.extensions()));
    let form: Result<Form<TokenRequest>, FormRejection> = Form::from_request(req, &()).await;
    let Form(form) = form.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            OAuthError::from(ApiError::new(r.status(), r.body_text()))
        } else {
            OAuthError::invalid_request(
                "expected an application/x-www-form-urlencoded body with `grant_type` and \
                 `refresh_token`, each at most once",
            )
        }
    })?;
    match form.grant_type.as_deref() {
        None | Some("") => return Err(OAuthError::invalid_request("missing `grant_type`")),
        Some("refresh_token") => {}
        Some(_) => {
            return Err(OAuthError::bad(
                "unsupported_grant_type",
                "only `grant_type=refresh_token` is supported",
            ))
        }
    }
    let token = match form.refresh_token {
        Some(t) if !t.is_empty() => t,
        _ => return Err(OAuthError::invalid_request("missing `refresh_token`")),
    };
    if token.len() > MAX_TOKEN_TEXT {
        return Err(Error::Malformed("wrong length").into());
    }
    let requested = match form.scope {
        None => None,
        Some(s) if s.len() > MAX_SCOPE_TEXT => {
            return Err(OAuthError::invalid_scope(
                "the `scope` parameter is too long",
            ))
        }
        Some(s) => {
            let scopes: Vec<String> = s
                .split(' ')
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect();
            if scopes.is_empty() {
                return Err(OAuthError::invalid_scope("`scope` names no scope"));
            }
            Some(scopes)
        }
    };
    let token = SecretToken::from_str_unchecked(&token);
    let (grant, scopes) =
        tokio::task::spawn_blocking(move || grant(&app, &token, requested, &client))
            .await
            .map_err(|e| {
                tracing::error!(target: "tokenvault::http", error = %e, "store task failed");
                OAuthError::from(ApiError::from(Error::Io("store task failed".into())))
            })??;
    let access = &grant.access;
    let mut body = json!({
        "access_token": access.access_token.expose(),
        "token_type": access.token_type,
        "expires_in": access.expires_at.saturating_sub(access.issued_at),
        "scope": scopes.join(" "),
    });
    // Rotated on use (the organization's policy): the new refresh token,
    // RFC 6749 §6; the one presented is spent.
    if let Some(new) = &grant.refresh_token {
        body["refresh_token"] = json!(new.expose());
    }
    Ok(no_store(Json(body).into_response()))
}

/// Checks the refresh token and the requested scopes, takes one from the
/// token's rate-limit bucket, then refreshes (rotating the refresh token
/// when its organization rotates on use). Blocks on the store.
fn grant(
    app: &AppState,
    token: &SecretToken,
    requested: Option<Vec<String>>,
    client: &ClientInfo,
) -> Result<(crate::OAuthGrant, Vec<String>), OAuthError> {
    // On tokio's blocking pool: the store's synchronous face.
    let store = app.store.sync();
    let info = match store.verify_refresh(token.expose()) {
        // Perhaps a token spent by a rotation on use, presented again
        // after its leeway: the refresh itself tells (and then revokes its
        // family, answering `Revoked`).
        Err(Error::Expired) => {
            return Err(
                match store.oauth_refresh_from(token.expose(), &[] as &[&str], client) {
                    Err(e) => e.into(),
                    Ok(_) => Error::Expired.into(),
                },
            )
        }
        other => other?,
    };
    let granted = effective_scopes(store, &info)?;
    let asked = match requested {
        None => None,
        Some(requested) => {
            if let Some(extra) = requested.iter().find(|s| !granted.contains(s)) {
                return Err(OAuthError::invalid_scope(format!(
                    "`{}` is not among the refresh token's scopes",
                    shown(extra)
                )));
            }
            let mut asked = requested;
            asked.sort();
            asked.dedup();
            Some(asked)
        }
    };
    if let Some(l) = &app.limiter {
        l.take(&info.id).map_err(ApiError::rate_limited)?;
    }
    // A subset narrows the access token (RFC 6749 §3.3): it is stored with
    // it and what verification grants; the whole set is a plain exchange.
    let narrowed: &[String] = match &asked {
        Some(asked) if asked.len() < granted.len() => asked,
        _ => &[],
    };
    let grant = store
        .oauth_refresh_from(token.expose(), narrowed, client)
        .map_err(|e| match e {
            // The holder's role changed since the check above.
            Error::InsufficientScope(s) => OAuthError::invalid_scope(format!(
                "`{}` is not among the refresh token's scopes",
                shown(&s)
            )),
            e => OAuthError::from(e),
        })?;
    Ok((grant, asked.unwrap_or(granted)))
}

/// The refresh token's scopes cut to its holder's current role, sorted: what
/// an access token made from it grants.
fn effective_scopes(store: &TokenStore, info: &crate::TokenInfo) -> Result<Vec<String>, Error> {
    let role = store
        .member_role(&info.org, &info.user)
        .ok_or(Error::Revoked)?;
    let mut scopes: Vec<String> = info
        .scopes
        .iter()
        .filter(|s| store.policy().allows(role, s))
        .cloned()
        .collect();
    scopes.sort();
    Ok(scopes)
}

/// A requested scope as echoed in a description: printable ASCII only, cut
/// short.
fn shown(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}
