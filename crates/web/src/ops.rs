//! Operational endpoints: liveness, readiness, Prometheus metrics.

use crate::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret as _;
use steward_domain::RunStatus;

/// Liveness: the process answers.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the database answers and the scheduler task is alive.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let db = state.engine.database_ready().await;
    let scheduler = state.engine.scheduler_running();
    let status = if db && scheduler {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(serde_json::json!({ "database": db, "scheduler": scheduler })),
    )
        .into_response()
}

/// Prometheus text format; protected by a bearer token when one is configured.
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !steward_crypto::token::constant_time_eq(
            given.as_bytes(),
            token.expose_secret().as_bytes(),
        ) {
            return crate::error::ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid metrics bearer token is required",
            )
            .into_response();
        }
    }
    let m = state.engine.metrics();
    let mut body = m.encode();
    // Current totals from the store, which survive restarts (the counters do not).
    if let Ok(counts) = state.engine.run_counts().await {
        body.push_str("# HELP steward_runs_stored Runs in the store, by status.\n# TYPE steward_runs_stored gauge\n");
        for s in RunStatus::ALL {
            let n = counts
                .iter()
                .find(|(st, _)| *st == s)
                .map_or(0, |(_, n)| *n);
            body.push_str(&format!(
                "steward_runs_stored{{status=\"{}\"}} {n}\n",
                s.as_str()
            ));
        }
    }
    let body = body.replace("# EOF\n", "") + "# EOF\n";
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
