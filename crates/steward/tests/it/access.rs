//! Who may call what: the route table against every built-in role and no
//! identity, the pending password change, token scopes.

use crate::helpers::{session_client, sign_in, TestApp};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// Expected outcome per caller (the roles call with API tokens): P passes
/// authorisation (any status but 401 / 403), U is 401, F is 403 forbidden,
/// S is 403 session_required.
const P: char = 'P';
const U: char = 'U';
const F: char = 'F';
/// 403 because the route needs a session cookie, not a token.
const S: char = 'S';

/// Every API route and what [no identity, viewer, operator, admin] get.
/// Written by hand on purpose: it is the specification the policy table in
/// steward-web must meet, and a route missing here fails the test.
const EXPECTED: &[(&str, &str, [char; 4])] = &[
    ("POST", "/api/v1/auth/sign-in", [P, P, P, P]),
    ("POST", "/api/v1/auth/password-reset", [P, P, P, P]),
    ("POST", "/api/v1/auth/password-reset/confirm", [P, P, P, P]),
    ("GET", "/api/v1/auth/me", [U, P, P, P]),
    ("POST", "/api/v1/auth/password", [U, S, S, S]),
    ("GET", "/api/v1/auth/sessions", [U, S, S, S]),
    ("DELETE", "/api/v1/auth/sessions/{session}", [U, S, S, S]),
    ("GET", "/api/v1/tokens", [U, P, P, P]),
    ("POST", "/api/v1/tokens", [U, P, P, P]),
    ("DELETE", "/api/v1/tokens/{token}", [U, P, P, P]),
    ("GET", "/api/v1/jobs", [U, P, P, P]),
    ("POST", "/api/v1/jobs", [U, F, P, P]),
    ("GET", "/api/v1/jobs/{job}", [U, P, P, P]),
    ("PUT", "/api/v1/jobs/{job}", [U, F, P, P]),
    ("DELETE", "/api/v1/jobs/{job}", [U, F, P, P]),
    ("POST", "/api/v1/jobs/{job}/enable", [U, F, P, P]),
    ("POST", "/api/v1/jobs/{job}/disable", [U, F, P, P]),
    ("POST", "/api/v1/jobs/{job}/run", [U, F, P, P]),
    ("GET", "/api/v1/runs", [U, P, P, P]),
    ("GET", "/api/v1/runs/{run}", [U, P, P, P]),
    ("POST", "/api/v1/runs/{run}/cancel", [U, F, P, P]),
    ("GET", "/api/v1/runs/{run}/output", [U, P, P, P]),
    ("GET", "/api/v1/runs/{run}/output/follow", [U, P, P, P]),
    ("POST", "/api/v1/schedules/preview", [U, P, P, P]),
    ("GET", "/api/v1/secrets", [U, F, P, P]),
    ("PUT", "/api/v1/secrets/{name}", [U, F, F, P]),
    ("DELETE", "/api/v1/secrets/{name}", [U, F, F, P]),
    ("GET", "/api/v1/users", [U, F, F, P]),
    ("POST", "/api/v1/users", [U, F, F, P]),
    ("GET", "/api/v1/users/{user}", [U, F, F, P]),
    ("PATCH", "/api/v1/users/{user}", [U, F, F, P]),
    ("DELETE", "/api/v1/users/{user}", [U, F, F, P]),
    ("PUT", "/api/v1/users/{user}/roles", [U, F, F, P]),
    ("GET", "/api/v1/roles", [U, F, F, P]),
    ("POST", "/api/v1/roles", [U, F, F, P]),
    ("DELETE", "/api/v1/roles/{role}", [U, F, F, P]),
    ("GET", "/api/v1/groups", [U, F, F, P]),
    ("POST", "/api/v1/groups", [U, F, F, P]),
    ("DELETE", "/api/v1/groups/{group}", [U, F, F, P]),
    ("PUT", "/api/v1/groups/{group}/members", [U, F, F, P]),
    ("PUT", "/api/v1/groups/{group}/roles", [U, F, F, P]),
    ("GET", "/api/v1/audit", [U, F, F, P]),
    ("GET", "/api/v1/audit/export", [U, F, F, P]),
    ("GET", "/api/v1/audit/verify", [U, F, F, P]),
    ("GET", "/api/v1/settings/smtp", [U, F, F, P]),
    ("PUT", "/api/v1/settings/smtp", [U, F, F, P]),
    ("POST", "/api/v1/settings/smtp/test", [U, F, F, P]),
    ("POST", "/api/v1/keys/rotate", [U, F, F, P]),
    // Last: they end the caller's sessions.
    ("POST", "/api/v1/auth/sign-out", [U, S, S, S]),
    ("POST", "/api/v1/auth/sign-out-everywhere", [U, S, S, S]),
];

/// A concrete path: every parameter names something that does not exist, so
/// a call that passes authorisation changes nothing (404 / 422).
fn concrete(path: &str) -> String {
    path.replace("{job}", "no-such-job")
        .replace("{run}", "999999")
        .replace("{session}", "999999")
        .replace("{token}", "999999")
        .replace("{user}", "no-such-user")
        .replace("{role}", "no-such-role")
        .replace("{group}", "no-such-group")
        .replace("{name}", "NO_SUCH_SECRET")
}

fn openapi_routes(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            out.insert((method.to_uppercase(), path.clone()));
        }
    }
    out
}

#[tokio::test]
async fn every_route_for_every_role_and_no_identity() {
    let t = TestApp::start().await;
    let viewer = t.account("vera", &["viewer"]).await;
    let operator = t.account("otto", &["operator"]).await;

    // The table covers the documented API exactly, and so does the server's policy table.
    let (_, doc) = t.get("/api/v1/openapi.json").await;
    let documented = openapi_routes(&doc);
    let expected: BTreeSet<(String, String)> = EXPECTED
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        documented, expected,
        "routes documented but without an expectation here, or the reverse"
    );
    let policies: BTreeSet<(String, String)> = steward_web::policy::ROUTES
        .iter()
        .filter(|(_, p, _)| p.starts_with("/api/v1/") && *p != "/api/v1/openapi.json")
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        policies, expected,
        "the server's policy table and the documented routes differ"
    );
    // The document says which routes need no credentials: exactly the public ones.
    assert_eq!(doc["security"], json!([{"token": []}, {"session": []}]));
    for (method, path, want) in EXPECTED {
        let op = &doc["paths"][path][method.to_lowercase()];
        let public = want[0] == P;
        assert_eq!(
            op["security"] == json!([{}]),
            public,
            "{method} {path}: {}",
            op["security"]
        );
    }

    let anonymous = reqwest::Client::new();
    let callers = [
        ("no identity", anonymous, None),
        ("viewer", viewer.token_client(), None),
        ("operator", operator.token_client(), None),
        ("admin", t.client.clone(), None::<()>),
    ];
    let mut failures = vec![];
    for (method, path, want) in EXPECTED {
        for (i, (who, client, _)) in callers.iter().enumerate() {
            let body = (*method != "GET").then(|| json!({}));
            let (status, resp) = t.call(client, method, &concrete(path), body).await;
            let ok = match want[i] {
                'U' => status == 401,
                'F' => status == 403 && resp["error"]["code"] == "forbidden",
                'S' => status == 403 && resp["error"]["code"] == "session_required",
                _ => status != 401 && status != 403,
            };
            if !ok {
                failures.push(format!(
                    "{method} {path} as {who}: got {status} {resp}, want {}",
                    want[i]
                ));
            }
        }
    }
    // The session-only routes answer a session (sign-outs last: they end it).
    for (method, path, want) in EXPECTED.iter().filter(|(_, _, w)| w[1] == S) {
        let session = viewer.new_session(&t.base).await;
        let body = (*method != "GET").then(|| json!({}));
        let (status, resp) = t.call(&session, method, &concrete(path), body).await;
        if status == 401 || status == 403 {
            failures.push(format!(
                "{method} {path} as viewer's session: got {status} {resp}, want pass ({want:?})"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn until_the_first_password_change_only_the_auth_routes_answer() {
    let t = TestApp::start().await;
    let (s, body) = t
        .post("/api/v1/users", json!({"username": "newbie", "password": "a first password for newbie", "roles": ["admin"]}))
        .await;
    assert_eq!(s, 201, "{body}");
    let (s, cookie, me) = sign_in(&t.base, "newbie", "a first password for newbie").await;
    assert_eq!(s, 200);
    assert_eq!(me["must_change_password"], true);
    let c = session_client(
        cookie.as_deref().unwrap(),
        me["csrf_token"].as_str().unwrap(),
    );
    let open: BTreeSet<&str> = [
        "/api/v1/auth/sign-in",
        "/api/v1/auth/password-reset",
        "/api/v1/auth/password-reset/confirm",
        "/api/v1/auth/me",
        "/api/v1/auth/password",
        "/api/v1/auth/sign-out",
        "/api/v1/auth/sign-out-everywhere",
    ]
    .into();
    for (method, path, _) in EXPECTED {
        if path.contains("sign-out") {
            continue;
        }
        let body = (*method != "GET").then(|| json!({}));
        let (status, resp) = t.call(&c, method, &concrete(path), body).await;
        if open.contains(path) {
            assert!(
                status != 401 && status != 403,
                "{method} {path}: {status} {resp}"
            );
        } else {
            assert_eq!(
                (status, resp["error"]["code"].as_str()),
                (403, Some("password_change_required")),
                "{method} {path}"
            );
        }
    }
}

#[tokio::test]
async fn token_scopes_bound_what_a_token_can_do() {
    let t = TestApp::start().await;
    assert!(
        t.token.starts_with("stw_"),
        "recognisable prefix for secret scanners"
    );
    let op = t.account("olga", &["operator"]).await;
    let c = op.token_client();
    // Wider than the owner: refused, naming the extra permission.
    let (s, body) = t
        .call(
            &c,
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "x", "scopes": ["users:write"]})),
        )
        .await;
    assert_eq!(s, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("users:write"),
        "{body}"
    );
    // A read-only token of an operator cannot write.
    let (s, body) = t
        .call(
            &c,
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "ro", "scopes": ["jobs:read"]})),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["scopes"], json!(["jobs:read"]));
    assert!(body["secret"].as_str().unwrap().starts_with("stw_"));
    let ro = crate::helpers::token_client(body["secret"].as_str().unwrap());
    let job = json!({"name": "nope", "spec": {"kind": "command", "argv": ["true"]}});
    let (s, _) = t.call(&ro, "POST", "/api/v1/jobs", Some(job.clone())).await;
    assert_eq!(s, 403);
    let (s, _) = t.call(&ro, "GET", "/api/v1/runs", None).await;
    assert_eq!(s, 403);
    let (s, _) = t.call(&ro, "GET", "/api/v1/jobs", None).await;
    assert_eq!(s, 200);
    // The owner losing a role narrows the token at once (decision cache dropped).
    let (s, _) = t.call(&c, "POST", "/api/v1/jobs", Some(job.clone())).await;
    assert_eq!(s, 201);
    let (s, body) = t
        .call(
            &t.client,
            "PUT",
            "/api/v1/users/olga/roles",
            Some(json!({"roles": ["viewer"]})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let (s, _) = t.call(&c, "DELETE", "/api/v1/jobs/nope", None).await;
    assert_eq!(s, 403);
}

#[tokio::test]
async fn only_a_session_or_a_token_scoped_to_tokens_manages_tokens() {
    let t = TestApp::start().await;
    let op = t.account("tara", &["operator"]).await;
    let full = op.token_client();
    let (s, body) = t.call(&full, "GET", "/api/v1/tokens", None).await;
    assert_eq!(s, 200, "{body}");
    let full_id = body[0]["id"].as_i64().unwrap();
    // Every scope but tokens: each of them is refused every token route.
    for scope in ["jobs:read", "jobs:write", "runs:write", "secrets:read"] {
        let (s, body) = t
            .call(
                &full,
                "POST",
                "/api/v1/tokens",
                Some(json!({"name": scope, "scopes": [scope]})),
            )
            .await;
        assert_eq!(s, 201, "{body}");
        let narrow = crate::helpers::token_client(body["secret"].as_str().unwrap());
        for (method, path, req) in [
            ("GET", "/api/v1/tokens".to_string(), None),
            (
                "POST",
                "/api/v1/tokens".to_string(),
                Some(json!({"name": "child"})),
            ),
            ("DELETE", format!("/api/v1/tokens/{full_id}"), None),
        ] {
            let (s, body) = t.call(&narrow, method, &path, req).await;
            assert_eq!(s, 403, "{scope}: {method} {path}: {body}");
            assert_eq!(body["error"]["code"], "forbidden", "{body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("tokens:"),
                "{body}"
            );
        }
    }
    // The full token still works: nothing was revoked.
    let (s, _) = t.call(&full, "GET", "/api/v1/jobs", None).await;
    assert_eq!(s, 200);
    // A token scoped to tokens:read lists but does not revoke.
    let (s, body) = t
        .call(
            &full,
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "lister", "scopes": ["tokens:read"]})),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    let lister = crate::helpers::token_client(body["secret"].as_str().unwrap());
    assert_eq!(t.call(&lister, "GET", "/api/v1/tokens", None).await.0, 200);
    let (s, _) = t
        .call(
            &lister,
            "DELETE",
            &format!("/api/v1/tokens/{full_id}"),
            None,
        )
        .await;
    assert_eq!(s, 403);
    // A session manages tokens whatever its roles' token permission.
    let session = op.new_session(&t.base).await;
    assert_eq!(t.call(&session, "GET", "/api/v1/tokens", None).await.0, 200);

    // Signing out with a bearer token is refused clearly, and the token stays valid.
    let (s, body) = t
        .call(&full, "POST", "/api/v1/auth/sign-out", Some(json!({})))
        .await;
    assert_eq!(s, 403, "{body}");
    assert_eq!(body["error"]["code"], "session_required", "{body}");
    assert_eq!(t.call(&full, "GET", "/api/v1/jobs", None).await.0, 200);
}

#[tokio::test]
async fn custom_roles_and_groups_grant_permissions() {
    let t = TestApp::start().await;
    let (s, body) = t
        .post(
            "/api/v1/roles",
            json!({"name": "auditor", "permissions": ["audit:read", "jobs:read"]}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    let (s, body) = t
        .post(
            "/api/v1/roles",
            json!({"name": "bad", "permissions": ["audit:delete"]}),
        )
        .await;
    assert_eq!(s, 422, "{body}");
    assert_eq!(body["error"]["field"], "permissions");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("audit:delete"),
        "{body}"
    );
    let u = t.account("ursula", &[]).await;
    assert!(
        u.token.is_empty(),
        "a token with no permissions cannot be made"
    );
    let s = u.session_client();
    let (st, _) = t.call(&s, "GET", "/api/v1/audit", None).await;
    assert_eq!(st, 403);
    let (st, body) = t
        .post("/api/v1/groups", json!({"name": "compliance"}))
        .await;
    assert_eq!(st, 201, "{body}");
    let (st, body) = t
        .call(
            &t.client,
            "PUT",
            "/api/v1/groups/compliance/roles",
            Some(json!({"roles": ["auditor"]})),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    let (st, body) = t
        .call(
            &t.client,
            "PUT",
            "/api/v1/groups/compliance/members",
            Some(json!({"members": ["ursula"]})),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["members"], json!(["ursula"]));
    let (st, _) = t.call(&s, "GET", "/api/v1/audit", None).await;
    assert_eq!(st, 200, "granted through the group");
    let (st, _) = t.call(&s, "GET", "/api/v1/runs", None).await;
    assert_eq!(st, 403);
    // Out of the group: refused again at once.
    let (st, _) = t
        .call(
            &t.client,
            "PUT",
            "/api/v1/groups/compliance/members",
            Some(json!({"members": []})),
        )
        .await;
    assert_eq!(st, 200);
    let (st, _) = t.call(&s, "GET", "/api/v1/audit", None).await;
    assert_eq!(st, 403);
    // Built-in roles cannot be deleted; the last user manager cannot be demoted.
    let (st, _) = t
        .call(&t.client, "DELETE", "/api/v1/roles/admin", None)
        .await;
    assert_eq!(st, 409);
    let (st, body) = t
        .call(
            &t.client,
            "PUT",
            "/api/v1/users/admin/roles",
            Some(json!({"roles": ["viewer"]})),
        )
        .await;
    assert_eq!(st, 409, "{body}");
}

/// `users:write` alone must not be a way to become admin.
#[tokio::test]
async fn managing_users_never_grants_more_than_the_manager_holds() {
    let t = TestApp::start().await;
    let (s, _) = t
        .post(
            "/api/v1/roles",
            json!({"name": "usermgr", "permissions": ["users:write", "jobs:read"]}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, _) = t.post("/api/v1/groups", json!({"name": "admins"})).await;
    assert_eq!(s, 201);
    assert_eq!(
        t.call(
            &t.client,
            "PUT",
            "/api/v1/groups/admins/roles",
            Some(json!({"roles": ["admin"]}))
        )
        .await
        .0,
        200
    );
    let m = t.account("manny", &["usermgr"]).await;
    let c = m.token_client();
    let attempts = [
        (
            "PUT",
            "/api/v1/users/manny/roles",
            json!({"roles": ["admin"]}),
        ),
        (
            "PUT",
            "/api/v1/users/manny/roles",
            json!({"roles": ["usermgr", "operator"]}),
        ),
        (
            "POST",
            "/api/v1/users",
            json!({"username": "sock", "password": "a password for the sock puppet", "roles": ["admin"]}),
        ),
        (
            "POST",
            "/api/v1/roles",
            json!({"name": "sneaky", "permissions": ["jobs:write"]}),
        ),
        (
            "PUT",
            "/api/v1/groups/admins/members",
            json!({"members": ["manny"]}),
        ),
        (
            "PUT",
            "/api/v1/users/admin/roles",
            json!({"roles": ["viewer"]}),
        ),
        ("PATCH", "/api/v1/users/admin", json!({"disabled": true})),
        ("DELETE", "/api/v1/users/admin", json!({})),
        ("DELETE", "/api/v1/groups/admins", json!({})),
    ];
    for (method, path, body) in attempts {
        let (s, resp) = t.call(&c, method, path, Some(body.clone())).await;
        assert_eq!(s, 403, "{method} {path} {body}: {resp}");
    }
    // Within its own permissions it works: a viewer-free user with jobs:read.
    let (s, resp) = t
        .call(
            &c,
            "POST",
            "/api/v1/roles",
            Some(json!({"name": "reader", "permissions": ["jobs:read"]})),
        )
        .await;
    assert_eq!(s, 201, "{resp}");
    let (s, resp) = t
        .call(&c, "POST", "/api/v1/users", Some(json!({"username": "rob", "password": "a password for rob the reader", "roles": ["reader"]})))
        .await;
    assert_eq!(s, 201, "{resp}");
    // Nothing was escalated.
    let (_, me) = t.call(&c, "GET", "/api/v1/auth/me", None).await;
    assert_eq!(me["permissions"], json!(["jobs:read", "users:write"]));
    let (_, admins) = t.get("/api/v1/groups").await;
    assert_eq!(admins[0]["members"], json!([]));
}

/// A job that refers to a secret hands its value to whatever the job runs.
#[tokio::test]
async fn referring_to_secrets_needs_the_right_to_use_them() {
    let t = TestApp::start().await;
    assert_eq!(
        t.call(
            &t.client,
            "PUT",
            "/api/v1/secrets/DBPASS",
            Some(json!({"value": "s3cret-db"}))
        )
        .await
        .0,
        201
    );
    let (s, _) = t
        .post(
            "/api/v1/roles",
            json!({"name": "jobwriter", "permissions": ["jobs:write", "runs:write"]}),
        )
        .await;
    assert_eq!(s, 201);
    let d = t.account("dave", &["jobwriter"]).await;
    let leak = json!({"name": "leak", "spec": {"kind": "command", "argv": ["sh", "-c", "echo \"$PW\" | rev"], "env": {"PW": "${secret:DBPASS}"}}});
    let (s, body) = t
        .call(
            &d.token_client(),
            "POST",
            "/api/v1/jobs",
            Some(leak.clone()),
        )
        .await;
    assert_eq!(s, 403, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("secrets:read"));
    // Nor by editing a job someone else made with a secret.
    t.command_job(
        "uses-secret",
        &["true"],
        json!({"spec": {"kind": "command", "argv": ["true"], "env": {"PW": "${secret:DBPASS}"}}}),
    )
    .await;
    let edit = json!({"name": "uses-secret", "spec": {"kind": "command", "argv": ["sh", "-c", "echo $PW | rev"], "env": {"PW": "${secret:DBPASS}"}}});
    assert_eq!(
        t.call(
            &d.token_client(),
            "PUT",
            "/api/v1/jobs/uses-secret",
            Some(edit)
        )
        .await
        .0,
        403
    );
    // An operator holds secrets:read and may.
    let o = t.account("opal", &["operator"]).await;
    assert_eq!(
        t.call(&o.token_client(), "POST", "/api/v1/jobs", Some(leak))
            .await
            .0,
        201
    );
}

#[tokio::test]
async fn tokens_made_by_tokens_do_not_outlive_them() {
    let t = TestApp::start().await;
    let expires = chrono::Utc::now() + chrono::Duration::hours(1);
    let (s, parent) = t
        .post(
            "/api/v1/tokens",
            json!({"name": "parent", "expires_at": expires}),
        )
        .await;
    assert_eq!(s, 201);
    let p = crate::helpers::token_client(parent["secret"].as_str().unwrap());
    let (s, child) = t
        .call(&p, "POST", "/api/v1/tokens", Some(json!({"name": "child"})))
        .await;
    assert_eq!(s, 201, "{child}");
    assert_eq!(
        child["expires_at"], parent["expires_at"],
        "inherits the parent's expiry"
    );
    let later = chrono::Utc::now() + chrono::Duration::days(30);
    let (s, body) = t
        .call(
            &p,
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "forever", "expires_at": later})),
        )
        .await;
    assert_eq!(
        (s, body["error"]["field"].as_str()),
        (422, Some("expires_at"))
    );
}

/// However it is attempted (a role deleted, a group left, a user disabled),
/// Steward never ends up with nobody who can manage users.
#[tokio::test]
async fn there_is_always_someone_who_can_manage_users() {
    let t = TestApp::start().await;
    let all = json!([
        "jobs:write",
        "runs:write",
        "secrets:write",
        "notifications:write",
        "users:write",
        "audit:write",
        "settings:write",
        "tokens:write"
    ]);
    assert_eq!(
        t.post("/api/v1/roles", json!({"name": "boss", "permissions": all}))
            .await
            .0,
        201
    );
    let c = &t.client;
    // admin holds users:write only through the custom role now.
    assert_eq!(
        t.call(
            c,
            "PUT",
            "/api/v1/users/admin/roles",
            Some(json!({"roles": ["boss"]}))
        )
        .await
        .0,
        200
    );
    let (s, body) = t.call(c, "DELETE", "/api/v1/roles/boss", None).await;
    assert_eq!(s, 409, "{body}");
    // Only through a group.
    assert_eq!(
        t.post("/api/v1/groups", json!({"name": "admins"})).await.0,
        201
    );
    assert_eq!(
        t.call(
            c,
            "PUT",
            "/api/v1/groups/admins/roles",
            Some(json!({"roles": ["admin"]}))
        )
        .await
        .0,
        200
    );
    assert_eq!(
        t.call(
            c,
            "PUT",
            "/api/v1/groups/admins/members",
            Some(json!({"members": ["admin"]}))
        )
        .await
        .0,
        200
    );
    // Dropping the direct role is fine: the group still grants it.
    let (s, body) = t
        .call(
            c,
            "PUT",
            "/api/v1/users/admin/roles",
            Some(json!({"roles": []})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    for (method, path, body) in [
        (
            "PUT",
            "/api/v1/groups/admins/members",
            Some(json!({"members": []})),
        ),
        (
            "PUT",
            "/api/v1/groups/admins/roles",
            Some(json!({"roles": ["viewer"]})),
        ),
        ("DELETE", "/api/v1/groups/admins", None),
        ("DELETE", "/api/v1/roles/admin", None),
    ] {
        let (s, resp) = t.call(c, method, path, body).await;
        assert_eq!(s, 409, "{method} {path}: {resp}");
    }
    let (_, me) = t.get("/api/v1/auth/me").await;
    assert!(me["permissions"]
        .as_array()
        .unwrap()
        .contains(&json!("users:write")));
    // With a second manager, the first may step down.
    t.account("deputy", &["admin"]).await;
    assert_eq!(
        t.call(
            c,
            "PUT",
            "/api/v1/groups/admins/members",
            Some(json!({"members": []}))
        )
        .await
        .0,
        200
    );
}

/// The last admins take each other's roles away at the same moment (each the
/// next one's, in a ring): checked one after the other, at least one change
/// must be refused, and someone must still be able to manage users. Three
/// times, each on a fresh server.
#[tokio::test]
async fn admins_removing_each_other_at_once_leave_one_who_manages_users() {
    const RING: usize = 6;
    for round in 0..3 {
        let t = TestApp::start().await;
        let mut admins = vec![];
        for i in 0..RING {
            admins.push(t.account(&format!("admin{i}"), &["admin"]).await);
        }
        // The first admin steps down: the ring holds the only managers.
        let (s, body) = t
            .call(
                &admins[0].token_client(),
                "PUT",
                "/api/v1/users/admin/roles",
                Some(json!({"roles": []})),
            )
            .await;
        assert_eq!(s, 200, "{body}");
        let demotions = (0..RING).map(|i| {
            let client = admins[i].token_client();
            let url = t.url(&format!("/api/v1/users/admin{}/roles", (i + 1) % RING));
            async move {
                let r = client
                    .put(url)
                    .json(&json!({"roles": []}))
                    .send()
                    .await
                    .unwrap();
                r.status().as_u16()
            }
        });
        let statuses = futures_util::future::join_all(demotions).await;
        // Refused: no manager would be left (409), or the caller's own roles
        // went while it waited (403).
        assert!(
            statuses.iter().all(|s| [200, 403, 409].contains(s)),
            "round {round}: {statuses:?}"
        );
        assert!(statuses.contains(&200), "round {round}: {statuses:?}");
        let mut managers = 0;
        for a in &admins {
            let (s, _) = t
                .call(&a.token_client(), "GET", "/api/v1/users", None)
                .await;
            managers += usize::from(s == 200);
        }
        assert!(
            managers >= 1,
            "round {round}: nobody can manage users after {statuses:?}"
        );
        t.stop().await;
    }
}
