//! Accounts, roles, groups, sessions, tokens and reset links.

use super::{backend, classify, from_ms, ms, not_found_if_zero, opt_ms, DbRow, Tx};
use crate::access::*;
use crate::{Result, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use steward_domain::{
    BuiltinRole, GroupId, PermissionSet, RoleId, SessionId, TokenId, UserId, Username,
};

fn user_from_row(row: &DbRow) -> Result<User> {
    let name: String = row.try_get("username").map_err(backend)?;
    Ok(User {
        id: UserId(row.try_get("id").map_err(backend)?),
        username: Username::parse(&name).map_err(backend)?,
        email: row.try_get("email").map_err(backend)?,
        password_hash: row.try_get("password_hash").map_err(backend)?,
        must_change: row.try_get::<bool, _>("must_change").map_err(backend)?,
        disabled: row.try_get::<bool, _>("disabled").map_err(backend)?,
        created_at: from_ms(row.try_get("created_at").map_err(backend)?),
        updated_at: from_ms(row.try_get("updated_at").map_err(backend)?),
    })
}

fn role_from_row(row: &DbRow) -> Result<Role> {
    let name: String = row.try_get("name").map_err(backend)?;
    let builtin = row.try_get::<bool, _>("builtin").map_err(backend)?;
    let permissions = if builtin {
        BuiltinRole::from_name(&name).map_or(PermissionSet::EMPTY, BuiltinRole::permissions)
    } else {
        let json: String = row.try_get("permissions").map_err(backend)?;
        serde_json::from_str(&json).map_err(backend)?
    };
    Ok(Role {
        id: RoleId(row.try_get("id").map_err(backend)?),
        name,
        builtin,
        permissions,
    })
}

fn session_from_row(row: &DbRow) -> Result<Session> {
    Ok(Session {
        id: SessionId(row.try_get("id").map_err(backend)?),
        user_id: UserId(row.try_get("user_id").map_err(backend)?),
        created_at: from_ms(row.try_get("created_at").map_err(backend)?),
        last_seen_at: from_ms(row.try_get("last_seen_at").map_err(backend)?),
        expires_at: from_ms(row.try_get("expires_at").map_err(backend)?),
        address: row.try_get("address").map_err(backend)?,
        user_agent: row.try_get("user_agent").map_err(backend)?,
    })
}

fn token_from_row(row: &DbRow) -> Result<ApiToken> {
    let scopes: String = row.try_get("scopes").map_err(backend)?;
    Ok(ApiToken {
        id: TokenId(row.try_get("id").map_err(backend)?),
        user_id: UserId(row.try_get("user_id").map_err(backend)?),
        name: row.try_get("name").map_err(backend)?,
        hint: row.try_get("hint").map_err(backend)?,
        scopes: serde_json::from_str(&scopes).map_err(backend)?,
        created_at: from_ms(row.try_get("created_at").map_err(backend)?),
        expires_at: opt_ms(row.try_get("expires_at").map_err(backend)?),
        last_used_at: opt_ms(row.try_get("last_used_at").map_err(backend)?),
        revoked_at: opt_ms(row.try_get("revoked_at").map_err(backend)?),
    })
}

fn perms_json(p: PermissionSet) -> Result<String> {
    serde_json::to_string(&p).map_err(backend)
}

/// The key of the row a DELETE names, bound with its own SQL type.
pub(super) enum RowKey<'a> {
    Id(i64),
    Name(&'a str),
}

impl Tx {
    /// Runs a one-row DELETE; `NotFound(what)` when no row matched.
    pub(super) async fn delete_one(
        &mut self,
        sql: &str,
        key: RowKey<'_>,
        what: &'static str,
    ) -> Result<()> {
        let query = sqlx::query(sql);
        let query = match key {
            RowKey::Id(id) => query.bind(id),
            RowKey::Name(name) => query.bind(name),
        };
        let done = query.execute(self.conn()).await.map_err(backend)?;
        not_found_if_zero(done.rows_affected(), what)
    }

    async fn group_from_row(&mut self, row: &DbRow) -> Result<Group> {
        let id = GroupId(row.try_get("id").map_err(backend)?);
        let members: Vec<(String,)> = sqlx::query_as(
            "SELECT u.username FROM group_members m JOIN users u ON u.id = m.user_id WHERE m.group_id = $1 ORDER BY lower(u.username)",
        )
        .bind(id.0)
        .fetch_all(self.conn())
        .await
        .map_err(backend)?;
        let roles = self.granted_roles(Grantee::Group(id)).await?;
        Ok(Group {
            id,
            name: row.try_get("name").map_err(backend)?,
            members: members
                .into_iter()
                .filter_map(|(n,)| Username::parse(&n).ok())
                .collect(),
            roles: roles.into_iter().map(|r| r.name).collect(),
        })
    }
}

#[async_trait]
impl AccessReads for Tx {
    async fn count_users(&mut self) -> Result<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(self.conn())
            .await
            .map_err(backend)
    }

    async fn get_user(&mut self, id: UserId) -> Result<User> {
        let row = sqlx::query("SELECT * FROM users WHERE id = $1")
            .bind(id.0)
            .fetch_optional(self.conn())
            .await
            .map_err(backend)?
            .ok_or(StoreError::NotFound("user"))?;
        user_from_row(&row)
    }

    async fn find_user(&mut self, username: &str) -> Result<Option<User>> {
        let row = sqlx::query("SELECT * FROM users WHERE lower(username) = lower($1)")
            .bind(username)
            .fetch_optional(self.conn())
            .await
            .map_err(backend)?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn find_user_by_email(&mut self, email: &str) -> Result<Option<User>> {
        let row =
            sqlx::query("SELECT * FROM users WHERE lower(email) = lower($1) ORDER BY id LIMIT 1")
                .bind(email)
                .fetch_optional(self.conn())
                .await
                .map_err(backend)?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn list_users(&mut self) -> Result<Vec<User>> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY lower(username)")
            .fetch_all(self.conn())
            .await
            .map_err(backend)?;
        rows.iter().map(user_from_row).collect()
    }

    async fn list_roles(&mut self) -> Result<Vec<Role>> {
        let rows = sqlx::query("SELECT * FROM roles ORDER BY builtin DESC, id")
            .fetch_all(self.conn())
            .await
            .map_err(backend)?;
        rows.iter().map(role_from_row).collect()
    }

    async fn find_role(&mut self, name: &str) -> Result<Option<Role>> {
        let row = sqlx::query("SELECT * FROM roles WHERE lower(name) = lower($1)")
            .bind(name)
            .fetch_optional(self.conn())
            .await
            .map_err(backend)?;
        row.as_ref().map(role_from_row).transpose()
    }

    async fn granted_roles(&mut self, to: Grantee) -> Result<Vec<Role>> {
        let (col, id) = match to {
            Grantee::User(u) => ("user_id", u.0),
            Grantee::Group(g) => ("group_id", g.0),
        };
        let rows = sqlx::query(&format!(
            "SELECT r.* FROM roles r JOIN role_grants g ON g.role_id = r.id WHERE g.{col} = $1 ORDER BY r.id"
        ))
        .bind(id)
        .fetch_all(self.conn())
        .await
        .map_err(backend)?;
        rows.iter().map(role_from_row).collect()
    }

    async fn effective_roles(&mut self, user: UserId) -> Result<Vec<Role>> {
        let rows = sqlx::query(
            "SELECT DISTINCT r.* FROM roles r JOIN role_grants g ON g.role_id = r.id \
             WHERE g.user_id = $1 OR g.group_id IN (SELECT group_id FROM group_members WHERE user_id = $1)",
        )
        .bind(user.0)
        .fetch_all(self.conn())
        .await
        .map_err(backend)?;
        rows.iter().map(role_from_row).collect()
    }

    async fn list_groups(&mut self) -> Result<Vec<Group>> {
        let rows = sqlx::query("SELECT * FROM groups ORDER BY lower(name)")
            .fetch_all(self.conn())
            .await
            .map_err(backend)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(self.group_from_row(row).await?);
        }
        Ok(out)
    }

    async fn find_group(&mut self, name: &str) -> Result<Option<Group>> {
        let row = sqlx::query("SELECT * FROM groups WHERE lower(name) = lower($1)")
            .bind(name)
            .fetch_optional(self.conn())
            .await
            .map_err(backend)?;
        match row {
            Some(r) => Ok(Some(self.group_from_row(&r).await?)),
            None => Ok(None),
        }
    }

    async fn find_session(&mut self, token_hash: &[u8; 32]) -> Result<Option<Session>> {
        let row = sqlx::query("SELECT * FROM sessions WHERE token_hash = $1")
            .bind(&token_hash[..])
            .fetch_optional(self.conn())
            .await
            .map_err(backend)?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn list_sessions(&mut self, user: UserId) -> Result<Vec<Session>> {
        let rows = sqlx::query("SELECT * FROM sessions WHERE user_id = $1 ORDER BY id DESC")
            .bind(user.0)
            .fetch_all(self.conn())
            .await
            .map_err(backend)?;
        rows.iter().map(session_from_row).collect()
    }

    async fn find_token(&mut self, token_hash: &[u8; 32]) -> Result<Option<ApiToken>> {
        let row = sqlx::query("SELECT * FROM api_tokens WHERE token_hash = $1")
            .bind(&token_hash[..])
            .fetch_optional(self.conn())
            .await
            .map_err(backend)?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn list_tokens(&mut self, user: Option<UserId>) -> Result<Vec<ApiToken>> {
        let rows = sqlx::query(
            "SELECT * FROM api_tokens WHERE $1 IS NULL OR user_id = $1 ORDER BY id DESC",
        )
        .bind(user.map(|u| u.0))
        .fetch_all(self.conn())
        .await
        .map_err(backend)?;
        rows.iter().map(token_from_row).collect()
    }

    async fn get_token(&mut self, id: TokenId) -> Result<ApiToken> {
        let row = sqlx::query("SELECT * FROM api_tokens WHERE id = $1")
            .bind(id.0)
            .fetch_optional(self.conn())
            .await
            .map_err(backend)?
            .ok_or(StoreError::NotFound("token"))?;
        token_from_row(&row)
    }

    async fn reset_user(
        &mut self,
        token_hash: &[u8; 32],
        now: DateTime<Utc>,
    ) -> Result<Option<UserId>> {
        let user: Option<i64> = sqlx::query_scalar(
            "SELECT user_id FROM password_resets WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(&token_hash[..])
        .bind(ms(now))
        .fetch_optional(self.conn())
        .await
        .map_err(backend)?;
        Ok(user.map(UserId))
    }
}

#[async_trait]
impl AccessWrites for Tx {
    async fn create_user(&mut self, u: &NewUser, now: DateTime<Utc>) -> Result<User> {
        let row = sqlx::query(
            "INSERT INTO users (username, email, password_hash, must_change, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
        )
        .bind(u.username.as_str())
        .bind(&u.email)
        .bind(&u.password_hash)
        .bind(u.must_change)
        .bind(ms(now))
        .bind(ms(now))
        .fetch_one(self.conn())
        .await
        .map_err(|e| classify(e, || format!("a user named {:?} already exists", u.username.as_str())))?;
        let user = user_from_row(&row)?;
        for role in &u.roles {
            sqlx::query("INSERT INTO role_grants (role_id, user_id) VALUES ($1, $2)")
                .bind(role.0)
                .bind(user.id.0)
                .execute(self.conn())
                .await
                .map_err(backend)?;
        }
        Ok(user)
    }

    async fn update_user(
        &mut self,
        id: UserId,
        c: &UserChange,
        now: DateTime<Utc>,
    ) -> Result<User> {
        let row = sqlx::query(
            "UPDATE users SET email = CASE WHEN $1 THEN $2 ELSE email END, \
             disabled = COALESCE($3, disabled), updated_at = $4 WHERE id = $5 RETURNING *",
        )
        .bind(c.email.is_some())
        .bind(c.email.clone().flatten())
        .bind(c.disabled)
        .bind(ms(now))
        .bind(id.0)
        .fetch_optional(self.conn())
        .await
        .map_err(backend)?
        .ok_or(StoreError::NotFound("user"))?;
        user_from_row(&row)
    }

    async fn delete_user(&mut self, id: UserId) -> Result<()> {
        self.delete_one("DELETE FROM users WHERE id = $1", RowKey::Id(id.0), "user")
            .await
    }

    async fn set_password(
        &mut self,
        id: UserId,
        hash: &str,
        must_change: bool,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE users SET password_hash = $1, must_change = $2, updated_at = $3 WHERE id = $4",
        )
        .bind(hash)
        .bind(must_change)
        .bind(ms(now))
        .bind(id.0)
        .execute(self.conn())
        .await
        .map_err(backend)?;
        not_found_if_zero(done.rows_affected(), "user")
    }

    async fn create_role(
        &mut self,
        name: &str,
        permissions: PermissionSet,
        now: DateTime<Utc>,
    ) -> Result<Role> {
        let row = sqlx::query("INSERT INTO roles (name, builtin, permissions, created_at) VALUES ($1, FALSE, $2, $3) RETURNING *")
            .bind(name)
            .bind(perms_json(permissions)?)
            .bind(ms(now))
            .fetch_one(self.conn())
            .await
            .map_err(|e| classify(e, || format!("a role named {name:?} already exists")))?;
        role_from_row(&row)
    }

    async fn delete_role(&mut self, id: RoleId) -> Result<()> {
        self.delete_one(
            "DELETE FROM roles WHERE id = $1 AND NOT builtin",
            RowKey::Id(id.0),
            "role",
        )
        .await
    }

    async fn set_grants(&mut self, to: Grantee, roles: &[RoleId]) -> Result<()> {
        let (col, id) = match to {
            Grantee::User(u) => ("user_id", u.0),
            Grantee::Group(g) => ("group_id", g.0),
        };
        sqlx::query(&format!("DELETE FROM role_grants WHERE {col} = $1"))
            .bind(id)
            .execute(self.conn())
            .await
            .map_err(backend)?;
        for r in roles {
            sqlx::query(&format!(
                "INSERT INTO role_grants (role_id, {col}) VALUES ($1, $2) ON CONFLICT DO NOTHING"
            ))
            .bind(r.0)
            .bind(id)
            .execute(self.conn())
            .await
            .map_err(|e| classify(e, String::new))?;
        }
        Ok(())
    }

    async fn create_group(&mut self, name: &str, now: DateTime<Utc>) -> Result<Group> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO groups (name, created_at) VALUES ($1, $2) RETURNING id",
        )
        .bind(name)
        .bind(ms(now))
        .fetch_one(self.conn())
        .await
        .map_err(|e| classify(e, || format!("a group named {name:?} already exists")))?;
        Ok(Group {
            id: GroupId(id),
            name: name.to_owned(),
            members: vec![],
            roles: vec![],
        })
    }

    async fn delete_group(&mut self, id: GroupId) -> Result<()> {
        self.delete_one(
            "DELETE FROM groups WHERE id = $1",
            RowKey::Id(id.0),
            "group",
        )
        .await
    }

    async fn set_members(&mut self, group: GroupId, users: &[UserId]) -> Result<()> {
        sqlx::query("DELETE FROM group_members WHERE group_id = $1")
            .bind(group.0)
            .execute(self.conn())
            .await
            .map_err(backend)?;
        for u in users {
            sqlx::query("INSERT INTO group_members (group_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(group.0)
                .bind(u.0)
                .execute(self.conn())
                .await
                .map_err(backend)?;
        }
        Ok(())
    }

    async fn create_session(&mut self, s: &NewSession) -> Result<SessionId> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO sessions (token_hash, user_id, created_at, last_seen_at, expires_at, address, user_agent) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(&s.token_hash[..])
        .bind(s.user_id.0)
        .bind(ms(s.now))
        .bind(ms(s.now))
        .bind(ms(s.expires_at))
        .bind(&s.address)
        .bind(&s.user_agent)
        .fetch_one(self.conn())
        .await
        .map_err(backend)?;
        Ok(SessionId(id))
    }

    async fn touch_session(&mut self, id: SessionId, now: DateTime<Utc>) -> Result<()> {
        sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id = $2")
            .bind(ms(now))
            .bind(id.0)
            .execute(self.conn())
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn delete_session(&mut self, user: UserId, id: SessionId) -> Result<bool> {
        let done = sqlx::query("DELETE FROM sessions WHERE id = $1 AND user_id = $2")
            .bind(id.0)
            .bind(user.0)
            .execute(self.conn())
            .await
            .map_err(backend)?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        Ok(true)
    }

    async fn delete_sessions(&mut self, user: UserId, keep: Option<SessionId>) -> Result<u64> {
        let done =
            sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND ($2 IS NULL OR id <> $2)")
                .bind(user.0)
                .bind(keep.map(|s| s.0))
                .execute(self.conn())
                .await
                .map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn delete_expired_sessions(
        &mut self,
        idle_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let done = sqlx::query("DELETE FROM sessions WHERE last_seen_at < $1 OR expires_at <= $2")
            .bind(ms(idle_before))
            .bind(ms(now))
            .execute(self.conn())
            .await
            .map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn create_token(&mut self, t: &NewToken) -> Result<ApiToken> {
        let row = sqlx::query(
            "INSERT INTO api_tokens (token_hash, hint, user_id, name, scopes, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
        )
        .bind(&t.token_hash[..])
        .bind(&t.hint)
        .bind(t.user_id.0)
        .bind(&t.name)
        .bind(perms_json(t.scopes)?)
        .bind(ms(t.created_at))
        .bind(t.expires_at.map(ms))
        .fetch_one(self.conn())
        .await
        .map_err(backend)?;
        token_from_row(&row)
    }

    async fn touch_token(&mut self, id: TokenId, now: DateTime<Utc>) -> Result<()> {
        sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(ms(now))
            .bind(id.0)
            .execute(self.conn())
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn revoke_token(&mut self, id: TokenId, now: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(ms(now))
        .bind(id.0)
        .execute(self.conn())
        .await
        .map_err(backend)?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        Ok(true)
    }

    async fn revoke_tokens_of(&mut self, user: UserId, now: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
        )
        .bind(ms(now))
        .bind(user.0)
        .execute(self.conn())
        .await
        .map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn delete_pending_resets(&mut self, user: UserId) -> Result<u64> {
        let done =
            sqlx::query("DELETE FROM password_resets WHERE user_id = $1 AND used_at IS NULL")
                .bind(user.0)
                .execute(self.conn())
                .await
                .map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn create_reset(
        &mut self,
        token_hash: &[u8; 32],
        user: UserId,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query("INSERT INTO password_resets (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(&token_hash[..])
            .bind(user.0)
            .bind(ms(now))
            .bind(ms(expires_at))
            .execute(self.conn())
            .await
            .map_err(backend)?;
        // Old links are kept only until they expire.
        sqlx::query("DELETE FROM password_resets WHERE expires_at < $1")
            .bind(ms(now))
            .execute(self.conn())
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn consume_reset(
        &mut self,
        token_hash: &[u8; 32],
        now: DateTime<Utc>,
    ) -> Result<Option<UserId>> {
        let user: Option<i64> = sqlx::query_scalar(
            "UPDATE password_resets SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1 RETURNING user_id",
        )
        .bind(ms(now))
        .bind(&token_hash[..])
        .fetch_optional(self.conn())
        .await
        .map_err(backend)?;
        Ok(user.map(UserId))
    }
}
