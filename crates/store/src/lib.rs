//! Persistence behind the [`Store`] trait.
//!
//! Callers see domain types only; each backend (SQLite now, PostgreSQL with the
//! scale-out issue) lives in its own module with its own migrations. Nothing here
//! knows about HTTP or processes.
#![forbid(unsafe_code)]

pub mod access;
pub mod audit;
mod model;
pub mod secrets;
pub mod sqlite;

pub use access::AccessStore;
pub use audit::AuditStore;
pub use model::{Job, NewRun, Run, RunFilter, RunUpdate};
pub use secrets::SecretStore;
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use steward_domain::{AuditRecord, JobDefinition, JobId, JobName, RunId, RunStatus};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A uniqueness rule was violated; the text names what already exists.
    #[error("{0}")]
    Conflict(String),
    #[error("database error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Everything the services need from storage. Implementations must be safe to
/// call from many tasks at once.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap round trip to the database, for `/readyz`.
    async fn ping(&self) -> Result<()>;

    /// Job changes write their audit record in the same transaction.
    async fn create_job(
        &self,
        def: &JobDefinition,
        now: DateTime<Utc>,
        audit: &AuditRecord,
    ) -> Result<Job>;
    /// Replaces the definition; the schedule cursor is kept.
    async fn update_job(
        &self,
        id: JobId,
        def: &JobDefinition,
        now: DateTime<Utc>,
        audit: &AuditRecord,
    ) -> Result<Job>;
    async fn delete_job(&self, id: JobId, audit: &AuditRecord) -> Result<()>;
    async fn get_job(&self, id: JobId) -> Result<Job>;
    async fn find_job(&self, name: &JobName) -> Result<Option<Job>>;
    async fn list_jobs(&self) -> Result<Vec<Job>>;

    /// Inserts a run. A `schedule` run also moves the job's schedule cursor to its
    /// occurrence, in the same transaction; a second run for the same occurrence is
    /// refused with `Conflict`, which is what makes firing exactly-once.
    async fn insert_run(&self, run: &NewRun) -> Result<Run>;
    /// Moves the cursor without a run (occurrences forgotten by the missed-run policy).
    async fn advance_cursor(&self, job: JobId, to: DateTime<Utc>) -> Result<()>;
    /// `queued` → `running`. Returns false if the run was no longer queued.
    async fn start_run(&self, id: RunId, at: DateTime<Utc>) -> Result<bool>;
    /// Records the end of a run that is queued or running. Returns false if it had
    /// already ended (the first ending wins).
    async fn finish_run(&self, id: RunId, update: &RunUpdate) -> Result<bool>;
    /// Saves the output of a run that is still running (its final record
    /// replaces it); a run that has ended is left alone.
    async fn save_run_output(&self, id: RunId, output: &str, truncated: bool) -> Result<()>;
    async fn get_run(&self, id: RunId) -> Result<Run>;
    async fn run_output(&self, id: RunId) -> Result<Option<String>>;
    /// Newest first, `filter.before` as the cursor.
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<Run>>;
    /// Records the process group of a running command run.
    async fn set_run_process_group(&self, id: RunId, pgid: i32) -> Result<()>;
    /// Marks every `running` run `abandoned` (start-up after a crash); returns
    /// each with the process group it recorded, if any.
    async fn abandon_running(&self, at: DateTime<Utc>) -> Result<Vec<(RunId, Option<i32>)>>;
    /// Runs still waiting to start, oldest first.
    async fn queued_runs(&self) -> Result<Vec<Run>>;
    /// Deletes the oldest finished runs of a job beyond `keep`.
    async fn prune_runs(&self, job: JobId, keep: u32) -> Result<u64>;
    async fn count_runs_by_status(&self) -> Result<Vec<(RunStatus, i64)>>;
    /// For each job with a run that started and ended: when its last run
    /// ended, and when its last successful one did (the metrics' start point).
    async fn last_endings(&self) -> Result<Vec<LastEndings>>;
}

/// When a job's runs last ended, read at start for the per-job metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastEndings {
    pub job: JobId,
    pub finished: DateTime<Utc>,
    pub succeeded: Option<DateTime<Utc>>,
}
