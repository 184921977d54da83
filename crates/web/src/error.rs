//! The one error type at the web edge: a stable code and a safe message for the
//! client, the cause chain in the log.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use steward_engine::ServiceError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    /// Seconds for `Retry-After` on 429.
    pub retry_after: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable code such as `validation_failed`.
    pub code: String,
    /// Human-readable explanation; never contains secrets, SQL or stack traces.
    pub message: String,
    /// The JSON path or parameter that was wrong, when one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = message.into();
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "validation_failed",
            message: if field.is_empty() {
                message
            } else {
                format!("{field}: {message}")
            },
            field: (!field.is_empty()).then_some(field),
            retry_after: None,
        }
    }
    /// The database cannot be reached: nothing was written; clients may retry
    /// after a few seconds (the time a pool waits for a connection).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(5),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }

    /// A failure the client cannot act on: the detail goes to the log only.
    pub fn internal(detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid(v) => Self::invalid(v.field, v.message),
            ServiceError::NotFound(what) => Self::not_found(what),
            ServiceError::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            ServiceError::Forbidden(m) => Self::new(StatusCode::FORBIDDEN, "forbidden", m),
            ServiceError::Unavailable(m) => Self::unavailable(m),
            ServiceError::ShuttingDown => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "Steward is shutting down",
            ),
            ServiceError::Internal(source) => {
                tracing::error!(cause = ?std::error::Error::source(&source), "cause of the next internal error");
                Self::internal(&source)
            }
        }
    }
}

impl From<steward_store::StoreError> for ApiError {
    fn from(e: steward_store::StoreError) -> Self {
        ServiceError::from(e).into()
    }
}

impl From<steward_vault::VaultError> for ApiError {
    fn from(e: steward_vault::VaultError) -> Self {
        use steward_vault::VaultError as E;
        match e {
            E::Invalid(v) => Self::invalid(v.field, v.message),
            E::NotFound(w) => Self::not_found(w),
            E::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            E::Unavailable(m) => Self::unavailable(m),
            E::Internal(m) => Self::internal(&m),
        }
    }
}

impl From<steward_notify::NotifyError> for ApiError {
    fn from(e: steward_notify::NotifyError) -> Self {
        use steward_notify::NotifyError as E;
        match e {
            E::Invalid(v) => Self::invalid(v.field, v.message),
            E::Forbidden(m) => Self::new(StatusCode::FORBIDDEN, "forbidden", m),
            // Not configured, or the mail server refused: the request may work later.
            E::Unavailable(m) => Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m),
            E::Vault(v) => v.into(),
            E::Internal(m) => Self::internal(&m),
        }
    }
}

impl From<steward_access::AccessError> for ApiError {
    fn from(e: steward_access::AccessError) -> Self {
        use steward_access::AccessError as E;
        match e {
            E::InvalidCredentials => Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                e.to_string(),
            ),
            E::Forbidden(m) => Self::new(StatusCode::FORBIDDEN, "forbidden", m),
            E::TooMany { retry_after_secs } => Self {
                retry_after: Some(retry_after_secs),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", e.to_string())
            },
            E::Invalid(v) => Self::invalid(v.field, v.message),
            E::NotFound(w) => Self::not_found(w),
            E::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            E::Unavailable(m) => Self::unavailable(m),
            E::Internal(m) => Self::internal(&m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.into(),
                message: self.message,
                field: self.field,
            },
        };
        let mut r = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(v) = axum::http::HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        r
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
