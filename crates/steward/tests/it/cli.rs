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

fn cli_stdin(t: &TestApp, args: &[&str], input: &str) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(args)
        .env("STEWARD_URL", &t.base)
        .env("STEWARD_TOKEN", &t.token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_secrets_run_wait_and_cancel_from_the_command_line() {
    let t = TestApp::start().await;
    // apply: create, then unchanged (no write, no audit record), then a change shown.
    let file = t.dir.path().join("nightly.toml");
    let v1 = "name = \"nightly\"\nschedule = \"0 5 * * *\"\n[spec]\nkind = \"command\"\nargv = [\"true\"]\n";
    std::fs::write(&file, v1).unwrap();
    let f = file.to_str().unwrap();
    assert_eq!(
        ok(&cli(&t, &["jobs", "apply", "-f", f])),
        "job nightly created\n"
    );
    assert_eq!(
        ok(&cli(&t, &["jobs", "apply", "-f", f])),
        "job nightly unchanged\n"
    );
    std::fs::write(&file, v1.replace("0 5 * * *", "0 6 * * *")).unwrap();
    let out = ok(&cli(&t, &["jobs", "apply", "-f", f]));
    assert!(
        out.contains("job nightly updated:")
            && out.contains("schedule: \"0 5 * * *\" -> \"0 6 * * *\""),
        "{out}"
    );
    let (_, log) = t.get("/api/v1/audit?target=job:nightly").await;
    let events: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        ["job.update", "job.create"],
        "the unchanged apply wrote nothing"
    );

    // secrets: from standard input (saying so) and from a file; list; delete.
    let o = cli_stdin(
        &t,
        &["secrets", "set", "DB_PW", "--description", "db"],
        "s3cret-value\n",
    );
    assert_eq!(ok(&o), "secret DB_PW created\n");
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("reading the value of DB_PW from standard input"));
    let vf = t.dir.path().join("value");
    std::fs::write(&vf, "another-value\n").unwrap();
    assert_eq!(
        ok(&cli(
            &t,
            &["secrets", "set", "DB_PW", "--file", vf.to_str().unwrap()]
        )),
        "secret DB_PW replaced\n"
    );
    let list = ok(&cli(&t, &["secrets", "list"]));
    assert!(
        list.contains("DB_PW") && !list.contains("another-value"),
        "{list}"
    );
    // The value arrived without its newline.
    t.command_job(
        "uses-pw",
        &["sh", "-c", "test \"$PW\" = another-value"],
        serde_json::json!({"spec": {"kind": "command", "argv": ["sh", "-c", "test \"$PW\" = another-value"], "env": {"PW": "${secret:DB_PW}"}}}),
    )
    .await;
    // run --wait: follows, exits 0 on success...
    let o = cli(&t, &["jobs", "run", "uses-pw", "--wait"]);
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains("succeeded"));
    ok(&cli(&t, &["jobs", "delete", "uses-pw"]));
    assert_eq!(
        ok(&cli(&t, &["secrets", "delete", "DB_PW"])),
        "secret DB_PW deleted\n"
    );
    // ...and 1 with the status otherwise, after printing the output.
    t.command_job(
        "fails",
        &["sh", "-c", "echo about to fail; exit 3"],
        serde_json::json!({}),
    )
    .await;
    let o = cli(&t, &["jobs", "run", "fails", "--wait"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains(" out about to fail"));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("ended failed"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // users create from standard input says where it reads.
    let o = cli_stdin(
        &t,
        &["users", "create", "dora", "--role", "viewer"],
        "an initial password for dora\n",
    );
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains("from standard input"));

    // runs cancel prints the final state.
    t.command_job("long", &["sleep", "300"], serde_json::json!({}))
        .await;
    let (_, run) = t.post("/api/v1/jobs/long/run", serde_json::json!({})).await;
    let id = run["id"].to_string();
    assert_eq!(
        ok(&cli(&t, &["runs", "cancel", &id])),
        format!("run {id}: cancelled\n")
    );
    t.stop().await;
}
