//! `POST /api/v1/schedules/preview`: the next occurrences of a schedule.

use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::AppState;
use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use steward_domain::{Schedule, TimeZone};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    /// The same syntax, and the same name, as a job's `schedule`.
    #[schema(value_type = String, example = "30 2 * * *")]
    pub schedule: String,
    /// IANA zone; the server default when absent.
    pub timezone: Option<TimeZone>,
    /// How many occurrences, 1 to 100 (default 5).
    #[schema(minimum = 1, maximum = 100)]
    pub count: Option<usize>,
    /// Start after this instant instead of now.
    pub after: Option<DateTime<Utc>>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PreviewResponse {
    #[schema(value_type = String)]
    pub timezone: TimeZone,
    /// Occurrences in UTC.
    pub times: Vec<DateTime<Utc>>,
    /// The same occurrences in the schedule's zone, RFC 3339 with offset.
    pub local_times: Vec<String>,
}

#[utoipa::path(post, path = "/api/v1/schedules/preview", tag = "schedules", request_body = PreviewRequest,
    responses((status = 200, body = PreviewResponse), (status = 422, body = crate::error::ErrorBody)))]
pub async fn preview(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<PreviewRequest>,
) -> ApiResult<Json<PreviewResponse>> {
    let count = req.count.unwrap_or(5);
    if !(1..=100).contains(&count) {
        return Err(ApiError::invalid("count", "must be between 1 and 100"));
    }
    let schedule =
        Schedule::parse(&req.schedule).map_err(|e| ApiError::invalid("schedule", e.to_string()))?;
    let tz = req.timezone.unwrap_or(state.engine.default_timezone());
    let after = req.after.unwrap_or_else(|| state.engine.clock().now());
    let times = schedule.upcoming(after, &tz, count);
    let local_times = times
        .iter()
        .map(|t| t.with_timezone(&tz.0).to_rfc3339())
        .collect();
    Ok(Json(PreviewResponse {
        timezone: tz,
        times,
        local_times,
    }))
}
