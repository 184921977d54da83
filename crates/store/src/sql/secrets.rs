//! Sealed values: named secrets and settings documents.

use super::{backend, from_ms, ms, Db, Tx};
use crate::secrets::{SealedCell, SecretMeta, SecretReads, SecretWrites, Setting};
use crate::{Result, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Row};
use steward_domain::{JobName, SecretName};

#[async_trait]
impl SecretReads for Tx {
    async fn list_secrets(&mut self) -> Result<Vec<SecretMeta>> {
        let rows = sqlx::query("SELECT name, description, key_version, created_at, updated_at FROM secrets ORDER BY name")
            .fetch_all(self.conn())
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|r| {
                let name: String = r.try_get("name").map_err(backend)?;
                Ok(SecretMeta {
                    name: SecretName::parse(&name).map_err(backend)?,
                    description: r.try_get("description").map_err(backend)?,
                    key_version: u32::try_from(
                        r.try_get::<i64, _>("key_version").map_err(backend)?,
                    )
                    .unwrap_or(0),
                    created_at: from_ms(r.try_get("created_at").map_err(backend)?),
                    updated_at: from_ms(r.try_get("updated_at").map_err(backend)?),
                })
            })
            .collect()
    }

    async fn secret_exists(&mut self, name: &SecretName) -> Result<bool> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM secrets WHERE name = $1)")
            .bind(name.as_str())
            .fetch_one(self.conn())
            .await
            .map_err(backend)
    }

    async fn sealed_secrets(&mut self, names: &[SecretName]) -> Result<Vec<(SecretName, String)>> {
        if names.is_empty() {
            return Ok(vec![]);
        }
        let mut q = QueryBuilder::<Db>::new("SELECT name, value FROM secrets WHERE name IN (");
        let mut sep = q.separated(", ");
        for n in names {
            sep.push_bind(n.as_str().to_owned());
        }
        q.push(")");
        let rows: Vec<(String, String)> = q
            .build_query_as()
            .fetch_all(self.conn())
            .await
            .map_err(backend)?;
        rows.into_iter()
            .map(|(n, v)| Ok((SecretName::parse(&n).map_err(backend)?, v)))
            .collect()
    }

    async fn jobs_naming_secret(&mut self, secret: &SecretName) -> Result<Vec<JobName>> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT j.name FROM job_secrets s JOIN jobs j ON j.id = s.job_id WHERE s.secret = $1 ORDER BY j.name",
        )
        .bind(secret.as_str())
        .fetch_all(self.conn())
        .await
        .map_err(backend)?;
        names
            .iter()
            .map(|n| JobName::parse(n).map_err(backend))
            .collect()
    }

    async fn get_setting(&mut self, key: &str) -> Result<Option<Setting>> {
        let row: Option<(String, Option<String>)> =
            sqlx::query_as("SELECT value, sealed FROM settings WHERE key = $1")
                .bind(key)
                .fetch_optional(self.conn())
                .await
                .map_err(backend)?;
        row.map(|(v, sealed)| {
            Ok(Setting {
                value: serde_json::from_str(&v).map_err(backend)?,
                sealed,
            })
        })
        .transpose()
    }

    async fn stale_sealed(&mut self, current: u32, limit: u32) -> Result<Vec<SealedCell>> {
        let current = i64::from(current);
        let secrets: Vec<(String, String)> =
            sqlx::query_as("SELECT name, value FROM secrets WHERE key_version <> $1 LIMIT $2")
                .bind(current)
                .bind(i64::from(limit))
                .fetch_all(self.conn())
                .await
                .map_err(backend)?;
        let settings: Vec<(String, String)> = sqlx::query_as(
            "SELECT key, sealed FROM settings WHERE sealed IS NOT NULL AND key_version <> $1 LIMIT $2",
        )
        .bind(current)
        .bind(i64::from(limit))
        .fetch_all(self.conn())
        .await
        .map_err(backend)?;
        Ok(secrets
            .into_iter()
            .map(|(row, sealed)| SealedCell {
                table: "secrets",
                column: "value",
                row,
                sealed,
            })
            .chain(settings.into_iter().map(|(row, sealed)| SealedCell {
                table: "settings",
                column: "sealed",
                row,
                sealed,
            }))
            .take(limit as usize)
            .collect())
    }

    async fn key_versions_in_use(&mut self) -> Result<Vec<u32>> {
        let v: Vec<i64> = sqlx::query_scalar(
            "SELECT key_version FROM secrets UNION SELECT key_version FROM settings WHERE key_version IS NOT NULL",
        )
        .fetch_all(self.conn())
        .await
        .map_err(backend)?;
        Ok(v.into_iter()
            .filter_map(|x| u32::try_from(x).ok())
            .collect())
    }
}

#[async_trait]
impl SecretWrites for Tx {
    async fn put_secret(
        &mut self,
        name: &SecretName,
        description: &str,
        sealed: &str,
        key_version: u32,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let existed: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM secrets WHERE name = $1)")
                .bind(name.as_str())
                .fetch_one(self.conn())
                .await
                .map_err(backend)?;
        sqlx::query(
            "INSERT INTO secrets (name, description, value, key_version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5) \
             ON CONFLICT (name) DO UPDATE SET description = $2, value = $3, key_version = $4, updated_at = $5",
        )
        .bind(name.as_str())
        .bind(description)
        .bind(sealed)
        .bind(i64::from(key_version))
        .bind(ms(now))
        .execute(self.conn())
        .await
        .map_err(backend)?;
        Ok(!existed)
    }

    async fn delete_secret(&mut self, name: &SecretName) -> Result<()> {
        self.delete_one(
            "DELETE FROM secrets WHERE name = $1",
            super::access::RowKey::Name(name.as_str()),
            "secret",
        )
        .await
    }

    async fn put_setting(
        &mut self,
        key: &str,
        value: &serde_json::Value,
        sealed: Option<(&str, u32)>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO settings (key, value, sealed, key_version, updated_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (key) DO UPDATE SET value = $2, sealed = $3, key_version = $4, updated_at = $5",
        )
        .bind(key)
        .bind(value.to_string())
        .bind(sealed.map(|s| s.0))
        .bind(sealed.map(|s| i64::from(s.1)))
        .bind(ms(now))
        .execute(self.conn())
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn reseal(&mut self, cell: &SealedCell, new: &str, version: u32) -> Result<bool> {
        let sql = match (cell.table, cell.column) {
            ("secrets", "value") => {
                "UPDATE secrets SET value = $1, key_version = $2 WHERE name = $3 AND value = $4"
            }
            ("settings", "sealed") => {
                "UPDATE settings SET sealed = $1, key_version = $2 WHERE key = $3 AND sealed = $4"
            }
            _ => return Err(StoreError::NotFound("sealed column")),
        };
        let done = sqlx::query(sql)
            .bind(new)
            .bind(i64::from(version))
            .bind(&cell.row)
            .bind(&cell.sealed)
            .execute(self.conn())
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }
}
