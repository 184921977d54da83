//! The hash-chained audit log on SQLite. Appends run inside the caller's
//! transaction on the single writer connection, so the chain has one order.

use super::{backend, from_ms, ms, SqliteStore};
use crate::audit::{AuditEntry, AuditFilter, AuditStore, ChainReport};
use crate::Result;
use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};
use steward_crypto::token::sha256_hex;
use steward_domain::audit::AUDIT_GENESIS;
use steward_domain::{Actor, ActorKind, AuditRecord};

/// Appends `record` after the current last row, on `conn` (inside a transaction).
pub(super) async fn append(conn: &mut SqliteConnection, record: &AuditRecord) -> Result<i64> {
    let last: Option<(i64, String)> =
        sqlx::query_as("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)?;
    let (id, prev) = last.map_or((1, AUDIT_GENESIS.to_owned()), |(id, h)| (id + 1, h));
    let hash = sha256_hex(&record.canonical(id, &prev));
    sqlx::query(
        "INSERT INTO audit_log (id, at, actor_kind, actor_id, actor_name, address, user_agent, event, target, diff, prev_hash, hash) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(id)
    .bind(ms(record.at))
    .bind(record.actor.kind.as_str())
    .bind(record.actor.id)
    .bind(&record.actor.name)
    .bind(&record.address)
    .bind(&record.user_agent)
    .bind(&record.event)
    .bind(&record.target)
    .bind(record.diff.to_string())
    .bind(&prev)
    .bind(&hash)
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    Ok(id)
}

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

/// The anchor file's content: `<id> <hash>`.
fn read_anchor(path: &std::path::Path) -> Option<(i64, String)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut parts = text.split_whitespace();
    Some((parts.next()?.parse().ok()?, parts.next()?.to_owned()))
}

impl SqliteStore {
    /// After a clean walk of `entries` rows ending in `last_hash`: does the
    /// anchor agree? It may lag (written every few seconds) but never lead.
    fn check_anchor(&self, entries: u64, last_hash: &str) -> Option<String> {
        let (id, hash) = read_anchor(self.audit_anchor.as_deref()?)?;
        let entries = i64::try_from(entries).unwrap_or(i64::MAX);
        if id > entries {
            return Some(format!(
                "entries after {entries} were removed: the head anchor (audit.head) names entry {id}"
            ));
        }
        if id == entries && hash != last_hash {
            return Some(format!(
                "entry {id} differs from the head anchor (audit.head)"
            ));
        }
        None
    }

    /// An anchor behind the head must name a row that still has its hash.
    async fn lagging_anchor_problem(&self) -> Result<Option<String>> {
        let Some((id, hash)) = self.audit_anchor.as_deref().and_then(read_anchor) else {
            return Ok(None);
        };
        let stored: Option<String> = sqlx::query_scalar("SELECT hash FROM audit_log WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
        Ok((stored.as_deref() != Some(hash.as_str()))
            .then(|| format!("entry {id} differs from the head anchor (audit.head)")))
    }
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn anchor_audit_head(&self) -> Result<()> {
        let Some(path) = &self.audit_anchor else {
            return Ok(());
        };
        let head: Option<(i64, String)> =
            sqlx::query_as("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1")
                .fetch_optional(&self.reader)
                .await
                .map_err(backend)?;
        let Some((id, hash)) = head else {
            return Ok(());
        };
        if read_anchor(path).is_some_and(|(i, h)| i == id && h == hash) {
            return Ok(());
        }
        let tmp = path.with_extension("head.new");
        std::fs::write(&tmp, format!("{id} {hash}\n")).map_err(backend)?;
        std::fs::rename(&tmp, path).map_err(backend)
    }

    async fn append_audit(&self, record: &AuditRecord) -> Result<i64> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let id = append(&mut tx, record).await?;
        tx.commit().await.map_err(backend)?;
        Ok(id)
    }

    async fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>> {
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
        let rows = q.build().fetch_all(&self.reader).await.map_err(backend)?;
        rows.iter().map(entry_from_row).collect()
    }

    async fn audit_page(&self, after: i64, limit: u32) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query("SELECT * FROM audit_log WHERE id > ? ORDER BY id LIMIT ?")
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(backend)?;
        rows.iter().map(entry_from_row).collect()
    }

    async fn verify_audit(&self) -> Result<ChainReport> {
        let mut expected_id = 1;
        let mut prev = AUDIT_GENESIS.to_owned();
        let mut entries = 0u64;
        loop {
            let page = self.audit_page(expected_id - 1, 1000).await?;
            if page.is_empty() {
                let problem = match self.check_anchor(entries, &prev) {
                    // A lagging anchor must still match the row it names.
                    None => self.lagging_anchor_problem().await?,
                    p => p,
                };
                return Ok(ChainReport { entries, problem });
            }
            for e in page {
                let problem = if e.id != expected_id {
                    Some(format!(
                        "entry {expected_id} is missing (deleted or renumbered; next present is {})",
                        e.id
                    ))
                } else if e.prev_hash != prev {
                    Some(format!(
                        "entry {} does not link to entry {} (rows removed, reordered or relinked)",
                        e.id,
                        e.id - 1
                    ))
                } else if sha256_hex(&e.record.canonical(e.id, &e.prev_hash)) != e.hash {
                    Some(format!(
                        "entry {} was edited: its content no longer matches its hash",
                        e.id
                    ))
                } else {
                    None
                };
                if problem.is_some() {
                    return Ok(ChainReport { entries, problem });
                }
                prev = e.hash;
                expected_id += 1;
                entries += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
            s.append_audit(&rec(i)).await.unwrap();
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
