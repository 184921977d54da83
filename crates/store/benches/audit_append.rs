//! Audit appends per second with the hash chain, against plain inserts of the
//! same rows into a table without a chain, side by side on the same machine
//! and SQLite settings. With `STEWARD_BENCH_PG_URL` (an empty PostgreSQL
//! database), the same chained appends on PostgreSQL too, as a ratio to SQLite.
//! Run: `cargo bench -p steward-store --bench audit_append`.
//! Prints one JSON object (bench/run.py collects it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use chrono::DateTime;
use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::time::Instant;
use steward_domain::AuditContext;
use steward_store::{SqliteStore, Store as _};

const N: i64 = 5000;

fn record(i: i64) -> steward_domain::AuditRecord {
    AuditContext::system("bench").record(
        DateTime::from_timestamp(1_800_000_000 + i, 0).unwrap(),
        "job.update",
        format!("job:bench-{}", i % 50),
        json!({"schedule": {"from": "0 3 * * *", "to": "0 4 * * *"}}),
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = tempfile::tempdir().unwrap();

    let store = SqliteStore::open(&dir.path().join("chained.db"))
        .await
        .unwrap();
    let t0 = Instant::now();
    for i in 0..N {
        // One write transaction per record, as a service appends it.
        let mut tx = store.write().await.unwrap();
        tx.append_audit(&record(i)).await.unwrap();
        tx.commit().await.unwrap();
    }
    let chained = t0.elapsed().as_secs_f64();
    assert!(store.verify_audit().await.unwrap().problem.is_none());
    let t1 = Instant::now();
    let report = store.verify_audit().await.unwrap();
    let verify = t1.elapsed().as_secs_f64();
    assert_eq!(report.entries, N as u64);

    // The raw tool: the same rows, one transaction each, no chain.
    let opts = SqliteConnectOptions::new()
        .filename(dir.path().join("plain.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .unwrap();
    sqlx::query(
        "CREATE TABLE audit_log (id INTEGER PRIMARY KEY, at INTEGER, actor_kind TEXT, actor_id INTEGER, actor_name TEXT, \
         address TEXT, user_agent TEXT, event TEXT, target TEXT, diff TEXT)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let t2 = Instant::now();
    for i in 0..N {
        let r = record(i);
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("INSERT INTO audit_log (at, actor_kind, actor_id, actor_name, address, user_agent, event, target, diff) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(r.at.timestamp_millis())
            .bind(r.actor.kind.as_str())
            .bind(r.actor.id)
            .bind(&r.actor.name)
            .bind(&r.address)
            .bind(&r.user_agent)
            .bind(&r.event)
            .bind(&r.target)
            .bind(r.diff.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let plain = t2.elapsed().as_secs_f64();
    let per_s = |secs: f64| (N as f64 / secs).round();
    let ratio = |a: f64, b: f64| ((a / b) * 1000.0).round() / 1000.0;
    let mut out = json!({
        "entries": N,
        "chained_appends_per_second": per_s(chained),
        "plain_inserts_per_second": per_s(plain),
        "ratio_chained_to_plain": ratio(plain, chained),
        "verify_entries_per_second": per_s(verify),
    });
    if let Ok(url) = std::env::var("STEWARD_BENCH_PG_URL") {
        let pg = steward_store::PgStore::connect(&url, None).await.unwrap();
        let t3 = Instant::now();
        for i in 0..N {
            let mut tx = pg.write().await.unwrap();
            tx.append_audit(&record(i)).await.unwrap();
            tx.commit().await.unwrap();
        }
        let pg_chained = t3.elapsed().as_secs_f64();
        let t4 = Instant::now();
        assert_eq!(pg.verify_audit().await.unwrap().entries, N as u64);
        let pg_verify = t4.elapsed().as_secs_f64();
        out["postgres_chained_appends_per_second"] = json!(per_s(pg_chained));
        out["postgres_verify_entries_per_second"] = json!(per_s(pg_verify));
        out["ratio_postgres_to_sqlite_appends"] = json!(ratio(chained, pg_chained));
    }
    println!("{out}");
}
