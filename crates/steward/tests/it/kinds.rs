//! A job kind the suite defines itself, registered as one value: the API
//! (validation, the document, runs and their outcome), the store, secrets,
//! audit redaction and start-up recovery all serve it with no change. This
//! is the proof that a kind is one module and one registry line.

use crate::helpers::TestApp;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use steward_clock::SystemClock;
use steward_domain::{JobSpec, RunId, RunStatus, ValidationError};
use steward_engine::executor::{ExecContext, ExecResult};
use steward_engine::kinds::{canonical, parse_fields, Fields, JobKind, KindSchema, SecretField};

/// Prints a message and a token, holds a marker file while it runs, and
/// reports how it ended as data of its own.
struct ProbeKind {
    /// Where its marker files go.
    dir: PathBuf,
    /// What `reconcile` was given.
    reconciled: Reconciled,
}

/// The runs and handles a probe's `reconcile` was given.
type Reconciled = Arc<Mutex<Vec<(RunId, Value)>>>;

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ProbeSpec {
    /// Printed to the run's output (1 to 64 bytes).
    message: String,
    /// A credential: may be `${secret:NAME}`, never shown by the audit log.
    token: String,
    /// How long the run holds its marker before it ends.
    #[serde(default)]
    hold_ms: u64,
}

const REFUSED_AT_SAVE: &str = "refused-at-save";

#[async_trait]
impl JobKind for ProbeKind {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn schema(&self) -> KindSchema {
        KindSchema::of::<ProbeSpec>()
    }
    fn secret_fields(&self) -> &'static [SecretField] {
        const FIELDS: &[SecretField] = &[SecretField::credential("token")];
        FIELDS
    }
    fn validate(&self, spec: &JobSpec) -> Result<Fields, ValidationError> {
        let p: ProbeSpec = parse_fields(spec)?;
        if p.message.is_empty() || p.message.len() > 64 {
            return Err(ValidationError::new("message", "must be 1 to 64 bytes"));
        }
        canonical(&p)
    }
    async fn check(&self, spec: &JobSpec) -> Result<(), ValidationError> {
        let p: ProbeSpec = parse_fields(spec)?;
        if p.message == REFUSED_AT_SAVE {
            return Err(ValidationError::new(
                "message",
                "the probe's save-time check refuses this",
            ));
        }
        Ok(())
    }
    async fn execute(&self, spec: &JobSpec, ctx: &ExecContext) -> ExecResult {
        let p: ProbeSpec = match parse_fields(spec) {
            Ok(p) => p,
            Err(e) => return ExecResult::failed(e.to_string()),
        };
        ctx.note(&format!("probe says {} with token {}", p.message, p.token));
        let marker = self.dir.join(format!("run-{}", ctx.run));
        std::fs::write(&marker, b"held").unwrap();
        ctx.hold(json!({ "marker": marker }));
        let status = tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(p.hold_ms)) => RunStatus::Succeeded,
            () = ctx.cancel.cancelled() => RunStatus::Cancelled,
        };
        let _ = std::fs::remove_file(&marker);
        ExecResult {
            status,
            outcome: steward_domain::RunOutcome {
                detail: Some(json!({ "echoed": p.message.len(), "token_length": p.token.len() })),
                error: None,
            },
        }
    }
    async fn reconcile(&self, run: RunId, handle: &Value) -> String {
        self.reconciled.lock().unwrap().push((run, handle.clone()));
        if let Some(path) = handle["marker"].as_str() {
            let _ = std::fs::remove_file(path);
        }
        "marker removed".into()
    }
}

fn probe(dir: &std::path::Path) -> (Arc<ProbeKind>, Reconciled) {
    let reconciled = Arc::new(Mutex::new(Vec::new()));
    (
        Arc::new(ProbeKind {
            dir: dir.to_owned(),
            reconciled: reconciled.clone(),
        }),
        reconciled,
    )
}

/// The kinds the suite's Stewards may run, for the document responses are
/// checked against (`contract`): the built-in ones and the probe.
pub fn described() -> steward_engine::kinds::KindRegistry {
    let mut kinds =
        steward_engine::kinds::builtin(&Default::default()).expect("the built-in kinds");
    kinds.push(probe(&std::env::temp_dir()).0);
    steward_engine::kinds::KindRegistry::new(kinds)
}

/// A Steward running the probe, and the directory of its markers.
async fn probe_app() -> (tempfile::TempDir, TestApp) {
    let markers = tempfile::tempdir().unwrap();
    let (kind, _) = probe(markers.path());
    let t = start(tempfile::tempdir().unwrap(), kind).await;
    (markers, t)
}

async fn start(dir: tempfile::TempDir, kind: Arc<ProbeKind>) -> TestApp {
    TestApp::start_with_kinds(dir, |_| {}, Arc::new(SystemClock), vec![kind]).await
}

#[tokio::test]
async fn a_kind_of_its_own_is_served_by_the_api_the_store_secrets_and_the_audit_log() {
    let (_markers, t) = probe_app().await;

    // The served document describes it beside the built-in kinds.
    let (_, doc) = t.get("/api/v1/openapi.json").await;
    let specs = doc["components"]["schemas"]["JobSpec"]["oneOf"]
        .as_array()
        .unwrap();
    let schema = specs
        .iter()
        .find(|s| s["properties"]["kind"]["enum"] == json!(["probe"]))
        .expect("the probe kind in the document");
    assert_eq!(schema["required"], json!(["kind", "message", "token"]));
    assert!(specs
        .iter()
        .any(|s| s["properties"]["kind"]["enum"] == json!(["command"])));

    // Its rules, its save-time check and its secret fields, each error
    // naming the field.
    for (spec, field, says) in [
        (
            json!({"kind": "probe", "message": "", "token": "t"}),
            "spec.message",
            "1 to 64",
        ),
        (
            json!({"kind": "probe", "message": "m", "token": "t", "colour": 1}),
            "spec",
            "colour",
        ),
        (
            json!({"kind": "probe", "message": "m"}),
            "spec.token",
            "missing",
        ),
        (
            json!({"kind": "probe", "message": REFUSED_AT_SAVE, "token": "t"}),
            "spec.message",
            "refuses",
        ),
        (
            json!({"kind": "probe", "message": "m", "token": "${secret:}"}),
            "spec.token",
            "secret",
        ),
        (
            json!({"kind": "teleport", "message": "m"}),
            "spec.kind",
            "probe",
        ),
    ] {
        let (s, body) = t
            .post("/api/v1/jobs", json!({"name": "p", "spec": spec}))
            .await;
        assert_eq!(s, 422, "{spec}: {body}");
        let got = body["error"]["field"].as_str().unwrap_or_default();
        assert!(
            got.starts_with(field) && body.to_string().contains(says),
            "{spec}: {body}"
        );
    }

    // A secret it refers to is opened for the run and masked in its output.
    let (s, _) = t
        .call(
            &t.client,
            "PUT",
            "/api/v1/secrets/PROBE_TOKEN",
            Some(json!({"value": "tok-4711-value"})),
        )
        .await;
    assert_eq!(s, 201);
    let job = t
        .create_job(json!({"name": "p", "spec": {"kind": "probe", "message": "hello", "token": "${secret:PROBE_TOKEN}"}}))
        .await;
    assert_eq!(job["spec"]["kind"], "probe");
    assert_eq!(job["spec"]["token"], "${secret:PROBE_TOKEN}");
    // Stored as the kind reads it: its default filled in.
    assert_eq!(job["spec"]["hold_ms"], 0);
    let (s, run) = t.post("/api/v1/jobs/p/run", json!({})).await;
    assert_eq!(s, 202, "{run}");
    let run = t
        .wait_run(run["id"].as_i64().unwrap(), Duration::from_secs(10))
        .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    // The outcome is the kind's own data, stored and shown as it gave it.
    assert_eq!(
        run["outcome"],
        json!({"echoed": 5, "token_length": "tok-4711-value".len()})
    );
    let out = t.text(&format!("/api/v1/runs/{}/output", run["id"])).await;
    assert!(
        out.contains("probe says hello with token [secret]"),
        "{out}"
    );
    assert!(!out.contains("tok-4711"), "{out}");

    // A literal credential in its credential field never reaches the audit log.
    let (s, body) = t
        .call(
            &t.client,
            "PUT",
            "/api/v1/jobs/p",
            Some(json!({"name": "p", "spec": {"kind": "probe", "message": "hello", "token": "literal-credential-99"}})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let (_, audit) = t.get("/api/v1/audit?event=job").await;
    let text = audit.to_string();
    assert!(!text.contains("literal-credential-99"), "{text}");
    // Both tokens are redacted, so the entry says only that the spec changed.
    let update = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "job.update")
        .unwrap();
    assert_eq!(
        update["diff"]["spec"],
        json!({"from": "[redacted]", "to": "[redacted]", "changed": "credential values (not shown)"}),
        "{update}"
    );
    t.stop().await;
}

/// Start-up recovery gives what a run of the kind held to that kind: a run
/// left `running` with the probe's handle (as a process that died leaves
/// it) is abandoned at the next start, and the probe is handed its marker.
#[tokio::test]
async fn start_up_recovery_hands_a_kinds_handle_back_to_it() {
    let (markers, t) = probe_app().await;
    let job = t
        .create_job(json!({"name": "p", "spec": {"kind": "probe", "message": "hold", "token": "t", "hold_ms": 60000}}))
        .await;

    // While it runs, its handle is recorded with the run.
    let (_, run) = t.post("/api/v1/jobs/p/run", json!({})).await;
    let id = RunId(run["id"].as_i64().unwrap());
    let store = t.app.as_ref().unwrap().store().clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let handle = loop {
        let r = store.read().await.unwrap().get_run(id).await.unwrap();
        if let Some(h) = r.handle {
            break h;
        }
        assert!(tokio::time::Instant::now() < deadline, "no handle recorded");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(handle.kind, "probe");
    let marker = PathBuf::from(handle.data["marker"].as_str().unwrap());
    assert!(marker.exists());

    // A process that dies records nothing more: put another run in that
    // state (claimed by a node that is gone, its marker still there)...
    let left = {
        let mut tx = store.write().await.unwrap();
        let now = chrono::Utc::now();
        let r = crate::helpers::claimed_elsewhere(
            &mut *tx,
            &job,
            "a-node-that-died",
            now,
            now + chrono::Duration::hours(1),
        )
        .await;
        let kept = markers.path().join("left-behind");
        std::fs::write(&kept, b"held").unwrap();
        tx.set_run_handle(
            r.id,
            &steward_domain::RunHandle {
                kind: "probe".into(),
                data: json!({ "marker": kept }),
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        (r.id, kept)
    };
    let dir = t.stop().await;

    // ...and start again: the probe is given exactly that handle.
    let (kind, reconciled) = probe(markers.path());
    let t = start(dir, kind).await;
    let (_, r) = t.get(&format!("/api/v1/runs/{}", left.0)).await;
    assert_eq!(r["status"], "abandoned", "{r}");
    let given = reconciled.lock().unwrap().clone();
    assert_eq!(given, vec![(left.0, json!({ "marker": left.1 }))]);
    assert!(!left.1.exists(), "the kind's reconcile ran");
    // The run stopped by the shutdown had ended: nothing to reconcile.
    let (_, first) = t.get(&format!("/api/v1/runs/{}", id)).await;
    assert_eq!(first["status"], "cancelled", "{first}");
    assert!(!marker.exists());
    t.stop().await;
}

/// A job whose kind this Steward no longer runs (an extra kind dropped from
/// a build): the start names it, its runs fail saying why, and it can still
/// be switched off.
#[tokio::test]
async fn a_job_of_a_kind_no_longer_registered_fails_clearly_and_can_be_disabled() {
    let (_markers, t) = probe_app().await;
    t.create_job(json!({"name": "p", "spec": {"kind": "probe", "message": "m", "token": "t"}}))
        .await;
    let dir = t.stop().await;

    let t = TestApp::start_in(dir, |_| {}, Arc::new(SystemClock)).await;
    let (s, run) = t.post("/api/v1/jobs/p/run", json!({})).await;
    assert_eq!(s, 202, "{run}");
    let run = t
        .wait_run(run["id"].as_i64().unwrap(), Duration::from_secs(10))
        .await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("unknown kind \"probe\""),
        "{run}"
    );
    let (s, job) = t.post("/api/v1/jobs/p/disable", json!({})).await;
    assert_eq!((s, &job["enabled"]), (200, &json!(false)), "{job}");
    t.stop().await;
}
