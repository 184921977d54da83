//! The HTTP edge: REST API, operational endpoints, middleware (request ids,
//! tracing, body limits, security headers). Handlers are thin; the engine's
//! services hold the rules.

pub mod api;
pub mod auth;
pub mod error;
pub mod extract;
mod guard;
pub mod memory;
mod ops;
mod params;
pub mod policy;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, HeaderValue, Request};
use axum::routing::get;
use axum::Router;
use secrecy::SecretString;
use std::sync::Arc;
use steward_engine::Engine;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub access: Arc<steward_access::Access>,
    pub vault: Arc<steward_vault::Vault>,
    pub mailer: Arc<steward_notify::Mailer>,
    pub auth: Arc<auth::AuthSettings>,
    pub limiter: Arc<auth::ApiLimiter>,
    pub metrics_token: Option<Arc<SecretString>>,
    pub followers: Arc<api::follow::Followers>,
    /// The OpenAPI document as served, with this Steward's job kinds.
    pub document: bytes::Bytes,
}

pub struct WebSettings {
    pub auth: auth::AuthSettings,
    pub max_body_bytes: usize,
    /// Host names requests may be addressed to (DNS-rebinding defence).
    pub allowed_hosts: Vec<String>,
    /// `scheme://host[:port]` of the public URL, if configured.
    pub public_origin: Option<String>,
    pub metrics_token: Option<SecretString>,
    /// Output followers at once, in total and per user.
    pub max_followers: usize,
    pub max_followers_per_user: usize,
    /// What all followers together may send per second (0: no limit).
    pub follow_bytes_per_second: u64,
    /// Sees every routed response (tests validate them against the OpenAPI
    /// document); `None` in production, where the layer is not installed.
    pub observer: Option<ResponseObserver>,
}

/// One response as the observer sees it: JSON bodies whole, others empty.
pub struct Observed<'a> {
    pub method: &'a str,
    /// The route pattern, e.g. `/api/v1/jobs/{job}`.
    pub route: &'a str,
    pub status: u16,
    pub content_type: &'a str,
    pub body: &'a [u8],
}

pub type ResponseObserver = Arc<dyn Fn(Observed<'_>) + Send + Sync>;

async fn observe(
    axum::extract::State(observer): axum::extract::State<ResponseObserver>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let resp = next.run(req).await;
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let status = resp.status().as_u16();
    if !content_type.starts_with("application/json") {
        observer(Observed {
            method: &method,
            route: &route,
            status,
            content_type: &content_type,
            body: &[],
        });
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    observer(Observed {
        method: &method,
        route: &route,
        status,
        content_type: &content_type,
        body: &bytes,
    });
    axum::response::Response::from_parts(parts, axum::body::Body::from(bytes))
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub use guard::AllowedHosts;

/// The services the handlers call.
pub struct Services {
    pub engine: Arc<Engine>,
    pub access: Arc<steward_access::Access>,
    pub vault: Arc<steward_vault::Vault>,
    pub mailer: Arc<steward_notify::Mailer>,
}

pub fn router(services: Services, settings: WebSettings) -> Router {
    let hsts = settings.auth.hsts;
    let Services {
        engine,
        access,
        vault,
        mailer,
    } = services;
    let document = api::document::document_for(engine.kinds());
    let state = AppState {
        document: serde_json::to_vec(&document).unwrap_or_default().into(),
        engine,
        access,
        vault,
        mailer,
        limiter: Arc::new(auth::ApiLimiter::new(settings.auth.api_rate)),
        auth: Arc::new(settings.auth),
        metrics_token: settings.metrics_token.map(Arc::new),
        followers: Arc::new(api::follow::Followers::new(
            settings.max_followers,
            settings.max_followers_per_user,
            settings.follow_bytes_per_second,
        )),
    };
    let trace = TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
        let id = req.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
        tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
    })
    .on_response(tower_http::trace::DefaultOnResponse::new().level(tracing::Level::INFO));
    let mut routes = Router::new()
        .merge(api::routes())
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        // After routing, so both look up the matched route; authorisation first.
        .route_layer(axum::middleware::from_fn(params::refuse_unknown))
        .route_layer(axum::middleware::from_fn(auth::authorize));
    if let Some(observer) = settings.observer {
        routes = routes.route_layer(axum::middleware::from_fn_with_state(observer, observe));
    }
    routes
        .fallback(|| async { error::ApiError::not_found("route") })
        .method_not_allowed_fallback(|| async {
            error::ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this method is not allowed on this path (see /api/v1/openapi.json)",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .with_state(state)
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            guard::AllowedHosts {
                names: Arc::new(settings.allowed_hosts),
                public_origin: settings.public_origin.map(Into::into),
            },
            guard::guard,
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("permissions-policy"),
            HeaderValue::from_static(
                "camera=(), microphone=(), geolocation=(), payment=(), usb=(), interest-cohort=()",
            ),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::STRICT_TRANSPORT_SECURITY,
            move |_: &axum::http::Response<_>| {
                hsts.then(|| HeaderValue::from_static("max-age=63072000; includeSubDomains"))
            },
        ))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(trace)
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}
