//! The dispatcher: claims queued runs while this node has free permits,
//! oldest due instant first, and starts their executions.
//!
//! One claim pass is one write transaction: it records as skipped the runs
//! whose start deadline passed, reads the due runs in queue order, decides
//! each against the job's overlap policy and concurrency limit and its
//! resource locks (all read on that transaction, so two nodes cannot both
//! take the last place), claims the runs it can, takes their locks, and
//! notes on each run it cannot start why it waits.
//!
//! **Prepared ahead.** A scheduled run is claimed up to
//! `QueueSettings::prepare_ahead` before its instant, if it could start
//! then (nothing blocks it; otherwise it is decided at its instant like any
//! other). Its execution prepares the attempt (secrets opened, a command's
//! process made, confined and in its cgroup) and starts the work itself at
//! the instant: the run is recorded `running` with `started_at` its instant.
//! The work done per run does not shrink, but it no longer lies between the
//! instant and the start. From its claim on, a prepared run counts as
//! running for its job's overlap policy and holds its locks, as if it had
//! started a moment early.

use super::{RunQueue, Slot};
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use steward_domain::{JobId, LockName, OverlapPolicy, RunId, RunStatus, Trigger};
use steward_store::{DueRun, Job, LockHolder, Run, StoreError, WriteTx};

/// At most this many queued runs are examined per pass: runs blocked by a
/// lock or their job's previous run are stepped over, up to this many.
const MAX_SCAN: usize = 2000;
/// With nothing to wake it, the dispatcher still looks every so often (runs
/// queued by another node, a lock released there).
const IDLE_POLL: Duration = Duration::from_secs(2);

pub(super) async fn run(queue: Arc<RunQueue>) {
    let mut backoff = Duration::from_millis(250);
    loop {
        if queue.stopping.is_cancelled() {
            return;
        }
        // The next due instant is on the (possibly manual) clock; the poll
        // and the back-off after an error are real time.
        let (next_due, poll) = match pass(&queue).await {
            Ok(next) => {
                backoff = Duration::from_millis(250);
                (next, IDLE_POLL)
            }
            Err(e) => {
                tracing::error!(error = %e, "could not claim queued runs; retrying");
                backoff = (backoff * 2).min(Duration::from_secs(5));
                (None, backoff)
            }
        };
        let due = async {
            match next_due {
                Some(at) => queue.clock.sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = queue.stopping.cancelled() => return,
            () = queue.wake.notified() => {}
            () = due => {}
            () = tokio::time::sleep(poll) => {}
        }
    }
}

/// Claims and starts what it can. Returns when a queued run next falls due,
/// if it knows (`None` also when every permit is taken: a freed one wakes it).
async fn pass(queue: &Arc<RunQueue>) -> Result<Option<DateTime<Utc>>, StoreError> {
    let now = queue.clock.now();
    let ahead = chrono::Duration::from_std(queue.settings.prepare_ahead).unwrap_or_default();
    let wake = queue
        .store
        .read()
        .await?
        .queue_wake(now, now + ahead)
        .await?;
    // A scheduled run is looked at `ahead` of its instant; if it cannot be
    // prepared then, `next` (its instant) brings it back.
    let next = [wake.next, wake.next_scheduled.map(|at| at - ahead)]
        .into_iter()
        .flatten()
        .filter(|at| *at > now)
        .min();
    if !wake.due_now && !wake.to_prepare {
        return Ok(next);
    }
    let free = queue.permits.available_permits();
    let slots: Vec<_> = (0..free)
        .map_while(|_| queue.permits.clone().try_acquire_owned().ok())
        .collect();
    let claimed = claim(queue, slots.len(), now, now + ahead).await?;
    let filled = claimed.len() == slots.len() && !slots.is_empty();
    for (slot, (run, job)) in slots.into_iter().zip(claimed) {
        super::execute::spawn(
            queue,
            Slot {
                _permit: slot,
                wake: queue.wake.clone(),
            },
            run,
            job,
        );
    }
    // All permits used: a freed one wakes us. Otherwise sleep until the next due instant.
    Ok(if filled { None } else { next })
}

/// What the pass knows about running runs and lock holders, including the
/// claims it made itself.
#[derive(Default)]
struct Pass {
    running: HashMap<JobId, Vec<RunId>>,
    loaded_jobs: HashSet<JobId>,
    holders: HashMap<LockName, Vec<LockHolder>>,
    loaded_locks: HashSet<LockName>,
    /// Jobs with overlap `queue` that already have a run waiting.
    queue_waiting: HashSet<JobId>,
}

#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Claim,
    /// Stays queued for `reason`. With `rest_too`, every later run of the
    /// job waits as well (same lock, same limit), so the pass leaves them
    /// out: runs blocked at the head of the queue cost one row, not all.
    Wait {
        reason: String,
        rest_too: bool,
    },
    Skip(String),
}

fn wait(reason: String) -> Decision {
    Decision::Wait {
        reason,
        rest_too: true,
    }
}

/// Claims up to `free` runs: those due at `now`, then scheduled ones due by
/// `prepare_until` that could start (see the module documentation).
async fn claim(
    queue: &RunQueue,
    free: usize,
    now: DateTime<Utc>,
    prepare_until: DateTime<Utc>,
) -> Result<Vec<(Run, Arc<Job>)>, StoreError> {
    let node = queue.settings.node.as_str();
    let mut tx = queue.store.write().await?;
    // The claims' time is read once the write lock is held: a run claimed
    // because another just ended (its ending was committed while this pass
    // waited for the lock) never starts before that ending.
    let now = queue.clock.now().max(now);
    let lease_until = now + chrono::Duration::from_std(queue.settings.lease).unwrap_or_default();
    let expired = tx.skip_expired(now).await?;
    let mut skipped = 0u64;
    let mut claimed = Vec::new();
    let mut pass = Pass::default();
    let mut after = None;
    let mut scanned = 0;
    // Jobs whose later runs would wait too: left out of the next pages.
    let mut blocked: Vec<JobId> = Vec::new();
    'scan: while claimed.len() < free && scanned < MAX_SCAN {
        // A few more than the places left, so a blocked run or two is stepped
        // over without another query; more pages follow if needed.
        let page = (free - claimed.len() + 8).min(MAX_SCAN - scanned);
        let due = tx
            .due_runs(
                now,
                prepare_until,
                after,
                &blocked,
                u32::try_from(page).unwrap_or(u32::MAX),
            )
            .await?;
        let Some(last) = due.last() else { break };
        after = Some((last.due_at, last.run.id));
        scanned += due.len();
        let full_page = due.len() == page;
        load(&mut *tx, &mut pass, &due).await?;
        for DueRun { run, job, due_at } in due {
            // Before its instant, a run that could not start now is left
            // for its instant: no wait noted, no skip recorded yet.
            let ahead = due_at > now;
            match decide(&run, &job, &mut pass) {
                Decision::Claim => {
                    let started_at = due_at.max(now);
                    if !tx.claim_run(run.id, node, started_at, lease_until).await? {
                        continue;
                    }
                    for lock in &job.definition.locks {
                        tx.take_lock(&lock.name, run.id, lock.holders).await?;
                        pass.holders
                            .entry(lock.name.clone())
                            .or_default()
                            .push(LockHolder {
                                lock: lock.name.clone(),
                                run: run.id,
                                job_name: job.name().clone(),
                                holders: lock.holders,
                            });
                    }
                    pass.running.entry(job.id).or_default().push(run.id);
                    if let Some(at) = run
                        .scheduled_for
                        .filter(|_| run.trigger == Trigger::Schedule)
                    {
                        let lag = (now - at).to_std().unwrap_or_default();
                        queue.metrics.start_lag.observe(lag.as_secs_f64());
                    }
                    let started = Run {
                        status: RunStatus::Running,
                        started_at: Some(started_at),
                        claimed_by: Some(node.to_owned()),
                        waiting_for: None,
                        ..run
                    };
                    claimed.push((started, Arc::new(job)));
                    if claimed.len() == free {
                        break 'scan;
                    }
                }
                Decision::Wait { .. } | Decision::Skip(_) if ahead => blocked.push(job.id),
                Decision::Wait { reason, rest_too } => {
                    if run.waiting_for.as_deref() != Some(reason.as_str()) {
                        tx.set_waiting(run.id, &reason).await?;
                    }
                    if rest_too {
                        blocked.push(job.id);
                    }
                }
                Decision::Skip(reason) => {
                    if tx.skip_queued(run.id, now, &reason).await? {
                        skipped += 1;
                    }
                }
            }
        }
        if !full_page {
            break;
        }
    }
    tx.commit().await?;
    queue.count_finished(RunStatus::Skipped, expired + skipped);
    if expired > 0 {
        tracing::warn!(
            runs = expired,
            "queued runs missed their start deadline; recorded as skipped"
        );
    }
    Ok(claimed)
}

/// Reads, on the claiming transaction, the running runs of the page's jobs
/// and the holders of the locks they name that the pass has not read yet.
async fn load(tx: &mut dyn WriteTx, pass: &mut Pass, due: &[DueRun]) -> Result<(), StoreError> {
    let jobs: Vec<JobId> = due
        .iter()
        .map(|d| d.job.id)
        .filter(|j| pass.loaded_jobs.insert(*j))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if !jobs.is_empty() {
        for (job, run) in tx.running_runs_of(&jobs).await? {
            pass.running.entry(job).or_default().push(run);
        }
    }
    let locks: Vec<LockName> = due
        .iter()
        .flat_map(|d| d.job.definition.locks.iter().map(|l| l.name.clone()))
        .filter(|l| pass.loaded_locks.insert(l.clone()))
        .collect();
    if !locks.is_empty() {
        for h in tx.lock_holders(&locks).await? {
            pass.holders.entry(h.lock.clone()).or_default().push(h);
        }
    }
    Ok(())
}

/// Whether a due run may start now, given what runs and holds locks.
fn decide(run: &Run, job: &Job, pass: &mut Pass) -> Decision {
    let d = &job.definition;
    if !d.enabled && run.trigger != Trigger::Manual {
        return Decision::Skip("skipped: the job was disabled while this run waited".into());
    }
    let running = pass.running.get(&job.id).map_or(&[][..], Vec::as_slice);
    // A retry follows its own failed attempt: the overlap policy is for new work.
    if run.trigger != Trigger::Retry {
        if let Some(first) = running
            .first()
            .filter(|_| d.policies.overlap != OverlapPolicy::Allow)
        {
            // run_all means every missed occurrence runs: catching up, they
            // wait for each other whatever the overlap policy.
            if run.trigger == Trigger::Schedule
                && super::is_catch_up(job, run.scheduled_for, run.created_at)
            {
                return wait(format!(
                    "catching up: waiting for run {first} of this job to end (missed-run policy run_all)"
                ));
            }
        }
        if let Some(first) = running.first() {
            match d.policies.overlap {
                OverlapPolicy::Skip => {
                    return Decision::Skip(format!(
                        "skipped: a run of this job is still active (run {first}; overlap policy skip)"
                    ));
                }
                OverlapPolicy::Queue => {
                    if !pass.queue_waiting.insert(job.id) {
                        return Decision::Skip(
                            "skipped: a run of this job is still active and another is already waiting (overlap policy queue)".into(),
                        );
                    }
                    // Later runs of the job are looked at (and skipped).
                    return Decision::Wait {
                        reason: format!(
                            "waiting for run {first} of this job to end (overlap policy queue)"
                        ),
                        rest_too: false,
                    };
                }
                OverlapPolicy::Allow => {}
            }
        }
        if let Some(max) = d.policies.max_concurrent {
            if running.len() >= max as usize {
                return wait(format!(
                    "waiting: {} runs of this job are running (policies.max_concurrent = {max})",
                    running.len()
                ));
            }
        }
    }
    for lock in &d.locks {
        let holders = pass.holders.get(&lock.name).map_or(&[][..], Vec::as_slice);
        let limit = holders
            .iter()
            .map(|h| h.holders)
            .chain([lock.holders])
            .min()
            .unwrap_or(1) as usize;
        if holders.len() >= limit {
            let first = &holders[0];
            let more = match holders.len() - 1 {
                0 => String::new(),
                n => format!(" and {n} more"),
            };
            return wait(format!(
                "waiting for lock {}, held by run {} of job {}{more}",
                lock.name, first.run, first.job_name
            ));
        }
    }
    Decision::Claim
}

#[cfg(test)]
mod tests {
    use super::*;
    use steward_domain::{JobName, ResourceLock};

    fn job(id: i64, json: serde_json::Value) -> Job {
        let mut def = serde_json::json!({"name": format!("j{id}"), "spec": {"kind": "command", "argv": ["true"]}});
        def.as_object_mut()
            .unwrap()
            .extend(json.as_object().unwrap().clone());
        Job {
            id: JobId(id),
            definition: serde_json::from_value(def).unwrap(),
            created_at: DateTime::<Utc>::UNIX_EPOCH,
            updated_at: DateTime::<Utc>::UNIX_EPOCH,
            schedule_cursor: None,
            next_run_at: None,
            last_status: None,
        }
    }

    fn run(id: i64, job: &Job, trigger: Trigger) -> Run {
        Run {
            id: RunId(id),
            job_id: job.id,
            job_name: job.name().clone(),
            status: RunStatus::Queued,
            trigger,
            scheduled_for: None,
            not_before: None,
            attempt: 1,
            parent_run_id: None,
            created_at: DateTime::<Utc>::UNIX_EPOCH,
            started_at: None,
            finished_at: None,
            outcome: None,
            handle: None,
            error: None,
            output_truncated: false,
            waiting_for: None,
            claimed_by: None,
            start_deadline: None,
        }
    }

    fn hold(pass: &mut Pass, lock: &str, run: i64, job: &str, holders: u32) {
        let name = LockName::parse(lock).unwrap();
        pass.holders
            .entry(name.clone())
            .or_default()
            .push(LockHolder {
                lock: name,
                run: RunId(run),
                job_name: JobName::parse(job).unwrap(),
                holders,
            });
    }

    #[test]
    fn overlap_policies() {
        let mut pass = Pass::default();
        let skip = job(1, serde_json::json!({}));
        pass.running.insert(skip.id, vec![RunId(7)]);
        assert!(
            matches!(decide(&run(8, &skip, Trigger::Schedule), &skip, &mut pass), Decision::Skip(r) if r.contains("run 7"))
        );
        assert_eq!(
            decide(&run(9, &skip, Trigger::Retry), &skip, &mut pass),
            Decision::Claim
        );

        let queue = job(2, serde_json::json!({"policies": {"overlap": "queue"}}));
        pass.running.insert(queue.id, vec![RunId(10)]);
        assert!(
            matches!(decide(&run(11, &queue, Trigger::Schedule), &queue, &mut pass), Decision::Wait { reason: r, .. } if r.contains("run 10"))
        );
        assert!(
            matches!(decide(&run(12, &queue, Trigger::Schedule), &queue, &mut pass), Decision::Skip(r) if r.contains("already waiting"))
        );

        let allow = job(
            3,
            serde_json::json!({"policies": {"overlap": "allow", "max_concurrent": 2}}),
        );
        pass.running.insert(allow.id, vec![RunId(20)]);
        assert_eq!(
            decide(&run(21, &allow, Trigger::Schedule), &allow, &mut pass),
            Decision::Claim
        );
        pass.running.get_mut(&allow.id).unwrap().push(RunId(21));
        assert!(
            matches!(decide(&run(22, &allow, Trigger::Manual), &allow, &mut pass), Decision::Wait { reason: r, .. } if r.contains("max_concurrent = 2"))
        );

        let disabled = job(4, serde_json::json!({"enabled": false}));
        assert!(matches!(
            decide(&run(30, &disabled, Trigger::Schedule), &disabled, &mut pass),
            Decision::Skip(_)
        ));
        assert_eq!(
            decide(&run(31, &disabled, Trigger::Manual), &disabled, &mut pass),
            Decision::Claim
        );
    }

    #[test]
    fn exclusive_and_counted_locks() {
        let offsite = job(
            1,
            serde_json::json!({"locks": [{"name": "restic:offsite"}]}),
        );
        let mut pass = Pass::default();
        assert_eq!(
            decide(&run(1, &offsite, Trigger::Schedule), &offsite, &mut pass),
            Decision::Claim
        );
        hold(&mut pass, "restic:offsite", 4711, "weekly-offsite", 1);
        assert_eq!(
            decide(&run(2, &offsite, Trigger::Schedule), &offsite, &mut pass),
            wait("waiting for lock restic:offsite, held by run 4711 of job weekly-offsite".into())
        );

        let pg = job(
            2,
            serde_json::json!({"locks": [{"name": "pg:main", "holders": 2}]}),
        );
        let mut pass = Pass::default();
        hold(&mut pass, "pg:main", 1, "a", 2);
        assert_eq!(
            decide(&run(3, &pg, Trigger::Schedule), &pg, &mut pass),
            Decision::Claim
        );
        hold(&mut pass, "pg:main", 2, "b", 2);
        assert!(
            matches!(decide(&run(4, &pg, Trigger::Schedule), &pg, &mut pass), Decision::Wait { reason: r, .. } if r.contains("and 1 more"))
        );

        // An exclusive holder keeps counted claimants out, and the reverse.
        let mut pass = Pass::default();
        hold(&mut pass, "pg:main", 5, "dump", 1);
        assert!(matches!(
            decide(&run(6, &pg, Trigger::Schedule), &pg, &mut pass),
            Decision::Wait { .. }
        ));
        let exclusive = Job {
            definition: steward_domain::JobDefinition {
                locks: vec![ResourceLock {
                    name: LockName::parse("pg:main").unwrap(),
                    holders: 1,
                }],
                ..pg.definition.clone()
            },
            ..pg.clone()
        };
        let mut pass = Pass::default();
        hold(&mut pass, "pg:main", 7, "a", 2);
        assert!(matches!(
            decide(&run(8, &exclusive, Trigger::Retry), &exclusive, &mut pass),
            Decision::Wait { .. }
        ));
    }
}
