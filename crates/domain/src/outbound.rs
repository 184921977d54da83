//! The outbound policy's pure half: which URLs are acceptable at all, and which
//! IP addresses are refused (and by which rule) unless an operator allow-lists them.
//! DNS resolution and connecting live in the engine, which calls [`refusal_for`]
//! on every resolved address before connecting to exactly that address.

use crate::error::ValidationError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The rule that refused an address. Named in every refusal message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundRule {
    Loopback,
    LinkLocal,
    CloudMetadata,
    Unspecified,
    Multicast,
    Broadcast,
}

impl OutboundRule {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Loopback => "loopback",
            Self::LinkLocal => "link-local",
            Self::CloudMetadata => "cloud-metadata",
            Self::Unspecified => "unspecified",
            Self::Multicast => "multicast",
            Self::Broadcast => "broadcast",
        }
    }
}

impl fmt::Display for OutboundRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The rule an address falls under, if any. IPv6 forms that embed an IPv4 address
/// (IPv4-mapped, IPv4-compatible, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are judged
/// by the embedded address, so `[::ffff:127.0.0.1]` is loopback.
pub fn refusal_for(ip: IpAddr) -> Option<OutboundRule> {
    match ip {
        IpAddr::V4(v4) => v4_rule(v4),
        IpAddr::V6(v6) => embedded_v4(v6).map_or_else(|| v6_rule(v6), v4_rule),
    }
}

fn v4_rule(ip: Ipv4Addr) -> Option<OutboundRule> {
    let o = ip.octets();
    if ip.is_loopback() {
        Some(OutboundRule::Loopback)
    } else if ip == Ipv4Addr::new(100, 100, 100, 200) {
        // Alibaba Cloud's metadata service lives outside link-local space.
        Some(OutboundRule::CloudMetadata)
    } else if ip.is_link_local() {
        // 169.254.0.0/16, which includes 169.254.169.254 (AWS, GCP, Azure metadata).
        if ip == Ipv4Addr::new(169, 254, 169, 254) {
            Some(OutboundRule::CloudMetadata)
        } else {
            Some(OutboundRule::LinkLocal)
        }
    } else if o[0] == 0 {
        // 0.0.0.0/8: "this network"; connecting to it reaches the local host on Linux.
        Some(OutboundRule::Unspecified)
    } else if ip.is_multicast() {
        Some(OutboundRule::Multicast)
    } else if ip.is_broadcast() {
        Some(OutboundRule::Broadcast)
    } else {
        None
    }
}

fn v6_rule(ip: Ipv6Addr) -> Option<OutboundRule> {
    let s = ip.segments();
    if ip.is_loopback() {
        Some(OutboundRule::Loopback)
    } else if ip.is_unspecified() {
        Some(OutboundRule::Unspecified)
    } else if ip == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) {
        Some(OutboundRule::CloudMetadata)
    } else if s[0] & 0xffc0 == 0xfe80 {
        Some(OutboundRule::LinkLocal)
    } else if ip.is_multicast() {
        Some(OutboundRule::Multicast)
    } else {
        None
    }
}

fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    // IPv4-compatible ::a.b.c.d (deprecated, still routed by some stacks); ::1 and :: are
    // IPv6 loopback/unspecified and handled by v6_rule.
    if s[..6] == [0; 6] && !(ip.is_loopback() || ip.is_unspecified()) {
        return Some(tail);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(tail);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

/// An absolute `http` or `https` URL with a host and no embedded credentials.
/// Parsing follows the WHATWG URL standard, so `http://2130706433/` is seen as
/// `http://127.0.0.1/`; the address checks happen on the parsed host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl(url::Url);

impl HttpUrl {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let url = url::Url::parse(s.trim()).map_err(|e| {
            if s.contains("${secret:") {
                ValidationError::new(
                    "",
                    format!("invalid URL: {e} (secrets may be used in the URL's path and query, not its host or port)"),
                )
            } else {
                ValidationError::new("", format!("invalid URL: {e}"))
            }
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ValidationError::new(
                "",
                format!(
                    "URL scheme {:?} is not allowed (only http and https)",
                    url.scheme()
                ),
            ));
        }
        if url.host().is_none() {
            return Err(ValidationError::new("", "URL has no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ValidationError::new(
                "",
                "credentials in the URL are not allowed; send them in a header instead",
            ));
        }
        Ok(Self(url))
    }

    pub fn as_url(&self) -> &url::Url {
        &self.0
    }

    /// The literal IP address of the host, when the URL names one.
    pub fn literal_ip(&self) -> Option<IpAddr> {
        match self.0.host()? {
            url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
            url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
            url::Host::Domain(_) => None,
        }
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.as_str().fmt(f)
    }
}
impl Serialize for HttpUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}
impl<'de> Deserialize<'de> for HttpUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(|e| serde::de::Error::custom(e.message))
    }
}
impl utoipa::PartialSchema for HttpUrl {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::Custom("uri".into())))
            .into()
    }
}
impl utoipa::ToSchema for HttpUrl {}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule_of(url: &str) -> Option<OutboundRule> {
        HttpUrl::parse(url)
            .unwrap()
            .literal_ip()
            .and_then(refusal_for)
    }

    #[test]
    fn refused_literals() {
        use OutboundRule::*;
        assert_eq!(rule_of("http://127.0.0.1/"), Some(Loopback));
        assert_eq!(rule_of("http://127.1.2.3:8080/"), Some(Loopback));
        assert_eq!(rule_of("http://[::1]/"), Some(Loopback));
        assert_eq!(
            rule_of("http://169.254.169.254/latest/meta-data/"),
            Some(CloudMetadata)
        );
        assert_eq!(rule_of("http://169.254.10.1/"), Some(LinkLocal));
        assert_eq!(rule_of("http://0.0.0.0/"), Some(Unspecified));
        assert_eq!(rule_of("http://[::]/"), Some(Unspecified));
        assert_eq!(rule_of("http://2130706433/"), Some(Loopback));
        assert_eq!(rule_of("http://0x7f.1/"), Some(Loopback));
        assert_eq!(rule_of("http://[::ffff:127.0.0.1]/"), Some(Loopback));
        assert_eq!(
            rule_of("http://[::ffff:169.254.169.254]/"),
            Some(CloudMetadata)
        );
        assert_eq!(rule_of("http://[64:ff9b::7f00:1]/"), Some(Loopback));
        assert_eq!(rule_of("http://[2002:7f00:1::]/"), Some(Loopback));
        assert_eq!(rule_of("http://[fe80::1]/"), Some(LinkLocal));
        assert_eq!(rule_of("http://[fd00:ec2::254]/"), Some(CloudMetadata));
        assert_eq!(rule_of("http://100.100.100.200/"), Some(CloudMetadata));
    }

    #[test]
    fn allowed_literals() {
        for u in [
            "http://192.168.1.10/",
            "https://10.0.0.1/",
            "http://93.184.216.34/",
            "http://[2606:4700::1111]/",
        ] {
            assert_eq!(rule_of(u), None, "{u}");
        }
    }

    #[test]
    fn url_shape() {
        assert!(HttpUrl::parse("ftp://example.com/")
            .unwrap_err()
            .message
            .contains("scheme"));
        assert!(HttpUrl::parse("file:///etc/passwd")
            .unwrap_err()
            .message
            .contains("scheme"));
        assert!(HttpUrl::parse("http://user:pw@example.com/")
            .unwrap_err()
            .message
            .contains("credentials"));
        assert!(HttpUrl::parse("not a url").is_err());
        assert!(HttpUrl::parse("https://example.com/x?y=1").is_ok());
    }
}
