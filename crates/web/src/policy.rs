//! The route table: every route and what it takes to call it. The authorize
//! middleware looks each request up here after routing; a route missing from
//! the table is refused for everyone (deny by default), and the route-table
//! test walks the OpenAPI document so a route added without a policy fails it.

use axum::http::Method;
use steward_domain::{Module, Permission};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// No identity needed (sign-in, health, the OpenAPI document).
    Public,
    /// Any signed-in identity, even one that must still change its password
    /// (sign-out, who am I, change password).
    Authenticated,
    /// A session cookie, not an API token, even with a pending password
    /// change: account recovery decisions (change password, sign out
    /// everywhere) are not for tokens.
    OwnSession,
    /// A session cookie whose password is not pending a change.
    SessionOnly,
    /// A permission.
    Needs(Permission),
    /// A session cookie (whose password is not pending a change), or an API
    /// token that carries this permission: a token narrowed to `jobs:read`
    /// must not list or revoke its owner's other tokens.
    SessionOr(Permission),
}

use Module::*;
use Policy::*;

const fn read(m: Module) -> Policy {
    Needs(Permission::read(m))
}
const fn write(m: Module) -> Policy {
    Needs(Permission::write(m))
}

/// (method, route pattern as registered, policy)
pub const ROUTES: &[(&str, &str, Policy)] = &[
    ("GET", "/healthz", Public),
    ("GET", "/readyz", Public),
    // Guarded by its own optional bearer token (metrics.token).
    ("GET", "/metrics", Public),
    ("GET", "/api/v1/openapi.json", Public),
    ("POST", "/api/v1/auth/sign-in", Public),
    ("POST", "/api/v1/auth/password-reset", Public),
    ("POST", "/api/v1/auth/password-reset/confirm", Public),
    // A bearer token is not signed out; it is revoked (DELETE /api/v1/tokens/ID).
    ("POST", "/api/v1/auth/sign-out", OwnSession),
    ("POST", "/api/v1/auth/sign-out-everywhere", OwnSession),
    ("GET", "/api/v1/auth/me", Authenticated),
    ("POST", "/api/v1/auth/password", OwnSession),
    ("GET", "/api/v1/auth/sessions", SessionOnly),
    ("DELETE", "/api/v1/auth/sessions/{session}", SessionOnly),
    ("GET", "/api/v1/tokens", SessionOr(Permission::read(Tokens))),
    (
        "POST",
        "/api/v1/tokens",
        SessionOr(Permission::write(Tokens)),
    ),
    (
        "DELETE",
        "/api/v1/tokens/{token}",
        SessionOr(Permission::write(Tokens)),
    ),
    ("GET", "/api/v1/jobs", read(Jobs)),
    ("POST", "/api/v1/jobs", write(Jobs)),
    ("GET", "/api/v1/jobs/{job}", read(Jobs)),
    ("PUT", "/api/v1/jobs/{job}", write(Jobs)),
    ("DELETE", "/api/v1/jobs/{job}", write(Jobs)),
    ("POST", "/api/v1/jobs/{job}/enable", write(Jobs)),
    ("POST", "/api/v1/jobs/{job}/disable", write(Jobs)),
    ("POST", "/api/v1/jobs/{job}/run", write(Runs)),
    ("GET", "/api/v1/runs", read(Runs)),
    ("GET", "/api/v1/runs/{run}", read(Runs)),
    ("POST", "/api/v1/runs/{run}/cancel", write(Runs)),
    ("GET", "/api/v1/runs/{run}/output", read(Runs)),
    ("GET", "/api/v1/runs/{run}/output/follow", read(Runs)),
    ("POST", "/api/v1/schedules/preview", read(Jobs)),
    ("GET", "/api/v1/secrets", read(Secrets)),
    ("PUT", "/api/v1/secrets/{name}", write(Secrets)),
    ("DELETE", "/api/v1/secrets/{name}", write(Secrets)),
    ("GET", "/api/v1/users", read(Users)),
    ("POST", "/api/v1/users", write(Users)),
    ("GET", "/api/v1/users/{user}", read(Users)),
    ("PATCH", "/api/v1/users/{user}", write(Users)),
    ("DELETE", "/api/v1/users/{user}", write(Users)),
    ("PUT", "/api/v1/users/{user}/roles", write(Users)),
    ("GET", "/api/v1/roles", read(Users)),
    ("POST", "/api/v1/roles", write(Users)),
    ("DELETE", "/api/v1/roles/{role}", write(Users)),
    ("GET", "/api/v1/groups", read(Users)),
    ("POST", "/api/v1/groups", write(Users)),
    ("DELETE", "/api/v1/groups/{group}", write(Users)),
    ("PUT", "/api/v1/groups/{group}/members", write(Users)),
    ("PUT", "/api/v1/groups/{group}/roles", write(Users)),
    ("GET", "/api/v1/audit", read(Audit)),
    ("GET", "/api/v1/audit/export", read(Audit)),
    ("GET", "/api/v1/audit/verify", read(Audit)),
    ("GET", "/api/v1/settings/smtp", read(Settings)),
    ("PUT", "/api/v1/settings/smtp", write(Settings)),
    ("POST", "/api/v1/settings/smtp/test", write(Settings)),
    ("POST", "/api/v1/keys/rotate", write(Settings)),
];

pub fn lookup(method: &Method, path: &str) -> Option<Policy> {
    // HEAD is answered by GET routes.
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    ROUTES
        .iter()
        .find(|(m, p, _)| *m == method && *p == path)
        .map(|(_, _, policy)| *policy)
}
