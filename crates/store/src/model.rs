//! Rows as the rest of Steward sees them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use steward_domain::{JobDefinition, JobId, JobName, RunId, RunOutcome, RunStatus, Trigger};

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: JobId,
    pub definition: JobDefinition,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub schedule_cursor: Option<DateTime<Utc>>,
}

impl Job {
    pub fn name(&self) -> &JobName {
        &self.definition.name
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    pub id: RunId,
    pub job_id: JobId,
    pub job_name: JobName,
    pub status: RunStatus,
    pub trigger: Trigger,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub not_before: Option<DateTime<Utc>>,
    pub attempt: u32,
    pub parent_run_id: Option<RunId>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub output_truncated: bool,
}

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
    /// Set for runs recorded as `running` straight away (no wait before they start).
    pub started_at: Option<DateTime<Utc>>,
    /// Set for runs created already finished (`skipped`).
    pub error: Option<String>,
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
