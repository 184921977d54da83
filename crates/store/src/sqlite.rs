//! The SQLite backend: WAL, foreign keys, busy timeout, migrations at open.
//!
//! Write transactions go through a pool of one connection, so they are
//! serialised in-process (writers queue instead of spinning on SQLITE_BUSY) and
//! a rule read inside one holds until it commits. Read transactions use a
//! separate pool of read-only connections; WAL gives each a snapshot.

use crate::tx::{ReadTx, WriteTx};
use crate::{Result, Store, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

mod access;
mod audit;
mod jobs;
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
    tx: Transaction<'static, Sqlite>,
}

impl SqliteTx {
    fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }
}

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Box::new(e))
}

/// Failing to get a connection at all is an outage, not a bad request.
fn unavailable_or_backend(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StoreError::Unavailable(Box::new(e))
        }
        e => backend(e),
    }
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

fn not_found_if_zero(rows: u64, what: &'static str) -> Result<()> {
    if rows == 0 {
        Err(StoreError::NotFound(what))
    } else {
        Ok(())
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
            .map_err(unavailable_or_backend)?;
        Ok(())
    }

    async fn read(&self) -> Result<Box<dyn ReadTx>> {
        let tx = self.reader.begin().await.map_err(unavailable_or_backend)?;
        Ok(Box::new(SqliteTx { tx }))
    }

    async fn write(&self) -> Result<Box<dyn WriteTx>> {
        let tx = self.writer.begin().await.map_err(unavailable_or_backend)?;
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
}
