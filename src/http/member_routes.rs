//! Member operations over HTTP, for an Owner who must act while the service
//! runs: change a member's role (`PATCH /v3/members/{user}`), remove a
//! member (`DELETE /v3/members/{user}`), revoke every token of a member
//! (`POST /v3/members/{user}/revoke-all`) or of the organization
//! (`POST /v3/org/revoke-all`).
//!
//! Each needs a bearer token granting `user-write`; the store applies the
//! policy (the Owner only, except a member revoking their own tokens) and
//! audits the call, refusals included, in the caller's name. A user who is
//! not a member of the caller's organization (another organization's
//! member included) is answered 404 exactly as an unknown one.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::auth::authenticate;
use super::error::ApiError;
use super::routes::{actor_of, body_of, no_store, AppState, Shared, USER_WRITE};
use crate::{Actor, Error, RevokeScope, Role};

fn no_member() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such member")
}

/// The user of the path; a path that does not parse names nobody.
fn user_of(user: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    user.map(|Path(u)| u).map_err(|_| no_member())
}

/// The store's answer, with an unknown member (of this organization or
/// another) as the one 404.
fn member_error(e: Error) -> ApiError {
    match e {
        Error::NotFound(_) => no_member(),
        e => e.into(),
    }
}

/// The caller (their bearer must grant `user-write`) and the member the
/// path names: the bearer is checked first.
async fn caller(
    app: &AppState,
    headers: &HeaderMap,
    user: Result<Path<String>, PathRejection>,
) -> Result<(Actor, String), ApiError> {
    let p = authenticate(app.store.sync(), headers, &[USER_WRITE.to_string()]).await?;
    Ok((actor_of(&p), user_of(user)?))
}

fn unprocessable(m: &str) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, m)
}

/// `{"role": "admin" | "user" | "stakeholder" | "owner"}`.
fn parse_role(body: &[u8]) -> Result<Role, ApiError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|_| unprocessable("the body is not valid JSON"))?;
    let Value::Object(o) = v else {
        return Err(unprocessable("the body must be a JSON object"));
    };
    match o.get("role") {
        Some(Value::String(s)) => s
            .parse::<Role>()
            .map_err(|_| unprocessable("`role` must be one of owner, admin, user, stakeholder")),
        Some(_) => Err(unprocessable("`role` must be a string")),
        None => Err(unprocessable("missing `role`")),
    }
}

/// An empty body, or `{"before": <Unix seconds>}`: revoke only the tokens
/// created before then, and keep the cutoff for any made earlier.
fn parse_before(body: &[u8]) -> Result<Option<u64>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let v: Value =
        serde_json::from_slice(body).map_err(|_| unprocessable("the body is not valid JSON"))?;
    let Value::Object(o) = v else {
        return Err(unprocessable("the body must be a JSON object"));
    };
    match o.get("before") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
            unprocessable("`before` must be a non-negative whole number of Unix seconds")
        }),
        Some(_) => Err(unprocessable(
            "`before` must be a whole number of Unix seconds",
        )),
    }
}

fn ok(body: Value) -> Response {
    no_store(Json(json!({ "data": body })).into_response())
}

/// `PATCH /v3/members/{user}` with `{"role": …}`: demotes or promotes a
/// member (not to or from Owner: 409). 200 `{"data": {"organization_id",
/// "user_id", "role"}}`.
pub(crate) async fn set_role(
    State(app): Shared,
    user: Result<Path<String>, PathRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let (actor, user) = caller(&app, req.headers(), user).await?;
    let role = parse_role(&body_of(req).await?)?;
    let (org, target) = (actor.org.clone(), user.clone());
    app.store
        .run(move |s| s.set_role_as(&actor, &target, role))
        .await
        .map_err(member_error)?;
    Ok(ok(
        json!({"organization_id": org, "user_id": user, "role": role.to_string()}),
    ))
}

/// `DELETE /v3/members/{user}`: removes the member and revokes every one of
/// their tokens (not the Owner: 409). 200 `{"data": {"organization_id",
/// "user_id", "revoked"}}`.
pub(crate) async fn remove(
    State(app): Shared,
    user: Result<Path<String>, PathRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let (actor, user) = caller(&app, req.headers(), user).await?;
    let (org, target) = (actor.org.clone(), user.clone());
    let revoked = app
        .store
        .run(move |s| s.remove_member_as(&actor, &target))
        .await
        .map_err(member_error)?;
    Ok(ok(
        json!({"organization_id": org, "user_id": user, "revoked": revoked}),
    ))
}

/// `POST /v3/members/{user}/revoke-all`, optional body `{"before": T}`:
/// revokes every token of the member (created before `T`). 200
/// `{"data": {"organization_id", "user_id", "revoked"}}`.
pub(crate) async fn revoke_member(
    State(app): Shared,
    user: Result<Path<String>, PathRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let (actor, user) = caller(&app, req.headers(), user).await?;
    let before = parse_before(&body_of(req).await?)?;
    let (org, target) = (actor.org.clone(), user.clone());
    let revoked = app
        .store
        .run(move |s| {
            // Another organization's member, or nobody, is unknown here.
            if s.member_role(&actor.org, &target).is_none() {
                return Err(Error::NotFound("no such member".into()));
            }
            s.revoke_all(&actor, RevokeScope::Member(target), before)
        })
        .await
        .map_err(member_error)?;
    Ok(ok(
        json!({"organization_id": org, "user_id": user, "revoked": revoked}),
    ))
}

/// `POST /v3/org/revoke-all`, optional body `{"before": T}`: revokes every
/// token of the caller's organization (created before `T`). The Owner
/// only. 200 `{"data": {"organization_id", "revoked"}}`.
pub(crate) async fn revoke_org(State(app): Shared, req: Request) -> Result<Response, ApiError> {
    let p = authenticate(app.store.sync(), req.headers(), &[USER_WRITE.to_string()]).await?;
    let before = parse_before(&body_of(req).await?)?;
    let actor = actor_of(&p);
    let org = actor.org.clone();
    let revoked = app
        .store
        .run(move |s| s.revoke_all(&actor, RevokeScope::Org, before))
        .await?;
    Ok(ok(json!({"organization_id": org, "revoked": revoked})))
}
