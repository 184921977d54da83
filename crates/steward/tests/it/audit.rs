//! The audit log: what is recorded, filters and export, and tampering found
//! by `steward admin verify-audit`. Also the other offline admin commands and
//! the first start.

use crate::helpers::{
    drop_audit_guards, owner_sql, session_client, sign_in, TestApp, ADMIN_PASSWORD,
};
use serde_json::{json, Value};
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn steward(args: &[&str], data: &std::path::Path) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .envs(crate::helpers::database_env(data))
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[tokio::test]
async fn every_change_is_recorded_with_actor_target_and_diff() {
    let t = TestApp::start().await;
    let a = t.account("aud", &["operator"]).await;
    let c = a.token_client();
    let job = json!({"name": "audited", "spec": {"kind": "command", "argv": ["sleep", "5"]}, "schedule": "0 3 * * *"});
    assert_eq!(t.call(&c, "POST", "/api/v1/jobs", Some(job)).await.0, 201);
    let changed = json!({"name": "audited", "spec": {"kind": "command", "argv": ["sleep", "5"]}, "schedule": "0 4 * * *"});
    assert_eq!(
        t.call(&c, "PUT", "/api/v1/jobs/audited", Some(changed))
            .await
            .0,
        200
    );
    assert_eq!(
        t.call(&c, "POST", "/api/v1/jobs/audited/disable", Some(json!({})))
            .await
            .0,
        200
    );
    let (_, run) = t
        .call(&c, "POST", "/api/v1/jobs/audited/run", Some(json!({})))
        .await;
    assert_eq!(
        t.call(
            &c,
            "POST",
            &format!("/api/v1/runs/{}/cancel", run["id"]),
            Some(json!({}))
        )
        .await
        .0,
        202
    );
    t.wait_run(run["id"].as_i64().unwrap(), Duration::from_secs(10))
        .await;
    assert_eq!(
        t.call(&c, "DELETE", "/api/v1/jobs/audited", None).await.0,
        204
    );
    assert_eq!(
        t.call(
            &t.client,
            "PUT",
            "/api/v1/secrets/S1",
            Some(json!({"value": "do-not-log-me"}))
        )
        .await
        .0,
        201
    );
    assert_eq!(
        t.call(
            &t.client,
            "PUT",
            "/api/v1/secrets/S1",
            Some(json!({"value": "do-not-log-me-either"}))
        )
        .await
        .0,
        204
    );
    assert_eq!(
        t.call(&t.client, "DELETE", "/api/v1/secrets/S1", None)
            .await
            .0,
        204
    );
    let (_, tok) = t.post("/api/v1/tokens", json!({"name": "temp"})).await;
    assert_eq!(
        t.call(
            &t.client,
            "DELETE",
            &format!("/api/v1/tokens/{}", tok["id"]),
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(
        t.call(
            &t.client,
            "PUT",
            "/api/v1/users/aud/roles",
            Some(json!({"roles": ["viewer"]}))
        )
        .await
        .0,
        200
    );
    let _ = sign_in(&t.base, "aud", "wrong password entirely").await;

    let (_, page) = t.get("/api/v1/audit?limit=1000").await;
    let items = page["items"].as_array().unwrap();
    let events: Vec<&str> = items
        .iter()
        .rev()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    for want in [
        "user.create",
        "auth.sign_in",
        "auth.password_change",
        "token.create",
        "job.create",
        "job.update",
        "job.disable",
        "run.manual",
        "run.cancel",
        "job.delete",
        "secret.put",
        "secret.delete",
        "token.revoke",
        "grant.user",
        "auth.sign_in_failed",
    ] {
        assert!(events.contains(&want), "{want} missing from {events:?}");
    }
    let find = |ev: &str| items.iter().find(|e| e["event"] == ev).unwrap().clone();
    let update = find("job.update");
    assert_eq!(
        update["actor"],
        json!({"kind": "token", "id": update["actor"]["id"], "name": "aud"})
    );
    assert_eq!(update["target"], "job:audited");
    assert_eq!(
        update["diff"],
        json!({"schedule": {"from": "0 3 * * *", "to": "0 4 * * *"}})
    );
    assert_eq!(update["address"], "127.0.0.1");
    assert_eq!(update["user_agent"], "steward-tests");
    assert_eq!(
        find("grant.user")["diff"],
        json!({"roles": {"from": ["operator"], "to": ["viewer"]}})
    );
    // Newest first: the replacement had a value before, the first setting did not.
    let puts: Vec<&Value> = items
        .iter()
        .filter(|e| e["event"] == "secret.put")
        .collect();
    assert_eq!(
        puts[0]["diff"]["value"],
        json!({"from": "[redacted]", "to": "[redacted]"})
    );
    assert_eq!(
        puts[1]["diff"]["value"],
        json!({"from": null, "to": "[redacted]"})
    );
    assert!(!page.to_string().contains("do-not-log-me"));
    assert!(!page.to_string().contains("wrong password entirely"));

    // Filters.
    let (_, by_actor) = t.get("/api/v1/audit?actor=aud&event=job").await;
    let evs: Vec<&str> = by_actor["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        evs,
        vec!["job.delete", "job.disable", "job.update", "job.create"]
    );
    let (_, by_target) = t.get("/api/v1/audit?target=user:aud").await;
    assert!(by_target["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["target"] == "user:aud"));
    let (_, none) = t.get("/api/v1/audit?since=2999-01-01T00:00:00Z").await;
    assert!(none["items"].as_array().unwrap().is_empty());
    let (_, two) = t.get("/api/v1/audit?limit=2").await;
    let next = two["next_before"].as_i64().unwrap();
    let (_, older) = t.get(&format!("/api/v1/audit?limit=2&before={next}")).await;
    assert!(older["items"][0]["id"].as_i64().unwrap() < next);

    // Export: JSON lines, oldest first, each linked to the one before.
    let export = t.text("/api/v1/audit/export").await;
    let lines: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), items.len());
    for w in lines.windows(2) {
        assert_eq!(w[1]["prev_hash"], w[0]["hash"]);
    }
    let (_, verify) = t.get("/api/v1/audit/verify").await;
    assert_eq!(verify, json!({"entries": items.len(), "problem": null}));
}

#[tokio::test]
async fn editing_the_database_behind_stewards_back_is_found() {
    let t = TestApp::start().await;
    for i in 0..3 {
        t.command_job(&format!("j{i}"), &["true"], json!({})).await;
    }
    let dir = t.stop().await;
    let data = dir.path().join("data");
    let (code, out, err) = steward(&["admin", "verify-audit"], &data);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("intact"), "{out}");
    let (code, export, _) = steward(&["admin", "export-audit"], &data);
    assert_eq!(code, 0);
    let n = export.lines().count();
    assert!(n >= 6, "{export}");

    let dir_path = dir.path();
    // The database itself refuses, even its owner.
    let e = owner_sql(
        dir_path,
        "UPDATE audit_log SET actor_name = 'someone-else' WHERE id = 4",
    )
    .await
    .unwrap_err();
    assert!(e.contains("append-only"), "{e}");
    let e = owner_sql(dir_path, "DELETE FROM audit_log WHERE id = 4")
        .await
        .unwrap_err();
    assert!(e.contains("append-only"), "{e}");
    if crate::helpers::on_postgres() {
        let e = owner_sql(dir_path, "TRUNCATE audit_log").await.unwrap_err();
        assert!(e.contains("append-only"), "{e}");
    }
    // Someone who drops the guards first: an edit...
    owner_sql(dir_path, drop_audit_guards()).await.unwrap();
    owner_sql(
        dir_path,
        "UPDATE audit_log SET actor_name = 'someone-else' WHERE id = 4",
    )
    .await
    .unwrap();
    let (code, out, _) = steward(&["admin", "verify-audit"], &data);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("entry 4 was edited"), "{out}");

    // ...or a deletion that relinks the chain by hand is found too.
    owner_sql(dir_path, "DELETE FROM audit_log WHERE id = 4")
        .await
        .unwrap();
    let (code, out, _) = steward(&["admin", "verify-audit"], &data);
    assert_eq!(code, 1);
    assert!(out.contains("entry 4 is missing"), "{out}");
}

#[tokio::test]
async fn cutting_off_the_newest_entries_is_found_by_the_head_anchor() {
    let t = TestApp::start().await;
    for i in 0..3 {
        t.command_job(&format!("k{i}"), &["true"], json!({})).await;
    }
    let dir = t.stop().await;
    let data = dir.path().join("data");
    assert!(data.join("audit.head").exists(), "written at shutdown");
    let (code, out, _) = steward(&["admin", "verify-audit"], &data);
    assert_eq!(code, 0, "{out}");
    let last: i64 = out.split_whitespace().find_map(|w| w.parse().ok()).unwrap();
    owner_sql(dir.path(), drop_audit_guards()).await.unwrap();
    owner_sql(
        dir.path(),
        &format!("DELETE FROM audit_log WHERE id > {}", last - 2),
    )
    .await
    .unwrap();
    let (code, out, _) = steward(&["admin", "verify-audit"], &data);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("entries after {} were removed", last - 2)),
        "{out}"
    );
}

#[tokio::test]
async fn admin_reset_password_works_offline_for_a_locked_out_admin() {
    let t = TestApp::start().await;
    let (_, cookie, me) = sign_in(&t.base, "admin", ADMIN_PASSWORD).await;
    let old_session = session_client(
        cookie.as_deref().unwrap(),
        me["csrf_token"].as_str().unwrap(),
    );
    // While the server runs the data directory is locked.
    let data = t.dir.path().join("data");
    let (code, _, err) = steward(&["admin", "reset-password", "admin"], &data);
    assert_ne!(code, 0);
    assert!(err.contains("already using the data directory"), "{err}");
    let dir = t.stop().await;
    let data = dir.path().join("data");
    let (code, out, err) = steward(&["admin", "reset-password", "nobody"], &data);
    assert_ne!(code, 0);
    assert!(err.contains("nobody") && err.contains("not found"), "{err}");
    let (code, out2, err) = steward(&["admin", "reset-password", "admin"], &data);
    assert_eq!(code, 0, "{out}{err}");
    let password = out2
        .lines()
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned();
    assert!(password.len() >= 20);
    let app = steward::Application::build(crate::helpers::config(dir.path()))
        .await
        .unwrap();
    let base = format!("http://{}", app.local_addr());
    let probe = reqwest::Client::new();
    let r = probe
        .get(format!("{base}/api/v1/auth/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = old_session
        .get(format!("{base}/api/v1/auth/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "old sessions ended");
    let (s, cookie, me) = sign_in(&base, "admin", &password).await;
    assert_eq!(s, 200);
    assert_eq!(me["must_change_password"], true);
    let c = session_client(
        cookie.as_deref().unwrap(),
        me["csrf_token"].as_str().unwrap(),
    );
    let r = c.get(format!("{base}/api/v1/audit")).send().await.unwrap();
    assert_eq!(r.status(), 403, "must change first");
    let r = c
        .post(format!("{base}/api/v1/auth/password"))
        .json(
            &json!({"current_password": password, "new_password": "a brand new admin passphrase"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let log: Value = c
        .get(format!("{base}/api/v1/audit?event=auth.password_reset"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log["items"][0]["actor"]["name"], "cli admin reset-password");
    app.shutdown().await;
}

#[tokio::test]
async fn first_start_prints_a_one_time_admin_password_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let start = || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_steward"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .envs(crate::helpers::database_env(&data))
            .env("STEWARD_LOG_FORMAT", "json")
            .env_remove("STEWARD_BOOTSTRAP_ADMIN_PASSWORD")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut password = None;
        let addr = loop {
            let v: Value =
                serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap_or(Value::Null);
            if let Some(p) = v["fields"]["password"].as_str() {
                password = Some(p.to_owned());
            }
            if v["fields"]["message"] == "steward is serving" {
                break v["fields"]["addr"].as_str().unwrap().to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        (child, format!("http://{addr}"), password)
    };
    let (mut child, base, password) = start();
    let password = password.expect("the first start logs the generated password");
    let (s, _, me) = sign_in(&base, "admin", &password).await;
    assert_eq!(s, 200);
    assert_eq!(me["must_change_password"], true);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(data.join("steward.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    child.wait().unwrap();
    let (mut child, _, again) = start();
    assert!(
        again.is_none(),
        "the password is printed on the first start only"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The server's own log, at debug level, never carries a secret value, a
/// token or a password: the operator reads logs, and logs get shipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_tokens_and_passwords_stay_out_of_the_server_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .envs(crate::helpers::database_env(&data))
        .env("STEWARD_LOG_FORMAT", "json")
        .env("STEWARD_LOG_LEVEL", "debug")
        .env("STEWARD_RUN_AS_USER", "root")
        .env(
            "STEWARD_BOOTSTRAP_ADMIN_PASSWORD",
            crate::helpers::BOOTSTRAP_PASSWORD,
        )
        .stdout(log)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("steward is serving")) {
            let v: Value = serde_json::from_str(line).unwrap();
            break v["fields"]["addr"].as_str().unwrap().to_owned();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let base = format!("http://{addr}");
    let token = crate::helpers::admin_token(&base).await;
    let c = crate::helpers::token_client(&token);
    let secret = "log-leak-canary-7d1f";
    let r = c
        .put(format!("{base}/api/v1/secrets/CANARY"))
        .json(&json!({"value": secret}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let job = json!({"name": "noisy", "spec": {"kind": "command", "argv": ["sh", "-c", "echo $C; echo $C >&2; exit 1"], "env": {"C": "${secret:CANARY}"}}});
    assert_eq!(
        c.post(format!("{base}/api/v1/jobs"))
            .json(&job)
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    let run: Value = c
        .post(format!("{base}/api/v1/jobs/noisy/run"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for _ in 0..200 {
        let r: Value = c
            .get(format!("{base}/api/v1/runs/{}", run["id"]))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if r["status"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // A failed sign-in with a password typed into the user name field.
    let _ = sign_in(&base, "typed-my-password-here", "and a wrong password").await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(text.contains("run started"), "the log was captured");
    for leak in [
        secret,
        token.as_str(),
        ADMIN_PASSWORD,
        "and a wrong password",
        "typed-my-password-here",
    ] {
        assert!(!text.contains(leak), "{leak:?} appears in the server log");
    }
    // On PostgreSQL, the password of the database URL Steward was given.
    if let Some(url) = crate::helpers::postgres_url(dir.path()) {
        let password = url.split(':').nth(2).unwrap().split('@').next().unwrap();
        assert!(password.len() > 8);
        assert!(
            !text.contains(password),
            "the database password appears in the server log"
        );
        assert!(
            text.contains("records are kept in PostgreSQL"),
            "the run was on PostgreSQL"
        );
    }
}

/// Ending sessions is audited in the same transaction as the change: one
/// record per change that happened, none for one that did not (a session
/// that does not exist), with what was ended.
#[tokio::test]
async fn ending_sessions_appends_one_record_with_the_change() {
    let t = TestApp::start().await;
    let a = t.account("ses", &["viewer"]).await;
    let other = a.new_session(&t.base).await;
    let third = a.new_session(&t.base).await;
    let s = a.session_client();
    let (st, _) = t
        .call(&s, "DELETE", "/api/v1/auth/sessions/999999", None)
        .await;
    assert_eq!(st, 404);
    assert!(
        session_events(&t).await.is_empty(),
        "{:?}",
        session_events(&t).await
    );
    let (st, _) = t
        .call(&other, "POST", "/api/v1/auth/sign-out", Some(json!({})))
        .await;
    assert_eq!(st, 204);
    let (st, _) = t
        .call(
            &third,
            "POST",
            "/api/v1/auth/sign-out-everywhere",
            Some(json!({})),
        )
        .await;
    assert_eq!(st, 200);
    let got = session_events(&t).await;
    let names: Vec<&str> = got.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        names,
        ["auth.sign_out_everywhere", "auth.sign_out"],
        "{got:?}"
    );
    // The first session and the third were left: two ended at once.
    assert_eq!(got[0].1["sessions"], 2, "{got:?}");
    t.stop().await;
}

/// The session events recorded for user `ses`, newest first.
async fn session_events(t: &TestApp) -> Vec<(String, Value)> {
    let (_, page) = t.get("/api/v1/audit?target=user:ses&limit=1000").await;
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["event"].as_str().unwrap().to_owned(), e["diff"].clone()))
        .filter(|(e, _)| e.starts_with("auth.sign_out") || e == "auth.session_revoke")
        .collect()
}
