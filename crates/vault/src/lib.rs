//! Sealed values, in a crate of their own so that every service that needs
//! one (the engine at run time, mail for its login, access for nothing but
//! wiring) depends on this and not on each other.
//!
//! - [`Vault`]: named secrets, settings documents with one sealed field, key
//!   rotation; every change appends its audit record on its own transaction.
//! - [`SecretSource`]: what the engine asks for `${secret:NAME}` values.
#![forbid(unsafe_code)]

mod vault;

pub use vault::{Rotation, Vault, MAX_SECRET_BYTES};

use async_trait::async_trait;
use secrecy::SecretString;
use steward_domain::{SecretName, ValidationError};
use steward_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    /// The database or the key file cannot be used now; nothing was changed.
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl From<StoreError> for VaultError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(w) => Self::NotFound(w),
            StoreError::Conflict(m) => Self::Conflict(m),
            StoreError::Unavailable(b) => {
                tracing::error!(error = %b, "the database is unavailable");
                Self::Unavailable("the database is unavailable; try again shortly".into())
            }
            StoreError::Backend(b) => Self::Internal(b.to_string()),
        }
    }
}

/// What a settings change does to the document's sealed field.
pub enum SecretChange {
    Keep,
    Remove,
    Replace(SecretString),
}

#[async_trait]
pub trait SecretSource: Send + Sync + 'static {
    async fn exists(&self, name: &SecretName) -> Result<bool, String>;
    /// Opens the named secrets; an error names what could not be opened, never a value.
    async fn open(&self, names: &[SecretName]) -> Result<Vec<(SecretName, SecretString)>, String>;
}

/// For engines without a vault (unit tests): no secret exists.
pub struct NoSecrets;

#[async_trait]
impl SecretSource for NoSecrets {
    async fn exists(&self, _: &SecretName) -> Result<bool, String> {
        Ok(false)
    }
    async fn open(&self, names: &[SecretName]) -> Result<Vec<(SecretName, SecretString)>, String> {
        match names.first() {
            Some(n) => Err(format!("secret {n} does not exist")),
            None => Ok(vec![]),
        }
    }
}
