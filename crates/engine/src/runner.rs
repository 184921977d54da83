//! The runner owns runs from creation to their final record: overlap policy,
//! jitter and retry delays, executing, cancelling, retries, chains, history
//! pruning and the live output of running runs.
//!
//! It keeps per-job slot counts in memory (one process owns the SQLite store);
//! the scale-out issue moves admission into the store with leases.

use crate::executor::command::{self, CommandSettings};
use crate::executor::http::HttpExecutor;
use crate::executor::{ExecContext, ExecResult};
use crate::metrics::{KindLabel, Metrics, StatusLabel};
use crate::output::OutputBuffer;
use chrono::{DateTime, Utc};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use steward_clock::Clock;
use steward_domain::{
    AuditRecord, JobName, JobSpec, OverlapPolicy, RunId, RunOutcome, RunStatus, Trigger,
};
use steward_store::{read_one, write_one, Job, NewRun, Run, RunUpdate, Store, StoreError};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("Steward is shutting down")]
    ShuttingDown,
    #[error("Steward is at its limit of {0} active runs (executor.max_active_runs)")]
    Saturated(usize),
    /// A manual run the overlap policy refuses: the caller is told which run
    /// is active instead of a `skipped` record of a click.
    #[error("a run of this job is still active{}; its overlap policy is {policy}",
        .active.map(|r| format!(" (run {r})")).unwrap_or_default())]
    Overlap {
        /// None while the active run's record is still being written.
        active: Option<RunId>,
        policy: &'static str,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a run is being created.
pub struct Submit {
    pub trigger: Trigger,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub attempt: u32,
    pub parent: Option<RunId>,
    pub not_before: Option<DateTime<Utc>>,
    /// The caller already holds a slot from [`Runner::try_reserve`].
    pub reserved: bool,
    /// The audit record of the request (a manual run), written on the
    /// transaction that records the run.
    pub audit: Option<AuditOf>,
}

/// Builds an audit record from the run it records.
pub type AuditOf = Box<dyn FnOnce(&Run) -> AuditRecord + Send + Sync>;

impl Submit {
    pub fn new(trigger: Trigger) -> Self {
        Self {
            trigger,
            scheduled_for: None,
            attempt: 1,
            parent: None,
            not_before: None,
            reserved: false,
            audit: None,
        }
    }
}

pub struct RunnerSettings {
    pub output_limit: usize,
    /// Runs admitted and not finished (waiting, delayed or executing), at most.
    /// Past it, scheduled, retry and chain runs are recorded as skipped and
    /// manual runs are refused: overload sheds work visibly instead of queueing
    /// without bound.
    pub max_active_runs: usize,
    pub command: CommandSettings,
    pub secrets: Arc<dyn crate::secrets::SecretSource>,
}

struct Active {
    job: steward_domain::JobId,
    cancel: CancellationToken,
    output: OutputBuffer,
}

#[derive(Default)]
struct Slots {
    /// Runs admitted and not yet finished (including those in their jitter delay).
    running: usize,
    /// Runs waiting for a slot (overlap `queue`); each is woken by its sender.
    waiting: VecDeque<oneshot::Sender<()>>,
}

#[derive(Default)]
struct State {
    active: HashMap<RunId, Active>,
    slots: HashMap<steward_domain::JobId, Slots>,
    /// Runs finished per job since its history was last pruned.
    since_prune: HashMap<steward_domain::JobId, u32>,
    /// Admitted runs whose record is being written (not yet in `active`).
    reserved: usize,
}

enum Gate {
    Admitted,
    Waiting(oneshot::Receiver<()>),
}

pub struct Runner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    http: HttpExecutor,
    settings: RunnerSettings,
    jitter: JitterFn,
    state: Mutex<State>,
    tracker: TaskTracker,
    /// Stops runs that have not started yet, leaving them `queued` for the next start.
    stopping: CancellationToken,
    shutting_down: AtomicBool,
}

impl Runner {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
        http: HttpExecutor,
        settings: RunnerSettings,
        jitter: JitterFn,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            clock,
            metrics,
            http,
            settings,
            jitter,
            state: Mutex::new(State::default()),
            tracker: TaskTracker::new(),
            stopping: CancellationToken::new(),
            shutting_down: AtomicBool::new(false),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock would be a bug elsewhere; keep serving.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Creates a run for `job` and starts driving it, applying the overlap policy.
    /// Returns the recorded run (possibly `skipped`). A scheduled occurrence that
    /// already has a run gives `Store(Conflict)`.
    pub fn submit(
        self: &Arc<Self>,
        job: Arc<Job>,
        req: Submit,
    ) -> Pin<Box<dyn Future<Output = Result<Run, SubmitError>> + Send + '_>> {
        Box::pin(async move {
            if self.shutting_down.load(Ordering::SeqCst) {
                if req.reserved {
                    self.unreserve();
                }
                return Err(SubmitError::ShuttingDown);
            }
            let now = self.clock.now();
            let overlap = job.definition.policies.overlap;
            // Decide under the lock, then record; undo the reservation if recording fails.
            let decision = {
                let mut st = self.state();
                let max = self.settings.max_active_runs;
                let saturated = !req.reserved && st.active.len() + st.reserved >= max;
                let slots = st.slots.entry(job.id).or_default();
                slots.waiting.retain(|w| !w.is_closed());
                let busy = slots.running > 0 || !slots.waiting.is_empty();
                let admit_anyway =
                    matches!(req.trigger, Trigger::Retry) || overlap == OverlapPolicy::Allow;
                let d = if saturated && req.trigger == Trigger::Manual {
                    Err(SubmitError::Saturated(max))
                } else if saturated {
                    Ok(Err(format!(
                        "skipped: Steward is at its limit of {max} active runs (executor.max_active_runs)"
                    )))
                } else if admit_anyway || !busy {
                    slots.running += 1;
                    Ok(Ok(Gate::Admitted))
                } else if overlap == OverlapPolicy::Queue && slots.waiting.is_empty() {
                    let (tx, rx) = oneshot::channel();
                    slots.waiting.push_back(tx);
                    Ok(Ok(Gate::Waiting(rx)))
                } else if req.trigger == Trigger::Manual {
                    let active = st
                        .active
                        .iter()
                        .filter(|(_, a)| a.job == job.id)
                        .map(|(id, _)| *id)
                        .min();
                    Err(SubmitError::Overlap {
                        active,
                        policy: if overlap == OverlapPolicy::Queue {
                            "queue, and one run is already waiting"
                        } else {
                            "skip"
                        },
                    })
                } else {
                    Ok(Err(format!(
                        "skipped: a run of this job is still active (overlap policy {})",
                        if overlap == OverlapPolicy::Queue {
                            "queue, and one run is already waiting"
                        } else {
                            "skip"
                        }
                    )))
                };
                match (&d, req.reserved) {
                    (Ok(Ok(_)), false) => st.reserved += 1,
                    (Ok(Ok(_)), true) => {}
                    (_, true) => st.reserved = st.reserved.saturating_sub(1), // not admitted: give the slot back
                    (_, false) => {}
                }
                d
            };
            let gate = match decision? {
                Ok(gate) => gate,
                Err(reason) => {
                    let skipped = self.new_run(&job, &req, RunStatus::Skipped, now, Some(reason));
                    let run = self.record(&skipped, req.audit).await?;
                    self.metrics
                        .runs_finished
                        .get_or_create(&StatusLabel {
                            status: "skipped".into(),
                        })
                        .inc();
                    return Ok(run);
                }
            };
            // A run with nothing to wait for is recorded as running in the same
            // statement that creates it: one write before the process starts.
            let immediate = matches!(gate, Gate::Admitted)
                && req.not_before.is_none_or(|t| t <= now)
                && (req.trigger != Trigger::Schedule
                    || job.definition.policies.jitter.get().is_zero());
            let mut new = self.new_run(&job, &req, RunStatus::Queued, now, None);
            if immediate {
                new.status = RunStatus::Running;
                new.started_at = Some(now);
            }
            let run = match self.record(&new, req.audit).await {
                Ok(r) => r,
                Err(e) => {
                    self.unreserve();
                    if matches!(gate, Gate::Admitted) {
                        self.release(&job);
                    }
                    return Err(e.into());
                }
            };
            self.unreserve();
            self.spawn_drive(job, run.clone(), gate);
            Ok(run)
        })
    }

    /// Records a new run in one transaction: the run, the schedule cursor
    /// moved to its occurrence (so missed-run detection never disagrees with
    /// the runs that exist), and the request's audit record.
    async fn record(&self, new: &NewRun, audit: Option<AuditOf>) -> Result<Run, StoreError> {
        let mut tx = self.store.write().await?;
        let run = tx.insert_run(new).await?;
        if let (Trigger::Schedule, Some(at)) = (new.trigger, new.scheduled_for) {
            tx.advance_cursor(new.job_id, at).await?;
        }
        if let Some(audit) = audit {
            tx.append_audit(&audit(&run)).await?;
        }
        tx.commit().await?;
        Ok(run)
    }

    /// Takes a slot for a run about to be submitted with `reserved: true`, or
    /// says there is none. Taken synchronously, so a burst of occurrences due at
    /// the same instant cannot all pass the check before any is admitted.
    pub fn try_reserve(&self) -> bool {
        let mut st = self.state();
        if st.active.len() + st.reserved >= self.settings.max_active_runs {
            return false;
        }
        st.reserved += 1;
        true
    }

    /// Returns a slot taken by `try_reserve` or by `submit`'s admission.
    fn unreserve(&self) {
        let mut st = self.state();
        st.reserved = st.reserved.saturating_sub(1);
    }

    /// Picks up a run left `queued` by a previous process (a pending retry or a
    /// waiting run): it is admitted directly, honouring its `not_before`.
    pub fn resume(self: &Arc<Self>, job: Arc<Job>, run: Run) {
        self.state().slots.entry(job.id).or_default().running += 1;
        self.spawn_drive(job, run, Gate::Admitted);
    }

    fn new_run(
        &self,
        job: &Job,
        req: &Submit,
        status: RunStatus,
        now: DateTime<Utc>,
        error: Option<String>,
    ) -> NewRun {
        NewRun {
            job_id: job.id,
            job_name: job.name().clone(),
            status,
            trigger: req.trigger,
            scheduled_for: req.scheduled_for,
            not_before: req.not_before,
            attempt: req.attempt,
            parent_run_id: req.parent,
            created_at: now,
            started_at: None,
            error,
        }
    }

    fn spawn_drive(self: &Arc<Self>, job: Arc<Job>, run: Run, gate: Gate) {
        let cancel = CancellationToken::new();
        let output = OutputBuffer::new(self.settings.output_limit);
        self.state().active.insert(
            run.id,
            Active {
                job: job.id,
                cancel: cancel.clone(),
                output: output.clone(),
            },
        );
        let this = self.clone();
        let fut: Pin<Box<dyn Future<Output = ()> + Send>> =
            Box::pin(async move { this.drive(job, run, gate, cancel, output).await });
        self.tracker.spawn(fut);
    }

    /// The attempt's spec with `${secret:NAME}` filled in, and the values set
    /// as masks on its output. Borrowed unchanged when it references nothing.
    async fn open_secrets<'a>(
        &self,
        spec: &'a JobSpec,
        output: &OutputBuffer,
    ) -> Result<std::borrow::Cow<'a, JobSpec>, String> {
        let names = crate::secrets::spec_references(spec).map_err(|e| e.to_string())?;
        if names.is_empty() {
            return Ok(std::borrow::Cow::Borrowed(spec));
        }
        let names: Vec<_> = names.into_iter().collect();
        let opened = self
            .settings
            .secrets
            .open(&names)
            .await
            .map_err(|e| format!("could not open the job's secrets: {e}"))?;
        output.set_masks(opened.iter().map(|(_, v)| v.clone()).collect());
        let values = opened.into_iter().collect();
        crate::secrets::substitute_spec(spec, &values).map(std::borrow::Cow::Owned)
    }

    /// Frees the job's slot and wakes the next waiting run, if any.
    fn release(&self, job: &Job) {
        let mut st = self.state();
        let slots = st.slots.entry(job.id).or_default();
        slots.running = slots.running.saturating_sub(1);
        while let Some(next) = slots.waiting.pop_front() {
            if next.send(()).is_ok() {
                slots.running += 1;
                break;
            }
        }
        if slots.running == 0 && slots.waiting.is_empty() {
            st.slots.remove(&job.id);
        }
    }

    async fn drive(
        self: Arc<Self>,
        job: Arc<Job>,
        run: Run,
        gate: Gate,
        cancel: CancellationToken,
        output: OutputBuffer,
    ) {
        let admitted = match gate {
            Gate::Admitted => true,
            Gate::Waiting(mut rx) => {
                let outcome = tokio::select! {
                    biased;
                    r = &mut rx => Some(r.is_ok()),
                    () = cancel.cancelled() => Some(false),
                    () = self.stopping.cancelled() => None,
                };
                if outcome != Some(true) {
                    // A slot handed over while we were giving up is ours to give back.
                    rx.close();
                    if rx.try_recv().is_ok() {
                        self.release(&job);
                    }
                }
                match outcome {
                    Some(admitted) => admitted,
                    None => {
                        self.forget(run.id);
                        return;
                    }
                }
            }
        };
        if !admitted {
            self.end_unstarted(&run, "cancelled before it started")
                .await;
            return;
        }
        let started_at = if run.status == RunStatus::Running {
            run.started_at.unwrap_or_else(|| self.clock.now())
        } else {
            match self.wait_and_start(&job, &run, &cancel).await {
                Some(t) => t,
                None => return,
            }
        };
        self.metrics.runs_running.inc();
        tracing::info!(run = %run.id, job = %job.name(), trigger = run.trigger.as_str(), attempt = run.attempt, "run started");

        let ctx = ExecContext {
            run: run.id,
            timeout: job.definition.policies.timeout.get(),
            cancel: cancel.clone(),
            stopping: self.stopping.clone(),
            output: output.clone(),
            clock: self.clock.clone(),
            env: vec![
                ("STEWARD_RUN_ID".into(), run.id.to_string()),
                ("STEWARD_JOB_NAME".into(), job.name().to_string()),
                ("STEWARD_ATTEMPT".into(), run.attempt.to_string()),
            ]
            .into_iter()
            .chain(run.scheduled_for.map(|t| {
                (
                    "STEWARD_SCHEDULED_FOR".into(),
                    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                )
            }))
            .collect(),
            on_spawn: {
                let store = self.store.clone();
                let id = run.id;
                Box::new(move |pgid| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        if let Err(e) = write_one!(store.as_ref(), |tx| tx
                            .set_run_process_group(id, pgid))
                        .await
                        {
                            tracing::warn!(run = %id, error = %e, "could not record the process group");
                        }
                    });
                })
            },
        };
        // What the run prints reaches the store while it runs, so a crash of
        // Steward keeps it (the final record replaces it).
        let stop_flushing = CancellationToken::new();
        let flusher = tokio::spawn(flush_output(
            self.store.clone(),
            run.id,
            output.clone(),
            stop_flushing.clone(),
        ));
        let mut result: ExecResult = match self.open_secrets(&job.definition.spec, &output).await {
            Ok(spec) => match spec.as_ref() {
                JobSpec::Command(spec) => {
                    command::execute(spec, &self.settings.command, &ctx).await
                }
                JobSpec::Http(spec) => self.http.execute(spec, &ctx).await,
            },
            Err(e) => {
                ctx.note(&e);
                ExecResult::failed(e)
            }
        };
        // An error message may quote what the process or server said.
        result.outcome.error = result.outcome.error.map(|e| output.mask(&e));
        if result.status == RunStatus::Cancelled && self.shutting_down.load(Ordering::SeqCst) {
            result.outcome.error =
                Some("cancelled: Steward shut down and the grace period ran out".into());
        }
        stop_flushing.cancel();
        let _ = flusher.await;
        let finished_at = self.clock.now();
        let captured = output.snapshot();
        let update = RunUpdate {
            status: result.status,
            finished_at,
            outcome: result.outcome.clone(),
            output: Some(captured.text),
            output_truncated: captured.truncated,
        };
        if let Err(e) = write_one!(self.store.as_ref(), |tx| tx.finish_run(run.id, &update)).await {
            tracing::error!(run = %run.id, error = %e, "could not record the end of a run");
        }
        self.metrics.runs_running.dec();
        let label = crate::metrics::JobLabel {
            job: job.name().to_string(),
        };
        self.metrics
            .job_last_finish
            .get_or_create(&label)
            .set(finished_at.timestamp());
        if result.status == RunStatus::Succeeded {
            self.metrics
                .job_last_success
                .get_or_create(&label)
                .set(finished_at.timestamp());
        }
        self.metrics
            .runs_finished
            .get_or_create(&StatusLabel {
                status: result.status.as_str().into(),
            })
            .inc();
        let secs = (finished_at - started_at)
            .to_std()
            .unwrap_or_default()
            .as_secs_f64();
        self.metrics
            .run_duration
            .get_or_create(&KindLabel {
                kind: job.definition.spec.kind().into(),
            })
            .observe(secs);
        tracing::info!(run = %run.id, job = %job.name(), status = result.status.as_str(), seconds = secs, "run finished");
        self.release(&job);
        self.forget(run.id);
        self.follow_up(&job, &run, result.status).await;
        // Pruning costs a write; do it once per tenth of the limit, so the history
        // may exceed `history_limit` by up to 10% between prunes.
        let limit = job.definition.policies.history_limit;
        let prune_due = {
            let mut st = self.state();
            let n = st.since_prune.entry(job.id).or_insert(0);
            *n += 1;
            let due = *n >= (limit / 10).max(1);
            if due {
                *n = 0;
            }
            due
        };
        if !prune_due {
            return;
        }
        if let Err(e) = write_one!(self.store.as_ref(), |tx| tx.prune_runs(job.id, limit)).await {
            tracing::warn!(job = %job.name(), error = %e, "could not prune run history");
        }
    }

    /// Waits out the retry delay and the schedule jitter, then marks the run
    /// running. `None` when it was cancelled or stopped meanwhile (already settled).
    async fn wait_and_start(
        &self,
        job: &Arc<Job>,
        run: &Run,
        cancel: &CancellationToken,
    ) -> Option<DateTime<Utc>> {
        // Wait for the retry delay and the schedule jitter.
        let mut start_at = run.not_before.unwrap_or(run.created_at);
        if run.trigger == Trigger::Schedule {
            let jitter = (self.jitter)(job.definition.policies.jitter.get());
            start_at = start_at.max(run.created_at)
                + chrono::Duration::from_std(jitter).unwrap_or_default();
        }
        if start_at > self.clock.now() {
            tokio::select! {
                () = self.clock.sleep_until(start_at) => {}
                () = cancel.cancelled() => {
                    self.release(job);
                    self.end_unstarted(run, "cancelled before it started").await;
                    return None;
                }
                () = self.stopping.cancelled() => { self.release(job); self.forget(run.id); return None; }
            }
        }
        if self.stopping.is_cancelled() {
            self.release(job);
            self.forget(run.id);
            return None;
        }
        let started_at = self.clock.now();
        match write_one!(self.store.as_ref(), |tx| tx.start_run(run.id, started_at)).await {
            Ok(true) => {}
            Ok(false) => {
                // Cancelled through the store while waiting.
                self.release(job);
                self.forget(run.id);
                return None;
            }
            Err(e) => {
                tracing::error!(run = %run.id, error = %e, "could not mark run as started");
                self.release(job);
                self.forget(run.id);
                return None;
            }
        }
        Some(started_at)
    }

    /// The run is settled (or left queued for the next start): it leaves the
    /// registry and its followers get their end.
    fn forget(&self, run: RunId) {
        let gone = self.state().active.remove(&run);
        if let Some(a) = gone {
            a.output.close();
        }
    }

    async fn end_unstarted(&self, run: &Run, why: &str) {
        let update = RunUpdate {
            status: RunStatus::Cancelled,
            finished_at: self.clock.now(),
            outcome: RunOutcome {
                error: Some(why.into()),
                ..Default::default()
            },
            output: None,
            output_truncated: false,
        };
        if let Err(e) = write_one!(self.store.as_ref(), |tx| tx.finish_run(run.id, &update)).await {
            tracing::error!(run = %run.id, error = %e, "could not record a cancelled run");
        }
        self.forget(run.id);
    }

    /// Retries, then chains. Nothing follows while shutting down.
    async fn follow_up(self: &Arc<Self>, job: &Arc<Job>, run: &Run, status: RunStatus) {
        if self.shutting_down.load(Ordering::SeqCst) {
            return;
        }
        let d = &job.definition;
        let may_retry = status.is_retryable_failure() && d.policies.retries.count > 0;
        if !may_retry && d.on_success.is_empty() && d.on_failure.is_empty() {
            return; // nothing could follow; skip the store round trip
        }
        // Follow the job as it is now: a retry or chain of a job disabled or
        // deleted meanwhile does not happen.
        let job = match read_one!(self.store.as_ref(), |tx| tx.get_job(job.id)).await {
            Ok(current) if current.definition.enabled => Arc::new(current),
            Ok(_) => {
                tracing::info!(job = %job.name(), "job disabled since the run started; no retry or chain");
                return;
            }
            Err(_) => return, // deleted meanwhile
        };
        let job = &job;
        if status.is_retryable_failure() {
            if let Some(delay) = job
                .definition
                .policies
                .retries
                .delay_before(run.attempt + 1)
            {
                let req = Submit {
                    trigger: Trigger::Retry,
                    scheduled_for: run.scheduled_for,
                    attempt: run.attempt + 1,
                    parent: Some(run.id),
                    reserved: false,
                    audit: None,
                    not_before: Some(
                        self.clock.now() + chrono::Duration::from_std(delay).unwrap_or_default(),
                    ),
                };
                if let Err(e) = self.submit(job.clone(), req).await {
                    tracing::error!(job = %job.name(), error = %e, "could not schedule a retry");
                }
                return;
            }
        }
        let next: &[JobName] = match status {
            RunStatus::Succeeded => &job.definition.on_success,
            RunStatus::Failed | RunStatus::TimedOut => &job.definition.on_failure,
            _ => &[],
        };
        for name in next {
            match read_one!(self.store.as_ref(), |tx| tx.find_job(name)).await {
                Ok(Some(target)) if target.definition.enabled => {
                    let req = Submit {
                        parent: Some(run.id),
                        ..Submit::new(Trigger::Chain)
                    };
                    if let Err(e) = self.submit(Arc::new(target), req).await {
                        tracing::error!(job = %name, error = %e, "could not start a chained job");
                    }
                }
                Ok(Some(_)) => tracing::info!(job = %name, "chained job is disabled; not started"),
                Ok(None) => {
                    tracing::warn!(job = %name, from = %job.name(), "chained job no longer exists")
                }
                Err(e) => {
                    tracing::error!(job = %name, error = %e, "could not look up a chained job")
                }
            }
        }
    }

    /// Asks a queued or running run to stop. Returns false if the run is not
    /// active in this process (the caller then settles it in the store).
    pub fn cancel(&self, run: RunId) -> bool {
        match self.state().active.get(&run) {
            Some(a) => {
                a.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// The live output of a run active in this process.
    pub fn live_output(&self, run: RunId) -> Option<OutputBuffer> {
        self.state().active.get(&run).map(|a| a.output.clone())
    }

    /// Stops starting runs; waits up to `grace` for running ones, then cancels
    /// them (SIGTERM, kill grace, SIGKILL) and waits for their records.
    /// Returns the runs it had to cancel.
    pub async fn shutdown(&self, grace: Duration) -> Vec<RunId> {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.stopping.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
        {
            return vec![];
        }
        let cancelled: Vec<RunId> = {
            let st = self.state();
            st.active
                .iter()
                .map(|(id, a)| {
                    a.cancel.cancel();
                    *id
                })
                .collect()
        };
        let ids: Vec<i64> = cancelled.iter().map(|r| r.0).collect();
        tracing::warn!(runs = ?ids, "grace period over; cancelling running runs");
        self.tracker.wait().await;
        cancelled
    }
}

/// How often a running run's output is written to the store.
const OUTPUT_FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Writes the output kept so far (bounded by `executor.output_limit`) every
/// [`OUTPUT_FLUSH_EVERY`] while it grows, until `stop`.
async fn flush_output(
    store: Arc<dyn Store>,
    run: RunId,
    output: OutputBuffer,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(OUTPUT_FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut written = 0;
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let pushed = output.lines_pushed();
        if pushed == written {
            continue;
        }
        written = pushed;
        let kept = output.snapshot();
        let saved = write_one!(store.as_ref(), |tx| {
            tx.save_run_output(run, &kept.text, kept.truncated)
        });
        if let Err(e) = saved.await {
            tracing::warn!(run = %run, error = %e, "could not save the output so far");
        }
    }
}
