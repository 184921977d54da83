//! The `http` kind: an outbound HTTP call through the outbound policy, on
//! every hop (the call itself is `executor::http`). Its outcome is the
//! response status; it holds nothing outside Steward.

use super::{canonical, parse_fields, Fields, JobKind, KindSchema, SecretField};
use crate::executor::http::HttpExecutor;
use crate::executor::{ExecContext, ExecResult};
use crate::outbound::OutboundPolicy;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use steward_domain::{DurationSpec, HttpUrl, JobSpec, ValidationError};

pub struct HttpKind {
    policy: OutboundPolicy,
    executor: HttpExecutor,
}

impl HttpKind {
    pub fn new(policy: OutboundPolicy) -> reqwest::Result<Self> {
        Ok(Self {
            executor: HttpExecutor::new(policy.clone())?,
            policy,
        })
    }
}

#[async_trait]
impl JobKind for HttpKind {
    fn name(&self) -> &'static str {
        "http"
    }

    fn schema(&self) -> KindSchema {
        KindSchema::of::<HttpSpec>()
    }

    fn secret_fields(&self) -> &'static [SecretField] {
        const FIELDS: &[SecretField] = &[
            SecretField::url("url"),
            // Before `${secret:NAME}` existed header values were where
            // credentials went: the audit log shows none of them.
            SecretField::credential("headers/*"),
            SecretField::text("body"),
        ];
        FIELDS
    }

    fn validate(&self, spec: &JobSpec) -> Result<Fields, ValidationError> {
        let spec: HttpSpec = parse_fields(spec)?;
        spec.validate()?;
        canonical(&spec)
    }

    async fn check(&self, spec: &JobSpec) -> Result<(), ValidationError> {
        let spec: HttpSpec = parse_fields(spec)?;
        self.policy
            .precheck(&spec.url)
            .await
            .map_err(|e| ValidationError::new("url", e.to_string()))
    }

    async fn execute(&self, spec: &JobSpec, ctx: &ExecContext) -> ExecResult {
        match parse_fields::<HttpSpec>(spec) {
            Ok(spec) => self.executor.execute(&spec, ctx).await,
            Err(e) => ExecResult::failed(format!("invalid spec: {e}")),
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    #[default]
    #[serde(alias = "get")]
    Get,
    #[serde(alias = "head")]
    Head,
    #[serde(alias = "post")]
    Post,
    #[serde(alias = "put")]
    Put,
    #[serde(alias = "patch")]
    Patch,
    #[serde(alias = "delete")]
    Delete,
}

impl HttpMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }
}

/// An outbound HTTP call, subject to the outbound policy on every hop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSpec {
    #[serde(default)]
    pub method: HttpMethod,
    pub url: HttpUrl,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: Option<String>,
    /// Status codes that count as success, e.g. `["200-299", "304"]`.
    #[serde(default = "default_accepted")]
    pub accepted_status: Vec<StatusRange>,
    /// Timeout of the request itself (the job's timeout still bounds the run).
    #[serde(default = "default_http_timeout")]
    pub timeout: DurationSpec,
    /// Follow redirects (each hop re-checked against the outbound policy).
    #[serde(default = "yes")]
    pub follow_redirects: bool,
}

fn default_accepted() -> Vec<StatusRange> {
    vec![StatusRange { from: 200, to: 299 }]
}
fn default_http_timeout() -> DurationSpec {
    DurationSpec::from_secs(30)
}

/// An inclusive range of HTTP status codes, written `"204"` or `"200-299"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange {
    pub from: u16,
    pub to: u16,
}

impl StatusRange {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let bad = || {
            ValidationError::new(
                "",
                format!("{s:?} is not a status code or range like \"200-299\""),
            )
        };
        let code = |t: &str| {
            t.trim()
                .parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
        };
        let (from, to) = match s.split_once('-') {
            Some((a, b)) => (code(a).ok_or_else(bad)?, code(b).ok_or_else(bad)?),
            None => {
                let c = code(s).ok_or_else(bad)?;
                (c, c)
            }
        };
        if from > to {
            return Err(bad());
        }
        Ok(Self { from, to })
    }
    pub fn contains(&self, status: u16) -> bool {
        (self.from..=self.to).contains(&status)
    }
}

impl Serialize for StatusRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.from == self.to {
            s.collect_str(&self.from)
        } else {
            s.collect_str(&format_args!("{}-{}", self.from, self.to))
        }
    }
}
impl<'de> Deserialize<'de> for StatusRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u16),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(i) => Self::parse(&i.to_string()),
            Raw::Str(s) => Self::parse(&s),
        }
        .map_err(|e| serde::de::Error::custom(e.message))
    }
}
impl utoipa::PartialSchema for StatusRange {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .examples(["200-299"])
            .into()
    }
}
impl utoipa::ToSchema for StatusRange {}

impl HttpSpec {
    pub fn validate(&self) -> Result<(), ValidationError> {
        for (name, value) in &self.headers {
            let token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                return Err(ValidationError::new(
                    "headers",
                    format!("{name:?} is not a valid header name"),
                ));
            }
            if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                return Err(ValidationError::new(
                    "headers",
                    format!("value of {name} contains a line break"),
                ));
            }
        }
        if self.accepted_status.is_empty() {
            return Err(ValidationError::new(
                "accepted_status",
                "must list at least one status",
            ));
        }
        if self.timeout.get().is_zero() {
            return Err(ValidationError::new("timeout", "must be greater than zero"));
        }
        if self.body.as_ref().is_some_and(|b| b.len() > 1024 * 1024) {
            return Err(ValidationError::new("body", "larger than 1 MiB"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_ranges() {
        let r = StatusRange::parse("200-299").unwrap();
        assert!(r.contains(204) && !r.contains(300));
        assert!(StatusRange::parse("299-200").is_err());
        assert!(StatusRange::parse("42").is_err());
        let h: HttpSpec =
            serde_json::from_str(r#"{"url":"https://x.test/","accepted_status":[204,"300-301"]}"#)
                .unwrap();
        assert_eq!(h.accepted_status.len(), 2);
    }

    #[test]
    fn header_values_cannot_break_lines() {
        let h: HttpSpec =
            serde_json::from_str(r#"{"url":"https://x.test/","headers":{"X":"a\r\nb"}}"#).unwrap();
        let e = h.validate().unwrap_err().to_string();
        assert!(e.contains("line break"), "{e}");
    }
}
