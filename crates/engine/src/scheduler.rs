//! The scheduler: one task over a min-heap of (next occurrence, job). It sleeps
//! until the earliest occurrence or until a job changes, so its work is
//! proportional to what is due, not to how many jobs exist, and a change takes
//! effect at once. Entries made stale by a change are skipped lazily by generation.

use crate::metrics::Metrics;
use crate::runner::{Runner, Submit};
use chrono::{DateTime, Utc};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use steward_clock::Clock;
use steward_domain::{JobId, MissedRunPolicy, TimeZone, Trigger};
use steward_store::{Job, StoreError};
use tokio::sync::mpsc;

/// How far behind the scheduler may fall before occurrences count as missed
/// (a suspended machine, a stalled runtime) instead of being fired late.
const LATE_TOLERANCE: chrono::Duration = chrono::Duration::seconds(5);

enum Cmd {
    /// Schedule the job's occurrences after the given instant (or after now).
    Upsert(Arc<Job>, Option<DateTime<Utc>>),
    Remove(JobId),
}

#[derive(Clone)]
pub struct SchedulerHandle {
    tx: mpsc::UnboundedSender<Cmd>,
}

impl SchedulerHandle {
    /// (Re)schedules a job from its current definition; disabled or unscheduled
    /// jobs are removed from the heap.
    pub fn upsert(&self, job: Arc<Job>) {
        let _ = self.tx.send(Cmd::Upsert(job, None));
    }

    /// Like `upsert`, but occurrences after `after` count, even if that instant is
    /// already past when the scheduler gets to it (start-up hands over from the
    /// missed-run catch-up at exactly the instant it checked up to).
    pub fn upsert_from(&self, job: Arc<Job>, after: DateTime<Utc>) {
        let _ = self.tx.send(Cmd::Upsert(job, Some(after)));
    }
    pub fn remove(&self, id: JobId) {
        let _ = self.tx.send(Cmd::Remove(id));
    }
}

struct Entry {
    job: Arc<Job>,
    generation: u64,
}

pub struct Scheduler {
    heap: BinaryHeap<Reverse<(DateTime<Utc>, u64, JobId)>>,
    entries: HashMap<JobId, Entry>,
    generation: u64,
    clock: Arc<dyn Clock>,
    runner: Arc<Runner>,
    metrics: Metrics,
    default_tz: TimeZone,
    last_shed_log: Option<std::time::Instant>,
}

impl Scheduler {
    /// Starts the scheduler task. It ends when `stop` is cancelled.
    pub fn spawn(
        clock: Arc<dyn Clock>,
        runner: Arc<Runner>,
        metrics: Metrics,
        default_tz: TimeZone,
        stop: tokio_util::sync::CancellationToken,
    ) -> (SchedulerHandle, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let s = Scheduler {
            heap: BinaryHeap::new(),
            entries: HashMap::new(),
            generation: 0,
            clock,
            runner,
            metrics,
            default_tz,
            last_shed_log: None,
        };
        (SchedulerHandle { tx }, tokio::spawn(s.run(rx, stop)))
    }

    fn tz(&self, job: &Job) -> TimeZone {
        job.definition.timezone.unwrap_or(self.default_tz)
    }

    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Cmd>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        loop {
            self.fire_due();
            let wake = self.heap.peek().map(|Reverse((at, _, _))| *at);
            let sleep = async {
                match wake {
                    Some(at) => self.clock.sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let cmd = tokio::select! {
                biased;
                () = stop.cancelled() => return,
                cmd = rx.recv() => match cmd {
                    Some(cmd) => Some(cmd),
                    None => return,
                },
                () = sleep => None,
            };
            // Fire what fell due while we waited before a change can replace it.
            self.fire_due();
            if let Some(cmd) = cmd {
                self.apply(cmd);
            }
            // Drain further commands without sleeping in between (bulk changes).
            while let Ok(cmd) = rx.try_recv() {
                self.apply(cmd);
            }
        }
    }

    fn apply(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Remove(id) => {
                self.entries.remove(&id);
            }
            Cmd::Upsert(job, after) => {
                self.generation += 1;
                let id = job.id;
                let schedulable = job.definition.enabled && job.definition.schedule.is_some();
                if !schedulable {
                    self.entries.remove(&id);
                    return;
                }
                let from = after.unwrap_or_else(|| self.clock.now());
                let next = job
                    .definition
                    .schedule
                    .as_ref()
                    .and_then(|s| s.next_after(from, &self.tz(&job)));
                self.entries.insert(
                    id,
                    Entry {
                        job,
                        generation: self.generation,
                    },
                );
                if let Some(at) = next {
                    self.heap.push(Reverse((at, self.generation, id)));
                }
            }
        }
    }

    fn fire_due(&mut self) {
        let now = self.clock.now();
        while let Some(Reverse((due, generation, id))) = self.heap.peek().copied() {
            if due > now {
                break;
            }
            self.heap.pop();
            let Some(entry) = self.entries.get(&id).filter(|e| e.generation == generation) else {
                continue; // stale: the job changed or was removed
            };
            let job = entry.job.clone();
            let tz = self.tz(&job);
            let Some(schedule) = job.definition.schedule.clone() else {
                continue;
            };
            let mut fire_at = Some(due);
            let mut next = schedule.next_after(due, &tz);
            if now - due > LATE_TOLERANCE {
                // We were stalled: treat the backlog like downtime.
                let latest = latest_at_or_before(&schedule, &tz, due, now);
                fire_at = match job.definition.policies.missed {
                    MissedRunPolicy::RunOnce => Some(latest),
                    MissedRunPolicy::Skip => None,
                };
                tracing::warn!(job = %job.name(), behind_ms = (now - due).num_milliseconds(), "scheduler fell behind; applying the missed-run policy");
                next = schedule.next_after(now, &tz);
            }
            if fire_at.is_some() && !self.runner.try_reserve() {
                self.metrics.occurrences_shed.inc();
                let now_mono = std::time::Instant::now();
                if self
                    .last_shed_log
                    .is_none_or(|t| now_mono.duration_since(t).as_secs() >= 10)
                {
                    self.last_shed_log = Some(now_mono);
                    tracing::warn!(
                        "max_active_runs reached: scheduled occurrences are being shed (see steward_occurrences_shed_total)"
                    );
                }
                fire_at = None;
            }
            if let Some(at) = fire_at {
                let lag = (now - at).to_std().unwrap_or_default();
                self.metrics.scheduler_lag.observe(lag.as_secs_f64());
                fire(&self.runner, job.clone(), at, true);
            }
            if let Some(n) = next {
                self.heap.push(Reverse((n, generation, id)));
            }
        }
    }
}

/// Records and starts the run of one occurrence without blocking the scheduler.
pub(crate) fn fire(runner: &Arc<Runner>, job: Arc<Job>, at: DateTime<Utc>, reserved: bool) {
    let runner = runner.clone();
    tokio::spawn(async move {
        let req = Submit {
            scheduled_for: Some(at),
            reserved,
            ..Submit::new(Trigger::Schedule)
        };
        match runner.submit(job.clone(), req).await {
            Ok(_) => {}
            Err(crate::runner::SubmitError::Store(StoreError::Conflict(_))) => {
                tracing::debug!(job = %job.name(), %at, "occurrence already recorded");
            }
            Err(e) => {
                tracing::error!(job = %job.name(), %at, error = %e, "could not start a scheduled run")
            }
        }
    });
}

/// The latest occurrence in `(after, until]`, given one is known to exist at or
/// after `first`. Searches growing windows back from `until` so a long downtime
/// of an every-second job does not walk millions of occurrences.
pub fn latest_at_or_before(
    schedule: &steward_domain::Schedule,
    tz: &TimeZone,
    first: DateTime<Utc>,
    until: DateTime<Utc>,
) -> DateTime<Utc> {
    for window in [
        chrono::Duration::minutes(2),
        chrono::Duration::hours(2),
        chrono::Duration::days(2),
        chrono::Duration::days(40),
        chrono::Duration::days(800),
    ] {
        let start = (until - window).max(first - chrono::Duration::milliseconds(1));
        let mut t = start;
        let mut latest = None;
        for _ in 0..200_000 {
            match schedule.next_after(t, tz) {
                Some(n) if n <= until => {
                    latest = Some(n);
                    t = n;
                }
                _ => break,
            }
        }
        if let Some(l) = latest {
            return l;
        }
        if start < first {
            break;
        }
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;
    use steward_domain::Schedule;

    #[test]
    fn latest_missed_occurrence() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let s = Schedule::parse("0 3 * * *").unwrap();
        let got = latest_at_or_before(
            &s,
            &TimeZone::UTC,
            t("2026-01-01T03:00:00Z"),
            t("2026-03-10T12:00:00Z"),
        );
        assert_eq!(got, t("2026-03-10T03:00:00Z"));
        let s = Schedule::parse("@every 1s").unwrap();
        let got = latest_at_or_before(
            &s,
            &TimeZone::UTC,
            t("2025-01-01T00:00:01Z"),
            t("2026-03-10T12:00:00.5Z"),
        );
        assert_eq!(got, t("2026-03-10T12:00:00Z"));
    }
}
