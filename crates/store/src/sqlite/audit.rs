//! The audit log's rows on SQLite. Appends run inside a write transaction on
//! the single writer connection, so the chain has one order; linking and
//! verification are in `crate::audit::chain`.

use super::{backend, from_ms, ms, SqliteTx};
use crate::audit::{AuditEntry, AuditFilter, AuditReads, AuditWrites};
use crate::Result;
use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};
use steward_domain::{Actor, ActorKind, AuditRecord};

fn entry_from_row(row: &SqliteRow) -> Result<AuditEntry> {
    let kind: String = row.try_get("actor_kind").map_err(backend)?;
    let diff: String = row.try_get("diff").map_err(backend)?;
    Ok(AuditEntry {
        id: row.try_get("id").map_err(backend)?,
        record: AuditRecord {
            at: from_ms(row.try_get("at").map_err(backend)?),
            actor: Actor {
                // An unknown kind can only come from an edit; verification flags it.
                kind: ActorKind::parse(&kind).unwrap_or(ActorKind::Anonymous),
                id: row.try_get("actor_id").map_err(backend)?,
                name: row.try_get("actor_name").map_err(backend)?,
            },
            address: row.try_get("address").map_err(backend)?,
            user_agent: row.try_get("user_agent").map_err(backend)?,
            event: row.try_get("event").map_err(backend)?,
            target: row.try_get("target").map_err(backend)?,
            diff: serde_json::from_str(&diff).unwrap_or(serde_json::Value::String(diff)),
        },
        prev_hash: row.try_get("prev_hash").map_err(backend)?,
        hash: row.try_get("hash").map_err(backend)?,
    })
}

#[async_trait]
impl AuditReads for SqliteTx {
    async fn list_audit(&mut self, f: &AuditFilter) -> Result<Vec<AuditEntry>> {
        let mut q = QueryBuilder::<Sqlite>::new("SELECT * FROM audit_log WHERE 1=1");
        if let Some(a) = &f.actor {
            q.push(" AND actor_name = ").push_bind(a.clone());
        }
        if let Some(e) = &f.event {
            // `job` matches job.create, job.update, ...
            let prefix = format!("{e}.");
            q.push(" AND (event = ").push_bind(e.clone());
            q.push(" OR substr(event, 1, ")
                .push_bind(prefix.len() as i64);
            q.push(") = ").push_bind(prefix);
            q.push(")");
        }
        if let Some(t) = &f.target {
            q.push(" AND target = ").push_bind(t.clone());
        }
        if let Some(s) = f.since {
            q.push(" AND at >= ").push_bind(ms(s));
        }
        if let Some(u) = f.until {
            q.push(" AND at < ").push_bind(ms(u));
        }
        if let Some(b) = f.before {
            q.push(" AND id < ").push_bind(b);
        }
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(f.limit));
        let rows = q.build().fetch_all(self.conn()).await.map_err(backend)?;
        rows.iter().map(entry_from_row).collect()
    }

    async fn audit_page(&mut self, after: i64, limit: u32) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query("SELECT * FROM audit_log WHERE id > ? ORDER BY id LIMIT ?")
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(self.conn())
            .await
            .map_err(backend)?;
        rows.iter().map(entry_from_row).collect()
    }

    async fn audit_head(&mut self) -> Result<Option<(i64, String)>> {
        sqlx::query_as("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1")
            .fetch_optional(self.conn())
            .await
            .map_err(backend)
    }

    async fn audit_hash(&mut self, id: i64) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT hash FROM audit_log WHERE id = ?")
            .bind(id)
            .fetch_optional(self.conn())
            .await
            .map_err(backend)
    }
}

#[async_trait]
impl AuditWrites for SqliteTx {
    async fn insert_audit_entry(&mut self, e: &AuditEntry) -> Result<()> {
        let r = &e.record;
        sqlx::query(
            "INSERT INTO audit_log (id, at, actor_kind, actor_id, actor_name, address, user_agent, event, target, diff, prev_hash, hash) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(e.id)
        .bind(ms(r.at))
        .bind(r.actor.kind.as_str())
        .bind(r.actor.id)
        .bind(&r.actor.name)
        .bind(&r.address)
        .bind(&r.user_agent)
        .bind(&r.event)
        .bind(&r.target)
        .bind(r.diff.to_string())
        .bind(&e.prev_hash)
        .bind(&e.hash)
        .execute(self.conn())
        .await
        .map_err(backend)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::ChainReport;
    use crate::sqlite::SqliteStore;
    use crate::Store;
    use chrono::DateTime;
    use serde_json::json;
    use steward_domain::AuditContext;

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
