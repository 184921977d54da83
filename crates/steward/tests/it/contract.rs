//! The OpenAPI document as a contract: every response the integration suite
//! receives through a [`TestApp`](crate::helpers::TestApp) is checked against
//! the served document (the operation exists, the status is documented, the
//! media type is documented, and a JSON body validates against its schema with
//! a JSON Schema 2020-12 validator). Violations are collected and fail the test
//! that caused them when its app stops or is dropped.

use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use steward_web::Observed;

const DOC_URL: &str = "https://steward.test/openapi.json";

pub struct Contract {
    doc: &'static Value,
    /// Every JSON request and response schema of the document, compiled up
    /// front (the compiler itself cannot be shared between threads).
    schemas: boon::Schemas,
    compiled: HashMap<String, boon::SchemaIndex>,
    failures: Mutex<Vec<String>>,
}

/// JSON pointers of every `application/json` schema of every operation.
fn json_schema_pointers(doc: &Value) -> Vec<String> {
    let mut out = vec![];
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            let base = format!("/paths/{}/{method}", escape(path));
            if op
                .pointer("/requestBody/content/application~1json/schema")
                .is_some()
            {
                out.push(format!(
                    "{base}/requestBody/content/application~1json/schema"
                ));
            }
            for (status, resp) in op["responses"].as_object().into_iter().flatten() {
                if resp.pointer("/content/application~1json/schema").is_some() {
                    out.push(format!(
                        "{base}/responses/{status}/content/application~1json/schema"
                    ));
                }
            }
        }
    }
    out
}

fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

impl Contract {
    pub fn global() -> &'static Contract {
        static C: OnceLock<Contract> = OnceLock::new();
        C.get_or_init(|| {
            // The built-in kinds and the one the suite defines (`kinds`).
            static DOC: OnceLock<Value> = OnceLock::new();
            let doc = DOC.get_or_init(|| {
                steward_web::api::document::document_for(&crate::kinds::described())
            });
            let mut compiler = boon::Compiler::new();
            compiler.set_default_draft(boon::Draft::V2020_12);
            compiler.add_resource(DOC_URL, doc.clone()).unwrap();
            let mut schemas = boon::Schemas::new();
            let mut compiled = HashMap::new();
            for pointer in json_schema_pointers(doc) {
                let idx = compiler
                    .compile(&format!("{DOC_URL}#{pointer}"), &mut schemas)
                    .unwrap_or_else(|e| panic!("schema {pointer} does not compile: {e:#}"));
                compiled.insert(pointer, idx);
            }
            Contract {
                doc,
                schemas,
                compiled,
                failures: Mutex::default(),
            }
        })
    }

    pub fn observer() -> steward_web::ResponseObserver {
        Arc::new(|o: Observed<'_>| Contract::global().check(&o))
    }

    /// Validates `value` against the schema at `pointer` (a JSON pointer into the document).
    pub fn validate(&self, pointer: &str, value: &Value) -> Result<(), String> {
        let idx = *self
            .compiled
            .get(pointer)
            .ok_or_else(|| format!("no JSON schema at {pointer}"))?;
        self.schemas
            .validate(value, idx)
            .map_err(|e| format!("{e:#}"))
    }

    pub fn doc(&self) -> &'static Value {
        self.doc
    }

    fn fail(&self, msg: String) {
        self.failures.lock().unwrap().push(msg);
    }

    fn check(&self, o: &Observed<'_>) {
        if !o.route.starts_with("/api/v1/") || o.route == "/api/v1/openapi.json" {
            return;
        }
        let method = o.method.to_lowercase();
        let what = format!("{} {} → {}", o.method, o.route, o.status);
        let Some(op) = self.doc["paths"][o.route].get(&method) else {
            return self.fail(format!("{what}: the operation is not documented"));
        };
        let Some(resp) = op["responses"].get(o.status.to_string()) else {
            return self.fail(format!("{what}: this status is not documented"));
        };
        let media = o.content_type.split(';').next().unwrap_or("").trim();
        if media.is_empty() {
            if resp.get("content").is_some() && o.status != 204 {
                self.fail(format!("{what}: documented with a body, sent none"));
            }
            return;
        }
        if resp["content"].get(media).is_none() {
            return self.fail(format!(
                "{what}: sent {media}, documented {}",
                resp["content"]
            ));
        }
        if media != "application/json" {
            return;
        }
        let body: Value = match serde_json::from_slice(o.body) {
            Ok(b) => b,
            Err(e) => return self.fail(format!("{what}: not JSON: {e}")),
        };
        let pointer = format!(
            "/paths/{}/{method}/responses/{}/content/application~1json/schema",
            escape(o.route),
            o.status
        );
        if let Err(e) = self.validate(&pointer, &body) {
            self.fail(format!(
                "{what}: the body does not match its schema: {e}\nbody: {body}"
            ));
        }
    }

    /// Panics with every violation seen so far (and forgets them).
    pub fn assert_clean(&self) {
        let failures = std::mem::take(&mut *self.failures.lock().unwrap());
        assert!(
            failures.is_empty(),
            "responses that break the OpenAPI document:\n{}",
            failures.join("\n")
        );
    }
}
