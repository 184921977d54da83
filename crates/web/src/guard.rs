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
pub struct AllowedHosts {
    /// Host names served (`*` for any).
    pub names: Arc<Vec<String>>,
    /// `scheme://host[:port]` of the public URL: an Origin that may differ
    /// from Host when a proxy rewrites Host.
    pub public_origin: Option<Arc<str>>,
}

impl AllowedHosts {
    #[cfg(test)]
    fn loopback() -> Self {
        Self {
            names: Arc::new(vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into()]),
            public_origin: None,
        }
    }

    /// `host[:port]` → is `host` one of ours?
    fn allows(&self, authority: &str) -> bool {
        let host = strip_port(authority).to_ascii_lowercase();
        self.names
            .iter()
            .any(|h| h == "*" || h.eq_ignore_ascii_case(&host))
    }

    /// Same origin: the Origin's host and port are the request's Host, or it
    /// is the configured public origin. Another port on the same host (another
    /// app on localhost) is another origin.
    fn same_origin(&self, origin: &str, host: &str) -> bool {
        if origin == "null" {
            return false;
        }
        if self
            .public_origin
            .as_deref()
            .is_some_and(|p| p.eq_ignore_ascii_case(origin.trim_end_matches('/')))
        {
            return true;
        }
        origin
            .split_once("://")
            .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
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
            .is_some_and(|o| !hosts.same_origin(o, host));
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
    fn origins_must_match_host_and_port() {
        let h = AllowedHosts {
            public_origin: Some("https://steward.example.org".into()),
            ..AllowedHosts::loopback()
        };
        assert!(h.same_origin("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(
            !h.same_origin("http://127.0.0.1:3000", "127.0.0.1:8080"),
            "another app on another port"
        );
        assert!(!h.same_origin("null", "127.0.0.1:8080"));
        assert!(!h.same_origin("https://evil.example", "127.0.0.1:8080"));
        assert!(
            h.same_origin("https://steward.example.org", "10.0.0.5:8080"),
            "behind a proxy that rewrites Host"
        );
    }

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
