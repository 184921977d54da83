//! Sealed values at rest: named secrets and sealed settings fields, and the
//! [`SecretReads`] and [`SecretWrites`] areas. The store never sees a plaintext; sealing and opening
//! happen in the service that holds the keyring.

use crate::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
pub use steward_domain::entity::SecretMeta;
use steward_domain::{JobName, SecretName};

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
pub trait SecretReads: Send {
    async fn list_secrets(&mut self) -> Result<Vec<SecretMeta>>;
    async fn secret_exists(&mut self, name: &SecretName) -> Result<bool>;
    async fn sealed_secrets(&mut self, names: &[SecretName]) -> Result<Vec<(SecretName, String)>>;
    /// The jobs whose definitions name `secret` (kept by `JobWrites::set_job_secrets`).
    async fn jobs_naming_secret(&mut self, secret: &SecretName) -> Result<Vec<JobName>>;
    async fn get_setting(&mut self, key: &str) -> Result<Option<Setting>>;
    /// Sealed values not under key `current`, at most `limit`.
    async fn stale_sealed(&mut self, current: u32, limit: u32) -> Result<Vec<SealedCell>>;
    async fn key_versions_in_use(&mut self) -> Result<Vec<u32>>;
}

#[async_trait]
pub trait SecretWrites: Send {
    /// Creates or replaces; returns true when it was created.
    async fn put_secret(
        &mut self,
        name: &SecretName,
        description: &str,
        sealed: &str,
        key_version: u32,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    async fn delete_secret(&mut self, name: &SecretName) -> Result<()>;
    async fn put_setting(
        &mut self,
        key: &str,
        value: &serde_json::Value,
        sealed: Option<(&str, u32)>,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// Replaces `cell` if it still holds what was read; false if it changed.
    async fn reseal(&mut self, cell: &SealedCell, new: &str, version: u32) -> Result<bool>;
}
