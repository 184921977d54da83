//! The vault service: named secrets for jobs, settings documents with one
//! sealed field (the SMTP password), and key rotation. The keyring lives here
//! and nowhere else; values leave only as run-time substitutions
//! ([`SecretSource`]) or, opened for the moment of use, outgoing logins.

use crate::{SecretChange, SecretSource, VaultError};
use async_trait::async_trait;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::json;
use std::sync::{Arc, RwLock};
use steward_clock::Clock;
use steward_crypto::{Aad, Keyring};
use steward_domain::audit::REDACTED;
use steward_domain::{AuditContext, SecretName, ValidationError};
use steward_store::secrets::SecretMeta;
use steward_store::{read_one, write_one, Store};

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

/// A settings document's sealed field is bound to its key.
fn setting_aad(key: &str) -> Aad<'_> {
    Aad {
        table: "settings",
        column: "sealed",
        row: key,
    }
}

fn internal(e: impl std::fmt::Display) -> VaultError {
    VaultError::Internal(e.to_string())
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

    fn ring(&self) -> Result<std::sync::RwLockReadGuard<'_, Keyring>, VaultError> {
        self.keyring
            .read()
            .map_err(|_| internal("keyring lock poisoned"))
    }

    pub async fn list(&self) -> Result<Vec<SecretMeta>, VaultError> {
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
    ) -> Result<bool, VaultError> {
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
    pub async fn delete(&self, name: &SecretName, ctx: &AuditContext) -> Result<(), VaultError> {
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
            return Err(VaultError::Conflict(format!(
                "jobs {} refer to secret {name}; change them first",
                names.join(", ")
            )));
        }
        tx.delete_secret(name).await?;
        tx.append_audit(&audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A settings document and whether its sealed field holds a value.
    pub async fn setting(
        &self,
        key: &str,
    ) -> Result<Option<(serde_json::Value, bool)>, VaultError> {
        let s = read_one!(self.store, |tx| tx.get_setting(key)).await?;
        Ok(s.map(|s| (s.value, s.sealed.is_some())))
    }

    /// A settings document with its sealed field opened: for the moment of use
    /// only (an outgoing login), never for a response.
    pub async fn open_setting(
        &self,
        key: &str,
    ) -> Result<Option<(serde_json::Value, Option<SecretString>)>, VaultError> {
        let Some(s) = read_one!(self.store, |tx| tx.get_setting(key)).await? else {
            return Ok(None);
        };
        let secret = match &s.sealed {
            Some(sealed) => {
                let opened = self
                    .ring()?
                    .open(sealed, setting_aad(key))
                    .map_err(internal)?;
                Some(SecretString::from(
                    String::from_utf8_lossy(&opened).into_owned(),
                ))
            }
            None => None,
        };
        Ok(Some((s.value, secret)))
    }

    /// Saves the settings document `key` and its sealed field (`secret_field`
    /// names it in the audit record, which never holds its value). `rule` sees
    /// what is stored (document, and whether a secret is) on the write
    /// transaction that replaces it, so it cannot change in between.
    pub async fn put_setting(
        &self,
        key: &str,
        secret_field: &str,
        value: &serde_json::Value,
        secret: SecretChange,
        ctx: &AuditContext,
        rule: impl FnOnce(Option<&serde_json::Value>, bool) -> Result<(), ValidationError> + Send,
    ) -> Result<(), VaultError> {
        let _sealing = self.gate.read().await;
        // Sealed before the transaction opens: keep write transactions short.
        let replacement = match &secret {
            SecretChange::Replace(p) => Some(
                self.ring()?
                    .seal(p.expose_secret().as_bytes(), setting_aad(key)),
            ),
            SecretChange::Keep | SecretChange::Remove => None,
        };
        let mut tx = self.store.write().await?;
        let before = tx.get_setting(key).await?;
        rule(
            before.as_ref().map(|b| &b.value),
            before.as_ref().is_some_and(|b| b.sealed.is_some()),
        )?;
        let sealed = match secret {
            SecretChange::Keep => before.as_ref().and_then(|b| b.sealed.clone()),
            SecretChange::Remove => None,
            SecretChange::Replace(_) => replacement,
        };
        let version = sealed.as_deref().and_then(Keyring::version_of);
        let mut diff =
            steward_domain::audit::json_diff(before.as_ref().map(|b| &b.value), Some(value), &[]);
        if !matches!(secret, SecretChange::Keep) {
            if let Some(o) = diff.as_object_mut() {
                o.insert(
                    secret_field.into(),
                    json!({"from": REDACTED, "to": REDACTED}),
                );
            }
        }
        let now = self.clock.now();
        let audit = ctx.record(
            now,
            &format!("settings.{key}"),
            format!("settings:{key}"),
            diff,
        );
        tx.put_setting(key, value, sealed.as_deref().zip(version), now)
            .await?;
        tx.append_audit(&audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Adds a key, re-seals every value under it in batches while Steward keeps
    /// serving, then retires keys nothing uses. `progress` hears each batch.
    pub async fn rotate(
        &self,
        ctx: &AuditContext,
        progress: &(dyn Fn(&Rotation) + Send + Sync),
    ) -> Result<Rotation, VaultError> {
        // One rotation at a time: two would relabel each other's rows.
        let _one = self.rotating.lock().await;
        let new_version = {
            let mut ring = self
                .keyring
                .write()
                .map_err(|_| internal("keyring lock poisoned"))?;
            ring.add_key()
                .map_err(|e| VaultError::Unavailable(e.to_string()))?
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
                .map_err(|e| VaultError::Unavailable(e.to_string()))?
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
    ) -> Result<(), VaultError> {
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
