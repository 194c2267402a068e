//! Refusals: Squadcast's error envelope, RFC 6750 challenges, and the mapping
//! of [`crate::Error`] to status codes.

use std::fmt;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::Error;

/// The realm named in every `WWW-Authenticate` challenge.
pub(crate) const REALM: &str = "tokenvault";

/// A refusal of the HTTP front, answered as Squadcast does:
/// `{"meta": {"status": <code>, "error_message": <text>}}`.
///
/// A 401 carries an RFC 6750 challenge (`WWW-Authenticate: Bearer
/// realm="tokenvault", error="invalid_token"`), a 403 for a missing scope
/// `error="insufficient_scope"` with the scope, a 429 `Retry-After`. A store
/// that cannot answer for now ([`crate::Error::Unavailable`], a shared store's
/// stale replica) is a 503 with `Retry-After`; other store failures are a
/// 500. On the
/// RFC 7009 / RFC 7662 endpoints the body also carries RFC 6749's `error`
/// code. The text never holds a token.
///
/// It is the rejection of the [`Authorized`](super::Authorized) extractor and
/// what the [`BearerLayer`](super::BearerLayer) answers with (unless a host's
/// [`OnRejection`](super::OnRejection) hook answers instead: the extractor's
/// `ApiError` then carries the hook's response, which `into_response` sends,
/// while [`status`](Self::status) and [`message`](Self::message) still tell
/// the default); a host may use it in its own handlers too:
///
/// ```
/// use axum::response::IntoResponse;
/// use tokenvault::http::ApiError;
///
/// let refusal = ApiError::from(tokenvault::Error::Expired);
/// assert_eq!(refusal.status().as_u16(), 401);
/// let response = refusal.into_response();
/// assert!(response.headers()["www-authenticate"]
///     .to_str()?
///     .contains(r#"error="invalid_token""#));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// RFC 6749 / 6750 error code (`invalid_token`, `insufficient_scope`,
    /// `invalid_request`), if any.
    code: Option<&'static str>,
    /// The scope a 403 `insufficient_scope` asks for.
    scope: Option<String>,
    /// Whether a 401 carries a challenge at all (always) and whether the
    /// RFC 6749 `error` member goes into the body.
    rfc_body: bool,
    retry_after: Option<u64>,
    /// A host's answer in its place (an [`OnRejection`](super::OnRejection)
    /// hook's, for the [`Authorized`](super::Authorized) extractor).
    replaced: Option<super::reject::Replacement>,
}

impl ApiError {
    /// A refusal with this status and message, for a host's own handlers:
    /// answered in the same envelope, `{"meta": {"status", "error_message"}}`,
    /// with `Cache-Control: no-store`; a 401 also carries a bare RFC 6750
    /// challenge (`WWW-Authenticate: Bearer realm="tokenvault"`). Add an RFC
    /// 6749 / 6750 error code with [`with_code`](Self::with_code). To answer
    /// a store failure as tokenvault's own routes do, convert the
    /// [`crate::Error`] with `From` instead.
    ///
    /// ```
    /// use axum::http::StatusCode;
    /// use axum::response::IntoResponse;
    /// use tokenvault::http::ApiError;
    ///
    /// let refusal = ApiError::new(StatusCode::NOT_FOUND, "no such project");
    /// assert_eq!(refusal.status(), StatusCode::NOT_FOUND);
    /// assert_eq!(refusal.message(), "no such project");
    /// let response = refusal.into_response();
    /// assert_eq!(response.status(), 404);
    ///
    /// // A host's own 401, with RFC 6750's error code in the challenge:
    /// let res = ApiError::new(StatusCode::UNAUTHORIZED, "session expired")
    ///     .with_code("invalid_token")
    ///     .into_response();
    /// assert!(res.headers()["www-authenticate"]
    ///     .to_str()?
    ///     .contains(r#"error="invalid_token""#));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            code: None,
            scope: None,
            rfc_body: false,
            retry_after: None,
            replaced: None,
        }
    }

    /// 400 with RFC 6749's `invalid_request`.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        let mut e = ApiError::new(StatusCode::BAD_REQUEST, message);
        e.code = Some("invalid_request");
        e
    }

    /// 401 for a request without any bearer token: a bare challenge, no
    /// error code (RFC 6750 §3.1).
    pub(crate) fn no_credentials(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 401 `invalid_token`.
    pub(crate) fn invalid_token(message: impl Into<String>) -> Self {
        let mut e = ApiError::new(StatusCode::UNAUTHORIZED, message);
        e.code = Some("invalid_token");
        e
    }

    /// 429 with `Retry-After`.
    pub(crate) fn rate_limited(retry_after: u64) -> Self {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("rate limit exceeded for this refresh token; retry in {retry_after} s"),
        );
        e.retry_after = Some(retry_after);
        e
    }

    /// 503 with `Retry-After` (as for a connection over the server's caps),
    /// without details (they are logged, not sent): the store cannot answer
    /// now but may soon (a shared store's stale replica).
    pub(crate) fn unavailable() -> Self {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the service is temporarily unavailable; try again later",
        );
        e.retry_after = Some(super::server::RETRY_AFTER_SECS);
        e
    }

    /// 500 without details (they are logged, not sent).
    pub(crate) fn internal() -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }

    /// Also put RFC 6749's `error` member in the body (RFC 7009 / 7662
    /// endpoints).
    pub(crate) fn rfc(mut self) -> Self {
        self.rfc_body = true;
        self
    }

    /// Names the RFC 6749 / RFC 6750 error code (`invalid_token`,
    /// `invalid_request`, `insufficient_scope`, …) that a 401's or 403's
    /// `WWW-Authenticate` challenge carries. Codes are static text, so that a
    /// request's content never reaches a header.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// This refusal answered by `res` instead (a host's hook's answer).
    pub(crate) fn replaced_by(mut self, res: Response) -> Self {
        self.replaced = Some(super::reject::Replacement::new(res));
        self
    }

    /// The seconds of its `Retry-After` header, if it has one.
    pub(crate) fn retry_after(&self) -> Option<u64> {
        self.retry_after
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The human-readable text sent as `meta.error_message`.
    pub fn message(&self) -> &str {
        &self.message
    }

    fn challenge(&self) -> Option<String> {
        let wants =
            self.status == StatusCode::UNAUTHORIZED || self.code == Some("insufficient_scope");
        if !wants {
            return None;
        }
        let mut c = format!("Bearer realm=\"{REALM}\"");
        if let Some(code) = self.code {
            c.push_str(&format!(", error=\"{code}\""));
            c.push_str(&format!(
                ", error_description=\"{}\"",
                quotable(&self.message)
            ));
        }
        if let Some(s) = &self.scope {
            c.push_str(&format!(", scope=\"{}\"", quotable(s)));
        }
        Some(c)
    }
}

/// RFC 6750 allows only visible ASCII less `"` and `\` in these values.
fn quotable(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => '?',
        })
        .collect()
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::of(&e)
    }
}

impl ApiError {
    /// The refusal for a store error (what `From` gives), without taking it.
    pub(crate) fn of(e: &Error) -> Self {
        match e {
            Error::Malformed(_) | Error::InvalidToken | Error::Expired | Error::Revoked => {
                ApiError::invalid_token(e.to_string())
            }
            Error::InsufficientScope(scope) => {
                let mut a = ApiError::new(StatusCode::FORBIDDEN, e.to_string());
                a.code = Some("insufficient_scope");
                a.scope = Some(scope.clone());
                a
            }
            Error::Forbidden(_) => ApiError::new(StatusCode::FORBIDDEN, e.to_string()),
            Error::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
            Error::Conflict(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            Error::InvalidArgument(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            }
            Error::Limit(_) => ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string()),
            Error::Unavailable(_) => {
                let text = e.to_string();
                let error = super::server::truncated(&text, 256);
                tracing::warn!(target: "tokenvault::http", error, kind = e.kind(), "store unavailable");
                ApiError::unavailable()
            }
            other => {
                let text = other.to_string();
                let error = super::server::truncated(&text, 256);
                tracing::error!(target: "tokenvault::http", error, kind = other.kind(), "store failure");
                ApiError::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(res) = self.replaced.as_ref().and_then(|r| r.take()) {
            return res;
        }
        let mut body = json!({
            "meta": {"status": self.status.as_u16(), "error_message": self.message}
        });
        if self.rfc_body {
            let code = self.code.unwrap_or(match self.status {
                StatusCode::UNAUTHORIZED => "invalid_token",
                StatusCode::FORBIDDEN => "insufficient_scope",
                s if s.is_server_error() => "server_error",
                _ => "invalid_request",
            });
            body["error"] = json!(code);
            body["error_description"] = json!(self.message);
        }
        let mut res = (self.status, axum::Json(body)).into_response();
        let h = res.headers_mut();
        if let Some(c) = self.challenge() {
            if let Ok(v) = HeaderValue::from_str(&c) {
                h.insert(header::WWW_AUTHENTICATE, v);
            }
        }
        if let Some(s) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_is_429_without_retry_after() {
        let res = ApiError::from(Error::Limit("too many live tokens".into())).into_response();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(res.headers().get(header::RETRY_AFTER).is_none());
        assert!(res.headers().get(header::WWW_AUTHENTICATE).is_none());
        // The rate limit, by contrast, says when to come back.
        let res = ApiError::rate_limited(7).into_response();
        assert_eq!(res.headers()[header::RETRY_AFTER], "7");
    }

    #[test]
    fn unavailable_is_503_and_io_stays_500() {
        let e = Error::Unavailable("this replica's view of the shared token store is stale".into());
        let a = ApiError::from(e);
        assert_eq!(a.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            !a.message().contains("replica"),
            "details are logged, not sent"
        );
        let res = a.rfc().into_response();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[header::RETRY_AFTER], "1");
        assert!(res.headers().get(header::WWW_AUTHENTICATE).is_none());
        let a = ApiError::from(Error::Io("the storage failed".into()));
        assert_eq!(a.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
