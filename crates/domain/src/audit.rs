//! What the audit log records: who (actor), from where, what happened to what,
//! and which fields changed. Canonical bytes for the hash chain are defined
//! here so the store and `verify-audit` cannot disagree about them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorKind {
    /// A signed-in user (session).
    User,
    /// An API token; `id` is the token's id, `name` its owner.
    Token,
    /// Steward itself (bootstrap, scheduler, CLI admin commands).
    System,
    /// Nobody identified yet (failed sign-in, password reset request).
    Anonymous,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Token => "token",
            Self::System => "system",
            Self::Anonymous => "anonymous",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [Self::User, Self::Token, Self::System, Self::Anonymous]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub kind: ActorKind,
    pub id: Option<i64>,
    pub name: String,
}

impl Actor {
    pub fn system(what: &str) -> Self {
        Self {
            kind: ActorKind::System,
            id: None,
            name: what.to_owned(),
        }
    }
    pub fn anonymous() -> Self {
        Self {
            kind: ActorKind::Anonymous,
            id: None,
            name: String::new(),
        }
    }
}

/// Who is acting and from where; carried from the edge into every service call
/// that changes something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditContext {
    pub actor: Actor,
    pub address: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl AuditContext {
    pub fn system(what: &str) -> Self {
        Self {
            actor: Actor::system(what),
            address: None,
            user_agent: None,
        }
    }

    /// A record of `event` on `target` with `diff`, at `at`.
    pub fn record(
        &self,
        at: DateTime<Utc>,
        event: &str,
        target: impl Into<String>,
        diff: Value,
    ) -> AuditRecord {
        AuditRecord {
            at,
            actor: self.actor.clone(),
            address: self.address.map(|a| a.to_string()),
            // Bounded: a header is not a place to store a novel.
            user_agent: self
                .user_agent
                .as_ref()
                .map(|u| u.chars().take(256).collect()),
            event: event.to_owned(),
            target: target.into(),
            diff,
        }
    }
}

/// One entry as written (before the store gives it an id and chain hashes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at: DateTime<Utc>,
    pub actor: Actor,
    pub address: Option<String>,
    pub user_agent: Option<String>,
    pub event: String,
    pub target: String,
    pub diff: Value,
}

impl AuditRecord {
    /// The bytes the chain hashes: a JSON array in a fixed order, the time in
    /// milliseconds and the diff with sorted keys (serde_json's default map is
    /// ordered), so the same record always gives the same bytes.
    pub fn canonical(&self, id: i64, prev_hash: &str) -> Vec<u8> {
        let v = serde_json::json!([
            id,
            self.at.timestamp_millis(),
            self.actor.kind.as_str(),
            self.actor.id,
            self.actor.name,
            self.address,
            self.user_agent,
            self.event,
            self.target,
            self.diff,
            prev_hash,
        ]);
        v.to_string().into_bytes()
    }
}

/// The hash of the row before the first one.
pub const AUDIT_GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Marker put in place of a secret value in a diff.
pub const REDACTED: &str = "[redacted]";

/// Field-level difference of two JSON objects: `{field: {"from": a, "to": b}}`
/// for every top-level field that changed. `None` on one side means created or
/// deleted. Fields named in `secret_fields` appear only as `[redacted]`.
pub fn json_diff(before: Option<&Value>, after: Option<&Value>, secret_fields: &[&str]) -> Value {
    let empty = Map::new();
    let b = before.and_then(Value::as_object).unwrap_or(&empty);
    let a = after.and_then(Value::as_object).unwrap_or(&empty);
    let mut keys: Vec<&String> = b.keys().chain(a.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out = Map::new();
    for k in keys {
        let (from, to) = (b.get(k), a.get(k));
        if from == to {
            continue;
        }
        let hide = |v: Option<&Value>| match v {
            None | Some(Value::Null) => Value::Null,
            Some(_) if secret_fields.contains(&k.as_str()) => Value::String(REDACTED.into()),
            Some(v) => v.clone(),
        };
        out.insert(
            k.clone(),
            serde_json::json!({"from": hide(from), "to": hide(to)}),
        );
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diff_lists_changed_fields_and_redacts_secrets() {
        let d = json_diff(
            Some(&json!({"a": 1, "b": 2, "password": "x"})),
            Some(&json!({"a": 1, "b": 3, "password": "y", "c": true})),
            &["password"],
        );
        assert_eq!(
            d,
            json!({
                "b": {"from": 2, "to": 3},
                "c": {"from": null, "to": true},
                "password": {"from": REDACTED, "to": REDACTED},
            })
        );
        assert!(!d.to_string().contains("\"y\""));
    }

    #[test]
    fn canonical_bytes_depend_on_every_field() {
        let ctx = AuditContext::system("test");
        let r = ctx.record(DateTime::UNIX_EPOCH, "job.create", "job:a", json!({"x": 1}));
        let base = r.canonical(1, AUDIT_GENESIS);
        assert_ne!(base, r.canonical(2, AUDIT_GENESIS));
        assert_ne!(base, r.canonical(1, "ff"));
        let mut r2 = r.clone();
        r2.target = "job:b".into();
        assert_ne!(base, r2.canonical(1, AUDIT_GENESIS));
    }
}
