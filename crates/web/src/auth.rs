//! Authentication and authorisation at the edge.
//!
//! `authenticate` (outer layer) works out the client address (X-Forwarded-For
//! only from a trusted proxy), resolves a bearer token or session cookie into
//! an identity, and applies the per-token / per-address API rate limit.
//! `authorize` (route layer, after routing) looks the matched route up in
//! [`crate::policy`] and decides: identity, pending password change,
//! permission, CSRF token for cookie-authenticated state changes.

use crate::error::ApiError;
use crate::policy::{lookup, Policy};
use crate::AppState;
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use steward_access::{ClientInfo, Identity, Via};
use steward_domain::AuditContext;

pub const CSRF_HEADER: &str = "x-csrf-token";

/// Edge settings for authentication.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Peers whose X-Forwarded-For is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Mark the session cookie `Secure` (and use the `__Host-` name).
    pub secure_cookies: bool,
    /// Send Strict-Transport-Security (served over HTTPS).
    pub hsts: bool,
    /// API requests per second per token, session or address, and the burst.
    /// `None` disables the limit.
    pub api_rate: Option<(NonZeroU32, NonZeroU32)>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            trusted_proxies: vec![],
            secure_cookies: false,
            hsts: false,
            api_rate: NonZeroU32::new(50).zip(NonZeroU32::new(200)),
        }
    }
}

impl AuthSettings {
    pub fn cookie_name(&self) -> &'static str {
        if self.secure_cookies {
            "__Host-steward_session"
        } else {
            "steward_session"
        }
    }

    /// The `Set-Cookie` value for a new session, or for clearing it.
    pub fn session_cookie(&self, value: Option<&str>, max_age_secs: i64) -> HeaderValue {
        let secure = if self.secure_cookies { "; Secure" } else { "" };
        let (v, age) = match value {
            Some(v) => (v, max_age_secs),
            None => ("", 0),
        };
        HeaderValue::from_str(&format!(
            "{}={v}; Path=/; HttpOnly; SameSite=Lax; Max-Age={age}{secure}",
            self.cookie_name()
        ))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

pub struct ApiLimiter {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
}

impl ApiLimiter {
    pub fn new(rate: Option<(NonZeroU32, NonZeroU32)>) -> Self {
        Self {
            limiter: rate.map(|(per_sec, burst)| {
                RateLimiter::keyed(Quota::per_second(per_sec).allow_burst(burst))
            }),
        }
    }

    pub fn enabled(&self) -> bool {
        self.limiter.is_some()
    }

    /// `Err(seconds to wait)` when `key` is over its rate.
    fn check(&self, key: String) -> Result<(), u64> {
        let Some(l) = &self.limiter else {
            return Ok(());
        };
        if l.len() > 50_000 {
            l.retain_recent();
        }
        l.check_key(&key).map_err(|not_until| {
            not_until
                .wait_time_from(DefaultClock::default().now())
                .as_millis()
                .div_ceil(1000)
                .try_into()
                .unwrap_or(u64::MAX)
                .max(1)
        })
    }
}

/// The client's address: the TCP peer, or, when the peer is a trusted proxy,
/// the nearest untrusted hop in X-Forwarded-For.
pub fn client_address(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trusted: &[IpNet],
) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    // When every hop is a trusted proxy the leftmost one could be anything the
    // client wrote; the peer is the last address known to be true.
    Some(
        hops.iter()
            .rev()
            .find(|ip| !is_trusted(ip))
            .copied()
            .unwrap_or(peer),
    )
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn unauthenticated(message: &str) -> Response {
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message).into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    // Identities exist only for the API; /healthz, /readyz and /metrics (with
    // its own token) stay cheap and unaffected by a stale Authorization header.
    if !req.uri().path().starts_with("/api/") {
        return next.run(req).await;
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let headers = req.headers();
    let client = ClientInfo {
        address: client_address(peer, headers, &state.auth.trusted_proxies),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(256).collect()),
    };
    let identity = if let Some(token) = bearer(headers) {
        match state.access.authenticate_token(token).await {
            Ok(Some(id)) => Some(id),
            // A presented token that does not work is an error, not anonymity;
            // guesses count against the address's rate like any anonymous call.
            Ok(None) => {
                if let Err(wait) = state.limiter.check(address_key(&client)) {
                    return too_many(wait, "API rate limit exceeded");
                }
                return unauthenticated("the bearer token is invalid, expired or revoked");
            }
            Err(e) => return ApiError::from(e).into_response(),
        }
    } else if let Some(cookie) = cookie_value(headers, state.auth.cookie_name()) {
        match state.access.authenticate_session(cookie).await {
            Ok(id) => id,
            Err(e) => return ApiError::from(e).into_response(),
        }
    } else {
        None
    };
    if state.limiter.enabled() {
        let key = match identity.as_ref().map(|i| &i.via) {
            Some(Via::Token { id, .. }) => format!("token:{id}"),
            Some(Via::Session { id, .. }) => format!("session:{id}"),
            None => format!(
                "address:{}",
                client.address.map_or_else(String::new, |a| a.to_string())
            ),
        };
        if let Err(wait) = state.limiter.check(key) {
            return too_many(wait, "API rate limit exceeded");
        }
    }
    req.extensions_mut().insert(client);
    if let Some(id) = identity {
        req.extensions_mut().insert(id);
    }
    next.run(req).await
}

fn address_key(client: &ClientInfo) -> String {
    format!(
        "address:{}",
        client.address.map_or_else(String::new, |a| a.to_string())
    )
}

pub fn too_many(retry_after_secs: u64, message: &str) -> Response {
    let mut r = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("{message}; retry in {retry_after_secs} s"),
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

pub async fn authorize(req: Request, next: Next) -> Response {
    let Some(path) = req.extensions().get::<MatchedPath>() else {
        return next.run(req).await;
    };
    let Some(policy) = lookup(req.method(), path.as_str()) else {
        tracing::error!(method = %req.method(), path = path.as_str(), "route has no access policy; refused");
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "no_policy",
            "this route has no access policy",
        )
        .into_response();
    };
    if policy == Policy::Public {
        return next.run(req).await;
    }
    let Some(identity) = req.extensions().get::<Identity>() else {
        return unauthenticated("sign in or send a bearer token");
    };
    let by_session = matches!(identity.via, Via::Session { .. });
    if matches!(policy, Policy::OwnSession | Policy::SessionOnly) && !by_session {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "session_required",
            "this needs a signed-in session, not an API token",
        )
        .into_response();
    }
    if identity.must_change_password
        && !matches!(policy, Policy::Authenticated | Policy::OwnSession)
    {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "password_change_required",
            "change your password first (POST /api/v1/auth/password)",
        )
        .into_response();
    }
    let needed = match policy {
        Policy::Needs(p) => Some(p),
        Policy::SessionOr(p) if !by_session => Some(p),
        _ => None,
    };
    if let Some(p) = needed {
        if !identity.allows(p) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this needs the permission {p}"),
            )
            .into_response();
        }
    }
    let changes_state = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if changes_state {
        let presented = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        if !identity.csrf_ok(presented) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf_token_invalid",
                "a cookie-authenticated change needs the session's X-CSRF-Token header",
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// The authenticated caller of a handler (authorisation already passed).
#[derive(Clone)]
pub struct Caller {
    pub identity: Identity,
    pub client: ClientInfo,
}

impl Caller {
    pub fn ctx(&self) -> AuditContext {
        self.identity.audit_context(&self.client)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let identity = parts
            .extensions
            .get::<Identity>()
            .cloned()
            .ok_or_else(|| unauthenticated("sign in or send a bearer token"))?;
        let client = parts
            .extensions
            .get::<ClientInfo>()
            .cloned()
            .unwrap_or_default();
        Ok(Self { identity, client })
    }
}

/// Client facts for handlers that run without an identity (sign-in, reset).
pub struct Client(pub ClientInfo);

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<ClientInfo>()
                .cloned()
                .unwrap_or_default(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.7, 10.0.0.2"),
        );
        let untrusted_peer: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(
            client_address(Some(untrusted_peer), &h, &trusted),
            Some(untrusted_peer)
        );
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        // The nearest untrusted hop, not the spoofable leftmost one.
        assert_eq!(
            client_address(Some(proxy), &h, &trusted),
            "203.0.113.7".parse().ok()
        );
    }
}
