//! `/api/v1/audit`: the audit log, read-only: list with filters, export as
//! JSON lines, verify the hash chain.

use crate::error::{ApiError, ApiResult};
use crate::extract::ApiQuery;
use crate::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use steward_store::audit::{AuditEntry, AuditFilter, ChainReport};

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Actor name (user name, or a token's owner).
    actor: Option<String>,
    /// Event or event family, e.g. `job` or `job.update`.
    event: Option<String>,
    /// Target, e.g. `job:backup` or `user:alice`.
    target: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    /// Cursor: entries older than this id.
    before: Option<i64>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    #[schema(value_type = Vec<Object>)]
    items: Vec<AuditEntry>,
    next_before: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery), responses((status = 200, body = AuditPage)))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be 1 to 1000"));
    }
    let items = state
        .access
        .audit_entries(&AuditFilter {
            actor: q.actor,
            event: q.event,
            target: q.target,
            since: q.since,
            until: q.until,
            before: q.before,
            limit,
        })
        .await?;
    let next_before = (items.len() == limit as usize)
        .then(|| items.last().map(|e| e.id))
        .flatten();
    Ok(Json(AuditPage { items, next_before }))
}

#[utoipa::path(get, path = "/api/v1/audit/export", tag = "audit", responses((status = 200, content_type = "application/x-ndjson")))]
pub async fn export(State(state): State<AppState>) -> ApiResult<Response> {
    // Built page by page; the log of one node stays far below memory limits,
    // and a streaming body would hold a reader across the whole download.
    let mut out = String::new();
    let mut after = 0;
    loop {
        let page = state.access.audit_page(after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for e in &page {
            out.push_str(&serde_json::to_string(e).unwrap_or_default());
            out.push('\n');
        }
    }
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        out,
    )
        .into_response())
}

#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit", responses((status = 200, body = Object)))]
pub async fn verify(State(state): State<AppState>) -> ApiResult<Json<ChainReport>> {
    Ok(Json(state.access.verify_audit().await?))
}
