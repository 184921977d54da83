//! What services give the store to record runs and filter them. The entities
//! themselves (`Job`, `Run`, ...) are the domain's (`steward_domain::entity`).

use chrono::{DateTime, Utc};
pub use steward_domain::entity::{Job, Run};
use steward_domain::{JobId, JobName, RunId, RunOutcome, RunStatus, Tag, Trigger};

#[derive(Debug, Clone)]
pub struct NewRun {
    pub job_id: JobId,
    pub job_name: JobName,
    pub status: RunStatus,
    pub trigger: Trigger,
    pub scheduled_for: Option<DateTime<Utc>>,
    /// A retry waits until this instant before it may start.
    pub not_before: Option<DateTime<Utc>>,
    pub attempt: u32,
    pub parent_run_id: Option<RunId>,
    pub created_at: DateTime<Utc>,
    /// A queued run not started by then is recorded as skipped.
    pub start_deadline: Option<DateTime<Utc>>,
    /// Set for runs created already finished (`skipped`).
    pub error: Option<String>,
}

impl NewRun {
    /// When the run may first be claimed: its retry or jitter delay, else its
    /// occurrence, else its creation. The queue is served in this order.
    pub fn due_at(&self) -> DateTime<Utc> {
        self.not_before
            .or(self.scheduled_for)
            .unwrap_or(self.created_at)
    }
}

/// The end of a run.
#[derive(Debug, Clone)]
pub struct RunUpdate {
    pub status: RunStatus,
    pub finished_at: DateTime<Utc>,
    pub outcome: RunOutcome,
    pub output: Option<String>,
    pub output_truncated: bool,
}

#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub job_id: Option<JobId>,
    pub status: Option<RunStatus>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Cursor: only runs with a smaller id.
    pub before: Option<RunId>,
    pub limit: u32,
}

/// The order of a job list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JobSort {
    #[default]
    Name,
    /// Soonest next occurrence first; jobs with none (unscheduled, disabled) last.
    NextRun,
}

/// Where the previous page of a job list ended: its last job's sort key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobCursor {
    Name(JobName),
    NextRun(Option<DateTime<Utc>>, JobName),
}

/// A page of jobs: filters (all must hold), order, cursor, size.
#[derive(Debug, Clone, Default)]
pub struct JobQuery {
    pub tag: Option<Tag>,
    /// Case-insensitive substring of the name.
    pub name_contains: Option<String>,
    pub enabled: Option<bool>,
    pub last_status: Option<RunStatus>,
    pub sort: JobSort,
    pub after: Option<JobCursor>,
    pub limit: u32,
}
