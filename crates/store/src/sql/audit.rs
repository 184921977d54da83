//! The audit log's rows. Appends run inside a write transaction, and write
//! transactions are serialised on every backend, so the chain has one order;
//! linking and verification are in `crate::audit::chain`.

use super::{backend, from_ms, ms, Db, DbRow, Tx};
use crate::audit::{AuditEntry, AuditFilter, AuditReads, AuditWrites};
use crate::Result;
use async_trait::async_trait;
use sqlx::{QueryBuilder, Row};
use steward_domain::{Actor, ActorKind, AuditRecord};

fn entry_from_row(row: &DbRow) -> Result<AuditEntry> {
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
impl AuditReads for Tx {
    async fn list_audit(&mut self, f: &AuditFilter) -> Result<Vec<AuditEntry>> {
        let mut q = QueryBuilder::<Db>::new("SELECT * FROM audit_log WHERE 1=1");
        if let Some(a) = &f.actor {
            q.push(" AND actor_name = ").push_bind(a.clone());
        }
        if let Some(e) = &f.event {
            // `job` matches job.create, job.update, ...
            let prefix = format!("{e}.");
            q.push(" AND (event = ").push_bind(e.clone());
            // CAST: PostgreSQL's substr takes a 32-bit length.
            q.push(" OR substr(event, 1, CAST(")
                .push_bind(prefix.len() as i64);
            q.push(" AS INTEGER)) = ").push_bind(prefix);
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
        let rows = sqlx::query("SELECT * FROM audit_log WHERE id > $1 ORDER BY id LIMIT $2")
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
        sqlx::query_scalar("SELECT hash FROM audit_log WHERE id = $1")
            .bind(id)
            .fetch_optional(self.conn())
            .await
            .map_err(backend)
    }
}

#[async_trait]
impl AuditWrites for Tx {
    async fn insert_audit_entry(&mut self, e: &AuditEntry) -> Result<()> {
        let r = &e.record;
        sqlx::query(
            "INSERT INTO audit_log (id, at, actor_kind, actor_id, actor_name, address, user_agent, event, target, diff, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
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
