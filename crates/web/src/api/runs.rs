//! `/api/v1/runs`: listing with filters and cursor pagination, detail, output
//! (stored or live), following output as server-sent events, cancel.

use super::follow;
use super::views::{RunList, RunView};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiPath;
use crate::extract::ApiQuery;
use crate::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use steward_domain::{RunId, RunStatus};
use steward_store::RunFilter;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RunQuery {
    /// Job id or name.
    pub job: Option<String>,
    pub status: Option<RunStatus>,
    /// Runs created at or after this instant (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Runs created before this instant (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<i64>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/runs", tag = "runs", params(RunQuery),
    responses((status = 200, body = RunList), (status = 422, body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<RunQuery>,
) -> ApiResult<Json<RunList>> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 500"));
    }
    let job_id = match &q.job {
        Some(key) => Some(super::jobs::resolve(&state, key).await?.id),
        None => None,
    };
    let filter = RunFilter {
        job_id,
        status: q.status,
        since: q.since,
        until: q.until,
        before: q.cursor.map(RunId),
        limit: limit + 1,
    };
    let mut runs = state.engine.runs(&filter).await?;
    let more = runs.len() > limit as usize;
    runs.truncate(limit as usize);
    let next_cursor = if more {
        runs.last().map(|r| r.id)
    } else {
        None
    };
    Ok(Json(RunList {
        items: runs.into_iter().map(RunView::from).collect(),
        next_cursor,
    }))
}

#[utoipa::path(get, path = "/api/v1/runs/{run}", tag = "runs", params(("run" = i64, Path)),
    responses((status = 200, body = RunView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<i64>,
) -> ApiResult<Json<RunView>> {
    Ok(Json(state.engine.run(RunId(raw)).await?.into()))
}

#[utoipa::path(post, path = "/api/v1/runs/{run}/cancel", tag = "runs", params(("run" = i64, Path)),
    responses((status = 202, body = RunView), (status = 409, body = crate::error::ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(raw): ApiPath<i64>,
) -> ApiResult<(axum::http::StatusCode, Json<RunView>)> {
    let run = state.engine.cancel_run(RunId(raw), &caller.ctx()).await?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(run.into())))
}

#[utoipa::path(get, path = "/api/v1/runs/{run}/output", tag = "runs", params(("run" = i64, Path)),
    responses((status = 200, content_type = "text/plain", body = String,
        description = "Timestamped lines tagged out/err/sys; the output so far while running")))]
pub async fn output(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<i64>,
) -> ApiResult<impl IntoResponse> {
    let id = RunId(raw);
    let run = state.engine.run(id).await?;
    let text = match state.engine.live_output(id) {
        Some(live) if !run.status.is_terminal() => live.snapshot().text,
        _ => state.engine.stored_output(id).await?.unwrap_or_default(),
    };
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text))
}

#[utoipa::path(get, path = "/api/v1/runs/{run}/output/follow", tag = "runs", params(("run" = i64, Path)),
    responses((status = 200, content_type = "text/event-stream",
        description = "`line` events with output lines, then one `end` event whose data is the final status. \
            A follower that falls behind the kept output gets a `line` saying how many lines it skipped."),
        (status = 429, body = crate::error::ErrorBody,
            description = "Too many followers for this user (`api.max_followers_per_user`) or in total (`api.max_followers`)")))]
pub async fn follow(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(raw): ApiPath<i64>,
) -> ApiResult<impl axum::response::IntoResponse> {
    let id = RunId(raw);
    let run = state.engine.run(id).await?;
    let permit = state.followers.admit(caller.identity.user_id)?;
    let live = if run.status.is_terminal() {
        None
    } else {
        state.engine.live_output(id)
    };
    let events = if !run.status.is_terminal() && live.is_none() {
        // Queued, or claimed a moment ago: the response starts now, its
        // lines once the run's output is here.
        use futures_util::StreamExt as _;
        futures_util::stream::once(async move {
            let events = async {
                let (_, live) = state.engine.wait_for_output(id).await?;
                output_events(&state, id, live, permit).await
            };
            match events.await {
                Ok(events) => events,
                Err(_) => {
                    futures_util::stream::once(async { Ok(follow::end_frame("unknown")) }).boxed()
                }
            }
        })
        .flatten()
        .boxed()
    } else {
        output_events(&state, id, live, permit).await?
    };
    Ok(follow::response(events))
}

/// The live output of a run executing here, or the stored output of one
/// that ended.
async fn output_events(
    state: &AppState,
    id: RunId,
    live: Option<steward_engine::OutputBuffer>,
    permit: follow::FollowPermit,
) -> ApiResult<follow::Events> {
    Ok(match live {
        Some(buffer) => {
            let engine = state.engine.clone();
            follow::from_live(
                buffer,
                permit,
                state.followers.budget(),
                move || async move {
                    // The record is written just before the buffer ends; read it back.
                    match engine.run(id).await {
                        Ok(r) => r.status.as_str().to_owned(),
                        Err(_) => "unknown".to_owned(),
                    }
                },
            )
        }
        None => {
            let engine = state.engine.clone();
            let text = state
                .followers
                .stored_output(id, || async move { Ok(engine.stored_output(id).await?) })
                .await?;
            let status = state.engine.run(id).await?.status;
            follow::from_stored(
                text,
                status.as_str().to_owned(),
                permit,
                state.followers.budget(),
            )
        }
    })
}
