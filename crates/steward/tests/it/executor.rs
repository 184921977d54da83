use crate::helpers::{gone, TestApp};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use steward_clock::SystemClock;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn read_pid(path: &std::path::Path) -> i32 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn timeout_kills_the_whole_process_tree() {
    let t = TestApp::start().await;
    let pidfile = t.work().join("bg.pid");
    // A grandchild that ignores SIGTERM, so SIGKILL after the grace is needed.
    let script = format!(
        "sh -c 'trap \"\" TERM; sleep 300' & echo $! > {}; sleep 300",
        pidfile.display()
    );
    t.command_job(
        "slow",
        &["sh", "-c", &script],
        json!({"policies": {"timeout": "1s"}}),
    )
    .await;
    let (_, run) = t.post("/api/v1/jobs/slow/run", json!({})).await;
    let run = t
        .wait_run(run["id"].as_i64().unwrap(), Duration::from_secs(15))
        .await;
    assert_eq!(run["status"], "timed_out", "{run}");
    assert_eq!(run["error"], "timed out after 1s");
    let pid = read_pid(&pidfile);
    assert!(gone(pid).await, "grandchild {pid} survived the timeout");
    let out = t.text(&format!("/api/v1/runs/{}/output", run["id"])).await;
    assert!(out.contains("sending SIGTERM"), "{out}");
    t.stop().await;
}

#[tokio::test]
async fn leftovers_are_killed_when_the_main_process_exits() {
    let t = TestApp::start().await;
    let pidfile = t.work().join("left.pid");
    // The background child keeps stdout open; the run must still end promptly.
    let script = format!("sleep 300 & echo $! > {}; echo done", pidfile.display());
    t.command_job("leaver", &["sh", "-c", &script], json!({}))
        .await;
    let (_, run) = t.post("/api/v1/jobs/leaver/run", json!({})).await;
    let run = t
        .wait_run(run["id"].as_i64().unwrap(), Duration::from_secs(10))
        .await;
    assert_eq!(run["status"], "succeeded");
    assert!(gone(read_pid(&pidfile)).await, "orphan survived");
    t.stop().await;
}

#[tokio::test]
async fn cancel_stops_a_running_run() {
    let t = TestApp::start().await;
    let pidfile = t.work().join("c.pid");
    let script = format!("echo $$ > {}; exec sleep 300", pidfile.display());
    t.command_job("cancel-me", &["sh", "-c", &script], json!({}))
        .await;
    let (_, run) = t.post("/api/v1/jobs/cancel-me/run", json!({})).await;
    let id = run["id"].as_i64().unwrap();
    for _ in 0..200 {
        if pidfile.exists()
            && std::fs::read_to_string(&pidfile)
                .map(|s| s.ends_with('\n'))
                .unwrap_or(false)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (s, _) = t
        .post(&format!("/api/v1/runs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(s, 202);
    let run = t.wait_run(id, Duration::from_secs(10)).await;
    assert_eq!(run["status"], "cancelled");
    assert!(gone(read_pid(&pidfile)).await);
    // Cancelling a finished run is a conflict.
    let (s, v) = t
        .post(&format!("/api/v1/runs/{id}/cancel"), json!({}))
        .await;
    assert_eq!((s, v["error"]["code"].as_str()), (409, Some("conflict")));
    t.stop().await;
}

#[tokio::test]
async fn output_is_bounded_keeping_head_and_tail() {
    let t = TestApp::start_with(|c| c.executor.output_limit = 4096, Arc::new(SystemClock)).await;
    t.command_job(
        "chatty",
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 5000 ]; do echo line-$i; i=$((i+1)); done",
        ],
        json!({}),
    )
    .await;
    let (_, run) = t.post("/api/v1/jobs/chatty/run", json!({})).await;
    let run = t
        .wait_run(run["id"].as_i64().unwrap(), Duration::from_secs(20))
        .await;
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["output_truncated"], true);
    let out = t.text(&format!("/api/v1/runs/{}/output", run["id"])).await;
    assert!(out.len() < 4096 + 200, "{} bytes kept", out.len());
    assert!(out.contains(" out line-0\n"));
    assert!(out.contains(" out line-4999\n"));
    assert!(out.contains("output truncated"));
    assert!(!out.contains(" out line-2500\n"));
    t.stop().await;
}

#[tokio::test]
async fn clean_environment_closed_stdin_and_recorded_shell() {
    let t = TestApp::start().await;
    std::env::set_var("STEWARD_TEST_LEAK", "leaked");
    t.create_job(
        json!({"name": "env", "spec": {"kind": "command", "shell": true,
        "argv": ["env | sort; cat; echo stdin-closed"], "env": {"FOO": "bar"}}}),
    )
    .await;
    let (_, run) = t.post("/api/v1/jobs/env/run", json!({})).await;
    let run = t
        .wait_run(run["id"].as_i64().unwrap(), Duration::from_secs(10))
        .await;
    assert_eq!(run["status"], "succeeded");
    let out = t.text(&format!("/api/v1/runs/{}/output", run["id"])).await;
    assert!(out.contains("shell=true"), "{out}");
    assert!(out.contains(" out FOO=bar\n"));
    assert!(out.contains(" out STEWARD_JOB_NAME=env\n"));
    assert!(out.contains(" out stdin-closed\n"));
    assert!(
        !out.contains("leaked"),
        "the server's environment leaked: {out}"
    );
    t.stop().await;
}

#[tokio::test]
async fn commands_run_unprivileged_when_steward_is_root() {
    let t = TestApp::start_with(|c| c.executor.run_as_user = None, Arc::new(SystemClock)).await;
    t.command_job("whoami", &["id", "-u"], json!({})).await;
    let (_, run) = t.post("/api/v1/jobs/whoami/run", json!({})).await;
    let run = t
        .wait_run(run["id"].as_i64().unwrap(), Duration::from_secs(10))
        .await;
    let out = t.text(&format!("/api/v1/runs/{}/output", run["id"])).await;
    let expected = if nix::unistd::geteuid().is_root() {
        nix::unistd::User::from_name("nobody")
            .unwrap()
            .unwrap()
            .uid
            .to_string()
    } else {
        nix::unistd::geteuid().to_string()
    };
    assert!(out.contains(&format!(" out {expected}\n")), "{out}");
    t.stop().await;
}

#[tokio::test]
async fn retries_with_backoff_then_the_failure_chain() {
    let t = TestApp::start().await;
    t.command_job("cleanup", &["true"], json!({})).await;
    t.command_job("flaky", &["false"], json!({
        "policies": {"retries": {"count": 2, "delay": "100ms", "backoff": 2.0, "max_delay": "1s"}},
        "on_failure": ["cleanup"]
    }))
    .await;
    let (_, _) = t.post("/api/v1/jobs/flaky/run", json!({})).await;
    let runs = t
        .wait_runs("flaky", Duration::from_secs(15), |r| {
            r.len() == 3 && r.iter().all(|r| r["status"] == "failed")
        })
        .await;
    let attempts: Vec<i64> = runs
        .iter()
        .rev()
        .map(|r| r["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(attempts, vec![1, 2, 3]);
    assert_eq!(runs[0]["trigger"], "retry");
    assert_eq!(runs[0]["parent_run_id"], runs[1]["id"]);
    let chained = t
        .wait_runs("cleanup", Duration::from_secs(10), |r| {
            r.len() == 1 && r[0]["status"] == "succeeded"
        })
        .await;
    assert_eq!(chained[0]["trigger"], "chain");
    assert_eq!(
        chained[0]["parent_run_id"], runs[0]["id"],
        "chain starts only after the last attempt"
    );
    t.stop().await;
}

#[tokio::test]
async fn overlap_skip_and_queue() {
    let t = TestApp::start().await;
    t.command_job(
        "skipper",
        &["sleep", "1"],
        json!({"policies": {"overlap": "skip"}}),
    )
    .await;
    let (_, first) = t.post("/api/v1/jobs/skipper/run", json!({})).await;
    // A manual run the policy refuses: 409 naming the active run, no record.
    let (s, second) = t.post("/api/v1/jobs/skipper/run", json!({})).await;
    assert_eq!(s, 409, "{second}");
    assert_eq!(second["error"]["code"], "conflict");
    let msg = second["error"]["message"].as_str().unwrap();
    assert!(msg.contains(&format!("(run {})", first["id"])), "{msg}");
    assert!(msg.contains("overlap policy is skip"), "{msg}");
    assert_eq!(t.runs_of("skipper").await.len(), 1);
    t.wait_run(first["id"].as_i64().unwrap(), Duration::from_secs(10))
        .await;

    t.command_job(
        "queuer",
        &["sleep", "1"],
        json!({"policies": {"overlap": "queue"}}),
    )
    .await;
    let (_, a) = t.post("/api/v1/jobs/queuer/run", json!({})).await;
    let (_, b) = t.post("/api/v1/jobs/queuer/run", json!({})).await;
    let (s, c) = t.post("/api/v1/jobs/queuer/run", json!({})).await;
    assert_eq!(b["status"], "queued");
    assert_eq!(s, 409, "{c}");
    assert!(
        c["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("(run {})", b["id"])),
        "{c}"
    );
    // While it waits, the run says for what.
    let (_, waiting) = t.get(&format!("/api/v1/runs/{}", b["id"])).await;
    if waiting["status"] == "queued" {
        assert!(waiting["waiting_for"].as_str().is_some(), "{waiting}");
    }
    let a = t
        .wait_run(a["id"].as_i64().unwrap(), Duration::from_secs(10))
        .await;
    let b = t
        .wait_run(b["id"].as_i64().unwrap(), Duration::from_secs(10))
        .await;
    assert_eq!(b["status"], "succeeded");
    assert!(
        instant(&b["started_at"]) >= instant(&a["finished_at"]),
        "queued run overlapped: {b} started before {a} ended"
    );

    t.command_job(
        "allower",
        &["sleep", "1"],
        json!({"policies": {"overlap": "allow"}}),
    )
    .await;
    let (sx, _) = t.post("/api/v1/jobs/allower/run", json!({})).await;
    let (sy, _) = t.post("/api/v1/jobs/allower/run", json!({})).await;
    assert_eq!((sx, sy), (202, 202));
    let runs = t
        .wait_runs("allower", Duration::from_secs(10), |r| {
            r.len() == 2 && r.iter().all(|r| r["status"] == "succeeded")
        })
        .await;
    // Both ran at once: each started before the other finished.
    let at = |r: &Value, k: &str| r[k].as_str().unwrap().to_owned();
    assert!(at(&runs[0], "started_at") < at(&runs[1], "finished_at"));
    assert!(at(&runs[1], "started_at") < at(&runs[0], "finished_at"));
    t.stop().await;
}

/// A minimal HTTP server: `/ok` 200, `/fail` 500, `/redirect` 302 to cloud metadata.
async fn tiny_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let resp = match path.as_str() {
                    "/ok" => "HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\npong".to_owned(),
                    "/fail" => "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\nconnection: close\r\n\r\nboom".to_owned(),
                    "/redirect" => "HTTP/1.1 302 Found\r\nlocation: http://169.254.169.254/latest/\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_owned(),
                    _ => "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_owned(),
                };
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn http_jobs_record_status_and_recheck_redirects() {
    let addr = tiny_server().await;
    let t = TestApp::start_with(
        |c| c.outbound.allow = vec!["127.0.0.1/32".parse().unwrap()],
        Arc::new(SystemClock),
    )
    .await;
    for (name, path, status, code) in [
        ("ok", "/ok", "succeeded", 200),
        ("fail", "/fail", "failed", 500),
    ] {
        t.create_job(
            json!({"name": name, "spec": {"kind": "http", "url": format!("http://{addr}{path}")}}),
        )
        .await;
        let (_, run) = t.post(&format!("/api/v1/jobs/{name}/run"), json!({})).await;
        let run = t
            .wait_run(run["id"].as_i64().unwrap(), Duration::from_secs(10))
            .await;
        assert_eq!(run["status"], status, "{run}");
        assert_eq!(run["outcome"]["status"], code);
    }
    let (_, ok_runs) = t.get("/api/v1/runs?job=ok").await;
    let out = t
        .text(&format!(
            "/api/v1/runs/{}/output",
            ok_runs["items"][0]["id"]
        ))
        .await;
    assert!(out.contains(" out pong"), "{out}");

    t.create_job(json!({"name": "redir", "spec": {"kind": "http", "url": format!("http://{addr}/redirect")}})).await;
    let (_, run) = t.post("/api/v1/jobs/redir/run", json!({})).await;
    let run = t
        .wait_run(run["id"].as_i64().unwrap(), Duration::from_secs(10))
        .await;
    assert_eq!(run["status"], "failed");
    let err = run["error"].as_str().unwrap();
    assert!(err.contains("169.254.169.254 is cloud-metadata"), "{err}");
    t.stop().await;
}

#[tokio::test]
async fn http_policy_is_applied_again_at_run_time() {
    // Saved while the operator allowed loopback; after a restart without that
    // allowance the same job must be refused when it runs, naming the rule.
    let allow = |c: &mut steward::config::Config| {
        c.outbound.allow = vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]
    };
    let t = TestApp::start_with(allow, Arc::new(SystemClock)).await;
    t.create_job(json!({"name": "lh", "spec": {"kind": "http", "url": "http://localhost:9/"}}))
        .await;
    let dir = t.stop().await;
    let t = TestApp::start_in(dir, |_| {}, Arc::new(SystemClock)).await;
    let (_, run) = t.post("/api/v1/jobs/lh/run", json!({})).await;
    let run = t
        .wait_run(run["id"].as_i64().unwrap(), Duration::from_secs(10))
        .await;
    assert_eq!(run["status"], "failed");
    let err = run["error"].as_str().unwrap();
    assert!(
        err.contains("localhost") && err.contains("is loopback"),
        "{err}"
    );
    // Switching it off does not re-check the target, so it stays possible.
    let (s, v) = t.post("/api/v1/jobs/lh/disable", json!({})).await;
    assert_eq!((s, v["enabled"].as_bool()), (200, Some(false)), "{v}");
    t.stop().await;
}

/// Past `max_active_runs`, work waits in the queue instead of being shed: a
/// manual run is accepted (202, queued, saying why), scheduled occurrences
/// are recorded, and all of them run once the place frees, one at a time.
#[tokio::test]
async fn overload_queues_work_and_loses_none() {
    let t = TestApp::start_with(|c| c.executor.max_active_runs = 1, Arc::new(SystemClock)).await;
    t.command_job("hog", &["sleep", "2"], json!({})).await;
    let (s, hog) = t.post("/api/v1/jobs/hog/run", json!({})).await;
    assert_eq!(s, 202);
    t.wait_status(
        hog["id"].as_i64().unwrap(),
        "running",
        Duration::from_secs(5),
    )
    .await;
    // Made after the hog took the one place: a scheduled run prepared ahead
    // takes its place when it is prepared, and would have been first.
    t.command_job(
        "tick",
        &["true"],
        json!({"schedule": "@every 1s", "policies": {"overlap": "allow"}}),
    )
    .await;
    let (s, manual) = t.post("/api/v1/jobs/tick/run", json!({})).await;
    assert_eq!(
        (s, manual["status"].as_str()),
        (202, Some("queued")),
        "{manual}"
    );
    assert_eq!(
        manual["waiting_for"],
        "waiting for a free place to run (executor.max_active_runs)"
    );
    // While the hog runs, occurrences pile up as queued runs, none lost.
    let queued = t
        .wait_runs("tick", Duration::from_secs(10), |r| {
            r.iter().filter(|r| r["status"] == "queued").count() >= 2
        })
        .await;
    assert!(queued.iter().all(|r| r["status"] == "queued"), "{queued:?}");
    let m = t.text("/metrics").await;
    assert!(m.contains("steward_runs_queued "), "{m}");
    // Then every one of them runs, each once.
    let hog = t
        .wait_run(hog["id"].as_i64().unwrap(), Duration::from_secs(10))
        .await;
    let runs = t
        .wait_runs("tick", Duration::from_secs(15), |r| {
            r.iter().filter(|r| r["status"] == "succeeded").count() >= queued.len()
        })
        .await;
    for q in &queued {
        let r = runs.iter().find(|r| r["id"] == q["id"]).unwrap();
        assert_eq!(r["status"], "succeeded", "{r}");
        assert!(
            instant(&r["started_at"]) >= instant(&hog["finished_at"]),
            "{r} started before the hog ended"
        );
    }
    t.stop().await;
}

/// A job deleted while its run starts: either the deletion is refused (the
/// run is running) or the run never executes; never a process running for a
/// job whose record is gone. Twenty races, the run's process leaving a mark.
#[tokio::test]
async fn a_job_deleted_while_its_run_starts() {
    let t = TestApp::start().await;
    let work = t.work();
    let mut deleted_first = 0;
    for i in 0..20 {
        let mark = work.join(format!("ran-{i}"));
        let name = format!("del-{i}");
        t.command_job(
            &name,
            &["sh", "-c", &format!("touch {}; sleep 0.3", mark.display())],
            json!({}),
        )
        .await;
        let run_path = format!("/api/v1/jobs/{name}/run");
        let job_path = format!("/api/v1/jobs/{name}");
        let (run, delete) = tokio::join!(
            t.post(&run_path, json!({})),
            t.call(&t.client, "DELETE", &job_path, None),
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        match delete.0 {
            // Refused: the run was running, and is still on record.
            409 => {
                let id = run.1["id"].as_i64().unwrap();
                let (s, r) = t.get(&format!("/api/v1/runs/{id}")).await;
                assert_eq!(s, 200, "race {i}: {r}");
            }
            204 => {
                deleted_first += 1;
                assert!(
                    !mark.exists(),
                    "race {i}: the run executed for a deleted job (run answered {run:?})"
                );
            }
            other => panic!("race {i}: deletion answered {other}: {delete:?}"),
        }
    }
    eprintln!("{deleted_first} of 20 deletions came first");
}

/// A timestamp of the API as an instant: compared as strings, a whole second
/// (written without a fraction) would sort after a later time in that second.
fn instant(v: &serde_json::Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().expect("a timestamp")).unwrap()
}
