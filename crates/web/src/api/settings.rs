//! `/api/v1/settings` and `/api/v1/keys`: SMTP settings (password write-only),
//! a test mail, and key rotation.

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use steward_access::mail::SmtpSettings;
use steward_domain::{Module, Permission};

#[derive(Serialize, utoipa::ToSchema)]
pub struct SmtpView {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    settings: Option<SmtpSettings>,
    configured: bool,
    password_set: bool,
}

#[utoipa::path(get, path = "/api/v1/settings/smtp", tag = "settings", responses((status = 200, body = SmtpView)))]
pub async fn smtp(State(state): State<AppState>) -> ApiResult<Json<SmtpView>> {
    let s = state.access.vault().smtp().await?;
    Ok(Json(match s {
        Some((settings, password_set)) => SmtpView {
            settings: Some(settings),
            configured: true,
            password_set,
        },
        None => SmtpView {
            settings: None,
            configured: false,
            password_set: false,
        },
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SmtpPut {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    settings: SmtpSettings,
    /// Absent: keep the stored password; empty: remove it.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    password: Option<SecretString>,
}

#[utoipa::path(put, path = "/api/v1/settings/smtp", tag = "settings", request_body = SmtpPut, responses((status = 204), (status = 422)))]
pub async fn put_smtp(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<SmtpPut>,
) -> ApiResult<StatusCode> {
    // Reset links travel by this mail server: whoever can redirect it can take
    // over accounts, so changing it also needs users:write.
    if !caller.identity.allows(Permission::write(Module::Users)) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "changing the mail server also needs users:write: password reset links are sent through it",
        ));
    }
    state
        .access
        .vault()
        .put_smtp(&req.settings, req.password, &caller.ctx())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestMail {
    to: String,
}

#[utoipa::path(post, path = "/api/v1/settings/smtp/test", tag = "settings", request_body = TestMail, responses((status = 204), (status = 503)))]
pub async fn test_smtp(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<TestMail>,
) -> ApiResult<StatusCode> {
    let body = format!(
        "This is a test message from Steward, sent by {}.\nIf you can read it, mail from Steward works.\n",
        caller.identity.username
    );
    state
        .access
        .vault()
        .send_mail(&req.to, "Steward test mail", &body)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/keys/rotate", tag = "settings", responses((status = 200, body = Object)))]
pub async fn rotate_key(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<steward_access::vault::Rotation>> {
    let report = state
        .access
        .vault()
        .rotate(&caller.ctx(), &|p| {
            tracing::info!(
                version = p.new_version,
                resealed = p.resealed,
                "key rotation progress"
            )
        })
        .await?;
    Ok(Json(report))
}
