//! The completer: records run endings, many per transaction (group commit).
//! Each ending is written only while this node's claim holds, releases the
//! run's locks, and queues what follows (a retry, chained jobs) on the same
//! transaction, so a crash between an ending and its follow-up is not
//! possible. History is pruned here too, amortised.

use super::RunQueue;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use steward_domain::{JobId, JobName, RunId, RunStatus, Trigger};
use steward_store::{Job, NewRun, Run, RunUpdate, StoreError, WriteTx};
use tokio::sync::{mpsc, oneshot};

/// At most this many endings per transaction.
const BATCH: usize = 512;

pub(crate) struct Ending {
    pub run: Run,
    pub job: Arc<Job>,
    pub update: RunUpdate,
    /// Told whether the ending was recorded (false: the claim no longer held).
    pub done: oneshot::Sender<bool>,
}

pub(super) async fn run(queue: Arc<RunQueue>, mut rx: mpsc::UnboundedReceiver<Ending>) {
    // Runs finished per job since its history was last pruned.
    let mut since_prune: HashMap<JobId, u32> = HashMap::new();
    while let Some(mut batch) = queue.next_batch(&mut rx, BATCH).await {
        let mut backoff = Duration::from_millis(250);
        let failing_since = std::time::Instant::now();
        let held = loop {
            match write(&queue, &batch, &mut since_prune).await {
                Ok(held) => break held,
                Err(StoreError::Unavailable(e)) => {
                    // The runs keep their slots and leases (renewed when the
                    // database is back) until their ends are written; while
                    // stopping, only for a while: unrecorded, they are
                    // abandoned (and retried) at the next start.
                    if queue.stopping.is_cancelled()
                        && failing_since.elapsed() > GIVE_UP_WHEN_STOPPING
                    {
                        tracing::error!(runs = batch.len(), "stopping with run endings not recorded (the database is unavailable); the next start records them abandoned");
                        break vec![false; batch.len()];
                    }
                    tracing::error!(error = %e, runs = batch.len(), "could not record run endings; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    // One bad ending must not hold up the others: alone, each
                    // either records or is reported on its own.
                    tracing::error!(error = %e, "could not record a batch of run endings; recording them one by one");
                    let mut held = Vec::with_capacity(batch.len());
                    for one in batch.chunks(1) {
                        held.push(match write(&queue, one, &mut since_prune).await {
                            Ok(h) => h[0],
                            Err(e) => record_without_output(&queue, &one[0], &e).await,
                        });
                    }
                    break held;
                }
            }
        };
        for (ending, held) in batch.drain(..).zip(held) {
            let _ = ending.done.send(held);
        }
        queue.wake.notify_one();
    }
}

/// While stopping with the database down, endings are retried this long.
const GIVE_UP_WHEN_STOPPING: Duration = Duration::from_secs(10);

/// An ending the database refused as it was: recorded again with its status
/// and the reason, without the output, so the run does not stay `running`.
async fn record_without_output(queue: &RunQueue, e: &Ending, why: &StoreError) -> bool {
    tracing::error!(run = %e.run.id, error = %why, "could not record the end of a run; recording it without its output");
    let mut update = e.update.clone();
    update.output = None;
    update.output_truncated = false;
    update.outcome.error = Some(format!(
        "{}(the output could not be stored: {why})",
        update
            .outcome
            .error
            .as_deref()
            .map(|m| format!("{m}; "))
            .unwrap_or_default()
    ));
    let node = queue.settings.node.as_str();
    let attempt = async {
        let mut tx = queue.store.write().await?;
        let held = tx.finish_claimed(e.run.id, node, &update).await?;
        tx.commit().await?;
        Ok::<_, StoreError>(held)
    };
    match attempt.await {
        Ok(held) => held,
        Err(e2) => {
            // Not renewed any more, its lease runs out and the rescuer
            // records it abandoned, releasing its locks.
            tracing::error!(run = %e.run.id, error = %e2, "the end of this run could not be recorded at all");
            false
        }
    }
}

/// Writes the batch on one transaction; says for each whether its claim held.
async fn write(
    queue: &RunQueue,
    batch: &[Ending],
    since_prune: &mut HashMap<JobId, u32>,
) -> Result<Vec<bool>, StoreError> {
    let node = queue.settings.node.as_str();
    let mut tx = queue.store.write().await?;
    let mut held = Vec::with_capacity(batch.len());
    let mut follow = Vec::new();
    let mut prune = Vec::new();
    for e in batch {
        let ok = tx.finish_claimed(e.run.id, node, &e.update).await?;
        held.push(ok);
        if !ok {
            continue;
        }
        let ended = Ended {
            run: e.run.id,
            job: e.run.job_id,
            attempt: e.run.attempt,
            scheduled_for: e.run.scheduled_for,
        };
        follow.extend(follow_ups(queue, &mut *tx, &ended, e.update.status).await?);
        let limit = e.job.definition.policies.history_limit;
        let n = since_prune.entry(e.job.id).or_insert(0);
        *n += 1;
        // Pruning costs a statement; once per tenth of the limit, so the
        // history may exceed `history_limit` by up to 10% between prunes.
        if *n >= (limit / 10).max(1) {
            *n = 0;
            prune.push((e.job.id, limit));
        }
    }
    if !follow.is_empty() {
        tx.enqueue_runs(&follow).await?;
    }
    for (job, limit) in prune {
        tx.prune_runs(job, limit).await?;
    }
    tx.commit().await?;
    Ok(held)
}

/// What decides a run's follow-up.
pub(super) struct Ended {
    pub run: RunId,
    pub job: JobId,
    pub attempt: u32,
    pub scheduled_for: Option<chrono::DateTime<chrono::Utc>>,
}

/// The retry or the chained runs that follow an ending, for the job as it is
/// now (read on the same transaction): a job disabled or deleted meanwhile
/// has no follow-up.
pub(super) async fn follow_ups(
    queue: &RunQueue,
    tx: &mut dyn WriteTx,
    run: &Ended,
    status: RunStatus,
) -> Result<Vec<NewRun>, StoreError> {
    let job = match tx.get_job(run.job).await {
        Ok(job) if job.definition.enabled => job,
        Ok(_) | Err(StoreError::NotFound(_)) => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    let now = queue.clock.now();
    let d = &job.definition;
    let retryable = status.is_retryable_failure() || status == RunStatus::Abandoned;
    if retryable {
        if let Some(delay) = d.policies.retries.delay_before(run.attempt + 1) {
            let due = now + chrono::Duration::from_std(delay).unwrap_or_default();
            return Ok(vec![NewRun {
                scheduled_for: run.scheduled_for,
                not_before: Some(due),
                attempt: run.attempt + 1,
                parent_run_id: Some(run.run),
                ..queue.new_run(&job, Trigger::Retry, now, due)
            }]);
        }
    }
    let next: &[JobName] = match status {
        RunStatus::Succeeded => &d.on_success,
        RunStatus::Failed | RunStatus::TimedOut => &d.on_failure,
        _ => &[],
    };
    let mut runs = Vec::new();
    for name in next {
        match tx.find_job(name).await? {
            Some(target) if target.definition.enabled => runs.push(NewRun {
                parent_run_id: Some(run.run),
                ..queue.new_run(&target, Trigger::Chain, now, now)
            }),
            Some(_) => tracing::info!(job = %name, "chained job is disabled; not started"),
            None => tracing::warn!(job = %name, from = %job.name(), "chained job no longer exists"),
        }
    }
    Ok(runs)
}
