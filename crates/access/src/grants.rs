//! Roles, groups and who holds what. Every change drops the permission cache.

use crate::{Access, AccessError, ClientInfo, Identity};
use serde_json::json;
use steward_domain::{Permission, PermissionSet, UserId, Username, ValidationError};
use steward_store::access::{Grantee, Group, Role};

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
    /// Refuses changes to a user who holds more than the caller.
    pub(crate) async fn not_above(
        &self,
        who: &Identity,
        target: UserId,
        what: &str,
    ) -> Result<(), AccessError> {
        let theirs = self.permissions_of(target).await?;
        within(who, theirs, &format!("{what}'s roles"))
    }

    async fn group_permissions(&self, group: &Group) -> Result<PermissionSet, AccessError> {
        Ok(union(
            &self.store.granted_roles(Grantee::Group(group.id)).await?,
        ))
    }

    pub async fn roles(&self) -> Result<Vec<Role>, AccessError> {
        Ok(self.store.list_roles().await?)
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
        Ok(self
            .store
            .create_role(name, permissions, now, &audit)
            .await?)
    }

    pub async fn delete_role(
        &self,
        who: &Identity,
        name: &str,
        client: &ClientInfo,
    ) -> Result<(), AccessError> {
        let role = self
            .store
            .find_role(name)
            .await?
            .ok_or(AccessError::NotFound("role"))?;
        if role.builtin {
            return Err(AccessError::Conflict(format!(
                "role {name} is built in and cannot be deleted"
            )));
        }
        within(who, role.permissions, "the role's permissions")?;
        let _serial = self
            .keeps_a_manager(who, Change::RemoveRole(role.id))
            .await?;
        let audit = who.audit_context(client).record(
            self.clock.now(),
            "role.delete",
            format!("role:{name}"),
            json!({"permissions": {"from": role.permissions, "to": null}}),
        );
        self.store.delete_role(role.id, &audit).await?;
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
        let u = self
            .store
            .find_user(user)
            .await?
            .ok_or(AccessError::NotFound("user"))?;
        self.not_above(who, u.id, "this user").await?;
        let granted = self.resolve_roles(roles).await?;
        within(who, union(&granted), "these roles")?;
        let ids: Vec<_> = granted.iter().map(|r| r.id).collect();
        let before: Vec<String> = self
            .store
            .granted_roles(Grantee::User(u.id))
            .await?
            .into_iter()
            .map(|r| r.name)
            .collect();
        let _serial = self
            .keeps_a_manager(who, Change::UserRoles(u.id, &granted))
            .await?;
        let audit = who.audit_context(client).record(
            self.clock.now(),
            "grant.user",
            format!("user:{}", u.username),
            json!({"roles": {"from": before, "to": roles}}),
        );
        self.store
            .set_grants(Grantee::User(u.id), &ids, &audit)
            .await?;
        self.invalidate();
        Ok(roles.to_vec())
    }

    /// Refuses a change after which no enabled user could manage users: the
    /// effective permissions of every user are worked out as they would be
    /// after `change`, through direct grants and groups alike.
    ///
    /// The check and the write it allows must be one step, or two admins
    /// removing each other at the same moment both pass (each sees the other
    /// still able to manage users). So the returned guard serialises every
    /// such change from the check until the caller drops it, after its write
    /// has committed; the check reads the store, so it sees what the change
    /// before it wrote. One Steward serves a data directory, so one process
    /// holds every such change. Under the guard the caller's own permissions
    /// are read again from the store: one whose roles were taken away while
    /// the request waited is refused, not served with what it held before.
    pub(crate) async fn keeps_a_manager(
        &self,
        who: &Identity,
        change: Change<'_>,
    ) -> Result<tokio::sync::MutexGuard<'_, ()>, AccessError> {
        let serial = self.manager_rule.lock().await;
        let caller = self.store.get_user(who.user_id).await?;
        let now_held = union(&self.store.effective_roles(who.user_id).await?);
        if caller.disabled || !who.permissions.is_subset_of(now_held) {
            return Err(AccessError::Forbidden(
                "your roles changed while this request was waiting; sign in again or retry".into(),
            ));
        }
        self.no_manager_left(change).await?;
        Ok(serial)
    }

    async fn no_manager_left(&self, change: Change<'_>) -> Result<(), AccessError> {
        let manage = Permission::write(steward_domain::Module::Users);
        let roles = self.store.list_roles().await?;
        let by_name = |n: &str| roles.iter().find(|r| r.name.eq_ignore_ascii_case(n));
        let counts = |r: &Role| !matches!(change, Change::RemoveRole(id) if id == r.id);
        let groups = self.store.list_groups().await?;
        for u in self.store.list_users().await? {
            let gone = match change {
                Change::RemoveUser(id) | Change::DisableUser(id) => id == u.id,
                _ => false,
            };
            if u.disabled || gone {
                continue;
            }
            let direct = match change {
                Change::UserRoles(id, new) if id == u.id => new.to_vec(),
                _ => self.store.granted_roles(Grantee::User(u.id)).await?,
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
        Ok(self.store.list_groups().await?)
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
        Ok(self.store.create_group(name, now, &audit).await?)
    }

    pub async fn delete_group(
        &self,
        who: &Identity,
        name: &str,
        client: &ClientInfo,
    ) -> Result<(), AccessError> {
        let g = self
            .store
            .find_group(name)
            .await?
            .ok_or(AccessError::NotFound("group"))?;
        within(who, self.group_permissions(&g).await?, "the group's roles")?;
        let _serial = self.keeps_a_manager(who, Change::RemoveGroup(g.id)).await?;
        let audit = who.audit_context(client).record(self.clock.now(), "group.delete", format!("group:{name}"), json!({"members": {"from": g.members, "to": null}, "roles": {"from": g.roles, "to": null}}));
        self.store.delete_group(g.id, &audit).await?;
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
        let g = self
            .store
            .find_group(name)
            .await?
            .ok_or(AccessError::NotFound("group"))?;
        within(who, self.group_permissions(&g).await?, "the group's roles")?;
        let mut ids = vec![];
        for (i, m) in members.iter().enumerate() {
            let u = self.store.find_user(m).await?.ok_or_else(|| {
                ValidationError::new(format!("members[{i}]"), format!("no user named {m:?}"))
            })?;
            ids.push(u.id);
        }
        let _serial = self
            .keeps_a_manager(who, Change::GroupMembers(g.id, &ids))
            .await?;
        let audit = who.audit_context(client).record(
            self.clock.now(),
            "group.members",
            format!("group:{name}"),
            json!({"members": {"from": g.members, "to": members}}),
        );
        self.store.set_members(g.id, &ids, &audit).await?;
        self.invalidate();
        self.store
            .find_group(name)
            .await?
            .ok_or(AccessError::NotFound("group"))
    }

    pub async fn set_group_roles(
        &self,
        who: &Identity,
        name: &str,
        roles: &[String],
        client: &ClientInfo,
    ) -> Result<Group, AccessError> {
        let g = self
            .store
            .find_group(name)
            .await?
            .ok_or(AccessError::NotFound("group"))?;
        within(
            who,
            self.group_permissions(&g).await?,
            "the group's current roles",
        )?;
        let granted = self.resolve_roles(roles).await?;
        within(who, union(&granted), "these roles")?;
        let ids: Vec<_> = granted.iter().map(|r| r.id).collect();
        let _serial = self
            .keeps_a_manager(who, Change::GroupRoles(g.id, &granted))
            .await?;
        let audit = who.audit_context(client).record(
            self.clock.now(),
            "grant.group",
            format!("group:{name}"),
            json!({"roles": {"from": g.roles, "to": roles}}),
        );
        self.store
            .set_grants(Grantee::Group(g.id), &ids, &audit)
            .await?;
        self.invalidate();
        self.store
            .find_group(name)
            .await?
            .ok_or(AccessError::NotFound("group"))
    }
}
