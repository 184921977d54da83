//! The durable run queue: the life of a run on this node.
//!
//! ```text
//! scheduler ─occurrences─> recorder ──(batched INSERT, exactly once)──> queued
//! run_now ──submitter (batched; overlap checked and audit record written
//!            per run, on the batch's transaction)──> queued
//! queued ──dispatcher (a permit free; limits and locks checked on the claiming
//!          transaction)──> running, claimed by this node with a lease
//! running ──execution (the job kind's executor)──> ending
//! ending ──completer (batched; only while the claim holds; locks released,
//!          retry and chained runs queued on the same transaction)──> ended
//! lease ──renewed every LEASE/3 while the run executes; the rescuer marks
//!          runs whose lease ran out `abandoned` and queues their retries
//! ```
//!
//! Every occurrence is a row before anything else happens to it, so overload,
//! a crash or a restart cannot lose one: it runs, or it is recorded `skipped`
//! with the reason. Capacity is a semaphore of `max_active_runs` permits; a
//! [`Slot`] holds one for the whole life of an execution and gives it back
//! when dropped, on every path.

mod complete;
mod dispatch;
mod execute;
pub mod lease;
mod record;
mod submit;

use crate::kinds::KindRegistry;
use crate::metrics::{Metrics, StatusLabel};
use crate::output::OutputBuffer;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use steward_clock::Clock;
use steward_domain::{AuditRecord, JobId, RunHandle, RunId, RunStatus, Trigger};
use steward_store::{Job, NewRun, Run, Store, StoreError};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use record::Occurrence;

/// Picks a random delay in `[0, max]`; a parameter so tests can fix it.
pub type JitterFn = Arc<dyn Fn(Duration) -> Duration + Send + Sync>;

pub fn random_jitter() -> JitterFn {
    Arc::new(|max: Duration| {
        if max.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_millis(rand::random_range(
                0..=u64::try_from(max.as_millis()).unwrap_or(u64::MAX),
            ))
        }
    })
}

/// What the queue's tasks read, held until [`RunQueue::start`].
type Receivers = (
    mpsc::UnboundedReceiver<Vec<Occurrence>>,
    mpsc::UnboundedReceiver<complete::Ending>,
    mpsc::UnboundedReceiver<(RunId, RunHandle)>,
    mpsc::UnboundedReceiver<submit::Submission>,
);

/// The dispatcher's place among the queue's tasks.
const DISPATCHER: usize = 1;

/// How long a claim holds without renewal. A node renews its runs' leases
/// every third of it; a run whose node stopped renewing is rescued after it.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// The default of [`QueueSettings::prepare_ahead`]: long enough for a
/// burst of a few hundred runs at one instant to be prepared (measured in
/// docs/benchmarks.md), short enough that a run claimed early changes little
/// (its job's definition is read 1.5 s before the instant; its locks and
/// its place under the job's overlap policy are taken that much early).
/// Not a whole second: cron instants are whole seconds, and preparing the
/// next second's runs at the very instant the current second's runs `exec`
/// would compete with them for the CPU.
pub const PREPARE_AHEAD: Duration = Duration::from_millis(1500);

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("Steward is shutting down")]
    ShuttingDown,
    /// A manual run the overlap policy refuses: the caller is told which run
    /// is active instead of a `skipped` record of a click.
    #[error("a run of this job is still active (run {active}); its overlap policy is {policy}")]
    Overlap { active: RunId, policy: &'static str },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An occurrence recorded well after its instant by a `run_all` job: one of
/// the missed occurrences it catches up. These wait for each other, however
/// the job's overlap policy treats new work, and carry no default deadline.
pub(crate) fn is_catch_up(
    job: &Job,
    scheduled_for: Option<DateTime<Utc>>,
    recorded_at: DateTime<Utc>,
) -> bool {
    job.definition.policies.missed == steward_domain::MissedRunPolicy::RunAll
        && scheduled_for.is_some_and(|at| recorded_at - at > chrono::Duration::seconds(5))
}

/// Builds an audit record from the run it records (again, if the run is
/// written again after its batch's transaction failed).
pub type AuditOf = Box<dyn Fn(&Run) -> AuditRecord + Send + Sync>;

pub struct QueueSettings {
    /// This node's name in claims: stable across restarts, so a restarted
    /// node rescues what its previous process had claimed at once.
    pub node: String,
    pub output_limit: usize,
    /// Runs executing on this node at once, at most; the rest wait queued.
    pub max_active_runs: usize,
    pub lease: Duration,
    pub default_timezone: steward_domain::TimeZone,
    /// What each kind of job runs as (the built-in kinds and any added).
    pub kinds: KindRegistry,
    pub secrets: Arc<dyn crate::secrets::SecretSource>,
    /// How long before its instant a scheduled run is recorded and, if it
    /// could start, claimed and prepared: its start at the instant is then
    /// no longer behind the claim, the secrets, the cgroup and the process's
    /// making (see `dispatch`). Zero turns this off.
    pub prepare_ahead: Duration,
}

/// A run executing here: how to cancel it and where its live output is.
struct Active {
    cancel: CancellationToken,
    output: OutputBuffer,
}

/// One unit of capacity, held by an execution from its claim until its end
/// is recorded. Dropping it (on any path) frees the permit and wakes the
/// dispatcher.
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    wake: Arc<Notify>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.wake.notify_one();
    }
}

pub struct RunQueue {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    settings: QueueSettings,
    jitter: JitterFn,
    permits: Arc<Semaphore>,
    /// Wakes the dispatcher: a run was queued, a permit was freed.
    wake: Arc<Notify>,
    active: Mutex<HashMap<RunId, Active>>,
    /// Wakes whoever waits for a run to start executing here (followers of a
    /// queued run), when any does.
    started: Notify,
    executions: TaskTracker,
    /// Cancelled at shutdown: no more claims; runs being stopped use the short kill grace.
    stopping: CancellationToken,
    shutting_down: AtomicBool,
    recorder: mpsc::UnboundedSender<Vec<Occurrence>>,
    completer: mpsc::UnboundedSender<complete::Ending>,
    /// Handles of executing runs (`ExecContext::hold`), recorded in batches.
    handles: mpsc::UnboundedSender<(RunId, RunHandle)>,
    /// Manual runs to queue, written in batches (`submit`).
    submitter: mpsc::UnboundedSender<submit::Submission>,
    /// The background tasks (recorder, dispatcher, completer, lease keeper,
    /// handle recorder, output flusher, submitter).
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Stops the recorder, the completer, the lease keeper and the
    /// submitter once the last execution has ended.
    finished: CancellationToken,
    /// The tasks' inputs until [`RunQueue::start`] hands them over.
    receivers: Mutex<Option<Receivers>>,
}

impl RunQueue {
    /// The queue of this node; nothing runs until [`RunQueue::start`].
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
        settings: QueueSettings,
        jitter: JitterFn,
    ) -> Arc<Self> {
        let (recorder, occurrences) = mpsc::unbounded_channel();
        let (completer, endings) = mpsc::unbounded_channel();
        let (handles, held) = mpsc::unbounded_channel();
        let (submitter, submissions) = mpsc::unbounded_channel();
        Arc::new(Self {
            store,
            clock,
            metrics,
            permits: Arc::new(Semaphore::new(settings.max_active_runs.max(1))),
            settings,
            jitter,
            wake: Arc::new(Notify::new()),
            active: Mutex::default(),
            started: Notify::new(),
            executions: TaskTracker::new(),
            stopping: CancellationToken::new(),
            shutting_down: AtomicBool::new(false),
            recorder,
            completer,
            handles,
            submitter,
            tasks: Mutex::default(),
            finished: CancellationToken::new(),
            receivers: Mutex::new(Some((occurrences, endings, held, submissions))),
        })
    }

    /// Starts the recorder, dispatcher, completer and lease keeper: after
    /// start-up reconciliation (the rescue, the cgroup sweep), so that no
    /// new run starts while what the previous process left is cleaned up.
    pub fn start(self: &Arc<Self>) {
        let taken = self
            .receivers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some((occurrences, endings, held, submissions)) = taken else {
            return; // already started
        };
        // In this order: DISPATCHER is the index of the dispatcher.
        let tasks = vec![
            tokio::spawn(record::run(self.clone(), occurrences)),
            tokio::spawn(dispatch::run(self.clone())),
            tokio::spawn(complete::run(self.clone(), endings)),
            tokio::spawn(lease::run(self.clone())),
            tokio::spawn(execute::record_handles(self.clone(), held)),
            tokio::spawn(execute::flush_outputs(self.clone())),
            tokio::spawn(submit::run(self.clone(), submissions)),
        ];
        *self
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = tasks;
    }

    fn active(&self) -> MutexGuard<'_, HashMap<RunId, Active>> {
        // A panic while holding this lock would be a bug elsewhere; keep serving.
        self.active
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The next batch a queue task writes: waits for one item, then takes
    /// what else is waiting, up to `max`. None once the channel has closed
    /// or the queue has finished.
    async fn next_batch<T>(
        &self,
        rx: &mut mpsc::UnboundedReceiver<T>,
        max: usize,
    ) -> Option<Vec<T>> {
        let first = tokio::select! {
            biased;
            got = rx.recv() => got?,
            () = self.finished.cancelled() => return None,
        };
        let mut batch = vec![first];
        while batch.len() < max {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        Some(batch)
    }

    /// See [`QueueSettings::prepare_ahead`]; the scheduler records
    /// occurrences this far ahead.
    pub fn prepare_ahead(&self) -> Duration {
        self.settings.prepare_ahead
    }

    pub fn node(&self) -> &str {
        &self.settings.node
    }

    /// Hands scheduled occurrences to the recorder (never blocks the scheduler).
    pub fn record(&self, occurrences: Vec<Occurrence>) {
        if !occurrences.is_empty() && self.recorder.send(occurrences).is_err() {
            tracing::error!("the recorder has stopped; occurrences not recorded (the schedule cursor did not move, so the next start catches up)");
        }
    }

    /// Records occurrences now, on one transaction (start-up catch-up).
    pub async fn record_now(&self, occurrences: &[Occurrence]) -> Result<u64, StoreError> {
        let n = record::write(self, occurrences).await?;
        self.wake.notify_one();
        Ok(n)
    }

    /// Queues a manual run of `job`, subject to its overlap policy, checked
    /// on the transaction that records the run and its audit record (shared
    /// with the other manual runs asked for meanwhile: `submit`). Beyond
    /// capacity the run waits queued; it is never refused for load.
    pub async fn run_now(&self, job: JobId, audit: AuditOf) -> Result<Run, SubmitError> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(SubmitError::ShuttingDown);
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.submitter
            .send(submit::Submission { job, audit, reply })
            .map_err(|_| SubmitError::ShuttingDown)?;
        // Dropped unanswered when the queue's tasks have stopped, or when
        // writing its batch panicked (logged there).
        match answer.await {
            Ok(answer) => answer,
            Err(_) if self.shutting_down.load(Ordering::SeqCst) => Err(SubmitError::ShuttingDown),
            Err(_) => Err(SubmitError::Store(StoreError::Backend(
                "the manual run could not be recorded".into(),
            ))),
        }
    }

    /// A queued run of `job`, due at `due`: the job's own start deadline,
    /// if it sets one, counts from then.
    fn new_run(
        &self,
        job: &Job,
        trigger: Trigger,
        now: DateTime<Utc>,
        due: DateTime<Utc>,
    ) -> NewRun {
        NewRun {
            job_id: job.id,
            job_name: job.name().clone(),
            status: RunStatus::Queued,
            trigger,
            scheduled_for: None,
            not_before: None,
            attempt: 1,
            parent_run_id: None,
            created_at: now,
            start_deadline: job
                .definition
                .policies
                .start_deadline
                .map(|d| due + chrono::Duration::from_std(d.get()).unwrap_or_default()),
            error: None,
        }
    }

    /// The job's next occurrence after `after` (None if it is disabled or
    /// has no schedule): what job lists sort by.
    pub fn next_occurrence(&self, job: &Job, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let d = &job.definition;
        let tz = d.timezone.unwrap_or(self.settings.default_timezone);
        d.schedule
            .as_ref()
            .filter(|_| d.enabled)
            .and_then(|s| s.next_after(after, &tz))
    }

    /// Asks a run executing here to stop. False if it is not executing here.
    pub fn cancel(&self, run: RunId) -> bool {
        match self.active().get(&run) {
            Some(a) => {
                a.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// The live output of a run executing here.
    pub fn live_output(&self, run: RunId) -> Option<OutputBuffer> {
        self.active().get(&run).map(|a| a.output.clone())
    }

    /// Resolves when some run starts executing here after this was called
    /// (enable the future before checking, so that no start is missed).
    pub fn run_started(&self) -> tokio::sync::futures::Notified<'_> {
        self.started.notified()
    }

    /// Wakes the dispatcher (a run was queued by someone else).
    pub fn poke(&self) {
        self.wake.notify_one();
    }

    fn count_finished(&self, status: RunStatus, n: u64) {
        if n > 0 {
            self.metrics
                .runs_finished
                .get_or_create(&StatusLabel {
                    status: status.as_str().into(),
                })
                .inc_by(n);
        }
    }

    /// Stops claiming; waits up to `grace` for executing runs, then cancels
    /// them (SIGTERM, kill grace, SIGKILL) and waits for their records.
    /// Queued runs stay queued for the next start. Returns the runs it had
    /// to cancel.
    pub async fn shutdown(&self, grace: Duration) -> Vec<RunId> {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.stopping.cancel();
        self.wake.notify_one();
        // A claim pass under way finishes (and spawns what it claimed) before
        // the executions are counted: none starts after the wait below.
        let dispatcher = self
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_mut(DISPATCHER)
            .map(|t| std::mem::replace(t, tokio::spawn(async {})));
        if let Some(d) = dispatcher {
            let _ = d.await;
        }
        self.executions.close();
        let mut cancelled = vec![];
        if tokio::time::timeout(grace, self.executions.wait())
            .await
            .is_err()
        {
            cancelled = self
                .active()
                .iter()
                .map(|(id, a)| {
                    a.cancel.cancel();
                    *id
                })
                .collect();
            let ids: Vec<i64> = cancelled.iter().map(|r: &RunId| r.0).collect();
            tracing::warn!(runs = ?ids, "grace period over; cancelling running runs");
            self.executions.wait().await;
        }
        self.finished.cancel();
        let tasks = std::mem::take(
            &mut *self
                .tasks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for t in tasks {
            let _ = t.await;
        }
        cancelled
    }
}
