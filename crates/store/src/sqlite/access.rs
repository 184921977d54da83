//! Accounts, roles, groups, sessions, tokens and reset links on SQLite.

use super::audit::append;
use super::{backend, classify, from_ms, ms, opt_ms, SqliteStore};
use crate::access::*;
use crate::{Result, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use steward_domain::{
    AuditRecord, BuiltinRole, GroupId, PermissionSet, RoleId, SessionId, TokenId, UserId, Username,
};

fn user_from_row(row: &SqliteRow) -> Result<User> {
    let name: String = row.try_get("username").map_err(backend)?;
    Ok(User {
        id: UserId(row.try_get("id").map_err(backend)?),
        username: Username::parse(&name).map_err(backend)?,
        email: row.try_get("email").map_err(backend)?,
        password_hash: row.try_get("password_hash").map_err(backend)?,
        must_change: row.try_get::<i64, _>("must_change").map_err(backend)? != 0,
        disabled: row.try_get::<i64, _>("disabled").map_err(backend)? != 0,
        created_at: from_ms(row.try_get("created_at").map_err(backend)?),
        updated_at: from_ms(row.try_get("updated_at").map_err(backend)?),
    })
}

fn role_from_row(row: &SqliteRow) -> Result<Role> {
    let name: String = row.try_get("name").map_err(backend)?;
    let builtin = row.try_get::<i64, _>("builtin").map_err(backend)? != 0;
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

fn session_from_row(row: &SqliteRow) -> Result<Session> {
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

fn token_from_row(row: &SqliteRow) -> Result<ApiToken> {
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

fn not_found_if_zero(rows: u64, what: &'static str) -> Result<()> {
    if rows == 0 {
        Err(StoreError::NotFound(what))
    } else {
        Ok(())
    }
}

/// The key of the row a DELETE names, bound with its own SQL type.
pub(super) enum RowKey<'a> {
    Id(i64),
    Name(&'a str),
}

impl SqliteStore {
    /// Runs a one-row DELETE and its audit record in one transaction;
    /// `NotFound(what)` when no row matched.
    pub(super) async fn delete_audited(
        &self,
        sql: &str,
        key: RowKey<'_>,
        what: &'static str,
        audit: &AuditRecord,
    ) -> Result<()> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let query = sqlx::query(sql);
        let query = match key {
            RowKey::Id(id) => query.bind(id),
            RowKey::Name(name) => query.bind(name),
        };
        let done = query.execute(&mut *tx).await.map_err(backend)?;
        not_found_if_zero(done.rows_affected(), what)?;
        append(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)
    }

    async fn group_from_row(&self, row: &SqliteRow) -> Result<Group> {
        let id = GroupId(row.try_get("id").map_err(backend)?);
        let members: Vec<(String,)> = sqlx::query_as(
            "SELECT u.username FROM group_members m JOIN users u ON u.id = m.user_id WHERE m.group_id = ? ORDER BY u.username",
        )
        .bind(id.0)
        .fetch_all(&self.reader)
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
impl AccessStore for SqliteStore {
    async fn count_users(&self) -> Result<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.reader)
            .await
            .map_err(backend)
    }

    async fn create_user(
        &self,
        u: &NewUser,
        now: DateTime<Utc>,
        audit: &AuditRecord,
    ) -> Result<User> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let row = sqlx::query(
            "INSERT INTO users (username, email, password_hash, must_change, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING *",
        )
        .bind(u.username.as_str())
        .bind(&u.email)
        .bind(&u.password_hash)
        .bind(u.must_change)
        .bind(ms(now))
        .bind(ms(now))
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| classify(e, || format!("a user named {:?} already exists", u.username.as_str())))?;
        let user = user_from_row(&row)?;
        for role in &u.roles {
            sqlx::query("INSERT INTO role_grants (role_id, user_id) VALUES (?, ?)")
                .bind(role.0)
                .bind(user.id.0)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        append(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(user)
    }

    async fn get_user(&self, id: UserId) -> Result<User> {
        let row = sqlx::query("SELECT * FROM users WHERE id = ?")
            .bind(id.0)
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?
            .ok_or(StoreError::NotFound("user"))?;
        user_from_row(&row)
    }

    async fn find_user(&self, username: &str) -> Result<Option<User>> {
        let row = sqlx::query("SELECT * FROM users WHERE username = ?")
            .bind(username)
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn find_user_by_email(&self, email: &str) -> Result<Option<User>> {
        let row = sqlx::query("SELECT * FROM users WHERE email = ? ORDER BY id LIMIT 1")
            .bind(email)
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn list_users(&self) -> Result<Vec<User>> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY username")
            .fetch_all(&self.reader)
            .await
            .map_err(backend)?;
        rows.iter().map(user_from_row).collect()
    }

    async fn update_user(
        &self,
        id: UserId,
        c: &UserChange,
        now: DateTime<Utc>,
        audit: &AuditRecord,
    ) -> Result<User> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let row = sqlx::query(
            "UPDATE users SET email = CASE WHEN ? THEN ? ELSE email END, \
             disabled = COALESCE(?, disabled), updated_at = ? WHERE id = ? RETURNING *",
        )
        .bind(c.email.is_some())
        .bind(c.email.clone().flatten())
        .bind(c.disabled)
        .bind(ms(now))
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        .ok_or(StoreError::NotFound("user"))?;
        if c.disabled == Some(true) {
            sqlx::query("DELETE FROM sessions WHERE user_id = ?")
                .bind(id.0)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        append(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        user_from_row(&row)
    }

    async fn delete_user(&self, id: UserId, audit: &AuditRecord) -> Result<()> {
        self.delete_audited(
            "DELETE FROM users WHERE id = ?",
            RowKey::Id(id.0),
            "user",
            audit,
        )
        .await
    }

    async fn set_password(
        &self,
        id: UserId,
        change: &PasswordSet<'_>,
        now: DateTime<Utc>,
        audit: Option<&AuditRecord>,
    ) -> Result<()> {
        let PasswordSet {
            hash,
            must_change,
            revoke_sessions,
            keep,
            revoke_tokens,
        } = *change;
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let done = sqlx::query(
            "UPDATE users SET password_hash = ?, must_change = ?, updated_at = ? WHERE id = ?",
        )
        .bind(hash)
        .bind(must_change)
        .bind(ms(now))
        .bind(id.0)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        not_found_if_zero(done.rows_affected(), "user")?;
        if revoke_sessions {
            sqlx::query("DELETE FROM sessions WHERE user_id = ? AND id IS NOT ?")
                .bind(id.0)
                .bind(keep.map(|s| s.0))
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        if revoke_tokens {
            sqlx::query(
                "UPDATE api_tokens SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
            )
            .bind(ms(now))
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        // A link sent before this change must not undo it.
        sqlx::query("DELETE FROM password_resets WHERE user_id = ? AND used_at IS NULL")
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        if let Some(a) = audit {
            append(&mut tx, a).await?;
        }
        tx.commit().await.map_err(backend)
    }

    async fn list_roles(&self) -> Result<Vec<Role>> {
        let rows = sqlx::query("SELECT * FROM roles ORDER BY builtin DESC, id")
            .fetch_all(&self.reader)
            .await
            .map_err(backend)?;
        rows.iter().map(role_from_row).collect()
    }

    async fn find_role(&self, name: &str) -> Result<Option<Role>> {
        let row = sqlx::query("SELECT * FROM roles WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
        row.as_ref().map(role_from_row).transpose()
    }

    async fn create_role(
        &self,
        name: &str,
        permissions: PermissionSet,
        now: DateTime<Utc>,
        audit: &AuditRecord,
    ) -> Result<Role> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let row = sqlx::query("INSERT INTO roles (name, builtin, permissions, created_at) VALUES (?, 0, ?, ?) RETURNING *")
            .bind(name)
            .bind(perms_json(permissions)?)
            .bind(ms(now))
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| classify(e, || format!("a role named {name:?} already exists")))?;
        append(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        role_from_row(&row)
    }

    async fn delete_role(&self, id: RoleId, audit: &AuditRecord) -> Result<()> {
        self.delete_audited(
            "DELETE FROM roles WHERE id = ? AND builtin = 0",
            RowKey::Id(id.0),
            "role",
            audit,
        )
        .await
    }

    async fn granted_roles(&self, to: Grantee) -> Result<Vec<Role>> {
        let (col, id) = match to {
            Grantee::User(u) => ("user_id", u.0),
            Grantee::Group(g) => ("group_id", g.0),
        };
        let rows = sqlx::query(&format!(
            "SELECT r.* FROM roles r JOIN role_grants g ON g.role_id = r.id WHERE g.{col} = ? ORDER BY r.id"
        ))
        .bind(id)
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?;
        rows.iter().map(role_from_row).collect()
    }

    async fn set_grants(&self, to: Grantee, roles: &[RoleId], audit: &AuditRecord) -> Result<()> {
        let (col, id) = match to {
            Grantee::User(u) => ("user_id", u.0),
            Grantee::Group(g) => ("group_id", g.0),
        };
        let mut tx = self.writer.begin().await.map_err(backend)?;
        sqlx::query(&format!("DELETE FROM role_grants WHERE {col} = ?"))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        for r in roles {
            sqlx::query(&format!(
                "INSERT OR IGNORE INTO role_grants (role_id, {col}) VALUES (?, ?)"
            ))
            .bind(r.0)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| classify(e, String::new))?;
        }
        append(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)
    }

    async fn effective_roles(&self, user: UserId) -> Result<Vec<Role>> {
        let rows = sqlx::query(
            "SELECT DISTINCT r.* FROM roles r JOIN role_grants g ON g.role_id = r.id \
             WHERE g.user_id = ?1 OR g.group_id IN (SELECT group_id FROM group_members WHERE user_id = ?1)",
        )
        .bind(user.0)
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?;
        rows.iter().map(role_from_row).collect()
    }

    async fn list_groups(&self) -> Result<Vec<Group>> {
        let rows = sqlx::query("SELECT * FROM groups ORDER BY name")
            .fetch_all(&self.reader)
            .await
            .map_err(backend)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(self.group_from_row(row).await?);
        }
        Ok(out)
    }

    async fn find_group(&self, name: &str) -> Result<Option<Group>> {
        let row = sqlx::query("SELECT * FROM groups WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
        match row {
            Some(r) => Ok(Some(self.group_from_row(&r).await?)),
            None => Ok(None),
        }
    }

    async fn create_group(
        &self,
        name: &str,
        now: DateTime<Utc>,
        audit: &AuditRecord,
    ) -> Result<Group> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let id: i64 =
            sqlx::query_scalar("INSERT INTO groups (name, created_at) VALUES (?, ?) RETURNING id")
                .bind(name)
                .bind(ms(now))
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| classify(e, || format!("a group named {name:?} already exists")))?;
        append(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(Group {
            id: GroupId(id),
            name: name.to_owned(),
            members: vec![],
            roles: vec![],
        })
    }

    async fn delete_group(&self, id: GroupId, audit: &AuditRecord) -> Result<()> {
        self.delete_audited(
            "DELETE FROM groups WHERE id = ?",
            RowKey::Id(id.0),
            "group",
            audit,
        )
        .await
    }

    async fn set_members(
        &self,
        group: GroupId,
        users: &[UserId],
        audit: &AuditRecord,
    ) -> Result<()> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        sqlx::query("DELETE FROM group_members WHERE group_id = ?")
            .bind(group.0)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        for u in users {
            sqlx::query("INSERT OR IGNORE INTO group_members (group_id, user_id) VALUES (?, ?)")
                .bind(group.0)
                .bind(u.0)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        append(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)
    }

    async fn create_session(&self, s: &NewSession) -> Result<SessionId> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO sessions (token_hash, user_id, created_at, last_seen_at, expires_at, address, user_agent) \
             VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(&s.token_hash[..])
        .bind(s.user_id.0)
        .bind(ms(s.now))
        .bind(ms(s.now))
        .bind(ms(s.expires_at))
        .bind(&s.address)
        .bind(&s.user_agent)
        .fetch_one(&self.writer)
        .await
        .map_err(backend)?;
        Ok(SessionId(id))
    }

    async fn find_session(&self, token_hash: &[u8; 32]) -> Result<Option<Session>> {
        let row = sqlx::query("SELECT * FROM sessions WHERE token_hash = ?")
            .bind(&token_hash[..])
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn touch_session(&self, id: SessionId, now: DateTime<Utc>) -> Result<()> {
        sqlx::query("UPDATE sessions SET last_seen_at = ? WHERE id = ?")
            .bind(ms(now))
            .bind(id.0)
            .execute(&self.writer)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn list_sessions(&self, user: UserId) -> Result<Vec<Session>> {
        let rows = sqlx::query("SELECT * FROM sessions WHERE user_id = ? ORDER BY id DESC")
            .bind(user.0)
            .fetch_all(&self.reader)
            .await
            .map_err(backend)?;
        rows.iter().map(session_from_row).collect()
    }

    async fn delete_session(
        &self,
        user: UserId,
        id: SessionId,
        audit: Option<&AuditRecord>,
    ) -> Result<bool> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let done = sqlx::query("DELETE FROM sessions WHERE id = ? AND user_id = ?")
            .bind(id.0)
            .bind(user.0)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        if done.rows_affected() == 0 {
            return Ok(false); // dropped: rolled back, nothing appended
        }
        if let Some(a) = audit {
            append(&mut tx, a).await?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    async fn delete_sessions(
        &self,
        user: UserId,
        keep: Option<SessionId>,
        audit: &(dyn Fn(u64) -> AuditRecord + Sync),
    ) -> Result<u64> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let done = sqlx::query("DELETE FROM sessions WHERE user_id = ? AND id IS NOT ?")
            .bind(user.0)
            .bind(keep.map(|s| s.0))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        append(&mut tx, &audit(done.rows_affected())).await?;
        tx.commit().await.map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn delete_expired_sessions(
        &self,
        idle_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let done = sqlx::query("DELETE FROM sessions WHERE last_seen_at < ? OR expires_at <= ?")
            .bind(ms(idle_before))
            .bind(ms(now))
            .execute(&self.writer)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn create_token(&self, t: &NewToken, audit: &AuditRecord) -> Result<ApiToken> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let row = sqlx::query(
            "INSERT INTO api_tokens (token_hash, hint, user_id, name, scopes, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING *",
        )
        .bind(&t.token_hash[..])
        .bind(&t.hint)
        .bind(t.user_id.0)
        .bind(&t.name)
        .bind(perms_json(t.scopes)?)
        .bind(ms(t.created_at))
        .bind(t.expires_at.map(ms))
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        let token = token_from_row(&row)?;
        let mut audit = audit.clone();
        audit.target = format!("token:{}", token.id);
        append(&mut tx, &audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(token)
    }

    async fn find_token(&self, token_hash: &[u8; 32]) -> Result<Option<ApiToken>> {
        let row = sqlx::query("SELECT * FROM api_tokens WHERE token_hash = ?")
            .bind(&token_hash[..])
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn touch_token(&self, id: TokenId, now: DateTime<Utc>) -> Result<()> {
        sqlx::query("UPDATE api_tokens SET last_used_at = ? WHERE id = ?")
            .bind(ms(now))
            .bind(id.0)
            .execute(&self.writer)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn list_tokens(&self, user: Option<UserId>) -> Result<Vec<ApiToken>> {
        let rows = sqlx::query(
            "SELECT * FROM api_tokens WHERE ?1 IS NULL OR user_id = ?1 ORDER BY id DESC",
        )
        .bind(user.map(|u| u.0))
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?;
        rows.iter().map(token_from_row).collect()
    }

    async fn get_token(&self, id: TokenId) -> Result<ApiToken> {
        let row = sqlx::query("SELECT * FROM api_tokens WHERE id = ?")
            .bind(id.0)
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?
            .ok_or(StoreError::NotFound("token"))?;
        token_from_row(&row)
    }

    async fn revoke_token(
        &self,
        id: TokenId,
        now: DateTime<Utc>,
        audit: &AuditRecord,
    ) -> Result<bool> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let done =
            sqlx::query("UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(ms(now))
                .bind(id.0)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        append(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    async fn create_reset(
        &self,
        token_hash: &[u8; 32],
        user: UserId,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        audit: &AuditRecord,
    ) -> Result<()> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        sqlx::query("INSERT INTO password_resets (token_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)")
            .bind(&token_hash[..])
            .bind(user.0)
            .bind(ms(now))
            .bind(ms(expires_at))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        // Old links are kept only until they expire.
        sqlx::query("DELETE FROM password_resets WHERE expires_at < ?")
            .bind(ms(now))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        append(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)
    }

    async fn reset_user(
        &self,
        token_hash: &[u8; 32],
        now: DateTime<Utc>,
    ) -> Result<Option<UserId>> {
        let user: Option<i64> = sqlx::query_scalar(
            "SELECT user_id FROM password_resets WHERE token_hash = ? AND used_at IS NULL AND expires_at > ?",
        )
        .bind(&token_hash[..])
        .bind(ms(now))
        .fetch_optional(&self.reader)
        .await
        .map_err(backend)?;
        Ok(user.map(UserId))
    }

    async fn consume_reset(
        &self,
        token_hash: &[u8; 32],
        now: DateTime<Utc>,
    ) -> Result<Option<UserId>> {
        let user: Option<i64> = sqlx::query_scalar(
            "UPDATE password_resets SET used_at = ?1 WHERE token_hash = ?2 AND used_at IS NULL AND expires_at > ?1 RETURNING user_id",
        )
        .bind(ms(now))
        .bind(&token_hash[..])
        .fetch_optional(&self.writer)
        .await
        .map_err(backend)?;
        Ok(user.map(UserId))
    }
}
