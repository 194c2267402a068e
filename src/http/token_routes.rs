//! One token by id (`GET` and `PATCH /v3/refresh-token/{id}`), its
//! lifecycle (`POST /v3/refresh-token/{id}/rotate`, `…/disable`,
//! `…/enable`) and the paged list (`GET /v3/refresh-token?after=…&limit=…`).

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::auth::authenticate;
use super::error::ApiError;
use super::routes::{
    self, actor_of, body_of, hint, item, rate_of, AppState, Shared, READ, USER_WRITE,
};
use crate::{Actor, Grace, Page, Role, TokenId, TokenInfo};

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no token with that id")
}

/// The id of the path; anything that is not one is an unknown token.
fn id_of(id: Result<Path<String>, PathRejection>) -> Result<TokenId, ApiError> {
    let Path(id) = id.map_err(|_| not_found())?;
    id.parse().map_err(|_| not_found())
}

/// One token as the list shows it, with its label.
fn one(app: &AppState, info: &TokenInfo) -> Value {
    let mut v = item(info, hint(app.store.prefix(), &info.id), rate_of(app));
    v["label"] = json!(info.label);
    v
}

/// The caller of a route on one token (its bearer must grant `read`) and
/// the token's id: the bearer is checked first, then the path.
async fn caller(
    app: &AppState,
    headers: &HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<(Actor, TokenId), ApiError> {
    let p = authenticate(app.store.sync(), headers, &[READ.to_string()]).await?;
    Ok((actor_of(&p), id_of(id)?))
}

/// `{"data": data}` with `status`, never cached.
fn answer(status: StatusCode, data: Value) -> Response {
    routes::no_store((status, Json(json!({ "data": data }))).into_response())
}

/// `GET /v3/refresh-token/{id}` (scope `read`): the token, for its holder
/// or the Owner of its organization; another organization's token is 404
/// as an unknown id.
pub(crate) async fn show(
    State(app): Shared,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let (actor, id) = caller(&app, &headers, id).await?;
    let info = app.store.get(&actor, &id).await?;
    Ok(answer(StatusCode::OK, one(&app, &info)))
}

/// `PATCH /v3/refresh-token/{id}` with `{"label": "…"}` or `{"label":
/// null}` (scope `read`): changes the label, for the holder or the Owner.
/// The bearer is checked before any of the body is read.
pub(crate) async fn label(
    State(app): Shared,
    id: Result<Path<String>, PathRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let (actor, id) = caller(&app, req.headers(), id).await?;
    let label = parse_label(&body_of(req).await?)?;
    let info = app.store.set_label(&actor, &id, label.as_deref()).await?;
    Ok(answer(StatusCode::OK, one(&app, &info)))
}

/// `POST /v3/refresh-token/{id}/disable` (scope `read`): suspends the
/// token, for its holder or the Owner; 200 with the token as the list
/// shows it. Another organization's token is 404 as an unknown id.
pub(crate) async fn disable(
    State(app): Shared,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    suspend(app, headers, id, true).await
}

/// `POST /v3/refresh-token/{id}/enable` (scope `read`): restores a
/// suspended token, as [`disable`] suspends it.
pub(crate) async fn enable(
    State(app): Shared,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    suspend(app, headers, id, false).await
}

async fn suspend(
    app: Arc<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    disable: bool,
) -> Result<Response, ApiError> {
    let (actor, id) = caller(&app, &headers, id).await?;
    let info = if disable {
        app.store.disable(&actor, &id).await?
    } else {
        app.store.enable(&actor, &id).await?
    };
    Ok(answer(StatusCode::OK, one(&app, &info)))
}

/// `POST /v3/refresh-token/{id}/claim` (scope `read`): the member a
/// token was assigned to pending claims it; 201 with the token as `POST
/// /v3/refresh-token` answers it (the secret in `token`, this once).
pub(crate) async fn claim(
    State(app): Shared,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let (actor, id) = caller(&app, &headers, id).await?;
    let t = app.store.claim(&actor, &id).await?;
    let data = item(&t.info, t.token.expose().to_string(), rate_of(&app));
    Ok(answer(StatusCode::CREATED, data))
}

/// `POST /v3/refresh-token/{id}/rotate` with `{"grace": seconds}` (scope
/// `read`; the body, or its `grace`, may be left out for 24 hours): a new
/// token with the old one's settings, for the holder or the Owner. 201
/// with the token as `POST /v3/refresh-token` answers it, plus `replaces`
/// (the old token's id) and `old_expires_at` (Unix seconds). The bearer
/// is checked before any of the body is read.
pub(crate) async fn rotate(
    State(app): Shared,
    id: Result<Path<String>, PathRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let (actor, id) = caller(&app, req.headers(), id).await?;
    let grace = parse_grace(&body_of(req).await?)?;
    let r = app.store.rotate(&actor, &id, grace).await?;
    let mut data = item(
        &r.issued.info,
        r.issued.token.expose().to_string(),
        rate_of(&app),
    );
    data["replaces"] = json!(r.replaces.to_string());
    data["old_expires_at"] = json!(r.old_expires_at);
    Ok(answer(StatusCode::CREATED, data))
}

/// The body of `POST /v3/refresh-token/{id}/rotate`: the grace period in
/// seconds; an empty body, `{}` or `"grace": null` is the default.
fn parse_grace(body: &[u8]) -> Result<Grace, ApiError> {
    let bad = |m: &str| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, m);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Grace::DEFAULT);
    }
    let v: Value = serde_json::from_slice(body).map_err(|_| bad("the body is not valid JSON"))?;
    let Value::Object(o) = v else {
        return Err(bad("the body must be a JSON object"));
    };
    match o.get("grace") {
        None | Some(Value::Null) => Ok(Grace::DEFAULT),
        Some(g) => g
            .as_u64()
            .map(Grace::from)
            .ok_or_else(|| bad("`grace` must be a whole number of seconds, 0 or more")),
    }
}

/// The body of `PATCH /v3/refresh-token/{id}`: the new label, or `None`
/// to remove it.
fn parse_label(body: &[u8]) -> Result<Option<String>, ApiError> {
    let bad = |m: &str| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, m);
    let v: Value = serde_json::from_slice(body).map_err(|_| bad("the body is not valid JSON"))?;
    let Value::Object(o) = v else {
        return Err(bad("the body must be a JSON object"));
    };
    match o.get("label") {
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Null) => Ok(None),
        Some(_) => Err(bad("`label` must be a string or null")),
        None => Err(bad("missing `label`")),
    }
}

/// `GET /v3/refresh-token` (scope `read`). Without `after` and `limit` in
/// the query it answers as it always has; with them, the page after the
/// token `after` (an id of the list) of at most `limit` tokens, and
/// `"next"` beside `"data"` when `limit` is given (the cursor of the next
/// page, or null).
pub(crate) async fn list(
    state: Shared,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let (after, limit) = page_query(uri.query().unwrap_or(""))?;
    if after.is_none() && limit.is_none() {
        return routes::list(state, headers).await;
    }
    let State(app) = state;
    let p = authenticate(app.store.sync(), &headers, &[READ.to_string()]).await?;
    let actor: Actor = actor_of(&p);
    let owner = p.role == Role::Owner && p.scopes.contains(USER_WRITE);
    let mut page = Page::new();
    if let Some(a) = after {
        page = page.after(a);
    }
    if let Some(n) = limit {
        page = page.limit(n);
    }
    let paged = if owner {
        app.store.list_org_page(&actor, page).await?
    } else {
        app.store.list_own_page(&actor, page).await?
    };
    let app: Arc<AppState> = app;
    let data: Vec<Value> = paged
        .items
        .iter()
        .map(|i| item(i, hint(app.store.prefix(), &i.id), rate_of(&app)))
        .collect();
    let mut body = json!({ "data": data });
    if limit.is_some() {
        body["next"] = json!(paged.next.map(|c| c.to_string()));
    }
    Ok(routes::no_store(Json(body).into_response()))
}

/// `after` and `limit` of a list's query string (others are ignored); an
/// empty value is as none.
fn page_query(query: &str) -> Result<(Option<TokenId>, Option<usize>), ApiError> {
    let (mut after, mut limit) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "after" if !v.is_empty() => {
                after = Some(v.parse::<TokenId>().map_err(|_| {
                    ApiError::bad_request("`after` must be a token id (32 hexadecimal digits)")
                })?);
            }
            "limit" if !v.is_empty() => {
                limit =
                    Some(v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        ApiError::bad_request("`limit` must be a positive integer")
                    })?);
            }
            _ => {}
        }
    }
    Ok((after, limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_queries() {
        assert_eq!(page_query("").unwrap(), (None, None));
        assert_eq!(page_query("limit=3&x=y").unwrap(), (None, Some(3)));
        let id = TokenId::from_bytes([1; 16]);
        assert_eq!(
            page_query(&format!("after={id}&limit=")).unwrap(),
            (Some(id), None)
        );
        for bad in ["limit=0", "limit=-1", "limit=x", "after=zz", "after=12"] {
            assert_eq!(
                page_query(bad).unwrap_err().status(),
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
    }

    #[test]
    fn grace_bodies() {
        assert_eq!(parse_grace(b"").unwrap(), Grace::DEFAULT);
        assert_eq!(parse_grace(b"{}").unwrap(), Grace::DEFAULT);
        assert_eq!(parse_grace(br#"{"grace":null}"#).unwrap(), Grace::DEFAULT);
        assert_eq!(parse_grace(br#"{"grace":0}"#).unwrap().secs(), 0);
        assert_eq!(parse_grace(br#"{"grace":3600}"#).unwrap().secs(), 3600);
        for bad in [
            &b"[]"[..],
            b"nope",
            br#"{"grace":-1}"#,
            br#"{"grace":1.5}"#,
            br#"{"grace":"1h"}"#,
        ] {
            assert_eq!(
                parse_grace(bad).unwrap_err().status(),
                StatusCode::UNPROCESSABLE_ENTITY
            );
        }
    }

    #[test]
    fn label_bodies() {
        assert_eq!(
            parse_label(br#"{"label":"ci"}"#).unwrap().as_deref(),
            Some("ci")
        );
        assert_eq!(parse_label(br#"{"label":null}"#).unwrap(), None);
        for bad in [&b"{}"[..], b"[]", b"nope", br#"{"label":3}"#] {
            assert_eq!(
                parse_label(bad).unwrap_err().status(),
                StatusCode::UNPROCESSABLE_ENTITY
            );
        }
    }
}
