//! API tokens: made for a user, scoped no wider than that user, shown once.

use crate::identity::TOKEN_PREFIX;
use crate::{Access, AccessError, ClientInfo, Identity};
use chrono::{DateTime, Utc};
use serde_json::json;
use steward_crypto::BearerSecret;
use steward_domain::{Module, Permission, PermissionSet, TokenId, ValidationError};
use steward_store::access::{ApiToken, NewToken};
use steward_store::read_one;

impl Access {
    /// Returns the token row and its secret text (shown once, never stored).
    pub async fn create_token(
        &self,
        who: &Identity,
        name: &str,
        scopes: Option<PermissionSet>,
        expires_at: Option<DateTime<Utc>>,
        client: &ClientInfo,
    ) -> Result<(ApiToken, String), AccessError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(ValidationError::new("name", "must be 1 to 100 characters").into());
        }
        let scopes = scopes.unwrap_or(who.permissions);
        if !scopes.is_subset_of(who.permissions) {
            let extra: Vec<String> = scopes
                .to_strings()
                .into_iter()
                .filter(|s| s.parse::<Permission>().is_ok_and(|p| !who.allows(p)))
                .collect();
            return Err(ValidationError::new(
                "scopes",
                format!("wider than your own permissions: {}", extra.join(", ")),
            )
            .into());
        }
        if scopes.is_empty() {
            return Err(
                ValidationError::new("scopes", "a token needs at least one permission").into(),
            );
        }
        let now = self.clock.now();
        let mut expires_at = expires_at;
        if let crate::Via::Token {
            expires_at: Some(parent),
            ..
        } = &who.via
        {
            match expires_at {
                None => expires_at = Some(*parent),
                Some(e) if e > *parent => {
                    return Err(ValidationError::new(
                        "expires_at",
                        "is later than the expiry of the token making it",
                    )
                    .into());
                }
                Some(_) => {}
            }
        }
        if expires_at.is_some_and(|e| e <= now) {
            return Err(ValidationError::new("expires_at", "is in the past").into());
        }
        let secret = BearerSecret::generate(TOKEN_PREFIX);
        let mut audit = who.audit_context(client).record(
            now,
            "token.create",
            "token",
            json!({"name": {"from": null, "to": name}, "owner": {"from": null, "to": who.username}, "scopes": {"from": null, "to": scopes}, "expires_at": {"from": null, "to": expires_at}}),
        );
        let mut tx = self.store.write().await?;
        let token = tx
            .create_token(&NewToken {
                token_hash: secret.hash,
                hint: secret.text.chars().take(TOKEN_PREFIX.len() + 4).collect(),
                user_id: who.user_id,
                name: name.to_owned(),
                scopes,
                created_at: now,
                expires_at,
            })
            .await?;
        // The record names the token by the id it was just given.
        audit.target = format!("token:{}", token.id);
        tx.append_audit(&audit).await?;
        tx.commit().await?;
        Ok((token, secret.text))
    }

    /// The caller's tokens; with `users:read`, everyone's.
    pub async fn tokens(&self, who: &Identity, all: bool) -> Result<Vec<ApiToken>, AccessError> {
        let everyone = all && who.allows(Permission::read(Module::Users));
        let owner = (!everyone).then_some(who.user_id);
        Ok(read_one!(self.store, |tx| tx.list_tokens(owner)).await?)
    }

    /// Revokes one of the caller's tokens, or anyone's with `users:write`.
    pub async fn revoke_token(
        &self,
        who: &Identity,
        id: TokenId,
        client: &ClientInfo,
    ) -> Result<(), AccessError> {
        let mut tx = self.store.write().await?;
        let token = tx.get_token(id).await?;
        if token.user_id != who.user_id {
            if !who.allows(Permission::write(Module::Users)) {
                return Err(AccessError::NotFound("token"));
            }
            Self::not_above(&mut *tx, who, token.user_id, "the token owner").await?;
        }
        let audit = who.audit_context(client).record(
            self.clock.now(),
            "token.revoke",
            format!("token:{id}"),
            json!({"name": token.name}),
        );
        if !tx.revoke_token(id, self.clock.now()).await? {
            return Err(AccessError::Conflict(format!(
                "token {id} is already revoked"
            )));
        }
        tx.append_audit(&audit).await?;
        tx.commit().await?;
        self.invalidate();
        Ok(())
    }
}
