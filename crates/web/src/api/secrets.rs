//! `/api/v1/secrets`: named secrets, write-only. Values go in; only names,
//! descriptions and dates come out.

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::extract::ApiPath;
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use steward_domain::SecretName;

#[derive(Serialize, utoipa::ToSchema)]
pub struct SecretView {
    name: String,
    description: String,
    key_version: u32,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[utoipa::path(get, path = "/api/v1/secrets", tag = "secrets", responses((status = 200, body = [SecretView])))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<SecretView>>> {
    let items = state.vault.list().await?;
    Ok(Json(
        items
            .into_iter()
            .map(|s| SecretView {
                name: s.name.to_string(),
                description: s.description,
                key_version: s.key_version,
                created_at: s.created_at,
                updated_at: s.updated_at,
            })
            .collect(),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSecret {
    /// The value: at least 4 characters (values are masked in run output), at most 64 KiB.
    #[schema(value_type = String, min_length = 4, max_length = 65536, example = "correct-horse-battery")]
    value: SecretString,
    /// Up to 500 characters.
    #[serde(default)]
    #[schema(max_length = 500)]
    description: String,
}

fn name(raw: &str) -> ApiResult<SecretName> {
    SecretName::parse(raw).map_err(|e| ApiError::invalid("name", e.message))
}

#[utoipa::path(put, path = "/api/v1/secrets/{name}", tag = "secrets", params(("name" = String, Path)), request_body = PutSecret,
    responses((status = 201, description = "Created"), (status = 204, description = "Replaced"), (status = 422)))]
pub async fn put(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(raw): ApiPath<String>,
    ApiJson(req): ApiJson<PutSecret>,
) -> ApiResult<StatusCode> {
    let created = state
        .vault
        .put(&name(&raw)?, &req.value, &req.description, &caller.ctx())
        .await?;
    Ok(if created {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    })
}

#[utoipa::path(delete, path = "/api/v1/secrets/{name}", tag = "secrets", params(("name" = String, Path)), responses((status = 204), (status = 404), (status = 409)))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(raw): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let name = name(&raw)?;
    // Refused while a job still refers to it (its next run would fail).
    state.vault.delete(&name, &caller.ctx()).await?;
    Ok(StatusCode::NO_CONTENT)
}
