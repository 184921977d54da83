//! The fields of a spec that may hold `${secret:NAME}`, and the one walk over
//! them that serves every use: finding the references (to check them at save
//! time, to know which secrets a job needs), filling them in for an attempt
//! (whose values then mask the output), and redacting the audit log.

use super::JobKind;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap};
use steward_domain::secret::{decode_url_references, references as refs_in, substitute};
use steward_domain::{JobSpec, SecretName, ValidationError};

/// Where a secret may be: a path into the spec's fields, `/`-separated,
/// `*` standing for every key of an object or element of an array
/// (`"env/*"`, `"headers/*"`, `"body"`).
#[derive(Debug, Clone, Copy)]
pub struct SecretField {
    pub path: &'static str,
    /// The field holds a URL, whose parsing percent-encoded the braces of a
    /// reference in its path (`$%7Bsecret:X%7D`): read it back first.
    pub url: bool,
    /// Literal values here are credentials often enough (HTTP headers,
    /// environment variables) that the audit log shows none of them.
    pub redact_in_audit: bool,
}

impl SecretField {
    pub const fn text(path: &'static str) -> Self {
        Self {
            path,
            url: false,
            redact_in_audit: false,
        }
    }
    pub const fn url(path: &'static str) -> Self {
        Self {
            path,
            url: true,
            redact_in_audit: false,
        }
    }
    pub const fn credential(path: &'static str) -> Self {
        Self {
            path,
            url: false,
            redact_in_audit: true,
        }
    }
}

/// Calls `f` with the spec-relative name (`argv[0]`, `env.X`) and every
/// value at `path` (a string, or whatever a kind put there).
fn visit(value: &mut Value, path: &[&str], name: String, f: &mut dyn FnMut(String, &mut Value)) {
    let Some((first, rest)) = path.split_first() else {
        f(name, value);
        return;
    };
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut().filter(|(k, _)| *first == "*" || k == first) {
                visit(v, rest, join_key(&name, k), f);
            }
        }
        Value::Array(items) if *first == "*" => {
            for (i, v) in items.iter_mut().enumerate() {
                visit(v, rest, format!("{name}[{i}]"), f);
            }
        }
        _ => {}
    }
}

/// [`visit`] over the strings at `path` only: where references may be.
fn visit_text(root: &mut Value, field: &SecretField, f: &mut dyn FnMut(String, &mut String)) {
    visit(root, &segments(field), String::new(), &mut |name, value| {
        if let Value::String(text) = value {
            f(name, text);
        }
    });
}

fn join_key(name: &str, key: &str) -> String {
    if name.is_empty() {
        key.to_owned()
    } else {
        format!("{name}.{key}")
    }
}

fn segments(field: &SecretField) -> Vec<&'static str> {
    field.path.split('/').filter(|s| !s.is_empty()).collect()
}

/// Every field that may hold a secret, read as text (URLs decoded), with its name.
fn each_text(kind: &dyn JobKind, fields: Map<String, Value>, f: &mut dyn FnMut(String, &str)) {
    // The walk starts at the fields' object: a path's first segment is a field.
    let mut root = Value::Object(fields);
    for field in kind.secret_fields() {
        visit_text(&mut root, field, &mut |name, text| {
            if field.url {
                f(name, &decode_url_references(text));
            } else {
                f(name, text);
            }
        });
    }
}

/// Every `${secret:NAME}` the spec makes; a malformed reference is an error
/// naming its field (`spec.env.X`).
pub fn references(
    kind: &dyn JobKind,
    spec: &JobSpec,
) -> Result<BTreeSet<SecretName>, ValidationError> {
    let mut out = BTreeSet::new();
    let mut bad = None;
    each_text(kind, spec.fields(), &mut |name, text| {
        if bad.is_none() {
            match refs_in(text) {
                Ok(found) => out.extend(found),
                Err(e) => bad = Some(ValidationError::new(format!("spec.{name}"), e.message)),
            }
        }
    });
    bad.map_or(Ok(out), Err)
}

/// The spec of one attempt, its references replaced by `values`. The
/// result is validated again by its kind; an error names the field only,
/// never the text, which now holds secret values.
pub fn fill_in(
    kind: &dyn JobKind,
    spec: &JobSpec,
    values: &HashMap<SecretName, SecretString>,
) -> Result<JobSpec, String> {
    let lookup = |n: &SecretName| values.get(n).map(|v| v.expose_secret().to_owned());
    let mut root = Value::Object(spec.fields());
    let mut failed = None;
    for field in kind.secret_fields() {
        visit_text(&mut root, field, &mut |name, text: &mut String| {
            if failed.is_some() {
                return;
            }
            let plain = if field.url {
                decode_url_references(text)
            } else {
                std::mem::take(text)
            };
            match substitute(&plain, &lookup) {
                Ok(filled) => *text = filled,
                Err(e) => failed = Some(format!("spec.{name}: {e}")),
            }
        });
    }
    if let Some(e) = failed {
        return Err(e);
    }
    let Value::Object(filled) = root else {
        unreachable!("the walk keeps the root an object")
    };
    let filled = JobSpec::new(spec.kind(), filled).map_err(|e| e.message)?;
    kind.validate(&filled).map_err(|e| {
        format!(
            "the spec is invalid once its secrets are filled in (spec.{})",
            e.field
        )
    })?;
    Ok(filled)
}

/// The spec as the audit log shows it: every string under a credential
/// field replaced by `[redacted]` (a kind may put an object there). Of a
/// kind this Steward does not know, every string is.
pub fn for_audit(kind: Option<&dyn JobKind>, spec: &JobSpec) -> Value {
    let mut fields = Value::Object(spec.fields());
    let redacted = || Value::String(steward_domain::audit::REDACTED.into());
    match kind {
        Some(kind) => {
            for field in kind.secret_fields().iter().filter(|f| f.redact_in_audit) {
                visit(&mut fields, &segments(field), String::new(), &mut |_, v| {
                    redact_all(v, &redacted);
                });
            }
        }
        None => redact_all(&mut fields, &redacted),
    }
    let mut all = Map::new();
    all.insert("kind".into(), spec.kind().into());
    if let Value::Object(f) = fields {
        all.extend(f);
    }
    Value::Object(all)
}

fn redact_all(v: &mut Value, redacted: &dyn Fn() -> Value) {
    match v {
        Value::String(_) => *v = redacted(),
        Value::Array(items) => items.iter_mut().for_each(|i| redact_all(i, redacted)),
        Value::Object(map) => map.values_mut().for_each(|i| redact_all(i, redacted)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::command::CommandKind;
    use crate::kinds::http::HttpKind;
    use serde_json::json;

    fn spec(v: Value) -> JobSpec {
        let Value::Object(mut f) = v else { panic!() };
        let kind = f.remove("kind").unwrap();
        JobSpec::new(kind.as_str().unwrap(), f).unwrap()
    }

    fn http() -> HttpKind {
        HttpKind::new(Default::default()).unwrap()
    }

    #[test]
    fn references_are_found_only_where_the_kind_allows_them() {
        let command = CommandKind::new(Default::default());
        let s = spec(
            json!({"kind": "command", "argv": ["x", "${secret:A}"], "env": {"E": "${secret:B}"},
            "workdir": "/${secret:NOT_A_PLACE}"}),
        );
        let names: Vec<String> = references(&command, &s)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(names, ["A", "B"]);
        let bad = spec(json!({"kind": "command", "argv": ["true"], "env": {"E": "${secret:}"}}));
        assert_eq!(references(&command, &bad).unwrap_err().field, "spec.env.E");
        let bad = spec(json!({"kind": "command", "argv": ["true", "${secret:9}"]}));
        assert_eq!(
            references(&command, &bad).unwrap_err().field,
            "spec.argv[1]"
        );
        // A URL's path holds the reference percent-encoded.
        let s = spec(
            json!({"kind": "http", "url": "https://x.test/$%7Bsecret:U%7D", "body": "${secret:V}"}),
        );
        let names: Vec<String> = references(&http(), &s)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(names, ["U", "V"]);
    }

    #[test]
    fn filling_in_replaces_references_and_never_quotes_the_result() {
        let values: HashMap<SecretName, SecretString> = [
            (SecretName::parse("A").unwrap(), SecretString::from("alpha")),
            (
                SecretName::parse("U").unwrap(),
                SecretString::from("bad url\n"),
            ),
        ]
        .into_iter()
        .collect();
        let command = CommandKind::new(Default::default());
        let s = spec(
            json!({"kind": "command", "argv": ["echo", "${secret:A}"], "env": {"E": "x${secret:A}"}}),
        );
        let filled = fill_in(&command, &s, &values).unwrap();
        assert_eq!(filled.fields()["argv"], json!(["echo", "alpha"]));
        assert_eq!(filled.fields()["env"], json!({"E": "xalpha"}));
        // A URL that no longer parses: the error names the field, not the text.
        let s = spec(json!({"kind": "http", "url": "https://${secret:U}.test/"}));
        let e = fill_in(&http(), &s, &values).unwrap_err();
        assert!(e.contains("spec.url") && !e.contains("bad url"), "{e}");
        // A reference to a secret that was not opened is an error.
        let s = spec(json!({"kind": "command", "argv": ["${secret:MISSING}"]}));
        assert!(fill_in(&command, &s, &values).is_err());
    }

    #[test]
    fn the_audit_log_sees_no_credential_field() {
        let s = spec(
            json!({"kind": "http", "url": "https://x.test/", "headers": {"Authorization": "Bearer literal"}, "body": "b"}),
        );
        let shown = for_audit(Some(&http()), &s);
        assert_eq!(shown["headers"]["Authorization"], "[redacted]");
        assert_eq!(shown["body"], "b");
        assert_eq!(shown["kind"], "http");
        // Of a kind not known here, nothing is shown.
        let s = spec(json!({"kind": "gone", "password": "p", "nested": [{"k": "v"}], "n": 1}));
        let shown = for_audit(None, &s);
        assert_eq!(
            shown,
            json!({"kind": "gone", "password": "[redacted]", "nested": [{"k": "[redacted]"}], "n": 1})
        );
    }
}
