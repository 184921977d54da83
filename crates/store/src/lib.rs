//! Persistence behind the [`Store`] trait.
//!
//! Services open a transaction ([`Store::read`], [`Store::write`]) and reach
//! every area through it (see [`tx`]). Callers see domain types only; each
//! backend lives in its own module with its own migrations, and nothing above
//! this crate names one. Nothing here knows about HTTP or processes.
#![forbid(unsafe_code)]
// `sql/*.rs` is compiled inside each backend module on purpose (see `sql`).
#![allow(clippy::duplicate_mod)]

pub mod access;
pub mod audit;
pub mod jobs;
mod model;
pub mod postgres;
pub mod queue;
pub mod secrets;
mod sql;
pub mod sqlite;
pub mod tx;

pub use access::{AccessReads, AccessWrites};
pub use audit::{AuditReads, AuditWrites};
pub use jobs::{JobReads, JobWrites, LastEndings};
pub use model::{Job, JobCursor, JobQuery, JobSort, NewRun, Run, RunFilter, RunUpdate};
pub use postgres::PgStore;
pub use queue::{DueRun, LockHolder, QueueReads, QueueWake, QueueWrites, Rescued};
pub use secrets::{SecretReads, SecretWrites};
pub use sqlite::SqliteStore;
pub use tx::{ReadTx, WriteTx};

use async_trait::async_trait;
use audit::ChainReport;
use std::path::Path;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Where the records are kept: the one choice of backend, made from the
/// configuration by the binary and turned into a store here, so that no crate
/// above this one names a backend.
pub enum Location<'a> {
    /// The embedded database file; `audit.head` is kept beside it.
    Sqlite(&'a Path),
    /// A PostgreSQL connection URL (it holds a password: never printed) and
    /// where to keep the audit head anchor.
    Postgres {
        url: &'a str,
        audit_anchor: std::path::PathBuf,
    },
}

/// Opens the store at `location`, applying its pending migrations.
pub async fn open(location: Location<'_>) -> Result<std::sync::Arc<dyn Store>> {
    Ok(match location {
        Location::Sqlite(path) => std::sync::Arc::new(SqliteStore::open(path).await?),
        Location::Postgres { url, audit_anchor } => {
            std::sync::Arc::new(PgStore::connect(url, Some(audit_anchor)).await?)
        }
    })
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A uniqueness rule was violated; the text names what already exists.
    #[error("{0}")]
    Conflict(String),
    /// The database cannot be reached (connection refused or lost, pool
    /// exhausted): the request may succeed later; nothing was written.
    #[error("the database is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("database error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A database. Implementations must be safe to call from many tasks at once.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap round trip to the database, for `/readyz`.
    async fn ping(&self) -> Result<()>;
    /// A read-only transaction: one consistent snapshot.
    async fn read(&self) -> Result<Box<dyn ReadTx>>;
    /// A write transaction; at most one is open at a time (see [`tx`]).
    async fn write(&self) -> Result<Box<dyn WriteTx>>;
    /// The head anchor file, for stores that keep one beside the database.
    fn audit_anchor(&self) -> Option<&Path>;
    /// Closes the connections; later calls fail.
    async fn close(&self);

    /// Takes the database for this serving process: a second Steward serving
    /// the same database is refused (it would abandon the first one's running
    /// runs and fire every schedule twice). SQLite: the data directory's lock
    /// already does this.
    async fn claim(&self) -> Result<()> {
        Ok(())
    }

    /// Recomputes every hash and link of the audit log (see [`audit::chain`]).
    async fn verify_audit(&self) -> Result<ChainReport> {
        let mut tx = self.read().await?;
        audit::chain::verify(&mut *tx, self.audit_anchor()).await
    }

    /// Writes the head anchor if it moved. Called periodically and at
    /// shutdown; a no-op for stores without one.
    async fn anchor_audit_head(&self) -> Result<()> {
        let Some(path) = self.audit_anchor() else {
            return Ok(());
        };
        let mut tx = self.read().await?;
        audit::chain::write_anchor(&mut *tx, path).await
    }
}
