//! The API-client verbs of the real binary, with STEWARD_URL and STEWARD_TOKEN.

use crate::helpers::TestApp;
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn cli(t: &TestApp, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(args)
        .env("STEWARD_URL", &t.base)
        .env("STEWARD_TOKEN", &t.token)
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

// The binary is run with blocking calls: the server needs its own threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_runs_tokens_users_and_audit_from_the_command_line() {
    let t = TestApp::start().await;
    let file = t.dir.path().join("job.toml");
    std::fs::write(
        &file,
        "name = \"from-cli\"\nschedule = \"0 5 * * *\"\n[spec]\nkind = \"command\"\nargv = [\"sh\", \"-c\", \"echo first; sleep 1; echo second\"]\n",
    )
    .unwrap();
    let created: serde_json::Value = serde_json::from_str(&ok(&cli(
        &t,
        &["jobs", "create", "-f", file.to_str().unwrap()],
    )))
    .unwrap();
    assert_eq!(created["name"], "from-cli");
    let list = ok(&cli(&t, &["jobs", "list"]));
    assert!(
        list.contains("from-cli") && list.contains("0 5 * * *") && list.contains("enabled"),
        "{list}"
    );
    let shown = ok(&cli(&t, &["jobs", "show", "from-cli"]));
    assert!(shown.contains("\"from-cli\""));

    // Run and follow the output while it is produced.
    let run: serde_json::Value =
        serde_json::from_str(&ok(&cli(&t, &["jobs", "run", "from-cli"]))).unwrap();
    let id = run["id"].to_string();
    let mut follow = Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(["runs", "logs", &id, "--follow"])
        .env("STEWARD_URL", &t.base)
        .env("STEWARD_TOKEN", &t.token)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(
        first.contains(" out first") || first.contains(" sys "),
        "{first}"
    );
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        follow.wait().unwrap().success(),
        "--follow ends when the run ends"
    );
    assert!(rest.iter().any(|l| l.contains(" out second")), "{rest:?}");
    t.wait_run(run["id"].as_i64().unwrap(), Duration::from_secs(10))
        .await;
    let logs = ok(&cli(&t, &["runs", "logs", &id]));
    assert!(
        logs.contains(" out first\n") && logs.contains(" out second\n"),
        "{logs}"
    );
    let runs = ok(&cli(&t, &["runs", "list", "--job", "from-cli"]));
    assert!(
        runs.contains("succeeded") && runs.contains("manual"),
        "{runs}"
    );
    assert!(ok(&cli(&t, &["runs", "show", &id])).contains("\"succeeded\""));
    let again = cli(&t, &["runs", "cancel", &id]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("409 conflict"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    assert!(ok(&cli(&t, &["jobs", "disable", "from-cli"])).contains("\"enabled\": false"));
    assert!(ok(&cli(&t, &["jobs", "enable", "from-cli"])).contains("\"enabled\": true"));

    // Tokens and users.
    let tok = cli(
        &t,
        &[
            "tokens",
            "create",
            "ci-read",
            "--scope",
            "jobs:read",
            "--expires-in",
            "30d",
        ],
    );
    let tok: serde_json::Value = serde_json::from_str(&ok(&tok)).unwrap();
    assert!(tok["secret"].as_str().unwrap().starts_with("stw_"));
    assert!(ok(&cli(&t, &["tokens", "list"])).contains("ci-read"));
    ok(&cli(&t, &["tokens", "revoke", &tok["id"].to_string()]));
    let pw = t.dir.path().join("pw");
    std::fs::write(&pw, "an initial password for carol\n").unwrap();
    ok(&cli(
        &t,
        &[
            "users",
            "create",
            "carol",
            "--role",
            "viewer",
            "--email",
            "carol@example.test",
            "--password-file",
            pw.to_str().unwrap(),
        ],
    ));
    assert!(ok(&cli(&t, &["users", "list"])).contains("carol"));

    // Audit: list, export, verify; rotate keys online.
    let audit = ok(&cli(&t, &["audit", "list", "--event", "job"]));
    assert!(
        audit.contains("job.create") && audit.contains("job:from-cli"),
        "{audit}"
    );
    let export = ok(&cli(&t, &["audit", "export"]));
    assert!(export
        .lines()
        .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
    assert!(ok(&cli(&t, &["audit", "verify"])).contains("intact"));
    assert!(ok(&cli(&t, &["keys", "rotate"])).contains("\"new_version\": 2"));

    ok(&cli(&t, &["jobs", "delete", "from-cli"]));
    let gone = cli(&t, &["jobs", "show", "from-cli"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("404 not_found"));

    // Without a token, or with a bad one, the error says so.
    let o = Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(["jobs", "list"])
        .env("STEWARD_URL", &t.base)
        .env_remove("STEWARD_TOKEN")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("STEWARD_TOKEN"));
    let o = Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(["jobs", "list"])
        .env("STEWARD_URL", &t.base)
        .env("STEWARD_TOKEN", "stw_wrong")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("401 unauthenticated"));
}
