//! Who is calling: resolving a session cookie or a bearer token into an
//! [`Identity`] with its effective permissions. The permission cache lives
//! here and is dropped whenever a grant, role, group or user changes.

use crate::{Access, AccessError, ClientInfo};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::RwLock;
use steward_crypto::token::{constant_time_eq, derive};
use steward_crypto::BearerSecret;
use steward_domain::{
    Actor, ActorKind, AuditContext, BuiltinRole, Permission, PermissionSet, SessionId, TokenId,
    UserId, Username,
};
use steward_store::{read_one, write_one};

/// API tokens start with this, so secret scanners can recognise them.
pub const TOKEN_PREFIX: &str = "stw_";

/// How the caller proved who they are.
#[derive(Debug, Clone)]
pub enum Via {
    Session {
        id: SessionId,
        csrf_token: String,
    },
    Token {
        id: TokenId,
        /// A token never makes a token that outlives it.
        expires_at: Option<DateTime<Utc>>,
    },
}

#[derive(Debug, Clone)]
pub struct Identity {
    pub user_id: UserId,
    pub username: Username,
    pub via: Via,
    /// Effective permissions (a token's scopes already intersected).
    pub permissions: PermissionSet,
    pub must_change_password: bool,
}

impl Identity {
    pub fn allows(&self, p: Permission) -> bool {
        self.permissions.allows(p)
    }

    pub fn actor(&self) -> Actor {
        match &self.via {
            Via::Session { .. } => Actor {
                kind: ActorKind::User,
                id: Some(self.user_id.0),
                name: self.username.to_string(),
            },
            Via::Token { id, .. } => Actor {
                kind: ActorKind::Token,
                id: Some(id.0),
                name: self.username.to_string(),
            },
        }
    }

    pub fn audit_context(&self, client: &ClientInfo) -> AuditContext {
        AuditContext {
            actor: self.actor(),
            address: client.address,
            user_agent: client.user_agent.clone(),
        }
    }

    /// Whether the presented CSRF token is this session's. Tokens need none.
    pub fn csrf_ok(&self, presented: Option<&str>) -> bool {
        match &self.via {
            Via::Token { .. } => true,
            Via::Session { csrf_token, .. } => {
                presented.is_some_and(|p| constant_time_eq(p.as_bytes(), csrf_token.as_bytes()))
            }
        }
    }
}

/// user → effective permissions, computed from roles on first use.
///
/// The generation counter closes a race: a lookup that read the roles before
/// a grant changed must not put its stale answer in the cache after the clear.
#[derive(Default)]
pub struct PermissionCache {
    map: RwLock<HashMap<UserId, PermissionSet>>,
    generation: std::sync::atomic::AtomicU64,
}

impl PermissionCache {
    pub fn clear(&self) {
        if let Ok(mut m) = self.map.write() {
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            m.clear();
        }
    }

    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Last-seen times are written at most this often per session or token, so a
/// busy client does not turn every read into a write.
const TOUCH_EVERY_SECS: i64 = 60;

/// Resolved identities by credential hash, so an authenticated request costs
/// no database round trip. Every change to sessions, tokens, users or grants
/// clears it (all such changes go through [`Access`] in this process), and an
/// entry is re-read from the database after a minute in any case. Expiry and
/// the idle limit are checked on every hit.
#[derive(Default)]
pub struct IdentityCache {
    map: std::sync::Mutex<HashMap<[u8; 32], Cached>>,
    generation: std::sync::atomic::AtomicU64,
}

#[derive(Clone)]
struct Cached {
    identity: Identity,
    /// Token expiry or the session's absolute end.
    expires_at: Option<DateTime<Utc>>,
    /// Sessions only: the sliding idle limit applies.
    idle_limited: bool,
    last_seen: DateTime<Utc>,
    /// When last_seen was last written to the database.
    touched: DateTime<Utc>,
    loaded: DateTime<Utc>,
}

const CACHE_REFRESH_SECS: i64 = 60;
const CACHE_MAX: usize = 10_000;

impl IdentityCache {
    pub fn clear(&self) {
        if let Ok(mut m) = self.map.lock() {
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            m.clear();
        }
    }

    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A live cached identity, and whether its last-seen time is due to be written.
    fn hit(
        &self,
        key: &[u8; 32],
        now: DateTime<Utc>,
        idle: chrono::Duration,
    ) -> Option<(Identity, bool)> {
        let mut m = self.map.lock().ok()?;
        let c = m.get_mut(key)?;
        let stale = (now - c.loaded).num_seconds() >= CACHE_REFRESH_SECS
            || c.expires_at.is_some_and(|e| e <= now)
            || (c.idle_limited && c.last_seen + idle <= now);
        if stale {
            // The slow path decides (and deletes what has expired).
            m.remove(key);
            return None;
        }
        c.last_seen = now;
        let touch = (now - c.touched).num_seconds() >= TOUCH_EVERY_SECS;
        if touch {
            c.touched = now;
        }
        Some((c.identity.clone(), touch))
    }

    fn put(&self, key: [u8; 32], entry: Cached, generation: u64) {
        if let Ok(mut m) = self.map.lock() {
            if self.generation() != generation {
                return;
            }
            if m.len() >= CACHE_MAX {
                m.clear();
            }
            m.insert(key, entry);
        }
    }
}

impl Access {
    pub async fn permissions_of(&self, user: UserId) -> Result<PermissionSet, AccessError> {
        if let Some(p) = self
            .cache
            .map
            .read()
            .ok()
            .and_then(|m| m.get(&user).copied())
        {
            return Ok(p);
        }
        let generation = self.cache.generation();
        let roles = read_one!(self.store, |tx| tx.effective_roles(user)).await?;
        let set = roles.iter().fold(PermissionSet::EMPTY, |acc, r| {
            let p = if r.builtin {
                BuiltinRole::from_name(&r.name)
                    .map_or(PermissionSet::EMPTY, BuiltinRole::permissions)
            } else {
                r.permissions
            };
            acc.union(p)
        });
        if let Ok(mut m) = self.cache.map.write() {
            if self.cache.generation() == generation {
                m.insert(user, set);
            }
        }
        Ok(set)
    }

    /// The identity behind a session cookie value, if it is live.
    pub async fn authenticate_session(
        &self,
        cookie: &str,
    ) -> Result<Option<Identity>, AccessError> {
        let hash = BearerSecret::hash_of(cookie);
        let now = self.clock.now();
        if let Some((identity, touch)) = self.identities.hit(&hash, now, self.settings.session_idle)
        {
            if let (true, Via::Session { id, .. }) = (touch, &identity.via) {
                write_one!(self.store, |tx| tx.touch_session(*id, now)).await?;
            }
            return Ok(Some(identity));
        }
        let generation = self.identities.generation();
        let mut rx = self.store.read().await?;
        let Some(session) = rx.find_session(&hash).await? else {
            return Ok(None);
        };
        let user = rx.get_user(session.user_id).await?;
        drop(rx);
        if session.expires_at <= now || session.last_seen_at + self.settings.session_idle <= now {
            write_one!(self.store, |tx| tx
                .delete_session(session.user_id, session.id))
            .await?;
            return Ok(None);
        }
        if user.disabled {
            return Ok(None);
        }
        if (now - session.last_seen_at).num_seconds() >= TOUCH_EVERY_SECS {
            write_one!(self.store, |tx| tx.touch_session(session.id, now)).await?;
        }
        let identity = Identity {
            user_id: user.id,
            username: user.username,
            via: Via::Session {
                id: session.id,
                csrf_token: csrf_token_for(cookie),
            },
            permissions: self.permissions_of(user.id).await?,
            must_change_password: user.must_change,
        };
        self.identities.put(
            hash,
            Cached {
                identity: identity.clone(),
                expires_at: Some(session.expires_at),
                idle_limited: true,
                last_seen: now,
                touched: now,
                loaded: now,
            },
            generation,
        );
        Ok(Some(identity))
    }

    /// The identity behind a bearer token, if it is live.
    pub async fn authenticate_token(
        &self,
        presented: &str,
    ) -> Result<Option<Identity>, AccessError> {
        if !presented.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        let hash = BearerSecret::hash_of(presented);
        let now = self.clock.now();
        if let Some((identity, touch)) = self.identities.hit(&hash, now, self.settings.session_idle)
        {
            if let (true, Via::Token { id, .. }) = (touch, &identity.via) {
                write_one!(self.store, |tx| tx.touch_token(*id, now)).await?;
            }
            return Ok(Some(identity));
        }
        let generation = self.identities.generation();
        let mut rx = self.store.read().await?;
        let Some(token) = rx.find_token(&hash).await? else {
            return Ok(None);
        };
        if token.revoked_at.is_some() || token.expires_at.is_some_and(|e| e <= now) {
            return Ok(None);
        }
        let user = rx.get_user(token.user_id).await?;
        drop(rx);
        if user.disabled {
            return Ok(None);
        }
        if token
            .last_used_at
            .is_none_or(|t: DateTime<Utc>| (now - t).num_seconds() >= TOUCH_EVERY_SECS)
        {
            write_one!(self.store, |tx| tx.touch_token(token.id, now)).await?;
        }
        let owner = self.permissions_of(user.id).await?;
        let identity = Identity {
            user_id: user.id,
            username: user.username,
            via: Via::Token {
                id: token.id,
                expires_at: token.expires_at,
            },
            // Never wider than the owner has now, even if the owner lost a role.
            permissions: token.scopes.intersection(owner),
            must_change_password: user.must_change,
        };
        self.identities.put(
            hash,
            Cached {
                identity: identity.clone(),
                expires_at: token.expires_at,
                idle_limited: false,
                last_seen: now,
                touched: now,
                loaded: now,
            },
            generation,
        );
        Ok(Some(identity))
    }
}

/// The CSRF token of a session: derived from the cookie's secret, so it needs
/// no storage and the stored session hash does not reveal it.
pub fn csrf_token_for(cookie: &str) -> String {
    derive("csrf", cookie)
}
