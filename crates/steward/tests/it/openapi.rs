//! The OpenAPI document itself: valid OpenAPI 3.1, and every request body
//! built from its schema's required fields (using the document's examples) is
//! accepted by the server. Responses are checked in every test (`contract`).

use crate::contract::Contract;
use crate::helpers::TestApp;
use serde_json::{json, Map, Value};

#[test]
fn the_document_is_valid_openapi_3_1() {
    let doc = steward_web::api::document::document();
    assert_eq!(doc["openapi"], "3.1.0");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openapi.json");
    std::fs::write(&path, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
    let out = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&path)
        .output()
        .expect("python3 with openapi-spec-validator (the README's test command installs it)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_validator_refuses_what_the_schemas_forbid() {
    // A check that cannot fail proves nothing: wrong bodies must be caught.
    let c = Contract::global();
    let view = "/paths/~1api~1v1~1jobs~1{job}/get/responses/200/content/application~1json/schema";
    let good = json!({"id": 1, "name": "x", "spec": {"kind": "command", "argv": ["true"]},
        "effective_timezone": "UTC", "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"});
    c.validate(view, &good).unwrap();
    for bad in [
        json!({"id": "one"}),
        {
            let mut v = good.clone();
            v["spec"]["kind"] = json!("teleport");
            v
        },
        {
            let mut v = good.clone();
            v["surprise"] = json!(1);
            v
        },
    ] {
        assert!(c.validate(view, &bad).is_err(), "accepted {bad}");
    }
    let create = "/paths/~1api~1v1~1jobs/post/requestBody/content/application~1json/schema";
    c.validate(
        create,
        &json!({"name": "x", "spec": {"kind": "command", "argv": ["true"]}}),
    )
    .unwrap();
    assert!(c
        .validate(
            create,
            &json!({"name": "x", "spec": {"kind": "command", "argv": ["true"], "kind2": 1}})
        )
        .is_err());
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => doc
            .pointer(&r.replacen('#', "", 1))
            .map_or(schema, |s| resolve(doc, s)),
        None => schema,
    }
}

/// The smallest value the schema describes: required fields only, each from
/// the document's example where it gives one.
fn sample(doc: &Value, schema: &Value) -> Value {
    let s = resolve(doc, schema);
    if let Some(e) = s.get("example") {
        return e.clone();
    }
    if let Some(e) = s.get("examples").and_then(|e| e.get(0)) {
        return e.clone();
    }
    if let Some(e) = s.get("enum").and_then(|e| e.get(0)) {
        return e.clone();
    }
    if let Some(c) = s.get("const") {
        return c.clone();
    }
    if let Some(first) = s
        .get("oneOf")
        .or_else(|| s.get("anyOf"))
        .and_then(|v| v.get(0))
    {
        return sample(doc, first);
    }
    if let Some(Value::Array(members)) = s.get("allOf") {
        let mut out = Map::new();
        for m in members {
            if let Value::Object(o) = sample(doc, m) {
                out.extend(o);
            }
        }
        return Value::Object(out);
    }
    let ty = match &s["type"] {
        Value::String(t) => t.clone(),
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null")
            .to_owned(),
        _ if s.get("properties").is_some() => "object".into(),
        _ => "null".into(),
    };
    match ty.as_str() {
        "object" => {
            let mut out = Map::new();
            for name in s["required"].as_array().into_iter().flatten() {
                let name = name.as_str().unwrap();
                out.insert(name.into(), sample(doc, &s["properties"][name]));
            }
            Value::Object(out)
        }
        "array" => {
            let n = s["minItems"].as_u64().unwrap_or(0);
            Value::Array((0..n).map(|_| sample(doc, &s["items"])).collect())
        }
        "string" => match s["format"].as_str() {
            Some("date-time") => json!("2030-01-01T00:00:00Z"),
            _ => json!("x".repeat(usize::try_from(s["minLength"].as_u64().unwrap_or(1)).unwrap())),
        },
        "integer" => json!(s["minimum"].as_i64().unwrap_or(1)),
        "number" => json!(s["minimum"].as_f64().unwrap_or(1.0)),
        "boolean" => json!(false),
        _ => Value::Null,
    }
}

#[tokio::test]
async fn a_body_built_from_each_schemas_required_fields_is_accepted() {
    let t = TestApp::start().await;
    let doc = Contract::global().doc();
    // Something for every path parameter to name.
    t.command_job("j1", &["true"], json!({})).await;
    let (s, _) = t
        .post(
            "/api/v1/users",
            json!({"username": "u1", "password": "an initial password for u1", "roles": ["viewer"]}),
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(t.post("/api/v1/groups", json!({"name": "g1"})).await.0, 201);
    let admin = crate::helpers::Account::admin(&t).await;
    let session = admin.new_session(&t.base).await;
    let concrete = |path: &str| {
        path.replace("{job}", "j1")
            .replace("{user}", "u1")
            .replace("{group}", "g1")
            .replace("{name}", "S1")
    };
    let mut failures = vec![];
    let mut tried = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(schema) = op.pointer("/requestBody/content/application~1json/schema") else {
                continue;
            };
            tried += 1;
            let body = sample(doc, schema);
            let (status, resp) = t
                .call(
                    &session,
                    &method.to_uppercase(),
                    &concrete(path),
                    Some(body.clone()),
                )
                .await;
            // Two refusals are about state, not the body's shape: the admin's
            // real password and a real reset link cannot be in a document.
            let field = resp["error"]["field"].as_str().unwrap_or("");
            let about_state = status == 422
                && matches!(
                    (path.as_str(), field),
                    ("/api/v1/auth/password", "current_password")
                        | ("/api/v1/auth/password-reset/confirm", "token")
                );
            if matches!(status, 400 | 413 | 415 | 422) && !about_state {
                failures.push(format!("{method} {path} with {body}: {status} {resp}"));
            }
        }
    }
    assert!(tried >= 15, "only {tried} request bodies in the document");
    assert!(failures.is_empty(), "refused:\n{}", failures.join("\n"));
}
