use crate::helpers::TestApp;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn job_crud_enable_disable_and_run_now() {
    let t = TestApp::start().await;
    let job = t
        .command_job(
            "crud",
            &["echo", "hello"],
            json!({"schedule": "0 3 * * *", "timezone": "Europe/Berlin", "tags": ["x"]}),
        )
        .await;
    assert_eq!(job["effective_timezone"], "Europe/Berlin");
    assert!(job["next_run_at"].is_string());
    let id = job["id"].as_i64().unwrap();

    let (s, by_name) = t.get("/api/v1/jobs/crud").await;
    assert_eq!((s, by_name["id"].as_i64()), (200, Some(id)));
    let (_, list) = t.get("/api/v1/jobs").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    let (s, disabled) = t.post("/api/v1/jobs/crud/disable", json!({})).await;
    assert_eq!(s, 200);
    assert_eq!(disabled["enabled"], false);
    assert!(disabled["next_run_at"].is_null());
    let (_, enabled) = t
        .post(&format!("/api/v1/jobs/{id}/enable"), json!({}))
        .await;
    assert_eq!(enabled["enabled"], true);

    // Replace: new argv, same id.
    let r = t
        .client
        .put(t.url("/api/v1/jobs/crud"))
        .json(&json!({"name": "crud", "spec": {"kind": "command", "argv": ["echo", "replaced"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let (s, run) = t.post("/api/v1/jobs/crud/run", json!({})).await;
    assert_eq!(s, 202, "{run}");
    assert_eq!(run["trigger"], "manual");
    let run = t
        .wait_run(run["id"].as_i64().unwrap(), Duration::from_secs(10))
        .await;
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["outcome"], json!({"exit_code": 0}));
    let out = t.text(&format!("/api/v1/runs/{}/output", run["id"])).await;
    assert!(out.contains(" out replaced\n"), "{out}");

    let r = t
        .client
        .delete(t.url("/api/v1/jobs/crud"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (s, err) = t.get("/api/v1/jobs/crud").await;
    assert_eq!(s, 404);
    assert_eq!(err["error"]["code"], "not_found");
    t.stop().await;
}

#[tokio::test]
async fn runs_filter_and_paginate_with_a_cursor() {
    let t = TestApp::start().await;
    t.command_job("a", &["true"], json!({"policies": {"overlap": "allow"}}))
        .await;
    t.command_job("b", &["false"], json!({})).await;
    for _ in 0..5 {
        let (_, r) = t.post("/api/v1/jobs/a/run", json!({})).await;
        t.wait_run(r["id"].as_i64().unwrap(), Duration::from_secs(10))
            .await;
    }
    let (_, r) = t.post("/api/v1/jobs/b/run", json!({})).await;
    let failed = t
        .wait_run(r["id"].as_i64().unwrap(), Duration::from_secs(10))
        .await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["outcome"], json!({"exit_code": 1}));

    let (_, page1) = t.get("/api/v1/runs?job=a&limit=2").await;
    let items = page1["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let cursor = page1["next_cursor"].as_i64().unwrap();
    let (_, page2) = t
        .get(&format!("/api/v1/runs?job=a&limit=2&cursor={cursor}"))
        .await;
    let (_, page3) = t
        .get(&format!(
            "/api/v1/runs?job=a&limit=2&cursor={}",
            page2["next_cursor"]
        ))
        .await;
    assert_eq!(page3["items"].as_array().unwrap().len(), 1);
    assert!(page3["next_cursor"].is_null());
    let ids: Vec<i64> = [&page1, &page2, &page3]
        .iter()
        .flat_map(|p| {
            p["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_i64().unwrap())
        })
        .collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.dedup();
    assert_eq!(ids, sorted, "pages overlap or are out of order");

    let (_, failed_only) = t.get("/api/v1/runs?status=failed").await;
    assert_eq!(failed_only["items"].as_array().unwrap().len(), 1);
    let (_, future) = t.get("/api/v1/runs?since=2099-01-01T00:00:00Z").await;
    assert_eq!(future["items"].as_array().unwrap().len(), 0);
    t.stop().await;
}

#[tokio::test]
async fn schedule_preview_in_a_zone() {
    let t = TestApp::start().await;
    let (s, body) = t
        .post(
            "/api/v1/schedules/preview",
            json!({"schedule": "30 2 * * *", "timezone": "Europe/Berlin", "count": 2, "after": "2026-03-28T12:00:00Z"}),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        body["times"],
        json!(["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"])
    );
    assert_eq!(body["local_times"][0], "2026-03-29T03:00:00+02:00");
    t.stop().await;
}

#[tokio::test]
async fn openapi_document_lists_every_route() {
    let t = TestApp::start().await;
    let (s, doc) = t.get("/api/v1/openapi.json").await;
    assert_eq!(s, 200);
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/v1/jobs",
        "/api/v1/jobs/{job}",
        "/api/v1/jobs/{job}/enable",
        "/api/v1/jobs/{job}/disable",
        "/api/v1/jobs/{job}/run",
        "/api/v1/runs",
        "/api/v1/runs/{run}",
        "/api/v1/runs/{run}/cancel",
        "/api/v1/runs/{run}/output",
        "/api/v1/runs/{run}/output/follow",
        "/api/v1/schedules/preview",
    ] {
        assert!(paths.contains_key(p), "{p} missing from OpenAPI");
    }
    assert!(doc["components"]["schemas"]["JobDefinition"].is_object());
    t.stop().await;
}

#[tokio::test]
async fn health_readiness_metrics_and_headers() {
    let t = TestApp::start().await;
    let r = t.client.get(t.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert!(r.headers().contains_key("x-request-id"));
    let (s, ready) = t.get("/readyz").await;
    assert_eq!(
        (s, ready["database"].as_bool(), ready["scheduler"].as_bool()),
        (200, Some(true), Some(true))
    );

    t.command_job("m", &["true"], json!({})).await;
    let (_, r) = t.post("/api/v1/jobs/m/run", json!({})).await;
    let run = t
        .wait_run(r["id"].as_i64().unwrap(), Duration::from_secs(10))
        .await;
    let finished = chrono::DateTime::parse_from_rfc3339(run["finished_at"].as_str().unwrap())
        .unwrap()
        .timestamp();
    let needles = [
        "steward_jobs 1",
        "steward_runs_finished_total{status=\"succeeded\"} 1",
        "steward_run_duration_seconds_count{kind=\"command\"} 1",
        "steward_scheduler_lag_seconds_bucket",
        "steward_runs_running 0",
        "steward_runs_stored{status=\"succeeded\"} 1",
        "steward_job_last_success_timestamp_seconds{job=\"m\"}",
    ];
    // The run's counters move just after its record is written.
    let mut m = String::new();
    for _ in 0..100 {
        m = t.text("/metrics").await;
        if needles.iter().all(|n| m.contains(n)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for needle in needles {
        assert!(m.contains(needle), "{needle} missing from:\n{m}");
    }
    // The per-job gauges survive a restart: they start from the store (an
    // alert on a stale backup must not be silenced by restarting Steward).
    let dir = t.stop().await;
    let t = TestApp::start_in(dir, |_| {}, Arc::new(steward_clock::SystemClock)).await;
    let m = t.text("/metrics").await;
    for gauge in ["last_success", "last_finish"] {
        let line = format!("steward_job_{gauge}_timestamp_seconds{{job=\"m\"}} {finished}\n");
        assert!(m.contains(&line), "{line} missing after a restart:\n{m}");
    }
    t.stop().await;
}

#[tokio::test]
async fn metrics_token_is_enforced_when_configured() {
    let t = TestApp::start_with(
        |c| {
            c.metrics.token = Some(secrecy::SecretString::from(
                "tok-123-long-enough".to_owned(),
            ))
        },
        std::sync::Arc::new(steward_clock::SystemClock),
    )
    .await;
    let r = t.client.get(t.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = t
        .client
        .get(t.url("/metrics"))
        .bearer_auth("tok-123-long-enougH")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = t
        .client
        .get(t.url("/metrics"))
        .bearer_auth("tok-123-long-enough")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    t.stop().await;
}

#[tokio::test]
async fn follow_streams_live_output_then_the_end() {
    use futures_util::StreamExt as _;
    let t = TestApp::start().await;
    t.command_job(
        "follow",
        &[
            "sh",
            "-c",
            "echo one; sleep 1; echo two; sleep 0.5; echo three",
        ],
        json!({}),
    )
    .await;
    let (_, run) = t.post("/api/v1/jobs/follow/run", json!({})).await;
    let id = run["id"].as_i64().unwrap();
    let resp = t
        .client
        .get(t.url(&format!("/api/v1/runs/{id}/output/follow")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut stream = resp.bytes_stream();
    let mut body = String::new();
    // The first line arrives while the run is still running: it is live, not a replay.
    while !body.contains(" out one") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    let (_, now) = t.get(&format!("/api/v1/runs/{id}")).await;
    assert_eq!(
        now["status"], "running",
        "first line only arrived after the run ended"
    );
    while let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
        body.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    let three = body.find(" out three").expect("three");
    let end = body.find("event: end\ndata: succeeded").expect("end event");
    assert!(three < end, "{body}");
    assert_eq!(
        body.matches(" out two").count(),
        1,
        "duplicated line: {body}"
    );
    // Following a finished run replays the stored output and ends.
    let again = t.text(&format!("/api/v1/runs/{id}/output/follow")).await;
    assert!(again.contains(" out two") && again.contains("event: end"));
    t.stop().await;
}

/// Following a run that is still queued: its output streams once it starts
/// (woken by the start, not a poll), and a run cancelled while queued ends
/// the stream with its status.
#[tokio::test]
async fn following_a_queued_run_streams_once_it_starts_or_ends_if_cancelled() {
    use futures_util::StreamExt as _;
    let t = TestApp::start().await;
    // Three jobs sharing one exclusive lock: the second and third wait.
    let tape = json!({"locks": [{"name": "tape"}]});
    for name in ["first", "second", "third"] {
        t.command_job(
            name,
            &["sh", "-c", "sleep 1; echo run $STEWARD_RUN_ID done"],
            tape.clone(),
        )
        .await;
    }
    let mut ids = vec![];
    for name in ["first", "second", "third"] {
        let (s, run) = t.post(&format!("/api/v1/jobs/{name}/run"), json!({})).await;
        assert_eq!(s, 202, "{run}");
        ids.push(run["id"].as_i64().unwrap());
    }
    let (first, second, third) = (ids[0], ids[1], ids[2]);
    let (_, queued) = t.get(&format!("/api/v1/runs/{second}")).await;
    assert_eq!(queued["status"], "queued", "{queued}");
    let follow = |id: i64| {
        let req = t
            .client
            .get(t.url(&format!("/api/v1/runs/{id}/output/follow")));
        async move {
            let mut stream = req.send().await.unwrap().bytes_stream();
            let mut body = String::new();
            while let Ok(Some(chunk)) =
                tokio::time::timeout(Duration::from_secs(20), stream.next()).await
            {
                body.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
                if body.contains("event: end") {
                    break;
                }
            }
            body
        }
    };
    let second_body = tokio::spawn(follow(second));
    let third_body = tokio::spawn(follow(third));
    let (s, _) = t
        .post(&format!("/api/v1/runs/{third}/cancel"), json!({}))
        .await;
    assert_eq!(s, 202);
    let second_body = second_body.await.unwrap();
    assert!(
        second_body.contains(&format!(" out run {second} done")),
        "{second_body}"
    );
    assert!(
        second_body.contains("event: end\ndata: succeeded"),
        "{second_body}"
    );
    let third_body = third_body.await.unwrap();
    assert!(
        third_body.contains("event: end\ndata: cancelled"),
        "{third_body}"
    );
    t.wait_run(first, Duration::from_secs(20)).await;
    t.stop().await;
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// Followers that never read cost a bounded amount each (one batch, a
/// socket), not a copy of the output; there are at most so many per user and
/// in total, and the places come back when they leave.
#[tokio::test]
async fn followers_that_do_not_read_cost_bounded_memory_and_are_capped() {
    let t = TestApp::start_with(
        |c| {
            c.executor.output_limit = 16 * 1024 * 1024;
            c.api.max_followers = 60;
            c.api.max_followers_per_user = 50;
        },
        Arc::new(steward_clock::SystemClock),
    )
    .await;
    // About 8 MB of output.
    t.command_job(
        "chatty",
        &[
            "sh",
            "-c",
            "head -c 6000000 /dev/zero | tr '\\0' x | fold -w 100",
        ],
        json!({}),
    )
    .await;
    let (_, run) = t.post("/api/v1/jobs/chatty/run", json!({})).await;
    let id = run["id"].as_i64().unwrap();
    let run = t.wait_run(id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let url = t.url(&format!("/api/v1/runs/{id}/output/follow"));
    // Warm up (allocator, the first load) with one follower that reads it all.
    let all = t.text(&format!("/api/v1/runs/{id}/output/follow")).await;
    assert!(all.len() > 7_000_000, "{}", all.len());
    let before = rss_bytes();
    let mut idle = vec![];
    for _ in 0..50 {
        let r = t.client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        idle.push(r); // never read
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during = rss_bytes();
    let growth = during.saturating_sub(before);
    assert!(
        growth < 64 * 1024 * 1024,
        "50 idle followers of an 8 MB output grew memory by {} MiB",
        growth / (1024 * 1024)
    );
    drop(idle);
    // The caps, on a live run (its followers stay until it ends).
    t.command_job("quiet", &["sh", "-c", "echo started; sleep 60"], json!({}))
        .await;
    let (_, run) = t.post("/api/v1/jobs/quiet/run", json!({})).await;
    let live = run["id"].as_i64().unwrap();
    let url = t.url(&format!("/api/v1/runs/{live}/output/follow"));
    let mut idle = vec![];
    for _ in 0..50 {
        let r = t.client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        idle.push(r);
    }
    // The user's cap: the 51st is refused with a clear code.
    let r = t.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "too_many_followers", "{v}");
    // Another user still gets in, up to the total cap.
    let viewer = t.account("vic", &["viewer"]).await;
    let mut others = vec![];
    for _ in 0..10 {
        let r = viewer.token_client().get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        others.push(r);
    }
    let r = viewer.token_client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 429, "past the total cap");
    // Leaving gives the places back.
    drop(idle);
    drop(others);
    let mut back = false;
    for _ in 0..100 {
        let r = t.client.get(&url).send().await.unwrap();
        if r.status() == 200 {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back, "followers that left kept their places");
    t.post(&format!("/api/v1/runs/{live}/cancel"), json!({}))
        .await;
    t.stop().await;
}

#[tokio::test]
async fn dns_rebinding_and_cross_site_requests_are_refused() {
    let t = TestApp::start().await;
    // A page on evil.example whose name was rebound to 127.0.0.1.
    let r = t
        .client
        .get(t.url("/api/v1/jobs"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 421);
    let r = t
        .client
        .post(t.url("/api/v1/jobs"))
        .header("host", "evil.example:8080")
        .json(&json!({"name": "pwn", "spec": {"kind": "command", "argv": ["true"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 421);
    // A cross-site form post from another origin, with the right Host.
    for (header, value) in [
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "cross-site"),
        ("origin", "null"),
    ] {
        let r = t
            .client
            .post(t.url("/api/v1/jobs"))
            .header(header, value)
            .json(&json!({"name": "pwn", "spec": {"kind": "command", "argv": ["true"]}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{header}: {value}");
    }
    let (_, list) = t.get("/api/v1/jobs").await;
    assert!(
        list["items"].as_array().unwrap().is_empty(),
        "a refused request created a job"
    );
    // Same-origin requests from a local page still work.
    let r = t
        .client
        .post(t.url("/api/v1/schedules/preview"))
        .header("origin", t.base.clone())
        .header("sec-fetch-site", "same-origin")
        .json(&json!({"schedule": "@daily"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    t.stop().await;
}

#[tokio::test]
async fn chains_cannot_loop_or_dangle() {
    let t = TestApp::start().await;
    t.command_job("a", &["true"], json!({})).await;
    t.command_job("b", &["true"], json!({"on_success": ["a"]}))
        .await;
    // a -> b -> a would run forever.
    let r = t
        .client
        .put(t.url("/api/v1/jobs/a"))
        .json(&json!({"name": "a", "spec": {"kind": "command", "argv": ["true"]}, "on_failure": ["b"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("a -> b -> a"),
        "{v}"
    );
    // a cannot be deleted or renamed while b chains to it.
    let r = t
        .client
        .delete(t.url("/api/v1/jobs/a"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let r = t
        .client
        .put(t.url("/api/v1/jobs/a"))
        .json(&json!({"name": "a2", "spec": {"kind": "command", "argv": ["true"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    // All-digit names would be ambiguous with ids.
    let (s, v) = t
        .post(
            "/api/v1/jobs",
            json!({"name": "42", "spec": {"kind": "command", "argv": ["true"]}}),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    t.stop().await;
}

#[tokio::test]
async fn one_steward_per_data_directory() {
    let t = TestApp::start().await;
    let mut c = crate::helpers::config(t.dir.path());
    c.executor.run_as_user = Some("root".into());
    let second = steward::Application::build(c).await;
    let err = format!(
        "{:#}",
        second
            .err()
            .expect("a second Steward on the same data directory started")
    );
    assert!(
        err.contains("another Steward is already using the data directory"),
        "{err}"
    );
    // The first one is unaffected.
    let (s, _) = t.get("/readyz").await;
    assert_eq!(s, 200);
    // Wrong method: a JSON error too.
    let r = t
        .client
        .get(t.url("/api/v1/jobs/x/run"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "method_not_allowed");
    t.stop().await;
}

/// `GET /api/v1/jobs` pages by cursor and filters; the CLI follows.
#[tokio::test]
async fn the_job_list_pages_filters_and_sorts() {
    let t = TestApp::start().await;
    for (name, tags, schedule) in [
        ("backup-db", json!(["backup"]), json!("0 3 * * *")),
        ("backup-files", json!(["backup"]), json!("0 1 * * *")),
        ("report", json!([]), json!(null)),
        ("fails", json!([]), json!(null)),
    ] {
        let argv = if name == "fails" {
            json!(["false"])
        } else {
            json!(["true"])
        };
        t.create_job(json!({"name": name, "tags": tags, "schedule": schedule,
                            "spec": {"kind": "command", "argv": argv}}))
            .await;
    }
    // Pages of two by name, following next_cursor.
    let (s, p1) = t.get("/api/v1/jobs?limit=2").await;
    assert_eq!(s, 200, "{p1}");
    let names = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&p1), ["backup-db", "backup-files"]);
    let cursor = p1["next_cursor"].as_str().unwrap();
    let (_, p2) = t
        .get(&format!("/api/v1/jobs?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(names(&p2), ["fails", "report"]);
    assert!(p2["next_cursor"].is_null(), "{p2}");
    // Soonest next run first; unscheduled last.
    let (_, by_next) = t.get("/api/v1/jobs?sort=next_run&limit=1").await;
    assert_eq!(names(&by_next), ["backup-files"]);
    let cursor = by_next["next_cursor"].as_str().unwrap().to_owned();
    let (_, next) = t
        .get(&format!(
            "/api/v1/jobs?sort=next_run&limit=10&cursor={}",
            urlencode(&cursor)
        ))
        .await;
    assert_eq!(names(&next), ["backup-db", "fails", "report"]);
    // Filters.
    let (_, backups) = t.get("/api/v1/jobs?tag=backup&name=DB").await;
    assert_eq!(names(&backups), ["backup-db"]);
    let (_, run) = t.post("/api/v1/jobs/fails/run", json!({})).await;
    t.wait_run(run["id"].as_i64().unwrap(), Duration::from_secs(10))
        .await;
    let (_, failed) = t.get("/api/v1/jobs?last_status=failed").await;
    assert_eq!(names(&failed), ["fails"]);
    assert_eq!(failed["items"][0]["last_status"], "failed");
    // Bad input names the parameter.
    for (q, field) in [
        ("limit=0", "limit"),
        ("cursor=x:y&sort=next_run", "cursor"),
        ("tag=a%20b", "tag"),
    ] {
        let (s, e) = t.get(&format!("/api/v1/jobs?{q}")).await;
        assert_eq!(
            (s, e["error"]["field"].as_str()),
            (422, Some(field)),
            "{q}: {e}"
        );
    }
    t.stop().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
