//! The scheduler: one task over a min-heap of (next occurrence, job). It sleeps
//! until the earliest occurrence or until a job changes, so its work is
//! proportional to what is due, not to how many jobs exist, and a change takes
//! effect at once. Entries made stale by a change are skipped lazily by generation.
//!
//! It only produces occurrences: everything due at one wake-up goes to the
//! queue's recorder as one batch, which writes them as queued runs (see
//! `crate::queue`). It never waits for the database or for capacity.
//!
//! It works `RunQueue::prepare_ahead` (1.5 s) ahead of the clock: an
//! occurrence is recorded that long before its instant, so that the
//! dispatcher can prepare its run to start at the instant itself. Lateness
//! (`LATE_TOLERANCE`) is measured against the clock.

use crate::queue::{Occurrence, RunQueue};
use chrono::{DateTime, Utc};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use steward_clock::Clock;
use steward_domain::{JobId, MissedRunPolicy, TimeZone, MAX_CATCH_UP};
use steward_store::Job;
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
    queue: Arc<RunQueue>,
    default_tz: TimeZone,
}

impl Scheduler {
    /// Starts the scheduler task. It ends when `stop` is cancelled.
    pub fn spawn(
        clock: Arc<dyn Clock>,
        queue: Arc<RunQueue>,
        default_tz: TimeZone,
        stop: tokio_util::sync::CancellationToken,
    ) -> (SchedulerHandle, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let s = Scheduler {
            heap: BinaryHeap::new(),
            entries: HashMap::new(),
            generation: 0,
            clock,
            queue,
            default_tz,
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
        let ahead = chrono::Duration::from_std(self.queue.prepare_ahead()).unwrap_or_default();
        loop {
            self.fire_due();
            let wake = self.heap.peek().map(|Reverse((at, _, _))| *at - ahead);
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
                let from = after.unwrap_or_else(|| schedule_from(job.updated_at, self.clock.now()));
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
        let horizon =
            now + chrono::Duration::from_std(self.queue.prepare_ahead()).unwrap_or_default();
        let mut due_now = Vec::new();
        while let Some(Reverse((due, generation, id))) = self.heap.peek().copied() {
            if due > horizon {
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
            let mut next = schedule.next_after(due, &tz);
            if now - due > LATE_TOLERANCE {
                // We were stalled (a suspended machine): treat the backlog like downtime.
                tracing::warn!(job = %job.name(), behind_ms = (now - due).num_milliseconds(), "scheduler fell behind; applying the missed-run policy");
                due_now.extend(missed(
                    &job,
                    &schedule,
                    &tz,
                    due,
                    now,
                    "the scheduler fell behind",
                ));
                next = schedule.next_after(now, &tz);
            } else {
                due_now.push(Occurrence::due(job, due));
            }
            if let Some(n) = next {
                self.heap.push(Reverse((n, generation, id)));
            }
        }
        self.queue.record(due_now);
    }
}

/// Where a saved job's occurrences start: at the instant it was saved, not
/// when this task gets to the change, so an occurrence falling between the
/// two still fires (a job created a moment before the hour runs at the
/// hour, however busy the scheduler was). At most [`LATE_TOLERANCE`] back:
/// an old copy re-added (a delete that failed) is not replayed.
fn schedule_from(saved_at: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    saved_at.clamp(now - LATE_TOLERANCE, now)
}

/// What a job's missed-run policy makes of its occurrences in `[first, until]`
/// (`first` is one): runs for those it catches up, and a skipped run
/// recording those it does not, so a missed backup is never silent.
pub fn missed(
    job: &Arc<Job>,
    schedule: &steward_domain::Schedule,
    tz: &TimeZone,
    first: DateTime<Utc>,
    until: DateTime<Utc>,
    why: &str,
) -> Vec<Occurrence> {
    let latest = latest_at_or_before(schedule, tz, first, until);
    let skipped = |at: DateTime<Utc>, what: String| Occurrence {
        job: job.clone(),
        at,
        skipped: Some(format!("skipped: {what} ({why})")),
        since: Some(first),
    };
    match job.definition.policies.missed {
        MissedRunPolicy::Skip => vec![skipped(
            latest,
            format!("missed occurrences since {first} not run (missed-run policy skip)"),
        )],
        MissedRunPolicy::RunOnce => vec![Occurrence::due(job.clone(), latest)],
        MissedRunPolicy::RunAll => {
            // The last MAX_CATCH_UP occurrences, oldest first. Walk from
            // the start of the smallest window back from `until` that holds
            // that many, so a long downtime of an every-second job stays cheap.
            let mut all = std::collections::VecDeque::new();
            for window in [
                chrono::Duration::minutes(2),
                chrono::Duration::hours(2),
                chrono::Duration::days(2),
                chrono::Duration::days(40),
                chrono::Duration::days(800),
                chrono::Duration::MAX,
            ] {
                let from = until.checked_sub_signed(window).unwrap_or(first).max(first);
                all.clear();
                if from == first {
                    all.push_back(first);
                }
                let mut t = from;
                while let Some(n) = schedule.next_after(t, tz).filter(|n| *n <= until) {
                    all.push_back(n);
                    if all.len() > MAX_CATCH_UP {
                        all.pop_front();
                    }
                    t = n;
                }
                if all.len() >= MAX_CATCH_UP || from == first {
                    break;
                }
            }
            let oldest_run = all[0];
            let mut out = Vec::new();
            if oldest_run != first {
                out.push(skipped(
                    first,
                    format!("occurrences from {first} to before {oldest_run} not run: run_all catches up at most {MAX_CATCH_UP}"),
                ));
            }
            out.extend(all.into_iter().map(|at| Occurrence::due(job.clone(), at)));
            out
        }
    }
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
    fn a_job_saved_just_before_an_occurrence_gets_it() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let hourly = Schedule::parse("0 * * * *").unwrap();
        // Saved at 10:59:59.9, the change reached the scheduler at 11:00:00.2.
        let from = schedule_from(t("2026-12-03T10:59:59.9Z"), t("2026-12-03T11:00:00.2Z"));
        assert_eq!(
            hourly.next_after(from, &TimeZone::UTC),
            Some(t("2026-12-03T11:00:00Z"))
        );
        // An old copy is not replayed past the late tolerance.
        let from = schedule_from(t("2026-12-03T09:00:00Z"), t("2026-12-03T11:00:00.2Z"));
        assert_eq!(from, t("2026-12-03T10:59:55.2Z"));
        // A save stamped after now (a clock that moved back) counts from now.
        let now = t("2026-12-03T11:00:00Z");
        assert_eq!(schedule_from(t("2026-12-03T11:30:00Z"), now), now);
    }

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
