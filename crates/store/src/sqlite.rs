//! The SQLite backend: WAL, foreign keys, busy timeout, migrations at open.
//!
//! Writes go through a pool of one connection, reads through a separate pool, so
//! writers queue in-process instead of spinning on SQLITE_BUSY.

use crate::model::{Job, NewRun, Run, RunFilter, RunUpdate};
use crate::{Result, Store, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;
use steward_domain::{AuditRecord, JobDefinition, JobId, JobName, RunId, RunStatus, Trigger};

mod access;
mod audit;
mod secrets;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// `audit.head` beside the database: the last audit entry's id and hash,
    /// kept outside the database so cutting off its newest rows shows.
    audit_anchor: Option<std::path::PathBuf>,
}

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Box::new(e))
}

/// Maps unique-constraint violations to `Conflict`; one place, not every caller.
fn classify(e: sqlx::Error, conflict: impl FnOnce() -> String) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(conflict()),
        sqlx::Error::RowNotFound => StoreError::NotFound("row"),
        _ => backend(e),
    }
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}
fn from_ms(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(v).unwrap_or_default()
}
fn opt_ms(v: Option<i64>) -> Option<DateTime<Utc>> {
    v.map(from_ms)
}

impl SqliteStore {
    /// Opens (creating if needed) `path` and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .pragma("temp_store", "memory");
        // Writers queue for the one connection by design; under load that wait is
        // expected, so the timeout and the slow-acquire warning are set for it.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(120))
            .acquire_slow_threshold(Duration::from_secs(10))
            .connect_with(opts.clone())
            .await
            .map_err(backend)?;
        MIGRATOR.run(&writer).await.map_err(backend)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts.read_only(true))
            .await
            .map_err(backend)?;
        Ok(Self {
            writer,
            reader,
            audit_anchor: Some(path.with_file_name("audit.head")),
        })
    }

    /// In-memory database for unit tests of services.
    pub async fn open_in_memory() -> Result<Self> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(backend)?
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(opts)
            .await
            .map_err(backend)?;
        MIGRATOR.run(&pool).await.map_err(backend)?;
        Ok(Self {
            writer: pool.clone(),
            reader: pool,
            audit_anchor: None,
        })
    }

    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

const RUN_COLUMNS: &str = "r.id, r.job_id, j.name AS job_name, r.status, r.trigger_kind, r.scheduled_for, \
    r.not_before, r.attempt, r.parent_run_id, r.created_at, r.started_at, r.finished_at, r.exit_code, \
    r.signal, r.http_status, r.error, r.output_truncated";

fn job_from_row(row: &SqliteRow) -> Result<Job> {
    let def: String = row.try_get("definition").map_err(backend)?;
    let mut definition: JobDefinition = serde_json::from_str(&def).map_err(backend)?;
    definition.enabled = row.try_get::<i64, _>("enabled").map_err(backend)? != 0;
    Ok(Job {
        id: JobId(row.try_get("id").map_err(backend)?),
        definition,
        created_at: from_ms(row.try_get("created_at").map_err(backend)?),
        updated_at: from_ms(row.try_get("updated_at").map_err(backend)?),
        schedule_cursor: opt_ms(row.try_get("schedule_cursor").map_err(backend)?),
    })
}

fn run_from_row(row: &SqliteRow) -> Result<Run> {
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
        exit_code: row
            .try_get::<Option<i64>, _>("exit_code")
            .map_err(backend)?
            .and_then(|v| i32::try_from(v).ok()),
        signal: row
            .try_get::<Option<i64>, _>("signal")
            .map_err(backend)?
            .and_then(|v| i32::try_from(v).ok()),
        http_status: row
            .try_get::<Option<i64>, _>("http_status")
            .map_err(backend)?
            .and_then(|v| u16::try_from(v).ok()),
        error: row.try_get("error").map_err(backend)?,
        output_truncated: row.try_get::<i64, _>("output_truncated").map_err(backend)? != 0,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn create_job(
        &self,
        def: &JobDefinition,
        now: DateTime<Utc>,
        audit: &AuditRecord,
    ) -> Result<Job> {
        let json = serde_json::to_string(def).map_err(backend)?;
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let row = sqlx::query(
            "INSERT INTO jobs (name, enabled, definition, created_at, updated_at) VALUES (?, ?, ?, ?, ?) RETURNING *",
        )
        .bind(def.name.as_str())
        .bind(def.enabled)
        .bind(json)
        .bind(ms(now))
        .bind(ms(now))
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| classify(e, || format!("a job named {:?} already exists", def.name.as_str())))?;
        audit::append(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        job_from_row(&row)
    }

    async fn update_job(
        &self,
        id: JobId,
        def: &JobDefinition,
        now: DateTime<Utc>,
        audit: &AuditRecord,
    ) -> Result<Job> {
        let json = serde_json::to_string(def).map_err(backend)?;
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let row = sqlx::query("UPDATE jobs SET name = ?, enabled = ?, definition = ?, updated_at = ? WHERE id = ? RETURNING *")
            .bind(def.name.as_str())
            .bind(def.enabled)
            .bind(json)
            .bind(ms(now))
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| classify(e, || format!("a job named {:?} already exists", def.name.as_str())))?
            .ok_or(StoreError::NotFound("job"))?;
        audit::append(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        job_from_row(&row)
    }

    async fn delete_job(&self, id: JobId, audit: &AuditRecord) -> Result<()> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        // Checked in the deleting transaction: a run that starts after it
        // finds its row gone and does not run (start_run answers false).
        let running: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE job_id = ? AND status = 'running'")
                .bind(id.0)
                .fetch_one(&mut *tx)
                .await
                .map_err(backend)?;
        if running > 0 {
            return Err(StoreError::Conflict(
                "the job has a running run; cancel it first".into(),
            ));
        }
        let done = sqlx::query("DELETE FROM jobs WHERE id = ?")
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("job"));
        }
        audit::append(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)
    }

    async fn get_job(&self, id: JobId) -> Result<Job> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = ?")
            .bind(id.0)
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?
            .ok_or(StoreError::NotFound("job"))?;
        job_from_row(&row)
    }

    async fn find_job(&self, name: &JobName) -> Result<Option<Job>> {
        let row = sqlx::query("SELECT * FROM jobs WHERE name = ?")
            .bind(name.as_str())
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn list_jobs(&self) -> Result<Vec<Job>> {
        let rows = sqlx::query("SELECT * FROM jobs ORDER BY name")
            .fetch_all(&self.reader)
            .await
            .map_err(backend)?;
        rows.iter().map(job_from_row).collect()
    }

    async fn insert_run(&self, run: &NewRun) -> Result<Run> {
        // One statement (the cursor moves by trigger): runs are the hot path.
        let finished_at = run.status.is_terminal().then_some(run.created_at);
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO runs (job_id, status, trigger_kind, scheduled_for, not_before, attempt, parent_run_id, \
             created_at, error, finished_at, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
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
        .bind(run.started_at.map(ms))
        .fetch_one(&self.writer)
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
            started_at: run.started_at.map(|t| from_ms(ms(t))),
            finished_at: finished_at.map(|t| from_ms(ms(t))),
            exit_code: None,
            signal: None,
            http_status: None,
            error: run.error.clone(),
            output_truncated: false,
        })
    }

    async fn advance_cursor(&self, job: JobId, to: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET schedule_cursor = MAX(COALESCE(schedule_cursor, 0), ?) WHERE id = ?",
        )
        .bind(ms(to))
        .bind(job.0)
        .execute(&self.writer)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn start_run(&self, id: RunId, at: DateTime<Utc>) -> Result<bool> {
        let sql = format!(
            "UPDATE runs SET status = 'running', started_at = ? WHERE id = ? AND status IN ({})",
            status_list(RunStatus::Running)
        );
        let done = sqlx::query(&sql)
            .bind(ms(at))
            .bind(id.0)
            .execute(&self.writer)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }

    async fn finish_run(&self, id: RunId, u: &RunUpdate) -> Result<bool> {
        if !u.status.is_terminal() {
            return Err(StoreError::Conflict(format!(
                "a run's end cannot be {}",
                u.status
            )));
        }
        let sql = format!(
            "UPDATE runs SET status = ?, finished_at = ?, exit_code = ?, signal = ?, http_status = ?, error = ?, \
             output_truncated = ?, output = COALESCE(?, output) WHERE id = ? AND status IN ({})",
            status_list(u.status)
        );
        let done = sqlx::query(&sql)
            .bind(u.status.as_str())
            .bind(ms(u.finished_at))
            .bind(u.outcome.exit_code)
            .bind(u.outcome.signal)
            .bind(u.outcome.http_status.map(i64::from))
            .bind(u.outcome.error.as_deref())
            .bind(u.output_truncated)
            .bind(u.output.as_deref())
            .bind(id.0)
            .execute(&self.writer)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }

    async fn save_run_output(&self, id: RunId, output: &str, truncated: bool) -> Result<()> {
        sqlx::query(
            "UPDATE runs SET output = ?, output_truncated = ? WHERE id = ? AND status = 'running'",
        )
        .bind(output)
        .bind(truncated)
        .bind(id.0)
        .execute(&self.writer)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn get_run(&self, id: RunId) -> Result<Run> {
        let row = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs r JOIN jobs j ON j.id = r.job_id WHERE r.id = ?"
        ))
        .bind(id.0)
        .fetch_optional(&self.reader)
        .await
        .map_err(backend)?
        .ok_or(StoreError::NotFound("run"))?;
        run_from_row(&row)
    }

    async fn run_output(&self, id: RunId) -> Result<Option<String>> {
        let row: Option<Option<String>> =
            sqlx::query_scalar("SELECT output FROM runs WHERE id = ?")
                .bind(id.0)
                .fetch_optional(&self.reader)
                .await
                .map_err(backend)?;
        row.ok_or(StoreError::NotFound("run"))
    }

    async fn list_runs(&self, f: &RunFilter) -> Result<Vec<Run>> {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
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
        let rows = q.build().fetch_all(&self.reader).await.map_err(backend)?;
        rows.iter().map(run_from_row).collect()
    }

    async fn set_run_process_group(&self, id: RunId, pgid: i32) -> Result<()> {
        sqlx::query("UPDATE runs SET process_group = ? WHERE id = ?")
            .bind(pgid)
            .bind(id.0)
            .execute(&self.writer)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn abandon_running(&self, at: DateTime<Utc>) -> Result<Vec<(RunId, Option<i32>)>> {
        let rows: Vec<(i64, Option<i64>)> = sqlx::query_as(
            "UPDATE runs SET status = 'abandoned', finished_at = ?, \
             error = 'Steward stopped while this run was in progress' WHERE status = 'running' \
             RETURNING id, process_group",
        )
        .bind(ms(at))
        .fetch_all(&self.writer)
        .await
        .map_err(backend)?;
        Ok(rows
            .into_iter()
            .map(|(id, pg)| (RunId(id), pg.and_then(|p| i32::try_from(p).ok())))
            .collect())
    }

    async fn queued_runs(&self) -> Result<Vec<Run>> {
        let rows = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs r JOIN jobs j ON j.id = r.job_id WHERE r.status = 'queued' ORDER BY r.id"
        ))
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?;
        rows.iter().map(run_from_row).collect()
    }

    async fn prune_runs(&self, job: JobId, keep: u32) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM runs WHERE job_id = ?1 AND status NOT IN ('queued', 'running') AND id NOT IN \
             (SELECT id FROM runs WHERE job_id = ?1 AND status NOT IN ('queued', 'running') ORDER BY id DESC LIMIT ?2)",
        )
        .bind(job.0)
        .bind(i64::from(keep))
        .execute(&self.writer)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn count_runs_by_status(&self) -> Result<Vec<(RunStatus, i64)>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM runs GROUP BY status")
                .fetch_all(&self.reader)
                .await
                .map_err(backend)?;
        Ok(rows
            .into_iter()
            .filter_map(|(s, n)| RunStatus::parse(&s).map(|s| (s, n)))
            .collect())
    }

    async fn last_endings(&self) -> Result<Vec<crate::LastEndings>> {
        let rows: Vec<(i64, i64, Option<i64>)> = sqlx::query_as(
            "SELECT job_id, MAX(finished_at), MAX(CASE WHEN status = 'succeeded' THEN finished_at END) \
             FROM runs WHERE started_at IS NOT NULL AND finished_at IS NOT NULL GROUP BY job_id",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?;
        Ok(rows
            .into_iter()
            .map(|(job, finished, succeeded)| crate::LastEndings {
                job: JobId(job),
                finished: from_ms(finished),
                succeeded: succeeded.map(from_ms),
            })
            .collect())
    }
}

/// The SQL list of the states a run may be in to become `next` (the domain's
/// state machine; the names are fixed identifiers, never user input).
fn status_list(next: RunStatus) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use steward_domain::RunOutcome;

    fn def(name: &str) -> JobDefinition {
        serde_json::from_value(
            serde_json::json!({"name": name, "spec": {"kind": "command", "argv": ["true"]}}),
        )
        .unwrap()
    }
    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }
    fn audit() -> AuditRecord {
        steward_domain::AuditContext::system("test").record(
            t(0),
            "test",
            "x",
            serde_json::json!({}),
        )
    }
    fn scheduled(job: JobId, at: DateTime<Utc>) -> NewRun {
        NewRun {
            job_id: job,
            job_name: JobName::parse("a").unwrap(),
            status: RunStatus::Queued,
            trigger: Trigger::Schedule,
            scheduled_for: Some(at),
            not_before: None,
            attempt: 1,
            parent_run_id: None,
            created_at: at,
            started_at: None,
            error: None,
        }
    }

    #[tokio::test]
    async fn file_database_is_wal_with_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("db.sqlite"))
            .await
            .unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&s.writer)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&s.reader)
            .await
            .unwrap();
        assert_eq!(fk, 1);
        s.create_job(&def("a"), t(0), &audit()).await.unwrap();
        s.close().await;
        // Reopening applies no migration twice and keeps the data.
        let s = SqliteStore::open(&dir.path().join("db.sqlite"))
            .await
            .unwrap();
        assert_eq!(s.list_jobs().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn hot_lookups_use_indexes() {
        // Pruning deletes runs; the ON DELETE SET NULL of parent_run_id then looks
        // up children by parent. A full scan there made pruning quadratic.
        let s = SqliteStore::open_in_memory().await.unwrap();
        for q in [
            "EXPLAIN QUERY PLAN SELECT id FROM runs WHERE parent_run_id = 1",
            "EXPLAIN QUERY PLAN SELECT id FROM runs WHERE job_id = 1 ORDER BY id DESC",
        ] {
            let plan: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(q).fetch_all(&s.reader).await.unwrap();
            let text: Vec<&str> = plan.iter().map(|r| r.3.as_str()).collect();
            assert!(text.iter().any(|d| d.contains("INDEX")), "{q}: {text:?}");
            assert!(
                !text.iter().any(|d| d.starts_with("SCAN runs")),
                "{q}: {text:?}"
            );
        }
    }

    #[tokio::test]
    async fn duplicate_name_is_a_conflict() {
        let s = SqliteStore::open_in_memory().await.unwrap();
        s.create_job(&def("a"), t(0), &audit()).await.unwrap();
        let e = s.create_job(&def("a"), t(0), &audit()).await.unwrap_err();
        assert!(
            matches!(e, StoreError::Conflict(ref m) if m.contains("already exists")),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn an_occurrence_fires_once_and_moves_the_cursor() {
        let s = SqliteStore::open_in_memory().await.unwrap();
        let job = s.create_job(&def("a"), t(0), &audit()).await.unwrap();
        s.insert_run(&scheduled(job.id, t(60))).await.unwrap();
        let e = s.insert_run(&scheduled(job.id, t(60))).await.unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)));
        assert_eq!(
            s.get_job(job.id).await.unwrap().schedule_cursor,
            Some(t(60))
        );
        // Manual runs at the same instant are not occurrences.
        let mut manual = scheduled(job.id, t(60));
        manual.trigger = Trigger::Manual;
        s.insert_run(&manual).await.unwrap();
    }

    #[tokio::test]
    async fn lifecycle_first_ending_wins_and_prune_keeps_newest() {
        let s = SqliteStore::open_in_memory().await.unwrap();
        let job = s.create_job(&def("a"), t(0), &audit()).await.unwrap();
        let mut ids = vec![];
        for i in 0..5 {
            let r = s.insert_run(&scheduled(job.id, t(i))).await.unwrap();
            assert!(s.start_run(r.id, t(i)).await.unwrap());
            assert!(!s.start_run(r.id, t(i)).await.unwrap());
            let end = RunUpdate {
                status: RunStatus::Succeeded,
                finished_at: t(i + 1),
                outcome: RunOutcome {
                    exit_code: Some(0),
                    ..Default::default()
                },
                output: Some(format!("out {i}")),
                output_truncated: false,
            };
            assert!(s.finish_run(r.id, &end).await.unwrap());
            assert!(!s
                .finish_run(
                    r.id,
                    &RunUpdate {
                        status: RunStatus::Failed,
                        ..end
                    }
                )
                .await
                .unwrap());
            ids.push(r.id);
        }
        assert_eq!(
            s.get_run(ids[0]).await.unwrap().status,
            RunStatus::Succeeded
        );
        assert_eq!(
            s.run_output(ids[4]).await.unwrap().as_deref(),
            Some("out 4")
        );
        assert_eq!(s.prune_runs(job.id, 2).await.unwrap(), 3);
        let left: Vec<_> = s
            .list_runs(&RunFilter {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            left.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![ids[4], ids[3]]
        );
        let page = s
            .list_runs(&RunFilter {
                limit: 10,
                before: Some(ids[4]),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page.len(), 1);
    }

    #[tokio::test]
    async fn status_changes_follow_the_domain_state_machine() {
        let s = SqliteStore::open_in_memory().await.unwrap();
        let job = s.create_job(&def("a"), t(0), &audit()).await.unwrap();
        let r = s.insert_run(&scheduled(job.id, t(1))).await.unwrap();
        let end = |status| RunUpdate {
            status,
            finished_at: t(2),
            outcome: RunOutcome::default(),
            output: None,
            output_truncated: false,
        };
        // A run that never started cannot have succeeded, failed or timed out.
        for status in [RunStatus::Succeeded, RunStatus::Failed, RunStatus::TimedOut] {
            assert!(!s.finish_run(r.id, &end(status)).await.unwrap(), "{status}");
        }
        assert_eq!(s.get_run(r.id).await.unwrap().status, RunStatus::Queued);
        // An ending that is not one is refused outright.
        let e = s
            .finish_run(r.id, &end(RunStatus::Running))
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
        // Cancelled before it started is a valid ending; then nothing restarts it.
        assert!(s
            .finish_run(r.id, &end(RunStatus::Cancelled))
            .await
            .unwrap());
        assert!(!s.start_run(r.id, t(3)).await.unwrap());
        assert_eq!(s.get_run(r.id).await.unwrap().status, RunStatus::Cancelled);
    }

    #[tokio::test]
    async fn a_job_with_a_running_run_is_not_deleted() {
        let s = SqliteStore::open_in_memory().await.unwrap();
        let job = s.create_job(&def("a"), t(0), &audit()).await.unwrap();
        let r = s.insert_run(&scheduled(job.id, t(1))).await.unwrap();
        assert!(s.start_run(r.id, t(1)).await.unwrap());
        let e = s.delete_job(job.id, &audit()).await.unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
        assert!(s.get_job(job.id).await.is_ok());
        // A queued run goes with its job, and cannot start afterwards.
        let end = RunUpdate {
            status: RunStatus::Succeeded,
            finished_at: t(2),
            outcome: RunOutcome::default(),
            output: None,
            output_truncated: false,
        };
        assert!(s.finish_run(r.id, &end).await.unwrap());
        let queued = s.insert_run(&scheduled(job.id, t(3))).await.unwrap();
        s.delete_job(job.id, &audit()).await.unwrap();
        assert!(!s.start_run(queued.id, t(4)).await.unwrap());
    }

    #[tokio::test]
    async fn abandon_marks_running_only() {
        let s = SqliteStore::open_in_memory().await.unwrap();
        let job = s.create_job(&def("a"), t(0), &audit()).await.unwrap();
        let a = s.insert_run(&scheduled(job.id, t(1))).await.unwrap();
        let b = s.insert_run(&scheduled(job.id, t(2))).await.unwrap();
        s.start_run(a.id, t(1)).await.unwrap();
        s.set_run_process_group(a.id, 4242).await.unwrap();
        assert_eq!(
            s.abandon_running(t(3)).await.unwrap(),
            vec![(a.id, Some(4242))]
        );
        assert_eq!(s.get_run(a.id).await.unwrap().status, RunStatus::Abandoned);
        assert_eq!(s.get_run(b.id).await.unwrap().status, RunStatus::Queued);
        assert_eq!(s.queued_runs().await.unwrap().len(), 1);
        // Deleting the job removes its runs.
        s.delete_job(job.id, &audit()).await.unwrap();
        assert!(matches!(
            s.get_run(a.id).await,
            Err(StoreError::NotFound(_))
        ));
    }
}
