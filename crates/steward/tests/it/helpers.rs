use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use steward::config::Config;
use steward::{Application, Overrides};
use steward_clock::{Clock, SystemClock};
use steward_engine::queue::JitterFn;

pub struct TestApp {
    pub app: Option<Application>,
    pub base: String,
    /// An API token of the admin; `client` sends it.
    pub client: reqwest::Client,
    pub token: String,
    pub dir: tempfile::TempDir,
    /// Fails the test, when the app goes, if a response broke the OpenAPI document.
    pub _contract: ContractGuard,
}

pub struct ContractGuard;

impl Drop for ContractGuard {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            crate::contract::Contract::global().assert_clean();
        }
    }
}

/// The first admin's password in tests, and the one it is changed to.
pub const BOOTSTRAP_PASSWORD: &str = "bootstrap only, change me at once";
pub const ADMIN_PASSWORD: &str = "violet tractor forgets seven lanterns";

/// Signs in as `user` and returns (cookie header value, csrf token, body).
pub async fn sign_in(base: &str, user: &str, password: &str) -> (u16, Option<String>, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/auth/sign-in"))
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let cookie = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    (status, cookie, r.json().await.unwrap_or(Value::Null))
}

/// A client for a session: cookie and CSRF token on every request.
pub fn session_client(cookie: &str, csrf: &str) -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("cookie", cookie.parse().unwrap());
    h.insert("x-csrf-token", csrf.parse().unwrap());
    reqwest::Client::builder()
        .default_headers(h)
        .user_agent("steward-tests")
        .build()
        .unwrap()
}

pub fn token_client(token: &str) -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("authorization", format!("Bearer {token}").parse().unwrap());
    reqwest::Client::builder()
        .default_headers(h)
        .user_agent("steward-tests")
        .build()
        .unwrap()
}

/// Takes the first admin through its first sign-in (password change) if
/// needed and returns an API token with all of admin's permissions.
pub async fn admin_token(base: &str) -> String {
    let (mut status, mut cookie, mut body) = sign_in(base, "admin", ADMIN_PASSWORD).await;
    if status == 401 {
        (status, cookie, body) = sign_in(base, "admin", BOOTSTRAP_PASSWORD).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["must_change_password"], true);
        let c = session_client(
            cookie.as_deref().unwrap(),
            body["csrf_token"].as_str().unwrap(),
        );
        let r = c
            .post(format!("{base}/api/v1/auth/password"))
            .json(&json!({"current_password": BOOTSTRAP_PASSWORD, "new_password": ADMIN_PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    }
    assert_eq!(status, 200, "{body}");
    let c = session_client(
        cookie.as_deref().unwrap(),
        body["csrf_token"].as_str().unwrap(),
    );
    let r = c
        .post(format!("{base}/api/v1/tokens"))
        .json(&json!({"name": "tests"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    v["secret"].as_str().unwrap().to_owned()
}

/// Which database the integration suite gives Steward: `STEWARD_TEST_BACKEND`
/// is `sqlite` (the default, the data directory's own file) or `postgres`.
pub fn on_postgres() -> bool {
    match std::env::var("STEWARD_TEST_BACKEND").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("STEWARD_TEST_BACKEND={other:?}: expected sqlite or postgres"),
    }
}

/// On PostgreSQL, the URL of the database of the test directory `dir`: made
/// on the shared test cluster on first use and kept in `dir/pg.url`, so a
/// restart in the same directory (in-process or the real binary) finds the
/// same records.
pub fn postgres_url(dir: &std::path::Path) -> Option<String> {
    if !on_postgres() {
        return None;
    }
    let file = dir.join("pg.url");
    if let Ok(url) = std::fs::read_to_string(&file) {
        return Some(url);
    }
    // Tests call this from inside their runtime: create on a thread of its own.
    let url = std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(steward_testkit::Cluster::shared().create_database())
    })
    .join()
    .unwrap();
    std::fs::write(&file, &url).unwrap();
    Some(url)
}

/// The environment that points a spawned `steward` at the test's database
/// (nothing on SQLite: the data directory says it all). `data` is the data
/// directory, inside the test directory.
pub fn database_env(data: &std::path::Path) -> Vec<(&'static str, String)> {
    postgres_url(data.parent().unwrap())
        .map(|url| ("STEWARD_DATABASE_URL", url))
        .into_iter()
        .collect()
}

pub fn config(dir: &std::path::Path) -> Config {
    let mut c = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.join("data"),
        ..Default::default()
    };
    c.database.url = postgres_url(dir).map(Into::into);
    // Tests run as root on CI; most need to write into their temp directory.
    c.executor.run_as_user = Some("root".into());
    c.executor.kill_grace = steward_domain::DurationSpec::from_secs(2);
    c.scheduler.shutdown_grace = steward_domain::DurationSpec::from_secs(2);
    c.auth.bootstrap_admin_password = Some(BOOTSTRAP_PASSWORD.into());
    // Tests poll hard; the rate-limit tests turn it back on.
    c.api.rate_limit_per_second = 0;
    c
}

/// `dir/work`, created: where jobs of a test write their files.
pub fn work_dir(dir: &std::path::Path) -> std::path::PathBuf {
    let w = dir.join("work");
    std::fs::create_dir_all(&w).unwrap();
    w
}

pub fn no_jitter() -> JitterFn {
    Arc::new(|_| Duration::ZERO)
}

impl TestApp {
    pub async fn start() -> Self {
        Self::start_with(|_| {}, Arc::new(SystemClock)).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config), clock: Arc<dyn Clock>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, tweak, clock).await
    }

    pub async fn start_in(
        dir: tempfile::TempDir,
        tweak: impl FnOnce(&mut Config),
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self::start_with_kinds(dir, tweak, clock, Vec::new()).await
    }

    /// A Steward that also runs `kinds` (job kinds the suite defines).
    pub async fn start_with_kinds(
        dir: tempfile::TempDir,
        tweak: impl FnOnce(&mut Config),
        clock: Arc<dyn Clock>,
        kinds: Vec<Arc<dyn steward_engine::kinds::JobKind>>,
    ) -> Self {
        let mut c = config(dir.path());
        tweak(&mut c);
        let app = Application::build_with(
            c,
            Overrides {
                clock,
                jitter: no_jitter(),
                sandbox_helper: Some(env!("CARGO_BIN_EXE_steward").into()),
                response_observer: Some(crate::contract::Contract::observer()),
                kinds,
            },
        )
        .await
        .unwrap();
        let base = format!("http://{}", app.local_addr());
        let token = admin_token(&base).await;
        Self {
            app: Some(app),
            base,
            client: token_client(&token),
            token,
            dir,
            _contract: ContractGuard,
        }
    }

    /// A client of a Steward started elsewhere (another process).
    pub fn attach(base: String, token: String) -> Self {
        Self {
            app: None,
            base,
            client: token_client(&token),
            token,
            dir: tempfile::tempdir().unwrap(),
            _contract: ContractGuard,
        }
    }

    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(app) = self.app.take() {
            app.shutdown().await;
        }
        self.dir
    }

    /// A directory jobs may write to. Not the test directory itself: that holds
    /// the data directory, and the sandbox lets jobs only list the directories
    /// on the way to it.
    pub fn work(&self) -> std::path::PathBuf {
        work_dir(self.dir.path())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn text(&self, path: &str) -> String {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn create_job(&self, def: Value) -> Value {
        let (status, body) = self.post("/api/v1/jobs", def).await;
        assert_eq!(status, 201, "{body}");
        body
    }

    pub async fn command_job(&self, name: &str, argv: &[&str], extra: Value) -> Value {
        let mut def = json!({"name": name, "spec": {"kind": "command", "argv": argv}});
        merge(&mut def, extra);
        self.create_job(def).await
    }

    /// Polls until the run is in a final state.
    pub async fn wait_run(&self, id: i64, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (_, run) = self.get(&format!("/api/v1/runs/{id}")).await;
            let st = run["status"].as_str().unwrap_or("");
            if !matches!(st, "queued" | "running") {
                return run;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "run {id} still {st}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Polls until the run has the status `want`.
    pub async fn wait_status(&self, id: i64, want: &str, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (_, run) = self.get(&format!("/api/v1/runs/{id}")).await;
            if run["status"] == want {
                return run;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "run {id} is {} after {within:?}, not {want}",
                run["status"]
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn runs_of(&self, job: &str) -> Vec<Value> {
        let (_, body) = self.get(&format!("/api/v1/runs?job={job}&limit=500")).await;
        body["items"].as_array().cloned().unwrap_or_default()
    }

    /// Polls until `f` holds for the job's runs.
    pub async fn wait_runs(
        &self,
        job: &str,
        within: Duration,
        f: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let runs = self.runs_of(job).await;
            if f(&runs) {
                return runs;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "condition not met; runs: {runs:#?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

pub fn merge(a: &mut Value, b: Value) {
    if let (Value::Object(a), Value::Object(b)) = (a, b) {
        for (k, v) in b {
            a.insert(k, v);
        }
    }
}

/// Whether a process with this pid exists (and is not a zombie).
/// Waits until `pid` is gone (or a zombie), up to 5 s.
pub async fn gone(pid: i32) -> bool {
    for _ in 0..200 {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// Waits for a job to write its pid into `path`.
pub async fn wait_pid(path: &std::path::Path) -> i32 {
    for _ in 0..400 {
        if let Ok(p) = std::fs::read_to_string(path) {
            if let Ok(pid) = p.trim().parse() {
                return pid;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no pid written to {}", path.display());
}

/// Reads a starting server's JSON log until it says where it serves; keeps
/// draining the rest so the server never blocks on a full pipe.
pub fn serving_base(stdout: std::process::ChildStdout) -> String {
    use std::io::BufRead as _;
    let mut lines = std::io::BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines.next().expect("server exited before serving").unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if v["fields"]["message"] == "steward is serving" {
            break v["fields"]["addr"].as_str().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    format!("http://{addr}")
}

pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// A user's ways in: an API token and a signed-in session.
pub struct Account {
    pub name: String,
    pub password: String,
    pub token: String,
    pub cookie: String,
    pub csrf: String,
}

impl TestApp {
    /// Sends `method path` with `client` and an optional JSON body.
    pub async fn call(
        &self,
        client: &reqwest::Client,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = client.request(method.parse().unwrap(), self.url(path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Creates `name` with `roles`, takes it through the first sign-in and
    /// password change, and gives it a token.
    pub async fn account(&self, name: &str, roles: &[&str]) -> Account {
        let initial = format!("initial {name} password, change it");
        let (s, body) = self
            .post(
                "/api/v1/users",
                json!({"username": name, "password": initial, "roles": roles, "email": format!("{name}@example.test")}),
            )
            .await;
        assert_eq!(s, 201, "{body}");
        let (s, cookie, body) = sign_in(&self.base, name, &initial).await;
        assert_eq!(s, 200, "{body}");
        let c = session_client(
            cookie.as_deref().unwrap(),
            body["csrf_token"].as_str().unwrap(),
        );
        let password = format!("{name} rides a purple bicycle at dawn");
        let (s, body) = self
            .call(
                &c,
                "POST",
                "/api/v1/auth/password",
                Some(json!({"current_password": initial, "new_password": password})),
            )
            .await;
        assert_eq!(s, 204, "{body}");
        let (s, body) = self
            .call(&c, "POST", "/api/v1/tokens", Some(json!({"name": "t"})))
            .await;
        // Without any role there is nothing to scope a token to.
        assert_eq!(s, if roles.is_empty() { 422 } else { 201 }, "{body}");
        Account {
            name: name.into(),
            password,
            token: body["secret"].as_str().unwrap_or_default().into(),
            cookie: cookie.unwrap(),
            csrf: String::new(),
        }
        .with_csrf(&self.base)
        .await
    }
}

impl Account {
    /// The first admin (its password already changed by `TestApp::start`).
    pub async fn admin(t: &TestApp) -> Self {
        let (s, cookie, body) = sign_in(&t.base, "admin", ADMIN_PASSWORD).await;
        assert_eq!(s, 200, "{body}");
        Account {
            name: "admin".into(),
            password: ADMIN_PASSWORD.into(),
            token: t.token.clone(),
            cookie: cookie.unwrap(),
            csrf: body["csrf_token"].as_str().unwrap().into(),
        }
    }

    async fn with_csrf(mut self, base: &str) -> Self {
        let r = reqwest::Client::new()
            .get(format!("{base}/api/v1/auth/me"))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        self.csrf = v["csrf_token"].as_str().unwrap().into();
        self
    }

    pub fn token_client(&self) -> reqwest::Client {
        token_client(&self.token)
    }

    pub fn session_client(&self) -> reqwest::Client {
        session_client(&self.cookie, &self.csrf)
    }

    /// A client with a session of its own (signing it out leaves the others).
    pub async fn new_session(&self, base: &str) -> reqwest::Client {
        let (s, cookie, body) = sign_in(base, &self.name, &self.password).await;
        assert_eq!(s, 200, "{body}");
        session_client(
            cookie.as_deref().unwrap(),
            body["csrf_token"].as_str().unwrap(),
        )
    }
}

/// Runs `sql` on the test directory `dir`'s database as its owner would (the
/// SQLite file, or PostgreSQL's superuser): how the tests tamper behind
/// Steward's back.
pub async fn owner_sql(dir: &std::path::Path, sql: &str) -> Result<(), String> {
    let done = match postgres_url(dir) {
        Some(url) => {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            let r = sqlx::raw_sql(sql).execute(&pool).await.map(|_| ());
            pool.close().await;
            r
        }
        None => {
            let url = format!("sqlite://{}", dir.join("data/steward.db").display());
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            let r = sqlx::raw_sql(sql).execute(&pool).await.map(|_| ());
            pool.close().await;
            r
        }
    };
    done.map_err(|e| e.to_string())
}

/// SQL that removes the audit log's append-only guards (what an attacker
/// with the database owner's rights does first).
pub fn drop_audit_guards() -> &'static str {
    if on_postgres() {
        "ALTER TABLE audit_log DISABLE TRIGGER USER"
    } else {
        "DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;"
    }
}

/// Everything the test's database holds at rest, as bytes to search: the
/// SQLite file and its WAL, or every row of every table on PostgreSQL.
pub async fn stored_bytes(dir: &std::path::Path) -> Vec<u8> {
    match postgres_url(dir) {
        Some(url) => {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            let mut all = Vec::new();
            for t in tables {
                let rows: Vec<String> =
                    sqlx::query_scalar(&format!("SELECT row_to_json(t)::text FROM \"{t}\" t"))
                        .fetch_all(&pool)
                        .await
                        .unwrap();
                for r in rows {
                    all.extend_from_slice(r.as_bytes());
                }
            }
            pool.close().await;
            assert!(!all.is_empty(), "the database holds rows");
            all
        }
        None => {
            let mut all = std::fs::read(dir.join("data/steward.db")).unwrap();
            all.extend(std::fs::read(dir.join("data/steward.db-wal")).unwrap_or_default());
            all
        }
    }
}

/// Writes, on `tx`, a manual run of job `job` claimed by `node` until
/// `until`: what a node running it elsewhere (or a process that died)
/// leaves in the store.
pub async fn claimed_elsewhere(
    tx: &mut dyn steward_store::WriteTx,
    job: &Value,
    node: &str,
    now: chrono::DateTime<chrono::Utc>,
    until: chrono::DateTime<chrono::Utc>,
) -> steward_store::Run {
    let run = tx
        .insert_run(&steward_store::NewRun {
            job_id: steward_domain::JobId(job["id"].as_i64().unwrap()),
            job_name: steward_domain::JobName::parse(job["name"].as_str().unwrap()).unwrap(),
            status: steward_domain::RunStatus::Queued,
            trigger: steward_domain::Trigger::Manual,
            scheduled_for: None,
            not_before: None,
            attempt: 1,
            parent_run_id: None,
            created_at: now,
            start_deadline: None,
            error: None,
        })
        .await
        .unwrap();
    assert!(tx.claim_run(run.id, node, now, until).await.unwrap());
    run
}
