//! Accounts: the first admin, sign-in and sign-out, sessions, password change
//! and reset, and user management.

use crate::identity::csrf_token_for;
use crate::{Access, AccessError, ClientInfo, Identity, Via};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::json;
use std::time::Instant;
use steward_crypto::{BearerSecret, Verification};
use steward_domain::access::check_password;
use steward_domain::{Actor, ActorKind, AuditContext, SessionId, Username};
use steward_store::access::{Grantee, NewSession, NewUser, Session, User, UserChange};
use steward_store::{read_one, write_one, WriteTx};

/// What a successful sign-in hands back: the cookie value (shown once) and
/// the session's CSRF token.
pub struct SignedIn {
    pub cookie: SecretString,
    pub csrf_token: String,
    pub session: SessionId,
    pub user: User,
}

/// The password to give the first admin: from configuration, or generated.
pub enum Bootstrap {
    Given(SecretString),
    Generate,
}

/// A new password hash and what goes with it: the rule for what a password
/// change ends, in one place for every way a password changes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PasswordSet<'a> {
    pub hash: &'a str,
    pub must_change: bool,
    /// End the user's sessions, except `keep`.
    pub revoke_sessions: bool,
    pub keep: Option<SessionId>,
    /// Revoke the user's API tokens too (account recovery: a token minted
    /// from a stolen session must not survive the reset).
    pub revoke_tokens: bool,
}

impl<'a> PasswordSet<'a> {
    /// Account recovery: every session and every API token ends.
    fn recovery(hash: &'a str, must_change: bool) -> Self {
        Self {
            hash,
            must_change,
            revoke_sessions: true,
            keep: None,
            revoke_tokens: true,
        }
    }
}

/// Applies `change` on `tx`. Every pending reset link goes too: a link sent
/// before this change must not undo it.
async fn set_password(
    tx: &mut dyn WriteTx,
    user: steward_domain::UserId,
    change: &PasswordSet<'_>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), AccessError> {
    tx.set_password(user, change.hash, change.must_change, now)
        .await?;
    if change.revoke_sessions {
        tx.delete_sessions(user, change.keep).await?;
    }
    if change.revoke_tokens {
        tx.revoke_tokens_of(user, now).await?;
    }
    tx.delete_pending_resets(user).await?;
    Ok(())
}

fn user_ctx(user: &User, client: &ClientInfo) -> AuditContext {
    AuditContext {
        actor: Actor {
            kind: ActorKind::User,
            id: Some(user.id.0),
            name: user.username.to_string(),
        },
        address: client.address,
        user_agent: client.user_agent.clone(),
    }
}

fn bounded(s: Option<String>) -> Option<String> {
    s.map(|s| s.chars().take(256).collect())
}

impl Access {
    /// Creates `admin` on first start. Returns the generated password, which
    /// the caller prints once; `None` when users exist or a password was given.
    pub async fn bootstrap(&self, how: Bootstrap) -> Result<Option<SecretString>, AccessError> {
        if read_one!(self.store, |tx| tx.count_users()).await? > 0 {
            return Ok(None);
        }
        let (password, generated) = match how {
            Bootstrap::Given(p) => (p, false),
            Bootstrap::Generate => (
                SecretString::from(
                    BearerSecret::generate("")
                        .text
                        .chars()
                        .take(24)
                        .collect::<String>(),
                ),
                true,
            ),
        };
        let hash = self.hash(&password).await?;
        let now = self.clock.now();
        let username = Username::parse("admin")?;
        let ctx = AuditContext::system("bootstrap");
        let mut tx = self.store.write().await?;
        if tx.count_users().await? > 0 {
            return Ok(None); // another start got there first
        }
        let admin = tx
            .find_role("admin")
            .await?
            .ok_or(AccessError::NotFound("role admin"))?;
        tx.create_user(
            &NewUser {
                username,
                email: None,
                password_hash: hash,
                must_change: true,
                roles: vec![admin.id],
            },
            now,
        )
        .await?;
        tx.append_audit(&ctx.record(now, "user.create", "user:admin", json!({"roles": {"from": null, "to": ["admin"]}, "must_change": {"from": null, "to": true}})))
            .await?;
        tx.commit().await?;
        Ok(generated.then_some(password))
    }

    pub(crate) async fn hash(&self, password: &SecretString) -> Result<String, AccessError> {
        self.hasher
            .hash(password)
            .await
            .map_err(|e| AccessError::Internal(e.to_string()))
    }

    pub async fn sign_in(
        &self,
        username: &str,
        password: &SecretString,
        client: &ClientInfo,
    ) -> Result<SignedIn, AccessError> {
        let started = Instant::now();
        if let Err(wait) = self.limiter.begin(username, client.address, started) {
            return Err(AccessError::TooMany {
                retry_after_secs: u64::try_from(wait.as_millis().div_ceil(1000))
                    .unwrap_or(u64::MAX)
                    .max(1),
            });
        }
        let user = if username.len() <= 64 {
            read_one!(self.store, |tx| tx.find_user(username)).await?
        } else {
            None
        };
        // Always one Argon2id verification, known user or not.
        let verdict = self
            .hasher
            .verify(user.as_ref().map(|u| u.password_hash.as_str()), password)
            .await;
        let now = self.clock.now();
        let user = match (user, verdict) {
            (Some(u), Verification::Valid { needs_rehash }) if !u.disabled => {
                if needs_rehash {
                    // Same password, new parameters: nothing else ends.
                    let hash = self.hash(password).await?;
                    write_one!(self.store, |tx| tx.set_password(
                        u.id,
                        &hash,
                        u.must_change,
                        now
                    ))
                    .await?;
                }
                u
            }
            (user, _) => {
                // The account was counted when the attempt began; now the address.
                self.limiter.failed(client.address, started);
                let anonymous = AuditContext {
                    actor: Actor::anonymous(),
                    address: client.address,
                    user_agent: client.user_agent.clone(),
                };
                // Name the account only if it exists: a password typed into
                // the user name field must not land in the log.
                let target = user.map_or_else(
                    || "user:(unknown)".to_owned(),
                    |u| format!("user:{}", u.username),
                );
                let record = anonymous.record(now, "auth.sign_in_failed", target, json!({}));
                write_one!(self.store, |tx| tx.append_audit(&record)).await?;
                return Err(AccessError::InvalidCredentials);
            }
        };
        self.limiter.succeeded(username);
        let secret = BearerSecret::generate("");
        let mut tx = self.store.write().await?;
        let session = tx
            .create_session(&NewSession {
                token_hash: secret.hash,
                user_id: user.id,
                now,
                expires_at: now + self.settings.session_lifetime,
                address: client.address.map(|a| a.to_string()),
                user_agent: bounded(client.user_agent.clone()),
            })
            .await?;
        tx.append_audit(&user_ctx(&user, client).record(
            now,
            "auth.sign_in",
            format!("user:{}", user.username),
            json!({"session": session}),
        ))
        .await?;
        tx.commit().await?;
        Ok(SignedIn {
            csrf_token: csrf_token_for(&secret.text),
            cookie: SecretString::from(secret.text),
            session,
            user,
        })
    }

    pub async fn sign_out(&self, who: &Identity, client: &ClientInfo) -> Result<(), AccessError> {
        if let Via::Session { id, .. } = &who.via {
            let audit = who.audit_context(client).record(
                self.clock.now(),
                "auth.sign_out",
                format!("user:{}", who.username),
                json!({"session": id}),
            );
            let mut tx = self.store.write().await?;
            if tx.delete_session(who.user_id, *id).await? {
                tx.append_audit(&audit).await?;
                tx.commit().await?;
            }
            self.invalidate();
        }
        Ok(())
    }

    /// Ends every session of the caller (including this one). Returns how many.
    pub async fn sign_out_everywhere(
        &self,
        who: &Identity,
        client: &ClientInfo,
    ) -> Result<u64, AccessError> {
        let ctx = who.audit_context(client);
        let now = self.clock.now();
        let target = format!("user:{}", who.username);
        let mut tx = self.store.write().await?;
        let n = tx.delete_sessions(who.user_id, None).await?;
        tx.append_audit(&ctx.record(
            now,
            "auth.sign_out_everywhere",
            target,
            json!({"sessions": n}),
        ))
        .await?;
        tx.commit().await?;
        self.invalidate();
        Ok(n)
    }

    pub async fn sessions(&self, who: &Identity) -> Result<Vec<Session>, AccessError> {
        Ok(read_one!(self.store, |tx| tx.list_sessions(who.user_id)).await?)
    }

    pub async fn revoke_session(
        &self,
        who: &Identity,
        id: SessionId,
        client: &ClientInfo,
    ) -> Result<(), AccessError> {
        let audit = who.audit_context(client).record(
            self.clock.now(),
            "auth.session_revoke",
            format!("user:{}", who.username),
            json!({"session": id}),
        );
        let mut tx = self.store.write().await?;
        if !tx.delete_session(who.user_id, id).await? {
            return Err(AccessError::NotFound("session"));
        }
        tx.append_audit(&audit).await?;
        tx.commit().await?;
        self.invalidate();
        Ok(())
    }

    /// Changes the caller's password; other sessions end, this one stays.
    pub async fn change_password(
        &self,
        who: &Identity,
        current: &SecretString,
        new: &SecretString,
        client: &ClientInfo,
    ) -> Result<(), AccessError> {
        let user = read_one!(self.store, |tx| tx.get_user(who.user_id)).await?;
        if let Err(wait) =
            self.limiter
                .begin(user.username.as_str(), client.address, Instant::now())
        {
            return Err(AccessError::TooMany {
                retry_after_secs: u64::try_from(wait.as_millis().div_ceil(1000))
                    .unwrap_or(u64::MAX)
                    .max(1),
            });
        }
        if self.hasher.verify(Some(&user.password_hash), current).await == Verification::Invalid {
            self.limiter.failed(client.address, Instant::now());
            return Err(AccessError::Invalid(steward_domain::ValidationError::new(
                "current_password",
                "is not your current password",
            )));
        }
        if new.expose_secret() == current.expose_secret() {
            return Err(steward_domain::ValidationError::new(
                "new_password",
                "must differ from the current password",
            )
            .into());
        }
        self.limiter.succeeded(user.username.as_str());
        check_password(new.expose_secret(), &[user.username.as_str(), "steward"])?;
        let hash = self.hash(new).await?;
        let keep = match &who.via {
            Via::Session { id, .. } => Some(*id),
            Via::Token { .. } => None,
        };
        let now = self.clock.now();
        let audit = who.audit_context(client).record(
            now,
            "auth.password_change",
            format!("user:{}", user.username),
            json!({"password": {"from": "[redacted]", "to": "[redacted]"}}),
        );
        let mut tx = self.store.write().await?;
        let change = PasswordSet {
            hash: &hash,
            must_change: false,
            revoke_sessions: true,
            keep,
            revoke_tokens: false,
        };
        set_password(&mut *tx, user.id, &change, now).await?;
        tx.append_audit(&audit).await?;
        tx.commit().await?;
        self.invalidate();
        Ok(())
    }

    /// Starts a reset for a user name or e-mail address. Always succeeds from
    /// the caller's point of view; the mail goes out in the background so the
    /// answer takes the same time whether the account exists or not.
    pub async fn request_reset(self: &std::sync::Arc<Self>, login: &str, client: &ClientInfo) {
        let login = login.chars().take(256).collect::<String>();
        // Bounded: a flood of requests neither mails a victim without end nor
        // piles up background work. The caller's answer is the same either way.
        if self
            .reset_limiter
            .begin(&login, client.address, Instant::now())
            .is_err()
        {
            tracing::info!("password reset request ignored: too many for this login or address");
            return;
        }
        let Ok(permit) = self.reset_slots.clone().try_acquire_owned() else {
            tracing::warn!("password reset request ignored: mail sending is saturated");
            return;
        };
        let this = self.clone();
        let client = client.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = this.send_reset(&login, &client).await {
                tracing::warn!(error = %e, "password reset mail not sent");
            }
        });
    }

    async fn send_reset(&self, login: &str, client: &ClientInfo) -> Result<(), AccessError> {
        let mut rx = self.store.read().await?;
        let user = match rx.find_user(login).await? {
            Some(u) => Some(u),
            None => rx.find_user_by_email(login).await?,
        };
        drop(rx);
        let Some(user) = user.filter(|u| !u.disabled) else {
            return Ok(());
        };
        let Some(email) = user.email.clone() else {
            tracing::info!(user = %user.username, "password reset requested for a user without an e-mail address");
            return Ok(());
        };
        let secret = BearerSecret::generate("");
        let now = self.clock.now();
        let ctx = AuditContext {
            actor: Actor::anonymous(),
            address: client.address,
            user_agent: client.user_agent.clone(),
        };
        let audit = ctx.record(
            now,
            "auth.password_reset_request",
            format!("user:{}", user.username),
            json!({}),
        );
        let mut tx = self.store.write().await?;
        tx.create_reset(&secret.hash, user.id, now, now + self.settings.reset_ttl)
            .await?;
        tx.append_audit(&audit).await?;
        tx.commit().await?;
        let base = self
            .settings
            .public_url
            .clone()
            .unwrap_or_else(|| "http://localhost:8080".into());
        let body = format!(
            "Someone asked to reset the Steward password of {user}.\n\n\
             To choose a new password, open this link within {mins} minutes:\n\n\
             {base}/reset-password#token={token}\n\n\
             or send the token to the API:\n\n\
             POST {base}/api/v1/auth/password-reset/confirm\n{{\"token\": \"{token}\", \"new_password\": \"...\"}}\n\n\
             If it was not you, ignore this message; the link works once and expires.\n",
            user = user.username,
            mins = self.settings.reset_ttl.num_minutes(),
            base = base.trim_end_matches('/'),
            token = secret.text,
        );
        Ok(self
            .mailer
            .send_mail(&email, "Reset your Steward password", &body)
            .await?)
    }

    /// Sets a new password with a reset link's token; single use, 15 minutes.
    pub async fn confirm_reset(
        &self,
        token: &str,
        new: &SecretString,
        client: &ClientInfo,
    ) -> Result<(), AccessError> {
        let now = self.clock.now();
        let invalid = || {
            AccessError::Invalid(steward_domain::ValidationError::new(
                "token",
                "the reset link is invalid, used or expired",
            ))
        };
        // The link is looked at first and used up only once the new password
        // passes the policy, so a refused password does not burn it.
        let hash_of_token = BearerSecret::hash_of(token);
        let mut rx = self.store.read().await?;
        let user_id = rx
            .reset_user(&hash_of_token, now)
            .await?
            .ok_or_else(invalid)?;
        let user = rx.get_user(user_id).await?;
        drop(rx);
        check_password(new.expose_secret(), &[user.username.as_str(), "steward"])?;
        let hash = self.hash(new).await?;
        let ctx = AuditContext {
            actor: Actor::anonymous(),
            address: client.address,
            user_agent: client.user_agent.clone(),
        };
        let audit = ctx.record(
            now,
            "auth.password_reset",
            format!("user:{}", user.username),
            json!({"password": {"from": "[redacted]", "to": "[redacted]"}}),
        );
        let mut tx = self.store.write().await?;
        // Used up on the transaction that sets the password: one use, even
        // when two requests carry the same link at once.
        if tx.consume_reset(&hash_of_token, now).await? != Some(user_id) {
            return Err(invalid());
        }
        set_password(&mut *tx, user.id, &PasswordSet::recovery(&hash, false), now).await?;
        tx.append_audit(&audit).await?;
        tx.commit().await?;
        self.invalidate();
        self.limiter.succeeded(user.username.as_str());
        Ok(())
    }

    /// `steward admin reset-password`: a new one-time password, must change,
    /// every session ended. Runs with the server stopped.
    pub async fn admin_reset_password(&self, username: &str) -> Result<SecretString, AccessError> {
        let user = read_one!(self.store, |tx| tx.find_user(username))
            .await?
            .ok_or(AccessError::NotFound("user"))?;
        let password = SecretString::from(
            BearerSecret::generate("")
                .text
                .chars()
                .take(24)
                .collect::<String>(),
        );
        let hash = self.hash(&password).await?;
        let now = self.clock.now();
        let audit = AuditContext::system("cli admin reset-password").record(now, "auth.password_reset", format!("user:{}", user.username), json!({"password": {"from": "[redacted]", "to": "[redacted]"}, "must_change": {"from": user.must_change, "to": true}}));
        let mut tx = self.store.write().await?;
        set_password(&mut *tx, user.id, &PasswordSet::recovery(&hash, true), now).await?;
        tx.append_audit(&audit).await?;
        tx.commit().await?;
        self.invalidate();
        Ok(password)
    }

    pub async fn users(&self) -> Result<Vec<(User, Vec<String>)>, AccessError> {
        let mut out = vec![];
        let mut rx = self.store.read().await?;
        for u in rx.list_users().await? {
            let roles = rx.granted_roles(Grantee::User(u.id)).await?;
            out.push((u, roles.into_iter().map(|r| r.name).collect()));
        }
        Ok(out)
    }

    pub async fn user(&self, name: &str) -> Result<(User, Vec<String>), AccessError> {
        let mut rx = self.store.read().await?;
        let u = rx
            .find_user(name)
            .await?
            .ok_or(AccessError::NotFound("user"))?;
        let roles = rx.granted_roles(Grantee::User(u.id)).await?;
        Ok((u, roles.into_iter().map(|r| r.name).collect()))
    }

    /// Creates a user with an initial password they must change at first sign-in.
    pub async fn create_user(
        &self,
        who: &Identity,
        username: Username,
        email: Option<String>,
        password: &SecretString,
        roles: &[String],
        client: &ClientInfo,
    ) -> Result<User, AccessError> {
        if let Some(e) = &email {
            check_email(e)?;
        }
        check_password(password.expose_secret(), &[username.as_str(), "steward"])
            .map_err(|e| steward_domain::ValidationError::new("password", e.message))?;
        let hash = self.hash(password).await?;
        let mut tx = self.store.write().await?;
        let granted = Self::resolve_roles(&mut *tx, roles).await?;
        crate::grants::within(who, crate::grants::union(&granted), "the new user's roles")?;
        let role_ids = granted.iter().map(|r| r.id).collect();
        let now = self.clock.now();
        let audit = who.audit_context(client).record(
            now,
            "user.create",
            format!("user:{username}"),
            json!({"email": {"from": null, "to": email}, "roles": {"from": null, "to": roles}}),
        );
        let user = tx
            .create_user(
                &NewUser {
                    username,
                    email,
                    password_hash: hash,
                    must_change: true,
                    roles: role_ids,
                },
                now,
            )
            .await?;
        tx.append_audit(&audit).await?;
        tx.commit().await?;
        self.invalidate();
        Ok(user)
    }

    pub async fn update_user(
        &self,
        who: &Identity,
        name: &str,
        change: UserChange,
        client: &ClientInfo,
    ) -> Result<User, AccessError> {
        if let Some(Some(e)) = &change.email {
            check_email(e)?;
        }
        let mut tx = self.store.write().await?;
        let user = tx
            .find_user(name)
            .await?
            .ok_or(AccessError::NotFound("user"))?;
        Self::not_above(&mut *tx, who, user.id, "this user").await?;
        if change.disabled == Some(true) {
            Self::keeps_a_manager(&mut *tx, who, crate::grants::Change::DisableUser(user.id))
                .await?;
        }
        if change.disabled == Some(true) && user.id == who.user_id {
            return Err(AccessError::Conflict(
                "you cannot disable your own account".into(),
            ));
        }
        let mut diff = serde_json::Map::new();
        if let Some(e) = &change.email {
            diff.insert("email".into(), json!({"from": user.email, "to": e}));
        }
        if let Some(d) = change.disabled {
            diff.insert("disabled".into(), json!({"from": user.disabled, "to": d}));
        }
        let audit = who.audit_context(client).record(
            self.clock.now(),
            "user.update",
            format!("user:{}", user.username),
            serde_json::Value::Object(diff),
        );
        let updated = tx.update_user(user.id, &change, self.clock.now()).await?;
        if change.disabled == Some(true) {
            // A disabled account is signed out everywhere at once.
            tx.delete_sessions(user.id, None).await?;
        }
        tx.append_audit(&audit).await?;
        tx.commit().await?;
        self.invalidate();
        Ok(updated)
    }

    pub async fn delete_user(
        &self,
        who: &Identity,
        name: &str,
        client: &ClientInfo,
    ) -> Result<(), AccessError> {
        let mut tx = self.store.write().await?;
        let user = tx
            .find_user(name)
            .await?
            .ok_or(AccessError::NotFound("user"))?;
        if user.id == who.user_id {
            return Err(AccessError::Conflict(
                "you cannot delete your own account".into(),
            ));
        }
        Self::not_above(&mut *tx, who, user.id, "this user").await?;
        Self::keeps_a_manager(&mut *tx, who, crate::grants::Change::RemoveUser(user.id)).await?;
        let audit = who.audit_context(client).record(
            self.clock.now(),
            "user.delete",
            format!("user:{}", user.username),
            json!({}),
        );
        tx.delete_user(user.id).await?;
        tx.append_audit(&audit).await?;
        tx.commit().await?;
        self.invalidate();
        Ok(())
    }
}

fn check_email(e: &str) -> Result<(), steward_domain::ValidationError> {
    let ok = e.len() <= 254
        && e.split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
        && !e
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';'));
    if ok {
        Ok(())
    } else {
        Err(steward_domain::ValidationError::new(
            "email",
            "is not an e-mail address",
        ))
    }
}

impl Access {
    /// Deletes sessions past their idle or absolute limit.
    pub async fn sweep_sessions(&self) -> Result<u64, AccessError> {
        let now = self.clock.now();
        let idle_before = now - self.settings.session_idle;
        Ok(write_one!(self.store, |tx| tx
            .delete_expired_sessions(idle_before, now))
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AccessSettings;
    use argon2::password_hash::{PasswordHasher as _, SaltString};
    use std::sync::Arc;
    use steward_clock::SystemClock;
    use steward_store::{SqliteStore, Store as _};

    async fn access() -> (tempfile::TempDir, SqliteStore, Arc<Access>) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_in_memory().await.unwrap();
        let ring = steward_crypto::Keyring::load_or_create(&dir.path().join("key"), true).unwrap();
        let clock: Arc<dyn steward_clock::Clock> = Arc::new(SystemClock);
        let vault = steward_vault::Vault::new(ring, Arc::new(store.clone()), clock.clone());
        let a = Access::new(
            Arc::new(store.clone()),
            steward_crypto::PasswordHasher::new(2).unwrap(),
            clock,
            AccessSettings::default(),
            steward_notify::Mailer::new(vault),
        );
        (dir, store, a)
    }

    async fn admin_row(store: &SqliteStore) -> User {
        let mut rx = store.read().await.unwrap();
        rx.find_user("admin").await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn sign_in_rehashes_a_password_stored_with_old_parameters() {
        let (_d, store, a) = access().await;
        let pw = SecretString::from("a perfectly fine old password");
        assert!(a
            .bootstrap(Bootstrap::Given(pw.clone()))
            .await
            .unwrap()
            .is_none());
        assert!(
            a.bootstrap(Bootstrap::Generate).await.unwrap().is_none(),
            "only once"
        );
        let admin = admin_row(&store).await;
        assert!(admin.must_change);
        // As an older Steward (or another tool) would have stored it.
        let weak = argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(8 * 1024, 1, 1, Some(32)).unwrap(),
        )
        .hash_password(
            pw.expose_secret().as_bytes(),
            &SaltString::encode_b64(b"0123456789abcdef").unwrap(),
        )
        .unwrap()
        .to_string();
        let mut tx = store.write().await.unwrap();
        tx.set_password(admin.id, &weak, true, chrono::DateTime::UNIX_EPOCH)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let signed = a
            .sign_in("admin", &pw, &ClientInfo::default())
            .await
            .unwrap();
        assert!(signed.user.must_change, "the flag survives the rehash");
        let after = admin_row(&store).await.password_hash;
        assert!(
            after.starts_with("$argon2id$v=19$m=65536,t=3,p=1$"),
            "{after}"
        );
        assert!(a
            .sign_in("admin", &pw, &ClientInfo::default())
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn generated_bootstrap_password_is_long_and_works() {
        let (_d, _store, a) = access().await;
        let pw = a.bootstrap(Bootstrap::Generate).await.unwrap().unwrap();
        assert!(pw.expose_secret().len() >= 24);
        assert!(a
            .sign_in("admin", &pw, &ClientInfo::default())
            .await
            .is_ok());
        assert!(matches!(
            a.sign_in("admin", &SecretString::from("nope"), &ClientInfo::default())
                .await,
            Err(AccessError::InvalidCredentials)
        ));
    }
}
