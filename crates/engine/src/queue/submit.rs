//! Manual runs, many per transaction (group commit). Each request to run a
//! job now is a [`Submission`]; one task takes every submission waiting and
//! writes them on one transaction: per submission, the job read, its
//! overlap policy checked against the job's active runs (the runs this
//! batch queued before it included, since they are on the same
//! transaction), the queued run and its audit record. A submission the
//! policy refuses (or whose job is gone) is answered alone and the batch
//! goes on. A statement the database refuses fails its own submission
//! only: the others are written again without it. A failure to begin or
//! commit (the database unreachable, a commit whose outcome is unknown) is
//! answered to all at once, never written again. A request whose caller has
//! gone is not written.

use super::{AuditOf, RunQueue, SubmitError};
use futures_util::FutureExt as _;
use std::panic::AssertUnwindSafe;
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
    while let Some(mut batch) = queue.next_batch(&mut rx, BATCH).await {
        // A request whose caller went away before its run was written is
        // not queued (as when its own transaction was rolled back).
        batch.retain(|s| !s.reply.is_closed());
        // A panic answers this batch (its replies are dropped: an internal
        // error to each caller) and the task goes on serving the next.
        if let Err(panic) = AssertUnwindSafe(serve(&queue, batch)).catch_unwind().await {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(panic = %what, "writing manual runs panicked; those requests failed");
        }
    }
}

/// Writes the batch and answers each submission. A statement that fails
/// names its submission (the transaction stops there): that one is
/// answered with the error, and the rest are written again without it. A
/// failure to begin or to commit is answered to all: after a failed commit
/// the outcome may be unknown, and writing the runs again could queue them
/// twice.
async fn serve(queue: &RunQueue, mut pending: Vec<Submission>) {
    while !pending.is_empty() {
        match write(queue, &pending).await {
            Ok(answers) => {
                for (s, answer) in pending.into_iter().zip(answers) {
                    let _ = s.reply.send(answer);
                }
                return;
            }
            Err(Failed::At(i, e)) => {
                let s = pending.remove(i);
                let _ = s.reply.send(Err(e.into()));
            }
            Err(Failed::Whole(e)) => {
                tracing::warn!(runs = pending.len(), error = %e, "could not record manual runs");
                for s in pending {
                    let _ = s.reply.send(Err(copy(&e).into()));
                }
                return;
            }
        }
    }
}

/// Why a batch's transaction did not commit.
enum Failed {
    /// The statement of the submission at this index failed.
    At(usize, StoreError),
    /// Beginning or committing failed.
    Whole(StoreError),
}

/// The same error for another caller (the source is logged once).
fn copy(e: &StoreError) -> StoreError {
    match e {
        StoreError::NotFound(what) => StoreError::NotFound(what),
        StoreError::Conflict(m) => StoreError::Conflict(m.clone()),
        StoreError::Unavailable(m) => StoreError::Unavailable(m.to_string().into()),
        StoreError::Backend(m) => StoreError::Backend(m.to_string().into()),
    }
}

/// Writes the submissions on one transaction; returns each one's answer
/// once it is committed.
async fn write(
    queue: &RunQueue,
    batch: &[Submission],
) -> Result<Vec<Result<Run, SubmitError>>, Failed> {
    let now = queue.clock.now();
    let mut tx = queue.store.write().await.map_err(Failed::Whole)?;
    let mut answers = Vec::with_capacity(batch.len());
    for (i, s) in batch.iter().enumerate() {
        answers.push(
            one(queue, &mut *tx, s, now)
                .await
                .map_err(|e| Failed::At(i, e))?,
        );
    }
    tx.commit().await.map_err(Failed::Whole)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{random_jitter, QueueSettings};
    use steward_clock::{Clock as _, SystemClock};
    use steward_domain::{AuditContext, JobDefinition};
    use steward_store::Store;

    async fn queue() -> (Arc<RunQueue>, Arc<dyn Store>) {
        let store: Arc<dyn Store> = Arc::new(
            steward_store::sqlite::SqliteStore::open_in_memory()
                .await
                .unwrap(),
        );
        let queue = RunQueue::new(
            store.clone(),
            Arc::new(SystemClock),
            crate::metrics::Metrics::new(),
            QueueSettings {
                node: "n".into(),
                output_limit: 1024,
                max_active_runs: 10,
                lease: super::super::DEFAULT_LEASE,
                default_timezone: steward_domain::TimeZone::UTC,
                kinds: crate::kinds::KindRegistry::new([]),
                secrets: Arc::new(crate::secrets::NoSecrets),
                prepare_ahead: std::time::Duration::ZERO,
            },
            random_jitter(),
        );
        (queue, store)
    }

    async fn job(store: &dyn Store, name: &str, overlap: &str) -> JobId {
        let def: JobDefinition = serde_json::from_value(serde_json::json!({
            "name": name,
            "spec": {"kind": "command", "argv": ["true"]},
            "policies": {"overlap": overlap},
        }))
        .unwrap();
        let mut tx = store.write().await.unwrap();
        let job = tx.create_job(&def, SystemClock.now()).await.unwrap();
        tx.commit().await.unwrap();
        job.id
    }

    fn submission(job: JobId) -> (Submission, oneshot::Receiver<Result<Run, SubmitError>>) {
        let (reply, answer) = oneshot::channel();
        let ctx = AuditContext::system("test");
        let audit: AuditOf = Box::new(move |run: &Run| {
            ctx.record(
                SystemClock.now(),
                "run.manual",
                format!("job:{}", run.job_name),
                serde_json::json!({"run": run.id}),
            )
        });
        (Submission { job, audit, reply }, answer)
    }

    /// Three submissions on one transaction: each is checked against the
    /// runs queued before it in the same batch.
    #[tokio::test]
    async fn the_overlap_rule_holds_within_one_batch() {
        let (queue, store) = queue().await;
        for (overlap, want) in [
            ("skip", [true, false, false]),
            ("queue", [true, true, false]),
            ("allow", [true, true, true]),
        ] {
            let id = job(store.as_ref(), overlap, overlap).await;
            let batch: Vec<_> = (0..3).map(|_| submission(id).0).collect();
            let answers = match write(&queue, &batch).await {
                Ok(a) => a,
                Err(_) => panic!("the batch failed"),
            };
            let accepted: Vec<bool> = answers.iter().map(Result::is_ok).collect();
            assert_eq!(accepted, want, "overlap {overlap}");
            let first = answers[0].as_ref().unwrap().id;
            if let Some(Err(SubmitError::Overlap { active, .. })) = answers.last() {
                assert!(*active >= first, "names a run of the batch");
            }
        }
    }

    /// A submission whose job is gone is answered alone; the rest of the
    /// batch is queued.
    #[tokio::test]
    async fn a_refusal_leaves_the_rest_of_the_batch() {
        let (queue, store) = queue().await;
        let id = job(store.as_ref(), "a", "allow").await;
        let (first, first_answer) = submission(id);
        let (gone, gone_answer) = submission(JobId(9999));
        let (last, last_answer) = submission(id);
        serve(&queue, vec![first, gone, last]).await;
        assert!(first_answer.await.unwrap().is_ok());
        assert!(matches!(
            gone_answer.await.unwrap(),
            Err(SubmitError::Store(StoreError::NotFound(_)))
        ));
        assert!(last_answer.await.unwrap().is_ok());
        let mut rx = store.read().await.unwrap();
        assert_eq!(rx.active_runs_of(id, 10).await.unwrap().len(), 2);
    }
}
