//! `/api/v1/auth`: sign-in and sign-out, who am I, password change and reset,
//! my sessions.

use crate::auth::{Caller, Client};
use crate::error::ApiResult;
use crate::extract::ApiJson;
use crate::extract::ApiPath;
use crate::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use steward_access::Via;
use steward_domain::SessionId;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignInRequest {
    username: String,
    #[schema(value_type = String)]
    password: SecretString,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Me {
    pub user_id: i64,
    pub username: String,
    /// `session` or `token`.
    pub via: &'static str,
    pub permissions: Vec<String>,
    pub must_change_password: bool,
    /// Send it as `X-CSRF-Token` with every change made with the session cookie.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/auth/sign-in", tag = "auth", request_body = SignInRequest, security(()),
    responses((status = 200, body = Me, description = "Signed in; the session cookie is set"), (status = 401), (status = 429)))]
pub async fn sign_in(
    State(state): State<AppState>,
    Client(client): Client,
    ApiJson(req): ApiJson<SignInRequest>,
) -> ApiResult<Response> {
    let signed = state
        .access
        .sign_in(&req.username, &req.password, &client)
        .await?;
    let permissions = state.access.permissions_of(signed.user.id).await?;
    let cookie = state.auth.session_cookie(
        Some(secrecy::ExposeSecret::expose_secret(&signed.cookie)),
        state.access.settings().session_lifetime.num_seconds(),
    );
    let body = Me {
        user_id: signed.user.id.0,
        username: signed.user.username.to_string(),
        via: "session",
        permissions: permissions.to_strings(),
        must_change_password: signed.user.must_change,
        csrf_token: Some(signed.csrf_token),
    };
    Ok(([(header::SET_COOKIE, cookie)], Json(body)).into_response())
}

fn me_of(caller: &Caller) -> Me {
    let id = &caller.identity;
    Me {
        user_id: id.user_id.0,
        username: id.username.to_string(),
        via: match id.via {
            Via::Session { .. } => "session",
            Via::Token { .. } => "token",
        },
        permissions: id.permissions.to_strings(),
        must_change_password: id.must_change_password,
        csrf_token: match &id.via {
            Via::Session { csrf_token, .. } => Some(csrf_token.clone()),
            Via::Token { .. } => None,
        },
    }
}

#[utoipa::path(get, path = "/api/v1/auth/me", tag = "auth", responses((status = 200, body = Me), (status = 401)))]
pub async fn me(caller: Caller) -> Json<Me> {
    Json(me_of(&caller))
}

#[utoipa::path(post, path = "/api/v1/auth/sign-out", tag = "auth", responses((status = 204)))]
pub async fn sign_out(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    state
        .access
        .sign_out(&caller.identity, &caller.client)
        .await?;
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, state.auth.session_cookie(None, 0))],
    )
        .into_response())
}

#[utoipa::path(post, path = "/api/v1/auth/sign-out-everywhere", tag = "auth",
    responses((status = 200, body = super::views::SessionsEnded, description = "Every session of yours ended, this one included")))]
pub async fn sign_out_everywhere(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Response> {
    let n = state
        .access
        .sign_out_everywhere(&caller.identity, &caller.client)
        .await?;
    Ok((
        [(header::SET_COOKIE, state.auth.session_cookie(None, 0))],
        Json(super::views::SessionsEnded { sessions_ended: n }),
    )
        .into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    #[schema(value_type = String)]
    current_password: SecretString,
    /// 12 to 1024 characters, not easy to guess (zxcvbn score 3 or more).
    #[schema(value_type = String, min_length = 12, max_length = 1024, example = "copper lantern drifts past seven hills")]
    new_password: SecretString,
}

#[utoipa::path(post, path = "/api/v1/auth/password", tag = "auth", request_body = PasswordChange,
    responses((status = 204, description = "Changed; your other sessions were ended"), (status = 422)))]
pub async fn change_password(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<PasswordChange>,
) -> ApiResult<StatusCode> {
    state
        .access
        .change_password(
            &caller.identity,
            &req.current_password,
            &req.new_password,
            &caller.client,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionView {
    id: i64,
    current: bool,
    created_at: DateTime<Utc>,
    last_seen_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    address: Option<String>,
    user_agent: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/auth/sessions", tag = "auth", responses((status = 200, body = [SessionView])))]
pub async fn sessions(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<SessionView>>> {
    let current = match caller.identity.via {
        Via::Session { id, .. } => Some(id),
        Via::Token { .. } => None,
    };
    let idle = state.access.settings().session_idle;
    Ok(Json(
        state
            .access
            .sessions(&caller.identity)
            .await?
            .into_iter()
            .map(|s| SessionView {
                id: s.id.0,
                current: Some(s.id) == current,
                created_at: s.created_at,
                last_seen_at: s.last_seen_at,
                expires_at: s.expires_at.min(s.last_seen_at + idle),
                address: s.address,
                user_agent: s.user_agent,
            })
            .collect(),
    ))
}

#[utoipa::path(delete, path = "/api/v1/auth/sessions/{session}", tag = "auth", params(("session" = i64, Path)), responses((status = 204), (status = 404)))]
pub async fn revoke_session(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<StatusCode> {
    state
        .access
        .revoke_session(&caller.identity, SessionId(id), &caller.client)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    /// User name or e-mail address.
    login: String,
}

#[utoipa::path(post, path = "/api/v1/auth/password-reset", tag = "auth", request_body = ResetRequest, security(()),
    responses((status = 200, body = super::views::Message, description = "Always: a mail is sent if the account exists and has an address")))]
pub async fn request_reset(
    State(state): State<AppState>,
    Client(client): Client,
    ApiJson(req): ApiJson<ResetRequest>,
) -> Json<super::views::Message> {
    state.access.request_reset(&req.login, &client).await;
    Json(super::views::Message {
        message: "if the account exists and has an e-mail address, a reset link is on its way"
            .into(),
    })
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetConfirm {
    #[schema(value_type = String)]
    token: SecretString,
    /// 12 to 1024 characters, not easy to guess (zxcvbn score 3 or more).
    #[schema(value_type = String, min_length = 12, max_length = 1024, example = "copper lantern drifts past seven hills")]
    new_password: SecretString,
}

#[utoipa::path(post, path = "/api/v1/auth/password-reset/confirm", tag = "auth", request_body = ResetConfirm, security(()),
    responses((status = 204), (status = 422)))]
pub async fn confirm_reset(
    State(state): State<AppState>,
    Client(client): Client,
    ApiJson(req): ApiJson<ResetConfirm>,
) -> ApiResult<StatusCode> {
    state
        .access
        .confirm_reset(
            secrecy::ExposeSecret::expose_secret(&req.token),
            &req.new_password,
            &client,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
