//! `/api/v1/tokens`: API tokens of the caller (shown once at creation).

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::extract::ApiPath;
use crate::extract::{ApiJson, ApiQuery};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use steward_domain::{PermissionSet, TokenId};
use steward_store::access::ApiToken;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTokenRequest {
    name: String,
    /// Permissions such as `jobs:read`; default: all of yours. Never wider than yours.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    scopes: Option<PermissionSet>,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenView {
    id: i64,
    name: String,
    owner_id: i64,
    /// The first characters, to recognise it.
    hint: String,
    scopes: Vec<String>,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiToken> for TokenView {
    fn from(t: ApiToken) -> Self {
        Self {
            id: t.id.0,
            name: t.name,
            owner_id: t.user_id.0,
            hint: t.hint,
            scopes: t.scopes.to_strings(),
            created_at: t.created_at,
            expires_at: t.expires_at,
            last_used_at: t.last_used_at,
            revoked_at: t.revoked_at,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    token: TokenView,
    /// The token itself: shown this once, stored only as a hash.
    secret: String,
}

/// Create an API token (the secret is shown once). Needs a session, or a token
/// scoped to `tokens:write`; the scopes never exceed the caller's.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = NewTokenRequest,
    responses((status = 201, body = CreatedToken), (status = 422)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<NewTokenRequest>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let (token, secret) = state
        .access
        .create_token(
            &caller.identity,
            &req.name,
            req.scopes,
            req.expires_at,
            &caller.client,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token: token.into(),
            secret,
        }),
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Everyone's tokens (needs users:read).
    #[serde(default)]
    all: bool,
}

/// List your API tokens (never their secrets). Needs a session, or a token
/// scoped to `tokens:read`.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", params(ListQuery), responses((status = 200, body = [TokenView])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Vec<TokenView>>> {
    let tokens = state.access.tokens(&caller.identity, q.all).await?;
    Ok(Json(tokens.into_iter().map(Into::into).collect()))
}

/// Revoke one of your API tokens. Needs a session, or a token scoped to
/// `tokens:write`.
#[utoipa::path(delete, path = "/api/v1/tokens/{token}", tag = "tokens", params(("token" = i64, Path)), responses((status = 204), (status = 404)))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<StatusCode> {
    state
        .access
        .revoke_token(&caller.identity, TokenId(id), &caller.client)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
