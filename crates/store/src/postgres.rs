//! The PostgreSQL backend, chosen by a connection URL.
//!
//! Write transactions are serialised twice: in this process by a queue (a
//! mutex taken before a connection, so waiting writers hold no connection), and
//! across processes by a transaction-scoped advisory lock taken first thing in
//! every write transaction. A rule read inside a write transaction therefore
//! holds until it commits, and the audit chain has one order, exactly as on
//! SQLite's single writer. Read transactions are `REPEATABLE READ READ ONLY`:
//! one snapshot each.
//!
//! The connection URL carries the password: it is never logged and never part
//! of an error (see [`PgStore::connect`]).

use crate::sql::{backend, classify, from_ms, ms, not_found_if_zero, opt_ms};
use crate::tx::{ReadTx, WriteTx};
use crate::{Result, Store, StoreError};
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Transaction};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, OwnedMutexGuard};

// The areas, shared with every SQL backend (see `crate::sql`).
type Db = sqlx::Postgres;
type DbRow = sqlx::postgres::PgRow;
type Tx = PgTx;
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

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The advisory lock every write transaction takes (any constant shared by all
/// Steward processes on one database; this one spells "stewardw").
const WRITE_LOCK: i64 = 0x7374_6577_6172_6477;

/// How long a request waits for a connection before it is answered 503: a
/// database that is down must not make requests hang.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    writers: Arc<Mutex<()>>,
    /// Counts the times a writer found the database unreachable. A writer that
    /// waited in the queue while this moved gives up at once instead of
    /// waiting for a connection in turn: queued writers would otherwise take
    /// one acquire timeout each, and a request could hang for minutes.
    outages: Arc<AtomicU64>,
    audit_anchor: Option<PathBuf>,
    opts: PgConnectOptions,
    /// The connection holding the instance lock (see [`Store::claim`]).
    claim: Arc<Mutex<Option<PgConnection>>>,
}

/// The session-level advisory lock a serving Steward holds ("stewardi").
const INSTANCE_LOCK: i64 = 0x7374_6577_6172_6469;

/// The database became unreachable while a change waited for its turn.
#[derive(Debug, thiserror::Error)]
#[error("the database became unavailable while this change waited for its turn")]
struct OutageWhileQueued;

/// One transaction, read or write. Dropping it queues the rollback and lets
/// this process's next writer in; the advisory lock is the server's, released
/// when the rollback reaches it, so writers stay serialised either way.
pub struct PgTx {
    tx: Transaction<'static, Db>,
    _writer: Option<OwnedMutexGuard<()>>,
}

impl PgTx {
    fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

/// Why a connection URL was refused, without repeating the URL (it may hold a
/// password).
#[derive(Debug, thiserror::Error)]
#[error("the database URL is not a valid PostgreSQL URL (expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?options])")]
pub struct BadUrl;

/// The first failure to connect or migrate, with the password kept out of it:
/// sqlx's messages name the host and the server's reason, never the URL.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConnectError(String);

impl PgStore {
    /// Connects to `url`, applies pending migrations (PostgreSQL's own, under
    /// sqlx's migration lock, so several Steward processes may start at once)
    /// and keeps the audit head anchor at `audit_anchor`.
    pub async fn connect(url: &str, audit_anchor: Option<PathBuf>) -> Result<Self> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(|_| StoreError::Backend(Box::new(BadUrl)))?
            .application_name("steward")
            // A session stuck in a transaction (a half-open connection, another
            // process that hangs) would hold the write lock for ever: bounded.
            // Statements, the wait for the write lock included, end too.
            .options([
                ("idle_in_transaction_session_timeout", "60s"),
                ("statement_timeout", "60s"),
            ]);
        // One connection first: the pool would retry until its timeout and
        // report only that, hiding "connection refused" or "password
        // authentication failed".
        let first = <PgConnection as sqlx::Connection>::connect_with(&opts)
            .await
            .map_err(|e| {
                let text = format!("{} ({})", redacted(&e, url), server_of(url));
                match backend(e) {
                    StoreError::Unavailable(_) => {
                        StoreError::Unavailable(Box::new(ConnectError(text)))
                    }
                    _ => StoreError::Backend(Box::new(ConnectError(text))),
                }
            })?;
        let _ = sqlx::Connection::close(first).await;
        // Each acquire pings the connection first (sqlx's default): one more
        // round trip per transaction, so that after the server restarts a
        // stale connection is replaced instead of failing a request.
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .min_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(opts.clone())
            .await
            .map_err(|e| StoreError::Unavailable(Box::new(ConnectError(redacted(&e, url)))))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Backend(Box::new(ConnectError(redacted(&e, url)))))?;
        Ok(Self {
            pool,
            writers: Arc::new(Mutex::new(())),
            outages: Arc::new(AtomicU64::new(0)),
            audit_anchor,
            opts,
            claim: Arc::new(Mutex::new(None)),
        })
    }
}

/// `server HOST:PORT, database NAME` from the URL, for messages (no user, no password).
fn server_of(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "server {}:{}, database {}",
            u.host_str().unwrap_or("localhost"),
            u.port().unwrap_or(5432),
            u.path().trim_start_matches('/')
        ),
        Err(_) => "the configured server".into(),
    }
}

/// An error's text with the URL's password removed (as written in the URL
/// and percent-decoded), should a driver ever include it.
fn redacted(e: &dyn std::error::Error, url: &str) -> String {
    let mut text = e.to_string();
    let written = url::Url::parse(url)
        .ok()
        .and_then(|u| u.password().map(str::to_owned));
    if let Some(written) = written.filter(|p| !p.is_empty()) {
        let decoded = percent_encoding::percent_decode_str(&written)
            .decode_utf8_lossy()
            .into_owned();
        for pw in [written, decoded] {
            text = text.replace(&pw, "[redacted]");
        }
    }
    text
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn read(&self) -> Result<Box<dyn ReadTx>> {
        let tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(backend)?;
        Ok(Box::new(PgTx { tx, _writer: None }))
    }

    async fn write(&self) -> Result<Box<dyn WriteTx>> {
        let seen = self.outages.load(Ordering::Acquire);
        let guard = Arc::clone(&self.writers).lock_owned().await;
        if self.outages.load(Ordering::Acquire) != seen {
            return Err(StoreError::Unavailable(Box::new(OutageWhileQueued)));
        }
        let note_outage = |e: StoreError| {
            if matches!(e, StoreError::Unavailable(_)) {
                self.outages.fetch_add(1, Ordering::AcqRel);
            }
            e
        };
        // READ COMMITTED said, not inherited: each statement after the lock
        // sees what the previous writer committed (a database default of
        // REPEATABLE READ would take the snapshot before the lock is granted).
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE")
            .await
            .map_err(|e| note_outage(backend(e)))?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(WRITE_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(|e| note_outage(backend(e)))?;
        Ok(Box::new(PgTx {
            tx,
            _writer: Some(guard),
        }))
    }

    fn audit_anchor(&self) -> Option<&Path> {
        self.audit_anchor.as_deref()
    }

    async fn close(&self) {
        if let Some(conn) = self.claim.lock().await.take() {
            let _ = sqlx::Connection::close(conn).await;
        }
        self.pool.close().await;
    }

    /// A session-level advisory lock on a connection of its own, held while
    /// this store lives. (If that connection is lost, so is the lock; a second
    /// instance started meanwhile would not be refused.)
    async fn claim(&self) -> Result<()> {
        let mut held = self.claim.lock().await;
        if held.is_some() {
            return Ok(());
        }
        let mut conn = <PgConnection as sqlx::Connection>::connect_with(&self.opts)
            .await
            .map_err(backend)?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(INSTANCE_LOCK)
            .fetch_one(&mut conn)
            .await
            .map_err(backend)?;
        if !got {
            return Err(StoreError::Conflict(
                "another Steward is already serving this database (one serves it at a time)".into(),
            ));
        }
        *held = Some(conn);
        Ok(())
    }
}

impl ReadTx for PgTx {}

#[async_trait]
impl WriteTx for PgTx {
    async fn commit(self: Box<Self>) -> Result<()> {
        let PgTx { tx, _writer } = *self;
        tx.commit().await.map_err(|e| match backend(e) {
            // The connection broke during COMMIT: the change may or may not
            // have been applied, so it is not reported as "nothing written".
            StoreError::Unavailable(cause) => {
                StoreError::Backend(Box::new(CommitOutcomeUnknown(cause)))
            }
            other => other,
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the connection was lost during commit; the change may or may not have been applied")]
struct CommitOutcomeUnknown(#[source] Box<dyn std::error::Error + Send + Sync>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_redacted_as_written_and_decoded() {
        let url = "postgres://steward:p%40ss%2Fw0rd@db:5432/steward";
        let e = std::io::Error::other("auth for p@ss/w0rd and p%40ss%2Fw0rd failed");
        let text = redacted(&e, url);
        assert_eq!(text, "auth for [redacted] and [redacted] failed");
        assert_eq!(server_of(url), "server db:5432, database steward");
    }

    /// Runs recorded before job kinds kept their own data: their exit code,
    /// signal, HTTP status and process group move into `outcome` and `handle`.
    #[tokio::test]
    async fn the_kind_data_migration_keeps_what_runs_recorded() {
        let url = steward_testkit::Cluster::shared().create_database().await;
        let before = sqlx::migrate::Migrator {
            migrations: std::borrow::Cow::Owned(
                MIGRATOR
                    .migrations
                    .iter()
                    .filter(|m| m.version < 4)
                    .cloned()
                    .collect(),
            ),
            ..sqlx::migrate::Migrator::DEFAULT
        };
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        before.run(&pool).await.unwrap();
        sqlx::query(
            "INSERT INTO jobs (id, name, definition, enabled, created_at, updated_at) \
             OVERRIDING SYSTEM VALUE VALUES (1, 'a', '{\"name\":\"a\",\"spec\":{\"kind\":\"command\",\"argv\":[\"true\"]}}', true, 0, 0)",
        )
        .execute(&pool)
        .await
        .unwrap();
        for (id, status, cols) in crate::sql::kind_data_migration::SEEDED {
            sqlx::query(&format!(
                "INSERT INTO runs (id, job_id, status, trigger_kind, created_at) \
                 OVERRIDING SYSTEM VALUE VALUES ({id}, 1, '{status}', 'manual', 0)"
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

        let s = PgStore::connect(&url, None).await.unwrap();
        crate::sql::kind_data_migration::check(&s).await;
    }
}
