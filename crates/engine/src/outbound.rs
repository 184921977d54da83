//! The outbound policy, enforced where connections are made: every resolved
//! address is checked before the HTTP client may connect to it, literal addresses
//! and redirect targets are checked too, and every client has timeouts.

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use steward_domain::outbound::refusal_for;
use steward_domain::{HttpUrl, OutboundRule};

/// Why an outbound request was refused before any byte was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    #[error("outbound policy refused {target}: {ip} is {rule} (allow it with outbound.allow in the configuration)")]
    Refused {
        target: String,
        ip: IpAddr,
        rule: OutboundRule,
    },
    #[error("outbound policy refused {target}: scheme {scheme:?} is not http or https")]
    Scheme { target: String, scheme: String },
    #[error("could not resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
}

#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    allow: Arc<Vec<IpNet>>,
}

impl OutboundPolicy {
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self {
            allow: Arc::new(allow),
        }
    }

    pub fn check_ip(&self, target: &str, ip: IpAddr) -> Result<(), OutboundError> {
        match refusal_for(ip) {
            Some(rule) if !self.allow.iter().any(|net| net.contains(&ip)) => {
                Err(OutboundError::Refused {
                    target: target.to_owned(),
                    ip,
                    rule,
                })
            }
            _ => Ok(()),
        }
    }

    /// Checks a URL whose host is a literal address; host names are checked at
    /// resolution time by the client's resolver.
    pub fn check_url(&self, url: &url::Url) -> Result<(), OutboundError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(OutboundError::Scheme {
                target: url.to_string(),
                scheme: url.scheme().to_owned(),
            });
        }
        let ip = match url.host() {
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            _ => return Ok(()),
        };
        self.check_ip(&redacted(url), ip)
    }

    /// Resolves `host` and checks every address; used to give an early, clear error
    /// when a job is saved. The connection-time check is the one that protects.
    pub async fn resolve_checked(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, OutboundError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| OutboundError::Resolve {
                host: host.to_owned(),
                reason: e.to_string(),
            })?
            .collect();
        if addrs.is_empty() {
            return Err(OutboundError::Resolve {
                host: host.to_owned(),
                reason: "no addresses".into(),
            });
        }
        for a in &addrs {
            self.check_ip(host, a.ip())?;
        }
        Ok(addrs)
    }

    /// Checks a job's URL when it is saved: literal addresses, then the addresses
    /// the host name resolves to now. A name that does not resolve is accepted
    /// here (DNS may be down); it is checked again at every run.
    pub async fn precheck(&self, url: &HttpUrl) -> Result<(), OutboundError> {
        let u = url.as_url();
        self.check_url(u)?;
        if let Some(url::Host::Domain(host)) = u.host() {
            let port = u.port_or_known_default().unwrap_or(80);
            match tokio::time::timeout(Duration::from_secs(3), self.resolve_checked(host, port))
                .await
            {
                Ok(Err(e @ OutboundError::Refused { .. })) => return Err(e),
                _ => return Ok(()),
            }
        }
        Ok(())
    }

    /// An HTTP client that can only reach what this policy allows.
    pub fn client(
        &self,
        follow_redirects: bool,
        user_agent: &str,
    ) -> reqwest::Result<reqwest::Client> {
        let redirect = if follow_redirects {
            let policy = self.clone();
            reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= 10 {
                    return attempt.error("more than 10 redirects");
                }
                match policy.check_url(attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(e) => attempt.error(e),
                }
            })
        } else {
            reqwest::redirect::Policy::none()
        };
        reqwest::Client::builder()
            .dns_resolver(Arc::new(CheckingResolver {
                policy: self.clone(),
            }))
            .redirect(redirect)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(300))
            .no_proxy()
            .user_agent(user_agent)
            .build()
    }
}

/// Resolves with the system resolver, then refuses the whole name if any address
/// is forbidden, so the client only ever connects to checked addresses.
struct CheckingResolver {
    policy: OutboundPolicy,
}

impl Resolve for CheckingResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let addrs = policy.resolve_checked(name.as_str(), 0).await?;
            let iter: Addrs = Box::new(addrs.into_iter());
            Ok(iter)
        })
    }
}

/// A URL without its query and fragment, which often carry tokens; for messages.
pub fn redacted(url: &url::Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// Finds an [`OutboundError`] in a reqwest error's cause chain.
pub fn outbound_cause<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a OutboundError> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(o) = e.downcast_ref::<OutboundError>() {
            return Some(o);
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_resolving_to_loopback_are_refused() {
        let p = OutboundPolicy::default();
        let e = p.resolve_checked("localhost", 80).await.unwrap_err();
        assert!(e.to_string().contains("loopback"), "{e}");
        let allowed = OutboundPolicy::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]);
        assert!(allowed.resolve_checked("localhost", 80).await.is_ok());
    }

    #[test]
    fn allow_list_is_per_network() {
        let p = OutboundPolicy::new(vec!["127.0.0.1/32".parse().unwrap()]);
        assert!(p.check_ip("x", "127.0.0.1".parse().unwrap()).is_ok());
        assert!(p.check_ip("x", "127.0.0.2".parse().unwrap()).is_err());
        assert!(p.check_ip("x", "169.254.169.254".parse().unwrap()).is_err());
    }
}
