//! Request guards that run before any handler.
//!
//! Host check: while Steward serves only on loopback without authentication, a
//! web page could still reach it through DNS rebinding (its own name resolving to
//! 127.0.0.1). Browsers send that name in `Host`, so requests are accepted only
//! for the host names configured (loopback names by default).
//!
//! Cross-site check: a state-changing request a browser marks as cross-site
//! (`Sec-Fetch-Site: cross-site` or an `Origin` whose host is not allowed) is
//! refused, so a page elsewhere cannot post to the API.

use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

#[derive(Clone)]
pub struct AllowedHosts(pub Arc<Vec<String>>);

impl AllowedHosts {
    pub fn loopback() -> Self {
        Self(Arc::new(vec![
            "localhost".into(),
            "127.0.0.1".into(),
            "[::1]".into(),
        ]))
    }

    /// `host[:port]` → is `host` one of ours?
    fn allows(&self, authority: &str) -> bool {
        let host = strip_port(authority).to_ascii_lowercase();
        self.0
            .iter()
            .any(|h| h == "*" || h.eq_ignore_ascii_case(&host))
    }
}

fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        // [v6]:port
        return authority.find(']').map_or(authority, |i| &authority[..=i]);
    }
    authority.rsplit_once(':').map_or(authority, |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            authority
        }
    })
}

pub async fn guard(State(hosts): State<AllowedHosts>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !hosts.allows(host) {
        return ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "host_not_allowed",
            "this Host is not served here",
        )
        .into_response();
    }
    let changes_state = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if changes_state {
        let cross_site = req
            .headers()
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("cross-site"));
        let foreign_origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|o| {
                let authority = o.split_once("://").map_or("", |(_, rest)| rest);
                // Same origin as the request's Host, or a configured name.
                o == "null"
                    || (!authority.eq_ignore_ascii_case(host) && !hosts.allows(authority))
                    || (hosts.0.iter().any(|h| h == "*") && !authority.eq_ignore_ascii_case(host))
            });
        if cross_site || foreign_origin {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "cross_site_request",
                "cross-site requests are refused",
            )
            .into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_matching() {
        let h = AllowedHosts::loopback();
        for ok in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:1",
            "[::1]:8080",
            "LOCALHOST",
        ] {
            assert!(h.allows(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example",
            "evil.example:8080",
            "127.0.0.1.nip.io",
            "[::2]:80",
            "localhost.evil",
        ] {
            assert!(!h.allows(bad), "{bad}");
        }
    }
}
