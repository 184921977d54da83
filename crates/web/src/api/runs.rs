//! `/api/v1/runs`: listing with filters and cursor pagination, detail, output
//! (stored or live), following output as server-sent events, cancel.

use super::views::{RunList, RunView};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiQuery;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use futures_util::stream::{self, Stream, StreamExt as _};
use serde::Deserialize;
use std::convert::Infallible;
use steward_domain::{RunId, RunStatus};
use steward_store::RunFilter;
use tokio::sync::broadcast::error::RecvError;

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
    let mut runs = state.engine.store().list_runs(&filter).await?;
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

fn run_id(raw: &str) -> ApiResult<RunId> {
    raw.parse::<i64>()
        .map(RunId)
        .map_err(|_| ApiError::invalid("run", "run ids are integers"))
}

#[utoipa::path(get, path = "/api/v1/runs/{run}", tag = "runs", params(("run" = i64, Path)),
    responses((status = 200, body = RunView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> ApiResult<Json<RunView>> {
    Ok(Json(
        state.engine.store().get_run(run_id(&raw)?).await?.into(),
    ))
}

#[utoipa::path(post, path = "/api/v1/runs/{run}/cancel", tag = "runs", params(("run" = i64, Path)),
    responses((status = 202, body = RunView), (status = 409, body = crate::error::ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<(axum::http::StatusCode, Json<RunView>)> {
    let run = state
        .engine
        .cancel_run(run_id(&raw)?, &caller.ctx())
        .await?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(run.into())))
}

#[utoipa::path(get, path = "/api/v1/runs/{run}/output", tag = "runs", params(("run" = i64, Path)),
    responses((status = 200, content_type = "text/plain", body = String,
        description = "Timestamped lines tagged out/err/sys; the output so far while running")))]
pub async fn output(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let id = run_id(&raw)?;
    let run = state.engine.store().get_run(id).await?;
    let text = match state.engine.live_output(id) {
        Some(live) if !run.status.is_terminal() => live.snapshot().0,
        _ => state
            .engine
            .store()
            .run_output(id)
            .await?
            .unwrap_or_default(),
    };
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text))
}

#[utoipa::path(get, path = "/api/v1/runs/{run}/output/follow", tag = "runs", params(("run" = i64, Path)),
    responses((status = 200, content_type = "text/event-stream",
        description = "`line` events with output lines, then one `end` event whose data is the final status")))]
pub async fn follow(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let id = run_id(&raw)?;
    let run = state.engine.store().get_run(id).await?;
    let live = if run.status.is_terminal() {
        None
    } else {
        state.engine.live_output(id)
    };
    let stream = match live {
        Some(buffer) => {
            // Subscribe before the snapshot; skip live lines the snapshot already holds.
            let rx = buffer.subscribe();
            let (snapshot, next_seq) = buffer.snapshot();
            drop(buffer);
            let head = stream::iter(lines_of(&snapshot));
            let engine = state.engine.clone();
            let tail = stream::unfold((rx, Some(engine)), move |(mut rx, engine)| async move {
                let engine = engine?;
                loop {
                    match rx.recv().await {
                        Ok(line) if line.seq < next_seq => continue,
                        Ok(line) => {
                            let text = line.text.trim_end_matches('\n').to_owned();
                            return Some((
                                Ok(Event::default().event("line").data(text)),
                                (rx, Some(engine)),
                            ));
                        }
                        Err(RecvError::Lagged(n)) => {
                            let ev = Event::default()
                                .event("line")
                                .data(format!("[steward: {n} lines skipped for this follower]"));
                            return Some((Ok(ev), (rx, Some(engine))));
                        }
                        Err(RecvError::Closed) => {
                            let status = final_status(&engine, id).await;
                            return Some((
                                Ok(Event::default().event("end").data(status)),
                                (rx, None),
                            ));
                        }
                    }
                }
            });
            head.chain(tail).boxed()
        }
        None => {
            let text = state
                .engine
                .store()
                .run_output(id)
                .await?
                .unwrap_or_default();
            let status = state.engine.store().get_run(id).await?.status;
            stream::iter(lines_of(&text))
                .chain(stream::once(async move {
                    Ok(Event::default().event("end").data(status.as_str()))
                }))
                .boxed()
        }
    };
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

fn lines_of(text: &str) -> Vec<Result<Event, Infallible>> {
    text.lines()
        .map(|l| Ok(Event::default().event("line").data(l)))
        .collect()
}

async fn final_status(engine: &steward_engine::Engine, id: RunId) -> String {
    // The record is written just before the live stream closes; read it back.
    match engine.store().get_run(id).await {
        Ok(r) => r.status.as_str().to_owned(),
        Err(_) => "unknown".to_owned(),
    }
}
