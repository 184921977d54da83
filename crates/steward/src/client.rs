//! The API-client verbs (`steward jobs ...`, `steward runs logs --follow`, ...):
//! thin calls to a running server with `STEWARD_URL` and `STEWARD_TOKEN`.
//! Errors print the server's code and message; exit code 1.

use crate::cli::{
    AuditCommand, Connection, JobsCommand, KeysCommand, RunsCommand, SecretsCommand, TokensCommand,
    UsersCommand,
};
use anyhow::Context as _;
use futures_util::StreamExt as _;
use reqwest::{Method, Response};
use serde_json::{json, Value};

/// Writes to stdout; a closed pipe (`steward jobs list | head`) ends the
/// program quietly instead of panicking as `println!` would.
pub fn emit(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if out
        .write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}

macro_rules! say {
    ($($t:tt)*) => { emit(&format!("{}\n", format_args!($($t)*))) };
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// A path segment, percent-encoded.
fn seg(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

impl Client {
    pub fn new(conn: &Connection) -> anyhow::Result<Self> {
        let token = conn.token.clone().filter(|t| !t.is_empty()).context(
            "no API token: set STEWARD_TOKEN (or --token); create one with POST /api/v1/tokens",
        )?;
        if !(conn.url.starts_with("http://") || conn.url.starts_with("https://")) {
            anyhow::bail!(
                "STEWARD_URL (--url) must start with http:// or https://, e.g. http://127.0.0.1:8080 (got {:?})",
                conn.url
            );
        }
        #[allow(clippy::disallowed_methods)]
        // the CLI talks to its own server, not to user-given URLs
        let http = reqwest::Client::builder()
            .user_agent(concat!("steward-cli/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            base: conn.url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Response> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let code = body
            .pointer("/error/code")
            .and_then(Value::as_str)
            .unwrap_or("error");
        let message = body
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("");
        anyhow::bail!("{} {code}: {message}", status.as_u16())
    }

    async fn json(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let r = self.send(method, path, body).await?;
        if r.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        Ok(r.json().await.unwrap_or(Value::Null))
    }
}

fn print(v: &Value) {
    if !v.is_null() {
        say!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    }
}

fn read_definition(path: &std::path::Path) -> anyhow::Result<Value> {
    let text = if path == std::path::Path::new("-") {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
    };
    if let Ok(v) = serde_json::from_str(&text) {
        return Ok(v);
    }
    let v: toml::Value = toml::from_str(&text)
        .with_context(|| format!("{} is neither JSON nor TOML", path.display()))?;
    Ok(serde_json::to_value(v)?)
}

pub async fn jobs(conn: &Connection, cmd: JobsCommand) -> anyhow::Result<()> {
    let c = Client::new(conn)?;
    let v = match cmd {
        JobsCommand::List {
            tag,
            name,
            enabled,
            status,
            sort,
        } => {
            let mut q = format!("/api/v1/jobs?limit=1000&sort={}", seg(&sort));
            for (key, value) in [
                ("tag", tag),
                ("name", name),
                ("enabled", enabled.map(|e| e.to_string())),
                ("last_status", status),
            ] {
                if let Some(v) = value {
                    q.push_str(&format!("&{key}={}", seg(&v)));
                }
            }
            // Every page, following the server's cursor.
            let mut cursor: Option<String> = None;
            loop {
                let page = match &cursor {
                    Some(c) => format!("{q}&cursor={}", seg(c)),
                    None => q.clone(),
                };
                let v = c.json(Method::GET, &page, None).await?;
                for j in v["items"].as_array().into_iter().flatten() {
                    say!(
                        "{:>5}  {:<30} {:<8} {:<20} next {:<24} last {}",
                        j["id"],
                        j["name"].as_str().unwrap_or(""),
                        if j["enabled"].as_bool() == Some(true) {
                            "enabled"
                        } else {
                            "disabled"
                        },
                        j["schedule"].as_str().unwrap_or("-"),
                        j["next_run_at"].as_str().unwrap_or("-"),
                        j["last_status"].as_str().unwrap_or("-"),
                    );
                }
                match v["next_cursor"].as_str() {
                    Some(next) => cursor = Some(next.to_owned()),
                    None => return Ok(()),
                }
            }
        }
        JobsCommand::Show { job } => {
            c.json(Method::GET, &format!("/api/v1/jobs/{}", seg(&job)), None)
                .await?
        }
        JobsCommand::Create { file } => {
            c.json(Method::POST, "/api/v1/jobs", Some(read_definition(&file)?))
                .await?
        }
        JobsCommand::Apply { file } => return apply(&c, read_definition(&file)?).await,
        JobsCommand::Run { job, wait } => {
            let run = c
                .json(
                    Method::POST,
                    &format!("/api/v1/jobs/{}/run", seg(&job)),
                    None,
                )
                .await?;
            if !wait {
                print(&run);
                return Ok(());
            }
            let id = run["id"]
                .as_i64()
                .context("the server returned no run id")?;
            eprintln!(
                "run {id} of {job}: {}{}",
                run["status"].as_str().unwrap_or("?"),
                run["waiting_for"]
                    .as_str()
                    .map(|w| format!(" ({w})"))
                    .unwrap_or_default()
            );
            return follow(&c, id).await;
        }
        JobsCommand::Enable { job } => {
            c.json(
                Method::POST,
                &format!("/api/v1/jobs/{}/enable", seg(&job)),
                None,
            )
            .await?
        }
        JobsCommand::Disable { job } => {
            c.json(
                Method::POST,
                &format!("/api/v1/jobs/{}/disable", seg(&job)),
                None,
            )
            .await?
        }
        JobsCommand::Delete { job } => {
            c.json(Method::DELETE, &format!("/api/v1/jobs/{}", seg(&job)), None)
                .await?
        }
    };
    print(&v);
    Ok(())
}

pub async fn runs(conn: &Connection, cmd: RunsCommand) -> anyhow::Result<()> {
    let c = Client::new(conn)?;
    match cmd {
        RunsCommand::List { job, status, limit } => {
            let mut q = format!("/api/v1/runs?limit={limit}");
            if let Some(j) = job {
                q.push_str(&format!("&job={}", seg(&j)));
            }
            if let Some(s) = status {
                q.push_str(&format!("&status={}", seg(&s)));
            }
            let v = c.json(Method::GET, &q, None).await?;
            for r in v["items"].as_array().into_iter().flatten() {
                // Why a queued run waits, or why one was skipped.
                let why = r["waiting_for"]
                    .as_str()
                    .or(r["status"]
                        .as_str()
                        .filter(|s| *s == "skipped")
                        .and(r["error"].as_str()))
                    .unwrap_or("");
                say!(
                    "{:>7}  {:<30} {:<10} {:<9} {}  {}",
                    r["id"],
                    r["job_name"].as_str().unwrap_or(""),
                    r["status"].as_str().unwrap_or(""),
                    r["trigger"].as_str().unwrap_or(""),
                    r["created_at"].as_str().unwrap_or(""),
                    why,
                );
            }
        }
        RunsCommand::Show { run } => print(
            &c.json(Method::GET, &format!("/api/v1/runs/{run}"), None)
                .await?,
        ),
        RunsCommand::Cancel { run } => {
            c.json(Method::POST, &format!("/api/v1/runs/{run}/cancel"), None)
                .await?;
            // Cancelling asks the process to stop (SIGTERM, then SIGKILL after
            // the kill grace); report how it actually ended.
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                let v = c
                    .json(Method::GET, &format!("/api/v1/runs/{run}"), None)
                    .await?;
                let status = v["status"].as_str().unwrap_or("unknown");
                if !matches!(status, "queued" | "running") {
                    say!("run {run}: {status}");
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    anyhow::bail!("run {run} is still {status} a minute after the cancel");
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
        RunsCommand::Logs { run, follow: false } => {
            let r = c
                .send(Method::GET, &format!("/api/v1/runs/{run}/output"), None)
                .await?;
            emit(&r.text().await?);
        }
        RunsCommand::Logs { run, follow: true } => follow(&c, run).await?,
    }
    Ok(())
}

/// Streams a run's output (server-sent events: each `data:` line is one
/// output line) until it ends; an error unless it succeeded, so scripts can
/// use the exit code.
async fn follow(c: &Client, run: i64) -> anyhow::Result<()> {
    let r = c
        .send(
            Method::GET,
            &format!("/api/v1/runs/{run}/output/follow"),
            None,
        )
        .await?;
    let mut stream = r.bytes_stream();
    let mut buf = Vec::new();
    let mut event = String::new();
    let mut end = None;
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk?);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if let Some(name) = line.strip_prefix("event:") {
                event = name.trim().to_owned();
            } else if let Some(data) = line.strip_prefix("data:") {
                let data = data.strip_prefix(' ').unwrap_or(data);
                if event == "end" {
                    end = Some(data.to_owned());
                } else {
                    say!("{data}");
                }
            }
        }
    }
    let status = match end {
        Some(s) => s,
        None => c
            .json(Method::GET, &format!("/api/v1/runs/{run}"), None)
            .await?["status"]
            .as_str()
            .unwrap_or("unknown")
            .to_owned(),
    };
    if status != "succeeded" {
        anyhow::bail!("run {run} ended {status}");
    }
    eprintln!("run {run} succeeded");
    Ok(())
}

/// Fields of a job view that are not part of its definition.
const VIEW_ONLY: [&str; 5] = [
    "id",
    "effective_timezone",
    "next_run_at",
    "created_at",
    "updated_at",
];

/// `jobs apply`: create, or replace and show the changed fields.
async fn apply(c: &Client, def: Value) -> anyhow::Result<()> {
    let name = def["name"]
        .as_str()
        .context("the definition has no \"name\": apply finds the job by it")?
        .to_owned();
    let path = format!("/api/v1/jobs/{}", seg(&name));
    let before = match c.json(Method::GET, &path, None).await {
        Ok(v) => v,
        Err(e) if e.to_string().starts_with("404 ") => {
            c.json(Method::POST, "/api/v1/jobs", Some(def)).await?;
            say!("job {name} created");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let after = c.json(Method::PUT, &path, Some(def)).await?;
    let mut changes = vec![];
    diff_fields("", &before, &after, &mut changes);
    if changes.is_empty() {
        say!("job {name} unchanged");
    } else {
        say!("job {name} updated:");
        for ch in changes {
            say!("  {ch}");
        }
    }
    Ok(())
}

/// `path: old -> new` for every leaf that differs, view-only fields aside.
fn diff_fields(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                if path.is_empty() && VIEW_ONLY.contains(&k.as_str()) {
                    continue;
                }
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                diff_fields(
                    &p,
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (x, y) if x != y => out.push(format!("{path}: {x} -> {y}")),
        _ => {}
    }
}

/// A value from `file`, else from a terminal prompt (asked twice, not echoed),
/// else from standard input (saying so, so a waiting pipe is not a mystery).
fn read_value(what: &str, file: Option<&std::path::Path>) -> anyhow::Result<String> {
    use std::io::IsTerminal as _;
    let text = match file {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?
        }
        None if std::io::stdin().is_terminal() => {
            let first = prompt_hidden(&format!("{what}: "))?;
            let again = prompt_hidden(&format!("{what} again: "))?;
            if first != again {
                anyhow::bail!("the two entries differ; nothing was changed");
            }
            first
        }
        None => {
            eprintln!("reading the {what} from standard input");
            std::io::read_to_string(std::io::stdin())?
        }
    };
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

/// Reads a line from the terminal with echo off, restoring it afterwards.
fn prompt_hidden(prompt: &str) -> anyhow::Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    use std::io::Write as _;
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).context("cannot read the terminal's settings")?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet).context("cannot turn off echo")?;
    let mut line = String::new();
    let read = stdin.read_line(&mut line);
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
    read?;
    Ok(line)
}

pub async fn secrets(conn: &Connection, cmd: SecretsCommand) -> anyhow::Result<()> {
    let c = Client::new(conn)?;
    match cmd {
        SecretsCommand::List => {
            let v = c.json(Method::GET, "/api/v1/secrets", None).await?;
            for s in v
                .as_array()
                .or_else(|| v["items"].as_array())
                .into_iter()
                .flatten()
            {
                say!(
                    "{:<40} key {:<3} {}",
                    s["name"].as_str().unwrap_or(""),
                    s["key_version"],
                    s["description"].as_str().unwrap_or(""),
                );
            }
        }
        SecretsCommand::Set {
            name,
            file,
            description,
        } => {
            let value = read_value(&format!("value of {name}"), file.as_deref())?;
            let r = c
                .send(
                    Method::PUT,
                    &format!("/api/v1/secrets/{}", seg(&name)),
                    Some(json!({"value": value, "description": description})),
                )
                .await?;
            say!(
                "secret {name} {}",
                if r.status() == reqwest::StatusCode::CREATED {
                    "created"
                } else {
                    "replaced"
                }
            );
        }
        SecretsCommand::Delete { name } => {
            c.json(
                Method::DELETE,
                &format!("/api/v1/secrets/{}", seg(&name)),
                None,
            )
            .await?;
            say!("secret {name} deleted");
        }
    }
    Ok(())
}

pub async fn tokens(conn: &Connection, cmd: TokensCommand) -> anyhow::Result<()> {
    let c = Client::new(conn)?;
    let v = match cmd {
        TokensCommand::List => c.json(Method::GET, "/api/v1/tokens", None).await?,
        TokensCommand::Create {
            name,
            scopes,
            expires_in,
        } => {
            let mut body = json!({"name": name});
            if !scopes.is_empty() {
                body["scopes"] = json!(scopes);
            }
            if let Some(d) = expires_in {
                let d =
                    humantime::parse_duration(&d).with_context(|| format!("--expires-in {d:?}"))?;
                #[allow(clippy::disallowed_methods)] // the CLI's notion of "now" is the wall clock
                let at = chrono::Utc::now() + chrono::Duration::from_std(d)?;
                body["expires_at"] = json!(at);
            }
            let v = c.json(Method::POST, "/api/v1/tokens", Some(body)).await?;
            eprintln!("Store this token now; it is not shown again.");
            v
        }
        TokensCommand::Revoke { id } => {
            c.json(Method::DELETE, &format!("/api/v1/tokens/{id}"), None)
                .await?
        }
    };
    print(&v);
    Ok(())
}

pub async fn users(conn: &Connection, cmd: UsersCommand) -> anyhow::Result<()> {
    let c = Client::new(conn)?;
    let v = match cmd {
        UsersCommand::List => c.json(Method::GET, "/api/v1/users", None).await?,
        UsersCommand::Show { user } => {
            c.json(Method::GET, &format!("/api/v1/users/{}", seg(&user)), None)
                .await?
        }
        UsersCommand::Create {
            username,
            email,
            roles,
            password_file,
        } => {
            let password = read_value(
                &format!("initial password for {username}"),
                password_file.as_deref(),
            )?;
            c.json(
                Method::POST,
                "/api/v1/users",
                Some(json!({"username": username, "email": email, "roles": roles, "password": password})),
            )
            .await?
        }
        UsersCommand::Delete { user } => {
            c.json(
                Method::DELETE,
                &format!("/api/v1/users/{}", seg(&user)),
                None,
            )
            .await?
        }
    };
    print(&v);
    Ok(())
}

/// Returns false when `verify` found the chain broken.
pub async fn audit(conn: &Connection, cmd: AuditCommand) -> anyhow::Result<bool> {
    let c = Client::new(conn)?;
    match cmd {
        AuditCommand::List {
            actor,
            event,
            target,
            limit,
        } => {
            let mut q = format!("/api/v1/audit?limit={limit}");
            for (k, v) in [("actor", actor), ("event", event), ("target", target)] {
                if let Some(v) = v {
                    q.push_str(&format!("&{k}={}", seg(&v)));
                }
            }
            let v = c.json(Method::GET, &q, None).await?;
            for e in v["items"].as_array().into_iter().flatten() {
                say!(
                    "{:>6}  {}  {:<28} {:<24} {} {}",
                    e["id"],
                    e["at"].as_str().unwrap_or(""),
                    e["event"].as_str().unwrap_or(""),
                    e["target"].as_str().unwrap_or(""),
                    e.pointer("/actor/name")
                        .and_then(Value::as_str)
                        .filter(|n| !n.is_empty())
                        .unwrap_or("-"),
                    e["diff"],
                );
            }
            Ok(true)
        }
        AuditCommand::Export => {
            let r = c.send(Method::GET, "/api/v1/audit/export", None).await?;
            emit(&r.text().await?);
            Ok(true)
        }
        AuditCommand::Verify => {
            let v = c.json(Method::GET, "/api/v1/audit/verify", None).await?;
            match v["problem"].as_str() {
                None => {
                    say!("audit log intact: {} entries", v["entries"]);
                    Ok(true)
                }
                Some(p) => {
                    say!("audit log TAMPERED: {p}");
                    Ok(false)
                }
            }
        }
    }
}

pub async fn keys(conn: &Connection, cmd: KeysCommand) -> anyhow::Result<()> {
    let c = Client::new(conn)?;
    match cmd {
        KeysCommand::Rotate => print(&c.json(Method::POST, "/api/v1/keys/rotate", None).await?),
    }
    Ok(())
}
