//! Leases: this node renews the claims of the runs it executes, picks up
//! cancel requests made through the store, and rescues runs whose lease ran
//! out (their node stopped renewing): they are recorded `abandoned` and
//! retried per their job's policy, on one transaction.

use super::complete::{follow_ups, Ended};
use super::RunQueue;
use std::sync::Arc;
use steward_domain::RunStatus;
use steward_store::{Rescued, StoreError};

pub(super) async fn run(queue: Arc<RunQueue>) {
    let every = queue.settings.lease / 3;
    loop {
        tokio::select! {
            biased;
            () = queue.finished.cancelled() => return,
            () = queue.clock.sleep_until(queue.clock.now() + chrono::Duration::from_std(every).unwrap_or_default()) => {}
        }
        if let Err(e) = tick(&queue).await {
            tracing::warn!(error = %e, "could not renew leases or rescue runs; retrying");
        }
    }
}

/// Renew first, then rescue: after an outage longer than the lease, this
/// node's own runs are renewed before the rescuer could take them for lost.
pub async fn tick(queue: &RunQueue) -> Result<(), StoreError> {
    let now = queue.clock.now();
    let until = now + chrono::Duration::from_std(queue.settings.lease).unwrap_or_default();
    let node = queue.settings.node.as_str();
    let executing: Vec<_> = queue.active().keys().copied().collect();
    if !executing.is_empty() {
        let mut tx = queue.store.write().await?;
        tx.renew_leases(node, &executing, until).await?;
        tx.commit().await?;
    }
    let mut rx = queue.store.read().await?;
    let cancels = rx.cancel_requests(node).await?;
    let queued = rx.queued_count().await?;
    drop(rx);
    queue
        .metrics
        .runs_queued
        .set(i64::try_from(queued).unwrap_or(i64::MAX));
    for run in cancels {
        queue.cancel(run);
    }
    rescue(queue, false).await?;
    Ok(())
}

/// Marks abandoned the runs whose lease expired (and, at start, every
/// running run: one Steward serves a database, enforced by the store's
/// claim, so nothing else runs them) and queues their retries. Returns what
/// it rescued, for the caller to clean up after.
pub async fn rescue(queue: &RunQueue, at_start: bool) -> Result<Vec<Rescued>, StoreError> {
    let now = queue.clock.now();
    let mut tx = queue.store.write().await?;
    let rescued = tx.rescue_expired(now, at_start).await?;
    let mut retries = Vec::new();
    // A run an operator asked to cancel is not retried.
    for r in rescued.iter().filter(|r| !r.cancel_requested) {
        let ended = Ended {
            run: r.run,
            job: r.job,
            attempt: r.attempt,
            scheduled_for: r.scheduled_for,
        };
        retries.extend(follow_ups(queue, &mut *tx, &ended, RunStatus::Abandoned).await?);
    }
    if !retries.is_empty() {
        tx.enqueue_runs(&retries).await?;
    }
    tx.commit().await?;
    if !rescued.is_empty() {
        queue.count_finished(RunStatus::Abandoned, rescued.len() as u64);
        queue.wake.notify_one();
    }
    for r in &rescued {
        tracing::warn!(run = %r.run, node = r.claimed_by.as_deref().unwrap_or("-"), retried = retries.iter().any(|n| n.parent_run_id == Some(r.run)), "run abandoned: its claim's lease expired or its node restarted");
    }
    Ok(rescued)
}
