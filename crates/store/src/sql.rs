//! What the SQL backends share.
//!
//! The area implementations in `sql/` (jobs, access, secrets, audit) are written
//! once and compiled inside each backend module (`sqlite`, `postgres`) with
//! `#[path]`: each backend names its database as `Db`, its row as `DbRow` and
//! its transaction as `Tx`, and the same source becomes that backend's
//! implementation, type-checked against its driver. The SQL in them is the
//! dialect both databases accept: `$n` parameters, `RETURNING`, `ON CONFLICT`,
//! `lower()` for the case-insensitive names, times as Unix milliseconds in
//! 64-bit integers, booleans as `bool`. A query that cannot be written that
//! way belongs in the backend module, behind a method of its own.
//!
//! A new table therefore means a migration for each backend
//! (`migrations/sqlite`, `migrations/postgres`), the methods here, and cases in
//! `tests/conformance.rs`, which both backends run.

use crate::{Result, StoreError};
use chrono::{DateTime, Utc};

/// Wraps a failure as `Backend`, or as `Unavailable` when the database could
/// not be reached at all (so callers answer 503 and may retry).
pub(crate) fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(e);
    match boxed.downcast_ref::<sqlx::Error>() {
        Some(e) if is_outage(e) => StoreError::Unavailable(boxed),
        _ => StoreError::Backend(boxed),
    }
}

/// A lost or refused connection, an exhausted or closed pool, or a server
/// shutting down: nothing was written, and the same request may succeed later.
fn is_outage(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // SQLSTATE classes (PostgreSQL; SQLite's codes are shorter numbers):
        // 08 connection exception, 53 insufficient resources (too many
        // connections), 57P operator intervention (shutdown, not yet ready),
        // and the statement timeout (57014) or lock timeout (55P03) ending a
        // wait for another session: the transaction is rolled back, and the
        // same request may succeed later.
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            c.len() == 5
                && (c.starts_with("08")
                    || c.starts_with("53")
                    || c.starts_with("57P")
                    || c == "57014"
                    || c == "55P03")
        }),
        _ => false,
    }
}

/// Maps unique-constraint violations to `Conflict`; one place, not every caller.
pub(crate) fn classify(e: sqlx::Error, conflict: impl FnOnce() -> String) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(conflict()),
        sqlx::Error::RowNotFound => StoreError::NotFound("row"),
        _ => backend(e),
    }
}

pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}
pub(crate) fn from_ms(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(v).unwrap_or_default()
}
pub(crate) fn opt_ms(v: Option<i64>) -> Option<DateTime<Utc>> {
    v.map(from_ms)
}

pub(crate) fn not_found_if_zero(rows: u64, what: &'static str) -> Result<()> {
    if rows == 0 {
        Err(StoreError::NotFound(what))
    } else {
        Ok(())
    }
}

/// The kind-data migration (SQLite 0007, PostgreSQL 0004), checked on each
/// backend: runs seeded with the old columns, then read as the new ones.
#[cfg(test)]
pub(crate) mod kind_data_migration {
    use crate::Store;
    use steward_domain::{RunHandle, RunId};

    /// (id, status, the old column it set).
    pub const SEEDED: [(i64, &str, &str); 4] = [
        (1, "succeeded", "exit_code = 0"),
        (2, "failed", "signal = 9"),
        (3, "succeeded", "http_status = 204"),
        (4, "abandoned", "process_group = 4242"),
    ];

    pub async fn check(store: &dyn Store) {
        let mut rx = store.read().await.unwrap();
        for (id, want) in [
            (1, serde_json::json!({"exit_code": 0})),
            (2, serde_json::json!({"signal": 9})),
            (3, serde_json::json!({"status": 204})),
        ] {
            assert_eq!(rx.get_run(RunId(id)).await.unwrap().outcome, Some(want));
        }
        let r = rx.get_run(RunId(4)).await.unwrap();
        assert_eq!(r.outcome, None);
        assert_eq!(
            r.handle,
            Some(RunHandle {
                kind: "command".into(),
                data: serde_json::json!({"process_group": 4242}),
            })
        );
    }
}
