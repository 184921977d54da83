//! The OpenAPI document as served: utoipa's output made truthful where its
//! derive cannot be. Clients and fuzzers generate code and requests from it, so
//! each rule here is checked by the integration suite against the real server
//! (responses validated against these schemas, one request per body schema).
//!
//! - **Compositions and strictness.** A `deny_unknown_fields` type is
//!   `additionalProperties: false`; inside an `allOf` (a tagged enum adding
//!   `kind`, a view flattening a definition) that forbids the other members'
//!   fields, so no value could match. Such members are inlined without it and
//!   the composition says `unevaluatedProperties: false` (JSON Schema 2020-12,
//!   which OpenAPI 3.1 uses), which sees every member's properties.
//! - **Unique operation ids**: `{tag}_{handler}`.
//! - **Every status an operation can return**: the errors the shared layers
//!   produce (bad parameters, authentication, permissions, bodies, rate
//!   limits, conflicts, unavailability) are added to each operation they apply
//!   to, all with the one error body.

use serde_json::{json, Map, Value};
use std::sync::OnceLock;
use utoipa::OpenApi as _;

/// The document of a Steward with the built-in job kinds (built once): what
/// the routes' parameters are read from, and what a client can rely on.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| document_for(&steward_engine::kinds::builtin_registry()))
}

/// The document of a Steward running `kinds`: a job's `spec` is one of
/// their schemas, each an object whose `kind` names it.
pub fn document_for(kinds: &steward_engine::kinds::KindRegistry) -> Value {
    let mut doc = serde_json::to_value(super::ApiDoc::openapi()).unwrap_or(Value::Null);
    // One schema per kind (an array), and what they refer to.
    let described = kinds.schemas();
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        for (name, schema) in described.components {
            // Kinds may share a type (`DurationSpec`); two different types
            // of one name would make a `$ref` point at the wrong one.
            let kept = schemas
                .entry(name.clone())
                .or_insert_with(|| schema.clone());
            assert!(
                *kept == schema,
                "two different schemas named {name} in the API document: a job kind's type clashes with another; rename one"
            );
        }
        let one_of = described.schema;
        schemas.insert(
            "JobSpec".into(),
            json!({
                "description": "What the job runs: an object whose `kind` names one of the kinds this Steward runs, with that kind's fields.",
                "oneOf": one_of,
            }),
        );
    }
    make_truthful(&mut doc);
    doc
}

pub fn make_truthful(doc: &mut Value) {
    let components = doc
        .pointer("/components/schemas")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(schemas) = doc.pointer_mut("/components/schemas") {
        relax_compositions(schemas, &components);
    }
    if let Some(paths) = doc.get_mut("paths") {
        relax_compositions(paths, &components);
    }
    let global_security = doc.get("security").cloned().unwrap_or(Value::Null);
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            if let Some(op) = op.as_object_mut() {
                tag_operation_id(op);
                add_error_responses(path, method, op, &global_security);
            }
        }
    }
}

fn strict(schema: &Value) -> bool {
    schema.get("additionalProperties") == Some(&Value::Bool(false))
}

fn resolve<'a>(member: &'a Value, components: &'a Value) -> &'a Value {
    match member.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .strip_prefix("#/components/schemas/")
            .and_then(|name| components.get(name))
            .unwrap_or(member),
        None => member,
    }
}

/// Walks every schema; see the module documentation.
fn relax_compositions(node: &mut Value, components: &Value) {
    match node {
        Value::Object(map) => {
            if let Some(Value::Array(members)) = map.get_mut("allOf") {
                let mut any_strict = false;
                for m in members.iter_mut() {
                    let target = resolve(m, components);
                    if strict(target) {
                        any_strict = true;
                        let mut copy = target.clone();
                        if let Some(o) = copy.as_object_mut() {
                            o.remove("additionalProperties");
                        }
                        *m = copy;
                    }
                }
                if any_strict {
                    map.insert("unevaluatedProperties".into(), Value::Bool(false));
                }
            }
            for v in map.values_mut() {
                relax_compositions(v, components);
            }
        }
        Value::Array(items) => {
            for v in items {
                relax_compositions(v, components);
            }
        }
        _ => {}
    }
}

fn tag_operation_id(op: &mut Map<String, Value>) {
    let tag = op
        .get("tags")
        .and_then(|t| t.get(0))
        .and_then(Value::as_str)
        .unwrap_or("api")
        .to_owned();
    if let Some(Value::String(id)) = op.get_mut("operationId") {
        if !id.starts_with(&format!("{tag}_")) {
            *id = format!("{tag}_{id}");
        }
    }
}

fn error(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    })
}

fn add_error_responses(path: &str, method: &str, op: &mut Map<String, Value>, global: &Value) {
    let public = op.get("security") == Some(&json!([{}]))
        || (op.get("security").is_none() && global.is_null());
    let params = op
        .get("parameters")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let has_query = params.iter().any(|p| p["in"] == "query");
    let has_path = path.contains('{');
    let has_body = op.contains_key("requestBody");
    let mutates = matches!(method, "post" | "put" | "patch" | "delete");
    let mut add: Vec<(&str, &str)> = vec![
        ("400", "A path or query parameter is malformed (`invalid_parameter`) or not declared here (`unknown_parameter`), or the body is not JSON (`invalid_json`)"),
        ("429", "Too many requests (`rate_limited`, with `Retry-After`)"),
        ("500", "Internal error (`internal`); the details are in the server log"),
        ("503", "Steward is shutting down or its database is unavailable"),
    ];
    if !public {
        add.push(("401", "No valid token or session (`unauthenticated`)"));
        add.push(("403", "Not allowed: a permission is missing (`forbidden`), a session is needed (`session_required`), the password must be changed first (`password_change_required`), the CSRF token is missing, or the request is cross-site"));
    } else if mutates {
        add.push(("403", "A cross-site request (`cross_site_request`)"));
    }
    if has_path {
        add.push(("404", "No such resource (`not_found`)"));
    }
    if has_body {
        add.push((
            "413",
            "The body is larger than `api.max_body_bytes` (`body_too_large`)",
        ));
        add.push((
            "415",
            "The body is not `application/json` (`unsupported_media_type`)",
        ));
    }
    if has_body || has_query || mutates {
        add.push((
            "422",
            "A value breaks a rule; `field` names it (`validation_failed`)",
        ));
    }
    if mutates && !public {
        add.push((
            "409",
            "The change conflicts with the current state (`conflict`)",
        ));
    }
    let responses = op
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    if let Some(responses) = responses {
        // Every error answers with the one error body, also those an
        // annotation declared without one.
        for (status, resp) in responses.iter_mut() {
            if status.starts_with('4') || status.starts_with('5') {
                if let Some(r) = resp.as_object_mut() {
                    r.entry("content")
                        .or_insert_with(|| error("")["content"].clone());
                }
            }
        }
        for (status, description) in add {
            responses
                .entry(status.to_owned())
                .or_insert_with(|| error(description));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_ids_are_unique_and_strict_members_are_relaxed() {
        let doc = document();
        let mut ids = std::collections::BTreeSet::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                let id = op["operationId"].as_str().unwrap();
                assert!(ids.insert(id.to_owned()), "duplicate operation id {id}");
            }
        }
        // One schema per kind, each naming its kind and strict about its fields.
        let specs = doc["components"]["schemas"]["JobSpec"]["oneOf"]
            .as_array()
            .unwrap();
        let command = specs
            .iter()
            .find(|s| s["properties"]["kind"]["enum"][0] == "command")
            .unwrap();
        assert_eq!(command["required"][0], "kind");
        assert_eq!(command["additionalProperties"], false, "{command}");
        assert_eq!(command["properties"]["argv"]["type"], "array");
        assert!(specs
            .iter()
            .any(|s| s["properties"]["kind"]["enum"][0] == "http"));
    }
}
