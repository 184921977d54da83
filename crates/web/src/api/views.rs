//! What the API returns. Views are built from store rows; they are the contract
//! described in the OpenAPI document.

use chrono::{DateTime, Utc};
use serde::Serialize;
use steward_domain::{JobDefinition, JobId, RunId, RunStatus, TimeZone, Trigger};
use steward_store::{Job, Run};

/// A job as the API shows it. Borrows the definition when it can: listing
/// jobs then copies nothing but the bytes it writes.
#[derive(Serialize, utoipa::ToSchema)]
pub struct JobView<'a> {
    pub id: JobId,
    #[serde(flatten)]
    pub definition: std::borrow::Cow<'a, JobDefinition>,
    /// The zone the schedule is evaluated in (the job's own or the server default).
    #[schema(value_type = String)]
    pub effective_timezone: TimeZone,
    /// Next scheduled occurrence, if enabled and scheduled.
    pub next_run_at: Option<DateTime<Utc>>,
    /// How the job's most recently ended run ended.
    pub last_status: Option<RunStatus>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The zone a job's schedule is read in and its next occurrence after `now`.
fn schedule_of(
    job: &Job,
    default_tz: TimeZone,
    now: DateTime<Utc>,
) -> (TimeZone, Option<DateTime<Utc>>) {
    let tz = job.definition.timezone.unwrap_or(default_tz);
    let next = if job.definition.enabled {
        job.definition
            .schedule
            .as_ref()
            .and_then(|s| s.next_after(now, &tz))
    } else {
        None
    };
    (tz, next)
}

impl JobView<'static> {
    pub fn new(job: Job, default_tz: TimeZone, now: DateTime<Utc>) -> Self {
        let (effective_timezone, next_run_at) = schedule_of(&job, default_tz, now);
        Self {
            id: job.id,
            effective_timezone,
            next_run_at,
            last_status: job.last_status,
            created_at: job.created_at,
            updated_at: job.updated_at,
            definition: std::borrow::Cow::Owned(job.definition),
        }
    }
}

impl<'a> JobView<'a> {
    /// A view borrowing `job`'s definition.
    pub fn of(job: &'a Job, default_tz: TimeZone, now: DateTime<Utc>) -> Self {
        let (effective_timezone, next_run_at) = schedule_of(job, default_tz, now);
        Self {
            id: job.id,
            definition: std::borrow::Cow::Borrowed(&job.definition),
            effective_timezone,
            next_run_at,
            last_status: job.last_status,
            created_at: job.created_at,
            updated_at: job.updated_at,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct JobList<'a> {
    pub items: Vec<JobView<'a>>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RunView {
    pub id: RunId,
    pub job_id: JobId,
    pub job_name: String,
    pub status: RunStatus,
    pub trigger: Trigger,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub not_before: Option<DateTime<Utc>>,
    pub attempt: u32,
    pub parent_run_id: Option<RunId>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// How the run ended, as its job's kind tells it: a command's
    /// `{"exit_code": 0}` or `{"signal": 9}`, an HTTP call's
    /// `{"status": 204}`; an object whose shape is the kind's. Null until it
    /// ended, or when it never got that far.
    #[schema(value_type = Option<Object>)]
    pub outcome: Option<serde_json::Value>,
    pub error: Option<String>,
    pub output_truncated: bool,
    /// Why a queued run has not started: a lock and its holder, the job's
    /// running run, its start time, or no free place on the node.
    pub waiting_for: Option<String>,
    /// The node that claimed the run to execute it.
    pub claimed_by: Option<String>,
    /// A queued run not started by then is recorded as skipped.
    pub start_deadline: Option<DateTime<Utc>>,
}

impl From<Run> for RunView {
    fn from(r: Run) -> Self {
        Self {
            id: r.id,
            job_id: r.job_id,
            job_name: r.job_name.to_string(),
            status: r.status,
            trigger: r.trigger,
            scheduled_for: r.scheduled_for,
            not_before: r.not_before,
            attempt: r.attempt,
            parent_run_id: r.parent_run_id,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            waiting_for: waiting_for(&r),
            outcome: r.outcome,
            error: r.error,
            output_truncated: r.output_truncated,
            claimed_by: r.claimed_by,
            start_deadline: r.start_deadline,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RunList {
    pub items: Vec<RunView>,
    /// Pass as `cursor` to get the next (older) page; absent on the last page.
    pub next_cursor: Option<RunId>,
}

/// How many sessions a sign-out everywhere ended.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionsEnded {
    pub sessions_ended: u64,
}

/// A human-readable acknowledgement.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Message {
    pub message: String,
}

/// The roles a user now holds directly.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RoleNames {
    pub roles: Vec<String>,
}

/// The dispatcher's stated reason, or what a queued run without one waits for.
fn waiting_for(r: &Run) -> Option<String> {
    if r.status != RunStatus::Queued {
        return None;
    }
    Some(match (&r.waiting_for, r.not_before) {
        (Some(why), _) => why.clone(),
        (None, Some(t)) => format!(
            "waiting for its start time (retry delay or jitter): {}",
            t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        ),
        (None, None) => "waiting for a free place to run (executor.max_active_runs)".into(),
    })
}
