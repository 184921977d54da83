//! `/api/v1/jobs`: thin adapters over the engine's job service.

use super::views::{JobView, RunView};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::extract::ApiPath;
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use steward_domain::{JobDefinition, JobId, JobName};
use steward_store::Job;

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

#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", responses((status = 200, body = super::views::JobList)))]
pub async fn list(State(state): State<AppState>) -> ApiResult<axum::response::Response> {
    let body = state
        .job_list
        .body(
            state.engine.jobs(),
            state.engine.default_timezone(),
            state.engine.clock().now(),
        )
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok(axum::response::IntoResponse::into_response((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )))
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
