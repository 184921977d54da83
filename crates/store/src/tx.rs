//! Transactions: the unit of work every service uses.
//!
//! A service opens a [`ReadTx`] (one consistent snapshot) or a [`WriteTx`],
//! reaches every area through it, checks its rules on what it read there, makes
//! its changes, appends the audit record on the same transaction, and commits.
//! Dropping a transaction without committing rolls it back: an error anywhere
//! leaves nothing half-written.
//!
//! Write transactions are serialised on every backend (SQLite has one writer
//! connection; PostgreSQL takes a transaction-scoped lock first), so a rule
//! read inside one cannot be invalidated by another writer before commit, and
//! the audit chain has one order. Keep them short: hash passwords, call the
//! network and seal values before opening one, never inside.

use crate::access::{AccessReads, AccessWrites};
use crate::audit::{AuditReads, AuditWrites};
use crate::jobs::{JobReads, JobWrites};
use crate::queue::{QueueReads, QueueWrites};
use crate::secrets::{SecretReads, SecretWrites};
use crate::Result;
use async_trait::async_trait;

/// Everything a service may read, from one snapshot.
/// Each backend implements it (empty) for its transaction type.
pub trait ReadTx: JobReads + QueueReads + AccessReads + SecretReads + AuditReads + Send {}

/// Reads and writes of every area, applied together by [`WriteTx::commit`].
#[async_trait]
pub trait WriteTx:
    ReadTx + JobWrites + QueueWrites + AccessWrites + SecretWrites + AuditWrites
{
    async fn commit(self: Box<Self>) -> Result<()>;
}

/// A unit of work of one change: opens a write transaction, applies the
/// operation, commits; evaluates to `Result<T, StoreError>`. For the run hot
/// path (start, finish, output) and other single-statement changes that carry
/// no audit record; anything that checks a rule or appends a record opens its
/// own transaction. (A macro, not a function taking a closure: the operation
/// borrows from the caller as well as from the transaction.)
#[macro_export]
macro_rules! write_one {
    ($store:expr, |$tx:ident| $op:expr) => {
        async {
            let mut $tx = $crate::Store::write(&*$store).await?;
            let out = $op.await?;
            $crate::WriteTx::commit($tx).await?;
            Ok::<_, $crate::StoreError>(out)
        }
    };
}

/// One read on its own snapshot; evaluates to `Result<T, StoreError>`.
#[macro_export]
macro_rules! read_one {
    ($store:expr, |$tx:ident| $op:expr) => {
        async {
            let mut $tx = $crate::Store::read(&*$store).await?;
            let out = $op.await?;
            Ok::<_, $crate::StoreError>(out)
        }
    };
}
