//! Roles, groups and who holds what. Every change drops the permission cache.

use crate::{Access, AccessError, ClientInfo, Identity};
use serde_json::json;
use steward_domain::{Permission, PermissionSet, UserId, Username, ValidationError};
use steward_store::access::{Grantee, Group, Role};
use steward_store::{ReadTx, WriteTx};

/// A change to who holds what, as [`Access::keeps_a_manager`] weighs it.
#[derive(Clone, Copy)]
pub(crate) enum Change<'a> {
    UserRoles(UserId, &'a [Role]),
    RemoveUser(UserId),
    DisableUser(UserId),
    GroupMembers(steward_domain::GroupId, &'a [UserId]),
    GroupRoles(steward_domain::GroupId, &'a [Role]),
    RemoveGroup(steward_domain::GroupId),
    RemoveRole(steward_domain::RoleId),
}

/// The permissions of a set of roles together.
pub(crate) fn union(roles: &[Role]) -> PermissionSet {
    roles
        .iter()
        .fold(PermissionSet::EMPTY, |acc, r| acc.union(r.permissions))
}

/// The no-escalation rule: nobody hands out, or takes away, permissions they
/// do not hold themselves. Without it `users:write` alone would be admin.
pub(crate) fn within(who: &Identity, wanted: PermissionSet, what: &str) -> Result<(), AccessError> {
    if wanted.is_subset_of(who.permissions) {
        return Ok(());
    }
    let extra: Vec<String> = wanted
        .to_strings()
        .into_iter()
        .filter(|p| p.parse::<Permission>().is_ok_and(|p| !who.allows(p)))
        .collect();
    Err(AccessError::Forbidden(format!(
        "{what} carry permissions you do not hold: {}",
        extra.join(", ")
    )))
}

impl Access {
    /// Refuses changes to a user who holds more than the caller, read on `tx`.
    pub(crate) async fn not_above(
        tx: &mut dyn ReadTx,
        who: &Identity,
        target: UserId,
        what: &str,
    ) -> Result<(), AccessError> {
        let theirs = union(&tx.effective_roles(target).await?);
        within(who, theirs, &format!("{what}'s roles"))
    }

    /// Names to roles, each missing one a validation error naming its place.
    pub(crate) async fn resolve_roles(
        tx: &mut dyn ReadTx,
        names: &[String],
    ) -> Result<Vec<Role>, AccessError> {
        let mut roles = vec![];
        for (i, n) in names.iter().enumerate() {
            let r = tx.find_role(n).await?.ok_or_else(|| {
                ValidationError::new(format!("roles[{i}]"), format!("no role named {n:?}"))
            })?;
            roles.push(r);
        }
        Ok(roles)
    }

    async fn find_group(tx: &mut dyn ReadTx, name: &str) -> Result<Group, AccessError> {
        tx.find_group(name)
            .await?
            .ok_or(AccessError::NotFound("group"))
    }

    pub async fn roles(&self) -> Result<Vec<Role>, AccessError> {
        Ok(self.store.read().await?.list_roles().await?)
    }

    pub async fn create_role(
        &self,
        who: &Identity,
        name: &str,
        permissions: PermissionSet,
        client: &ClientInfo,
    ) -> Result<Role, AccessError> {
        Username::parse(name).map_err(|e| e.within("name"))?;
        if permissions.is_empty() {
            return Err(ValidationError::new(
                "permissions",
                "a role needs at least one permission",
            )
            .into());
        }
        within(who, permissions, "the new role's permissions")?;
        let now = self.clock.now();
        let audit = who.audit_context(client).record(
            now,
            "role.create",
            format!("role:{name}"),
            json!({"permissions": {"from": null, "to": permissions}}),
        );
        let mut tx = self.store.write().await?;
        let role = tx.create_role(name, permissions, now).await?;
        tx.append_audit(&audit).await?;
        tx.commit().await?;
        Ok(role)
    }

    pub async fn delete_role(
        &self,
        who: &Identity,
        name: &str,
        client: &ClientInfo,
    ) -> Result<(), AccessError> {
        let mut tx = self.store.write().await?;
        let role = tx
            .find_role(name)
            .await?
            .ok_or(AccessError::NotFound("role"))?;
        if role.builtin {
            return Err(AccessError::Conflict(format!(
                "role {name} is built in and cannot be deleted"
            )));
        }
        within(who, role.permissions, "the role's permissions")?;
        Self::keeps_a_manager(&mut *tx, who, Change::RemoveRole(role.id)).await?;
        let audit = who.audit_context(client).record(
            self.clock.now(),
            "role.delete",
            format!("role:{name}"),
            json!({"permissions": {"from": role.permissions, "to": null}}),
        );
        tx.delete_role(role.id).await?;
        tx.append_audit(&audit).await?;
        tx.commit().await?;
        self.invalidate();
        Ok(())
    }

    /// Replaces the roles granted directly to a user.
    pub async fn set_user_roles(
        &self,
        who: &Identity,
        user: &str,
        roles: &[String],
        client: &ClientInfo,
    ) -> Result<Vec<String>, AccessError> {
        let mut tx = self.store.write().await?;
        let u = tx
            .find_user(user)
            .await?
            .ok_or(AccessError::NotFound("user"))?;
        Self::not_above(&mut *tx, who, u.id, "this user").await?;
        let granted = Self::resolve_roles(&mut *tx, roles).await?;
        within(who, union(&granted), "these roles")?;
        let ids: Vec<_> = granted.iter().map(|r| r.id).collect();
        let before: Vec<String> = tx
            .granted_roles(Grantee::User(u.id))
            .await?
            .into_iter()
            .map(|r| r.name)
            .collect();
        Self::keeps_a_manager(&mut *tx, who, Change::UserRoles(u.id, &granted)).await?;
        let audit = who.audit_context(client).record(
            self.clock.now(),
            "grant.user",
            format!("user:{}", u.username),
            json!({"roles": {"from": before, "to": roles}}),
        );
        tx.set_grants(Grantee::User(u.id), &ids).await?;
        tx.append_audit(&audit).await?;
        tx.commit().await?;
        self.invalidate();
        Ok(roles.to_vec())
    }

    /// Refuses a change after which no enabled user could manage users: the
    /// effective permissions of every user are worked out as they would be
    /// after `change`, through direct grants and groups alike.
    ///
    /// Read on the write transaction that then makes the change, so two admins
    /// removing each other at the same moment cannot both pass: write
    /// transactions are serialised (see `steward_store::tx`), and the second
    /// one reads what the first committed. On that same transaction the
    /// caller's own permissions are read again: one whose roles were taken
    /// away while the request waited is refused, not served with what it held
    /// when it signed in.
    pub(crate) async fn keeps_a_manager(
        tx: &mut dyn WriteTx,
        who: &Identity,
        change: Change<'_>,
    ) -> Result<(), AccessError> {
        let caller = tx.get_user(who.user_id).await?;
        let now_held = union(&tx.effective_roles(who.user_id).await?);
        if caller.disabled || !who.permissions.is_subset_of(now_held) {
            return Err(AccessError::Forbidden(
                "your roles changed while this request was waiting; sign in again or retry".into(),
            ));
        }
        Self::no_manager_left(tx, change).await
    }

    async fn no_manager_left(tx: &mut dyn WriteTx, change: Change<'_>) -> Result<(), AccessError> {
        let manage = Permission::write(steward_domain::Module::Users);
        let roles = tx.list_roles().await?;
        let by_name = |n: &str| roles.iter().find(|r| r.name.eq_ignore_ascii_case(n));
        let counts = |r: &Role| !matches!(change, Change::RemoveRole(id) if id == r.id);
        let groups = tx.list_groups().await?;
        for u in tx.list_users().await? {
            let gone = match change {
                Change::RemoveUser(id) | Change::DisableUser(id) => id == u.id,
                _ => false,
            };
            if u.disabled || gone {
                continue;
            }
            let direct = match change {
                Change::UserRoles(id, new) if id == u.id => new.to_vec(),
                _ => tx.granted_roles(Grantee::User(u.id)).await?,
            };
            let mut perms = union(&direct.into_iter().filter(counts).collect::<Vec<_>>());
            for g in &groups {
                if matches!(change, Change::RemoveGroup(id) if id == g.id) {
                    continue;
                }
                let member = match change {
                    Change::GroupMembers(id, members) if id == g.id => members.contains(&u.id),
                    _ => g
                        .members
                        .iter()
                        .any(|m| m.as_str().eq_ignore_ascii_case(u.username.as_str())),
                };
                if !member {
                    continue;
                }
                let group_roles: Vec<Role> = match change {
                    Change::GroupRoles(id, new) if id == g.id => new.to_vec(),
                    _ => g.roles.iter().filter_map(|n| by_name(n).cloned()).collect(),
                };
                perms = perms.union(union(
                    &group_roles.into_iter().filter(counts).collect::<Vec<_>>(),
                ));
            }
            if perms.allows(manage) {
                return Ok(());
            }
        }
        Err(AccessError::Conflict(
            "this would leave no user who can manage users".into(),
        ))
    }

    pub async fn groups(&self) -> Result<Vec<Group>, AccessError> {
        Ok(self.store.read().await?.list_groups().await?)
    }

    pub async fn create_group(
        &self,
        who: &Identity,
        name: &str,
        client: &ClientInfo,
    ) -> Result<Group, AccessError> {
        Username::parse(name).map_err(|e| e.within("name"))?;
        let now = self.clock.now();
        let audit = who.audit_context(client).record(
            now,
            "group.create",
            format!("group:{name}"),
            json!({}),
        );
        let mut tx = self.store.write().await?;
        let group = tx.create_group(name, now).await?;
        tx.append_audit(&audit).await?;
        tx.commit().await?;
        Ok(group)
    }

    pub async fn delete_group(
        &self,
        who: &Identity,
        name: &str,
        client: &ClientInfo,
    ) -> Result<(), AccessError> {
        let mut tx = self.store.write().await?;
        let g = Self::find_group(&mut *tx, name).await?;
        let held = union(&tx.granted_roles(Grantee::Group(g.id)).await?);
        within(who, held, "the group's roles")?;
        Self::keeps_a_manager(&mut *tx, who, Change::RemoveGroup(g.id)).await?;
        let audit = who.audit_context(client).record(self.clock.now(), "group.delete", format!("group:{name}"), json!({"members": {"from": g.members, "to": null}, "roles": {"from": g.roles, "to": null}}));
        tx.delete_group(g.id).await?;
        tx.append_audit(&audit).await?;
        tx.commit().await?;
        self.invalidate();
        Ok(())
    }

    pub async fn set_group_members(
        &self,
        who: &Identity,
        name: &str,
        members: &[String],
        client: &ClientInfo,
    ) -> Result<Group, AccessError> {
        let mut tx = self.store.write().await?;
        let g = Self::find_group(&mut *tx, name).await?;
        let held = union(&tx.granted_roles(Grantee::Group(g.id)).await?);
        within(who, held, "the group's roles")?;
        let mut ids = vec![];
        for (i, m) in members.iter().enumerate() {
            let u = tx.find_user(m).await?.ok_or_else(|| {
                ValidationError::new(format!("members[{i}]"), format!("no user named {m:?}"))
            })?;
            ids.push(u.id);
        }
        Self::keeps_a_manager(&mut *tx, who, Change::GroupMembers(g.id, &ids)).await?;
        let audit = who.audit_context(client).record(
            self.clock.now(),
            "group.members",
            format!("group:{name}"),
            json!({"members": {"from": g.members, "to": members}}),
        );
        tx.set_members(g.id, &ids).await?;
        tx.append_audit(&audit).await?;
        let after = Self::find_group(&mut *tx, name).await?;
        tx.commit().await?;
        self.invalidate();
        Ok(after)
    }

    pub async fn set_group_roles(
        &self,
        who: &Identity,
        name: &str,
        roles: &[String],
        client: &ClientInfo,
    ) -> Result<Group, AccessError> {
        let mut tx = self.store.write().await?;
        let g = Self::find_group(&mut *tx, name).await?;
        let held = union(&tx.granted_roles(Grantee::Group(g.id)).await?);
        within(who, held, "the group's current roles")?;
        let granted = Self::resolve_roles(&mut *tx, roles).await?;
        within(who, union(&granted), "these roles")?;
        let ids: Vec<_> = granted.iter().map(|r| r.id).collect();
        Self::keeps_a_manager(&mut *tx, who, Change::GroupRoles(g.id, &granted)).await?;
        let audit = who.audit_context(client).record(
            self.clock.now(),
            "grant.group",
            format!("group:{name}"),
            json!({"roles": {"from": g.roles, "to": roles}}),
        );
        tx.set_grants(Grantee::Group(g.id), &ids).await?;
        tx.append_audit(&audit).await?;
        let after = Self::find_group(&mut *tx, name).await?;
        tx.commit().await?;
        self.invalidate();
        Ok(after)
    }
}
