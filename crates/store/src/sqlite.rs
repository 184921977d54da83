//! The SQLite backend: WAL, foreign keys, busy timeout, migrations at open.
//!
//! Write transactions go through a pool of one connection, so they are
//! serialised in-process (writers queue instead of spinning on SQLITE_BUSY),
//! and begin IMMEDIATE, so they are serialised with other processes on the
//! same file too: a rule read inside one holds until it commits. Read transactions use a
//! separate pool of read-only connections; WAL gives each a snapshot.

use crate::sql::{backend, classify, from_ms, ms, not_found_if_zero, opt_ms};
use crate::tx::{ReadTx, WriteTx};
use crate::{Result, Store};
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{SqliteConnection, SqlitePool, Transaction};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

// The areas, shared with every SQL backend (see `crate::sql`).
type Db = sqlx::Sqlite;
type DbRow = sqlx::sqlite::SqliteRow;
type Tx = SqliteTx;
#[path = "sql/access.rs"]
mod access;
#[path = "sql/audit.rs"]
mod audit;
#[path = "sql/jobs.rs"]
mod jobs;
#[path = "sql/queue.rs"]
mod queue;
#[path = "sql/secrets.rs"]
mod secrets;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// `audit.head` beside the database: the last audit entry's id and hash,
    /// kept outside the database so cutting off its newest rows shows.
    audit_anchor: Option<PathBuf>,
}

/// One transaction, read or write; which methods a caller can reach is decided
/// by the trait object it is handed ([`ReadTx`] or [`WriteTx`]).
pub struct SqliteTx {
    tx: Transaction<'static, Db>,
}

impl SqliteTx {
    fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }
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

    async fn read(&self) -> Result<Box<dyn ReadTx>> {
        let tx = self.reader.begin().await.map_err(backend)?;
        Ok(Box::new(SqliteTx { tx }))
    }

    async fn write(&self) -> Result<Box<dyn WriteTx>> {
        // IMMEDIATE: the write lock is taken first, as PostgreSQL's advisory
        // lock is. A deferred transaction that reads and then writes fails
        // with SQLITE_BUSY at once when another process wrote in between.
        let tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        Ok(Box::new(SqliteTx { tx }))
    }

    fn audit_anchor(&self) -> Option<&Path> {
        self.audit_anchor.as_deref()
    }

    async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

impl ReadTx for SqliteTx {}

#[async_trait]
impl WriteTx for SqliteTx {
    async fn commit(self: Box<Self>) -> Result<()> {
        self.tx.commit().await.map_err(backend)
    }
}

/// SQLite's own settings; what every backend must do is in `tests/conformance.rs`.
#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    #[tokio::test]
    async fn file_database_is_wal_with_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let s = SqliteStore::open(&path).await.unwrap();
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
        let def = serde_json::from_value(
            serde_json::json!({"name": "a", "spec": {"kind": "command", "argv": ["true"]}}),
        )
        .unwrap();
        let mut tx = s.write().await.unwrap();
        tx.create_job(&def, DateTime::UNIX_EPOCH).await.unwrap();
        tx.commit().await.unwrap();
        s.close().await;
        // Reopening applies no migration twice and keeps the data.
        let s = SqliteStore::open(&path).await.unwrap();
        assert_eq!(s.read().await.unwrap().list_jobs().await.unwrap().len(), 1);
    }

    /// Runs recorded before job kinds kept their own data: their exit code,
    /// signal, HTTP status and process group move into `outcome` and `handle`.
    #[tokio::test]
    async fn the_kind_data_migration_keeps_what_runs_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let before = sqlx::migrate::Migrator {
            migrations: std::borrow::Cow::Owned(
                MIGRATOR
                    .migrations
                    .iter()
                    .filter(|m| m.version < 7)
                    .cloned()
                    .collect(),
            ),
            ..sqlx::migrate::Migrator::DEFAULT
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true),
            )
            .await
            .unwrap();
        before.run(&pool).await.unwrap();
        sqlx::query(
            "INSERT INTO jobs (id, name, definition, enabled, created_at, updated_at) \
             VALUES (1, 'a', '{\"name\":\"a\",\"spec\":{\"kind\":\"command\",\"argv\":[\"true\"]}}', 1, 0, 0)",
        )
        .execute(&pool)
        .await
        .unwrap();
        for (id, status, cols) in crate::sql::kind_data_migration::SEEDED {
            sqlx::query(&format!(
                "INSERT INTO runs (id, job_id, status, trigger_kind, created_at) VALUES ({id}, 1, '{status}', 'manual', 0)"
            ))
            .execute(&pool)
            .await
            .unwrap();
            sqlx::query(&format!("UPDATE runs SET {cols} WHERE id = {id}"))
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;

        let s = SqliteStore::open(&path).await.unwrap();
        crate::sql::kind_data_migration::check(&s).await;
    }

    #[tokio::test]
    async fn hot_lookups_use_indexes() {
        // Pruning deletes runs; the ON DELETE SET NULL of parent_run_id then looks
        // up children by parent. A full scan there made pruning quadratic.
        let s = SqliteStore::open_in_memory().await.unwrap();
        for q in [
            "EXPLAIN QUERY PLAN SELECT id FROM runs WHERE parent_run_id = 1",
            "EXPLAIN QUERY PLAN SELECT id FROM runs WHERE job_id = 1 ORDER BY id DESC",
            "EXPLAIN QUERY PLAN SELECT job_id FROM job_secrets WHERE secret = 'x'",
        ] {
            let plan: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(q).fetch_all(&s.reader).await.unwrap();
            let text: Vec<&str> = plan.iter().map(|r| r.3.as_str()).collect();
            assert!(text.iter().any(|d| d.contains("INDEX")), "{q}: {text:?}");
            assert!(!text.iter().any(|d| d.starts_with("SCAN")), "{q}: {text:?}");
        }
    }

    mod audit_log {
        use super::super::*;
        use crate::audit::AuditFilter;
        use crate::audit::ChainReport;
        use chrono::DateTime;
        use serde_json::json;
        use steward_domain::AuditContext;
        use steward_domain::AuditRecord;

        fn rec(i: i64) -> AuditRecord {
            AuditContext::system("test").record(
                DateTime::from_timestamp(1_800_000_000 + i, 0).unwrap_or_default(),
                "job.update",
                format!("job:j{i}"),
                json!({"n": {"from": i, "to": i + 1}}),
            )
        }

        async fn store_with(n: i64) -> (tempfile::TempDir, SqliteStore) {
            let dir = tempfile::tempdir().unwrap();
            let s = SqliteStore::open(&dir.path().join("db")).await.unwrap();
            for i in 0..n {
                let mut tx = s.write().await.unwrap();
                tx.append_audit(&rec(i)).await.unwrap();
                tx.commit().await.unwrap();
            }
            (dir, s)
        }

        #[tokio::test]
        async fn chain_verifies_and_the_database_refuses_edits() {
            let (_d, s) = store_with(5).await;
            let report = s.verify_audit().await.unwrap();
            assert_eq!(
                report,
                ChainReport {
                    entries: 5,
                    problem: None
                }
            );
            let e = sqlx::query("UPDATE audit_log SET target = 'x' WHERE id = 2")
                .execute(&s.writer)
                .await
                .unwrap_err();
            assert!(e.to_string().contains("append-only"), "{e}");
            let e = sqlx::query("DELETE FROM audit_log WHERE id = 2")
                .execute(&s.writer)
                .await
                .unwrap_err();
            assert!(e.to_string().contains("append-only"), "{e}");
            let page = s
                .read()
                .await
                .unwrap()
                .list_audit(&AuditFilter {
                    event: Some("job".into()),
                    limit: 2,
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), vec![5, 4]);
        }

        /// Someone with the file drops the triggers and edits, deletes or reorders rows.
        #[tokio::test]
        async fn tampering_behind_the_triggers_is_found() {
            for (sql, want) in [
                ("UPDATE audit_log SET diff = '{}' WHERE id = 3", "entry 3 was edited"),
                ("DELETE FROM audit_log WHERE id = 3", "entry 3 is missing"),
                ("UPDATE audit_log SET id = id + 100 WHERE id = 2; UPDATE audit_log SET id = 2 WHERE id = 4; UPDATE audit_log SET id = 4 WHERE id = 102", "entry 2 does not link"),
            ] {
                let (_d, s) = store_with(5).await;
                sqlx::raw_sql("DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;")
                    .execute(&s.writer)
                    .await
                    .unwrap();
                sqlx::raw_sql(sql).execute(&s.writer).await.unwrap();
                let report = s.verify_audit().await.unwrap();
                let problem = report.problem.unwrap_or_default();
                assert!(problem.starts_with(want), "{sql}: {problem}");
            }
        }
    }
}
