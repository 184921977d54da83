//! The REST API under `/api/v1` and its OpenAPI document.

pub mod jobs;
pub mod runs;
pub mod schedules;
pub mod views;

use crate::AppState;
use axum::routing::{get, post};
use axum::{Json, Router};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "Steward API", description = "Scheduled operations work: jobs, runs, schedules."),
    paths(
        jobs::list, jobs::create, jobs::show, jobs::replace, jobs::delete, jobs::enable, jobs::disable, jobs::run_now,
        runs::list, runs::show, runs::cancel, runs::output, runs::follow,
        schedules::preview,
    ),
    components(schemas(crate::error::ErrorBody, crate::error::ErrorDetail)),
    tags((name = "jobs"), (name = "runs"), (name = "schedules"))
)]
pub struct ApiDoc;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/openapi.json",
            get(|| async { Json(ApiDoc::openapi()) }),
        )
        .route("/api/v1/jobs", get(jobs::list).post(jobs::create))
        .route(
            "/api/v1/jobs/{job}",
            get(jobs::show).put(jobs::replace).delete(jobs::delete),
        )
        .route("/api/v1/jobs/{job}/enable", post(jobs::enable))
        .route("/api/v1/jobs/{job}/disable", post(jobs::disable))
        .route("/api/v1/jobs/{job}/run", post(jobs::run_now))
        .route("/api/v1/runs", get(runs::list))
        .route("/api/v1/runs/{run}", get(runs::show))
        .route("/api/v1/runs/{run}/cancel", post(runs::cancel))
        .route("/api/v1/runs/{run}/output", get(runs::output))
        .route("/api/v1/runs/{run}/output/follow", get(runs::follow))
        .route("/api/v1/schedules/preview", post(schedules::preview))
}
