//! Accounts, roles, groups, sessions, API tokens and reset links: the entities
//! and what a transaction can read ([`AccessReads`]) and change
//! ([`AccessWrites`]). Rules (who may do what, what a password change also
//! ends) live in the `access` service; these are the area's data operations.

use crate::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
pub use steward_domain::entity::{ApiToken, Group, Role, Session, User};
use steward_domain::{GroupId, PermissionSet, RoleId, SessionId, TokenId, UserId, Username};

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
pub struct NewSession {
    pub token_hash: [u8; 32],
    pub user_id: UserId,
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub address: Option<String>,
    pub user_agent: Option<String>,
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

/// Who a role is granted to.
#[derive(Debug, Clone, Copy)]
pub enum Grantee {
    User(UserId),
    Group(GroupId),
}

#[async_trait]
pub trait AccessReads: Send {
    async fn count_users(&mut self) -> Result<i64>;
    async fn get_user(&mut self, id: UserId) -> Result<User>;
    async fn find_user(&mut self, username: &str) -> Result<Option<User>>;
    async fn find_user_by_email(&mut self, email: &str) -> Result<Option<User>>;
    async fn list_users(&mut self) -> Result<Vec<User>>;
    async fn list_roles(&mut self) -> Result<Vec<Role>>;
    async fn find_role(&mut self, name: &str) -> Result<Option<Role>>;
    /// Roles granted directly to a user or a group.
    async fn granted_roles(&mut self, to: Grantee) -> Result<Vec<Role>>;
    /// A user's roles, direct and through groups.
    async fn effective_roles(&mut self, user: UserId) -> Result<Vec<Role>>;
    async fn list_groups(&mut self) -> Result<Vec<Group>>;
    async fn find_group(&mut self, name: &str) -> Result<Option<Group>>;
    async fn find_session(&mut self, token_hash: &[u8; 32]) -> Result<Option<Session>>;
    /// Newest first.
    async fn list_sessions(&mut self, user: UserId) -> Result<Vec<Session>>;
    async fn find_token(&mut self, token_hash: &[u8; 32]) -> Result<Option<ApiToken>>;
    /// Newest first; every user's when `user` is `None`.
    async fn list_tokens(&mut self, user: Option<UserId>) -> Result<Vec<ApiToken>>;
    async fn get_token(&mut self, id: TokenId) -> Result<ApiToken>;
    /// The user a reset link that is unused and unexpired at `now` belongs to.
    async fn reset_user(
        &mut self,
        token_hash: &[u8; 32],
        now: DateTime<Utc>,
    ) -> Result<Option<UserId>>;
}

#[async_trait]
pub trait AccessWrites: Send {
    /// Creates the user with its direct role grants.
    async fn create_user(&mut self, u: &NewUser, now: DateTime<Utc>) -> Result<User>;
    async fn update_user(&mut self, id: UserId, c: &UserChange, now: DateTime<Utc>)
        -> Result<User>;
    async fn delete_user(&mut self, id: UserId) -> Result<()>;
    /// Replaces the password hash only; what else a change ends is the service's rule.
    async fn set_password(
        &mut self,
        id: UserId,
        hash: &str,
        must_change: bool,
        now: DateTime<Utc>,
    ) -> Result<()>;
    async fn create_role(
        &mut self,
        name: &str,
        permissions: PermissionSet,
        now: DateTime<Utc>,
    ) -> Result<Role>;
    /// Custom roles only; a built-in role is `NotFound`.
    async fn delete_role(&mut self, id: RoleId) -> Result<()>;
    /// Replaces the roles granted directly to `to`.
    async fn set_grants(&mut self, to: Grantee, roles: &[RoleId]) -> Result<()>;
    async fn create_group(&mut self, name: &str, now: DateTime<Utc>) -> Result<Group>;
    async fn delete_group(&mut self, id: GroupId) -> Result<()>;
    async fn set_members(&mut self, group: GroupId, users: &[UserId]) -> Result<()>;
    async fn create_session(&mut self, s: &NewSession) -> Result<SessionId>;
    async fn touch_session(&mut self, id: SessionId, now: DateTime<Utc>) -> Result<()>;
    /// Ends one of `user`'s sessions; false when it was not theirs or is gone.
    async fn delete_session(&mut self, user: UserId, id: SessionId) -> Result<bool>;
    /// Ends every session of `user` but `keep`; returns how many ended.
    async fn delete_sessions(&mut self, user: UserId, keep: Option<SessionId>) -> Result<u64>;
    async fn delete_expired_sessions(
        &mut self,
        idle_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64>;
    async fn create_token(&mut self, t: &NewToken) -> Result<ApiToken>;
    async fn touch_token(&mut self, id: TokenId, now: DateTime<Utc>) -> Result<()>;
    /// False when it was already revoked.
    async fn revoke_token(&mut self, id: TokenId, now: DateTime<Utc>) -> Result<bool>;
    /// Revokes every live token of `user`; returns how many.
    async fn revoke_tokens_of(&mut self, user: UserId, now: DateTime<Utc>) -> Result<u64>;
    /// Stores a reset link and forgets links that expired before `now`.
    async fn create_reset(
        &mut self,
        token_hash: &[u8; 32],
        user: UserId,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<()>;
    /// Marks a valid link used; returns its user, or `None` if it was not valid.
    async fn consume_reset(
        &mut self,
        token_hash: &[u8; 32],
        now: DateTime<Utc>,
    ) -> Result<Option<UserId>>;
    /// Forgets every unused link of `user`.
    async fn delete_pending_resets(&mut self, user: UserId) -> Result<u64>;
}
