//! The real binary: signals and crashes.

use crate::helpers::{alive, wait_pid, TestApp};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use steward_clock::SystemClock;

struct Server {
    child: Child,
    base: String,
    client: reqwest::Client,
}

async fn spawn_server(data: &std::path::Path, extra_env: &[(&str, &str)]) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_steward"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .envs(crate::helpers::database_env(data))
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
    let base = crate::helpers::serving_base(child.stdout.take().unwrap());
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

async fn wait_status(s: &Server, run: i64, want: &str) {
    for _ in 0..400 {
        if get(s, &format!("/api/v1/runs/{run}")).await["status"] == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("run {run} never became {want}");
}

/// Waits until every thread of `pid` is stopped (SIGSTOP is delivered
/// asynchronously: a thread still running could act on a child's death).
fn wait_stopped(pid: u32) {
    for _ in 0..500 {
        let stopped = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
            .all(|t| {
                std::fs::read_to_string(t.path().join("stat"))
                    .ok()
                    .and_then(|st| {
                        st.rsplit_once(')')
                            .map(|(_, r)| r.trim_start().starts_with('T'))
                    })
                    .unwrap_or(true)
            });
        if stopped {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("process {pid} did not stop");
}

async fn output(s: &Server, run: i64) -> String {
    s.client
        .get(format!("{}/api/v1/runs/{run}/output", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
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
    let pidfile = crate::helpers::work_dir(dir.path()).join("long.pid");
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
    let pidfile = crate::helpers::work_dir(dir.path()).join("victim.pid");
    let escaper_pidfile = crate::helpers::work_dir(dir.path()).join("escaper.pid");
    let script = format!(
        "(setsid sh -c 'echo $$ > {}; exec sleep 300' </dev/null >/dev/null 2>&1 &); \
         i=1; while [ $i -le 150 ]; do echo printed line $i; i=$((i+1)); done; echo $$ > {}; exec sleep 300",
        escaper_pidfile.display(),
        pidfile.display()
    );
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
    let escaper = wait_pid(&escaper_pidfile).await;
    // Output is flushed to the store at least every second while the run goes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    signal(&s.child, nix::sys::signal::Signal::SIGKILL);
    wait_exit(&mut s.child, Duration::from_secs(5));
    // The crashed server's command does not outlive it: its launcher dies
    // with it (parent-death signal), the supervisor is told the same way and
    // kills every descendant (a restart would also kill what carries the
    // run's id in the recorded group).
    let mut gone = false;
    for _ in 0..100 {
        if !alive(victim) {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(gone, "the crashed run's process {victim} outlived Steward");
    assert!(
        !alive(escaper),
        "a process that left the run's session outlived Steward"
    );
    std::thread::sleep(Duration::from_secs(6)); // at least two occurrences missed
    let restart = chrono::Utc::now();

    let mut s = spawn_server(&data, &fast_stop).await;
    // What the crashed run printed was kept.
    let out = output(&s, first).await;
    assert_eq!(
        out.matches("out printed line ").count(),
        150,
        "the crashed run's output: {out}"
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

/// `kill -9` while a burst waits in the queue, then a restart: every run
/// that was queued runs exactly once (each run's own process leaves one
/// mark); the ones executing at the crash are recorded abandoned.
#[tokio::test]
async fn kill_9_during_a_queued_burst_then_restart_runs_each_queued_run_once() {
    const RUNS: usize = 60;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let marks = crate::helpers::work_dir(dir.path()).join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let env = [
        ("STEWARD_MAX_ACTIVE_RUNS", "2"),
        ("STEWARD_SHUTDOWN_GRACE", "1s"),
    ];
    let mut s = spawn_server(&data, &env).await;
    let script = format!(
        "echo $STEWARD_RUN_ID >> {}/$STEWARD_RUN_ID; sleep 0.2",
        marks.display()
    );
    post(
        &s,
        "/api/v1/jobs",
        json!({"name": "mark", "policies": {"overlap": "allow"},
               "spec": {"kind": "command", "argv": ["sh", "-c", script]}}),
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..RUNS {
        let run = post(&s, "/api/v1/jobs/mark/run", json!({})).await;
        assert_eq!(run["status"], "queued", "{run}");
        ids.push(run["id"].as_i64().unwrap());
    }
    // Mid-burst: some done, most still queued.
    for _ in 0..400 {
        let done = get(&s, "/api/v1/runs?job=mark&status=succeeded&limit=500").await;
        if done["items"].as_array().unwrap().len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    signal(&s.child, nix::sys::signal::Signal::SIGKILL);
    wait_exit(&mut s.child, Duration::from_secs(5));

    let mut s = spawn_server(&data, &env).await;
    let mut items = Vec::new();
    for _ in 0..800 {
        let runs = get(&s, "/api/v1/runs?job=mark&limit=500").await;
        items = runs["items"].as_array().unwrap().clone();
        if items
            .iter()
            .all(|r| r["status"] != "queued" && r["status"] != "running")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(items.len(), RUNS, "runs appeared or vanished");
    let mut abandoned = 0;
    for r in &items {
        let id = r["id"].as_i64().unwrap();
        let lines = std::fs::read_to_string(marks.join(id.to_string())).unwrap_or_default();
        match r["status"].as_str().unwrap() {
            "succeeded" => assert_eq!(
                lines.lines().count(),
                1,
                "run {id} ran {} times",
                lines.lines().count()
            ),
            "abandoned" => {
                abandoned += 1;
                assert!(lines.lines().count() <= 1, "run {id}");
            }
            other => panic!("run {id} ended {other}: {r}\n{}", output(&s, id).await),
        }
    }
    assert!(
        abandoned <= 2,
        "only runs executing at the crash are abandoned: {abandoned}"
    );
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

    // What fails only at run time is caught too: accounts, directories and files.
    let env_bad = dir.path().join("env-bad.toml");
    std::fs::write(
        &env_bad,
        format!(
            "[executor]\nrun_as_user = \"no-such-user-here\"\nworkdir = \"/no/such/dir\"\n\
             [metrics]\ntoken_file = \"{0}/missing-token\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(["config", "check"])
        .arg(&env_bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "executor.run_as_user:",
        "executor.workdir:",
        "metrics.token_file:",
    ] {
        assert!(err.contains(key), "{key} in {err}");
    }
    let short = dir.path().join("short.toml");
    std::fs::write(&short, "[metrics]\ntoken = \"12345\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(["config", "check"])
        .arg(&short)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("metrics.token: the token must be at least 16"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
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

/// Whether this machine lets a process make cgroups (root with a writable
/// cgroup2 mount, as in CI); the probe leaves nothing behind.
fn cgroups_here() -> Option<steward_engine::executor::cgroup::RunCgroups> {
    let probe = format!("it-probe-{}", std::process::id());
    let c = steward_engine::executor::cgroup::RunCgroups::detect(&probe).ok()?;
    c.remove_if_empty();
    Some(c)
}

/// The kernel's own bound on a run: its cgroup. A process that double-forks
/// into a new session is found there even when the run's sandbox supervisor
/// (the subreaper that would otherwise end it) was killed, while Steward lives
/// and, if Steward was killed too, at the next start. A job running as root
/// cannot move itself out of its cgroup either.
#[tokio::test]
async fn a_process_that_outlives_its_sandbox_is_ended_by_the_runs_cgroup() {
    let Some(probe) = cgroups_here() else {
        eprintln!("skipped: this machine gives Steward no cgroups (not root, or no writable cgroup2 mount)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let work = crate::helpers::work_dir(dir.path());
    let mut s = spawn_server(&data, &[("STEWARD_SHUTDOWN_GRACE", "1s")]).await;
    let mount = probe.mounts()[0].display().to_string();
    let job = |name: &str| {
        let (escaper, supervisor) = (
            work.join(format!("{name}.escaper")),
            work.join(format!("{name}.supervisor")),
        );
        let script = format!(
            "if echo 0 > {mount}/cgroup.procs 2>/dev/null; then echo MOVED OUT; else echo stayed in; fi; \
             (setsid sh -c 'echo $$ > {}; exec sleep 300' </dev/null >/dev/null 2>&1 &); \
             echo $PPID > {}; exec sleep 300",
            escaper.display(),
            supervisor.display()
        );
        (
            json!({"name": name, "spec": {"kind": "command", "argv": ["sh", "-c", script]}}),
            escaper,
            supervisor,
        )
    };

    // The supervisor is killed while Steward lives: the run ends, and so does
    // the escaper, which only the cgroup still holds.
    let (body, escaper_file, supervisor_file) = job("alive");
    post(&s, "/api/v1/jobs", body).await;
    let run = post(&s, "/api/v1/jobs/alive/run", json!({})).await;
    let id = run["id"].as_i64().unwrap();
    let escaper = wait_pid(&escaper_file).await;
    let supervisor = wait_pid(&supervisor_file).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(supervisor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let mut ended = Value::Null;
    for _ in 0..400 {
        ended = get(&s, &format!("/api/v1/runs/{id}")).await;
        if ended["status"] != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(ended["status"], "failed", "{ended}");
    assert!(
        crate::helpers::gone(escaper).await,
        "escaper {escaper} outlived its killed supervisor"
    );
    let out = output(&s, id).await;
    // What the job printed (the `sys` line quotes the script itself).
    let printed: Vec<&str> = out.lines().filter(|l| l.contains(" out ")).collect();
    assert!(
        printed.iter().any(|l| l.ends_with("stayed in"))
            && !printed.iter().any(|l| l.contains("MOVED OUT")),
        "{out}"
    );

    // Steward and the supervisor are both killed (Steward stopped first, so
    // that it cannot act on the supervisor's death): the escaper lives until
    // the next start, which finds it in the run's cgroup.
    let (body, escaper_file, supervisor_file) = job("crashed");
    post(&s, "/api/v1/jobs", body).await;
    post(&s, "/api/v1/jobs/crashed/run", json!({})).await;
    let escaper = wait_pid(&escaper_file).await;
    let supervisor = nix::unistd::Pid::from_raw(wait_pid(&supervisor_file).await);
    signal(&s.child, nix::sys::signal::Signal::SIGSTOP);
    wait_stopped(s.child.id());
    nix::sys::signal::kill(supervisor, nix::sys::signal::Signal::SIGKILL).unwrap();
    signal(&s.child, nix::sys::signal::Signal::SIGKILL);
    wait_exit(&mut s.child, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        alive(escaper),
        "the scenario needs the escaper alive after both were killed"
    );
    let mut s = spawn_server(&data, &[("STEWARD_SHUTDOWN_GRACE", "1s")]).await;
    assert!(
        crate::helpers::gone(escaper).await,
        "escaper {escaper} outlived a restart"
    );
    signal(&s.child, nix::sys::signal::Signal::SIGTERM);
    wait_exit(&mut s.child, Duration::from_secs(30));
}

/// `kill -9` while changes of several rows each are being made: jobs with the
/// secrets they name (job, job_secrets, audit) and users with their roles
/// (user, grants, audit). After the restart every change is whole or absent:
/// a job exists exactly when its audit record does and its secret reference is
/// indexed, a user exists exactly when its record does and holds its role, and
/// the audit chain verifies. Runs on both backends (the suite's second pass).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_multi_row_changes_leaves_each_whole_or_absent() {
    use std::collections::BTreeSet;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut s = spawn_server(&data, &[]).await;
    let r = s
        .client
        .put(format!("{}/api/v1/secrets/DBPW", s.base))
        .json(&json!({"value": "kill-nine-secret"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = vec![];
    for w in 0..4 {
        let (client, base, stop) = (s.client.clone(), s.base.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            // Returns whether a request failed because the server died under it.
            for i in 0.. {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return false;
                }
                let r = if w == 0 {
                    client
                        .post(format!("{base}/api/v1/users"))
                        .json(&json!({"username": format!("u{i}"), "password": crate::helpers::ADMIN_PASSWORD, "roles": ["operator"]}))
                        .send()
                        .await
                } else {
                    client
                        .post(format!("{base}/api/v1/jobs"))
                        .json(&json!({"name": format!("j{w}-{i}"),
                                      "spec": {"kind": "command", "argv": ["true"], "env": {"PW": "${secret:DBPW}"}}}))
                        .send()
                        .await
                };
                if r.is_err() {
                    return true;
                }
            }
            false
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    signal(&s.child, nix::sys::signal::Signal::SIGKILL);
    wait_exit(&mut s.child, Duration::from_secs(5));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut cut = 0;
    for w in writers {
        cut += usize::from(w.await.unwrap());
    }
    assert!(
        cut > 0,
        "the server was killed while changes were being made"
    );

    let mut s = spawn_server(&data, &[]).await;
    let report = get(&s, "/api/v1/audit/verify").await;
    assert_eq!(report["problem"], Value::Null, "{report}");
    let targets = |event: &'static str| {
        let s = &s;
        async move {
            let log = get(s, &format!("/api/v1/audit?event={event}&limit=1000")).await;
            log["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["target"].as_str().unwrap().to_owned())
                .collect::<BTreeSet<_>>()
        }
    };
    let jobs: BTreeSet<String> = get(&s, "/api/v1/jobs?limit=1000").await["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| format!("job:{}", j["name"].as_str().unwrap()))
        .collect();
    assert!(!jobs.is_empty(), "jobs were created before the kill");
    assert_eq!(
        jobs,
        targets("job.create").await,
        "a job without its record, or a record without its job"
    );
    let users = get(&s, "/api/v1/users").await;
    let mut user_targets = BTreeSet::new();
    for u in users.as_array().unwrap() {
        let name = u["username"].as_str().unwrap();
        if name == "admin" {
            continue;
        }
        assert_eq!(
            u["roles"],
            json!(["operator"]),
            "{name} lost its role grant"
        );
        user_targets.insert(format!("user:{name}"));
    }
    let mut created = targets("user.create").await;
    created.remove("user:admin");
    assert_eq!(user_targets, created);
    // Every job's secret reference was indexed with it: deleting the secret
    // names every job.
    let r = s
        .client
        .delete(format!("{}/api/v1/secrets/DBPW", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    let named: BTreeSet<String> = message
        .trim_start_matches("jobs ")
        .split(" refer")
        .next()
        .unwrap()
        .split(", ")
        .map(|n| format!("job:{n}"))
        .collect();
    assert_eq!(named, jobs, "{message}");
    signal(&s.child, nix::sys::signal::Signal::SIGKILL);
    wait_exit(&mut s.child, Duration::from_secs(5));
}
