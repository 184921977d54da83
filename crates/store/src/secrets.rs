//! Sealed values at rest: named secrets and sealed settings fields, and the
//! [`SecretStore`] trait. The store never sees a plaintext; sealing and opening
//! happen in the service that holds the keyring.

use crate::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use steward_domain::{AuditRecord, SecretName};

#[derive(Debug, Clone)]
pub struct SecretMeta {
    pub name: SecretName,
    pub description: String,
    pub key_version: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Setting {
    pub value: serde_json::Value,
    pub sealed: Option<String>,
}

/// One sealed value somewhere in the database, for re-sealing.
#[derive(Debug, Clone)]
pub struct SealedCell {
    pub table: &'static str,
    pub column: &'static str,
    pub row: String,
    pub sealed: String,
}

#[async_trait]
pub trait SecretStore: Send + Sync + 'static {
    /// Creates or replaces; returns true when it was created.
    async fn put_secret(
        &self,
        name: &SecretName,
        description: &str,
        sealed: &str,
        key_version: u32,
        now: DateTime<Utc>,
        audit: &AuditRecord,
    ) -> Result<bool>;
    async fn list_secrets(&self) -> Result<Vec<SecretMeta>>;
    async fn secret_exists(&self, name: &SecretName) -> Result<bool>;
    async fn sealed_secrets(&self, names: &[SecretName]) -> Result<Vec<(SecretName, String)>>;
    async fn delete_secret(&self, name: &SecretName, audit: &AuditRecord) -> Result<()>;

    async fn get_setting(&self, key: &str) -> Result<Option<Setting>>;
    async fn put_setting(
        &self,
        key: &str,
        value: &serde_json::Value,
        sealed: Option<(&str, u32)>,
        now: DateTime<Utc>,
        audit: &AuditRecord,
    ) -> Result<()>;

    /// Up to `limit` sealed values whose key version is not `current`.
    async fn stale_sealed(&self, current: u32, limit: u32) -> Result<Vec<SealedCell>>;
    /// Replaces a sealed value if it is still `old` (rotation runs beside edits).
    async fn reseal(&self, cell: &SealedCell, new: &str, version: u32) -> Result<bool>;
    /// Key versions that still seal something.
    async fn key_versions_in_use(&self) -> Result<Vec<u32>>;
}
