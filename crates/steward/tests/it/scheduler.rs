use crate::helpers::TestApp;
use chrono::{DateTime, Utc};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use steward_clock::{ManualClock, SystemClock};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[tokio::test]
async fn an_every_second_job_produces_runs() {
    let t = TestApp::start().await;
    t.command_job("tick", &["true"], json!({"schedule": "@every 1s"}))
        .await;
    let runs = t
        .wait_runs("tick", Duration::from_secs(10), |r| {
            r.iter().filter(|r| r["status"] == "succeeded").count() >= 3
        })
        .await;
    let mut slots: Vec<&str> = runs
        .iter()
        .map(|r| r["scheduled_for"].as_str().unwrap())
        .collect();
    assert!(runs.iter().all(|r| r["trigger"] == "schedule"));
    let n = slots.len();
    slots.sort_unstable();
    slots.dedup();
    assert_eq!(slots.len(), n, "an occurrence fired twice");
    t.stop().await;
}

/// Lets spawned tasks observe a clock change.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(150)).await;
}

#[tokio::test]
async fn manual_clock_fires_each_occurrence_once_and_changes_apply_at_once() {
    let clock = ManualClock::new(at("2026-11-27T10:00:00Z"));
    let t = TestApp::start_with(|_| {}, Arc::new(clock.clone())).await;
    t.command_job(
        "ten",
        &["true"],
        json!({"schedule": "*/10 * * * * *", "policies": {"overlap": "allow"}}),
    )
    .await;
    settle().await;
    assert!(t.runs_of("ten").await.is_empty(), "fired before its time");
    clock.set(at("2026-11-27T10:00:10Z"));
    let runs = t
        .wait_runs("ten", Duration::from_secs(5), |r| r.len() == 1)
        .await;
    assert_eq!(runs[0]["scheduled_for"], "2026-11-27T10:00:10Z");
    clock.set(at("2026-11-27T10:00:20Z"));
    t.wait_runs("ten", Duration::from_secs(5), |r| r.len() == 2)
        .await;
    settle().await;
    assert_eq!(t.runs_of("ten").await.len(), 2, "an occurrence fired twice");

    // Switch to hourly: the 10-second slots stop at once.
    let r = t
        .client
        .put(t.url("/api/v1/jobs/ten"))
        .json(&json!({"name": "ten", "schedule": "@hourly", "spec": {"kind": "command", "argv": ["true"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["next_run_at"], "2026-11-27T11:00:00Z");
    clock.set(at("2026-11-27T10:00:30Z"));
    settle().await;
    assert_eq!(t.runs_of("ten").await.len(), 2);
    // Disabling removes it from the heap.
    t.post("/api/v1/jobs/ten/disable", json!({})).await;
    clock.set(at("2026-11-27T11:00:00Z"));
    settle().await;
    assert_eq!(t.runs_of("ten").await.len(), 2);
    t.stop().await;
}

#[tokio::test]
async fn missed_runs_follow_each_jobs_policy_after_downtime() {
    let clock = ManualClock::new(at("2026-11-27T10:30:00Z"));
    let t = TestApp::start_with(|_| {}, Arc::new(clock.clone())).await;
    t.command_job(
        "once",
        &["true"],
        json!({"schedule": "0 * * * *", "policies": {"missed": "run_once"}}),
    )
    .await;
    t.command_job(
        "skip",
        &["true"],
        json!({"schedule": "0 * * * *", "policies": {"missed": "skip"}}),
    )
    .await;
    t.command_job(
        "all",
        &["true"],
        json!({"schedule": "0 * * * *", "policies": {"missed": "run_all"}}),
    )
    .await;
    t.command_job(
        "bounded",
        &["true"],
        json!({"schedule": "* * * * *", "policies": {"missed": "run_all", "overlap": "allow", "history_limit": 1000}}),
    )
    .await;
    let dir = t.stop().await;

    // Five hourly occurrences pass while Steward is down.
    clock.set(at("2026-11-27T15:20:00Z"));
    let t = TestApp::start_in(dir, |_| {}, Arc::new(clock.clone())).await;
    let once = t
        .wait_runs("once", Duration::from_secs(5), |r| {
            r.len() == 1 && r[0]["status"] == "succeeded"
        })
        .await;
    assert_eq!(
        once[0]["scheduled_for"], "2026-11-27T15:00:00Z",
        "run_once runs the latest missed occurrence"
    );
    settle().await;
    assert_eq!(
        t.runs_of("once").await.len(),
        1,
        "more than one catch-up run"
    );
    // Skip runs nothing, but the miss is on record where runs are listed.
    let skip = t.runs_of("skip").await;
    assert_eq!(skip.len(), 1, "{skip:?}");
    assert_eq!(skip[0]["status"], "skipped");
    assert_eq!(skip[0]["scheduled_for"], "2026-11-27T15:00:00Z");
    let why = skip[0]["error"].as_str().unwrap();
    assert!(
        why.contains(
            "missed occurrences since 2026-11-27 11:00:00 UTC not run (missed-run policy skip)"
        ),
        "{why}"
    );
    // run_all: every missed occurrence, oldest first.
    let all = t
        .wait_runs("all", Duration::from_secs(10), |r| {
            r.len() == 5 && r.iter().all(|r| r["status"] == "succeeded")
        })
        .await;
    let mut instants: Vec<&str> = all
        .iter()
        .map(|r| r["scheduled_for"].as_str().unwrap())
        .collect();
    instants.sort_unstable();
    assert_eq!(
        instants,
        [
            "2026-11-27T11:00:00Z",
            "2026-11-27T12:00:00Z",
            "2026-11-27T13:00:00Z",
            "2026-11-27T14:00:00Z",
            "2026-11-27T15:00:00Z"
        ]
    );
    // ...at most the last 100 of them; the older ones are one skipped record.
    let bounded = t
        .wait_runs("bounded", Duration::from_secs(60), |r| {
            r.iter().filter(|r| r["status"] == "succeeded").count() == 100
        })
        .await;
    assert_eq!(bounded.len(), 101, "100 runs and one skipped record");
    let skipped: Vec<_> = bounded
        .iter()
        .filter(|r| r["status"] == "skipped")
        .collect();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0]["scheduled_for"], "2026-11-27T10:31:00Z");
    assert!(
        skipped[0]["error"]
            .as_str()
            .unwrap()
            .contains("run_all catches up at most 100"),
        "{}",
        skipped[0]
    );
    let oldest_run = bounded
        .iter()
        .filter(|r| r["status"] == "succeeded")
        .filter_map(|r| r["scheduled_for"].as_str())
        .min()
        .unwrap();
    assert_eq!(
        oldest_run, "2026-11-27T13:41:00Z",
        "the last 100 minutes before 15:20"
    );
    // All continue normally.
    clock.set(at("2026-11-27T16:00:00Z"));
    t.wait_runs("skip", Duration::from_secs(5), |r| r.len() == 2)
        .await;
    t.wait_runs("once", Duration::from_secs(5), |r| r.len() == 2)
        .await;
    t.wait_runs("all", Duration::from_secs(5), |r| r.len() == 6)
        .await;
    let dir = t.stop().await;

    // A restart without downtime past an occurrence runs nothing extra.
    clock.set(at("2026-11-27T16:10:00Z"));
    let t = TestApp::start_in(dir, |_| {}, Arc::new(clock.clone())).await;
    settle().await;
    assert_eq!(t.runs_of("once").await.len(), 2);
    assert_eq!(t.runs_of("skip").await.len(), 2);
    assert_eq!(t.runs_of("all").await.len(), 6);
    t.stop().await;
}

#[tokio::test]
async fn history_limit_prunes_old_runs() {
    let t = TestApp::start_with(|_| {}, Arc::new(SystemClock)).await;
    t.command_job(
        "short",
        &["true"],
        json!({"policies": {"history_limit": 3}}),
    )
    .await;
    for _ in 0..6 {
        let (_, r) = t.post("/api/v1/jobs/short/run", json!({})).await;
        t.wait_run(r["id"].as_i64().unwrap(), Duration::from_secs(10))
            .await;
    }
    let runs = t
        .wait_runs("short", Duration::from_secs(5), |r| r.len() == 3)
        .await;
    assert_eq!(runs.len(), 3);
    t.stop().await;
}

/// The job list is rendered once and reused until a job changes or the earliest
/// next occurrence passes: it must never show a stale `next_run_at`.
#[tokio::test]
async fn the_job_list_never_shows_a_passed_next_run() {
    let clock = Arc::new(ManualClock::new(at("2026-11-27T10:00:30Z")));
    let t = TestApp::start_with(|_| {}, clock.clone()).await;
    t.command_job(
        "minutely",
        &["true"],
        json!({"schedule": "0 * * * * *", "enabled": false}),
    )
    .await;
    t.command_job("hourly", &["true"], json!({"schedule": "0 0 * * * *"}))
        .await;
    let next = |v: &serde_json::Value, name: &str| {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == name)
            .unwrap()["next_run_at"]
            .clone()
    };
    let (_, list) = t.get("/api/v1/jobs").await;
    assert_eq!(next(&list, "hourly"), "2026-11-27T11:00:00Z");
    assert!(next(&list, "minutely").is_null(), "disabled");
    let (_, again) = t.get("/api/v1/jobs").await;
    assert_eq!(list, again);
    // A change shows at once.
    let (s, _) = t.post("/api/v1/jobs/minutely/enable", json!({})).await;
    assert_eq!(s, 200);
    let (_, list) = t.get("/api/v1/jobs").await;
    assert_eq!(next(&list, "minutely"), "2026-11-27T10:01:00Z");
    // Time passing the earliest occurrence shows at once too.
    clock.set(at("2026-11-27T10:01:00Z"));
    let (_, list) = t.get("/api/v1/jobs").await;
    assert_eq!(next(&list, "minutely"), "2026-11-27T10:02:00Z");
    assert_eq!(next(&list, "hourly"), "2026-11-27T11:00:00Z");
    clock.set(at("2026-11-27T11:00:05Z"));
    let (_, list) = t.get("/api/v1/jobs").await;
    assert_eq!(next(&list, "hourly"), "2026-11-27T12:00:00Z");
    t.stop().await;
}

fn parse_time(v: &serde_json::Value) -> DateTime<Utc> {
    at(v.as_str().expect("a timestamp"))
}

/// Polls the job's runs until one is seen `running` while its instant is
/// still more than `margin` away (read after the answer came), and returns
/// it with its instant.
async fn prepared_run(
    t: &TestApp,
    job: &str,
    margin: chrono::Duration,
) -> (serde_json::Value, DateTime<Utc>) {
    let found = std::cell::RefCell::new(None);
    t.wait_runs(job, Duration::from_secs(15), |runs| {
        let seen = Utc::now();
        *found.borrow_mut() = runs.iter().find_map(|r| {
            let instant = parse_time(&r["scheduled_for"]);
            (r["status"] == "running" && instant - seen > margin).then(|| (r.clone(), instant))
        });
        found.borrow().is_some()
    })
    .await;
    found.into_inner().expect("found")
}

/// A scheduled run is claimed and its process made before its instant
/// (seen `running` before it), and the job's own clock says it started at
/// the instant, not before. Its timeout counts from the instant: counted from
/// the claim, more than a second earlier, the 1 s job would pass its 2 s
/// timeout.
#[tokio::test]
async fn a_scheduled_run_is_prepared_ahead_and_starts_at_its_instant() {
    let t = TestApp::start().await;
    let log = t.work().join("starts");
    let script = format!(
        "echo \"$STEWARD_SCHEDULED_FOR $(date +%s.%N)\" >> {}; sleep 1",
        log.display()
    );
    t.command_job(
        "ahead",
        &["/bin/sh", "-c", &script],
        json!({"schedule": "*/3 * * * * *", "policies": {"timeout": "2s"}}),
    )
    .await;
    let (prepared, instant) = prepared_run(&t, "ahead", chrono::Duration::seconds(1)).await;
    assert_eq!(
        prepared["started_at"], prepared["scheduled_for"],
        "a prepared run starts at its instant"
    );
    let ended = t
        .wait_run(prepared["id"].as_i64().unwrap(), Duration::from_secs(10))
        .await;
    assert_eq!(ended["status"], "succeeded", "{ended}");
    let logged = std::fs::read_to_string(&log).unwrap();
    let started = logged
        .lines()
        .find_map(|l| {
            let (sched, at) = l.split_once(' ')?;
            (at_or_none(sched)? == instant).then(|| at.parse::<f64>().ok())?
        })
        .expect("the prepared run's process wrote its start");
    let instant_secs = instant.timestamp_micros() as f64 / 1e6;
    assert!(
        started >= instant_secs,
        "the job's process started {:.3} s before its instant",
        instant_secs - started
    );
    t.stop().await;
}

fn at_or_none(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// Cancelling a run prepared ahead ends it before its process ever runs the
/// job: nothing the job does happens, and the run is recorded cancelled.
#[tokio::test]
async fn a_prepared_run_cancelled_before_its_instant_never_runs() {
    let t = TestApp::start().await;
    let marks = t.work().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let script = format!("touch {}/\"$STEWARD_SCHEDULED_FOR\"", marks.display());
    t.command_job(
        "never",
        &["/bin/sh", "-c", &script],
        json!({"schedule": "*/4 * * * * *"}),
    )
    .await;
    // Far enough ahead that the cancel lands before the instant.
    let (prepared, instant) = prepared_run(&t, "never", chrono::Duration::milliseconds(800)).await;
    let run = prepared["id"].as_i64().unwrap();
    let (status, body) = t
        .post(&format!("/api/v1/runs/{run}/cancel"), json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    let ended = t.wait_run(run, Duration::from_secs(10)).await;
    assert_eq!(ended["status"], "cancelled", "{ended}");
    // Past the instant: the job never ran for it.
    let wait = (instant - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(500);
    tokio::time::sleep(wait).await;
    let name = instant.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    assert!(
        !marks.join(&name).exists(),
        "the cancelled run's job ran at {name}"
    );
    t.stop().await;
}

/// An occurrence that could not start when it was looked at ahead of its
/// instant (its job's previous run, overlap `skip`, was still running then)
/// is not skipped early: it is decided again once the previous run has
/// ended, and runs. This guards the dispatcher's early-decision branch; it
/// passes without preparing ahead at all.
#[tokio::test]
async fn an_occurrence_blocked_ahead_of_its_instant_is_decided_at_it() {
    let t = TestApp::start().await;
    t.command_job(
        "busy",
        &["sleep", "1"],
        json!({"schedule": "*/2 * * * * *", "policies": {"overlap": "skip"}}),
    )
    .await;
    let runs = t
        .wait_runs("busy", Duration::from_secs(20), |r| {
            r.iter().filter(|r| r["status"] == "succeeded").count() >= 3
        })
        .await;
    let skipped: Vec<_> = runs.iter().filter(|r| r["status"] == "skipped").collect();
    assert!(
        skipped.is_empty(),
        "occurrences were skipped although the previous run had ended by their instant: {skipped:#?}"
    );
    t.stop().await;
}
