//! The run queue (see `crate::queue`).

use super::jobs::{job_from_columns, record_ending, release_locks, run_from_row, RUN_COLUMNS};
use super::{backend, from_ms, ms, Db, Tx};
use crate::model::{NewRun, Run, RunUpdate};
use crate::queue::{DueRun, LockHolder, QueueReads, QueueWake, QueueWrites, Rescued};
use crate::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Row};
use steward_domain::{JobId, JobName, LockName, RunId, RunStatus, Trigger};

/// Rows per multi-row INSERT: 12 parameters each stays far below SQLite's
/// 32,766 and PostgreSQL's 65,535 bound parameters.
const INSERT_CHUNK: usize = 1000;

#[async_trait]
impl QueueReads for Tx {
    async fn queue_wake(
        &mut self,
        now: DateTime<Utc>,
        prepare_until: DateTime<Utc>,
    ) -> Result<QueueWake> {
        let row = sqlx::query(
            "SELECT \
               (SELECT MIN(due_at) FROM runs WHERE status = 'queued') AS due, \
               (SELECT MIN(start_deadline) FROM runs WHERE status = 'queued') AS deadline, \
               (SELECT MIN(due_at) FROM runs WHERE status = 'queued' AND due_at > $1) AS next_due, \
               (SELECT MIN(due_at) FROM runs WHERE status = 'queued' AND due_at > $1 \
                  AND due_at <= $2 AND trigger_kind = 'schedule') AS to_prepare, \
               (SELECT MIN(due_at) FROM runs WHERE status = 'queued' AND due_at > $2 \
                  AND trigger_kind = 'schedule') AS next_scheduled",
        )
        .bind(ms(now))
        .bind(ms(prepare_until.max(now)))
        .fetch_one(self.conn())
        .await
        .map_err(backend)?;
        let due: Option<i64> = row.try_get("due").map_err(backend)?;
        let deadline: Option<i64> = row.try_get("deadline").map_err(backend)?;
        let next_due: Option<i64> = row.try_get("next_due").map_err(backend)?;
        let to_prepare: Option<i64> = row.try_get("to_prepare").map_err(backend)?;
        let next_scheduled: Option<i64> = row.try_get("next_scheduled").map_err(backend)?;
        let now_ms = ms(now);
        let due_now = due.is_some_and(|d| d <= now_ms) || deadline.is_some_and(|d| d < now_ms);
        let next = [next_due, deadline.filter(|d| *d >= now_ms).map(|d| d + 1)]
            .into_iter()
            .flatten()
            .min()
            .map(from_ms);
        Ok(QueueWake {
            due_now,
            next,
            to_prepare: to_prepare.is_some(),
            next_scheduled: next_scheduled.map(from_ms),
        })
    }

    async fn due_runs(
        &mut self,
        now: DateTime<Utc>,
        scheduled_by: DateTime<Utc>,
        after: Option<(DateTime<Utc>, RunId)>,
        skip_jobs: &[JobId],
        limit: u32,
    ) -> Result<Vec<DueRun>> {
        let mut q: QueryBuilder<Db> = QueryBuilder::new(format!(
            "SELECT {RUN_COLUMNS}, r.due_at, j.id AS jid, j.name AS jname, j.enabled AS jenabled, \
             j.definition AS jdefinition, j.created_at AS jcreated_at, j.updated_at AS jupdated_at, \
             j.schedule_cursor AS jschedule_cursor, j.next_run_at AS jnext_run_at, \
             j.last_status AS jlast_status \
             FROM runs r JOIN jobs j ON j.id = r.job_id WHERE r.status = 'queued' AND r.due_at <= "
        ));
        // The first bound keeps the `runs_queue` index's range; the second
        // leaves out what is not due now and not a scheduled run.
        let by = ms(scheduled_by.max(now));
        q.push_bind(by)
            .push(" AND (r.due_at <= ")
            .push_bind(ms(now))
            .push(" OR r.trigger_kind = 'schedule')");
        if let Some((due, id)) = after {
            q.push(" AND (r.due_at > ")
                .push_bind(ms(due))
                .push(" OR (r.due_at = ")
                .push_bind(ms(due))
                .push(" AND r.id > ")
                .push_bind(id.0)
                .push("))");
        }
        if !skip_jobs.is_empty() {
            q.push(" AND r.job_id NOT IN (");
            let mut list = q.separated(", ");
            for j in skip_jobs {
                list.push_bind(j.0);
            }
            q.push(")");
        }
        q.push(" ORDER BY r.due_at, r.id LIMIT ")
            .push_bind(i64::from(limit));
        let rows = q.build().fetch_all(self.conn()).await.map_err(backend)?;
        rows.iter()
            .map(|row| {
                Ok(DueRun {
                    run: run_from_row(row)?,
                    job: job_from_columns(row, "j")?,
                    due_at: from_ms(row.try_get("due_at").map_err(backend)?),
                })
            })
            .collect()
    }

    async fn running_runs_of(&mut self, jobs: &[JobId]) -> Result<Vec<(JobId, RunId)>> {
        let mut out = Vec::new();
        for chunk in jobs.chunks(INSERT_CHUNK) {
            let mut q: QueryBuilder<Db> = QueryBuilder::new(
                "SELECT job_id, id FROM runs WHERE status = 'running' AND job_id IN (",
            );
            let mut list = q.separated(", ");
            for j in chunk {
                list.push_bind(j.0);
            }
            q.push(")");
            let rows: Vec<(i64, i64)> = q
                .build_query_as()
                .fetch_all(self.conn())
                .await
                .map_err(backend)?;
            out.extend(rows.into_iter().map(|(j, r)| (JobId(j), RunId(r))));
        }
        Ok(out)
    }

    async fn active_runs_of(&mut self, job: JobId, limit: u32) -> Result<Vec<Run>> {
        let rows = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs r JOIN jobs j ON j.id = r.job_id \
             WHERE r.job_id = $1 AND r.status IN ('queued', 'running') ORDER BY r.id LIMIT $2"
        ))
        .bind(job.0)
        .bind(i64::from(limit))
        .fetch_all(self.conn())
        .await
        .map_err(backend)?;
        rows.iter().map(run_from_row).collect()
    }

    async fn lock_holders(&mut self, names: &[LockName]) -> Result<Vec<LockHolder>> {
        if names.is_empty() {
            return Ok(vec![]);
        }
        let mut q: QueryBuilder<Db> = QueryBuilder::new(
            "SELECT l.lock_name, l.run_id, l.holders, j.name FROM run_locks l \
             JOIN runs r ON r.id = l.run_id JOIN jobs j ON j.id = r.job_id WHERE l.lock_name IN (",
        );
        let mut list = q.separated(", ");
        for n in names {
            list.push_bind(n.as_str());
        }
        q.push(") ORDER BY l.run_id");
        let rows: Vec<(String, i64, i64, String)> = q
            .build_query_as()
            .fetch_all(self.conn())
            .await
            .map_err(backend)?;
        rows.into_iter()
            .map(|(lock, run, holders, job)| {
                Ok(LockHolder {
                    lock: LockName::parse(&lock).map_err(backend)?,
                    run: RunId(run),
                    job_name: JobName::parse(&job).map_err(backend)?,
                    holders: u32::try_from(holders).unwrap_or(1),
                })
            })
            .collect()
    }

    async fn cancel_requests(&mut self, claimant: &str) -> Result<Vec<RunId>> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM runs WHERE status = 'running' AND claimed_by = $1 AND cancel_requested_at IS NOT NULL",
        )
        .bind(claimant)
        .fetch_all(self.conn())
        .await
        .map_err(backend)?;
        Ok(ids.into_iter().map(RunId).collect())
    }

    async fn queued_count(&mut self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE status = 'queued'")
            .fetch_one(self.conn())
            .await
            .map_err(backend)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

#[async_trait]
impl QueueWrites for Tx {
    async fn enqueue_runs(&mut self, runs: &[NewRun]) -> Result<u64> {
        let mut recorded = 0;
        for chunk in runs.chunks(INSERT_CHUNK) {
            let mut q: QueryBuilder<Db> = QueryBuilder::new(
                "INSERT INTO runs (job_id, status, trigger_kind, scheduled_for, not_before, attempt, \
                 parent_run_id, created_at, error, finished_at, due_at, start_deadline) ",
            );
            q.push_values(chunk, |mut b, run| {
                b.push_bind(run.job_id.0)
                    .push_bind(run.status.as_str())
                    .push_bind(run.trigger.as_str())
                    .push_bind(run.scheduled_for.map(ms))
                    .push_bind(run.not_before.map(ms))
                    .push_bind(i64::from(run.attempt))
                    .push_bind(run.parent_run_id.map(|r| r.0))
                    .push_bind(ms(run.created_at))
                    .push_bind(run.error.clone())
                    .push_bind(run.status.is_terminal().then(|| ms(run.created_at)))
                    .push_bind(ms(run.due_at()))
                    .push_bind(run.start_deadline.map(ms));
            });
            // The unique occurrence index makes a second record of the same
            // scheduled instant a no-op: firing stays exactly-once.
            q.push(" ON CONFLICT DO NOTHING");
            let done = q.build().execute(self.conn()).await.map_err(backend)?;
            recorded += done.rows_affected();
        }
        Ok(recorded)
    }

    async fn skip_expired(&mut self, now: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE runs SET status = 'skipped', finished_at = $1, waiting_for = NULL, \
             error = 'skipped: missed its start deadline after ' || CAST(($1 - created_at) / 1000 AS TEXT) \
             || ' s in the queue' || COALESCE(' (' || waiting_for || ')', '') \
             WHERE status = 'queued' AND start_deadline < $1",
        )
        .bind(ms(now))
        .execute(self.conn())
        .await
        .map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn claim_run(
        &mut self,
        id: RunId,
        claimant: &str,
        started_at: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE runs SET status = 'running', started_at = $1, claimed_by = $2, lease_until = $3, \
             waiting_for = NULL WHERE id = $4 AND status = 'queued'",
        )
        .bind(ms(started_at))
        .bind(claimant)
        .bind(ms(lease_until))
        .bind(id.0)
        .execute(self.conn())
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }

    async fn take_lock(&mut self, lock: &LockName, run: RunId, holders: u32) -> Result<()> {
        sqlx::query("INSERT INTO run_locks (lock_name, run_id, holders) VALUES ($1, $2, $3)")
            .bind(lock.as_str())
            .bind(run.0)
            .bind(i64::from(holders))
            .execute(self.conn())
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn set_waiting(&mut self, id: RunId, reason: &str) -> Result<()> {
        sqlx::query("UPDATE runs SET waiting_for = $1 WHERE id = $2 AND status = 'queued'")
            .bind(reason)
            .bind(id.0)
            .execute(self.conn())
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn skip_queued(&mut self, id: RunId, at: DateTime<Utc>, reason: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE runs SET status = 'skipped', finished_at = $1, error = $2, waiting_for = NULL \
             WHERE id = $3 AND status = 'queued'",
        )
        .bind(ms(at))
        .bind(reason)
        .bind(id.0)
        .execute(self.conn())
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }

    async fn finish_claimed(&mut self, id: RunId, claimant: &str, u: &RunUpdate) -> Result<bool> {
        record_ending(self, id, Some(claimant), u).await
    }

    async fn renew_leases(
        &mut self,
        claimant: &str,
        runs: &[RunId],
        until: DateTime<Utc>,
    ) -> Result<u64> {
        let mut renewed = 0;
        for chunk in runs.chunks(INSERT_CHUNK) {
            let mut q: QueryBuilder<Db> = QueryBuilder::new("UPDATE runs SET lease_until = ");
            q.push_bind(ms(until))
                .push(" WHERE status = 'running' AND claimed_by = ")
                .push_bind(claimant.to_owned())
                .push(" AND id IN (");
            let mut list = q.separated(", ");
            for r in chunk {
                list.push_bind(r.0);
            }
            q.push(")");
            renewed += q
                .build()
                .execute(self.conn())
                .await
                .map_err(backend)?
                .rows_affected();
        }
        Ok(renewed)
    }

    async fn rescue_expired(&mut self, now: DateTime<Utc>, all: bool) -> Result<Vec<Rescued>> {
        // Runs from before the queue existed have no lease: expired.
        let rows = sqlx::query(
            "UPDATE runs SET status = 'abandoned', finished_at = $1, lease_until = NULL, error = CASE \
               WHEN $2 THEN 'Steward stopped while this run was in progress' \
               ELSE 'abandoned: the lease of ' || COALESCE(claimed_by, 'its node') || ' expired (the node stopped renewing it)' END \
             WHERE status = 'running' AND ($2 OR lease_until IS NULL OR lease_until < $1) \
             RETURNING id, job_id, trigger_kind, scheduled_for, attempt, claimed_by, handle, \
               cancel_requested_at",
        )
        .bind(ms(now))
        .bind(all)
        .fetch_all(self.conn())
        .await
        .map_err(backend)?;
        let mut rescued = Vec::with_capacity(rows.len());
        for row in rows {
            let trigger: String = row.try_get("trigger_kind").map_err(backend)?;
            let r = Rescued {
                run: RunId(row.try_get("id").map_err(backend)?),
                job: JobId(row.try_get("job_id").map_err(backend)?),
                trigger: Trigger::parse(&trigger).unwrap_or(Trigger::Manual),
                scheduled_for: row
                    .try_get::<Option<i64>, _>("scheduled_for")
                    .map_err(backend)?
                    .map(from_ms),
                attempt: u32::try_from(row.try_get::<i64, _>("attempt").map_err(backend)?)
                    .unwrap_or(1),
                claimed_by: row.try_get("claimed_by").map_err(backend)?,
                handle: row
                    .try_get::<Option<String>, _>("handle")
                    .map_err(backend)?
                    .as_deref()
                    .and_then(super::jobs::handle_from_json),
                cancel_requested: row
                    .try_get::<Option<i64>, _>("cancel_requested_at")
                    .map_err(backend)?
                    .is_some(),
            };
            release_locks(self, r.run).await?;
            rescued.push(r);
        }
        debug_assert!(RunStatus::Abandoned.predecessors() == vec![RunStatus::Running]);
        Ok(rescued)
    }
}
