//! Identity and access services: accounts and sign-in, sessions, API tokens,
//! roles and groups with the permission cache, password resets (sent through
//! `steward-notify`'s mailer). The web layer and the CLI call these; the rules
//! (permissions, password policy, audit records) come from `steward-domain`,
//! persistence from `steward-store`.
#![forbid(unsafe_code)]

pub mod accounts;
pub mod grants;
pub mod identity;
pub mod limiter;
pub mod tokens;

use chrono::Duration as ChronoDuration;
use std::sync::Arc;
use steward_clock::Clock;
use steward_crypto::PasswordHasher;
use steward_domain::ValidationError;
use steward_notify::{Mailer, NotifyError};
use steward_store::{Store, StoreError};

pub use identity::{Identity, Via};

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// Wrong user name or password: one message for both, on purpose.
    #[error("wrong user name or password")]
    InvalidCredentials,
    #[error("{0}")]
    Forbidden(String),
    #[error("too many attempts; try again in {retry_after_secs} s")]
    TooMany { retry_after_secs: u64 },
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl From<StoreError> for AccessError {
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

impl From<NotifyError> for AccessError {
    fn from(e: NotifyError) -> Self {
        match e {
            NotifyError::Invalid(v) => Self::Invalid(v),
            NotifyError::Forbidden(m) => Self::Forbidden(m),
            NotifyError::Unavailable(m) => Self::Unavailable(m),
            NotifyError::Vault(steward_vault::VaultError::Internal(m)) => Self::Internal(m),
            NotifyError::Vault(v) => Self::Unavailable(v.to_string()),
            NotifyError::Internal(m) => Self::Internal(m),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AccessSettings {
    /// A session unused this long ends.
    pub session_idle: ChronoDuration,
    /// A session ends this long after sign-in, used or not.
    pub session_lifetime: ChronoDuration,
    pub reset_ttl: ChronoDuration,
    /// Base URL for links in mail, e.g. `https://steward.example.org`.
    pub public_url: Option<String>,
}

impl Default for AccessSettings {
    fn default() -> Self {
        Self {
            session_idle: ChronoDuration::hours(12),
            session_lifetime: ChronoDuration::days(7),
            reset_ttl: ChronoDuration::minutes(15),
            public_url: None,
        }
    }
}

/// Client facts recorded with sessions and audit entries.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub address: Option<std::net::IpAddr>,
    pub user_agent: Option<String>,
}

/// The identity and access service.
pub struct Access {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) hasher: PasswordHasher,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) settings: AccessSettings,
    pub(crate) cache: identity::PermissionCache,
    pub(crate) identities: identity::IdentityCache,
    pub(crate) limiter: limiter::SignInLimiter,
    /// Reset requests per login and address, with the same growing back-off.
    pub(crate) reset_limiter: limiter::SignInLimiter,
    /// Reset mails being sent at once, at most.
    pub(crate) reset_slots: Arc<tokio::sync::Semaphore>,
    pub(crate) mailer: Arc<Mailer>,
}

impl Access {
    pub fn new(
        store: Arc<dyn Store>,
        hasher: PasswordHasher,
        clock: Arc<dyn Clock>,
        settings: AccessSettings,
        mailer: Arc<Mailer>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            hasher,
            clock,
            settings,
            cache: identity::PermissionCache::default(),
            identities: identity::IdentityCache::default(),
            limiter: limiter::SignInLimiter::default(),
            reset_limiter: limiter::SignInLimiter::default(),
            reset_slots: Arc::new(tokio::sync::Semaphore::new(4)),
            mailer,
        })
    }

    /// Forgets cached permissions and identities: called by every change to
    /// users, grants, sessions or tokens.
    pub(crate) fn invalidate(&self) {
        self.cache.clear();
        self.identities.clear();
    }

    pub fn settings(&self) -> &AccessSettings {
        &self.settings
    }

    /// The audit log, newest first.
    pub async fn audit_entries(
        &self,
        filter: &steward_store::audit::AuditFilter,
    ) -> Result<Vec<steward_store::audit::AuditEntry>, AccessError> {
        Ok(steward_store::read_one!(self.store, |tx| tx.list_audit(filter)).await?)
    }

    /// Oldest first after `after`, for export.
    pub async fn audit_page(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<steward_store::audit::AuditEntry>, AccessError> {
        Ok(steward_store::read_one!(self.store, |tx| tx.audit_page(after, limit)).await?)
    }

    /// Walks the whole chain (see `steward_store::audit::chain`).
    pub async fn verify_audit(&self) -> Result<steward_store::audit::ChainReport, AccessError> {
        Ok(self.store.verify_audit().await?)
    }
}
