//! Jobs and their runs: what a transaction can read ([`JobReads`]) and change
//! ([`JobWrites`]). The rules around them (what may be deleted, which runs may
//! start, when the schedule cursor moves) are the engine's; the run state
//! machine is the domain's, and the backends apply it in every status change.

use crate::model::{Job, JobQuery, NewRun, Run, RunFilter, RunUpdate};
use crate::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use steward_domain::{JobDefinition, JobId, JobName, RunHandle, RunId, RunStatus, SecretName};

/// When a job's runs last ended, read at start for the per-job metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastEndings {
    pub job: JobId,
    pub finished: DateTime<Utc>,
    pub succeeded: Option<DateTime<Utc>>,
}

#[async_trait]
pub trait JobReads: Send {
    async fn get_job(&mut self, id: JobId) -> Result<Job>;
    async fn find_job(&mut self, name: &JobName) -> Result<Option<Job>>;
    /// By name.
    async fn list_jobs(&mut self) -> Result<Vec<Job>>;
    /// One page of jobs matching the query, in its order, after its cursor.
    async fn list_jobs_page(&mut self, query: &JobQuery) -> Result<Vec<Job>>;
    async fn get_run(&mut self, id: RunId) -> Result<Run>;
    async fn run_output(&mut self, id: RunId) -> Result<Option<String>>;
    /// Newest first, `filter.before` as the cursor.
    async fn list_runs(&mut self, filter: &RunFilter) -> Result<Vec<Run>>;
    async fn count_runs_by_status(&mut self) -> Result<Vec<(RunStatus, i64)>>;
    /// For each job with a run that started and ended: when its last run
    /// ended, and when its last successful one did.
    async fn last_endings(&mut self) -> Result<Vec<LastEndings>>;
}

#[async_trait]
pub trait JobWrites: Send {
    /// Creates the job (with its tags, for the tag filter).
    async fn create_job(&mut self, def: &JobDefinition, now: DateTime<Utc>) -> Result<Job>;
    /// Replaces the definition (and its tags); the schedule cursor is kept.
    async fn update_job(
        &mut self,
        id: JobId,
        def: &JobDefinition,
        now: DateTime<Utc>,
    ) -> Result<Job>;
    /// Deletes the job with its runs.
    async fn delete_job(&mut self, id: JobId) -> Result<()>;
    /// Records which secrets a job's definition names (replacing what was there),
    /// so that "is this secret in use" is one indexed read in the deleting transaction.
    async fn set_job_secrets(&mut self, job: JobId, names: &[SecretName]) -> Result<()>;

    /// Inserts a run. A second `schedule` run for the same occurrence of a job
    /// is refused with `Conflict`: that is what makes firing exactly-once.
    async fn insert_run(&mut self, run: &NewRun) -> Result<Run>;
    /// Moves the job's schedule cursor forward to `to` (never back).
    async fn advance_cursor(&mut self, job: JobId, to: DateTime<Utc>) -> Result<()>;
    /// Records the job's next occurrence (None: it has none, or is disabled),
    /// by which job lists sort. With `if_updated_at`, only if the job was not
    /// changed since (a value computed from an older copy of the job loses).
    async fn set_next_run(
        &mut self,
        job: JobId,
        at: Option<DateTime<Utc>>,
        if_updated_at: Option<DateTime<Utc>>,
    ) -> Result<()>;
    /// Records the end of a run that may still end that way (the domain's state
    /// machine), releasing any lock it held. Returns false if it had already
    /// ended: the first ending wins. (A node ending a run it claimed uses
    /// `QueueWrites::finish_claimed`.)
    async fn finish_run(&mut self, id: RunId, update: &RunUpdate) -> Result<bool>;
    /// Saves the output of a run that is still running; an ended run is left alone.
    async fn save_run_output(&mut self, id: RunId, output: &str, truncated: bool) -> Result<()>;
    /// Records when an operator asked to cancel a running run.
    async fn request_cancel(&mut self, id: RunId, at: DateTime<Utc>) -> Result<bool>;
    /// Records what a running run holds outside Steward (its kind's handle),
    /// for the rescue after a crash. An ended run is left alone.
    async fn set_run_handle(&mut self, id: RunId, handle: &RunHandle) -> Result<()>;
    /// Deletes the oldest finished runs of a job beyond `keep`.
    async fn prune_runs(&mut self, job: JobId, keep: u32) -> Result<u64>;
}
