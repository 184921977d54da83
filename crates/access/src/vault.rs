//! Sealed values: named secrets for jobs, sealed settings fields (the SMTP
//! password), and key rotation. The keyring lives here and nowhere else;
//! values leave only as run-time substitutions or outgoing SMTP logins.

use crate::mail::{SmtpSecurity, SmtpSettings};
use crate::AccessError;
use async_trait::async_trait;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::json;
use std::sync::{Arc, RwLock};
use steward_crypto::{Aad, Keyring};
use steward_domain::audit::REDACTED;
use steward_domain::{AuditContext, SecretName, ValidationError};
use steward_engine::clock::Clock;
use steward_engine::secrets::SecretSource;
use steward_store::secrets::SecretMeta;
use steward_store::{read_one, write_one, Store};

const SMTP_KEY: &str = "smtp";
/// A secret value's size limit: credentials and keys, not files.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

pub struct Vault {
    keyring: RwLock<Keyring>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// Held (shared) by every seal-and-write, (exclusively) by the end of a rotation.
    gate: tokio::sync::RwLock<()>,
    rotating: tokio::sync::Mutex<()>,
}

fn secret_aad(name: &SecretName) -> Aad<'_> {
    Aad {
        table: "secrets",
        column: "value",
        row: name.as_str(),
    }
}

fn internal(e: impl std::fmt::Display) -> AccessError {
    AccessError::Internal(e.to_string())
}

/// Progress of a key rotation.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Rotation {
    pub new_version: u32,
    pub resealed: u64,
    pub retired: Vec<u32>,
}

impl Vault {
    pub fn new(keyring: Keyring, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(Self {
            keyring: RwLock::new(keyring),
            store,
            clock,
            gate: tokio::sync::RwLock::new(()),
            rotating: tokio::sync::Mutex::new(()),
        })
    }

    fn ring(&self) -> Result<std::sync::RwLockReadGuard<'_, Keyring>, AccessError> {
        self.keyring
            .read()
            .map_err(|_| internal("keyring lock poisoned"))
    }

    pub async fn list(&self) -> Result<Vec<SecretMeta>, AccessError> {
        Ok(read_one!(self.store, |tx| tx.list_secrets()).await?)
    }

    /// Creates or replaces a secret. The audit record says that the value
    /// changed, never what it is.
    pub async fn put(
        &self,
        name: &SecretName,
        value: &SecretString,
        description: &str,
        ctx: &AuditContext,
    ) -> Result<bool, AccessError> {
        // Run output is masked by replacing the value wherever it appears; a
        // one- or two-character "secret" would mask half of every line.
        if value.expose_secret().chars().count() < 4 {
            return Err(ValidationError::new("value", "must be at least 4 characters (values are masked wherever they appear in run output)").into());
        }
        if value.expose_secret().len() > MAX_SECRET_BYTES {
            return Err(ValidationError::new(
                "value",
                format!("is larger than {MAX_SECRET_BYTES} bytes"),
            )
            .into());
        }
        if description.chars().count() > 500 {
            return Err(
                ValidationError::new("description", "is longer than 500 characters").into(),
            );
        }
        let _sealing = self.gate.read().await;
        let (sealed, version) = {
            let ring = self.ring()?;
            (
                ring.seal(value.expose_secret().as_bytes(), secret_aad(name)),
                ring.current_version(),
            )
        };
        let now = self.clock.now();
        let mut tx = self.store.write().await?;
        // A first setting had no value before; the record must not claim one.
        let before = if tx.secret_exists(name).await? {
            json!(REDACTED)
        } else {
            serde_json::Value::Null
        };
        let audit = ctx.record(
            now,
            "secret.put",
            format!("secret:{name}"),
            json!({"value": {"from": before, "to": REDACTED}, "description": description}),
        );
        let created = tx
            .put_secret(name, description, &sealed, version, now)
            .await?;
        tx.append_audit(&audit).await?;
        tx.commit().await?;
        Ok(created)
    }

    /// Deletes a secret no job names. The check is read on the deleting
    /// transaction, and a job's save checks that its secrets exist on its own
    /// write transaction: writes are serialised, so of a save naming the
    /// secret and this deletion exactly one succeeds.
    pub async fn delete(&self, name: &SecretName, ctx: &AuditContext) -> Result<(), AccessError> {
        let audit = ctx.record(
            self.clock.now(),
            "secret.delete",
            format!("secret:{name}"),
            json!({}),
        );
        let mut tx = self.store.write().await?;
        let users = tx.jobs_naming_secret(name).await?;
        if !users.is_empty() {
            let names: Vec<&str> = users.iter().map(|j| j.as_str()).collect();
            return Err(AccessError::Conflict(format!(
                "jobs {} refer to secret {name}; change them first",
                names.join(", ")
            )));
        }
        tx.delete_secret(name).await?;
        tx.append_audit(&audit).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn smtp(&self) -> Result<Option<(SmtpSettings, bool)>, AccessError> {
        let Some(s) = read_one!(self.store, |tx| tx.get_setting(SMTP_KEY)).await? else {
            return Ok(None);
        };
        let settings: SmtpSettings = serde_json::from_value(s.value).map_err(internal)?;
        Ok(Some((settings, s.sealed.is_some())))
    }

    /// Saves SMTP settings. `password`: `None` keeps the stored one,
    /// `Some("")` removes it, anything else replaces it.
    pub async fn put_smtp(
        &self,
        settings: &SmtpSettings,
        password: Option<SecretString>,
        ctx: &AuditContext,
    ) -> Result<(), AccessError> {
        settings.validate()?;
        let _sealing = self.gate.read().await;
        let mut tx = self.store.write().await?;
        let before = tx.get_setting(SMTP_KEY).await?;
        if password.is_none() {
            // Keeping the stored password while pointing it elsewhere would hand
            // it to the new server: it must be given again.
            let old: Option<SmtpSettings> = before
                .as_ref()
                .and_then(|b| serde_json::from_value(b.value.clone()).ok());
            let moved = old.as_ref().is_some_and(|o| {
                (o.host.as_str(), o.port, o.security, o.username.as_deref())
                    != (
                        settings.host.as_str(),
                        settings.port,
                        settings.security,
                        settings.username.as_deref(),
                    )
            });
            if moved && before.as_ref().is_some_and(|b| b.sealed.is_some()) {
                return Err(ValidationError::new(
                    "password",
                    "send the password again when host, port, security or username change (or \"\" to remove it)",
                )
                .into());
            }
        }
        let sealed = match &password {
            None => before.as_ref().and_then(|b| b.sealed.clone()),
            Some(p) if p.expose_secret().is_empty() => None,
            Some(p) => Some(self.ring()?.seal(
                p.expose_secret().as_bytes(),
                Aad {
                    table: "settings",
                    column: "sealed",
                    row: SMTP_KEY,
                },
            )),
        };
        let version = sealed.as_deref().and_then(Keyring::version_of);
        let after = serde_json::to_value(settings).map_err(internal)?;
        let mut diff =
            steward_domain::audit::json_diff(before.as_ref().map(|b| &b.value), Some(&after), &[]);
        if password.is_some() {
            if let Some(o) = diff.as_object_mut() {
                o.insert("password".into(), json!({"from": REDACTED, "to": REDACTED}));
            }
        }
        let audit = ctx.record(self.clock.now(), "settings.smtp", "settings:smtp", diff);
        tx.put_setting(
            SMTP_KEY,
            &after,
            sealed.as_deref().zip(version),
            self.clock.now(),
        )
        .await?;
        tx.append_audit(&audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sends one message with the stored SMTP settings.
    pub async fn send_mail(&self, to: &str, subject: &str, body: &str) -> Result<(), AccessError> {
        let Some(s) = read_one!(self.store, |tx| tx.get_setting(SMTP_KEY)).await? else {
            return Err(AccessError::Unavailable(
                "SMTP is not configured (PUT /api/v1/settings/smtp)".into(),
            ));
        };
        let settings: SmtpSettings = serde_json::from_value(s.value).map_err(internal)?;
        let password = match &s.sealed {
            Some(sealed) => {
                let opened = self
                    .ring()?
                    .open(
                        sealed,
                        Aad {
                            table: "settings",
                            column: "sealed",
                            row: SMTP_KEY,
                        },
                    )
                    .map_err(internal)?;
                Some(SecretString::from(
                    String::from_utf8_lossy(&opened).into_owned(),
                ))
            }
            None => None,
        };
        crate::mail::send(&settings, password, to, subject, body).await
    }

    /// Adds a key, re-seals every value under it in batches while Steward keeps
    /// serving, then retires keys nothing uses. `progress` hears each batch.
    pub async fn rotate(
        &self,
        ctx: &AuditContext,
        progress: &(dyn Fn(&Rotation) + Send + Sync),
    ) -> Result<Rotation, AccessError> {
        // One rotation at a time: two would relabel each other's rows.
        let _one = self.rotating.lock().await;
        let new_version = {
            let mut ring = self
                .keyring
                .write()
                .map_err(|_| internal("keyring lock poisoned"))?;
            ring.add_key()
                .map_err(|e| AccessError::Unavailable(e.to_string()))?
        };
        let mut report = Rotation {
            new_version,
            ..Default::default()
        };
        // While serving: edits go on and seal under the new key already.
        self.reseal_stale(&mut report, progress).await?;
        // Then with edits held for a moment, so a value sealed under an old key
        // just before the new one was added is not missed, and no old key is
        // retired while something still needs it.
        let _quiet = self.gate.write().await;
        self.reseal_stale(&mut report, progress).await?;
        let in_use = read_one!(self.store, |tx| tx.key_versions_in_use()).await?;
        report.retired = {
            let mut ring = self
                .keyring
                .write()
                .map_err(|_| internal("keyring lock poisoned"))?;
            ring.retire_unused(&in_use)
                .map_err(|e| AccessError::Unavailable(e.to_string()))?
        };
        let audit = ctx.record(self.clock.now(), "key.rotate", "keyring", json!({"version": {"from": new_version - 1, "to": new_version}, "resealed": report.resealed, "retired": report.retired}));
        write_one!(self.store, |tx| tx.append_audit(&audit)).await?;
        Ok(report)
    }

    /// Re-seals, batch by batch, every value not under `report.new_version`.
    async fn reseal_stale(
        &self,
        report: &mut Rotation,
        progress: &(dyn Fn(&Rotation) + Send + Sync),
    ) -> Result<(), AccessError> {
        loop {
            let version = report.new_version;
            let batch = read_one!(self.store, |tx| tx.stale_sealed(version, 100)).await?;
            if batch.is_empty() {
                return Ok(());
            }
            for cell in batch {
                let aad = Aad {
                    table: cell.table,
                    column: cell.column,
                    row: &cell.row,
                };
                let resealed = {
                    let ring = self.ring()?;
                    let plain = ring.open(&cell.sealed, aad).map_err(|e| {
                        internal(format!(
                            "{}.{} of {:?}: {e}",
                            cell.table, cell.column, cell.row
                        ))
                    })?;
                    ring.seal(&plain, aad)
                };
                // False when an edit replaced it meanwhile; the next batch re-reads it.
                if write_one!(self.store, |tx| tx.reseal(&cell, &resealed, version)).await? {
                    report.resealed += 1;
                }
            }
            progress(report);
            tokio::task::yield_now().await;
        }
    }
}

#[async_trait]
impl SecretSource for Vault {
    async fn exists(&self, name: &SecretName) -> Result<bool, String> {
        read_one!(self.store, |tx| tx.secret_exists(name))
            .await
            .map_err(|e| e.to_string())
    }

    async fn open(&self, names: &[SecretName]) -> Result<Vec<(SecretName, SecretString)>, String> {
        let sealed = read_one!(self.store, |tx| tx.sealed_secrets(names))
            .await
            .map_err(|e| e.to_string())?;
        if let Some(missing) = names.iter().find(|n| !sealed.iter().any(|(s, _)| s == *n)) {
            return Err(format!("secret {missing} does not exist"));
        }
        let ring = self.ring().map_err(|e| e.to_string())?;
        sealed
            .into_iter()
            .map(|(name, value)| {
                let plain = ring
                    .open(&value, secret_aad(&name))
                    .map_err(|e| format!("secret {name}: {e}"))?;
                let text = String::from_utf8(plain.to_vec())
                    .map_err(|_| format!("secret {name} is not text"))?;
                Ok((name, SecretString::from(text)))
            })
            .collect()
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
