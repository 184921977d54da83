//! Every bad input gets a clear error naming what was wrong, and changes nothing.

use crate::helpers::TestApp;
use serde_json::{json, Value};

fn cmd(extra: Value) -> Value {
    let mut v = json!({"name": "ok-name", "spec": {"kind": "command", "argv": ["true"]}});
    crate::helpers::merge(&mut v, extra);
    v
}

fn http(url: &str) -> Value {
    json!({"name": "web", "spec": {"kind": "http", "url": url}})
}

#[tokio::test]
async fn bad_job_definitions_are_refused_with_their_field() {
    let t = TestApp::start().await;
    t.command_job("taken", &["true"], json!({})).await;
    let cases: Vec<(&str, Value, u16, &str, &str)> = vec![
        (
            "NUL in an env value",
            cmd(json!({"spec": {"kind": "command", "argv": ["true"], "env": {"X": "a\u{0}b"}}})),
            422,
            "spec.env.X",
            "must not contain NUL bytes",
        ),
        (
            "NUL in an argument",
            cmd(json!({"spec": {"kind": "command", "argv": ["true", "a\u{0}b"]}})),
            422,
            "spec.argv[1]",
            "must not contain NUL bytes",
        ),
        (
            "L in the minute field",
            cmd(json!({"schedule": "L * * * *"})),
            422,
            "schedule",
            "minute",
        ),
        (
            "bad cron",
            cmd(json!({"schedule": "61 * * * *"})),
            422,
            "schedule",
            "invalid cron expression",
        ),
        (
            "wrong field count",
            cmd(json!({"schedule": "* * *"})),
            422,
            "schedule",
            "expected 5 or 6 fields",
        ),
        (
            "cron field out of range",
            cmd(json!({"schedule": "0 25 * * *"})),
            422,
            "schedule",
            "hour field \"25\" is out of range 0-23",
        ),
        (
            "unsupported alias",
            cmd(json!({"schedule": "@reboot"})),
            422,
            "schedule",
            "unknown alias",
        ),
        (
            "never fires",
            cmd(json!({"schedule": "0 0 30 2 *"})),
            422,
            "schedule",
            "never fires",
        ),
        (
            "unknown zone",
            cmd(json!({"timezone": "Mars/Olympus"})),
            422,
            "timezone",
            "unknown time zone",
        ),
        (
            "invalid name",
            cmd(json!({"name": "no spaces"})),
            422,
            "name",
            "may contain only",
        ),
        (
            "empty name",
            cmd(json!({"name": ""})),
            422,
            "name",
            "must not be empty",
        ),
        (
            "duplicate name",
            cmd(json!({"name": "taken"})),
            409,
            "",
            "already exists",
        ),
        (
            "negative timeout",
            cmd(json!({"policies": {"timeout": -5}})),
            422,
            "policies.timeout",
            "must not be negative",
        ),
        (
            "negative timeout string",
            cmd(json!({"policies": {"timeout": "-5s"}})),
            422,
            "policies.timeout",
            "must not be negative",
        ),
        (
            "zero timeout",
            cmd(json!({"policies": {"timeout": "0s"}})),
            422,
            "policies.timeout",
            "greater than zero",
        ),
        (
            "unknown top-level field",
            cmd(json!({"colour": "red"})),
            422,
            "",
            "unknown field `colour`",
        ),
        (
            "unknown nested field",
            cmd(json!({"policies": {"overlapp": "skip"}})),
            422,
            "policies.overlapp",
            "unknown field `overlapp`",
        ),
        (
            "unknown kind",
            json!({"name": "x", "spec": {"kind": "ftp"}}),
            422,
            "spec.kind",
            "unknown kind \"ftp\"; this Steward runs command, http",
        ),
        (
            "empty argv",
            json!({"name": "x", "spec": {"kind": "command", "argv": []}}),
            422,
            "spec.argv",
            "must name a program",
        ),
        (
            "relative workdir",
            json!({"name": "x", "spec": {"kind": "command", "argv": ["true"], "workdir": "tmp"}}),
            422,
            "spec.workdir",
            "absolute",
        ),
        (
            "bad env name",
            json!({"name": "x", "spec": {"kind": "command", "argv": ["true"], "env": {"A-B": "1"}}}),
            422,
            "spec.env.A-B",
            "\"A-B\" is not a valid environment variable name",
        ),
        (
            "chain to nothing",
            cmd(json!({"on_success": ["ghost"]})),
            422,
            "on_success",
            "no job named \"ghost\"",
        ),
        (
            "bad overlap",
            cmd(json!({"policies": {"overlap": "sometimes"}})),
            422,
            "policies.overlap",
            "unknown variant",
        ),
        (
            "too many retries",
            cmd(json!({"policies": {"retries": {"count": 1000}}})),
            422,
            "policies.retries.count",
            "at most 100",
        ),
        (
            "file url",
            http("file:///etc/passwd"),
            422,
            "spec.url",
            "URL scheme \"file\" is not allowed",
        ),
        (
            "credentials in url",
            http("http://u:p@example.com/"),
            422,
            "spec.url",
            "credentials in the URL",
        ),
        (
            "loopback v4",
            http("http://127.0.0.1/"),
            422,
            "spec.url",
            "is loopback",
        ),
        (
            "loopback v6",
            http("http://[::1]:8080/"),
            422,
            "spec.url",
            "is loopback",
        ),
        (
            "cloud metadata",
            http("http://169.254.169.254/latest/meta-data/"),
            422,
            "spec.url",
            "is cloud-metadata",
        ),
        (
            "unspecified",
            http("http://0.0.0.0/"),
            422,
            "spec.url",
            "is unspecified",
        ),
        (
            "decimal loopback",
            http("http://2130706433/"),
            422,
            "spec.url",
            "127.0.0.1 is loopback",
        ),
        (
            "mapped loopback",
            http("http://[::ffff:127.0.0.1]/"),
            422,
            "spec.url",
            "is loopback",
        ),
        (
            "name resolving to loopback",
            http("http://localhost:9/"),
            422,
            "spec.url",
            "localhost: 127.0.0.1 is loopback",
        ),
    ];
    for (what, body, status, field, needle) in cases {
        let (s, resp) = t.post("/api/v1/jobs", body).await;
        assert_eq!(s, status, "{what}: {resp}");
        let msg = resp["error"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(needle),
            "{what}: message {msg:?} lacks {needle:?}"
        );
        if !field.is_empty() {
            assert_eq!(resp["error"]["field"], field, "{what}: {resp}");
        }
        assert!(resp["error"]["code"].is_string(), "{what}");
    }
    // Nothing was created by any of them.
    let (_, list) = t.get("/api/v1/jobs").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    t.stop().await;
}

#[tokio::test]
async fn transport_level_refusals() {
    let t = TestApp::start_with(
        |c| c.api.max_body_bytes = 4096,
        std::sync::Arc::new(steward_clock::SystemClock),
    )
    .await;
    // Oversized body.
    let big = cmd(json!({"description": "x".repeat(10_000)}));
    let (s, resp) = t.post("/api/v1/jobs", big).await;
    assert_eq!(s, 413, "{resp}");
    assert_eq!(resp["error"]["code"], "body_too_large");
    // Wrong content type.
    let r = t
        .client
        .post(t.url("/api/v1/jobs"))
        .body("name=x")
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    // Malformed JSON.
    let r = t
        .client
        .post(t.url("/api/v1/jobs"))
        .body("{\"name\":")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_json");
    // Unknown query parameter and bad values.
    let (s, v) = t.get("/api/v1/runs?stauts=failed").await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["code"], "unknown_parameter", "{v}");
    assert_eq!(v["error"]["field"], "stauts", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("stauts"),
        "{v}"
    );
    let (s, _) = t.get("/api/v1/runs?limit=0").await;
    assert_eq!(s, 422);
    // Path and query parameters of the wrong type: the JSON error, naming the parameter.
    for path in [
        "/api/v1/runs/abc",
        "/api/v1/runs/1.5/output",
        "/api/v1/runs/99999999999999999999",
    ] {
        let (s, v) = t.get(path).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some("invalid_parameter")),
            "{path}: {v}"
        );
        assert_eq!(v["error"]["field"], "run", "{path}: {v}");
    }
    let (s, v) = t
        .call(&t.client, "DELETE", "/api/v1/tokens/abc", None)
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("token")),
        "{v}"
    );
    let (s, v) = t.get("/api/v1/runs?limit=abc").await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("limit")),
        "{v}"
    );
    // Unknown query parameters are refused on every route, not ignored.
    for path in [
        "/api/v1/jobs?colour=x",
        "/api/v1/tokens?everyone=true&x=1",
        "/api/v1/audit?actr=admin",
        "/api/v1/auth/me?debug=1",
    ] {
        let (s, v) = t.get(path).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some("unknown_parameter")),
            "{path}: {v}"
        );
    }
    let (s, v) = t.get("/api/v1/nothing-here").await;
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("not_found")));
    // Preview of a bad expression.
    let (s, v) = t
        .post(
            "/api/v1/schedules/preview",
            json!({"schedule": "* * * * * * * *"}),
        )
        .await;
    assert_eq!((s, v["error"]["field"].as_str()), (422, Some("schedule")));
    t.stop().await;
}

/// NUL in any text a request carries (body strings and keys, path and query
/// parameters) is refused with the field named, on every route: PostgreSQL's
/// text cannot store it, and it must never become a 500 there.
#[tokio::test]
async fn nul_characters_are_refused_wherever_they_come_in() {
    let t = TestApp::start().await;
    let c = t.client.clone();
    let cases: Vec<(&str, String, Option<Value>, &str)> = vec![
        (
            "POST",
            "/api/v1/tokens".into(),
            Some(json!({"name": "a\u{0}b"})),
            "name",
        ),
        (
            "PUT",
            "/api/v1/secrets/NUL_TEST".into(),
            Some(json!({"value": "long enough", "description": "x\u{0}y"})),
            "description",
        ),
        (
            "POST",
            "/api/v1/jobs".into(),
            Some(
                json!({"name": "n", "spec": {"kind": "command", "argv": ["true"], "env": {"A\u{0}": "1"}}}),
            ),
            "spec.env.A\u{0}",
        ),
        ("GET", "/api/v1/audit?actor=a%00b".into(), None, "actor"),
        ("GET", "/api/v1/runs?job=a%00b".into(), None, "job"),
        ("GET", "/api/v1/jobs/a%00b".into(), None, "job"),
        ("DELETE", "/api/v1/secrets/a%00b".into(), None, "name"),
    ];
    for (method, path, body, field) in cases {
        let (status, v) = t.call(&c, method, &path, body).await;
        assert!(
            status == 400 || status == 422,
            "{method} {path}: {status} {v}"
        );
        assert_eq!(v["error"]["field"], field, "{method} {path}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("NUL"),
            "{method} {path}: {v}"
        );
    }
    assert_eq!(t.get("/readyz").await.0, 200);
}
