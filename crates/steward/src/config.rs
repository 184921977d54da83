//! Configuration: an optional `steward.toml`, then `STEWARD_*` environment
//! variables on top; secret settings also accept `*_FILE`. Unknown keys are errors.

use ipnet::IpNet;
use secrecy::SecretString;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use steward_domain::{DurationSpec, TimeZone};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// Directory holding the database (and, later, keys and artifacts).
    pub data_dir: PathBuf,
    /// Default time zone for job schedules.
    pub timezone: TimeZone,
    pub log: LogConfig,
    pub scheduler: SchedulerConfig,
    pub executor: ExecutorConfig,
    pub outbound: OutboundConfig,
    pub api: ApiConfig,
    pub metrics: MetricsConfig,
    pub database: DatabaseConfig,
    pub server: ServerConfig,
    pub auth: AuthConfig,
    /// The file this configuration was read from (jobs may not read it).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The address users reach Steward at, e.g. `https://steward.example.org`:
    /// used in mailed links; `https` turns on Secure cookies and HSTS.
    pub public_url: Option<url::Url>,
    /// Host names requests may be addressed to, beside the loopback names and
    /// the public URL's host. `["*"]` accepts any (authentication still applies).
    pub allowed_hosts: Vec<String>,
    /// Proxies whose X-Forwarded-For is believed (addresses or networks).
    #[serde(deserialize_with = "nets")]
    pub trusted_proxies: Vec<IpNet>,
    /// Force the Secure cookie flag (default: on when public_url is https).
    pub secure_cookies: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// A session unused this long ends (sliding).
    pub session_idle: DurationSpec,
    /// A session ends this long after sign-in, whatever its use.
    pub session_lifetime: DurationSpec,
    /// Password of the first `admin` (else one is generated and logged once).
    pub bootstrap_admin_password: Option<SecretString>,
    pub bootstrap_admin_password_file: Option<PathBuf>,
    /// Key file sealing stored credentials (default DATA_DIR/steward.key,
    /// created on first start). An explicit file must exist.
    pub master_key_file: Option<PathBuf>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            session_idle: DurationSpec::from_secs(12 * 3600),
            session_lifetime: DurationSpec::from_secs(7 * 24 * 3600),
            bootstrap_admin_password: None,
            bootstrap_admin_password_file: None,
            master_key_file: None,
        }
    }
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter such as `info` or `steward=debug,info`.
    pub level: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// On SIGTERM, how long running work may continue before it is cancelled.
    pub shutdown_grace: DurationSpec,
    /// How long before its instant a scheduled run is recorded, claimed and
    /// prepared (its process made, waiting to `exec` at the instant); 0 s
    /// turns preparing ahead off.
    pub prepare_ahead: DurationSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorConfig {
    /// Bytes of output kept per run (head and tail), at least 1024.
    pub output_limit: u64,
    /// Between SIGTERM and SIGKILL.
    pub kill_grace: DurationSpec,
    /// Runs executing at once on this node, at most; the rest wait queued
    /// (in the database, in order) until a place is free.
    pub max_active_runs: usize,
    /// This node's name in run claims; default the host name. Keep it stable
    /// across restarts: a restarted node takes back what it had claimed at
    /// once, where other nodes' runs are rescued when their lease runs out.
    pub node_name: Option<String>,
    /// Account commands run as when Steward runs as root (default `nobody`).
    pub run_as_user: Option<String>,
    /// Working directory of commands that do not set one (default `/`).
    pub workdir: Option<String>,
    /// Run command jobs even where Landlock cannot hide Steward's own files
    /// from them (an old kernel, with jobs running as Steward's own user): they
    /// could then read the key file and the database. Off by default.
    pub allow_unisolated_commands: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// Networks that outbound calls may reach although a rule refuses them,
    /// e.g. `["127.0.0.1/32"]` or just `["127.0.0.1"]` for a local service.
    #[serde(deserialize_with = "nets")]
    pub allow: Vec<IpNet>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// API requests per second per token, session or client address; 0 turns
    /// the limit off.
    pub rate_limit_per_second: u32,
    /// Requests allowed in a burst above the rate.
    pub rate_limit_burst: u32,
    /// Clients following run output at once (each costs a socket and one
    /// batch of output), in total and per user.
    pub max_followers: usize,
    pub max_followers_per_user: usize,
    /// Bytes per second all followers together may send (0: no limit), so
    /// a crowd of readers cannot take the machine from the rest of the API.
    pub follow_bytes_per_second: u64,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Bearer token required by `/metrics`; unset means open (it is loopback-only for now).
    pub token: Option<SecretString>,
    pub token_file: Option<PathBuf>,
}

/// Where Steward keeps its records. Unset: the embedded SQLite database in
/// `data_dir`. A PostgreSQL URL (`postgres://user:password@host:5432/steward`)
/// selects PostgreSQL; the data directory still holds the key file, the audit
/// head anchor and the lock.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// The connection URL; it holds a password, so it is kept as a secret and
    /// never printed.
    pub url: Option<SecretString>,
    /// A file holding the URL (for container secrets).
    pub url_file: Option<PathBuf>,
}

/// A network in CIDR form, or a single address (taken as /32 or /128).
fn parse_net(s: &str) -> Result<IpNet, String> {
    let t = s.trim();
    t.parse::<IpNet>()
        .or_else(|_| t.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not an IP address or network like \"10.0.0.0/8\""))
}

fn nets<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| parse_net(s).map_err(serde::de::Error::custom))
        .collect()
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./steward-data"),
            timezone: TimeZone::UTC,
            log: LogConfig::default(),
            scheduler: SchedulerConfig::default(),
            executor: ExecutorConfig::default(),
            outbound: OutboundConfig::default(),
            api: ApiConfig::default(),
            metrics: MetricsConfig::default(),
            database: DatabaseConfig::default(),
            server: ServerConfig::default(),
            auth: AuthConfig::default(),
            source: None,
        }
    }
}
impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}
impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            // Fits `docker stop` (10 s): 5 s for running work, then SIGTERM
            // and at most 2 s before SIGKILL, and the records are written.
            shutdown_grace: DurationSpec::from_secs(5),
            prepare_ahead: DurationSpec::from(steward_engine::queue::PREPARE_AHEAD),
        }
    }
}
impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            output_limit: 4 * 1024 * 1024,
            kill_grace: DurationSpec::from_secs(10),
            max_active_runs: 1000,
            node_name: None,
            run_as_user: None,
            allow_unisolated_commands: false,
            workdir: None,
        }
    }
}
impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            rate_limit_per_second: 50,
            rate_limit_burst: 200,
            max_followers: 256,
            max_followers_per_user: 16,
            follow_bytes_per_second: 32 * 1024 * 1024,
        }
    }
}

/// A configuration problem, naming the key (file) or variable (environment).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

impl Config {
    /// Parses a TOML file. Syntax, type and unknown-key errors name the key and line.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        // toml's own Display quotes the offending line, which may hold a
        // password (database.url, metrics.token): name the line, not its text.
        toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            ConfigError::Parse {
                path: path.into(),
                message: match line {
                    Some(l) => format!("line {l}: {}", e.message().trim_end()),
                    None => e.message().trim_end().to_owned(),
                },
            }
        })
    }

    /// File (if given, else `./steward.toml` if present), then the environment.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let source = match file {
            Some(p) => Some(p.to_path_buf()),
            None if Path::new("steward.toml").exists() => Some(PathBuf::from("steward.toml")),
            None => None,
        };
        let mut cfg = match &source {
            Some(p) => Self::from_file(p)?,
            None => Self::default(),
        };
        cfg.source = source;
        cfg.apply_env(env)?;
        Ok(cfg)
    }

    /// `STEWARD_*` variables override the file. Each names itself in its error.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn parse<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            v.trim()
                .parse()
                .map_err(|e| invalid(key, format!("{v:?}: {e}")))
        }
        let dur = |key: &str, v: &str| DurationSpec::parse(v).map_err(|e| invalid(key, e.message));
        if let Some(v) = env("STEWARD_LISTEN") {
            self.listen = parse("STEWARD_LISTEN", &v)?;
        }
        if let Some(v) = env("STEWARD_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = env("STEWARD_TIMEZONE") {
            self.timezone =
                TimeZone::parse(&v).map_err(|e| invalid("STEWARD_TIMEZONE", e.message))?;
        }
        if let Some(v) = env("STEWARD_LOG_FORMAT") {
            self.log.format = match v.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => {
                    return Err(invalid(
                        "STEWARD_LOG_FORMAT",
                        format!("{v:?} is not text or json"),
                    ))
                }
            };
        }
        if let Some(v) = env("STEWARD_LOG_LEVEL") {
            self.log.level = v;
        }
        if let Some(v) = env("STEWARD_SHUTDOWN_GRACE") {
            self.scheduler.shutdown_grace = dur("STEWARD_SHUTDOWN_GRACE", &v)?;
        }
        if let Some(v) = env("STEWARD_PREPARE_AHEAD") {
            self.scheduler.prepare_ahead = dur("STEWARD_PREPARE_AHEAD", &v)?;
        }
        if let Some(v) = env("STEWARD_OUTPUT_LIMIT") {
            self.executor.output_limit = parse("STEWARD_OUTPUT_LIMIT", &v)?;
        }
        if let Some(v) = env("STEWARD_KILL_GRACE") {
            self.executor.kill_grace = dur("STEWARD_KILL_GRACE", &v)?;
        }
        if let Some(v) = env("STEWARD_MAX_ACTIVE_RUNS") {
            self.executor.max_active_runs = parse("STEWARD_MAX_ACTIVE_RUNS", &v)?;
        }
        if let Some(v) = env("STEWARD_NODE_NAME") {
            self.executor.node_name = Some(v);
        }
        if let Some(v) = env("STEWARD_RUN_AS_USER") {
            self.executor.run_as_user = Some(v);
        }
        if let Some(v) = env("STEWARD_ALLOW_UNISOLATED_COMMANDS") {
            self.executor.allow_unisolated_commands =
                parse("STEWARD_ALLOW_UNISOLATED_COMMANDS", &v)?;
        }
        if let Some(v) = env("STEWARD_WORKDIR") {
            self.executor.workdir = Some(v);
        }
        if let Some(v) = env("STEWARD_OUTBOUND_ALLOW") {
            self.outbound.allow = v
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| parse_net(s).map_err(|e| invalid("STEWARD_OUTBOUND_ALLOW", e)))
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = env("STEWARD_MAX_BODY_BYTES") {
            self.api.max_body_bytes = parse("STEWARD_MAX_BODY_BYTES", &v)?;
        }
        if let Some(v) = env("STEWARD_MAX_FOLLOWERS") {
            self.api.max_followers = parse("STEWARD_MAX_FOLLOWERS", &v)?;
        }
        if let Some(v) = env("STEWARD_FOLLOW_BYTES_PER_SECOND") {
            self.api.follow_bytes_per_second = parse("STEWARD_FOLLOW_BYTES_PER_SECOND", &v)?;
        }
        if let Some(v) = env("STEWARD_MAX_FOLLOWERS_PER_USER") {
            self.api.max_followers_per_user = parse("STEWARD_MAX_FOLLOWERS_PER_USER", &v)?;
        }
        if let Some(v) = env("STEWARD_PUBLIC_URL") {
            self.server.public_url = Some(parse("STEWARD_PUBLIC_URL", &v)?);
        }
        if let Some(v) = env("STEWARD_ALLOWED_HOSTS") {
            self.server.allowed_hosts = v
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
        }
        if let Some(v) = env("STEWARD_TRUSTED_PROXIES") {
            self.server.trusted_proxies = v
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| parse_net(s).map_err(|e| invalid("STEWARD_TRUSTED_PROXIES", e)))
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = env("STEWARD_SECURE_COOKIES") {
            self.server.secure_cookies = Some(parse("STEWARD_SECURE_COOKIES", &v)?);
        }
        if let Some(v) = env("STEWARD_SESSION_IDLE") {
            self.auth.session_idle = dur("STEWARD_SESSION_IDLE", &v)?;
        }
        if let Some(v) = env("STEWARD_SESSION_LIFETIME") {
            self.auth.session_lifetime = dur("STEWARD_SESSION_LIFETIME", &v)?;
        }
        if let Some(v) = env("STEWARD_BOOTSTRAP_ADMIN_PASSWORD") {
            self.auth.bootstrap_admin_password = Some(SecretString::from(v));
        }
        if let Some(v) = env("STEWARD_BOOTSTRAP_ADMIN_PASSWORD_FILE") {
            self.auth.bootstrap_admin_password_file = Some(PathBuf::from(v));
        }
        if let Some(v) = env("STEWARD_MASTER_KEY_FILE") {
            self.auth.master_key_file = Some(PathBuf::from(v));
        }
        if let Some(v) = env("STEWARD_API_RATE_LIMIT") {
            self.api.rate_limit_per_second = parse("STEWARD_API_RATE_LIMIT", &v)?;
        }
        if let Some(v) = env("STEWARD_METRICS_TOKEN") {
            self.metrics.token = Some(SecretString::from(v));
        }
        if let Some(v) = env("STEWARD_METRICS_TOKEN_FILE") {
            self.metrics.token_file = Some(PathBuf::from(v));
        }
        if let Some(v) = env("STEWARD_DATABASE_URL") {
            self.database.url = Some(SecretString::from(v));
        }
        if let Some(v) = env("STEWARD_DATABASE_URL_FILE") {
            self.database.url_file = Some(PathBuf::from(v));
        }
        Ok(())
    }

    /// Rules beyond types; collects every problem.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errs = vec![];
        if self.executor.output_limit < 1024 {
            errs.push(invalid(
                "executor.output_limit",
                "must be at least 1024 bytes",
            ));
        }
        if self.executor.output_limit > 256 * 1024 * 1024 {
            errs.push(invalid("executor.output_limit", "must be at most 256 MiB"));
        }
        // The supervisor waits at most 10 s for an instant.
        if self.scheduler.prepare_ahead.get() > std::time::Duration::from_secs(5) {
            errs.push(invalid(
                "scheduler.prepare_ahead",
                "must be at most 5s (0s turns preparing ahead off)",
            ));
        }
        if !(1..=1_000_000).contains(&self.executor.max_active_runs) {
            errs.push(invalid(
                "executor.max_active_runs",
                "must be between 1 and 1000000",
            ));
        }
        if let Some(name) = &self.executor.node_name {
            let ok = (1..=64).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !ok {
                errs.push(invalid(
                    "executor.node_name",
                    "must be 1 to 64 letters, digits, '.', '_' or '-'",
                ));
            }
        }
        if self.executor.kill_grace.get().is_zero() {
            errs.push(invalid("executor.kill_grace", "must be greater than zero"));
        }
        if let Some(dir) = &self.executor.workdir {
            if !dir.starts_with('/') {
                errs.push(invalid("executor.workdir", "must be an absolute path"));
            }
        }
        if (1..64 * 1024).contains(&self.api.follow_bytes_per_second) {
            errs.push(invalid(
                "api.follow_bytes_per_second",
                "must be 0 (no limit) or at least 65536",
            ));
        }
        if !(1..=100_000).contains(&self.api.max_followers) {
            errs.push(invalid("api.max_followers", "must be between 1 and 100000"));
        }
        if !(1..=self.api.max_followers.max(1)).contains(&self.api.max_followers_per_user) {
            errs.push(invalid(
                "api.max_followers_per_user",
                "must be between 1 and api.max_followers",
            ));
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.api.max_body_bytes) {
            errs.push(invalid(
                "api.max_body_bytes",
                "must be between 1 KiB and 64 MiB",
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            errs.push(invalid(
                "log.level",
                format!(
                    "{:?} is not a valid filter such as \"info\"",
                    self.log.level
                ),
            ));
        }
        if self.metrics.token.is_some() && self.metrics.token_file.is_some() {
            errs.push(invalid(
                "metrics.token_file",
                "set either metrics.token or metrics.token_file, not both",
            ));
        }
        if self.auth.session_idle.get() < std::time::Duration::from_secs(60) {
            errs.push(invalid("auth.session_idle", "must be at least 1 minute"));
        }
        if self.auth.session_lifetime.get() < self.auth.session_idle.get() {
            errs.push(invalid(
                "auth.session_lifetime",
                "must not be shorter than auth.session_idle",
            ));
        }
        if self.auth.bootstrap_admin_password.is_some()
            && self.auth.bootstrap_admin_password_file.is_some()
        {
            errs.push(invalid(
                "auth.bootstrap_admin_password_file",
                "set either auth.bootstrap_admin_password or its _file, not both",
            ));
        }
        if let Some(u) = &self.server.public_url {
            if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
                errs.push(invalid(
                    "server.public_url",
                    "must be an http(s) URL with a host",
                ));
            }
        }
        if self.api.rate_limit_per_second > 0 && self.api.rate_limit_burst == 0 {
            errs.push(invalid(
                "api.rate_limit_burst",
                "must be at least 1 when the rate limit is on",
            ));
        }
        errs
    }

    /// Host names served: loopback names, the public URL's host, the list.
    /// Listening beyond loopback with neither configured accepts any Host.
    pub fn allowed_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into()];
        if let Some(h) = self.server.public_url.as_ref().and_then(|u| u.host_str()) {
            hosts.push(h.to_owned());
        }
        hosts.extend(self.server.allowed_hosts.iter().cloned());
        if !self.listen.ip().is_loopback()
            && self.server.public_url.is_none()
            && self.server.allowed_hosts.is_empty()
        {
            hosts.push("*".into());
        }
        hosts
    }

    pub fn secure_cookies(&self) -> bool {
        self.server.secure_cookies.unwrap_or_else(|| {
            self.server
                .public_url
                .as_ref()
                .is_some_and(|u| u.scheme() == "https")
        })
    }

    /// The bootstrap password, from the setting or the file it names.
    pub fn bootstrap_password(&self) -> Result<Option<SecretString>, ConfigError> {
        if let Some(p) = &self.auth.bootstrap_admin_password {
            return Ok(Some(p.clone()));
        }
        self.auth
            .bootstrap_admin_password_file
            .as_ref()
            .map(|p| read_secret_file(p))
            .transpose()
    }

    /// What `validate` cannot see from the values alone: the accounts,
    /// directories and files they name, on this machine. `steward config check`
    /// and the start both run it, so a check that passes does not fail at run time.
    pub fn check_environment(&self) -> Vec<ConfigError> {
        let mut errs = vec![];
        if let Some(name) = &self.executor.run_as_user {
            match nix::unistd::User::from_name(name) {
                Ok(Some(_)) => {}
                Ok(None) => errs.push(invalid(
                    "executor.run_as_user",
                    format!("no user {name:?} on this machine"),
                )),
                Err(e) => errs.push(invalid(
                    "executor.run_as_user",
                    format!("cannot look up {name:?}: {e}"),
                )),
            }
        }
        if let Some(dir) = &self.executor.workdir {
            if !Path::new(dir).is_dir() {
                errs.push(invalid(
                    "executor.workdir",
                    format!("{dir:?} is not an existing directory"),
                ));
            }
        }
        match self.metrics_token() {
            Ok(Some(t))
                if secrecy::ExposeSecret::expose_secret(&t).chars().count() < MIN_METRICS_TOKEN =>
            {
                let key = if self.metrics.token.is_some() {
                    "metrics.token"
                } else {
                    "metrics.token_file"
                };
                errs.push(invalid(
                    key,
                    format!("the token must be at least {MIN_METRICS_TOKEN} characters"),
                ));
            }
            Ok(_) => {}
            Err(e) => errs.push(invalid("metrics.token_file", e.to_string())),
        }
        if self.database.url.is_some() && self.database.url_file.is_some() {
            errs.push(invalid(
                "database.url_file",
                "set either database.url or database.url_file, not both",
            ));
        }
        match self.database_url() {
            Ok(Some(url)) => {
                let url = secrecy::ExposeSecret::expose_secret(&url);
                let key = if self.database.url.is_some() {
                    "database.url"
                } else {
                    "database.url_file"
                };
                // The URL is never repeated: it holds a password.
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    errs.push(invalid(
                        key,
                        "must be a PostgreSQL URL (postgres://USER:PASSWORD@HOST:PORT/DATABASE); leave it unset for the embedded SQLite database",
                    ));
                } else if url::Url::parse(url).is_err() {
                    errs.push(invalid(
                        key,
                        "is not a valid URL (a password with reserved characters must be percent-encoded)",
                    ));
                }
            }
            Ok(None) => {}
            Err(e) => errs.push(invalid("database.url_file", e.to_string())),
        }
        if let Err(e) = self.bootstrap_password() {
            errs.push(invalid("auth.bootstrap_admin_password_file", e.to_string()));
        }
        if let Some(f) = &self.auth.master_key_file {
            if !f.is_file() {
                errs.push(invalid(
                    "auth.master_key_file",
                    format!(
                        "{} does not exist (it is never created for you)",
                        f.display()
                    ),
                ));
            }
        }
        errs
    }

    /// The metrics token, from `metrics.token` or the file it names.
    pub fn metrics_token(&self) -> Result<Option<SecretString>, ConfigError> {
        if let Some(t) = &self.metrics.token {
            return Ok(Some(t.clone()));
        }
        self.metrics
            .token_file
            .as_ref()
            .map(|p| read_secret_file(p))
            .transpose()
    }
}

impl Config {
    /// The PostgreSQL URL, from `database.url` or the file it names; `None`
    /// for the embedded SQLite database.
    pub fn database_url(&self) -> Result<Option<SecretString>, ConfigError> {
        if let Some(u) = &self.database.url {
            return Ok(Some(u.clone()));
        }
        self.database
            .url_file
            .as_ref()
            .map(|p| read_secret_file(p))
            .transpose()
    }
}

/// Shorter metrics tokens are guessable.
const MIN_METRICS_TOKEN: usize = 16;

fn read_secret_file(p: &Path) -> Result<SecretString, ConfigError> {
    let v = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
        path: p.to_owned(),
        source,
    })?;
    Ok(SecretString::from(
        v.trim_end_matches(['\n', '\r']).to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        toml::from_str::<Config>(text).map_err(|e| e.to_string())
    }

    #[test]
    fn a_syntax_error_names_its_line_without_quoting_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("steward.toml");
        std::fs::write(
            &p,
            "listen = \"127.0.0.1:8080\"\n[database]\nurl = \"postgres://u:hunter2\\q@db/steward\"\n",
        )
        .unwrap();
        let e = Config::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("line 3"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn database_url_from_env_or_file_and_checked_without_repeating_it() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("url");
        std::fs::write(&f, "postgres://steward:s3cret-pw@db:5432/steward\n").unwrap();
        let mut c = Config::default();
        c.apply_env(|k| (k == "STEWARD_DATABASE_URL_FILE").then(|| f.display().to_string()))
            .unwrap();
        assert_eq!(
            secrecy::ExposeSecret::expose_secret(&c.database_url().unwrap().unwrap()),
            "postgres://steward:s3cret-pw@db:5432/steward"
        );
        let mut c = Config::default();
        c.apply_env(|k| {
            (k == "STEWARD_DATABASE_URL").then(|| "mysql://root:s3cret-pw@db/x".into())
        })
        .unwrap();
        let problems = format!("{:?}", c.check_environment());
        assert!(problems.contains("database.url"), "{problems}");
        assert!(!problems.contains("s3cret-pw"), "{problems}");
        assert!(
            !format!("{c:?}").contains("s3cret-pw"),
            "Debug hides the URL"
        );
    }

    #[test]
    fn defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./steward-data"));
        assert!(c.validate().is_empty());
    }

    #[test]
    fn prepare_ahead_is_read_bounded_and_can_be_turned_off() {
        let c = parse("").unwrap();
        assert_eq!(
            c.scheduler.prepare_ahead.get(),
            std::time::Duration::from_millis(1500)
        );
        let c = parse("[scheduler]\nprepare_ahead = \"0s\"\n").unwrap();
        assert!(c.scheduler.prepare_ahead.get().is_zero());
        assert!(c.validate().is_empty());
        let mut c = Config::default();
        c.apply_env(|k| (k == "STEWARD_PREPARE_AHEAD").then(|| "6s".into()))
            .unwrap();
        let problems = format!("{:?}", c.validate());
        assert!(problems.contains("scheduler.prepare_ahead"), "{problems}");
    }

    #[test]
    fn unknown_and_bad_keys_are_named() {
        let e = parse("[scheduler]\nshutdown_grase = \"5s\"\n").unwrap_err();
        assert!(e.contains("shutdown_grase"), "{e}");
        let e = parse("timezone = \"Mars/Base\"\n").unwrap_err();
        assert!(
            e.contains("timezone") && e.contains("unknown time zone"),
            "{e}"
        );
        let e = parse("[outbound]\nallow = [\"not-a-net\"]\n").unwrap_err();
        assert!(e.contains("allow"), "{e}");
    }

    #[test]
    fn semantic_errors_are_all_reported() {
        let c =
            parse("listen = \"0.0.0.0:8080\"\n[executor]\noutput_limit = 10\nworkdir = \"rel\"\n")
                .unwrap();
        let keys: Vec<String> = c.validate().into_iter().map(|e| e.to_string()).collect();
        assert!(
            keys.iter().any(|k| k.starts_with("executor.output_limit:")),
            "{keys:?}"
        );
        assert!(
            keys.iter().any(|k| k.starts_with("executor.workdir:")),
            "{keys:?}"
        );
    }

    #[test]
    fn environment_overrides_file_and_names_itself() {
        let mut c = parse("timezone = \"UTC\"\n").unwrap();
        let env = |k: &str| match k {
            "STEWARD_TIMEZONE" => Some("Europe/Berlin".to_owned()),
            "STEWARD_OUTBOUND_ALLOW" => Some("127.0.0.1, 10.0.0.0/8".to_owned()),
            _ => None,
        };
        c.apply_env(env).unwrap();
        assert_eq!(c.timezone.name(), "Europe/Berlin");
        assert_eq!(c.outbound.allow.len(), 2);
        let e = c
            .apply_env(|k| (k == "STEWARD_SHUTDOWN_GRACE").then(|| "-1s".to_owned()))
            .unwrap_err();
        assert!(e.to_string().starts_with("STEWARD_SHUTDOWN_GRACE:"), "{e}");
    }

    #[test]
    fn identity_settings_from_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("admin-pw");
        std::fs::write(&p, "from a mounted secret\n").unwrap();
        let mut c = Config::default();
        let env = |k: &str| match k {
            "STEWARD_BOOTSTRAP_ADMIN_PASSWORD_FILE" => Some(p.display().to_string()),
            "STEWARD_PUBLIC_URL" => Some("https://steward.example.org".into()),
            "STEWARD_TRUSTED_PROXIES" => Some("10.0.0.1, 10.1.0.0/16".into()),
            "STEWARD_SESSION_IDLE" => Some("30m".into()),
            "STEWARD_MASTER_KEY_FILE" => Some("/run/secrets/key".into()),
            "STEWARD_LISTEN" => Some("0.0.0.0:8080".into()),
            _ => None,
        };
        c.apply_env(env).unwrap();
        use secrecy::ExposeSecret as _;
        assert_eq!(
            c.bootstrap_password().unwrap().unwrap().expose_secret(),
            "from a mounted secret"
        );
        assert!(c.secure_cookies());
        assert_eq!(c.server.trusted_proxies.len(), 2);
        assert_eq!(
            c.auth.session_idle.get(),
            std::time::Duration::from_secs(1800)
        );
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        // The public URL's host is served; no wildcard once a host is known.
        assert!(c
            .allowed_hosts()
            .contains(&"steward.example.org".to_owned()));
        assert!(!c.allowed_hosts().contains(&"*".to_owned()));
        let e = c
            .apply_env(|k| (k == "STEWARD_TRUSTED_PROXIES").then(|| "not-an-ip".into()))
            .unwrap_err();
        assert!(e.to_string().starts_with("STEWARD_TRUSTED_PROXIES:"), "{e}");
    }

    #[test]
    fn metrics_token_from_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tok");
        std::fs::write(&p, "s3cret\n").unwrap();
        let mut c = Config::default();
        c.apply_env(|k| (k == "STEWARD_METRICS_TOKEN_FILE").then(|| p.display().to_string()))
            .unwrap();
        use secrecy::ExposeSecret as _;
        assert_eq!(
            c.metrics_token().unwrap().unwrap().expose_secret(),
            "s3cret"
        );
    }
}
