//! The database as a component that fails: PostgreSQL stopped under load and
//! started again, and the password in its URL kept out of every message.

use crate::helpers::TestApp;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use steward_clock::SystemClock;
use steward_testkit::Cluster;

/// No request may wait on a dead database longer than this.
const NO_HANG: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_answers_503_and_steward_recovers_by_itself() {
    // A cluster of this test's own: stopping the shared one would fail the others.
    let mut cluster = Cluster::private();
    let url = cluster.create_database().await;
    let t = TestApp::start_with(
        |c| c.database.url = Some(url.clone().into()),
        Arc::new(SystemClock),
    )
    .await;
    t.command_job("before", &["true"], json!({})).await;
    assert_eq!(t.get("/readyz").await.0, 200);

    cluster.stop();

    // Under load: every request gets an answer, none hangs.
    let mut load = vec![];
    for i in 0..16 {
        let client = t.client.clone();
        let base = t.base.clone();
        load.push(tokio::spawn(async move {
            let started = Instant::now();
            let r = if i % 2 == 0 {
                client
                    .post(format!("{base}/api/v1/jobs"))
                    .json(&json!({"name": format!("during-{i}"), "spec": {"kind": "command", "argv": ["true"]}}))
                    .send()
                    .await
            } else if i % 4 == 1 {
                // A manual run: answered promptly too (here by the job's
                // lookup, before the run is submitted).
                client
                    .post(format!("{base}/api/v1/jobs/before/run"))
                    .json(&json!({}))
                    .send()
                    .await
            } else {
                client.get(format!("{base}/api/v1/runs")).send().await
            }
            .unwrap();
            let status = r.status().as_u16();
            let retry_after = r.headers().get("retry-after").is_some();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            (status, body, retry_after, started.elapsed())
        }));
    }
    for task in load {
        let (status, body, retry_after, took) = task.await.unwrap();
        assert!(took < NO_HANG, "a request waited {took:?}");
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "unavailable", "{body}");
        assert!(retry_after, "503 says when to retry");
        let text = body.to_string();
        assert!(!text.contains(cluster.password()), "{text}");
    }
    let started = Instant::now();
    let (status, ready) = t.get("/readyz").await;
    assert!(started.elapsed() < NO_HANG);
    assert_eq!(status, 503);
    assert_eq!(ready["database"], false);

    // Nothing was half-written while it was down, and Steward comes back alone.
    cluster.start();
    let deadline = Instant::now() + Duration::from_secs(30);
    while t.get("/readyz").await.0 != 200 {
        assert!(Instant::now() < deadline, "Steward did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, body) = t
        .post(
            "/api/v1/jobs",
            json!({"name": "after", "spec": {"kind": "command", "argv": ["true"]}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (_, jobs) = t.get("/api/v1/jobs").await;
    let names: Vec<&str> = jobs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["after", "before"], "no job from the outage");
    let (_, report) = t.get("/api/v1/audit/verify").await;
    assert_eq!(report["problem"], serde_json::Value::Null, "{report}");
    t.stop().await;
}

/// A wrong password or an unreachable server stops the start with a message
/// that names the problem and never the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_database_url_is_refused_without_repeating_its_password() {
    let cluster = Cluster::shared();
    let good = cluster.create_database().await;
    let wrong_password = good.replace(cluster.password(), "not-the-password-4f1c");
    let dir = tempfile::tempdir().unwrap();
    let mut c = crate::helpers::config(dir.path());
    c.database.url = Some(wrong_password.into());
    let e = steward::Application::build(c).await.err().expect("refused");
    let text = format!("{e:#}");
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(!text.contains("not-the-password-4f1c"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let mut c = crate::helpers::config(dir.path());
    c.database.url = Some(
        "mysql://root:hunter2-secret@localhost/steward"
            .to_owned()
            .into(),
    );
    let problems = c.check_environment();
    let text = format!("{problems:?}");
    assert!(text.contains("database.url"), "{text}");
    assert!(!text.contains("hunter2-secret"), "{text}");
}

/// Two Stewards serving one database would abandon each other's runs and fire
/// every schedule twice: the second is refused, whatever its data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_steward_on_the_same_database_is_refused() {
    let url = Cluster::shared().create_database().await;
    let first = TestApp::start_with(
        |c| c.database.url = Some(url.clone().into()),
        Arc::new(SystemClock),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = crate::helpers::config(dir.path());
    c.database.url = Some(url.clone().into());
    let e = steward::Application::build(c).await.err().expect("refused");
    assert!(format!("{e:#}").contains("another Steward"), "{e:#}");
    // Once the first has stopped, the database can be served again.
    first.stop().await;
    let second =
        TestApp::start_with(|c| c.database.url = Some(url.into()), Arc::new(SystemClock)).await;
    assert_eq!(second.get("/readyz").await.0, 200);
    second.stop().await;
}

/// Work that falls due or ends while the database is down is not lost:
/// occurrences fired during the outage are recorded when it ends (and run),
/// and a run that ended during it gets its record instead of staying
/// `running` until the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn occurrences_and_endings_during_an_outage_are_recorded_when_it_ends() {
    let mut cluster = Cluster::private();
    let url = cluster.create_database().await;
    let t = TestApp::start_with(
        |c| c.database.url = Some(url.clone().into()),
        Arc::new(SystemClock),
    )
    .await;
    t.command_job("long", &["sleep", "2"], json!({})).await;
    t.command_job(
        "tick",
        &["true"],
        json!({"schedule": "@every 1s", "policies": {"overlap": "allow"}}),
    )
    .await;
    let (_, long) = t.post("/api/v1/jobs/long/run", json!({})).await;
    let long = long["id"].as_i64().unwrap();
    t.wait_status(long, "running", Duration::from_secs(10))
        .await;

    let down = chrono::Utc::now();
    cluster.stop();
    tokio::time::sleep(Duration::from_secs(4)).await; // the long run ends meanwhile
    let up = chrono::Utc::now();
    cluster.start();
    let deadline = Instant::now() + Duration::from_secs(30);
    while t.get("/readyz").await.0 != 200 {
        assert!(Instant::now() < deadline, "Steward did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The ending written once the database was back.
    let run = t.wait_run(long, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    // The occurrences of the outage: recorded, and run.
    let in_outage = |r: &serde_json::Value| {
        r["scheduled_for"].as_str().is_some_and(|s| {
            let at = chrono::DateTime::parse_from_rfc3339(s).unwrap();
            at > down + chrono::Duration::seconds(1) && at < up
        })
    };
    let runs = t
        .wait_runs("tick", Duration::from_secs(20), |r| {
            let during: Vec<_> = r.iter().filter(|r| in_outage(r)).collect();
            during.len() >= 2 && during.iter().all(|r| r["status"] == "succeeded")
        })
        .await;
    let mut instants: Vec<_> = runs
        .iter()
        .filter(|r| in_outage(r))
        .map(|r| r["scheduled_for"].clone())
        .collect();
    let n = instants.len();
    instants.sort_by_key(|v| v.as_str().unwrap().to_owned());
    instants.dedup();
    assert_eq!(instants.len(), n, "an occurrence recorded twice");
    t.stop().await;
}
