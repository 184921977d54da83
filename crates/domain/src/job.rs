//! Job definitions: what to run (a kind-specific spec) and the policies around it.
//!
//! A `JobDefinition` is what an operator writes (API body, `steward job create`
//! file). Serde does the shape checks (unknown fields refused, typed fields parsed);
//! [`JobDefinition::validate`] does the rules that span fields.

use crate::duration::DurationSpec;
use crate::error::ValidationError;
use crate::name::{EnvName, JobName, LockName, Tag};
use crate::outbound::HttpUrl;
use crate::retry::RetryPolicy;
use crate::schedule::{Schedule, TimeZone};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobDefinition {
    pub name: JobName,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<Tag>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Absent or null: the job only runs when started by hand or by a chain.
    #[serde(default)]
    pub schedule: Option<Schedule>,
    /// Time zone the schedule is read in; absent means the server's default.
    #[serde(default)]
    pub timezone: Option<TimeZone>,
    pub spec: JobSpec,
    #[serde(default)]
    pub policies: Policies,
    /// Jobs started when a run of this job succeeds.
    #[serde(default)]
    pub on_success: Vec<JobName>,
    /// Jobs started when a run of this job finally fails (after its retries).
    #[serde(default)]
    pub on_failure: Vec<JobName>,
    /// Named resources a run holds while it executes; a run waits `queued`
    /// until every lock it names is free for it.
    #[serde(default)]
    pub locks: Vec<ResourceLock>,
}

/// A resource lock a job's runs take: exclusive (`holders: 1`, the default)
/// or counted (at most `holders` runs hold it at once). Runs sharing a lock
/// should declare the same `holders`; when they differ, the smallest among
/// the claimant and the current holders applies, so an exclusive declaration
/// is never shared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceLock {
    pub name: LockName,
    /// How many runs may hold the lock at once (1 to 1000).
    #[serde(default = "one")]
    #[schema(minimum = 1, maximum = 1000, default = 1)]
    pub holders: u32,
}

fn one() -> u32 {
    1
}

/// At most this many locks per job.
pub const MAX_LOCKS: usize = 16;
/// `run_all` catches up at most this many missed occurrences (Kubernetes'
/// CronJob controller gives up past 100 too); older ones are recorded as
/// one skipped run.
pub const MAX_CATCH_UP: usize = 100;

fn yes() -> bool {
    true
}

/// What a job runs. Later kinds (docker, postgres, ...) are added as variants.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobSpec {
    Command(CommandSpec),
    Http(HttpSpec),
}

/// The same shape, for reading: serde reads an internally tagged enum from
/// whatever the input offers, a JSON array by position included. A spec is
/// read as an object first, so `["command", ["true"]]` is refused.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum TaggedSpec {
    Command(CommandSpec),
    Http(HttpSpec),
}

impl<'de> Deserialize<'de> for JobSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectOnly;
        impl<'de> serde::de::Visitor<'de> for ObjectOnly {
            type Value = TaggedSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object with a \"kind\"")
            }
            // Only a map: the same map access, so errors keep their field path.
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<TaggedSpec, A::Error> {
                TaggedSpec::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        Ok(match d.deserialize_map(ObjectOnly)? {
            TaggedSpec::Command(c) => Self::Command(c),
            TaggedSpec::Http(h) => Self::Http(h),
        })
    }
}

impl JobSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Command(_) => "command",
            Self::Http(_) => "http",
        }
    }
}

/// A local command, run as argv without a shell unless `shell` is true.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    /// Program and arguments. With `shell: true`, exactly one element: the script
    /// given to `/bin/sh -c`. At most 4096 elements, no NUL bytes.
    #[schema(min_items = 1, max_items = 4096, example = json!(["/usr/local/bin/report", "--daily"]))]
    pub argv: Vec<String>,
    /// Run through `/bin/sh -c`. Explicit, and recorded in every run's output header.
    #[serde(default)]
    pub shell: bool,
    /// Absolute working directory; default `executor.workdir` of the server (`/`).
    #[serde(default)]
    pub workdir: Option<String>,
    /// Variables added to the process's environment, which is otherwise empty
    /// but for a minimal `PATH`, `STEWARD_RUN_ID`, `STEWARD_JOB_NAME`,
    /// `STEWARD_ATTEMPT`, `STEWARD_SCHEDULED_FOR` and, when it runs as another
    /// account, `HOME` and `USER`. A `PATH` here replaces the default.
    #[serde(default)]
    pub env: BTreeMap<EnvName, String>,
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

/// What to do when an occurrence is due while a run of the same job is active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum OverlapPolicy {
    /// Record the occurrence as `skipped`.
    #[default]
    Skip,
    /// Keep at most one run waiting; further occurrences are skipped.
    Queue,
    /// Start another run alongside (up to `policies.max_concurrent`).
    Allow,
}

/// What to do with occurrences that fell while Steward was not running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum MissedRunPolicy {
    /// Forget them; continue with the next future occurrence.
    #[default]
    Skip,
    /// Run once for the most recent missed occurrence, however many were missed.
    RunOnce,
    /// Run every missed occurrence, oldest first, up to the last 100; older
    /// ones are recorded as skipped.
    RunAll,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Policies {
    pub overlap: OverlapPolicy,
    pub missed: MissedRunPolicy,
    /// Hard limit of one attempt; then SIGTERM, the grace period, SIGKILL.
    pub timeout: DurationSpec,
    pub retries: RetryPolicy,
    /// Random delay, up to this long, before each scheduled start.
    pub jitter: DurationSpec,
    /// Finished runs kept for this job; older ones are deleted (1 to 100000).
    pub history_limit: u32,
    /// With overlap `allow`: at most this many runs of the job at once
    /// (absent: only the global `executor.max_active_runs` bounds them).
    #[schema(minimum = 1, maximum = 10000)]
    pub max_concurrent: Option<u32>,
    /// How long a run may wait in the queue (for capacity, a lock, or the
    /// job's previous run) before it is recorded as skipped. Absent: for a
    /// scheduled run, the time until the job's next occurrence, at least one
    /// minute (a run that cannot start before the next one is due is
    /// superseded by it); other runs wait without a deadline.
    pub start_deadline: Option<DurationSpec>,
}

impl Default for Policies {
    fn default() -> Self {
        Self {
            overlap: OverlapPolicy::Skip,
            missed: MissedRunPolicy::Skip,
            timeout: DurationSpec::from_secs(3600),
            retries: RetryPolicy::default(),
            jitter: DurationSpec::default(),
            history_limit: 100,
            max_concurrent: None,
            start_deadline: None,
        }
    }
}

const MAX_DESCRIPTION: usize = 4096;
const MAX_TAGS: usize = 32;
const MAX_ARGV: usize = 4096;
const MAX_TIMEOUT_SECS: u64 = 7 * 24 * 3600;

impl JobDefinition {
    /// Rules that span fields or bound sizes. Field names in errors are the JSON paths.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.description.len() > MAX_DESCRIPTION {
            return Err(ValidationError::new(
                "description",
                format!("longer than {MAX_DESCRIPTION} bytes"),
            ));
        }
        if self.tags.len() > MAX_TAGS {
            return Err(ValidationError::new(
                "tags",
                format!("more than {MAX_TAGS} tags"),
            ));
        }
        match &self.spec {
            JobSpec::Command(c) => c.validate().map_err(|e| e.within("spec"))?,
            JobSpec::Http(h) => h.validate().map_err(|e| e.within("spec"))?,
        }
        let p = &self.policies;
        if p.timeout.get().is_zero() {
            return Err(ValidationError::new(
                "policies.timeout",
                "must be greater than zero",
            ));
        }
        if p.timeout.get().as_secs() > MAX_TIMEOUT_SECS {
            return Err(ValidationError::new(
                "policies.timeout",
                "must be at most 7 days",
            ));
        }
        if p.jitter.get().as_secs() > 3600 {
            return Err(ValidationError::new(
                "policies.jitter",
                "must be at most 1h",
            ));
        }
        if !(1..=100_000).contains(&p.history_limit) {
            return Err(ValidationError::new(
                "policies.history_limit",
                "must be between 1 and 100000",
            ));
        }
        p.retries
            .validate()
            .map_err(|e| e.within("policies.retries"))?;
        if let Some(n) = p.max_concurrent {
            if p.overlap != OverlapPolicy::Allow {
                return Err(ValidationError::new(
                    "policies.max_concurrent",
                    "applies only with overlap \"allow\" (skip and queue run one at a time)",
                ));
            }
            if !(1..=10_000).contains(&n) {
                return Err(ValidationError::new(
                    "policies.max_concurrent",
                    "must be between 1 and 10000",
                ));
            }
        }
        if let Some(d) = p.start_deadline {
            if d.get().is_zero() || d.get().as_secs() > MAX_TIMEOUT_SECS {
                return Err(ValidationError::new(
                    "policies.start_deadline",
                    "must be between 1s and 7 days",
                ));
            }
        }
        if self.locks.len() > MAX_LOCKS {
            return Err(ValidationError::new(
                "locks",
                format!("at most {MAX_LOCKS} locks"),
            ));
        }
        for (i, lock) in self.locks.iter().enumerate() {
            if !(1..=1000).contains(&lock.holders) {
                return Err(ValidationError::new(
                    format!("locks[{i}].holders"),
                    "must be between 1 and 1000",
                ));
            }
            if self.locks[..i].iter().any(|l| l.name == lock.name) {
                return Err(ValidationError::new(
                    format!("locks[{i}].name"),
                    format!("{} is named twice", lock.name),
                ));
            }
        }
        for (field, list) in [
            ("on_success", &self.on_success),
            ("on_failure", &self.on_failure),
        ] {
            if list.len() > 16 {
                return Err(ValidationError::new(field, "at most 16 chained jobs"));
            }
            if list.contains(&self.name) {
                return Err(ValidationError::new(field, "a job cannot chain to itself"));
            }
        }
        Ok(())
    }
}

impl CommandSpec {
    pub fn validate(&self) -> Result<(), ValidationError> {
        let Some(program) = self.argv.first() else {
            return Err(ValidationError::new("argv", "must name a program"));
        };
        if program.is_empty() {
            return Err(ValidationError::new(
                "argv",
                "the program must not be empty",
            ));
        }
        if self.argv.len() > MAX_ARGV {
            return Err(ValidationError::new(
                "argv",
                format!("more than {MAX_ARGV} arguments"),
            ));
        }
        if let Some(i) = self.argv.iter().position(|a| a.contains('\0')) {
            return Err(ValidationError::new(
                format!("argv[{i}]"),
                "must not contain NUL bytes",
            ));
        }
        if let Some((name, _)) = self.env.iter().find(|(_, v)| v.contains('\0')) {
            return Err(ValidationError::new(
                format!("env.{}", name.as_str()),
                "must not contain NUL bytes",
            ));
        }
        if self.shell && self.argv.len() != 1 {
            return Err(ValidationError::new(
                "argv",
                "with shell: true, argv holds exactly one script",
            ));
        }
        if let Some(dir) = &self.workdir {
            if !dir.starts_with('/') {
                return Err(ValidationError::new("workdir", "must be an absolute path"));
            }
        }
        Ok(())
    }
}

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

    fn parse(json: &str) -> Result<JobDefinition, String> {
        let d: JobDefinition = serde_json::from_str(json).map_err(|e| e.to_string())?;
        d.validate().map_err(|e| e.to_string())?;
        Ok(d)
    }

    #[test]
    fn minimal_command_job_gets_defaults() {
        let d = parse(r#"{"name":"a","spec":{"kind":"command","argv":["true"]}}"#).unwrap();
        assert!(d.enabled);
        assert_eq!(d.policies.timeout.get().as_secs(), 3600);
        assert_eq!(d.policies.history_limit, 100);
        assert_eq!(d.policies.overlap, OverlapPolicy::Skip);
    }

    #[test]
    fn unknown_fields_refused_at_every_level() {
        assert!(
            parse(r#"{"name":"a","spec":{"kind":"command","argv":["true"]},"colour":1}"#)
                .unwrap_err()
                .contains("colour")
        );
        assert!(
            parse(r#"{"name":"a","spec":{"kind":"command","argv":["true"],"sh":1}}"#)
                .unwrap_err()
                .contains("sh")
        );
        assert!(parse(
            r#"{"name":"a","spec":{"kind":"command","argv":["true"]},"policies":{"timout":"1s"}}"#
        )
        .unwrap_err()
        .contains("timout"));
        assert!(parse(r#"{"name":"a","spec":{"kind":"ftp"}}"#)
            .unwrap_err()
            .contains("ftp"));
    }

    #[test]
    fn cross_field_rules() {
        let e = parse(r#"{"name":"a","spec":{"kind":"command","argv":["a","b"],"shell":true}}"#)
            .unwrap_err();
        assert!(e.contains("spec.argv"), "{e}");
        let e = parse(
            r#"{"name":"a","spec":{"kind":"command","argv":["true"]},"policies":{"timeout":"0s"}}"#,
        )
        .unwrap_err();
        assert!(e.contains("policies.timeout"), "{e}");
        let e =
            parse(r#"{"name":"a","spec":{"kind":"command","argv":["true"]},"on_success":["a"]}"#)
                .unwrap_err();
        assert!(e.contains("itself"), "{e}");
        let e = parse(r#"{"name":"a","spec":{"kind":"http","url":"https://x.test/","headers":{"X":"a\r\nb"}}}"#)
            .unwrap_err();
        assert!(e.contains("line break"), "{e}");
    }

    #[test]
    fn locks_and_limits() {
        let d = parse(r#"{"name":"a","spec":{"kind":"command","argv":["true"]},"locks":[{"name":"restic:offsite"},{"name":"pg:main","holders":2}]}"#).unwrap();
        assert_eq!(d.locks[0].holders, 1);
        assert_eq!(d.locks[1].holders, 2);
        let e = parse(r#"{"name":"a","spec":{"kind":"command","argv":["true"]},"locks":[{"name":"x"},{"name":"x","holders":2}]}"#).unwrap_err();
        assert!(e.contains("locks[1].name"), "{e}");
        let e = parse(r#"{"name":"a","spec":{"kind":"command","argv":["true"]},"locks":[{"name":"x","holders":0}]}"#).unwrap_err();
        assert!(e.contains("locks[0].holders"), "{e}");
        let e = parse(r#"{"name":"a","spec":{"kind":"command","argv":["true"]},"policies":{"max_concurrent":2}}"#).unwrap_err();
        assert!(e.contains("policies.max_concurrent"), "{e}");
        assert!(parse(r#"{"name":"a","spec":{"kind":"command","argv":["true"]},"policies":{"overlap":"allow","max_concurrent":2,"start_deadline":"10m","missed":"run_all"}}"#).is_ok());
        let e = parse(r#"{"name":"a","spec":{"kind":"command","argv":["true"]},"policies":{"start_deadline":"0s"}}"#).unwrap_err();
        assert!(e.contains("policies.start_deadline"), "{e}");
    }

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
}
