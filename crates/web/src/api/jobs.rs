//! `/api/v1/jobs`: thin adapters over the engine's job service.

use super::views::{JobView, RunView};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::extract::ApiPath;
use crate::extract::ApiQuery;
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use steward_domain::{JobDefinition, JobId, JobName, RunStatus, Tag};
use steward_store::{Job, JobCursor, JobQuery, JobSort};

/// A job is addressed by its numeric id or by its name.
pub(crate) async fn resolve(state: &AppState, key: &str) -> ApiResult<Job> {
    if let Ok(id) = key.parse::<i64>() {
        return Ok(state.engine.job(JobId(id)).await?);
    }
    let name = JobName::parse(key).map_err(|e| ApiError::invalid("job", e.message))?;
    state
        .engine
        .find_job(&name)
        .await?
        .ok_or_else(|| ApiError::not_found("job"))
}

fn view(state: &AppState, job: Job) -> JobView<'static> {
    JobView::new(
        job,
        state.engine.default_timezone(),
        state.engine.clock().now(),
    )
}

/// The order of a job list.
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobListSort {
    #[default]
    Name,
    /// Soonest next occurrence first; unscheduled and disabled jobs last.
    NextRun,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct JobListQuery {
    /// Only jobs with this tag.
    pub tag: Option<String>,
    /// Only jobs whose name contains this text (case-insensitive).
    #[param(max_length = 64)]
    pub name: Option<String>,
    pub enabled: Option<bool>,
    /// Only jobs whose most recently ended run ended so.
    pub last_status: Option<RunStatus>,
    pub sort: Option<JobListSort>,
    /// `next_cursor` of the previous page (same sort).
    #[param(max_length = 100)]
    pub cursor: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// A page cursor: the last job's sort key. `name` sorts by the name itself;
/// `next_run` by `<unix ms or ->:<name>` (names never hold ':').
fn encode_cursor(c: &JobCursor) -> String {
    match c {
        JobCursor::Name(n) => n.to_string(),
        JobCursor::NextRun(at, n) => format!(
            "{}:{n}",
            at.map_or_else(|| "-".to_owned(), |t| t.timestamp_millis().to_string())
        ),
    }
}

fn decode_cursor(sort: JobListSort, raw: &str) -> Result<JobCursor, ApiError> {
    let bad = || ApiError::invalid("cursor", "is not a next_cursor of a job list in this order");
    match sort {
        JobListSort::Name => Ok(JobCursor::Name(JobName::parse(raw).map_err(|_| bad())?)),
        JobListSort::NextRun => {
            let (at, name) = raw.split_once(':').ok_or_else(bad)?;
            let at = match at {
                "-" => None,
                ms => Some(
                    ms.parse::<i64>()
                        .ok()
                        .and_then(chrono::DateTime::from_timestamp_millis)
                        .ok_or_else(bad)?,
                ),
            };
            Ok(JobCursor::NextRun(
                at,
                JobName::parse(name).map_err(|_| bad())?,
            ))
        }
    }
}

#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(JobListQuery),
    responses((status = 200, body = super::views::JobList), (status = 422, body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<JobListQuery>,
) -> ApiResult<Json<super::views::JobList<'static>>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    let sort = q.sort.unwrap_or_default();
    let tag = q
        .tag
        .as_deref()
        .map(Tag::parse)
        .transpose()
        .map_err(|e| ApiError::invalid("tag", e.message))?;
    if q.name.as_ref().is_some_and(|n| n.len() > 64) {
        return Err(ApiError::invalid("name", "longer than 64 characters"));
    }
    let query = JobQuery {
        tag,
        name_contains: q.name.filter(|n| !n.is_empty()),
        enabled: q.enabled,
        last_status: q.last_status,
        sort: match sort {
            JobListSort::Name => JobSort::Name,
            JobListSort::NextRun => JobSort::NextRun,
        },
        after: q
            .cursor
            .as_deref()
            .map(|c| decode_cursor(sort, c))
            .transpose()?,
        limit,
    };
    let (jobs, next) = state.engine.list_jobs(&query).await?;
    let (tz, now) = (state.engine.default_timezone(), state.engine.clock().now());
    Ok(Json(super::views::JobList {
        items: jobs.into_iter().map(|j| JobView::new(j, tz, now)).collect(),
        next_cursor: next.as_ref().map(encode_cursor),
    }))
}

#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs", request_body = JobDefinition,
    responses((status = 201, body = JobView), (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(def): ApiJson<JobDefinition>,
) -> ApiResult<(StatusCode, Json<JobView<'static>>)> {
    let job = state
        .engine
        .create_job(def, &caller.identity.permissions, &caller.ctx())
        .await?;
    Ok((StatusCode::CREATED, Json(view(&state, job))))
}

#[utoipa::path(get, path = "/api/v1/jobs/{job}", tag = "jobs", params(("job" = String, Path, description = "Job id or name")),
    responses((status = 200, body = JobView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<Json<JobView<'static>>> {
    let job = resolve(&state, &key).await?;
    Ok(Json(view(&state, job)))
}

#[utoipa::path(put, path = "/api/v1/jobs/{job}", tag = "jobs", params(("job" = String, Path, description = "Job id or name")),
    request_body = JobDefinition,
    responses((status = 200, body = JobView), (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn replace(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
    ApiJson(def): ApiJson<JobDefinition>,
) -> ApiResult<Json<JobView<'static>>> {
    let job = resolve(&state, &key).await?;
    let job = state
        .engine
        .update_job(job.id, def, &caller.identity.permissions, &caller.ctx())
        .await?;
    Ok(Json(view(&state, job)))
}

#[utoipa::path(delete, path = "/api/v1/jobs/{job}", tag = "jobs", params(("job" = String, Path, description = "Job id or name")),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let job = resolve(&state, &key).await?;
    state.engine.delete_job(job.id, &caller.ctx()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/jobs/{job}/enable", tag = "jobs", params(("job" = String, Path, description = "Job id or name")),
    responses((status = 200, body = JobView)))]
pub async fn enable(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<Json<JobView<'static>>> {
    let job = resolve(&state, &key).await?;
    Ok(Json(view(
        &state,
        state
            .engine
            .set_enabled(job.id, true, &caller.ctx())
            .await?,
    )))
}

#[utoipa::path(post, path = "/api/v1/jobs/{job}/disable", tag = "jobs", params(("job" = String, Path, description = "Job id or name")),
    responses((status = 200, body = JobView)))]
pub async fn disable(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<Json<JobView<'static>>> {
    let job = resolve(&state, &key).await?;
    Ok(Json(view(
        &state,
        state
            .engine
            .set_enabled(job.id, false, &caller.ctx())
            .await?,
    )))
}

#[utoipa::path(post, path = "/api/v1/jobs/{job}/run", tag = "jobs", params(("job" = String, Path, description = "Job id or name")),
    responses((status = 202, body = RunView, description = "The run, running or queued"),
        (status = 409, body = crate::error::ErrorBody, description = "The overlap policy refuses it; the message names the active run")))]
pub async fn run_now(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<RunView>)> {
    let job = resolve(&state, &key).await?;
    let run = state.engine.run_now(job.id, &caller.ctx()).await?;
    Ok((StatusCode::ACCEPTED, Json(run.into())))
}
