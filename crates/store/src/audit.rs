//! The audit log: entries, what a transaction reads of it ([`AuditReads`]) and
//! how it appends ([`AuditWrites::append_audit`], on the transaction of the
//! change it records). The chain itself (hashing, linking, verification, the
//! head anchor) is backend-neutral and lives in [`chain`]; a backend only
//! stores rows and keeps appends in one order.

pub mod chain;

use crate::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
pub use steward_domain::entity::AuditEntry;
use steward_domain::AuditRecord;

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
pub trait AuditReads: Send {
    /// Newest first.
    async fn list_audit(&mut self, filter: &AuditFilter) -> Result<Vec<AuditEntry>>;
    /// Oldest first, from `after` (exclusive), for export and verification.
    async fn audit_page(&mut self, after: i64, limit: u32) -> Result<Vec<AuditEntry>>;
    /// The last entry's id and hash. Inside a write transaction the backend
    /// guarantees no other append can come between this read and the insert.
    async fn audit_head(&mut self) -> Result<Option<(i64, String)>>;
    /// The stored hash of entry `id`, if it exists.
    async fn audit_hash(&mut self, id: i64) -> Result<Option<String>>;
}

#[async_trait]
pub trait AuditWrites: AuditReads {
    /// Stores a linked entry exactly as given; only [`chain::append`] calls it.
    async fn insert_audit_entry(&mut self, entry: &AuditEntry) -> Result<()>;

    /// Appends `record` after the current head, on this transaction: it is
    /// kept if and only if the change it records is.
    async fn append_audit(&mut self, record: &AuditRecord) -> Result<i64> {
        chain::append(self, record).await
    }
}
