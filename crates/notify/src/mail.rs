//! Outgoing mail over SMTP (lettre): the settings document and sending.

use crate::NotifyError;
use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use steward_domain::ValidationError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (port 587); refused if the server cannot.
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on the same host or a test server.
    None,
}

/// The SMTP settings document (the password is sealed separately).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    /// Host name or address of the mail server (up to 253 characters, no spaces).
    #[schema(example = "mail.example.org", min_length = 1, max_length = 253)]
    pub host: String,
    #[schema(example = 587, minimum = 1, maximum = 65535)]
    pub port: u16,
    #[serde(default)]
    pub security: SmtpSecurity,
    /// Account on the mail server, if it needs one.
    #[serde(default)]
    pub username: Option<String>,
    /// Sender, e.g. `Steward <steward@example.org>`.
    #[schema(example = "Steward <steward@example.org>")]
    pub from: String,
}

impl SmtpSettings {
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.host.trim().is_empty()
            || self.host.len() > 253
            || self.host.contains(char::is_whitespace)
        {
            return Err(ValidationError::new(
                "host",
                "must be a host name or address",
            ));
        }
        if self.port == 0 {
            return Err(ValidationError::new("port", "must be 1 to 65535"));
        }
        self.from
            .parse::<Mailbox>()
            .map_err(|e| ValidationError::new("from", format!("is not a mail address: {e}")))?;
        Ok(())
    }
}

impl SmtpSecurity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starttls => "starttls",
            Self::Tls => "tls",
            Self::None => "none",
        }
    }
}

pub(crate) async fn send(
    settings: &SmtpSettings,
    password: Option<SecretString>,
    to: &str,
    subject: &str,
    body: &str,
) -> Result<(), NotifyError> {
    let from: Mailbox = settings
        .from
        .parse()
        .map_err(|e| ValidationError::new("from", format!("is not a mail address: {e}")))?;
    let to: Mailbox = to
        .parse()
        .map_err(|e| ValidationError::new("to", format!("is not a mail address: {e}")))?;
    let message = Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body(body.to_owned())
        .map_err(|e| NotifyError::Internal(e.to_string()))?;
    let builder = match settings.security {
        SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&settings.host),
        SmtpSecurity::Starttls => {
            AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&settings.host)
        }
        SmtpSecurity::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
            &settings.host,
        )),
    }
    .map_err(|e| NotifyError::Unavailable(format!("SMTP: {e}")))?;
    let mut builder = builder
        .port(settings.port)
        .timeout(Some(Duration::from_secs(20)));
    if let (Some(user), Some(pw)) = (&settings.username, password) {
        builder = builder.credentials(Credentials::new(
            user.clone(),
            pw.expose_secret().to_owned(),
        ));
    }
    builder
        .build()
        .send(message)
        .await
        .map(|_| ())
        .map_err(|e| {
            NotifyError::Unavailable(format!(
                "SMTP server {}:{} refused or failed: {e}",
                settings.host, settings.port
            ))
        })
}

/// Where the mail server is and who logs in: the stored password goes to this
/// server only, so changing any of it needs the password again.
pub(crate) fn same_server(a: &SmtpSettings, b: &SmtpSettings) -> bool {
    (a.host.as_str(), a.port, a.security, a.username.as_deref())
        == (b.host.as_str(), b.port, b.security, b.username.as_deref())
}
