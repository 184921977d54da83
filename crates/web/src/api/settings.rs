//! `/api/v1/settings` and `/api/v1/keys`: SMTP settings (password write-only),
//! a test mail, and key rotation.

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::extract::ApiJson;
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use steward_notify::mail::SmtpSettings;

/// The stored settings (absent fields: nothing configured yet). The password
/// is never shown; `password_set` says whether one is stored.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SmtpView {
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    security: Option<steward_notify::mail::SmtpSecurity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<String>,
    configured: bool,
    password_set: bool,
}

#[utoipa::path(get, path = "/api/v1/settings/smtp", tag = "settings", responses((status = 200, body = SmtpView)))]
pub async fn smtp(State(state): State<AppState>) -> ApiResult<Json<SmtpView>> {
    let s = state.mailer.smtp().await?;
    let configured = s.is_some();
    let (settings, password_set) = match s {
        Some((settings, set)) => (Some(settings), set),
        None => (None, false),
    };
    Ok(Json(SmtpView {
        host: settings.as_ref().map(|s| s.host.clone()),
        port: settings.as_ref().map(|s| s.port),
        security: settings.as_ref().map(|s| s.security),
        username: settings.as_ref().and_then(|s| s.username.clone()),
        from: settings.map(|s| s.from),
        configured,
        password_set,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SmtpPut {
    #[serde(flatten)]
    settings: SmtpSettings,
    /// Write-only. Absent: keep the stored password (allowed only while host,
    /// port, security and username stay the same); empty: remove it.
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
    state
        .mailer
        .put_smtp(
            &req.settings,
            req.password,
            &caller.identity.permissions,
            &caller.ctx(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestMail {
    /// A mail address, e.g. `ops@example.org`.
    #[schema(format = Email, example = "ops@example.org")]
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
        .mailer
        .send_mail(&req.to, "Steward test mail", &body)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/keys/rotate", tag = "settings", responses((status = 200, body = Object)))]
pub async fn rotate_key(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<steward_vault::Rotation>> {
    let report = state
        .vault
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
