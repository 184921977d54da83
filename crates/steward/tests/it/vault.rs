//! Sealed secrets at run time and key rotation, online and offline.

use crate::helpers::TestApp;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use steward_clock::SystemClock;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Answers 200 with the request line and Authorization header it saw, so the
/// test can check the secret arrived and is masked in the run's output.
async fn echo_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let line = head.lines().next().unwrap_or("").to_owned();
                let auth = head
                    .lines()
                    .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
                    .unwrap_or("")
                    .to_owned();
                let body = format!("{line}\n{auth}\n");
                let status = if auth.ends_with("Bearer tok-123-secret") {
                    "200 OK"
                } else {
                    "401 Unauthorized"
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn http_jobs_get_secrets_in_headers_and_urls_and_their_output_is_masked() {
    let addr = echo_server().await;
    let t = TestApp::start_with(
        |c| c.outbound.allow = vec!["127.0.0.1/32".parse().unwrap()],
        Arc::new(SystemClock),
    )
    .await;
    for (name, value) in [("PING_KEY", "ping-key-abc987"), ("TOKEN", "tok-123-secret")] {
        let (s, _) = t
            .call(
                &t.client,
                "PUT",
                &format!("/api/v1/secrets/{name}"),
                Some(json!({"value": value})),
            )
            .await;
        assert_eq!(s, 201);
    }
    t.create_job(json!({
        "name": "ping",
        "spec": {
            "kind": "http",
            "url": format!("http://{addr}/ping/${{secret:PING_KEY}}?k=${{secret:PING_KEY}}"),
            "headers": {"Authorization": "Bearer ${secret:TOKEN}"}
        }
    }))
    .await;
    let (_, run) = t.post("/api/v1/jobs/ping/run", json!({})).await;
    let run = t
        .wait_run(run["id"].as_i64().unwrap(), Duration::from_secs(10))
        .await;
    assert_eq!(
        run["status"], "succeeded",
        "the server saw the real token: {run}"
    );
    let out = t.text(&format!("/api/v1/runs/{}/output", run["id"])).await;
    assert!(
        out.contains("GET /ping/[secret]?k=[secret] HTTP/1.1"),
        "{out}"
    );
    assert!(out.contains("Bearer [secret]"), "{out}");
    assert!(!out.contains("ping-key-abc987") && !out.contains("tok-123-secret"));
    // The stored definition keeps the reference, not the value.
    let (_, job) = t.get("/api/v1/jobs/ping").await;
    assert_eq!(
        job["spec"]["headers"]["Authorization"],
        "Bearer ${secret:TOKEN}"
    );
}

async fn run_secret_job(t: &TestApp) -> String {
    let (_, run) = t.post("/api/v1/jobs/uses-secret/run", json!({})).await;
    let run = t
        .wait_run(run["id"].as_i64().unwrap(), Duration::from_secs(10))
        .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    std::fs::read_to_string(t.work().join("secret.out")).unwrap()
}

fn key_versions(key_file: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(key_file)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("key "))
        .map(|l| l.split_whitespace().nth(1).unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn key_rotation_reseals_everything_online_and_offline() {
    let t = TestApp::start().await;
    let out = t.work().join("secret.out");
    let (s, _) = t
        .call(
            &t.client,
            "PUT",
            "/api/v1/secrets/DB_PASSWORD",
            Some(json!({"value": "correct-db-password"})),
        )
        .await;
    assert_eq!(s, 201);
    let (s, body) = t
        .call(&t.client, "PUT", "/api/v1/settings/smtp", Some(json!({"host": "127.0.0.1", "port": 2525, "security": "none", "username": "u", "from": "steward@example.test", "password": "smtp-pass"})))
        .await;
    assert_eq!(s, 204, "{body}");
    t.command_job(
        "uses-secret",
        &["sh", "-c", &format!("printf %s \"$PW\" > {}", out.display())],
        json!({"spec": {"kind": "command", "argv": ["sh", "-c", format!("printf %s \"$PW\" > {}", out.display())], "env": {"PW": "${secret:DB_PASSWORD}"}}}),
    )
    .await;
    assert_eq!(run_secret_job(&t).await, "correct-db-password");
    let key_file = t.dir.path().join("data/steward.key");
    assert_eq!(key_versions(&key_file), vec!["1"]);

    // Online.
    let (s, report) = t.post("/api/v1/keys/rotate", json!({})).await;
    assert_eq!(s, 200, "{report}");
    assert_eq!(report["new_version"], 2);
    assert_eq!(report["resealed"], 2, "the secret and the SMTP password");
    assert_eq!(report["retired"], json!([1]));
    assert_eq!(key_versions(&key_file), vec!["2"]);
    let (_, list) = t.get("/api/v1/secrets").await;
    assert_eq!(list[0]["key_version"], 2);
    assert_eq!(run_secret_job(&t).await, "correct-db-password");
    let (_, log) = t.get("/api/v1/audit?event=key.rotate").await;
    assert_eq!(log["items"][0]["diff"]["resealed"], 2);

    // Offline, with the server stopped.
    let dir = t.stop().await;
    let data = dir.path().join("data");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(["admin", "rotate-key", "--data-dir"])
        .arg(&data)
        .envs(crate::helpers::database_env(&data))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("key v3"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_eq!(key_versions(&key_file), vec!["3"]);
    let t = TestApp::start_in(dir, |_| {}, Arc::new(SystemClock)).await;
    assert_eq!(run_secret_job(&t).await, "correct-db-password");
    let (_, smtp) = t.get("/api/v1/settings/smtp").await;
    assert_eq!(smtp["password_set"], true);
    assert!(smtp.get("password").is_none());
}

#[tokio::test]
async fn a_key_file_others_can_read_or_a_missing_explicit_one_stops_the_start() {
    use std::os::unix::fs::PermissionsExt as _;
    let t = TestApp::start().await;
    let dir = t.stop().await;
    let key = dir.path().join("data/steward.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut c = crate::helpers::config(dir.path());
    let e = steward::Application::build(std::mem::take(&mut c))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("readable by other users") && e.contains("chmod 600"),
        "{e}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // STEWARD_MASTER_KEY_FILE: an explicit key that does not exist is an error, not a new key.
    let mut c = crate::helpers::config(dir.path());
    c.auth.master_key_file = Some(dir.path().join("mounted/master.key"));
    let e = steward::Application::build(c)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("auth.master_key_file")
            && e.contains("master.key")
            && e.contains("does not exist"),
        "{e}"
    );

    // The same key moved elsewhere works, and sealed values still open.
    let moved = dir.path().join("master.key");
    std::fs::rename(&key, &moved).unwrap();
    let t = TestApp::start_in(
        dir,
        |c| c.auth.master_key_file = Some(moved.clone()),
        Arc::new(SystemClock),
    )
    .await;
    assert!(
        !t.dir.path().join("data/steward.key").exists(),
        "no second key was made"
    );
    let (s, _) = t
        .call(
            &t.client,
            "PUT",
            "/api/v1/secrets/X",
            Some(json!({"value": "some value"})),
        )
        .await;
    assert_eq!(s, 201);
}

/// A job that names a secret is saved while the secret is deleted: one of
/// the two must lose, never both win (a stored job referring to a secret that
/// is gone). Twenty races.
#[tokio::test]
async fn a_secret_deleted_while_a_job_naming_it_is_saved() {
    let t = TestApp::start().await;
    for i in 0..20 {
        let secret = format!("RACE_{i}");
        let (s, _) = t
            .call(
                &t.client,
                "PUT",
                &format!("/api/v1/secrets/{secret}"),
                Some(json!({"value": "race-value-123"})),
            )
            .await;
        assert_eq!(s, 201);
        let job = json!({"name": format!("race-{i}"), "spec": {"kind": "command",
            "argv": ["true"], "env": {"X": format!("${{secret:{secret}}}")}}});
        let path = format!("/api/v1/secrets/{secret}");
        let (save, delete) = tokio::join!(
            t.call(&t.client, "POST", "/api/v1/jobs", Some(job)),
            t.call(&t.client, "DELETE", &path, None),
        );
        match (save.0, delete.0) {
            (201, 409) | (422, 204) => {}
            other => panic!(
                "race {i}: job save and secret deletion both ended {other:?}: {save:?} {delete:?}"
            ),
        }
    }
    t.stop().await;
}
