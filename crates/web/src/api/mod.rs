//! The REST API under `/api/v1` and its OpenAPI document.

pub mod audit;
pub mod auth;
pub mod document;
pub mod follow;
pub mod jobs;
pub mod runs;
pub mod schedules;
pub mod secrets;
pub mod settings;
pub mod tokens;
pub mod users;
pub mod views;

use crate::AppState;
use axum::extract::State;
use axum::http::header;
use axum::routing::{delete, get, post, put};
use axum::Router;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "Steward API", description = "Scheduled operations work: jobs, runs, schedules."),
    paths(
        jobs::list, jobs::create, jobs::show, jobs::replace, jobs::delete, jobs::enable, jobs::disable, jobs::run_now,
        runs::list, runs::show, runs::cancel, runs::output, runs::follow,
        schedules::preview,
        auth::sign_in, auth::me, auth::sign_out, auth::sign_out_everywhere, auth::change_password,
        auth::sessions, auth::revoke_session, auth::request_reset, auth::confirm_reset,
        tokens::list, tokens::create, tokens::revoke,
        users::list, users::create, users::show, users::update, users::delete, users::set_roles,
        users::roles, users::create_role, users::delete_role,
        users::groups, users::create_group, users::delete_group, users::set_members, users::set_group_roles,
        secrets::list, secrets::put, secrets::delete,
        audit::list, audit::export, audit::verify,
        settings::smtp, settings::put_smtp, settings::test_smtp, settings::rotate_key,
    ),
    components(schemas(crate::error::ErrorBody, crate::error::ErrorDetail, jobs::JobListSort)),
    tags((name = "jobs"), (name = "runs"), (name = "schedules"), (name = "auth"), (name = "tokens"),
        (name = "users"), (name = "secrets"), (name = "audit"), (name = "settings")),
    modifiers(&Security),
    // Every operation needs a token or a session unless it says otherwise.
    security(("token" = []), ("session" = []))
)]
pub struct ApiDoc;

/// Declares the two ways to authenticate: bearer token and session cookie.
struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        c.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("steward_session"))),
        );
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/openapi.json",
            get(|State(s): State<AppState>| async move {
                ([(header::CONTENT_TYPE, "application/json")], s.document)
            }),
        )
        .route("/api/v1/jobs", get(jobs::list).post(jobs::create))
        .route(
            "/api/v1/jobs/{job}",
            get(jobs::show).put(jobs::replace).delete(jobs::delete),
        )
        .route("/api/v1/jobs/{job}/enable", post(jobs::enable))
        .route("/api/v1/jobs/{job}/disable", post(jobs::disable))
        .route("/api/v1/jobs/{job}/run", post(jobs::run_now))
        .route("/api/v1/runs", get(runs::list))
        .route("/api/v1/runs/{run}", get(runs::show))
        .route("/api/v1/runs/{run}/cancel", post(runs::cancel))
        .route("/api/v1/runs/{run}/output", get(runs::output))
        .route("/api/v1/runs/{run}/output/follow", get(runs::follow))
        .route("/api/v1/schedules/preview", post(schedules::preview))
        .route("/api/v1/auth/sign-in", post(auth::sign_in))
        .route("/api/v1/auth/sign-out", post(auth::sign_out))
        .route(
            "/api/v1/auth/sign-out-everywhere",
            post(auth::sign_out_everywhere),
        )
        .route("/api/v1/auth/me", get(auth::me))
        .route("/api/v1/auth/password", post(auth::change_password))
        .route("/api/v1/auth/sessions", get(auth::sessions))
        .route(
            "/api/v1/auth/sessions/{session}",
            delete(auth::revoke_session),
        )
        .route("/api/v1/auth/password-reset", post(auth::request_reset))
        .route(
            "/api/v1/auth/password-reset/confirm",
            post(auth::confirm_reset),
        )
        .route("/api/v1/tokens", get(tokens::list).post(tokens::create))
        .route("/api/v1/tokens/{token}", delete(tokens::revoke))
        .route("/api/v1/users", get(users::list).post(users::create))
        .route(
            "/api/v1/users/{user}",
            get(users::show).patch(users::update).delete(users::delete),
        )
        .route("/api/v1/users/{user}/roles", put(users::set_roles))
        .route("/api/v1/roles", get(users::roles).post(users::create_role))
        .route("/api/v1/roles/{role}", delete(users::delete_role))
        .route(
            "/api/v1/groups",
            get(users::groups).post(users::create_group),
        )
        .route("/api/v1/groups/{group}", delete(users::delete_group))
        .route("/api/v1/groups/{group}/members", put(users::set_members))
        .route("/api/v1/groups/{group}/roles", put(users::set_group_roles))
        .route("/api/v1/secrets", get(secrets::list))
        .route(
            "/api/v1/secrets/{name}",
            put(secrets::put).delete(secrets::delete),
        )
        .route("/api/v1/audit", get(audit::list))
        .route("/api/v1/audit/export", get(audit::export))
        .route("/api/v1/audit/verify", get(audit::verify))
        .route(
            "/api/v1/settings/smtp",
            get(settings::smtp).put(settings::put_smtp),
        )
        .route("/api/v1/settings/smtp/test", post(settings::test_smtp))
        .route("/api/v1/keys/rotate", post(settings::rotate_key))
}
