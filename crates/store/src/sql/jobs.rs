//! Jobs and runs.

use super::{backend, classify, from_ms, ms, not_found_if_zero, opt_ms, Db, DbRow, Tx};
use crate::jobs::{JobReads, JobWrites, LastEndings};
use crate::model::{Job, JobCursor, JobQuery, JobSort, NewRun, Run, RunFilter, RunUpdate};
use crate::{Result, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Row};
use steward_domain::{
    JobDefinition, JobId, JobName, RunHandle, RunId, RunStatus, SecretName, Trigger,
};

pub(super) const RUN_COLUMNS: &str = "r.id, r.job_id, j.name AS job_name, r.status, r.trigger_kind, r.scheduled_for, \
    r.not_before, r.attempt, r.parent_run_id, r.created_at, r.started_at, r.finished_at, r.outcome, \
    r.handle, r.error, r.output_truncated, r.waiting_for, r.claimed_by, r.start_deadline";

pub(super) fn job_from_row(row: &DbRow) -> Result<Job> {
    job_from_columns(row, "")
}

/// A job read from columns named with `prefix` (a join that also reads a run).
pub(super) fn job_from_columns(row: &DbRow, prefix: &str) -> Result<Job> {
    let col = |name: &str| format!("{prefix}{name}");
    let def: String = row.try_get(col("definition").as_str()).map_err(backend)?;
    let mut definition: JobDefinition = serde_json::from_str(&def).map_err(backend)?;
    definition.enabled = row
        .try_get::<bool, _>(col("enabled").as_str())
        .map_err(backend)?;
    Ok(Job {
        id: JobId(row.try_get(col("id").as_str()).map_err(backend)?),
        definition,
        created_at: from_ms(row.try_get(col("created_at").as_str()).map_err(backend)?),
        updated_at: from_ms(row.try_get(col("updated_at").as_str()).map_err(backend)?),
        schedule_cursor: opt_ms(
            row.try_get(col("schedule_cursor").as_str())
                .map_err(backend)?,
        ),
        next_run_at: opt_ms(row.try_get(col("next_run_at").as_str()).map_err(backend)?),
        last_status: row
            .try_get::<Option<String>, _>(col("last_status").as_str())
            .map_err(backend)?
            .and_then(|s| RunStatus::parse(&s)),
    })
}

pub(super) fn run_from_row(row: &DbRow) -> Result<Run> {
    let status: String = row.try_get("status").map_err(backend)?;
    let trigger: String = row.try_get("trigger_kind").map_err(backend)?;
    let name: String = row.try_get("job_name").map_err(backend)?;
    let corrupt =
        |what: &str| StoreError::Backend(format!("unexpected {what} in runs table").into());
    Ok(Run {
        id: RunId(row.try_get("id").map_err(backend)?),
        job_id: JobId(row.try_get("job_id").map_err(backend)?),
        job_name: JobName::parse(&name).map_err(backend)?,
        status: RunStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
        trigger: Trigger::parse(&trigger).ok_or_else(|| corrupt("trigger"))?,
        scheduled_for: opt_ms(row.try_get("scheduled_for").map_err(backend)?),
        not_before: opt_ms(row.try_get("not_before").map_err(backend)?),
        attempt: u32::try_from(row.try_get::<i64, _>("attempt").map_err(backend)?).unwrap_or(1),
        parent_run_id: row
            .try_get::<Option<i64>, _>("parent_run_id")
            .map_err(backend)?
            .map(RunId),
        created_at: from_ms(row.try_get("created_at").map_err(backend)?),
        started_at: opt_ms(row.try_get("started_at").map_err(backend)?),
        finished_at: opt_ms(row.try_get("finished_at").map_err(backend)?),
        outcome: row
            .try_get::<Option<String>, _>("outcome")
            .map_err(backend)?
            .map(|o| serde_json::from_str(&o))
            .transpose()
            .map_err(backend)?,
        handle: row
            .try_get::<Option<String>, _>("handle")
            .map_err(backend)?
            .as_deref()
            .and_then(handle_from_json),
        error: row.try_get("error").map_err(backend)?,
        output_truncated: row
            .try_get::<bool, _>("output_truncated")
            .map_err(backend)?,
        waiting_for: row.try_get("waiting_for").map_err(backend)?,
        claimed_by: row.try_get("claimed_by").map_err(backend)?,
        start_deadline: opt_ms(row.try_get("start_deadline").map_err(backend)?),
    })
}

#[async_trait]
impl JobReads for Tx {
    async fn get_job(&mut self, id: JobId) -> Result<Job> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = $1")
            .bind(id.0)
            .fetch_optional(self.conn())
            .await
            .map_err(backend)?
            .ok_or(StoreError::NotFound("job"))?;
        job_from_row(&row)
    }

    async fn find_job(&mut self, name: &JobName) -> Result<Option<Job>> {
        let row = sqlx::query("SELECT * FROM jobs WHERE name = $1")
            .bind(name.as_str())
            .fetch_optional(self.conn())
            .await
            .map_err(backend)?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn list_jobs(&mut self) -> Result<Vec<Job>> {
        use futures_util::TryStreamExt as _;
        // Row by row: all rows at once cost more than the jobs they become
        // (about 1 KB a job more at 100,000 jobs, the start's peak memory).
        let mut rows = sqlx::query("SELECT * FROM jobs ORDER BY name").fetch(self.conn());
        let mut jobs = Vec::new();
        while let Some(row) = rows.try_next().await.map_err(backend)? {
            jobs.push(job_from_row(&row)?);
        }
        jobs.shrink_to_fit();
        Ok(jobs)
    }

    async fn list_jobs_page(&mut self, query: &JobQuery) -> Result<Vec<Job>> {
        /// Sorts unscheduled jobs after every scheduled one (the index's expression).
        const NEXT: &str = "COALESCE(next_run_at, 9223372036854775807)";
        let mut q: QueryBuilder<Db> = QueryBuilder::new("SELECT * FROM jobs WHERE 1 = 1");
        if let Some(tag) = &query.tag {
            q.push(" AND id IN (SELECT job_id FROM job_tags WHERE tag = ")
                .push_bind(tag.as_str().to_owned())
                .push(")");
        }
        if let Some(part) = &query.name_contains {
            // LIKE with its wildcards escaped: the text is matched literally.
            let escaped = part
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            q.push(" AND lower(name) LIKE ")
                .push_bind(format!("%{escaped}%"))
                .push(" ESCAPE '\\'");
        }
        if let Some(enabled) = query.enabled {
            q.push(" AND enabled = ").push_bind(enabled);
        }
        if let Some(status) = query.last_status {
            q.push(" AND last_status = ").push_bind(status.as_str());
        }
        match (&query.sort, &query.after) {
            (JobSort::Name, Some(JobCursor::Name(name))) => {
                q.push(" AND name > ").push_bind(name.as_str().to_owned());
            }
            (JobSort::NextRun, Some(JobCursor::NextRun(at, name))) => {
                let key = at.map_or(i64::MAX, ms);
                q.push(format!(" AND ({NEXT} > "))
                    .push_bind(key)
                    .push(format!(" OR ({NEXT} = "))
                    .push_bind(key)
                    .push(" AND name > ")
                    .push_bind(name.as_str().to_owned())
                    .push("))");
            }
            (_, None) => {}
            (_, Some(_)) => {
                return Err(StoreError::Conflict(
                    "the cursor belongs to another sort order".into(),
                ))
            }
        }
        q.push(match query.sort {
            JobSort::Name => " ORDER BY name".to_owned(),
            JobSort::NextRun => format!(" ORDER BY {NEXT}, name"),
        });
        q.push(" LIMIT ")
            .push_bind(i64::from(query.limit.clamp(1, 1001)));
        let rows = q.build().fetch_all(self.conn()).await.map_err(backend)?;
        rows.iter().map(job_from_row).collect()
    }

    async fn get_run(&mut self, id: RunId) -> Result<Run> {
        let row = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs r JOIN jobs j ON j.id = r.job_id WHERE r.id = $1"
        ))
        .bind(id.0)
        .fetch_optional(self.conn())
        .await
        .map_err(backend)?
        .ok_or(StoreError::NotFound("run"))?;
        run_from_row(&row)
    }

    async fn run_output(&mut self, id: RunId) -> Result<Option<String>> {
        let row: Option<Option<String>> =
            sqlx::query_scalar("SELECT output FROM runs WHERE id = $1")
                .bind(id.0)
                .fetch_optional(self.conn())
                .await
                .map_err(backend)?;
        row.ok_or(StoreError::NotFound("run"))
    }

    async fn list_runs(&mut self, f: &RunFilter) -> Result<Vec<Run>> {
        let mut q: QueryBuilder<Db> = QueryBuilder::new(format!(
            "SELECT {RUN_COLUMNS} FROM runs r JOIN jobs j ON j.id = r.job_id WHERE 1 = 1"
        ));
        if let Some(job) = f.job_id {
            q.push(" AND r.job_id = ").push_bind(job.0);
        }
        if let Some(status) = f.status {
            q.push(" AND r.status = ").push_bind(status.as_str());
        }
        if let Some(since) = f.since {
            q.push(" AND r.created_at >= ").push_bind(ms(since));
        }
        if let Some(until) = f.until {
            q.push(" AND r.created_at < ").push_bind(ms(until));
        }
        if let Some(before) = f.before {
            q.push(" AND r.id < ").push_bind(before.0);
        }
        q.push(" ORDER BY r.id DESC LIMIT ")
            .push_bind(i64::from(f.limit.clamp(1, 1000)));
        let rows = q.build().fetch_all(self.conn()).await.map_err(backend)?;
        rows.iter().map(run_from_row).collect()
    }

    async fn count_runs_by_status(&mut self) -> Result<Vec<(RunStatus, i64)>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM runs GROUP BY status")
                .fetch_all(self.conn())
                .await
                .map_err(backend)?;
        Ok(rows
            .into_iter()
            .filter_map(|(s, n)| RunStatus::parse(&s).map(|s| (s, n)))
            .collect())
    }

    async fn last_endings(&mut self) -> Result<Vec<LastEndings>> {
        let rows: Vec<(i64, i64, Option<i64>)> = sqlx::query_as(
            "SELECT job_id, MAX(finished_at), MAX(CASE WHEN status = 'succeeded' THEN finished_at END) \
             FROM runs WHERE started_at IS NOT NULL AND finished_at IS NOT NULL GROUP BY job_id",
        )
        .fetch_all(self.conn())
        .await
        .map_err(backend)?;
        Ok(rows
            .into_iter()
            .map(|(job, finished, succeeded)| LastEndings {
                job: JobId(job),
                finished: from_ms(finished),
                succeeded: succeeded.map(from_ms),
            })
            .collect())
    }
}

#[async_trait]
impl JobWrites for Tx {
    async fn create_job(&mut self, def: &JobDefinition, now: DateTime<Utc>) -> Result<Job> {
        let json = serde_json::to_string(def).map_err(backend)?;
        let row = sqlx::query(
            "INSERT INTO jobs (name, enabled, definition, created_at, updated_at) VALUES ($1, $2, $3, $4, $5) RETURNING *",
        )
        .bind(def.name.as_str())
        .bind(def.enabled)
        .bind(json)
        .bind(ms(now))
        .bind(ms(now))
        .fetch_one(self.conn())
        .await
        .map_err(|e| classify(e, || format!("a job named {:?} already exists", def.name.as_str())))?;
        let job = job_from_row(&row)?;
        set_tags(self, job.id, def).await?;
        Ok(job)
    }

    async fn update_job(
        &mut self,
        id: JobId,
        def: &JobDefinition,
        now: DateTime<Utc>,
    ) -> Result<Job> {
        let json = serde_json::to_string(def).map_err(backend)?;
        let row = sqlx::query("UPDATE jobs SET name = $1, enabled = $2, definition = $3, updated_at = $4 WHERE id = $5 RETURNING *")
            .bind(def.name.as_str())
            .bind(def.enabled)
            .bind(json)
            .bind(ms(now))
            .bind(id.0)
            .fetch_optional(self.conn())
            .await
            .map_err(|e| classify(e, || format!("a job named {:?} already exists", def.name.as_str())))?
            .ok_or(StoreError::NotFound("job"))?;
        set_tags(self, id, def).await?;
        job_from_row(&row)
    }

    async fn delete_job(&mut self, id: JobId) -> Result<()> {
        let done = sqlx::query("DELETE FROM jobs WHERE id = $1")
            .bind(id.0)
            .execute(self.conn())
            .await
            .map_err(backend)?;
        not_found_if_zero(done.rows_affected(), "job")
    }

    async fn set_job_secrets(&mut self, job: JobId, names: &[SecretName]) -> Result<()> {
        sqlx::query("DELETE FROM job_secrets WHERE job_id = $1")
            .bind(job.0)
            .execute(self.conn())
            .await
            .map_err(backend)?;
        for name in names {
            sqlx::query(
                "INSERT INTO job_secrets (job_id, secret) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(job.0)
            .bind(name.as_str())
            .execute(self.conn())
            .await
            .map_err(backend)?;
        }
        Ok(())
    }

    async fn insert_run(&mut self, run: &NewRun) -> Result<Run> {
        let finished_at = run.status.is_terminal().then_some(run.created_at);
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO runs (job_id, status, trigger_kind, scheduled_for, not_before, attempt, parent_run_id, \
             created_at, error, finished_at, due_at, start_deadline) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
        )
        .bind(run.job_id.0)
        .bind(run.status.as_str())
        .bind(run.trigger.as_str())
        .bind(run.scheduled_for.map(ms))
        .bind(run.not_before.map(ms))
        .bind(i64::from(run.attempt))
        .bind(run.parent_run_id.map(|r| r.0))
        .bind(ms(run.created_at))
        .bind(run.error.as_deref())
        .bind(finished_at.map(ms))
        .bind(ms(run.due_at()))
        .bind(run.start_deadline.map(ms))
        .fetch_one(self.conn())
        .await
        .map_err(|e| classify(e, || "this occurrence already has a run".to_owned()))?;
        Ok(Run {
            id: RunId(id),
            job_id: run.job_id,
            job_name: run.job_name.clone(),
            status: run.status,
            trigger: run.trigger,
            scheduled_for: run.scheduled_for.map(|t| from_ms(ms(t))),
            not_before: run.not_before.map(|t| from_ms(ms(t))),
            attempt: run.attempt,
            parent_run_id: run.parent_run_id,
            created_at: from_ms(ms(run.created_at)),
            started_at: None,
            finished_at: finished_at.map(|t| from_ms(ms(t))),
            outcome: None,
            handle: None,
            error: run.error.clone(),
            output_truncated: false,
            waiting_for: None,
            claimed_by: None,
            start_deadline: run.start_deadline.map(|t| from_ms(ms(t))),
        })
    }

    async fn set_next_run(
        &mut self,
        job: JobId,
        at: Option<DateTime<Utc>>,
        if_updated_at: Option<DateTime<Utc>>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET next_run_at = $1 WHERE id = $2 AND ($3 IS NULL OR updated_at = $3)",
        )
        .bind(at.map(ms))
        .bind(job.0)
        .bind(if_updated_at.map(ms))
        .execute(self.conn())
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn advance_cursor(&mut self, job: JobId, to: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET schedule_cursor = $1 WHERE id = $2 AND (schedule_cursor IS NULL OR schedule_cursor < $1)",
        )
        .bind(ms(to))
        .bind(job.0)
        .execute(self.conn())
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn finish_run(&mut self, id: RunId, u: &RunUpdate) -> Result<bool> {
        record_ending(self, id, None, u).await
    }

    async fn save_run_output(&mut self, id: RunId, output: &str, truncated: bool) -> Result<()> {
        sqlx::query(
            "UPDATE runs SET output = $1, output_truncated = $2 WHERE id = $3 AND status = 'running'",
        )
        .bind(output)
        .bind(truncated)
        .bind(id.0)
        .execute(self.conn())
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn request_cancel(&mut self, id: RunId, at: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE runs SET cancel_requested_at = COALESCE(cancel_requested_at, $1) WHERE id = $2 AND status = 'running'",
        )
        .bind(ms(at))
        .bind(id.0)
        .execute(self.conn())
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_run_handle(&mut self, id: RunId, handle: &RunHandle) -> Result<()> {
        sqlx::query("UPDATE runs SET handle = $1 WHERE id = $2 AND status = 'running'")
            .bind(handle_json(handle))
            .bind(id.0)
            .execute(self.conn())
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn prune_runs(&mut self, job: JobId, keep: u32) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM runs WHERE job_id = $1 AND status NOT IN ('queued', 'running') AND id NOT IN \
             (SELECT id FROM runs WHERE job_id = $1 AND status NOT IN ('queued', 'running') ORDER BY id DESC LIMIT $2)",
        )
        .bind(job.0)
        .bind(i64::from(keep))
        .execute(self.conn())
        .await
        .map_err(backend)?;
        Ok(done.rows_affected())
    }
}

/// Replaces the job's rows in `job_tags` with the definition's tags.
async fn set_tags(tx: &mut Tx, job: JobId, def: &JobDefinition) -> Result<()> {
    sqlx::query("DELETE FROM job_tags WHERE job_id = $1")
        .bind(job.0)
        .execute(tx.conn())
        .await
        .map_err(backend)?;
    for tag in &def.tags {
        sqlx::query("INSERT INTO job_tags (job_id, tag) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(job.0)
            .bind(tag.as_str())
            .execute(tx.conn())
            .await
            .map_err(backend)?;
    }
    Ok(())
}

/// Records a run's end if its state allows it (the domain's state machine)
/// and, with `claimant`, only while that node's claim holds; releases the
/// run's locks. One statement for every way a run ends.
pub(super) async fn record_ending(
    tx: &mut Tx,
    id: RunId,
    claimant: Option<&str>,
    u: &RunUpdate,
) -> Result<bool> {
    if !u.status.is_terminal() {
        return Err(StoreError::Conflict(format!(
            "a run's end cannot be {}",
            u.status
        )));
    }
    let sql = format!(
        "UPDATE runs SET status = $1, finished_at = $2, outcome = $3, error = $4, \
         output_truncated = $5, output = COALESCE($6, output), lease_until = NULL \
         WHERE id = $7 AND ($8 IS NULL OR claimed_by = $8) AND status IN ({})",
        status_list(u.status)
    );
    let done = sqlx::query(&sql)
        .bind(u.status.as_str())
        .bind(ms(u.finished_at))
        .bind(u.outcome.detail.as_ref().map(ToString::to_string))
        .bind(u.outcome.error.as_deref())
        .bind(u.output_truncated)
        .bind(u.output.as_deref())
        .bind(id.0)
        .bind(claimant)
        .execute(tx.conn())
        .await
        .map_err(backend)?;
    if done.rows_affected() == 1 {
        release_locks(tx, id).await?;
        Ok(true)
    } else {
        Ok(false)
    }
}

/// Deletes the lock holdings of a run that ended.
pub(super) async fn release_locks(tx: &mut Tx, run: RunId) -> Result<()> {
    sqlx::query("DELETE FROM run_locks WHERE run_id = $1")
        .bind(run.0)
        .execute(tx.conn())
        .await
        .map_err(backend)?;
    Ok(())
}

/// The SQL list of the states a run may be in to become `next` (the domain's
/// state machine; the names are fixed identifiers, never user input).
pub(super) fn status_list(next: RunStatus) -> String {
    let names: Vec<String> = next
        .predecessors()
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    if names.is_empty() {
        "NULL".into()
    } else {
        names.join(", ")
    }
}

/// A handle as stored: `{"kind": ..., "data": ...}`.
fn handle_json(h: &RunHandle) -> String {
    serde_json::json!({"kind": h.kind, "data": h.data}).to_string()
}

/// A stored handle; one that does not parse is treated as absent (the
/// run is still rescued, only nothing is reconciled).
pub(super) fn handle_from_json(text: &str) -> Option<RunHandle> {
    let mut v: serde_json::Value = serde_json::from_str(text).ok()?;
    Some(RunHandle {
        kind: v.get("kind")?.as_str()?.to_owned(),
        data: v.get_mut("data")?.take(),
    })
}
