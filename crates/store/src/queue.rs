//! The durable run queue: what a transaction offers the engine's recorder,
//! dispatcher, completer and rescuer (`crates/engine/src/queue`).
//!
//! Runs wait here as `queued` rows, so the queue's length costs no memory. A
//! node claims a run (status `running`, `claimed_by`, `lease_until`) on the
//! same transaction that checks its limits and takes its resource locks, and
//! records its end only while the claim holds. The rules (overlap policy,
//! limits, which lock blocks what) are the engine's; these are the reads and
//! writes they need, each serialised with every other writer.

use crate::model::{Job, NewRun, Run, RunUpdate};
use crate::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use steward_domain::{JobId, JobName, LockName, RunHandle, RunId, Trigger};

/// A queued run that is due, with its job as stored now.
#[derive(Debug, Clone)]
pub struct DueRun {
    pub run: Run,
    pub job: Job,
    /// Its place in the queue (with the run id).
    pub due_at: DateTime<Utc>,
}

/// A run holding a resource lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    pub lock: LockName,
    pub run: RunId,
    pub job_name: JobName,
    /// The holders its job declared for the lock (1: exclusive).
    pub holders: u32,
}

/// A run whose lease expired, now `abandoned`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rescued {
    pub run: RunId,
    pub job: JobId,
    pub trigger: Trigger,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub attempt: u32,
    pub claimed_by: Option<String>,
    /// What it held outside Steward, for its kind to reconcile.
    pub handle: Option<RunHandle>,
    /// An operator had asked to cancel it: no retry follows.
    pub cancel_requested: bool,
}

/// What the dispatcher needs to know to sleep well.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueWake {
    /// A queued run is due, or its start deadline has passed.
    pub due_now: bool,
    /// The earliest instant after now at which one becomes due or expires.
    pub next: Option<DateTime<Utc>>,
    /// A queued scheduled run is due after now but by `prepare_until`: one
    /// the dispatcher may prepare ahead now.
    pub to_prepare: bool,
    /// The earliest due instant of a queued scheduled run after
    /// `prepare_until` (the dispatcher looks at it that much ahead).
    pub next_scheduled: Option<DateTime<Utc>>,
}

#[async_trait]
pub trait QueueReads: Send {
    /// What is due at `now`, and about scheduled runs due by
    /// `prepare_until` and after it (see [`QueueWake`]).
    async fn queue_wake(
        &mut self,
        now: DateTime<Utc>,
        prepare_until: DateTime<Utc>,
    ) -> Result<QueueWake>;
    /// Queued runs due at `now`, and scheduled ones due by `scheduled_by`
    /// (prepared ahead), in queue order (due instant, then id), after the
    /// `(due_at, id)` cursor, leaving out those of `skip_jobs` (found
    /// blocked earlier in the pass), each with its job as stored now.
    async fn due_runs(
        &mut self,
        now: DateTime<Utc>,
        scheduled_by: DateTime<Utc>,
        after: Option<(DateTime<Utc>, RunId)>,
        skip_jobs: &[JobId],
        limit: u32,
    ) -> Result<Vec<DueRun>>;
    /// The `running` runs of these jobs.
    async fn running_runs_of(&mut self, jobs: &[JobId]) -> Result<Vec<(JobId, RunId)>>;
    /// The job's runs that are queued or running, oldest first, at most `limit`.
    async fn active_runs_of(&mut self, job: JobId, limit: u32) -> Result<Vec<Run>>;
    /// Who holds these locks now.
    async fn lock_holders(&mut self, names: &[LockName]) -> Result<Vec<LockHolder>>;
    /// The running runs claimed by `claimant` that an operator asked to cancel.
    async fn cancel_requests(&mut self, claimant: &str) -> Result<Vec<RunId>>;
    /// How many runs are queued.
    async fn queued_count(&mut self) -> Result<u64>;
}

#[async_trait]
pub trait QueueWrites: Send {
    /// Records runs in one statement per chunk; a scheduled occurrence that
    /// already has a run is left alone (not an error). Returns how many were
    /// recorded.
    async fn enqueue_runs(&mut self, runs: &[NewRun]) -> Result<u64>;
    /// Records queued runs whose start deadline has passed as `skipped`,
    /// saying how long each waited. Returns how many.
    async fn skip_expired(&mut self, now: DateTime<Utc>) -> Result<u64>;
    /// `queued` → `running`, claimed by `claimant` until `lease_until`,
    /// starting at `started_at` (now, or the instant of a run prepared
    /// ahead). False if the run is no longer queued.
    async fn claim_run(
        &mut self,
        id: RunId,
        claimant: &str,
        started_at: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<bool>;
    /// Records that the claimed run `run` holds `lock`.
    async fn take_lock(&mut self, lock: &LockName, run: RunId, holders: u32) -> Result<()>;
    /// Says why a queued run waits (kept until it changes or the run starts).
    async fn set_waiting(&mut self, id: RunId, reason: &str) -> Result<()>;
    /// `queued` → `skipped` with the reason. False if no longer queued.
    async fn skip_queued(&mut self, id: RunId, at: DateTime<Utc>, reason: &str) -> Result<bool>;
    /// Records the end of a run claimed by `claimant` and releases its
    /// locks. False (nothing written) when the claim no longer holds: the
    /// run was rescued, or already ended.
    async fn finish_claimed(
        &mut self,
        id: RunId,
        claimant: &str,
        update: &RunUpdate,
    ) -> Result<bool>;
    /// Extends the lease of these runs, those of them `claimant` still has
    /// claimed: only runs it is executing, so a run that lost its execution
    /// (a claim whose commit was lost, an ending that could not be written)
    /// expires and is rescued. Returns how many.
    async fn renew_leases(
        &mut self,
        claimant: &str,
        runs: &[RunId],
        until: DateTime<Utc>,
    ) -> Result<u64>;
    /// Marks `abandoned` (releasing their locks) the running runs whose lease
    /// ended before `now`, or, with `all`, every running run (a Steward
    /// starting on a database only it may serve: nothing else runs them).
    async fn rescue_expired(&mut self, now: DateTime<Utc>, all: bool) -> Result<Vec<Rescued>>;
}
