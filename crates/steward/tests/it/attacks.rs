//! The attack suite: each test tries something an attacker would and expects
//! refusal with no side effect.

use crate::helpers::{session_client, sign_in, token_client, TestApp, ADMIN_PASSWORD};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use steward_clock::{Clock as _, ManualClock, SystemClock};

fn job(name: &str) -> Value {
    json!({"name": name, "spec": {"kind": "command", "argv": ["true"]}})
}

async fn job_count(t: &TestApp) -> usize {
    let (_, body) = t.get("/api/v1/jobs").await;
    body["items"].as_array().unwrap().len()
}

#[tokio::test]
async fn forged_malformed_and_revoked_credentials_are_refused() {
    let t = TestApp::start().await;
    let anon = reqwest::Client::new();
    for auth in [
        "Bearer stw_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "Bearer not-even-a-token",
        "Basic YWRtaW46YWRtaW4=",
        "Bearer",
    ] {
        let r = anon
            .get(t.url("/api/v1/jobs"))
            .header("authorization", auth)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{auth}");
    }
    for cookie in ["steward_session=forged", "steward_session=", "other=1"] {
        let r = anon
            .get(t.url("/api/v1/jobs"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{cookie}");
    }
    // A revoked token stops working at once.
    let (s, body) = t
        .post("/api/v1/tokens", json!({"name": "short-lived"}))
        .await;
    assert_eq!(s, 201);
    let c = token_client(body["secret"].as_str().unwrap());
    assert_eq!(t.call(&c, "GET", "/api/v1/jobs", None).await.0, 200);
    let (s, _) = t
        .call(
            &t.client,
            "DELETE",
            &format!("/api/v1/tokens/{}", body["id"]),
            None,
        )
        .await;
    assert_eq!(s, 204);
    assert_eq!(t.call(&c, "GET", "/api/v1/jobs", None).await.0, 401);
    assert_eq!(
        t.call(&c, "POST", "/api/v1/jobs", Some(job("after-revoke")))
            .await
            .0,
        401
    );
    assert_eq!(job_count(&t).await, 0);
    // Tokens are stored hashed: the secret is not in the database file.
    let db = crate::helpers::stored_bytes(t.dir.path()).await;
    let secret = body["secret"].as_str().unwrap().as_bytes();
    assert!(!db.windows(secret.len()).any(|w| w == secret));
}

#[tokio::test]
async fn sessions_expire_when_idle_and_at_their_absolute_lifetime() {
    let clock = Arc::new(ManualClock::new(
        DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc),
    ));
    let t = TestApp::start_with(|_| {}, clock.clone()).await;
    let (_, cookie, me) = sign_in(&t.base, "admin", ADMIN_PASSWORD).await;
    let s = session_client(
        cookie.as_deref().unwrap(),
        me["csrf_token"].as_str().unwrap(),
    );
    assert_eq!(t.call(&s, "GET", "/api/v1/jobs", None).await.0, 200);
    // Used every 11 hours, the idle limit (12 h) never strikes...
    for _ in 0..15 {
        clock.advance(chrono::Duration::hours(11));
        assert_eq!(t.call(&s, "GET", "/api/v1/jobs", None).await.0, 200);
    }
    // ...but the absolute lifetime (7 days) does.
    clock.advance(chrono::Duration::hours(11));
    assert_eq!(t.call(&s, "GET", "/api/v1/jobs", None).await.0, 401);

    let (_, cookie, me) = sign_in(&t.base, "admin", ADMIN_PASSWORD).await;
    let s = session_client(
        cookie.as_deref().unwrap(),
        me["csrf_token"].as_str().unwrap(),
    );
    clock.advance(chrono::Duration::hours(12) + chrono::Duration::seconds(1));
    assert_eq!(
        t.call(&s, "GET", "/api/v1/jobs", None).await.0,
        401,
        "idle for over 12 h"
    );

    // An expiring token.
    let expires = clock.now() + chrono::Duration::hours(1);
    let (st, body) = t
        .post(
            "/api/v1/tokens",
            json!({"name": "1h", "expires_at": expires}),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    let c = token_client(body["secret"].as_str().unwrap());
    assert_eq!(t.call(&c, "GET", "/api/v1/jobs", None).await.0, 200);
    clock.advance(chrono::Duration::hours(2));
    assert_eq!(t.call(&c, "GET", "/api/v1/jobs", None).await.0, 401);
    let (st, _) = t
        .post(
            "/api/v1/tokens",
            json!({"name": "past", "expires_at": "2020-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(st, 422);
}

#[tokio::test]
async fn a_stolen_cookie_is_useless_after_sign_out_and_password_change() {
    let t = TestApp::start().await;
    let a = t.account("alice", &["operator"]).await;
    let stolen = a.session_client();
    assert_eq!(t.call(&stolen, "GET", "/api/v1/jobs", None).await.0, 200);
    let (s, _) = t
        .call(&stolen, "POST", "/api/v1/auth/sign-out", Some(json!({})))
        .await;
    assert_eq!(s, 204);
    assert_eq!(t.call(&stolen, "GET", "/api/v1/jobs", None).await.0, 401);
    assert_eq!(
        t.call(&stolen, "POST", "/api/v1/jobs", Some(job("replayed")))
            .await
            .0,
        401
    );

    // Two sessions; a password change in one ends the other.
    let (_, c1, m1) = sign_in(&t.base, &a.name, &a.password).await;
    let (_, c2, m2) = sign_in(&t.base, &a.name, &a.password).await;
    assert_ne!(c1, c2, "a new session id at every sign-in");
    let s1 = session_client(c1.as_deref().unwrap(), m1["csrf_token"].as_str().unwrap());
    let s2 = session_client(c2.as_deref().unwrap(), m2["csrf_token"].as_str().unwrap());
    let (st, sessions) = t.call(&s1, "GET", "/api/v1/auth/sessions", None).await;
    assert_eq!(st, 200);
    assert!(sessions.as_array().unwrap().len() >= 2);
    assert_eq!(
        sessions
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["current"] == true)
            .count(),
        1
    );
    let (st, body) = t
        .call(&s1, "POST", "/api/v1/auth/password", Some(json!({"current_password": a.password, "new_password": "a completely new passphrase for alice"})))
        .await;
    assert_eq!(st, 204, "{body}");
    assert_eq!(
        t.call(&s1, "GET", "/api/v1/jobs", None).await.0,
        200,
        "the changing session stays"
    );
    assert_eq!(
        t.call(&s2, "GET", "/api/v1/jobs", None).await.0,
        401,
        "the other session ended"
    );
    // Sign out everywhere.
    let (st, _) = t
        .call(
            &s1,
            "POST",
            "/api/v1/auth/sign-out-everywhere",
            Some(json!({})),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(t.call(&s1, "GET", "/api/v1/jobs", None).await.0, 401);
    assert_eq!(job_count(&t).await, 0);
}

#[tokio::test]
async fn cookie_changes_need_the_csrf_token_and_cross_site_posts_are_refused() {
    let t = TestApp::start().await;
    let (_, cookie, me) = sign_in(&t.base, "admin", ADMIN_PASSWORD).await;
    let cookie = cookie.unwrap();
    let csrf = me["csrf_token"].as_str().unwrap();
    let plain = reqwest::Client::new();
    let attempts: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("no csrf token", vec![("cookie", cookie.clone())]),
        (
            "wrong csrf token",
            vec![("cookie", cookie.clone()), ("x-csrf-token", "A".repeat(43))],
        ),
        (
            "cross-site origin",
            vec![
                ("cookie", cookie.clone()),
                ("x-csrf-token", csrf.into()),
                ("origin", "https://evil.example".into()),
            ],
        ),
        (
            "null origin",
            vec![
                ("cookie", cookie.clone()),
                ("x-csrf-token", csrf.into()),
                ("origin", "null".into()),
            ],
        ),
        (
            "sec-fetch-site",
            vec![
                ("cookie", cookie.clone()),
                ("x-csrf-token", csrf.into()),
                ("sec-fetch-site", "cross-site".into()),
            ],
        ),
    ];
    for (what, headers) in attempts {
        let mut req = plain.post(t.url("/api/v1/jobs")).json(&job("csrf"));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 403, "{what}");
    }
    assert_eq!(job_count(&t).await, 0, "no attempt created anything");
    // Same-origin with the token works; bearer calls need no token.
    let r = plain
        .post(t.url("/api/v1/jobs"))
        .header("cookie", &cookie)
        .header("x-csrf-token", csrf)
        .header("origin", &t.base)
        .json(&job("csrf"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // The cookie is HttpOnly and SameSite.
    let r = plain
        .post(t.url("/api/v1/auth/sign-in"))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax") && set.contains("Path=/"),
        "{set}"
    );
    // Authenticated responses are not cached.
    let r = t.client.get(t.url("/api/v1/jobs")).send().await.unwrap();
    assert_eq!(r.headers()["cache-control"], "no-store");
}

#[tokio::test]
async fn viewers_cannot_write_and_operators_cannot_manage_users() {
    let t = TestApp::start().await;
    t.command_job("existing", &["true"], json!({})).await;
    let v = t.account("victor", &["viewer"]).await;
    let o = t.account("oscar", &["operator"]).await;
    for c in [v.token_client(), v.session_client()] {
        assert_eq!(
            t.call(&c, "POST", "/api/v1/jobs", Some(job("viewer-job")))
                .await
                .0,
            403
        );
        assert_eq!(
            t.call(&c, "DELETE", "/api/v1/jobs/existing", None).await.0,
            403
        );
        assert_eq!(
            t.call(&c, "POST", "/api/v1/jobs/existing/run", Some(json!({})))
                .await
                .0,
            403
        );
    }
    let oc = o.token_client();
    let (s, _) = t.call(&oc, "POST", "/api/v1/users", Some(json!({"username": "mallory", "password": "mallory wants admin rights now", "roles": ["admin"]}))).await;
    assert_eq!(s, 403);
    assert_eq!(
        t.call(
            &oc,
            "PUT",
            "/api/v1/users/oscar/roles",
            Some(json!({"roles": ["admin"]}))
        )
        .await
        .0,
        403
    );
    assert_eq!(t.call(&oc, "GET", "/api/v1/audit", None).await.0, 403);
    // Nothing changed.
    assert_eq!(job_count(&t).await, 1);
    let (_, runs) = t.get("/api/v1/runs").await;
    assert!(runs["items"].as_array().unwrap().is_empty());
    let (_, users) = t.get("/api/v1/users").await;
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["admin", "oscar", "victor"]);
    let (_, oscar) = t.get("/api/v1/users/oscar").await;
    assert_eq!(oscar["roles"], json!(["operator"]));
}

#[tokio::test]
async fn brute_force_is_slowed_and_spoofed_forwarded_for_does_not_help() {
    let t = TestApp::start().await;
    let a = t.account("bruno", &["viewer"]).await;
    let plain = reqwest::Client::new();
    let mut last = None;
    for i in 0..8 {
        // Each attempt claims a different client address: ignored, the peer is not a trusted proxy.
        let r = plain
            .post(t.url("/api/v1/auth/sign-in"))
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .json(&json!({"username": "bruno", "password": format!("guess number {i}")}))
            .send()
            .await
            .unwrap();
        last = Some((r.status().as_u16(), r.headers().get("retry-after").cloned()));
    }
    let (status, retry) = last.unwrap();
    assert_eq!(status, 429);
    assert!(retry.unwrap().to_str().unwrap().parse::<u64>().unwrap() >= 1);
    // Even the right password is refused while the back-off lasts: no session.
    let (s, cookie, _) = sign_in(&t.base, "bruno", &a.password).await;
    assert_eq!(s, 429);
    assert!(cookie.is_none());
    // The failures were recorded with the real peer address, not the claimed one.
    let (_, log) = t
        .get("/api/v1/audit?event=auth.sign_in_failed&target=user:bruno")
        .await;
    let items = log["items"].as_array().unwrap();
    assert!(items.len() >= 5, "{items:?}");
    assert!(
        items.iter().all(|e| e["address"] == "127.0.0.1"),
        "{items:?}"
    );
    assert!(items.iter().all(|e| e["target"] == "user:bruno"));
}

#[tokio::test]
async fn parallel_guesses_do_not_slip_past_the_back_off() {
    let t = TestApp::start().await;
    t.account("pat", &["viewer"]).await;
    let mut tasks = vec![];
    for i in 0..20 {
        let url = t.url("/api/v1/auth/sign-in");
        tasks.push(tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(url)
                .json(&json!({"username": "pat", "password": format!("parallel guess {i}")}))
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }));
    }
    let mut statuses = vec![];
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    let judged = statuses.iter().filter(|s| **s == 401).count();
    assert!(
        judged <= 5,
        "at most the free attempts are judged: {statuses:?}"
    );
    assert_eq!(judged + statuses.iter().filter(|s| **s == 429).count(), 20);
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
    let t = TestApp::start_with(
        |c| c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()],
        Arc::new(SystemClock),
    )
    .await;
    let r = reqwest::Client::new()
        .post(t.url("/api/v1/auth/sign-in"))
        .header("x-forwarded-for", "198.51.100.23, 127.0.0.1")
        .json(&json!({"username": "admin", "password": "wrong"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (_, log) = t.get("/api/v1/audit?event=auth.sign_in_failed").await;
    assert_eq!(log["items"][0]["address"], "198.51.100.23");
}

#[tokio::test]
async fn the_api_rate_limit_answers_429_with_retry_after() {
    let t = TestApp::start_with(
        |c| {
            c.api.rate_limit_per_second = 1;
            c.api.rate_limit_burst = 5;
        },
        Arc::new(SystemClock),
    )
    .await;
    let mut statuses = vec![];
    for _ in 0..10 {
        let r = t.client.get(t.url("/api/v1/jobs")).send().await.unwrap();
        statuses.push((
            r.status().as_u16(),
            r.headers().get("retry-after").is_some(),
        ));
    }
    assert!(statuses.contains(&(429, true)), "{statuses:?}");
    // Another caller (no identity: keyed by address) has its own budget... shared
    // with nobody else here, so its first call is not limited.
    let r = reqwest::Client::new()
        .get(t.url("/api/v1/auth/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Health checks are never limited.
    for _ in 0..20 {
        assert_eq!(
            t.client
                .get(t.url("/healthz"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
}

#[tokio::test]
async fn no_user_enumeration_through_sign_in_or_reset() {
    let t = TestApp::start().await;
    t.account("erin", &["viewer"]).await;
    let plain = reqwest::Client::new();
    let attempt = |user: String| {
        let plain = plain.clone();
        let url = t.url("/api/v1/auth/sign-in");
        async move {
            let started = Instant::now();
            let r = plain
                .post(url)
                .json(&json!({"username": user, "password": "not the password at all"}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            (started.elapsed(), status, body)
        }
    };
    let mut known = vec![];
    let mut unknown = vec![];
    for i in 0..4 {
        let (d, s, b) = attempt("erin".into()).await;
        known.push(d);
        let (d2, s2, b2) = attempt(format!("nobody{i}")).await;
        unknown.push(d2);
        assert_eq!(
            (s, &b),
            (s2, &b2),
            "same answer for a wrong password and an unknown user"
        );
    }
    known.sort();
    unknown.sort();
    let (k, u) = (known[2].as_secs_f64(), unknown[2].as_secs_f64());
    // Both run one Argon2id verification; without the dummy hash an unknown
    // user would answer tens of times faster.
    assert!(
        u > k / 3.0 && k > u / 3.0,
        "known {known:?} vs unknown {unknown:?}"
    );

    let (s1, b1) = t
        .post("/api/v1/auth/password-reset", json!({"login": "erin"}))
        .await;
    let (s2, b2) = t
        .post(
            "/api/v1/auth/password-reset",
            json!({"login": "nobody-at-all"}),
        )
        .await;
    assert_eq!((s1, b1), (s2, b2));
}

#[tokio::test]
async fn secret_values_never_come_back_out() {
    let t = TestApp::start().await;
    let value = "hunter2-very-secret-value";
    let c = &t.client;
    let (s, _) = t
        .call(
            c,
            "PUT",
            "/api/v1/secrets/API_KEY",
            Some(json!({"value": value, "description": "for the test"})),
        )
        .await;
    assert_eq!(s, 201);
    let (s, _) = t
        .call(
            c,
            "PUT",
            "/api/v1/secrets/API_KEY",
            Some(json!({"value": value})),
        )
        .await;
    assert_eq!(s, 204, "replaced");
    let (s, list) = t.get("/api/v1/secrets").await;
    assert_eq!(s, 200);
    assert_eq!(list[0]["name"], "API_KEY");
    // A job that prints it, on stdout and stderr and in its error.
    let created = t
        .command_job(
            "leaky",
            &["sh", "-c", "echo got=$KEY; echo \"$1\" >&2; exit 3", "sh", "${secret:API_KEY}"],
            json!({"spec": {"kind": "command", "argv": ["sh", "-c", "echo got=$KEY; echo \"arg=$1\" >&2; exit 3", "sh", "${secret:API_KEY}"], "env": {"KEY": "${secret:API_KEY}"}}}),
        )
        .await;
    assert_eq!(created["spec"]["env"]["KEY"], "${secret:API_KEY}");
    let (_, run) = t.post("/api/v1/jobs/leaky/run", json!({})).await;
    let run = t
        .wait_run(run["id"].as_i64().unwrap(), Duration::from_secs(10))
        .await;
    assert_eq!(run["status"], "failed");
    let out = t.text(&format!("/api/v1/runs/{}/output", run["id"])).await;
    assert!(
        out.contains("got=[secret]") && out.contains("arg=[secret]"),
        "{out}"
    );
    // A reference to a secret that does not exist is refused at save time.
    let (s, body) = t.post("/api/v1/jobs", json!({"name": "dangling", "spec": {"kind": "command", "argv": ["echo", "${secret:NOPE}"]}})).await;
    assert_eq!(s, 422);
    assert!(body["error"]["message"].as_str().unwrap().contains("NOPE"));
    // Deleting a secret a job uses is refused.
    assert_eq!(
        t.call(c, "DELETE", "/api/v1/secrets/API_KEY", None).await.0,
        409
    );

    // Nowhere in the API, the audit export or the database file.
    let mut everything = String::new();
    for path in [
        "/api/v1/secrets",
        "/api/v1/jobs",
        "/api/v1/runs",
        "/api/v1/audit?limit=1000",
        "/api/v1/audit/export",
    ] {
        everything.push_str(&t.text(path).await);
    }
    everything.push_str(&t.text(&format!("/api/v1/runs/{}", run["id"])).await);
    assert!(
        !everything.contains(value),
        "a secret value leaked through the API"
    );
    assert!(everything.contains("secret.put"));
    let stored = crate::helpers::stored_bytes(t.dir.path()).await;
    assert!(
        !stored.windows(value.len()).any(|w| w == value.as_bytes()),
        "plaintext at rest"
    );
}

#[tokio::test]
async fn oversized_and_malformed_auth_bodies_are_refused_cleanly() {
    let t = TestApp::start().await;
    let plain = reqwest::Client::new();
    let huge = "x".repeat(2 * 1024 * 1024);
    let r = plain
        .post(t.url("/api/v1/auth/sign-in"))
        .json(&json!({"username": "admin", "password": huge}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // A 2000-character password is refused by the policy, not hashed.
    let (_, cookie, me) = sign_in(&t.base, "admin", ADMIN_PASSWORD).await;
    let sc = session_client(
        cookie.as_deref().unwrap(),
        me["csrf_token"].as_str().unwrap(),
    );
    let long = json!({"current_password": ADMIN_PASSWORD, "new_password": "y".repeat(2000)});
    let (s, body) = t
        .call(&sc, "POST", "/api/v1/auth/password", Some(long))
        .await;
    assert_eq!(s, 422, "{body}");
    assert_eq!(body["error"]["field"], "new_password");
    let weak = json!({"current_password": ADMIN_PASSWORD, "new_password": "password1234"});
    let (s, body) = t
        .call(&sc, "POST", "/api/v1/auth/password", Some(weak))
        .await;
    assert_eq!(s, 422);
    assert!(
        !body.to_string().contains("password1234"),
        "the error does not echo the password"
    );
    let r = plain
        .post(t.url("/api/v1/auth/sign-in"))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD, "remember": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422, "unknown fields are refused");
}

#[tokio::test]
async fn strict_security_headers_and_hsts_over_https() {
    let t = TestApp::start().await;
    for path in ["/healthz", "/api/v1/jobs", "/api/v1/nope"] {
        let r = t.client.get(t.url(path)).send().await.unwrap();
        let h = r.headers();
        assert_eq!(
            h["content-security-policy"], "default-src 'none'; frame-ancestors 'none'",
            "{path}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert!(h["permissions-policy"]
            .to_str()
            .unwrap()
            .contains("camera=()"));
        assert_eq!(h["cache-control"], "no-store");
        assert!(
            h.get("strict-transport-security").is_none(),
            "no HSTS over plain HTTP"
        );
    }
    let https = TestApp::start_with(
        |c| c.server.public_url = Some("https://steward.example.test".parse().unwrap()),
        Arc::new(SystemClock),
    )
    .await;
    let r = https
        .client
        .get(https.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert!(r.headers()["strict-transport-security"]
        .to_str()
        .unwrap()
        .starts_with("max-age="));
    // Over HTTPS the cookie is Secure and host-bound.
    let r = reqwest::Client::new()
        .post(https.url("/api/v1/auth/sign-in"))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    let set = r.headers()["set-cookie"].to_str().unwrap();
    assert!(
        set.starts_with("__Host-steward_session=") && set.contains("; Secure"),
        "{set}"
    );
    // The public URL's host is served; others are not.
    let r = reqwest::Client::new()
        .get(https.url("/healthz"))
        .header("host", "steward.example.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = reqwest::Client::new()
        .get(https.url("/healthz"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 421);
}

#[tokio::test]
async fn listening_on_all_interfaces_serves_only_authenticated_callers() {
    let t = TestApp::start_with(
        |c| c.listen = "0.0.0.0:0".parse().unwrap(),
        Arc::new(SystemClock),
    )
    .await;
    let port = t.base.rsplit(':').next().unwrap().to_owned();
    let base = format!("http://127.0.0.1:{port}");
    let anon = reqwest::Client::new();
    // Any Host is accepted when no public URL or host list is configured...
    let r = anon
        .get(format!("{base}/api/v1/jobs"))
        .header("host", "steward.lan")
        .send()
        .await
        .unwrap();
    // ...but nothing is served without an identity.
    assert_eq!(r.status(), 401);
    let r = t
        .client
        .get(format!("{base}/api/v1/jobs"))
        .header("host", "steward.lan")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Cross-site posts are still refused with a foreign Origin.
    let r = t
        .client
        .post(format!("{base}/api/v1/jobs"))
        .header("host", "steward.lan")
        .header("origin", "http://evil.example")
        .json(&job("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}
