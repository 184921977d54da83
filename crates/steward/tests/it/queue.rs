//! The durable run queue against a real store (both backends): bursts,
//! resource locks, limits, start deadlines, leases.

use crate::helpers::TestApp;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use steward_clock::{ManualClock, SystemClock};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// An HTTP server that counts the requests to each `/hit/{n}`: the jobs'
/// target, which sees each execution from outside Steward.
// A target outside Steward's API: axum's own `Path` is the plain choice here.
#[allow(clippy::disallowed_types)]
async fn counting_server() -> (std::net::SocketAddr, Arc<Mutex<HashMap<u32, u32>>>) {
    use axum::extract::{Path, State};
    let hits: Arc<Mutex<HashMap<u32, u32>>> = Arc::default();
    let app = axum::Router::new()
        .route(
            "/hit/{n}",
            axum::routing::get(
                |State(h): State<Arc<Mutex<HashMap<u32, u32>>>>, Path(n): Path<u32>| async move {
                    *h.lock().unwrap().entry(n).or_default() += 1;
                    "ok"
                },
            ),
        )
        .with_state(hits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, hits)
}

/// Creates jobs from `defs`, `parallel` requests at a time.
async fn create_all(t: &TestApp, defs: Vec<Value>, parallel: usize) {
    use futures_util::StreamExt as _;
    futures_util::stream::iter(defs)
        .for_each_concurrent(parallel, |def| async move {
            let (s, body) = t.post("/api/v1/jobs", def).await;
            assert_eq!(s, 201, "{body}");
        })
        .await;
}

async fn run_counts(t: &TestApp) -> HashMap<String, i64> {
    t.app
        .as_ref()
        .unwrap()
        .engine()
        .run_counts()
        .await
        .unwrap()
        .into_iter()
        .map(|(s, n)| (s.as_str().to_owned(), n))
        .collect()
}

/// The top-of-the-hour burst: 10,000 jobs due at the same instant with
/// room for 8 at a time. Every occurrence is recorded, and each runs once:
/// the target counts exactly one request per job, none twice, none missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_ten_thousand_occurrences_runs_each_exactly_once() {
    const JOBS: u32 = 10_000;
    let clock = ManualClock::new(at("2026-12-03T10:59:00Z"));
    let t = TestApp::start_with(
        |c| {
            c.executor.max_active_runs = 8;
            c.outbound.allow = vec!["127.0.0.1/32".parse().unwrap()];
        },
        Arc::new(clock.clone()),
    )
    .await;
    let (addr, hits) = counting_server().await;
    let defs = (0..JOBS)
        .map(|i| {
            json!({"name": format!("burst-{i}"), "schedule": "0 * * * *",
                   "spec": {"kind": "http", "url": format!("http://{addr}/hit/{i}")}})
        })
        .collect();
    let started = std::time::Instant::now();
    create_all(&t, defs, 8).await;
    eprintln!("created {JOBS} jobs in {:?}", started.elapsed());
    let started = std::time::Instant::now();
    clock.set(at("2026-12-03T11:00:00Z"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let counts = run_counts(&t).await;
        let ended = counts.get("succeeded").copied().unwrap_or(0)
            + counts.get("failed").copied().unwrap_or(0);
        if ended >= i64::from(JOBS) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "after 300 s: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("ran {JOBS} occurrences in {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = run_counts(&t).await;
    assert_eq!(
        counts,
        HashMap::from([("succeeded".to_owned(), i64::from(JOBS))]),
        "one succeeded run per occurrence and nothing else"
    );
    let hits = hits.lock().unwrap().clone();
    assert_eq!(hits.len(), JOBS as usize, "some jobs never ran");
    let twice: Vec<_> = hits.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "ran more than once: {twice:?}");
    t.stop().await;
}

/// Reads `dir/*.span` files (`start end` in ns, written by the jobs' own
/// processes) and returns the most spans that overlapped at one instant.
fn most_at_once(dir: &std::path::Path, prefix: &str) -> (usize, usize) {
    let mut edges = Vec::new();
    let mut spans = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(prefix) || !name.ends_with(".span") {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).unwrap();
        let v: Vec<i128> = text
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        assert_eq!(v.len(), 2, "{name}: {text:?}");
        edges.push((v[0], 1));
        edges.push((v[1], -1));
        spans += 1;
    }
    // Ends sort before starts at the same instant: touching is not overlapping.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    (spans, most as usize)
}

/// A command that records its own start and end (ns) in `work/<tag>-<run>.span`.
fn span_job(name: &str, tag: &str, work: &std::path::Path, extra: Value) -> Value {
    let script = format!(
        "s=$(date +%s%N); sleep 0.3; e=$(date +%s%N); echo \"$s $e\" > {}/{tag}-$STEWARD_RUN_ID.span",
        work.display()
    );
    let mut def = json!({"name": name, "spec": {"kind": "command", "argv": [script], "shell": true},
                         "policies": {"overlap": "allow"}});
    crate::helpers::merge(&mut def, extra);
    def
}

/// Backup tiers fighting over one repository: jobs sharing an exclusive lock
/// never run at the same time, whatever else is free; a lock counted to 2
/// has two holders at once, never three. Asserted from the times the jobs'
/// processes wrote themselves.
#[tokio::test]
async fn resource_locks_exclusive_and_counted() {
    let t = TestApp::start().await;
    let work = t.work();
    let offsite = json!({"locks": [{"name": "restic:offsite"}]});
    for name in ["hourly", "daily", "weekly"] {
        t.create_job(span_job(name, "x", &work, offsite.clone()))
            .await;
    }
    let counted = json!({"locks": [{"name": "pg:main", "holders": 2}]});
    for name in ["dump-a", "dump-b", "dump-c"] {
        t.create_job(span_job(name, "c", &work, counted.clone()))
            .await;
    }
    let mut ids = Vec::new();
    for _ in 0..2 {
        for name in ["hourly", "daily", "weekly", "dump-a", "dump-b", "dump-c"] {
            let (s, run) = t.post(&format!("/api/v1/jobs/{name}/run"), json!({})).await;
            assert_eq!(s, 202, "{run}");
            ids.push(run["id"].as_i64().unwrap());
        }
    }
    // A waiting run says which lock, and who holds it.
    let mut saw_reason = false;
    for _ in 0..100 {
        let (_, q) = t.get("/api/v1/runs?status=queued&limit=50").await;
        if let Some(w) = q["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["waiting_for"].as_str())
            .find(|w| w.starts_with("waiting for lock restic:offsite, held by run "))
        {
            assert!(w.contains(" of job "), "{w}");
            saw_reason = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_reason, "no queued run said which lock it waits for");
    for id in ids {
        let r = t.wait_run(id, Duration::from_secs(30)).await;
        assert_eq!(r["status"], "succeeded", "{r}");
    }
    let (spans, most) = most_at_once(&work, "x-");
    assert_eq!((spans, most), (6, 1), "exclusive lock shared");
    let (spans, most) = most_at_once(&work, "c-");
    assert_eq!(
        (spans, most),
        (6, 2),
        "counted lock: want exactly 2 at once at most"
    );
    t.stop().await;
}

/// A run that cannot start in time is recorded as skipped, saying how long
/// it waited and for what.
#[tokio::test]
async fn a_run_past_its_start_deadline_is_skipped_with_the_reason() {
    let t = TestApp::start().await;
    t.command_job(
        "holder",
        &["sleep", "3"],
        json!({"locks": [{"name": "tape"}]}),
    )
    .await;
    t.command_job(
        "impatient",
        &["true"],
        json!({"locks": [{"name": "tape"}], "policies": {"start_deadline": "1s"}}),
    )
    .await;
    let (_, holder) = t.post("/api/v1/jobs/holder/run", json!({})).await;
    t.wait_status(
        holder["id"].as_i64().unwrap(),
        "running",
        Duration::from_secs(5),
    )
    .await;
    let (s, run) = t.post("/api/v1/jobs/impatient/run", json!({})).await;
    assert_eq!(s, 202);
    assert!(run["start_deadline"].as_str().is_some(), "{run}");
    let r = t
        .wait_run(run["id"].as_i64().unwrap(), Duration::from_secs(10))
        .await;
    assert_eq!(r["status"], "skipped", "{r}");
    let why = r["error"].as_str().unwrap();
    assert!(
        why.starts_with("skipped: missed its start deadline after ")
            && why.contains(" s in the queue (waiting for lock tape, held by run "),
        "{why}"
    );
    assert!(r["started_at"].is_null());
    t.stop().await;
}

/// A run claimed by a node that stopped renewing its lease (another
/// machine that died) is rescued once the lease runs out: recorded
/// abandoned, its lock released, and retried per its job's policy.
#[tokio::test]
async fn an_expired_lease_is_rescued_and_retried() {
    let clock = ManualClock::new(at("2026-12-03T12:00:00Z"));
    let t = TestApp::start_with(|_| {}, Arc::new(clock.clone())).await;
    let job = t
        .command_job(
            "remote",
            &["true"],
            json!({"locks": [{"name": "nas"}], "policies": {"retries": {"count": 1, "delay": "1s"}}}),
        )
        .await;
    let store = t.app.as_ref().unwrap().store().clone();
    let now = at("2026-12-03T12:00:00Z");
    let mut tx = store.write().await.unwrap();
    let run = crate::helpers::claimed_elsewhere(
        &mut *tx,
        &job,
        "elsewhere",
        now,
        now + chrono::Duration::seconds(30),
    )
    .await;
    tx.take_lock(&steward_domain::LockName::parse("nas").unwrap(), run.id, 1)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // Within the lease nothing happens to it.
    clock.set(now + chrono::Duration::seconds(20));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, r) = t.get(&format!("/api/v1/runs/{}", run.id)).await;
    assert_eq!(
        (r["status"].as_str(), r["claimed_by"].as_str()),
        (Some("running"), Some("elsewhere"))
    );

    // Past it, the rescuer takes it, and the retry runs here (the lock is free).
    clock.set(now + chrono::Duration::seconds(45));
    let r = t.wait_run(run.id.0, Duration::from_secs(10)).await;
    assert_eq!(r["status"], "abandoned");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("the lease of elsewhere expired"),
        "{r}"
    );
    clock.set(now + chrono::Duration::seconds(50));
    let runs = t
        .wait_runs("remote", Duration::from_secs(10), |r| {
            r.iter()
                .any(|r| r["trigger"] == "retry" && r["status"] == "succeeded")
        })
        .await;
    let retry = runs.iter().find(|r| r["trigger"] == "retry").unwrap();
    assert_eq!(retry["parent_run_id"], r["id"]);
    assert_eq!(retry["attempt"], 2);
    t.stop().await;
}

/// Job settings for limits are checked: `max_concurrent` holds runs back
/// (saying so) and lets them through as places free.
#[tokio::test]
async fn max_concurrent_holds_runs_of_one_job_back() {
    let t = TestApp::start_with(|_| {}, Arc::new(SystemClock)).await;
    let work = t.work();
    t.create_job(span_job(
        "pair",
        "p",
        &work,
        json!({"policies": {"overlap": "allow", "max_concurrent": 2}}),
    ))
    .await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (_, r) = t.post("/api/v1/jobs/pair/run", json!({})).await;
        ids.push(r["id"].as_i64().unwrap());
    }
    let mut said = false;
    for _ in 0..100 {
        let runs = t.runs_of("pair").await;
        if runs.iter().any(|r| {
            r["waiting_for"]
                .as_str()
                .is_some_and(|w| w.contains("policies.max_concurrent = 2"))
        }) {
            said = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(said, "no run said it waits for max_concurrent");
    for id in ids {
        assert_eq!(
            t.wait_run(id, Duration::from_secs(20)).await["status"],
            "succeeded"
        );
    }
    assert_eq!(most_at_once(&work, "p-"), (5, 2));
    t.stop().await;
}

/// Manual runs asked for at the same moment share transactions (group
/// commit), and the overlap rule still holds across them: of twelve
/// concurrent requests for a job with overlap `skip`, one is queued and the
/// others are refused naming it; with overlap `allow` all twelve are
/// queued, each a run of its own with its own audit record; and the audit
/// chain still verifies.
#[tokio::test]
async fn concurrent_manual_runs_keep_the_overlap_rule_and_their_records() {
    let t = TestApp::start().await;
    t.command_job("one", &["sleep", "5"], json!({})).await;
    t.command_job("many", &["true"], json!({"policies": {"overlap": "allow"}}))
        .await;
    let fire = |job: &str| {
        let requests = (0..12).map(|_| {
            let (client, url) = (t.client.clone(), t.url(&format!("/api/v1/jobs/{job}/run")));
            async move {
                let r = client.post(url).json(&json!({})).send().await.unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            }
        });
        futures_util::future::join_all(requests)
    };
    let answers = fire("one").await;
    let accepted: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 202)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(accepted.len(), 1, "{answers:?}");
    let first = accepted[0]["id"].as_i64().unwrap();
    for (status, body) in answers.iter().filter(|(s, _)| *s != 202) {
        assert_eq!(*status, 409, "{body}");
        assert!(
            body.to_string().contains(&format!("run {first}")),
            "the refusal names the active run: {body}"
        );
    }
    assert_eq!(t.runs_of("one").await.len(), 1);

    let answers = fire("many").await;
    assert!(answers.iter().all(|(s, _)| *s == 202), "{answers:?}");
    let mut ids: Vec<i64> = answers
        .iter()
        .map(|(_, b)| b["id"].as_i64().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 12, "each request its own run");
    let (_, audit) = t.get("/api/v1/audit?event=run.manual&limit=100").await;
    let recorded = audit["items"].as_array().unwrap();
    assert_eq!(
        recorded.len(),
        13,
        "one audit record per queued run: {audit}"
    );
    let (status, verified) = t.get("/api/v1/audit/verify").await;
    assert_eq!(status, 200, "{verified}");
    assert_eq!(verified["problem"], Value::Null, "{verified}");
    t.stop().await;
}
