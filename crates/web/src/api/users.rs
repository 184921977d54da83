//! `/api/v1/users`, `/roles`, `/groups`: accounts and who may do what.

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::extract::ApiJson;
use crate::extract::ApiPath;
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use steward_domain::{PermissionSet, Username};
use steward_store::access::{Group, Role, User, UserChange};

#[derive(Serialize, utoipa::ToSchema)]
pub struct UserView {
    id: i64,
    username: String,
    email: Option<String>,
    roles: Vec<String>,
    must_change_password: bool,
    disabled: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

fn user_view(u: User, roles: Vec<String>) -> UserView {
    UserView {
        id: u.id.0,
        username: u.username.to_string(),
        email: u.email,
        roles,
        must_change_password: u.must_change,
        disabled: u.disabled,
        created_at: u.created_at,
        updated_at: u.updated_at,
    }
}

#[utoipa::path(get, path = "/api/v1/users", tag = "users", responses((status = 200, body = [UserView])))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<UserView>>> {
    let users = state.access.users().await?;
    Ok(Json(
        users.into_iter().map(|(u, r)| user_view(u, r)).collect(),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserRequest {
    /// 1 to 64 letters, digits, `.`, `_`, `-`, `@`, starting with a letter or digit.
    #[schema(value_type = String, min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9][A-Za-z0-9._@-]*$", example = "dana")]
    username: Username,
    #[serde(default)]
    email: Option<String>,
    /// Initial password; the user must change it at first sign-in.
    /// The initial password, changed at the first sign-in: 12 to 1024
    /// characters, and not easy to guess (zxcvbn score 3 or more).
    #[schema(value_type = String, min_length = 12, max_length = 1024, example = "amber kettle sings under nine bridges")]
    password: SecretString,
    #[serde(default)]
    #[schema(example = json!(["operator"]))]
    roles: Vec<String>,
}

#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = NewUserRequest, responses((status = 201, body = UserView), (status = 409), (status = 422)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<NewUserRequest>,
) -> ApiResult<(StatusCode, Json<UserView>)> {
    let user = state
        .access
        .create_user(
            &caller.identity,
            req.username,
            req.email,
            &req.password,
            &req.roles,
            &caller.client,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(user_view(user, req.roles))))
}

#[utoipa::path(get, path = "/api/v1/users/{user}", tag = "users", params(("user" = String, Path)), responses((status = 200, body = UserView), (status = 404)))]
pub async fn show(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<UserView>> {
    let (u, roles) = state.access.user(&name).await?;
    Ok(Json(user_view(u, roles)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// `null` removes the address.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<String>)]
    email: Option<Option<String>>,
    #[serde(default)]
    disabled: Option<bool>,
}

mod double_option {
    use serde::{Deserialize, Deserializer};
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<String>>, D::Error> {
        Option::<String>::deserialize(d).map(Some)
    }
}

#[utoipa::path(patch, path = "/api/v1/users/{user}", tag = "users", params(("user" = String, Path)), request_body = UserPatch, responses((status = 200, body = UserView)))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<UserPatch>,
) -> ApiResult<Json<UserView>> {
    let change = UserChange {
        email: req.email,
        disabled: req.disabled,
    };
    state
        .access
        .update_user(&caller.identity, &name, change, &caller.client)
        .await?;
    let (u, roles) = state.access.user(&name).await?;
    Ok(Json(user_view(u, roles)))
}

#[utoipa::path(delete, path = "/api/v1/users/{user}", tag = "users", params(("user" = String, Path)), responses((status = 204)))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state
        .access
        .delete_user(&caller.identity, &name, &caller.client)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolesBody {
    roles: Vec<String>,
}

#[utoipa::path(put, path = "/api/v1/users/{user}/roles", tag = "users", params(("user" = String, Path)), request_body = RolesBody, responses((status = 200, body = super::views::RoleNames)))]
pub async fn set_roles(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<RolesBody>,
) -> ApiResult<Json<super::views::RoleNames>> {
    let roles = state
        .access
        .set_user_roles(&caller.identity, &name, &req.roles, &caller.client)
        .await?;
    Ok(Json(super::views::RoleNames { roles }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RoleView {
    name: String,
    builtin: bool,
    permissions: Vec<String>,
}

fn role_view(r: Role) -> RoleView {
    RoleView {
        name: r.name,
        builtin: r.builtin,
        permissions: r.permissions.to_strings(),
    }
}

#[utoipa::path(get, path = "/api/v1/roles", tag = "users", responses((status = 200, body = [RoleView])))]
pub async fn roles(State(state): State<AppState>) -> ApiResult<Json<Vec<RoleView>>> {
    Ok(Json(
        state
            .access
            .roles()
            .await?
            .into_iter()
            .map(role_view)
            .collect(),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRole {
    #[schema(example = "auditor")]
    name: String,
    /// e.g. `["jobs:read", "runs:write"]`; write implies read.
    /// At least one of `MODULE:read` / `MODULE:write`.
    #[schema(value_type = Vec<String>, min_items = 1, example = json!(["audit:read", "jobs:read"]))]
    permissions: PermissionSet,
}

#[utoipa::path(post, path = "/api/v1/roles", tag = "users", request_body = NewRole, responses((status = 201, body = RoleView)))]
pub async fn create_role(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<NewRole>,
) -> ApiResult<(StatusCode, Json<RoleView>)> {
    let role = state
        .access
        .create_role(&caller.identity, &req.name, req.permissions, &caller.client)
        .await?;
    Ok((StatusCode::CREATED, Json(role_view(role))))
}

#[utoipa::path(delete, path = "/api/v1/roles/{role}", tag = "users", params(("role" = String, Path)), responses((status = 204)))]
pub async fn delete_role(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state
        .access
        .delete_role(&caller.identity, &name, &caller.client)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct GroupView {
    name: String,
    members: Vec<String>,
    roles: Vec<String>,
}

fn group_view(g: Group) -> GroupView {
    GroupView {
        name: g.name,
        members: g.members.into_iter().map(|m| m.to_string()).collect(),
        roles: g.roles,
    }
}

#[utoipa::path(get, path = "/api/v1/groups", tag = "users", responses((status = 200, body = [GroupView])))]
pub async fn groups(State(state): State<AppState>) -> ApiResult<Json<Vec<GroupView>>> {
    Ok(Json(
        state
            .access
            .groups()
            .await?
            .into_iter()
            .map(group_view)
            .collect(),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    name: String,
}

#[utoipa::path(post, path = "/api/v1/groups", tag = "users", request_body = NewGroup, responses((status = 201, body = GroupView)))]
pub async fn create_group(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<NewGroup>,
) -> ApiResult<(StatusCode, Json<GroupView>)> {
    let g = state
        .access
        .create_group(&caller.identity, &req.name, &caller.client)
        .await?;
    Ok((StatusCode::CREATED, Json(group_view(g))))
}

#[utoipa::path(delete, path = "/api/v1/groups/{group}", tag = "users", params(("group" = String, Path)), responses((status = 204)))]
pub async fn delete_group(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state
        .access
        .delete_group(&caller.identity, &name, &caller.client)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MembersBody {
    members: Vec<String>,
}

#[utoipa::path(put, path = "/api/v1/groups/{group}/members", tag = "users", params(("group" = String, Path)), request_body = MembersBody, responses((status = 200, body = GroupView)))]
pub async fn set_members(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<MembersBody>,
) -> ApiResult<Json<GroupView>> {
    let g = state
        .access
        .set_group_members(&caller.identity, &name, &req.members, &caller.client)
        .await?;
    Ok(Json(group_view(g)))
}

#[utoipa::path(put, path = "/api/v1/groups/{group}/roles", tag = "users", params(("group" = String, Path)), request_body = RolesBody, responses((status = 200, body = GroupView)))]
pub async fn set_group_roles(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<RolesBody>,
) -> ApiResult<Json<GroupView>> {
    let g = state
        .access
        .set_group_roles(&caller.identity, &name, &req.roles, &caller.client)
        .await?;
    Ok(Json(group_view(g)))
}
