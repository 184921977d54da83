//! Telling people: outgoing mail over SMTP (password-reset links, test
//! messages) today; the notification channels (Telegram, Gotify, ntfy,
//! webhooks) belong here too. The SMTP settings are a settings document in the
//! vault, their password its sealed field, opened only to log in.
#![forbid(unsafe_code)]

pub mod mail;

use mail::SmtpSettings;
use secrecy::{ExposeSecret as _, SecretString};
use std::sync::Arc;
use steward_domain::{AuditContext, Module, Permission, PermissionSet, ValidationError};
use steward_vault::{SecretChange, Vault, VaultError};

const SMTP_KEY: &str = "smtp";

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("{0}")]
    Forbidden(String),
    /// Not configured, or the server refused or cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("internal error")]
    Internal(String),
}

pub struct Mailer {
    vault: Arc<Vault>,
}

impl Mailer {
    pub fn new(vault: Arc<Vault>) -> Arc<Self> {
        Arc::new(Self { vault })
    }

    /// The SMTP settings and whether a password is stored.
    pub async fn smtp(&self) -> Result<Option<(SmtpSettings, bool)>, NotifyError> {
        let Some((doc, has_password)) = self.vault.setting(SMTP_KEY).await? else {
            return Ok(None);
        };
        let settings =
            serde_json::from_value(doc).map_err(|e| NotifyError::Internal(e.to_string()))?;
        Ok(Some((settings, has_password)))
    }

    /// Saves SMTP settings for a caller holding `permissions`. `password`:
    /// `None` keeps the stored one, `Some("")` removes it, anything else
    /// replaces it. Reset links travel by this server: whoever can redirect
    /// it can take over accounts, so the change also needs `users:write`.
    pub async fn put_smtp(
        &self,
        settings: &SmtpSettings,
        password: Option<SecretString>,
        permissions: &PermissionSet,
        ctx: &AuditContext,
    ) -> Result<(), NotifyError> {
        if !permissions.allows(Permission::write(Module::Users)) {
            return Err(NotifyError::Forbidden("changing the mail server also needs users:write: password reset links are sent through it".into()));
        }
        settings.validate()?;
        let keeps_password = password.is_none();
        let change = match password {
            None => SecretChange::Keep,
            Some(p) if p.expose_secret().is_empty() => SecretChange::Remove,
            Some(p) => SecretChange::Replace(p),
        };
        let doc =
            serde_json::to_value(settings).map_err(|e| NotifyError::Internal(e.to_string()))?;
        self.vault
            .put_setting(SMTP_KEY, "password", &doc, change, ctx, |before, has_password| {
                // Keeping the stored password while pointing it elsewhere would
                // hand it to the new server: it must be given again.
                let old: Option<SmtpSettings> =
                    before.and_then(|b| serde_json::from_value(b.clone()).ok());
                let moved = old.is_some_and(|o| !mail::same_server(&o, settings));
                if keeps_password && moved && has_password {
                    return Err(ValidationError::new(
                        "password",
                        "send the password again when host, port, security or username change (or \"\" to remove it)",
                    ));
                }
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// Sends one message with the stored SMTP settings.
    pub async fn send_mail(&self, to: &str, subject: &str, body: &str) -> Result<(), NotifyError> {
        let Some((doc, password)) = self.vault.open_setting(SMTP_KEY).await? else {
            return Err(NotifyError::Unavailable(
                "SMTP is not configured (PUT /api/v1/settings/smtp)".into(),
            ));
        };
        let settings: SmtpSettings =
            serde_json::from_value(doc).map_err(|e| NotifyError::Internal(e.to_string()))?;
        mail::send(&settings, password, to, subject, body).await
    }
}
