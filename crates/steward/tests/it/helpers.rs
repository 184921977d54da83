use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use steward::config::Config;
use steward::{Application, Overrides};
use steward_engine::clock::{Clock, SystemClock};
use steward_engine::runner::JitterFn;

pub struct TestApp {
    pub app: Option<Application>,
    pub base: String,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
}

pub fn config(dir: &std::path::Path) -> Config {
    let mut c = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.join("data"),
        ..Default::default()
    };
    // Tests run as root on CI; most need to write into their temp directory.
    c.executor.run_as_user = Some("root".into());
    c.executor.kill_grace = steward_domain::DurationSpec::from_secs(2);
    c.scheduler.shutdown_grace = steward_domain::DurationSpec::from_secs(2);
    c
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
        let mut c = config(dir.path());
        tweak(&mut c);
        let app = Application::build_with(
            c,
            Overrides {
                clock,
                jitter: no_jitter(),
            },
        )
        .await
        .unwrap();
        let base = format!("http://{}", app.local_addr());
        Self {
            app: Some(app),
            base,
            client: reqwest::Client::new(),
            dir,
        }
    }

    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(app) = self.app.take() {
            app.shutdown().await;
        }
        self.dir
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
