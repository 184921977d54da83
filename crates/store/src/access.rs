//! Accounts, roles, groups, sessions, API tokens and reset links: rows and the
//! [`AccessStore`] trait. Mutations that an operator makes carry their audit
//! record and write it in the same transaction.

use crate::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use steward_domain::{
    AuditRecord, GroupId, PermissionSet, RoleId, SessionId, TokenId, UserId, Username,
};

#[derive(Debug, Clone)]
pub struct User {
    pub id: UserId,
    pub username: Username,
    pub email: Option<String>,
    pub password_hash: String,
    pub must_change: bool,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: Username,
    pub email: Option<String>,
    pub password_hash: String,
    pub must_change: bool,
    pub roles: Vec<RoleId>,
}

#[derive(Debug, Clone, Default)]
pub struct UserChange {
    pub email: Option<Option<String>>,
    pub disabled: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct Role {
    pub id: RoleId,
    pub name: String,
    pub builtin: bool,
    /// For custom roles; built-in roles' sets come from `BuiltinRole`.
    pub permissions: PermissionSet,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub id: GroupId,
    pub name: String,
    pub members: Vec<Username>,
    pub roles: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Session {
    pub id: SessionId,
    pub user_id: UserId,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub address: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewSession {
    pub token_hash: [u8; 32],
    pub user_id: UserId,
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub address: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ApiToken {
    pub id: TokenId,
    pub user_id: UserId,
    pub name: String,
    pub hint: String,
    pub scopes: PermissionSet,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct NewToken {
    pub token_hash: [u8; 32],
    pub hint: String,
    pub user_id: UserId,
    pub name: String,
    pub scopes: PermissionSet,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A new password hash and what goes with it.
#[derive(Debug, Clone, Copy)]
pub struct PasswordSet<'a> {
    pub hash: &'a str,
    pub must_change: bool,
    /// End the user's sessions, except `keep`.
    pub revoke_sessions: bool,
    pub keep: Option<SessionId>,
    /// Revoke the user's API tokens too (account recovery: a token minted
    /// from a stolen session must not survive the reset).
    pub revoke_tokens: bool,
}

/// Who a role is granted to.
#[derive(Debug, Clone, Copy)]
pub enum Grantee {
    User(UserId),
    Group(GroupId),
}

#[async_trait]
pub trait AccessStore: Send + Sync + 'static {
    async fn count_users(&self) -> Result<i64>;
    async fn create_user(
        &self,
        user: &NewUser,
        now: DateTime<Utc>,
        audit: &AuditRecord,
    ) -> Result<User>;
    async fn get_user(&self, id: UserId) -> Result<User>;
    async fn find_user(&self, username: &str) -> Result<Option<User>>;
    async fn find_user_by_email(&self, email: &str) -> Result<Option<User>>;
    async fn list_users(&self) -> Result<Vec<User>>;
    async fn update_user(
        &self,
        id: UserId,
        change: &UserChange,
        now: DateTime<Utc>,
        audit: &AuditRecord,
    ) -> Result<User>;
    async fn delete_user(&self, id: UserId, audit: &AuditRecord) -> Result<()>;
    /// Sets the password hash and must-change flag; deletes the user's sessions
    /// except `keep` when `revoke_sessions`, revokes tokens when asked, and
    /// always deletes the user's open reset links; audits when a record is
    /// given (a transparent rehash is not an event).
    async fn set_password(
        &self,
        id: UserId,
        change: &PasswordSet<'_>,
        now: DateTime<Utc>,
        audit: Option<&AuditRecord>,
    ) -> Result<()>;

    async fn list_roles(&self) -> Result<Vec<Role>>;
    async fn find_role(&self, name: &str) -> Result<Option<Role>>;
    async fn create_role(
        &self,
        name: &str,
        permissions: PermissionSet,
        now: DateTime<Utc>,
        audit: &AuditRecord,
    ) -> Result<Role>;
    async fn delete_role(&self, id: RoleId, audit: &AuditRecord) -> Result<()>;
    /// Names of the roles granted directly.
    async fn granted_roles(&self, to: Grantee) -> Result<Vec<Role>>;
    /// Replaces the roles granted directly.
    async fn set_grants(&self, to: Grantee, roles: &[RoleId], audit: &AuditRecord) -> Result<()>;
    /// Every role the user holds, directly or through a group.
    async fn effective_roles(&self, user: UserId) -> Result<Vec<Role>>;

    async fn list_groups(&self) -> Result<Vec<Group>>;
    async fn find_group(&self, name: &str) -> Result<Option<Group>>;
    async fn create_group(
        &self,
        name: &str,
        now: DateTime<Utc>,
        audit: &AuditRecord,
    ) -> Result<Group>;
    async fn delete_group(&self, id: GroupId, audit: &AuditRecord) -> Result<()>;
    async fn set_members(
        &self,
        group: GroupId,
        users: &[UserId],
        audit: &AuditRecord,
    ) -> Result<()>;

    async fn create_session(&self, s: &NewSession) -> Result<SessionId>;
    async fn find_session(&self, token_hash: &[u8; 32]) -> Result<Option<Session>>;
    async fn touch_session(&self, id: SessionId, now: DateTime<Utc>) -> Result<()>;
    async fn list_sessions(&self, user: UserId) -> Result<Vec<Session>>;
    /// Deletes one session of `user`, appending `audit` (if any: an expired
    /// session's removal is housekeeping) in the same transaction; false,
    /// and nothing appended, when there was none.
    async fn delete_session(
        &self,
        user: UserId,
        id: SessionId,
        audit: Option<&AuditRecord>,
    ) -> Result<bool>;
    /// Deletes all of `user`'s sessions but `keep` and appends the record
    /// `audit` makes of how many, in one transaction; returns how many.
    async fn delete_sessions(
        &self,
        user: UserId,
        keep: Option<SessionId>,
        audit: &(dyn Fn(u64) -> AuditRecord + Sync),
    ) -> Result<u64>;
    async fn delete_expired_sessions(
        &self,
        idle_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64>;

    async fn create_token(&self, t: &NewToken, audit: &AuditRecord) -> Result<ApiToken>;
    async fn find_token(&self, token_hash: &[u8; 32]) -> Result<Option<ApiToken>>;
    async fn touch_token(&self, id: TokenId, now: DateTime<Utc>) -> Result<()>;
    async fn list_tokens(&self, user: Option<UserId>) -> Result<Vec<ApiToken>>;
    async fn get_token(&self, id: TokenId) -> Result<ApiToken>;
    async fn revoke_token(
        &self,
        id: TokenId,
        now: DateTime<Utc>,
        audit: &AuditRecord,
    ) -> Result<bool>;

    /// Stores a reset link (and drops expired ones), appending `audit`.
    async fn create_reset(
        &self,
        token_hash: &[u8; 32],
        user: UserId,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        audit: &AuditRecord,
    ) -> Result<()>;
    /// The user of a live (unused, unexpired) link, without using it up.
    async fn reset_user(&self, token_hash: &[u8; 32], now: DateTime<Utc>)
        -> Result<Option<UserId>>;
    /// Marks the link used and returns its user, if it exists, is unused and
    /// has not expired: single use, atomically.
    async fn consume_reset(
        &self,
        token_hash: &[u8; 32],
        now: DateTime<Utc>,
    ) -> Result<Option<UserId>>;
}
