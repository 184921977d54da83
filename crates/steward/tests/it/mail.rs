//! Mail against a real SMTP server (Python's aiosmtpd, storing to a Maildir):
//! the test-mail action and password reset by e-mail.

use crate::helpers::{sign_in, TestApp};
use chrono::{DateTime, Utc};
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use steward_clock::ManualClock;

/// aiosmtpd on a free loopback port, delivering into `maildir`.
struct SmtpServer {
    child: Child,
    port: u16,
    maildir: std::path::PathBuf,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[allow(clippy::zombie_processes)] // reaped by SmtpServer's Drop
async fn smtp_server(dir: &std::path::Path) -> SmtpServer {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let maildir = dir.join("maildir");
    let child = Command::new("python3")
        .args([
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            &format!("127.0.0.1:{port}"),
            "-c",
            "aiosmtpd.handlers.Mailbox",
        ])
        .arg(&maildir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 with aiosmtpd (pip install aiosmtpd) is needed for the mail tests");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return SmtpServer {
                child,
                port,
                maildir,
            };
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("aiosmtpd did not start on port {port}");
}

impl SmtpServer {
    /// Messages delivered so far, oldest first.
    fn messages(&self) -> Vec<String> {
        let mut files: Vec<_> = std::fs::read_dir(self.maildir.join("new"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        files
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    async fn wait_for(&self, n: usize) -> Vec<String> {
        for _ in 0..200 {
            let m = self.messages();
            if m.len() >= n {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("expected {n} messages, have {}", self.messages().len());
    }
}

/// Quoted-printable soft line breaks undone, so long tokens read whole.
fn unfold(mail: &str) -> String {
    mail.replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=")
}

#[tokio::test]
async fn test_mail_arrives_and_a_dead_server_is_reported() {
    let t = TestApp::start().await;
    let smtp = smtp_server(t.dir.path()).await;
    let settings = json!({"host": "127.0.0.1", "port": smtp.port, "security": "none", "from": "Steward <steward@example.test>"});
    let (s, body) = t
        .call(&t.client, "PUT", "/api/v1/settings/smtp", Some(settings))
        .await;
    assert_eq!(s, 204, "{body}");
    let (s, body) = t
        .post(
            "/api/v1/settings/smtp/test",
            json!({"to": "ops@example.test"}),
        )
        .await;
    assert_eq!(s, 204, "{body}");
    let mail = smtp.wait_for(1).await.remove(0);
    assert!(mail.contains("Subject: Steward test mail"), "{mail}");
    assert!(mail.contains("To: ops@example.test"), "{mail}");
    assert!(
        mail.contains("From: Steward <steward@example.test>"),
        "{mail}"
    );
    assert!(mail.contains("sent by admin"), "{mail}");

    // Bad settings are refused with the field named; a dead server is a 503.
    let (s, body) = t
        .call(
            &t.client,
            "PUT",
            "/api/v1/settings/smtp",
            Some(json!({"host": "127.0.0.1", "port": 0, "from": "x@example.test"})),
        )
        .await;
    assert_eq!((s, body["error"]["field"].as_str()), (422, Some("port")));
    let (s, body) = t
        .call(
            &t.client,
            "PUT",
            "/api/v1/settings/smtp",
            Some(json!({"host": "127.0.0.1", "port": 25, "from": "not an address"})),
        )
        .await;
    assert_eq!((s, body["error"]["field"].as_str()), (422, Some("from")));
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (s, _) = t
        .call(&t.client, "PUT", "/api/v1/settings/smtp", Some(json!({"host": "127.0.0.1", "port": dead, "security": "none", "from": "s@example.test", "username": "u", "password": "smtp-password-1"})))
        .await;
    assert_eq!(s, 204);
    let (s, body) = t
        .post(
            "/api/v1/settings/smtp/test",
            json!({"to": "ops@example.test"}),
        )
        .await;
    assert_eq!(s, 503, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains(&dead.to_string()));
    assert!(!body.to_string().contains("smtp-password-1"));
    let (_, view) = t.get("/api/v1/settings/smtp").await;
    assert_eq!(view["password_set"], true);
    assert_eq!(view["host"], "127.0.0.1");
    // settings:write alone cannot redirect the mail that carries reset links.
    let (s, _) = t
        .post(
            "/api/v1/roles",
            json!({"name": "settings-only", "permissions": ["settings:write"]}),
        )
        .await;
    assert_eq!(s, 201);
    let so = t.account("sol", &["settings-only"]).await;
    let (s, body) = t
        .call(&so.token_client(), "PUT", "/api/v1/settings/smtp", Some(json!({"host": "evil.example", "port": 25, "from": "s@example.test", "password": ""})))
        .await;
    assert_eq!(s, 403, "{body}");
    assert!(!view.to_string().contains("smtp-password-1"));
}

#[tokio::test]
async fn password_reset_by_mail_is_single_use_and_expires() {
    let clock = Arc::new(ManualClock::new(
        DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc),
    ));
    let t = TestApp::start_with(
        |c| c.server.public_url = Some("https://steward.example.test".parse().unwrap()),
        clock.clone(),
    )
    .await;
    let smtp = smtp_server(t.dir.path()).await;
    let (s, _) = t
        .call(&t.client, "PUT", "/api/v1/settings/smtp", Some(json!({"host": "127.0.0.1", "port": smtp.port, "security": "none", "from": "steward@example.test"})))
        .await;
    assert_eq!(s, 204);
    let rita = t.account("rita", &["viewer"]).await;
    let rita_session = rita.session_client();

    // By e-mail address; an unknown login and a user without an address get the same answer and no mail.
    for login in ["rita@example.test", "nobody-here"] {
        let (s, body) = t
            .post("/api/v1/auth/password-reset", json!({"login": login}))
            .await;
        assert_eq!(s, 200, "{body}");
    }
    let mail = unfold(&smtp.wait_for(1).await.remove(0));
    assert!(mail.contains("To: rita@example.test"), "{mail}");
    assert!(
        mail.contains("https://steward.example.test/reset-password#token="),
        "{mail}"
    );
    let token = mail
        .split("#token=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(token.len(), 43, "32 random bytes: {token}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(smtp.messages().len(), 1, "no mail for an unknown login");

    // A weak password does not use the link up.
    let (s, body) = t
        .post(
            "/api/v1/auth/password-reset/confirm",
            json!({"token": token, "new_password": "short"}),
        )
        .await;
    assert_eq!(
        (s, body["error"]["field"].as_str()),
        (422, Some("new_password"))
    );
    let new = "rita found a new password in the attic";
    let (s, body) = t
        .post(
            "/api/v1/auth/password-reset/confirm",
            json!({"token": token, "new_password": new}),
        )
        .await;
    assert_eq!(s, 204, "{body}");
    let (s, body) = t
        .post(
            "/api/v1/auth/password-reset/confirm",
            json!({"token": token, "new_password": "and once more with this one"}),
        )
        .await;
    assert_eq!(
        (s, body["error"]["field"].as_str()),
        (422, Some("token")),
        "single use"
    );
    assert_eq!(
        t.call(&rita_session, "GET", "/api/v1/auth/me", None)
            .await
            .0,
        401,
        "a reset ends every session"
    );
    assert_eq!(sign_in(&t.base, "rita", &rita.password).await.0, 401);
    assert_eq!(sign_in(&t.base, "rita", new).await.0, 200);

    // A link older than 15 minutes does not work.
    let (s, _) = t
        .post("/api/v1/auth/password-reset", json!({"login": "rita"}))
        .await;
    assert_eq!(s, 200);
    let mail = unfold(&smtp.wait_for(2).await.remove(1));
    let token = mail
        .split("#token=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    clock.advance(chrono::Duration::minutes(16));
    let (s, _) = t
        .post(
            "/api/v1/auth/password-reset/confirm",
            json!({"token": token, "new_password": "too late for this one anyway"}),
        )
        .await;
    assert_eq!(s, 422);
    let (_, log) = t.get("/api/v1/audit?target=user:rita&event=auth").await;
    let events: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(
        events.contains(&"auth.password_reset") && events.contains(&"auth.password_reset_request"),
        "{events:?}"
    );
}
