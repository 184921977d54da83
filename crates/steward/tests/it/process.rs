//! The real binary: signals and crashes.

use crate::helpers::{alive, TestApp};
use serde_json::{json, Value};
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use steward_engine::clock::SystemClock;

struct Server {
    child: Child,
    base: String,
    client: reqwest::Client,
}

async fn spawn_server(data: &std::path::Path, extra_env: &[(&str, &str)]) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_steward"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("STEWARD_LOG_FORMAT", "json")
        .env("STEWARD_RUN_AS_USER", "root")
        .env("STEWARD_KILL_GRACE", "1s")
        .env(
            "STEWARD_BOOTSTRAP_ADMIN_PASSWORD",
            crate::helpers::BOOTSTRAP_PASSWORD,
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .current_dir(data.parent().unwrap());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines.next().expect("server exited before serving").unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if v["fields"]["message"] == "steward is serving" {
            break v["fields"]["addr"].as_str().unwrap().to_owned();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let base = format!("http://{addr}");
    let token = crate::helpers::admin_token(&base).await;
    Server {
        child,
        base,
        client: crate::helpers::token_client(&token),
    }
}

async fn post(s: &Server, path: &str, body: Value) -> Value {
    let r = s
        .client
        .post(format!("{}{path}", s.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    r.json().await.unwrap()
}

async fn get(s: &Server, path: &str) -> Value {
    s.client
        .get(format!("{}{path}", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_pid(path: &std::path::Path) -> i32 {
    for _ in 0..400 {
        if let Ok(p) = std::fs::read_to_string(path) {
            if let Ok(pid) = p.trim().parse() {
                return pid;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no pid written to {}", path.display());
}

async fn wait_status(s: &Server, run: i64, want: &str) {
    for _ in 0..400 {
        if get(s, &format!("/api/v1/runs/{run}")).await["status"] == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("run {run} never became {want}");
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(std::time::Instant::now() < deadline, "server did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

#[tokio::test]
async fn sigterm_lets_short_work_finish_and_cancels_long_work_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut s = spawn_server(&data, &[("STEWARD_SHUTDOWN_GRACE", "2s")]).await;
    post(
        &s,
        "/api/v1/jobs",
        json!({"name": "short", "spec": {"kind": "command", "argv": ["sleep", "1"]}}),
    )
    .await;
    let pidfile = dir.path().join("long.pid");
    let script = format!("echo $$ > {}; exec sleep 300", pidfile.display());
    post(
        &s,
        "/api/v1/jobs",
        json!({"name": "long", "spec": {"kind": "command", "argv": ["sh", "-c", script]}}),
    )
    .await;
    let short = post(&s, "/api/v1/jobs/short/run", json!({})).await["id"]
        .as_i64()
        .unwrap();
    let long = post(&s, "/api/v1/jobs/long/run", json!({})).await["id"]
        .as_i64()
        .unwrap();
    wait_status(&s, long, "running").await;
    wait_status(&s, short, "running").await;

    let started = std::time::Instant::now();
    signal(&s.child, nix::sys::signal::Signal::SIGTERM);
    let status = wait_exit(&mut s.child, Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "did not wait for the grace period"
    );
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!alive(pid), "the long run's process survived shutdown");

    // Read the records back through a fresh instance on the same data directory.
    let t = TestApp::start_in(dir, |_| {}, Arc::new(SystemClock)).await;
    let (_, short) = t.get(&format!("/api/v1/runs/{short}")).await;
    assert_eq!(short["status"], "succeeded", "{short}");
    let (_, long) = t.get(&format!("/api/v1/runs/{long}")).await;
    assert_eq!(long["status"], "cancelled", "{long}");
    assert!(
        long["error"].as_str().unwrap().contains("shut down"),
        "{long}"
    );
    t.stop().await;
}

#[tokio::test]
async fn kill_9_mid_run_then_restart_abandons_and_honours_the_missed_run_policy() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let fast_stop = [("STEWARD_SHUTDOWN_GRACE", "1s")];
    let mut s = spawn_server(&data, &fast_stop).await;
    let pidfile = dir.path().join("victim.pid");
    let script = format!("echo $$ > {}; exec sleep 300", pidfile.display());
    post(
        &s,
        "/api/v1/jobs",
        json!({"name": "every3", "schedule": "@every 3s", "policies": {"missed": "run_once"},
               "spec": {"kind": "command", "argv": ["sh", "-c", script]}}),
    )
    .await;
    // Wait for the first scheduled run to be running.
    let mut first = None;
    for _ in 0..400 {
        let runs = get(&s, "/api/v1/runs?job=every3").await;
        if let Some(r) = runs["items"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["status"] == "running"))
        {
            first = Some(r["id"].as_i64().unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let first = first.expect("no scheduled run started");
    let victim = wait_pid(&pidfile).await;
    signal(&s.child, nix::sys::signal::Signal::SIGKILL);
    wait_exit(&mut s.child, Duration::from_secs(5));
    // The crashed server's command survives it (its own process group)...
    assert!(
        alive(victim),
        "the test needs the orphan to outlive the crash"
    );
    std::thread::sleep(Duration::from_secs(7)); // at least two occurrences missed
    let restart = chrono::Utc::now();

    let mut s = spawn_server(&data, &fast_stop).await;
    // ...and the restart stops it before marking the run abandoned.
    assert!(
        !alive(victim),
        "restart left the crashed run's process {victim} running"
    );
    // Wait for the catch-up run, which starts in the background.
    for _ in 0..200 {
        let runs = get(&s, "/api/v1/runs?job=every3").await;
        let created_since_restart = |r: &Value| {
            chrono::DateTime::parse_from_rfc3339(r["created_at"].as_str().unwrap()).unwrap()
                >= restart
        };
        if runs["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(created_since_restart)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let runs = get(&s, "/api/v1/runs?job=every3").await;
    let items = runs["items"].as_array().unwrap();
    let old = items.iter().find(|r| r["id"] == first).unwrap();
    assert_eq!(old["status"], "abandoned", "{old}");
    // Exactly one catch-up run for the missed occurrences, stamped before the restart.
    let catch_up: Vec<&Value> = items
        .iter()
        .filter(|r| {
            let time =
                |k: &str| chrono::DateTime::parse_from_rfc3339(r[k].as_str().unwrap()).unwrap();
            time("created_at") >= restart && time("scheduled_for") < restart
        })
        .collect();
    assert_eq!(catch_up.len(), 1, "{runs:#}");
    signal(&s.child, nix::sys::signal::Signal::SIGTERM);
    wait_exit(&mut s.child, Duration::from_secs(30));
}

#[tokio::test]
async fn cli_config_check_and_schedule_preview() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[auth]\nsession_idle = \"5s\"\n[executor]\noutput_limit = 5\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("auth.session_idle:") && err.contains("executor.output_limit:"),
        "{err}"
    );

    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, "[scheduler]\ngrace = \"5s\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(["config", "check"])
        .arg(&unknown)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `grace`"));

    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "timezone = \"Europe/Berlin\"\n[outbound]\nallow = [\"10.0.0.0/8\"]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(["config", "check"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = Command::new(env!("CARGO_BIN_EXE_steward"))
        .args([
            "schedule",
            "preview",
            "0 9 * * 1-5",
            "--tz",
            "America/New_York",
            "-n",
            "3",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
    let out = Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(["schedule", "preview", "bad"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = Command::new(env!("CARGO_BIN_EXE_steward"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("steward "));
}
