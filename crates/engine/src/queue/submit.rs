//! Manual runs, many per transaction (group commit). Each request to run a
//! job now is a [`Submission`]; one task takes every submission waiting and
//! writes them on one transaction: per submission, the job read, its
//! overlap policy checked against the job's active runs (the runs this
//! batch queued before it included, since they are on the same
//! transaction), the queued run and its audit record. A submission the
//! policy refuses (or whose job is gone) is answered alone and the batch
//! goes on. If the transaction fails, each submission is written again on a
//! transaction of its own, so one that the database refuses fails alone;
//! if the database cannot be reached, all are answered so at once.

use super::{AuditOf, RunQueue, SubmitError};
use std::sync::Arc;
use steward_domain::{JobId, OverlapPolicy, Trigger};
use steward_store::{Run, StoreError, WriteTx};
use tokio::sync::{mpsc, oneshot};

/// At most this many manual runs per transaction.
const BATCH: usize = 256;

pub(super) struct Submission {
    pub job: JobId,
    pub audit: AuditOf,
    pub reply: oneshot::Sender<Result<Run, SubmitError>>,
}

pub(super) async fn run(queue: Arc<RunQueue>, mut rx: mpsc::UnboundedReceiver<Submission>) {
    loop {
        let first = tokio::select! {
            biased;
            got = rx.recv() => match got {
                Some(s) => s,
                None => return,
            },
            () = queue.finished.cancelled() => return,
        };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(s) => batch.push(s),
                Err(_) => break,
            }
        }
        match write(&queue, &batch).await {
            Ok(answers) => {
                for (s, answer) in batch.into_iter().zip(answers) {
                    let _ = s.reply.send(answer);
                }
            }
            // The database cannot be reached: writing each again would make
            // the last one wait a pool timeout per submission before it.
            Err(StoreError::Unavailable(e)) => {
                let why = e.to_string();
                for s in batch {
                    let _ = s
                        .reply
                        .send(Err(StoreError::Unavailable(why.clone().into()).into()));
                }
            }
            Err(e) if batch.len() == 1 => {
                if let Some(s) = batch.pop() {
                    let _ = s.reply.send(Err(e.into()));
                }
            }
            // Again one by one: each gets its own answer.
            Err(_) => {
                for s in batch {
                    let answer = match write(&queue, std::slice::from_ref(&s)).await {
                        Ok(answers) => answers
                            .into_iter()
                            .next()
                            .unwrap_or(Err(SubmitError::ShuttingDown)),
                        Err(e) => Err(e.into()),
                    };
                    let _ = s.reply.send(answer);
                }
            }
        }
    }
}

/// Writes the submissions on one transaction; returns each one's answer
/// once it is committed, or the error that rolled all of them back.
async fn write(
    queue: &RunQueue,
    batch: &[Submission],
) -> Result<Vec<Result<Run, SubmitError>>, StoreError> {
    let now = queue.clock.now();
    let mut tx = queue.store.write().await?;
    let mut answers = Vec::with_capacity(batch.len());
    for s in batch {
        answers.push(one(queue, &mut *tx, s, now).await?);
    }
    tx.commit().await?;
    queue.wake.notify_one();
    Ok(answers)
}

/// One submission on the batch's transaction: `Err` only for what fails
/// the transaction; a refusal is the submission's answer.
async fn one(
    queue: &RunQueue,
    tx: &mut dyn WriteTx,
    s: &Submission,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Result<Run, SubmitError>, StoreError> {
    let job = match tx.get_job(s.job).await {
        Ok(job) => job,
        Err(e @ StoreError::NotFound(_)) => return Ok(Err(e.into())),
        Err(e) => return Err(e),
    };
    // Skip: nothing else may be active. Queue: one may run and one wait
    // (a run just queued counts as the one about to run).
    let allowed = match job.definition.policies.overlap {
        OverlapPolicy::Skip => Some((0, "skip")),
        OverlapPolicy::Queue => Some((1, "queue, and one run is already waiting")),
        OverlapPolicy::Allow => None,
    };
    if let Some((allowed, policy)) = allowed {
        let active = tx.active_runs_of(job.id, allowed + 1).await?;
        if let Some(last) = active.get(allowed as usize) {
            return Ok(Err(SubmitError::Overlap {
                active: last.id,
                policy,
            }));
        }
    }
    let new = queue.new_run(&job, Trigger::Manual, now, now);
    let run = tx.insert_run(&new).await?;
    tx.append_audit(&(s.audit)(&run)).await?;
    Ok(Ok(run))
}
