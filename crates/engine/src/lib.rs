//! The engine: scheduler, the run queue, the job kinds, and the job service
//! that the web layer and the CLI call. Rules about what a job may be live in
//! `steward-domain` (and, for a spec's fields, in its kind); this crate
//! decides when and how things run.
#![forbid(unsafe_code)]

pub mod executor;
pub mod kinds;
pub mod metrics;
pub mod outbound;
pub mod output;
pub mod queue;
pub mod scheduler;
pub mod secrets;

use chrono::{DateTime, Utc};
use executor::command::{CommandSettings, RunAs};
use kinds::{fields, KindRegistry};
use metrics::Metrics;
use outbound::OutboundPolicy;
use queue::{JitterFn, QueueSettings, RunQueue, SubmitError};
use scheduler::{Scheduler, SchedulerHandle};
use std::sync::Arc;
use std::time::Duration;
use steward_clock::Clock;
use steward_domain::{
    AuditContext, AuditRecord, JobDefinition, JobId, JobName, JobSpec, Module, Permission,
    PermissionSet, RunId, RunOutcome, RunStatus, SecretName, TimeZone, ValidationError,
};
use steward_store::{
    read_one, Job, JobCursor, JobQuery, JobSort, Run, RunFilter, RunUpdate, Store, StoreError,
    WriteTx,
};
use tokio_util::sync::CancellationToken;

pub use output::OutputBuffer;

/// Engine settings, resolved from configuration by the binary.
#[derive(Clone)]
pub struct EngineSettings {
    pub default_timezone: TimeZone,
    /// This node's name in run claims (see `queue::QueueSettings::node`).
    pub node: String,
    /// How long a claim holds without renewal.
    pub lease: Duration,
    pub output_limit: usize,
    pub max_active_runs: usize,
    pub kill_grace: Duration,
    pub default_workdir: String,
    pub run_as: Option<RunAs>,
    /// The helper that isolates command jobs; `None` runs them directly
    /// (engine unit tests only: the binary always sets one).
    pub sandbox: Option<executor::sandbox::Sandbox>,
    pub outbound: OutboundPolicy,
    /// Opens `${secret:NAME}` references at run time.
    pub secrets: Arc<dyn secrets::SecretSource>,
    /// Kinds of job beyond the built-in ones (`kinds::builtin`).
    pub extra_kinds: Vec<Arc<dyn kinds::JobKind>>,
    /// How long before its instant a scheduled run is recorded, claimed and
    /// prepared (see `queue::QueueSettings::prepare_ahead`).
    pub prepare_ahead: Duration,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            default_timezone: TimeZone::UTC,
            node: "local".into(),
            lease: queue::DEFAULT_LEASE,
            output_limit: 4 * 1024 * 1024,
            max_active_runs: 1000,
            kill_grace: Duration::from_secs(10),
            default_workdir: "/".into(),
            run_as: None,
            sandbox: None,
            outbound: OutboundPolicy::default(),
            secrets: Arc::new(secrets::NoSecrets),
            extra_kinds: Vec::new(),
            prepare_ahead: queue::PREPARE_AHEAD,
        }
    }
}

/// What a service call can fail with; the web layer maps each to a status code.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("Steward is shutting down")]
    ShuttingDown,
    /// The caller may do the operation in general but not this change.
    #[error("{0}")]
    Forbidden(String),
    /// Something the change depends on (the vault, the database) cannot be
    /// reached now; the same request may succeed later.
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[source] StoreError),
}

/// A job that references `${secret:NAME}` hands the value to whatever it
/// runs, and whoever writes the job decides what that is: so saving such a
/// definition needs `secrets:read` (the right to use secrets), not only
/// `jobs:write`. Checked on every save, so editing a job that already uses a
/// secret needs it too.
fn may_use_secrets(
    kinds: &KindRegistry,
    permissions: &PermissionSet,
    def: &JobDefinition,
) -> Result<(), ServiceError> {
    let uses = spec_references(kinds, &def.spec).map_or(true, |r| !r.is_empty());
    if uses && !permissions.allows(Permission::read(Module::Secrets)) {
        return Err(ServiceError::Forbidden(
            "referring to secrets in a job needs the permission secrets:read".into(),
        ));
    }
    Ok(())
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Self::NotFound(what),
            StoreError::Conflict(m) => Self::Conflict(m),
            StoreError::Unavailable(source) => {
                tracing::error!(error = %source, "the database is unavailable");
                Self::Unavailable("the database is unavailable; try again shortly".into())
            }
            e @ StoreError::Backend(_) => Self::Internal(e),
        }
    }
}

impl From<SubmitError> for ServiceError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::ShuttingDown => Self::ShuttingDown,
            e @ SubmitError::Overlap { .. } => Self::Conflict(e.to_string()),
            SubmitError::Store(s) => s.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("could not build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("could not reconcile the store at start: {0}")]
    Store(#[from] StoreError),
}

pub struct Engine {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    queue: Arc<RunQueue>,
    scheduler: SchedulerHandle,
    settings: EngineSettings,
    metrics: Metrics,
    stop_scheduler: CancellationToken,
    scheduler_task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    catalog: std::sync::RwLock<Arc<Vec<Arc<Job>>>>,
    kinds: KindRegistry,
}

impl Engine {
    /// Reconciles the store with reality (runs this node had claimed before
    /// it stopped become `abandoned`, what they left behind is killed,
    /// missed occurrences follow each job's policy), then starts the queue
    /// and the scheduler. Queued runs simply wait in the store for the
    /// dispatcher.
    pub async fn start(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        settings: EngineSettings,
        metrics: Metrics,
        jitter: JitterFn,
    ) -> Result<Arc<Self>, StartError> {
        let mut kinds = kinds::builtin(&kinds::BuiltinSettings {
            command: CommandSettings {
                kill_grace: settings.kill_grace,
                default_workdir: settings.default_workdir.clone(),
                run_as: settings.run_as.clone(),
                sandbox: settings.sandbox.clone(),
            },
            outbound: settings.outbound.clone(),
        })?;
        kinds.extend(settings.extra_kinds.iter().cloned());
        let kinds = KindRegistry::new(kinds);
        let queue = RunQueue::new(
            store.clone(),
            clock.clone(),
            metrics.clone(),
            QueueSettings {
                node: settings.node.clone(),
                output_limit: settings.output_limit,
                max_active_runs: settings.max_active_runs,
                lease: settings.lease,
                default_timezone: settings.default_timezone,
                kinds: kinds.clone(),
                secrets: settings.secrets.clone(),
                prepare_ahead: settings.prepare_ahead,
            },
            jitter,
        );
        let now = clock.now();
        for r in queue::lease::rescue(&queue, true).await? {
            // What the run held outside Steward is its kind's to end.
            let reconciled = match r.handle {
                Some(h) => reconcile(&kinds, r.run, h).await,
                None => "it held nothing outside Steward".into(),
            };
            tracing::warn!(run = %r.run, reconciled, "run left running by the previous process is now abandoned");
        }
        // What a previous process left in its runs' cgroups (also processes
        // that outlived their supervisor, in any session) ends here.
        if let Some(cgroups) = settings.sandbox.as_ref().and_then(|s| s.cgroups.clone()) {
            let swept = tokio::task::spawn_blocking(move || cgroups.sweep())
                .await
                .unwrap_or_default();
            for (cgroup, killed) in swept {
                tracing::warn!(cgroup = %cgroup.display(), killed, "a previous process left this run's cgroup behind; ended");
            }
        }
        // One snapshot: the jobs and their last endings agree.
        let mut rx = store.read().await?;
        let jobs = rx.list_jobs().await?;
        let endings = rx.last_endings().await?;
        drop(rx);
        index_secret_references(store.as_ref(), &kinds, &jobs).await?;
        heal_next_runs(store.as_ref(), &queue, &jobs, now).await?;
        // The per-job "last finished / last succeeded" gauges start from the
        // store, not from this process's start (an alert on a stale backup
        // must not be reset by a restart).
        let by_id: std::collections::HashMap<JobId, &Job> =
            jobs.iter().map(|j| (j.id, j)).collect();
        for ending in endings {
            if let Some(job) = by_id.get(&ending.job) {
                let label = metrics::JobLabel {
                    job: job.name().to_string(),
                };
                metrics
                    .job_last_finish
                    .get_or_create(&label)
                    .set(ending.finished.timestamp());
                if let Some(t) = ending.succeeded {
                    metrics
                        .job_last_success
                        .get_or_create(&label)
                        .set(t.timestamp());
                }
            }
        }
        let stop = CancellationToken::new();
        let (scheduler, task) = Scheduler::spawn(
            clock.clone(),
            queue.clone(),
            settings.default_timezone,
            stop.clone(),
        );
        let engine = Arc::new(Self {
            store,
            clock,
            queue,
            scheduler,
            settings,
            kinds,
            metrics,
            stop_scheduler: stop,
            scheduler_task: std::sync::Mutex::new(Some(task)),
            catalog: std::sync::RwLock::default(),
        });
        let mut catalog = Vec::with_capacity(jobs.len());
        let mut missed = Vec::new();
        for job in jobs {
            if let Err(e) = engine.kinds.get(job.definition.spec.kind()) {
                tracing::warn!(job = %job.name(), error = %e.message, "this job's kind is not known here: its runs fail until it is changed, deleted or disabled");
            }
            let job = Arc::new(job);
            if job.definition.enabled {
                missed.extend(engine.missed_since_cursor(&job, now));
            }
            engine.scheduler.upsert_from(job.clone(), now);
            catalog.push(job);
        }
        engine.queue.record_now(&missed).await?;
        engine.queue.start();
        // The store listed them by name; the catalog shares the scheduler's copies.
        engine.set_catalog(catalog);
        Ok(engine)
    }

    /// The job's occurrences between its cursor and `now`, as its missed-run
    /// policy records them.
    fn missed_since_cursor(&self, job: &Arc<Job>, now: DateTime<Utc>) -> Vec<queue::Occurrence> {
        let Some(schedule) = &job.definition.schedule else {
            return vec![];
        };
        let tz = job
            .definition
            .timezone
            .unwrap_or(self.settings.default_timezone);
        let baseline = job.schedule_cursor.unwrap_or(job.created_at);
        let Some(first) = schedule.next_after(baseline, &tz).filter(|t| *t <= now) else {
            return vec![];
        };
        tracing::info!(job = %job.name(), since = %first, policy = ?job.definition.policies.missed, "occurrences missed while Steward was not running");
        scheduler::missed(job, schedule, &tz, first, now, "Steward was not running")
    }

    /// The kinds of job this Steward runs (for the API document).
    pub fn kinds(&self) -> &KindRegistry {
        &self.kinds
    }

    /// For `/readyz`: the database answers.
    pub async fn database_ready(&self) -> bool {
        self.store.ping().await.is_ok()
    }

    pub async fn job(&self, id: JobId) -> Result<Job, ServiceError> {
        Ok(read_one!(self.store, |tx| tx.get_job(id)).await?)
    }

    pub async fn find_job(&self, name: &JobName) -> Result<Option<Job>, ServiceError> {
        Ok(read_one!(self.store, |tx| tx.find_job(name)).await?)
    }

    pub async fn run(&self, id: RunId) -> Result<Run, ServiceError> {
        Ok(read_one!(self.store, |tx| tx.get_run(id)).await?)
    }

    /// Newest first, `filter.before` as the cursor.
    pub async fn runs(&self, filter: &RunFilter) -> Result<Vec<Run>, ServiceError> {
        Ok(read_one!(self.store, |tx| tx.list_runs(filter)).await?)
    }

    /// The stored output of a run (while it runs: what was flushed so far).
    pub async fn stored_output(&self, id: RunId) -> Result<Option<String>, ServiceError> {
        Ok(read_one!(self.store, |tx| tx.run_output(id)).await?)
    }

    /// Runs in the store by status: totals that survive restarts.
    pub async fn run_counts(&self) -> Result<Vec<(RunStatus, i64)>, ServiceError> {
        Ok(read_one!(self.store, |tx| tx.count_runs_by_status()).await?)
    }
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
    pub fn default_timezone(&self) -> TimeZone {
        self.settings.default_timezone
    }
    pub fn scheduler_running(&self) -> bool {
        self.scheduler_task
            .lock()
            .ok()
            .and_then(|t| t.as_ref().map(|h| !h.is_finished()))
            .unwrap_or(false)
    }

    /// After a job is saved (`Ok`) or deleted (`Err(id)`): updates the catalog
    /// in place, keeping it sorted by name, and the gauges. Copies pointers,
    /// not jobs, so a change costs microseconds even with 10,000 jobs.
    fn catalog_changed(&self, change: Result<Arc<Job>, JobId>) {
        let mut jobs: Vec<Arc<Job>> = self.jobs().as_ref().clone();
        match change {
            Ok(job) => {
                jobs.retain(|j| j.id != job.id);
                let at = jobs.partition_point(|j| j.name() < job.name());
                jobs.insert(at, job);
            }
            Err(id) => jobs.retain(|j| j.id != id),
        }
        self.set_catalog(jobs);
    }

    fn set_catalog(&self, jobs: Vec<Arc<Job>>) {
        let enabled = jobs.iter().filter(|j| j.definition.enabled).count();
        self.metrics
            .jobs
            .set(i64::try_from(jobs.len()).unwrap_or(i64::MAX));
        self.metrics
            .jobs_enabled
            .set(i64::try_from(enabled).unwrap_or(i64::MAX));
        if let Ok(mut c) = self.catalog.write() {
            *c = Arc::new(jobs);
        }
    }

    /// Every job, by name, as of the last change made through this engine:
    /// listing jobs costs no database round trip. Definitions and timestamps
    /// are current; `schedule_cursor` is not kept up to date here (read a job
    /// from the store for it). One node owns its jobs; replicas (PostgreSQL)
    /// will need to refresh this on another node's change.
    pub fn jobs(&self) -> Arc<Vec<Arc<Job>>> {
        self.catalog.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// One page of jobs, and the cursor of the next page if there is one.
    pub async fn list_jobs(
        &self,
        query: &JobQuery,
    ) -> Result<(Vec<Job>, Option<JobCursor>), ServiceError> {
        let limit = query.limit.clamp(1, 1000);
        let probe = JobQuery {
            limit: limit + 1,
            ..query.clone()
        };
        let mut jobs = read_one!(self.store, |tx| tx.list_jobs_page(&probe)).await?;
        let more = jobs.len() > limit as usize;
        jobs.truncate(limit as usize);
        let next = jobs.last().filter(|_| more).map(|j| match query.sort {
            JobSort::Name => JobCursor::Name(j.name().clone()),
            JobSort::NextRun => JobCursor::NextRun(j.next_run_at, j.name().clone()),
        });
        Ok((jobs, next))
    }

    /// Rules that need the store or the network: chained jobs exist, HTTP targets
    /// pass the outbound policy.
    async fn check_definition(
        &self,
        def: &JobDefinition,
        id: Option<JobId>,
    ) -> Result<(), ServiceError> {
        def.validate()?;
        if let Some(schedule) = &def.schedule {
            let tz = def.timezone.unwrap_or(self.settings.default_timezone);
            if schedule.next_after(self.clock.now(), &tz).is_none() {
                return Err(ValidationError::new(
                    "schedule",
                    format!(
                        "{:?} never fires (no matching date in the coming years)",
                        schedule.as_str()
                    ),
                )
                .into());
            }
        }
        // Only chains and renames need the other jobs (from the catalog).
        let renamed = match id {
            Some(id) => {
                let old = self.store.read().await?.get_job(id).await?;
                (old.name() != &def.name).then_some(old)
            }
            None => None,
        };
        let has_chains = !def.on_success.is_empty() || !def.on_failure.is_empty();
        if has_chains || renamed.is_some() {
            let jobs = self.jobs();
            for (field, names) in [
                ("on_success", &def.on_success),
                ("on_failure", &def.on_failure),
            ] {
                for name in names {
                    if !jobs.iter().any(|j| j.name() == name) {
                        return Err(ValidationError::new(
                            field,
                            format!("no job named {:?}", name.as_str()),
                        )
                        .into());
                    }
                }
            }
            if let Some(cycle) = chain_cycle(def, id, &jobs) {
                return Err(ValidationError::new(
                    "on_success",
                    format!("chains would loop: {cycle}"),
                )
                .into());
            }
            if let Some(old) = renamed {
                let users = chained_from(old.name(), &jobs);
                if !users.is_empty() {
                    return Err(ServiceError::Conflict(format!(
                        "cannot rename: jobs {} chain to {:?}",
                        users.join(", "),
                        old.name().as_str()
                    )));
                }
            }
        }
        self.kinds
            .get(def.spec.kind())?
            .check(&def.spec)
            .await
            .map_err(|e| e.within("spec"))?;
        Ok(())
    }

    /// Refuses a definition that names a secret that does not exist, read on
    /// the transaction that then stores the job: a secret deleted meanwhile
    /// (the vault checks `jobs_naming_secret` on its own write transaction)
    /// cannot slip between the check and the write.
    async fn check_secrets_exist(
        tx: &mut dyn WriteTx,
        names: &[SecretName],
    ) -> Result<(), ServiceError> {
        for name in names {
            if !tx.secret_exists(name).await? {
                return Err(ValidationError::new(
                    "spec",
                    format!("refers to secret {name}, which does not exist; create it first"),
                )
                .into());
            }
        }
        Ok(())
    }

    /// Creates a job for a caller holding `permissions` (see [`may_use_secrets`]).
    pub async fn create_job(
        &self,
        def: JobDefinition,
        permissions: &PermissionSet,
        ctx: &AuditContext,
    ) -> Result<Job, ServiceError> {
        let def = self.stored_form(def)?;
        may_use_secrets(&self.kinds, permissions, &def)?;
        self.check_definition(&def, None).await?;
        let names: Vec<SecretName> = spec_references(&self.kinds, &def.spec)?
            .into_iter()
            .collect();
        let now = self.clock.now();
        let audit = ctx.record(
            now,
            "job.create",
            format!("job:{}", def.name),
            audit_diff(&self.kinds, None, Some(&def)),
        );
        let mut tx = self.store.write().await?;
        Self::check_secrets_exist(&mut *tx, &names).await?;
        let mut job = tx.create_job(&def, now).await?;
        job.next_run_at = self.queue.next_occurrence(&job, now);
        tx.set_next_run(job.id, job.next_run_at, None).await?;
        tx.set_job_secrets(job.id, &names).await?;
        tx.append_audit(&audit).await?;
        tx.commit().await?;
        let shared = Arc::new(job.clone());
        self.scheduler.upsert(shared.clone());
        self.catalog_changed(Ok(shared));
        Ok(job)
    }

    pub async fn update_job(
        &self,
        id: JobId,
        def: JobDefinition,
        permissions: &PermissionSet,
        ctx: &AuditContext,
    ) -> Result<Job, ServiceError> {
        let def = self.stored_form(def)?;
        may_use_secrets(&self.kinds, permissions, &def)?;
        self.check_definition(&def, Some(id)).await?;
        self.save(id, def, ctx, "job.update").await
    }

    /// The definition with its spec checked by its kind and in the form it
    /// is stored (defaults filled in): first, so an unknown kind or field is
    /// named before anything else is judged.
    fn stored_form(&self, mut def: JobDefinition) -> Result<JobDefinition, ServiceError> {
        def.spec = self.kinds.validate(&def.spec)?;
        Ok(def)
    }

    /// Stores a checked definition and reschedules the job.
    async fn save(
        &self,
        id: JobId,
        def: JobDefinition,
        ctx: &AuditContext,
        event: &str,
    ) -> Result<Job, ServiceError> {
        // A job of a kind this Steward no longer runs can still be switched
        // off (`set_enabled`): its stored secret index is kept as it is.
        let names: Option<Vec<SecretName>> = match self.kinds.get(def.spec.kind()) {
            Ok(kind) => Some(fields::references(kind, &def.spec)?.into_iter().collect()),
            Err(_) => None,
        };
        let mut tx = self.store.write().await?;
        let before = tx.get_job(id).await?;
        if before.definition == def {
            // Replacing a job with itself changes nothing: no write, no audit
            // record (so `steward jobs apply` is idempotent).
            return Ok(before);
        }
        if let Some(names) = &names {
            Self::check_secrets_exist(&mut *tx, names).await?;
        }
        let now = self.clock.now();
        let audit = ctx.record(
            now,
            event,
            format!("job:{}", before.name()),
            audit_diff(&self.kinds, Some(&before.definition), Some(&def)),
        );
        let mut job = tx.update_job(id, &def, now).await?;
        job.next_run_at = self.queue.next_occurrence(&job, now);
        tx.set_next_run(id, job.next_run_at, None).await?;
        if let Some(names) = &names {
            tx.set_job_secrets(id, names).await?;
        }
        if !before.definition.enabled && job.definition.enabled {
            // Enabling does not replay what fell while disabled.
            tx.advance_cursor(id, now).await?;
        }
        tx.append_audit(&audit).await?;
        tx.commit().await?;
        let shared = Arc::new(job.clone());
        self.scheduler.upsert(shared.clone());
        self.catalog_changed(Ok(shared));
        Ok(job)
    }

    pub async fn set_enabled(
        &self,
        id: JobId,
        enabled: bool,
        ctx: &AuditContext,
    ) -> Result<Job, ServiceError> {
        // Only the flag changes, so the rest of the definition is not re-checked:
        // a job whose target stopped resolving can still be switched off.
        let mut def = self.store.read().await?.get_job(id).await?.definition;
        def.enabled = enabled;
        self.save(
            id,
            def,
            ctx,
            if enabled { "job.enable" } else { "job.disable" },
        )
        .await
    }

    pub async fn delete_job(&self, id: JobId, ctx: &AuditContext) -> Result<(), ServiceError> {
        // The catalog holds every job's current definition: no store scan.
        let jobs = self.jobs();
        let Some(job) = jobs.iter().find(|j| j.id == id) else {
            return Err(ServiceError::NotFound("job"));
        };
        let users = chained_from(job.name(), &jobs);
        if !users.is_empty() {
            return Err(ServiceError::Conflict(format!(
                "jobs {} chain to this job; remove those chains first",
                users.join(", ")
            )));
        }
        let audit = ctx.record(
            self.clock.now(),
            "job.delete",
            format!("job:{}", job.name()),
            audit_diff(&self.kinds, Some(&job.definition), None),
        );
        self.scheduler.remove(id);
        if let Err(e) = self.delete_stored_job(id, &audit).await {
            self.scheduler.upsert(job.clone());
            return Err(e);
        }
        let label = metrics::JobLabel {
            job: job.name().to_string(),
        };
        self.metrics.job_last_success.remove(&label);
        self.metrics.job_last_finish.remove(&label);
        self.catalog_changed(Err(id));
        Ok(())
    }

    /// "No running run", checked on the deleting transaction: a run that
    /// starts after it finds its row gone and does not run (`start_run`
    /// answers false); a queued run goes with its job.
    async fn delete_stored_job(&self, id: JobId, audit: &AuditRecord) -> Result<(), ServiceError> {
        let mut tx = self.store.write().await?;
        let running = RunFilter {
            job_id: Some(id),
            status: Some(RunStatus::Running),
            limit: 1,
            ..Default::default()
        };
        if !tx.list_runs(&running).await?.is_empty() {
            return Err(ServiceError::Conflict(
                "the job has a running run; cancel it first".into(),
            ));
        }
        tx.delete_job(id).await?;
        tx.append_audit(audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Queues a run now, subject to the job's overlap policy; it starts when
    /// the dispatcher has capacity (at once, normally). The run and its
    /// audit record are written in one transaction.
    pub async fn run_now(&self, id: JobId, ctx: &AuditContext) -> Result<Run, ServiceError> {
        let (ctx, clock) = (ctx.clone(), self.clock.clone());
        let audit: queue::AuditOf = Box::new(move |run: &Run| {
            ctx.record(
                clock.now(),
                "run.manual",
                format!("job:{}", run.job_name),
                serde_json::json!({"run": run.id, "status": run.status}),
            )
        });
        Ok(self.queue.run_now(id, audit).await?)
    }

    /// Cancels a queued or running run; a finished run is a conflict.
    pub async fn cancel_run(&self, id: RunId, ctx: &AuditContext) -> Result<Run, ServiceError> {
        let ended =
            |status| ServiceError::Conflict(format!("run {id} has already ended ({status})"));
        let now = self.clock.now();
        let mut tx = self.store.write().await?;
        let run = tx.get_run(id).await?;
        if run.status.is_terminal() {
            return Err(ended(run.status));
        }
        // The change the audit record goes with: a queued run ends here (it
        // can no longer start); a running one records the request, and its
        // node records the ending once the process has stopped.
        let changed = if run.status == RunStatus::Running {
            tx.request_cancel(id, now).await?
        } else {
            let update = RunUpdate {
                status: RunStatus::Cancelled,
                finished_at: now,
                outcome: RunOutcome {
                    error: Some("cancelled".into()),
                    ..Default::default()
                },
                output: None,
                output_truncated: false,
            };
            tx.finish_run(id, &update).await?
        };
        if !changed {
            return Err(ended(tx.get_run(id).await?.status));
        }
        let audit = ctx.record(now, "run.cancel", format!("run:{id}"), serde_json::json!({"job": run.job_name, "status": {"from": run.status, "to": "cancelled"}}));
        tx.append_audit(&audit).await?;
        tx.commit().await?;
        self.queue.cancel(id);
        Ok(self.store.read().await?.get_run(id).await?)
    }

    /// For a follower of a run that has not ended: waits until the run's
    /// live output is here (it started on this node) or the run has ended
    /// (its stored output is then complete). A run just claimed registers
    /// its output a moment after its status says `running`.
    pub async fn wait_for_output(
        &self,
        id: RunId,
    ) -> Result<(RunStatus, Option<OutputBuffer>), ServiceError> {
        // A start here wakes the wait at once (checked in memory); a run
        // that ends without starting here (cancelled or skipped while queued,
        // run elsewhere) is found by reading it, every `FOLLOW_RECHECK`.
        let mut read_at = tokio::time::Instant::now();
        loop {
            let started = self.queue.run_started();
            tokio::pin!(started);
            started.as_mut().enable();
            if let Some(live) = self.queue.live_output(id) {
                return Ok((RunStatus::Running, Some(live)));
            }
            if tokio::time::Instant::now() >= read_at {
                let run = read_one!(self.store, |tx| tx.get_run(id)).await?;
                if run.status.is_terminal() {
                    return Ok((run.status, None));
                }
                read_at = tokio::time::Instant::now() + FOLLOW_RECHECK;
            }
            tokio::select! {
                () = started => {}
                () = tokio::time::sleep_until(read_at) => {}
            }
        }
    }

    pub fn live_output(&self, id: RunId) -> Option<OutputBuffer> {
        self.queue.live_output(id)
    }

    /// Graceful stop: no new occurrences, running work gets `grace` to finish, then
    /// it is cancelled and recorded. Returns the runs that had to be cancelled.
    pub async fn shutdown(&self, grace: Duration) -> Vec<RunId> {
        self.stop_scheduler.cancel();
        let task = self.scheduler_task.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = task {
            let _ = t.await;
        }
        let cancelled = self.queue.shutdown(grace).await;
        if let Some(cgroups) = self
            .settings
            .sandbox
            .as_ref()
            .and_then(|s| s.cgroups.as_ref())
        {
            cgroups.remove_if_empty();
        }
        cancelled
    }
}

/// Writes each job's next occurrence where the stored one is not it (jobs
/// from before the column existed, occurrences missed while stopped), so
/// lists sort by next run from the start.
async fn heal_next_runs(
    store: &dyn Store,
    queue: &RunQueue,
    jobs: &[Job],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let stale: Vec<_> = jobs
        .iter()
        .map(|j| (j.id, j.next_run_at, queue.next_occurrence(j, now)))
        .filter(|(_, stored, next)| stored != next)
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    let mut tx = store.write().await?;
    for (id, _, next) in stale {
        tx.set_next_run(id, next, None).await?;
    }
    tx.commit().await
}

/// Writes which secrets each job names, for jobs saved before that index
/// existed (and to heal it): only jobs that name any, in one transaction.
async fn index_secret_references(
    store: &dyn Store,
    kinds: &KindRegistry,
    jobs: &[Job],
) -> Result<(), StoreError> {
    let named: Vec<(JobId, Vec<SecretName>)> = jobs
        .iter()
        .filter_map(|j| {
            let names = spec_references(kinds, &j.definition.spec).ok()?;
            (!names.is_empty()).then(|| (j.id, names.into_iter().collect()))
        })
        .collect();
    if named.is_empty() {
        return Ok(());
    }
    let mut tx = store.write().await?;
    for (job, names) in &named {
        tx.set_job_secrets(*job, names).await?;
    }
    tx.commit().await
}

/// How often a follower of a queued run reads it again, for an ending that
/// no start here announces.
const FOLLOW_RECHECK: Duration = Duration::from_secs(2);

/// How long one run's reconciliation may hold up the start.
const RECONCILE_LIMIT: Duration = Duration::from_secs(30);

/// Hands a run's handle to its kind, in a task of its own: a kind that
/// panics or hangs (a remote API that does not answer) costs that run's
/// cleanup, not the start.
async fn reconcile(kinds: &KindRegistry, run: RunId, handle: steward_domain::RunHandle) -> String {
    let Some(kind) = kinds.shared(&handle.kind) else {
        return format!(
            "its kind {:?} is not known here; nothing reconciled",
            handle.kind
        );
    };
    let task = tokio::spawn(async move { kind.reconcile(run, &handle.data).await });
    match tokio::time::timeout(RECONCILE_LIMIT, task).await {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => format!("reconciling failed: {e}"),
        Err(_) => format!(
            "reconciling took longer than {}s; left to finish in the background",
            RECONCILE_LIMIT.as_secs()
        ),
    }
}

/// The `${secret:NAME}` references a spec makes, through its kind.
fn spec_references(
    kinds: &KindRegistry,
    spec: &JobSpec,
) -> Result<std::collections::BTreeSet<SecretName>, ValidationError> {
    fields::references(kinds.get(spec.kind())?, spec)
}

/// Field-level diff of two definitions, each spec as its kind has it shown
/// in the audit log (credential fields redacted: `kinds::fields::for_audit`).
fn audit_diff(
    kinds: &KindRegistry,
    before: Option<&JobDefinition>,
    after: Option<&JobDefinition>,
) -> serde_json::Value {
    let to_json = |d: &JobDefinition| {
        let mut v = serde_json::to_value(d).unwrap_or_default();
        if let Some(spec) = v.get_mut("spec") {
            *spec = fields::for_audit(kinds.get(d.spec.kind()).ok(), &d.spec);
        }
        v
    };
    let mut diff = steward_domain::audit::json_diff(
        before.map(to_json).as_ref(),
        after.map(to_json).as_ref(),
        &[],
    );
    // A change to credential values alone leaves the redacted specs equal:
    // the entry still says the spec changed, without showing how.
    if let (Some(b), Some(a), Some(d)) = (before, after, diff.as_object_mut()) {
        if b.spec != a.spec && !d.contains_key("spec") {
            d.insert(
                "spec".into(),
                serde_json::json!({
                    "from": steward_domain::audit::REDACTED,
                    "to": steward_domain::audit::REDACTED,
                    "changed": "credential values (not shown)",
                }),
            );
        }
    }
    diff
}

/// Names of the jobs whose chains start `target`.
fn chained_from(target: &steward_domain::JobName, jobs: &[Arc<Job>]) -> Vec<String> {
    jobs.iter()
        .filter(|j| {
            j.definition.on_success.contains(target) || j.definition.on_failure.contains(target)
        })
        .map(|j| j.name().to_string())
        .collect()
}

/// A chain path that returns to `def` once `def` (job `id`, or a new job) is saved.
fn chain_cycle(def: &JobDefinition, id: Option<JobId>, jobs: &[Arc<Job>]) -> Option<String> {
    use std::collections::{HashMap, HashSet};
    let mut graph: HashMap<&steward_domain::JobName, Vec<&steward_domain::JobName>> =
        HashMap::new();
    for j in jobs.iter().filter(|j| Some(j.id) != id) {
        graph.insert(
            j.name(),
            j.definition
                .on_success
                .iter()
                .chain(&j.definition.on_failure)
                .collect(),
        );
    }
    graph.insert(
        &def.name,
        def.on_success.iter().chain(&def.on_failure).collect(),
    );
    // Depth-first search from the saved job, remembering the path.
    let mut stack = vec![(&def.name, vec![def.name.as_str()])];
    let mut seen = HashSet::new();
    while let Some((node, path)) = stack.pop() {
        for next in graph.get(node).into_iter().flatten() {
            if *next == &def.name {
                return Some(format!("{} -> {}", path.join(" -> "), next.as_str()));
            }
            if seen.insert(*next) {
                let mut p = path.clone();
                p.push(next.as_str());
                stack.push((next, p));
            }
        }
    }
    None
}
