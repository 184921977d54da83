//! What services give the store to record runs and filter them. The entities
//! themselves (`Job`, `Run`, ...) are the domain's (`steward_domain::entity`).

use chrono::{DateTime, Utc};
pub use steward_domain::entity::{Job, Run};
use steward_domain::{JobId, JobName, RunId, RunOutcome, RunStatus, Trigger};

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
