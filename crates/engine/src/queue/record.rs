//! The recorder: turns scheduled occurrences into queued runs, many per
//! transaction (group commit), with the schedule cursor moved on the same
//! transaction. An occurrence that cannot be written now (the database is
//! down) is kept and written when it is back; its start deadline then
//! decides whether it still runs or is recorded as skipped.

use super::RunQueue;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use steward_domain::{JobId, RunStatus, Trigger};
use steward_store::{Job, NewRun, StoreError};
use tokio::sync::mpsc;

/// At most this many occurrences per transaction.
const BATCH: usize = 5000;

/// One due instant of a job's schedule, or a record of instants skipped.
#[derive(Clone)]
pub struct Occurrence {
    pub job: Arc<Job>,
    pub at: DateTime<Utc>,
    /// `Some(reason)`: recorded as `skipped` (missed-run policy), not run.
    pub skipped: Option<String>,
}

impl Occurrence {
    pub fn due(job: Arc<Job>, at: DateTime<Utc>) -> Self {
        Self {
            job,
            at,
            skipped: None,
        }
    }
}

pub(super) async fn run(queue: Arc<RunQueue>, mut rx: mpsc::UnboundedReceiver<Vec<Occurrence>>) {
    let mut pending: Vec<Occurrence> = Vec::new();
    let mut backoff = Duration::from_millis(250);
    loop {
        if pending.is_empty() {
            tokio::select! {
                biased;
                got = rx.recv() => match got {
                    Some(batch) => pending.extend(batch),
                    None => return,
                },
                () = queue.finished.cancelled() => return,
            }
        }
        while pending.len() < BATCH {
            match rx.try_recv() {
                Ok(batch) => pending.extend(batch),
                Err(_) => break,
            }
        }
        let take = pending.len().min(BATCH);
        match write(&queue, &pending[..take]).await {
            Ok(_) => {
                pending.drain(..take);
                backoff = Duration::from_millis(250);
                queue.wake.notify_one();
            }
            Err(e) if !matches!(e, StoreError::Unavailable(_)) => {
                // Not an outage: one occurrence the database refuses (its job
                // was deleted meanwhile) must not hold up the rest. Alone, each
                // is recorded or dropped with the reason.
                tracing::warn!(error = %e, "could not record a batch of occurrences; recording them one by one");
                for one in pending.drain(..take).collect::<Vec<_>>().chunks(1) {
                    if let Err(e) = write(&queue, one).await {
                        tracing::warn!(job = %one[0].job.name(), at = %one[0].at, error = %e, "occurrence not recorded (its job is gone?)");
                    }
                }
                queue.wake.notify_one();
            }
            Err(e) => {
                if backoff == Duration::from_millis(250) {
                    tracing::error!(error = %e, waiting = pending.len(), "could not record scheduled occurrences; keeping them and retrying");
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = queue.finished.cancelled() => {
                        tracing::error!(occurrences = pending.len(), "stopping with occurrences not recorded; the next start catches them up by the missed-run policy");
                        return;
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Writes occurrences as runs on one transaction and moves each job's cursor
/// to its latest one. Returns how many runs were recorded (an occurrence that
/// already has a run is left alone).
pub(super) async fn write(queue: &RunQueue, occurrences: &[Occurrence]) -> Result<u64, StoreError> {
    if occurrences.is_empty() {
        return Ok(0);
    }
    let now = queue.clock.now();
    let runs: Vec<NewRun> = occurrences.iter().map(|o| new_run(queue, o, now)).collect();
    let mut cursors: HashMap<JobId, (&Job, DateTime<Utc>)> = HashMap::new();
    for o in occurrences {
        let c = cursors.entry(o.job.id).or_insert((&o.job, o.at));
        c.1 = c.1.max(o.at);
    }
    let mut tx = queue.store.write().await?;
    let recorded = tx.enqueue_runs(&runs).await?;
    for (id, (job, at)) in &cursors {
        tx.advance_cursor(*id, *at).await?;
        // Computed from the copy the occurrence carries: written only if
        // the job was not changed since (a save writes its own).
        tx.set_next_run(*id, queue.next_occurrence(job, *at), Some(job.updated_at))
            .await?;
    }
    tx.commit().await?;
    let skipped = runs
        .iter()
        .filter(|r| r.status == RunStatus::Skipped)
        .count();
    queue.count_finished(RunStatus::Skipped, skipped as u64);
    for o in occurrences.iter().filter(|o| o.skipped.is_none()) {
        let lag = (now - o.at).to_std().unwrap_or_default();
        queue.metrics.scheduler_lag.observe(lag.as_secs_f64());
    }
    Ok(recorded)
}

fn new_run(queue: &RunQueue, o: &Occurrence, now: DateTime<Utc>) -> NewRun {
    let policies = &o.job.definition.policies;
    let jitter = (queue.jitter)(policies.jitter.get());
    let not_before =
        (!jitter.is_zero()).then(|| o.at + chrono::Duration::from_std(jitter).unwrap_or_default());
    // A missed occurrence recorded late (catch-up) is offered now: its
    // deadline counts from now, not from its instant long past.
    let due = not_before.unwrap_or(o.at).max(now);
    // run_all's catch-up runs wait for each other, one after another: a
    // default deadline would skip most of what the policy promises to run.
    let catch_up = super::is_catch_up(&o.job, Some(o.at), now);
    let deadline = match policies.start_deadline {
        Some(d) => Some(d.get()),
        None if catch_up => None,
        None => Some(default_start_deadline(queue, &o.job, o.at)),
    };
    NewRun {
        job_id: o.job.id,
        job_name: o.job.name().clone(),
        status: if o.skipped.is_some() {
            RunStatus::Skipped
        } else {
            RunStatus::Queued
        },
        trigger: Trigger::Schedule,
        scheduled_for: Some(o.at),
        not_before,
        attempt: 1,
        parent_run_id: None,
        created_at: now,
        start_deadline: deadline.map(|d| due + chrono::Duration::from_std(d).unwrap_or_default()),
        error: o.skipped.clone(),
    }
}

/// The deadline of a scheduled run whose job sets none: until the job's
/// next occurrence (a run that could not start before the next one is due
/// is superseded by it), and at least a minute, so a burst of every-second
/// jobs is not thrown away for a moment's wait.
fn default_start_deadline(queue: &RunQueue, job: &Job, at: DateTime<Utc>) -> Duration {
    const AT_LEAST: Duration = Duration::from_secs(60);
    let tz = job
        .definition
        .timezone
        .unwrap_or(queue.settings.default_timezone);
    job.definition
        .schedule
        .as_ref()
        .and_then(|s| s.next_after(at, &tz))
        .and_then(|next| (next - at).to_std().ok())
        .map_or(AT_LEAST, |gap| gap.max(AT_LEAST))
}
