//! The audit log's read side and the [`AuditStore`] trait. Writes happen with
//! the change they record (see the mutating methods' `audit` parameters) or
//! through [`AuditStore::append_audit`] for events that change nothing else.

use crate::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use steward_domain::AuditRecord;

/// A stored entry: the record, its position and its chain hashes.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    #[serde(flatten)]
    pub record: AuditRecord,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub event: Option<String>,
    pub target: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Cursor: entries with a smaller id (newest first).
    pub before: Option<i64>,
    pub limit: u32,
}

/// The outcome of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    pub entries: u64,
    /// The first problem found, naming the row.
    pub problem: Option<String>,
}

#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    async fn append_audit(&self, record: &AuditRecord) -> Result<i64>;
    /// Newest first.
    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>>;
    /// Oldest first, from `after` (exclusive), for export and verification.
    async fn audit_page(&self, after: i64, limit: u32) -> Result<Vec<AuditEntry>>;
    /// Recomputes every hash and link; reports the first edited, deleted or
    /// reordered row, and newest rows cut off behind the head anchor.
    async fn verify_audit(&self) -> Result<ChainReport>;
    /// Writes the head anchor (last id and hash) if it moved. Called
    /// periodically and at shutdown; a no-op for stores without one.
    async fn anchor_audit_head(&self) -> Result<()>;
}
