//! The recorder: turns scheduled occurrences into queued runs, many per
//! transaction (group commit), with the schedule cursor moved on the same
//! transaction. An occurrence that cannot be written now (the database is
//! down) is kept and written when it is back; its start deadline then
//! decides whether it still runs or is recorded as skipped. Past
//! `MAX_PENDING` kept occurrences, a long outage is treated as downtime: each
//! job's are folded by its missed-run policy, so memory stays bounded and
//! what does not run is still recorded, as skipped with the reason.

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

/// Occurrences kept in memory while the database cannot be written, at most
/// (a few MB). Beyond it, a long outage is treated as downtime: each job's
/// waiting occurrences are folded by its missed-run policy ([`fold_by_policy`]),
/// as the next start would fold what a stopped Steward missed.
const MAX_PENDING: usize = 100_000;

/// One due instant of a job's schedule, or a record of instants skipped.
#[derive(Clone)]
pub struct Occurrence {
    pub job: Arc<Job>,
    pub at: DateTime<Utc>,
    /// `Some(reason)`: recorded as `skipped` (missed-run policy), not run.
    pub skipped: Option<String>,
    /// For a skipped record that stands for a range of instants: where the
    /// range began (so that folding it again keeps the whole range).
    pub since: Option<DateTime<Utc>>,
}

impl Occurrence {
    pub fn due(job: Arc<Job>, at: DateTime<Utc>) -> Self {
        Self {
            job,
            at,
            skipped: None,
            since: None,
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
                if pending.len() > MAX_PENDING {
                    let before = pending.len();
                    fold_by_policy(&mut pending, &queue.settings.default_timezone);
                    tracing::warn!(
                        before,
                        after = pending.len(),
                        "the database has been unreachable for long: waiting occurrences folded by each job's missed-run policy (the skipped ones are recorded with the reason once it is back)"
                    );
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

/// Folds each job's waiting occurrences (two or more) by its missed-run
/// policy, over the whole range they span, as for downtime: `skip` becomes
/// one skipped record naming the range, `run_once` the latest occurrence,
/// `run_all` the last `MAX_CATCH_UP` and a skipped record for the rest. What
/// is left is at most `MAX_CATCH_UP + 1` records per job however often this
/// runs, oldest first.
fn fold_by_policy(pending: &mut Vec<Occurrence>, default_tz: &steward_domain::TimeZone) {
    let mut kept = Vec::new();
    let mut by_job: HashMap<JobId, Vec<Occurrence>> = HashMap::new();
    for o in pending.drain(..) {
        by_job.entry(o.job.id).or_default().push(o);
    }
    for (_, waiting) in by_job {
        let first = waiting.iter().map(|o| o.since.unwrap_or(o.at)).min();
        let last = waiting.iter().map(|o| o.at).max();
        let job = waiting[0].job.clone();
        match (&job.definition.schedule, first, last, waiting.len()) {
            (Some(schedule), Some(first), Some(last), 2..) => {
                let tz = job.definition.timezone.unwrap_or(*default_tz);
                kept.extend(crate::scheduler::missed(
                    &job,
                    schedule,
                    &tz,
                    first,
                    last,
                    "the database was unreachable",
                ));
            }
            _ => kept.extend(waiting),
        }
    }
    kept.sort_by_key(|o| o.at);
    *pending = kept;
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

#[cfg(test)]
mod tests {
    use super::*;
    use steward_domain::TimeZone;

    fn job(id: i64, missed: &str) -> Arc<Job> {
        let definition = serde_json::from_value(serde_json::json!({
            "name": format!("job-{id}"),
            "schedule": "@every 1s",
            "spec": {"kind": "command", "argv": ["true"]},
            "policies": {"missed": missed},
        }))
        .unwrap();
        let t = DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        Arc::new(Job {
            id: JobId(id),
            definition,
            created_at: t,
            updated_at: t,
            schedule_cursor: None,
            next_run_at: None,
            last_status: None,
        })
    }

    #[test]
    fn a_long_outage_is_folded_by_each_jobs_missed_run_policy() {
        let start = DateTime::parse_from_rfc3339("2026-12-03T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let (skip, once, all, lone) = (
            job(1, "skip"),
            job(2, "run_once"),
            job(3, "run_all"),
            job(4, "skip"),
        );
        let mut pending = vec![Occurrence::due(lone.clone(), start)];
        for s in 0..1000 {
            let at = start + chrono::Duration::seconds(s);
            for j in [&skip, &once, &all] {
                pending.push(Occurrence::due(j.clone(), at));
            }
        }
        fold_by_policy(&mut pending, &TimeZone::UTC);
        let of = |j: &Arc<Job>| of_job(&pending, j);
        let last = start + chrono::Duration::seconds(999);
        // skip: one record of the range, run nothing.
        let s = of(&skip);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].at, last);
        assert!(s[0]
            .skipped
            .as_deref()
            .unwrap()
            .contains("database was unreachable"));
        // run_once: the latest occurrence runs.
        let o = of(&once);
        assert_eq!((o.len(), o[0].at, o[0].skipped.is_none()), (1, last, true));
        // run_all: the last MAX_CATCH_UP run, the rest recorded as skipped.
        let a = of(&all);
        assert_eq!(
            a.iter().filter(|o| o.skipped.is_none()).count(),
            steward_domain::MAX_CATCH_UP
        );
        assert_eq!(a.iter().filter(|o| o.skipped.is_some()).count(), 1);
        // A job with one waiting occurrence keeps it as it was.
        let l = of(&lone);
        assert_eq!((l.len(), l[0].skipped.is_none()), (1, true));
        // Oldest first, and far fewer than before.
        assert!(pending.windows(2).all(|w| w[0].at <= w[1].at));
        let folded = pending.len();
        assert!(folded < 3 + steward_domain::MAX_CATCH_UP + 2);
        // The outage goes on: folding again keeps it as small.
        for s in 1000..2000 {
            let at = start + chrono::Duration::seconds(s);
            for j in [&skip, &once, &all] {
                pending.push(Occurrence::due(j.clone(), at));
            }
        }
        fold_by_policy(&mut pending, &TimeZone::UTC);
        assert_eq!(pending.len(), folded);
        let s = of_job(&pending, &skip);
        assert!(
            s[0].skipped
                .as_deref()
                .unwrap()
                .contains("since 2026-12-03 10:00:00"),
            "{:?}",
            s[0].skipped
        );
    }

    fn of_job<'a>(pending: &'a [Occurrence], j: &Arc<Job>) -> Vec<&'a Occurrence> {
        pending.iter().filter(|o| o.job.id == j.id).collect()
    }
}
