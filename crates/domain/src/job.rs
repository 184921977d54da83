//! Job definitions: what to run (a kind-specific spec) and the policies around it.
//!
//! A `JobDefinition` is what an operator writes (API body, `steward job create`
//! file). Serde does the shape checks (unknown fields refused, typed fields parsed);
//! [`JobDefinition::validate`] does the rules that span fields. The spec's own
//! fields are its kind's to check (`steward_engine::kinds`).

use crate::duration::DurationSpec;
use crate::error::ValidationError;
use crate::name::{JobName, LockName, Tag};
use crate::retry::RetryPolicy;
use crate::schedule::{Schedule, TimeZone};
use serde::{Deserialize, Serialize};

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

/// What a job runs: the name of its kind and that kind's fields.
///
/// To the domain, the API and the store a spec is data: the engine's kind
/// registry gives the fields their meaning (their shape and rules, where
/// `${secret:...}` may appear, how a run executes), so a new kind changes
/// none of them. Serialized as one object, `{"kind": "command", "argv": [...]}`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    kind: String,
    /// The fields as compact JSON text (an object, `kind` left out): every
    /// job's definition stays in the engine's memory, where text costs a
    /// fraction of a parsed tree, and fields are read only when a job is
    /// saved or a run starts. Written from a map, so the keys are in order
    /// and equal fields are equal text.
    fields: Box<str>,
}

/// Longest kind name.
const MAX_KIND: usize = 32;

impl JobSpec {
    /// A spec of `kind` with `fields` (any `kind` among them is ignored).
    pub fn new(
        kind: &str,
        mut fields: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, ValidationError> {
        let valid = !kind.is_empty()
            && kind.len() <= MAX_KIND
            && kind.starts_with(|c: char| c.is_ascii_lowercase())
            && kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return Err(ValidationError::new(
                "kind",
                format!("{kind:?} is not a kind name (lowercase letters, digits and _, at most {MAX_KIND})"),
            ));
        }
        fields.remove("kind");
        let text =
            serde_json::to_string(&fields).map_err(|e| ValidationError::new("", e.to_string()))?;
        Ok(Self {
            kind: kind.to_owned(),
            fields: text.into_boxed_str(),
        })
    }

    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The kind's fields, without `kind` (parsed from the kept text).
    pub fn fields(&self) -> serde_json::Map<String, serde_json::Value> {
        // Written from a map by `new`: it parses back.
        serde_json::from_str(&self.fields).unwrap_or_default()
    }
}

impl Serialize for JobSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let fields = self.fields();
        let mut map = s.serialize_map(Some(fields.len() + 1))?;
        map.serialize_entry("kind", &self.kind)?;
        for (k, v) in &fields {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for JobSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        // Only an object: `["command", ["true"]]` is refused.
        let mut fields = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let kind = match fields.remove("kind") {
            Some(serde_json::Value::String(k)) => k,
            Some(_) => return Err(D::Error::custom("kind must be a string")),
            None => return Err(D::Error::missing_field("kind")),
        };
        Self::new(&kind, fields).map_err(|e| D::Error::custom(e.message))
    }
}

/// In the served API document this open shape is replaced by one schema per
/// registered kind (`steward_web::api::document`).
impl utoipa::PartialSchema for JobSpec {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .property("kind", ObjectBuilder::new().schema_type(Type::String))
            .required("kind")
            .into()
    }
}
impl utoipa::ToSchema for JobSpec {}

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
        assert!(parse(
            r#"{"name":"a","spec":{"kind":"command","argv":["true"]},"policies":{"timout":"1s"}}"#
        )
        .unwrap_err()
        .contains("timout"));
        // A spec is an object with a kind name; its fields are the kind's
        // to check (the engine's registry).
        assert!(parse(r#"{"name":"a","spec":{"kind":"Ftp!"}}"#)
            .unwrap_err()
            .contains("kind name"));
        assert!(parse(r#"{"name":"a","spec":["command",["true"]]}"#).is_err());
        assert!(parse(r#"{"name":"a","spec":{"argv":["true"]}}"#)
            .unwrap_err()
            .contains("kind"));
    }

    #[test]
    fn cross_field_rules() {
        let e = parse(
            r#"{"name":"a","spec":{"kind":"command","argv":["true"]},"policies":{"timeout":"0s"}}"#,
        )
        .unwrap_err();
        assert!(e.contains("policies.timeout"), "{e}");
        let e =
            parse(r#"{"name":"a","spec":{"kind":"command","argv":["true"]},"on_success":["a"]}"#)
                .unwrap_err();
        assert!(e.contains("itself"), "{e}");
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
    fn a_spec_round_trips_as_one_object() {
        let d = parse(r#"{"name":"a","spec":{"kind":"command","argv":["true"],"env":{"A":"b"}}}"#)
            .unwrap();
        assert_eq!(d.spec.kind(), "command");
        assert!(!d.spec.fields().contains_key("kind"));
        let v = serde_json::to_value(&d.spec).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"kind":"command","argv":["true"],"env":{"A":"b"}})
        );
    }
}
