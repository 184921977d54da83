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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorConfig {
    /// Bytes of output kept per run (head and tail), at least 1024.
    pub output_limit: u64,
    /// Between SIGTERM and SIGKILL.
    pub kill_grace: DurationSpec,
    /// Runs admitted and not finished, at most; past it scheduled runs are
    /// recorded as skipped and manual runs refused with 429.
    pub max_active_runs: usize,
    /// Account commands run as when Steward runs as root (default `nobody`).
    pub run_as_user: Option<String>,
    /// Working directory of commands that do not set one (default `/`).
    pub workdir: Option<String>,
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
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Bearer token required by `/metrics`; unset means open (it is loopback-only for now).
    pub token: Option<SecretString>,
    pub token_file: Option<PathBuf>,
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
            shutdown_grace: DurationSpec::from_secs(30),
        }
    }
}
impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            output_limit: 4 * 1024 * 1024,
            kill_grace: DurationSpec::from_secs(10),
            max_active_runs: 1000,
            run_as_user: None,
            workdir: None,
        }
    }
}
impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
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
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string().trim_end().to_owned(),
        })
    }

    /// File (if given, else `./steward.toml` if present), then the environment.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut cfg = match file {
            Some(p) => Self::from_file(p)?,
            None if Path::new("steward.toml").exists() => {
                Self::from_file(Path::new("steward.toml"))?
            }
            None => Self::default(),
        };
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
        if let Some(v) = env("STEWARD_OUTPUT_LIMIT") {
            self.executor.output_limit = parse("STEWARD_OUTPUT_LIMIT", &v)?;
        }
        if let Some(v) = env("STEWARD_KILL_GRACE") {
            self.executor.kill_grace = dur("STEWARD_KILL_GRACE", &v)?;
        }
        if let Some(v) = env("STEWARD_MAX_ACTIVE_RUNS") {
            self.executor.max_active_runs = parse("STEWARD_MAX_ACTIVE_RUNS", &v)?;
        }
        if let Some(v) = env("STEWARD_RUN_AS_USER") {
            self.executor.run_as_user = Some(v);
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
        if let Some(v) = env("STEWARD_METRICS_TOKEN") {
            self.metrics.token = Some(SecretString::from(v));
        }
        if let Some(v) = env("STEWARD_METRICS_TOKEN_FILE") {
            self.metrics.token_file = Some(PathBuf::from(v));
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
        if !(1..=1_000_000).contains(&self.executor.max_active_runs) {
            errs.push(invalid(
                "executor.max_active_runs",
                "must be between 1 and 1000000",
            ));
        }
        if self.executor.kill_grace.get().is_zero() {
            errs.push(invalid("executor.kill_grace", "must be greater than zero"));
        }
        if let Some(dir) = &self.executor.workdir {
            if !dir.starts_with('/') {
                errs.push(invalid("executor.workdir", "must be an absolute path"));
            }
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
        if !self.listen.ip().is_loopback() {
            errs.push(invalid(
                "listen",
                format!(
                    "{} is not a loopback address; until authentication is available Steward only listens on loopback (127.0.0.1 or [::1])",
                    self.listen
                ),
            ));
        }
        errs
    }

    /// The metrics token, from `metrics.token` or the file it names.
    pub fn metrics_token(&self) -> Result<Option<SecretString>, ConfigError> {
        if let Some(t) = &self.metrics.token {
            return Ok(Some(t.clone()));
        }
        match &self.metrics.token_file {
            Some(p) => {
                let v = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.clone(),
                    source,
                })?;
                Ok(Some(SecretString::from(
                    v.trim_end_matches(['\n', '\r']).to_owned(),
                )))
            }
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        toml::from_str::<Config>(text).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./steward-data"));
        assert!(c.validate().is_empty());
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
        assert!(keys.iter().any(|k| k.starts_with("listen:")), "{keys:?}");
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
