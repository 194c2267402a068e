//! The Squadcast-compatible endpoints and the RFC 7009 / RFC 7662 ones.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{FormRejection, PathRejection};
use axum::extract::{Form, FromRequest, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::auth::authenticate;
use super::client::{client_of, Peer};
use super::error::ApiError;
use super::ratelimit::RateLimiter;
use crate::token::{self, SecretToken, TokenKind};
use crate::{Actor, Error, GenerateOptions, Principal, Role, TokenId, TokenInfo, TokenState};
use crate::{AsyncTokenStore, TokenStore};

/// Longest token text looked at (the longest prefix gives 90 characters).
const MAX_TOKEN_TEXT: usize = 256;

/// Shared by every handler. The handlers reach the store through its
/// public async face, as a host's handlers would.
pub(crate) struct AppState {
    pub(crate) store: AsyncTokenStore,
    pub(crate) limiter: Option<RateLimiter>,
}

pub(crate) type Shared = State<Arc<AppState>>;

/// The scope that `POST` and `DELETE /v3/refresh-token` require, and that
/// the Owner's token needs to list the whole organization.
pub(crate) const USER_WRITE: &str = "user-write";

/// The scope that `GET /v3/refresh-token` requires.
pub(crate) const READ: &str = "read";

/// The whole body of `req`, read only once its bearer was accepted.
pub(super) async fn body_of(req: Request) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, &())
        .await
        .map_err(|r| ApiError::new(r.status(), r.body_text()))
}

pub(super) fn no_store(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    res
}

/// `GET /oauth/access-token` with `X-Refresh-Token`.
pub(crate) async fn access_token(
    State(app): Shared,
    Peer(peer): Peer,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let client = client_of(&headers, peer);
    let mut values = headers.get_all("x-refresh-token").iter();
    let value = values
        .next()
        .ok_or_else(|| ApiError::bad_request("missing X-Refresh-Token header"))?;
    if values.next().is_some() {
        return Err(ApiError::bad_request(
            "more than one X-Refresh-Token header",
        ));
    }
    if value.len() > MAX_TOKEN_TEXT {
        return Err(Error::Malformed("wrong length").into());
    }
    let text = value
        .to_str()
        .map_err(|_| ApiError::from(Error::Malformed("not base62")))?
        .trim();
    let refresh = SecretToken::from_str_unchecked(text);
    // One hop to a blocking thread: the token's check, the rate limit (only
    // a token that verified is counted), then the exchange.
    let app2 = app.clone();
    let grant = app
        .store
        .run(move |store| {
            // A token refused here counts as a refused exchange.
            let info = crate::observe::exchange_refused(store.verify_refresh(refresh.expose()))?;
            if let Some(l) = &app2.limiter {
                l.take(&info.id).map_err(ApiError::rate_limited)?;
            }
            Ok::<_, ApiError>(store.exchange_from::<&str>(refresh.expose(), None, &client)?)
        })
        .await?;
    let body = json!({"data": {
        "access_token": grant.access_token.expose(),
        "expires_at": grant.expires_at,
        "issued_at": grant.issued_at,
        "refresh_token": grant.refresh_token.expose(),
        "type": grant.token_type,
    }});
    Ok(no_store(Json(body).into_response()))
}

/// `GET /v3/refresh-token` (scope `read`): the caller's tokens, or the
/// org's for the Owner whose token also grants `user-write`.
pub(crate) async fn list(State(app): Shared, headers: HeaderMap) -> Result<Response, ApiError> {
    let p = authenticate(app.store.sync(), &headers, &[READ.to_string()]).await?;
    let actor = actor_of(&p);
    let owner = p.role == Role::Owner && p.scopes.contains(USER_WRITE);
    let infos = if owner {
        app.store.list_org(&actor).await?
    } else {
        app.store.list_own(&actor).await?
    };
    let rate = rate_of(&app);
    let prefix = app.store.prefix();
    let data: Vec<Value> = infos
        .iter()
        .map(|i| item(i, hint(prefix, &i.id), rate))
        .collect();
    Ok(no_store(Json(json!({ "data": data })).into_response()))
}

/// `POST /v3/refresh-token` with `{"user_id": …}` (scope `user-write`). The
/// bearer is checked before any of the body is read.
pub(crate) async fn create(State(app): Shared, req: Request) -> Result<Response, ApiError> {
    let p = authenticate(app.store.sync(), req.headers(), &[USER_WRITE.to_string()]).await?;
    let req = CreateRequest::parse(&body_of(req).await?)?;
    let actor = actor_of(&p);
    if req.pending {
        // No secret in the answer: the member claims it.
        let info = app
            .store
            .assign_pending(&actor, &req.user_id, req.opts)
            .await?;
        let data = item(&info, hint(app.store.prefix(), &info.id), rate_of(&app));
        let res = (StatusCode::CREATED, Json(json!({ "data": data }))).into_response();
        return Ok(no_store(res));
    }
    let issued = if req.user_id == actor.user {
        app.store.generate(&actor, req.opts).await?
    } else {
        app.store.assign(&actor, &req.user_id, req.opts).await?
    };
    let data = item(
        &issued.info,
        issued.token.expose().to_string(),
        rate_of(&app),
    );
    let res = (StatusCode::CREATED, Json(json!({ "data": data }))).into_response();
    Ok(no_store(res))
}

/// `DELETE /v3/refresh-token/{id}` (scope `user-write`): cascade revocation.
pub(crate) async fn delete(
    State(app): Shared,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let p = authenticate(app.store.sync(), &headers, &[USER_WRITE.to_string()]).await?;
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "no token with that id");
    let Path(id) = id.map_err(|_| not_found())?;
    let id: TokenId = id.parse().map_err(|_| not_found())?;
    let actor = actor_of(&p);
    // Another organization's token is answered exactly as an unknown id,
    // so that the answer says nothing about other organizations.
    match app.store.revoke_in_own_org(&actor, &id).await {
        Err(Error::NotFound(_)) => return Err(unknown_id(&id)),
        r => r?,
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The answer for a well-formed id that names no token of the caller's
/// organization.
fn unknown_id(id: &TokenId) -> ApiError {
    Error::NotFound(format!("no token with id {id}")).into()
}

/// The form of RFC 7009 and RFC 7662 requests.
#[derive(Deserialize)]
pub(crate) struct TokenForm {
    token: Option<String>,
    token_type_hint: Option<String>,
}

/// Authenticates an RFC 7009 / 7662 request, then reads its body and takes
/// its `token`.
async fn oauth_request(app: &AppState, req: Request) -> Result<(Principal, SecretToken), ApiError> {
    let p = authenticate(app.store.sync(), req.headers(), &[])
        .await
        .map_err(ApiError::rfc)?;
    let form: Result<Form<TokenForm>, FormRejection> = Form::from_request(req, &()).await;
    let Form(form) = form.map_err(|r| {
        let e = if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(r.status(), r.body_text())
        } else {
            ApiError::bad_request("expected an application/x-www-form-urlencoded body with `token`")
        };
        e.rfc()
    })?;
    // Kinds are self-describing (`…r_` / `…a_`), so the hint only has to be
    // well formed; an unknown hint is ignored (RFC 7662 §2.1).
    let _ = form.token_type_hint;
    let token = form
        .token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing `token` parameter").rfc())?;
    Ok((p, SecretToken::from_str_unchecked(&token)))
}

/// What a presented token is, if it is a live token of the caller's org.
enum Live {
    Access(Principal),
    Refresh(TokenInfo),
}

/// `Ok(None)` for a token that is not live (malformed, unknown, revoked,
/// expired) or not of `org`; a store that cannot answer (a shared store's
/// stale replica, a failed read) is an error, never "not live", so that a
/// revocation is not answered 200 without being made.
fn live_in_org(store: &TokenStore, org: &str, token: &str) -> Result<Option<Live>, Error> {
    if token.len() > MAX_TOKEN_TEXT {
        return Ok(None);
    }
    let Ok((kind, _)) = token::inspect(store.prefix(), token) else {
        return Ok(None);
    };
    let live = match kind {
        TokenKind::Access => store
            .verify(token)
            .map(|p| (&*p.org == org).then_some(Live::Access(p))),
        TokenKind::Refresh => store
            .verify_refresh(token)
            .map(|i| (i.org == org).then_some(Live::Refresh(i))),
    };
    match live {
        Err(
            Error::Malformed(_)
            | Error::InvalidToken
            | Error::Revoked
            | Error::Expired
            | Error::Disabled,
        ) => Ok(None),
        r => r,
    }
}

/// `POST /oauth/revoke` (RFC 7009): 200 whether or not the token was known.
pub(crate) async fn revoke(State(app): Shared, req: Request) -> Result<Response, ApiError> {
    let (p, token) = oauth_request(&app, req).await?;
    // Finding the token may read its record (and, on a shared store, the
    // database): the lookup and the revocation run in one blocking hop.
    app.store
        .run(move |store| {
            let r = match live_in_org(store, &p.org, token.expose())? {
                Some(Live::Access(_)) => store.revoke_access(token.expose()),
                Some(Live::Refresh(_)) => {
                    store.revoke_refresh(token.expose(), Some("revoked through /oauth/revoke"))
                }
                None => Ok(()),
            };
            match r {
                // Gone between the two calls: nothing left to revoke.
                Err(Error::InvalidToken | Error::Malformed(_)) => Ok(()),
                r => Ok::<_, ApiError>(r?),
            }
        })
        .await
        .map_err(ApiError::rfc)?;
    Ok(no_store(StatusCode::OK.into_response()))
}

/// `POST /oauth/introspect` (RFC 7662).
pub(crate) async fn introspect(State(app): Shared, req: Request) -> Result<Response, ApiError> {
    let (p, token) = oauth_request(&app, req).await?;
    let body = app
        .store
        .run(move |store| Ok::<_, ApiError>(introspection(store, &p.org, token.expose())?))
        .await
        .map_err(ApiError::rfc)?;
    Ok(no_store(Json(body).into_response()))
}

/// RFC 7662's answer for `token` as seen by a caller of `org`.
fn introspection(store: &TokenStore, org: &str, token: &str) -> Result<Value, Error> {
    Ok(match live_in_org(store, org, token)? {
        None => json!({ "active": false }),
        Some(Live::Access(t)) => json!({
            "active": true,
            "scope": t.scopes.to_vec().join(" "),
            "sub": &*t.user,
            "exp": t.expires_at,
            "iat": t.issued_at,
            "token_type": "Bearer",
        }),
        Some(Live::Refresh(info)) => {
            // Effective scopes: the token's, cut to the holder's current role.
            let Some(role) = store.member_role(&info.org, &info.user) else {
                return Ok(json!({ "active": false }));
            };
            let scopes: Vec<&str> = info
                .scopes
                .iter()
                .filter(|s| store.policy().allows(role, s))
                .map(String::as_str)
                .collect();
            let mut m = Map::new();
            m.insert("active".into(), json!(true));
            m.insert("scope".into(), json!(scopes.join(" ")));
            m.insert("sub".into(), json!(info.user));
            if let Some(exp) = info.expires_at {
                m.insert("exp".into(), json!(exp));
            }
            m.insert("iat".into(), json!(info.created_at));
            m.insert("token_type".into(), json!("refresh_token"));
            Value::Object(m)
        }
    })
}

/// The body of `POST /v3/refresh-token`.
struct CreateRequest {
    user_id: String,
    opts: GenerateOptions,
    /// `"pending": true`: an assignment whose secret only its member sees,
    /// when they claim it.
    pending: bool,
}

impl CreateRequest {
    fn parse(body: &[u8]) -> Result<CreateRequest, ApiError> {
        let bad = |m: &str| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, m);
        let v: Value =
            serde_json::from_slice(body).map_err(|_| bad("the body is not valid JSON"))?;
        let Value::Object(o) = v else {
            return Err(bad("the body must be a JSON object"));
        };
        let user_id = match o.get("user_id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
            Some(_) => return Err(bad("`user_id` must be a non-empty string")),
            None => return Err(bad("missing `user_id`")),
        };
        let mut opts = GenerateOptions::default();
        match o.get("label") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => opts.label = Some(s.clone()),
            Some(_) => return Err(bad("`label` must be a string")),
        }
        match o.get("scopes") {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) => {
                let scopes: Option<Vec<String>> =
                    a.iter().map(|s| s.as_str().map(str::to_string)).collect();
                opts.scopes = Some(scopes.ok_or_else(|| bad("`scopes` must be strings"))?);
            }
            Some(_) => return Err(bad("`scopes` must be an array of strings")),
        }
        match o.get("expires_in") {
            None | Some(Value::Null) => {}
            Some(v) => {
                opts.expires_in = Some(
                    v.as_u64()
                        .ok_or_else(|| bad("`expires_in` must be a whole number of seconds"))?,
                )
            }
        }
        let pending = match o.get("pending") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(bad("`pending` must be true or false")),
        };
        Ok(CreateRequest {
            user_id,
            opts,
            pending,
        })
    }
}

pub(super) fn actor_of(p: &Principal) -> Actor {
    Actor::new(&*p.org, &*p.user)
}

pub(super) fn rate_of(app: &AppState) -> u32 {
    app.limiter.as_ref().map_or(0, |l| l.limit().per_minute)
}

/// The masked `token` of a list: the refresh prefix, then the last four hex
/// digits of the token's public id. Derived from the id only, so it reveals
/// nothing of the secret (the store does not keep the secret anyway).
pub(crate) fn hint(prefix: &str, id: &TokenId) -> String {
    let hex = id.to_string();
    format!("{prefix}r_****{}", &hex[hex.len() - 4..])
}

/// One token in Squadcast's shape.
pub(super) fn item(info: &TokenInfo, token: String, rate_limit: u32) -> Value {
    json!({
        "id": info.id.to_string(),
        "organization_id": info.org,
        "user_id": info.user,
        "token": token,
        "last_refresh": rfc3339(info.last_refresh),
        "last_used_ip": info.last_used_ip.map(|ip| ip.to_string()),
        "last_used_agent": info.last_used_agent,
        "rate_limit": rate_limit,
        "deleted": matches!(info.state, TokenState::Revoked { .. }),
        "state": info.state.as_str(),
    })
}

/// Unix seconds as RFC 3339 UTC; `0001-01-01T00:00:00Z` (Go's zero time, as
/// Squadcast shows) for never. Clamped to the year 9999.
pub(crate) fn rfc3339(t: Option<u64>) -> String {
    let Some(t) = t else {
        return "0001-01-01T00:00:00Z".to_string();
    };
    let t = t.min(253_402_300_799);
    let (days, secs) = (t / 86_400, t % 86_400);
    let (y, m, d) = civil(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day), by
/// counting 400-year eras of 146 097 days starting on March 1st.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days from 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..146096
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // 0..399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1st
    let mp = (5 * doy + 2) / 153; // month from March, 0..11
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(None), "0001-01-01T00:00:00Z");
        assert_eq!(rfc3339(Some(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(Some(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(Some(1_700_000_000)), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(Some(4_107_542_399)), "2100-02-28T23:59:59Z");
        assert_eq!(rfc3339(Some(u64::MAX)), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn hint_shows_only_the_id_tail() {
        let id = TokenId::from_bytes([0xab; 16]);
        assert_eq!(hint("tv", &id), "tvr_****abab");
    }

    #[test]
    fn create_body_shapes() {
        let ok = CreateRequest::parse(br#"{"user_id":"uma","label":"ci"}"#).unwrap();
        assert_eq!(ok.user_id, "uma");
        assert_eq!(ok.opts.label.as_deref(), Some("ci"));
        assert_eq!(
            CreateRequest::parse(br#"{"user_id":42}"#).unwrap().user_id,
            "42"
        );
        for bad in [
            &b"{}"[..],
            b"[]",
            b"nope",
            br#"{"user_id":""}"#,
            br#"{"user_id":true}"#,
            br#"{"user_id":"u","scopes":[1]}"#,
            br#"{"user_id":"u","expires_in":-1}"#,
        ] {
            let e = CreateRequest::parse(bad).err().expect("refused");
            assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        }
    }
}
