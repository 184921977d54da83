//! The `steward` binary's library half: configuration, wiring and the
//! [`Application`] that tests boot on port 0.
#![forbid(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod client;
pub mod config;

use anyhow::Context as _;
use config::Config;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;
use steward_access::accounts::Bootstrap;
use steward_access::{Access, AccessSettings};
use steward_clock::{Clock, SystemClock};
use steward_crypto::{Keyring, PasswordHasher};
use steward_domain::RunId;
use steward_engine::executor::cgroup::RunCgroups;
use steward_engine::executor::command::RunAs;
use steward_engine::executor::sandbox::Sandbox;
use steward_engine::metrics::Metrics;
use steward_engine::outbound::OutboundPolicy;
use steward_engine::queue::{random_jitter, JitterFn};
use steward_engine::{Engine, EngineSettings};
use steward_notify::Mailer;
use steward_store::{Location, Store};
use steward_vault::Vault;
use tokio_util::sync::CancellationToken;

/// A running Steward: HTTP server, engine and store.
pub struct Application {
    addr: SocketAddr,
    engine: Arc<Engine>,
    access: Arc<Access>,
    store: Arc<dyn Store>,
    stop_http: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    grace: std::time::Duration,
    /// Held for the process's life: one Steward per data directory.
    _data_lock: nix::fcntl::Flock<std::fs::File>,
    _sweeper: tokio::task::JoinHandle<()>,
}

/// Test seams: the clock and jitter source.
pub struct Overrides {
    pub clock: Arc<dyn Clock>,
    pub jitter: JitterFn,
    /// The steward binary that runs the command sandbox (default: this
    /// program; tests that embed Steward name the real binary).
    pub sandbox_helper: Option<std::path::PathBuf>,
    /// Sees every routed response (the tests check them against the document).
    pub response_observer: Option<steward_web::ResponseObserver>,
    /// Kinds of job added to the built-in ones: one value each, nothing else
    /// to change (the integration suite registers one of its own).
    pub kinds: Vec<Arc<dyn steward_engine::kinds::JobKind>>,
}

impl Default for Overrides {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            jitter: random_jitter(),
            sandbox_helper: None,
            response_observer: None,
            kinds: Vec::new(),
        }
    }
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with(config, Overrides::default()).await
    }

    pub async fn build_with(config: Config, overrides: Overrides) -> anyhow::Result<Self> {
        let mut problems = config.validate();
        problems.extend(config.check_environment());
        if let Some(first) = problems.first() {
            let all: Vec<String> = problems.iter().map(ToString::to_string).collect();
            anyhow::bail!(
                "invalid configuration: {}",
                if all.len() == 1 {
                    first.to_string()
                } else {
                    all.join("; ")
                }
            );
        }
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!("cannot create data directory {}", config.data_dir.display())
        })?;
        std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| {
                format!(
                    "cannot restrict data directory {}",
                    config.data_dir.display()
                )
            })?;
        let data_lock = lock_data_dir(&config.data_dir)?;
        let store = open_store(&config).await?;
        store
            .claim()
            .await
            .map_err(|e| anyhow::anyhow!("{}", store_error_chain(&e)))?;
        let vault = open_vault(&config, &store, overrides.clock.clone())?;
        // Bound before anything is created, so a start that cannot listen
        // leaves no admin account behind with a password nobody saw used.
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        if !config.listen.ip().is_loopback() {
            let https = config
                .server
                .public_url
                .as_ref()
                .is_some_and(|u| u.scheme() == "https");
            if !https {
                tracing::warn!(listen = %config.listen, "serving beyond loopback over plain HTTP: put a TLS-terminating proxy in front and set server.public_url to its https address");
            }
            if config.metrics.token.is_none() && config.metrics.token_file.is_none() {
                tracing::warn!(
                    "/metrics is readable without a token (it lists job names); set metrics.token"
                );
            }
        }

        let run_as = resolve_run_as(&config)?;
        let sandbox = command_sandbox(&config, run_as.as_ref(), overrides.sandbox_helper.clone())?;
        let settings = EngineSettings {
            default_timezone: config.timezone,
            node: config.executor.node_name.clone().unwrap_or_else(host_name),
            lease: steward_engine::queue::DEFAULT_LEASE,
            output_limit: usize::try_from(config.executor.output_limit).unwrap_or(usize::MAX),
            max_active_runs: config.executor.max_active_runs,
            kill_grace: config.executor.kill_grace.get(),
            default_workdir: config
                .executor
                .workdir
                .clone()
                .unwrap_or_else(|| "/".into()),
            run_as,
            sandbox: Some(sandbox),
            outbound: OutboundPolicy::new(config.outbound.allow.clone()),
            secrets: vault.clone(),
            extra_kinds: overrides.kinds.clone(),
            prepare_ahead: config.scheduler.prepare_ahead.get(),
        };
        let engine = Engine::start(
            store.clone(),
            overrides.clock.clone(),
            settings,
            Metrics::new(),
            overrides.jitter,
        )
        .await?;
        // Loading every job peaked above what the engine keeps of them.
        steward_web::memory::release_freed_memory();
        let mailer = Mailer::new(vault.clone());
        let access = build_access(&config, &store, mailer.clone(), overrides.clock)?;
        let bootstrap = match config.bootstrap_password()? {
            Some(p) => Bootstrap::Given(p),
            None => Bootstrap::Generate,
        };
        if let Some(password) = access.bootstrap(bootstrap).await? {
            use secrecy::ExposeSecret as _;
            // Printed once, on the first start only: the operator's way in.
            tracing::warn!(
                user = "admin",
                password = password.expose_secret(),
                "first start: created the admin account with this one-time password; sign in and change it"
            );
        }

        let rate = std::num::NonZeroU32::new(config.api.rate_limit_per_second)
            .zip(std::num::NonZeroU32::new(config.api.rate_limit_burst));
        let router = steward_web::router(
            steward_web::Services {
                engine: engine.clone(),
                access: access.clone(),
                vault,
                mailer,
            },
            steward_web::WebSettings {
                auth: steward_web::auth::AuthSettings {
                    trusted_proxies: config.server.trusted_proxies.clone(),
                    secure_cookies: config.secure_cookies(),
                    hsts: config
                        .server
                        .public_url
                        .as_ref()
                        .is_some_and(|u| u.scheme() == "https"),
                    api_rate: rate,
                },
                max_body_bytes: config.api.max_body_bytes,
                max_followers: config.api.max_followers,
                max_followers_per_user: config.api.max_followers_per_user,
                follow_bytes_per_second: config.api.follow_bytes_per_second,
                observer: overrides.response_observer.clone(),
                allowed_hosts: config.allowed_hosts(),
                public_origin: config
                    .server
                    .public_url
                    .as_ref()
                    .map(|u| u.origin().ascii_serialization()),
                metrics_token: config.metrics_token()?,
            },
        );
        let stop_http = CancellationToken::new();
        let stop = stop_http.clone();
        let server = tokio::spawn(async move {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
        });
        tracing::info!(%addr, data_dir = %config.data_dir.display(), "steward is serving");
        let sweeper = spawn_housekeeping(access.clone(), store.clone(), stop_http.clone());
        Ok(Self {
            addr,
            engine,
            access,
            _sweeper: sweeper,
            store,
            stop_http,
            server,
            grace: config.scheduler.shutdown_grace.get(),
            _data_lock: data_lock,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn access(&self) -> &Arc<Access> {
        &self.access
    }

    /// The store this instance serves (tests and `steward admin` tasks).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Graceful stop: the scheduler stops firing, running work gets the configured
    /// grace, then is cancelled and recorded; HTTP drains. Returns cancelled runs.
    pub async fn shutdown(self) -> Vec<RunId> {
        tracing::info!(grace = ?self.grace, "shutting down");
        self.stop_http.cancel();
        let cancelled = self.engine.shutdown(self.grace).await;
        if !cancelled.is_empty() {
            let ids: Vec<i64> = cancelled.iter().map(|r| r.0).collect();
            tracing::warn!(runs = ?ids, "cancelled at shutdown");
        }
        // Followers' streams end with their runs; give open connections a moment.
        let mut server = self.server;
        if tokio::time::timeout(std::time::Duration::from_secs(5), &mut server)
            .await
            .is_err()
        {
            server.abort();
        }
        if let Err(e) = self.store.anchor_audit_head().await {
            tracing::warn!(error = %e, "could not write the audit head anchor");
        }
        self.store.close().await;
        tracing::info!("stopped");
        cancelled
    }
}

/// The database the configuration names: PostgreSQL when `database.url` (or
/// its file) is set, else the embedded SQLite database `DATA_DIR/steward.db`.
/// The audit head anchor is kept in the data directory either way. Errors
/// never repeat the URL (it holds a password).
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    match config.database_url()? {
        Some(url) => {
            use secrecy::ExposeSecret as _;
            let store = steward_store::open(Location::Postgres {
                url: url.expose_secret(),
                audit_anchor: config.data_dir.join("audit.head"),
            })
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot open the PostgreSQL database: {}",
                    store_error_chain(&e)
                )
            })?;
            tracing::info!("records are kept in PostgreSQL");
            Ok(store)
        }
        None => steward_store::open(Location::Sqlite(&config.data_dir.join("steward.db")))
            .await
            .context("cannot open the database"),
    }
}

/// A store error and its causes on one line (PgStore's causes are already
/// free of the URL's password).
fn store_error_chain(e: &steward_store::StoreError) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// The keyring from `auth.master_key_file`, or `DATA_DIR/steward.key`
/// (created with mode 0600 on first start), and the vault over it.
pub fn open_vault(
    config: &Config,
    store: &Arc<dyn Store>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Arc<Vault>> {
    let (path, create) = match &config.auth.master_key_file {
        Some(p) => (p.clone(), false),
        None => (config.data_dir.join("steward.key"), true),
    };
    let keyring = Keyring::load_or_create(&path, create)?;
    Ok(Vault::new(keyring, store.clone(), clock))
}

pub fn build_access(
    config: &Config,
    store: &Arc<dyn Store>,
    mailer: Arc<Mailer>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Arc<Access>> {
    let hasher = PasswordHasher::sized_to_machine().map_err(|e| anyhow::anyhow!("{e}"))?;
    let to_chrono =
        |d: std::time::Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    Ok(Access::new(
        store.clone(),
        hasher,
        clock,
        AccessSettings {
            session_idle: to_chrono(config.auth.session_idle.get()),
            session_lifetime: to_chrono(config.auth.session_lifetime.get()),
            public_url: config.server.public_url.as_ref().map(ToString::to_string),
            ..AccessSettings::default()
        },
        mailer,
    ))
}

/// Background upkeep: writes the audit head anchor every 5 s (so cutting off
/// the newest audit rows shows in `verify-audit`) and deletes expired sessions
/// every 10 minutes (expired ones are already refused; this keeps the table small).
fn spawn_housekeeping(
    access: Arc<Access>,
    store: Arc<dyn Store>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut anchor = tokio::time::interval(std::time::Duration::from_secs(5));
        let mut sweep = tokio::time::interval(std::time::Duration::from_secs(600));
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = anchor.tick() => {
                    if let Err(e) = store.anchor_audit_head().await {
                        tracing::warn!(error = %e, "could not write the audit head anchor");
                    }
                }
                _ = sweep.tick() => {
                    if let Err(e) = access.sweep_sessions().await {
                        tracing::warn!(error = %e, "could not delete expired sessions");
                    }
                }
            }
        }
    })
}

/// Takes an exclusive lock on `DATA_DIR/steward.lock`. A second Steward on the
/// same directory would mark the first one's running runs abandoned (and kill
/// their processes) and fire every schedule twice; it is refused instead.
pub fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    let path = dir.join("steward.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        anyhow::anyhow!(
            "another Steward is already using the data directory {} ({errno}); stop it first or use another --data-dir",
            dir.display()
        )
    })
}

/// When Steward runs as root, commands run as an unprivileged account
/// (`executor.run_as_user`, default `nobody`). Naming `root` keeps root, on purpose.
fn resolve_run_as(config: &Config) -> anyhow::Result<Option<RunAs>> {
    let is_root = nix::unistd::geteuid().is_root();
    match (&config.executor.run_as_user, is_root) {
        (Some(name), true) if name == "root" => {
            tracing::warn!("executor.run_as_user is root: commands run with full privileges");
            Ok(None)
        }
        (Some(name), true) => {
            Ok(Some(RunAs::lookup(name).map_err(|e| {
                anyhow::anyhow!("executor.run_as_user: {e}")
            })?))
        }
        (None, true) => Ok(Some(RunAs::lookup("nobody").map_err(|e| {
            anyhow::anyhow!("executor.run_as_user (default nobody): {e}")
        })?)),
        (Some(_), false) => {
            tracing::warn!("executor.run_as_user is ignored: Steward is not running as root");
            Ok(None)
        }
        (None, false) => Ok(None),
    }
}

/// How command jobs are kept away from Steward's own files: the data
/// directory, the configuration and every secret file it names are hidden by
/// Landlock. Where Landlock is missing, jobs that run as another user are still
/// kept out by the data directory's mode (0700); jobs that would run as
/// Steward's own user are refused unless `executor.allow_unisolated_commands`.
fn command_sandbox(
    config: &Config,
    run_as: Option<&RunAs>,
    helper: Option<std::path::PathBuf>,
) -> anyhow::Result<Sandbox> {
    let helper = match helper {
        Some(h) => h,
        None => std::env::current_exe()
            .context("cannot find the steward binary (for the command sandbox)")?,
    };
    let mut hidden = vec![config.data_dir.clone()];
    hidden.extend(config.source.clone());
    hidden.extend(config.auth.master_key_file.clone());
    hidden.extend(config.auth.bootstrap_admin_password_file.clone());
    hidden.extend(config.metrics.token_file.clone());
    hidden.extend(config.database.url_file.clone());
    let mut hidden: Vec<_> = hidden
        .into_iter()
        .filter_map(|p| std::fs::canonicalize(&p).ok())
        .collect();
    let same_user = run_as.is_none_or(|r| r.uid == nix::unistd::geteuid());
    let required = same_user && !config.executor.allow_unisolated_commands;
    if !steward_sandbox::landlock_available() {
        if required {
            tracing::warn!("this kernel does not enforce Landlock: command jobs would run as Steward's own user and could read its key and database, so they will be refused (executor.allow_unisolated_commands accepts the risk)");
        } else if same_user {
            tracing::warn!("this kernel does not enforce Landlock and executor.allow_unisolated_commands is set: command jobs can read Steward's key and database");
        } else {
            tracing::warn!("this kernel does not enforce Landlock: command jobs are kept from Steward's files only by file permissions");
        }
    }
    // A cgroup per run where the machine allows it; the instance name comes
    // from the data directory, so Stewards sharing a machine keep apart.
    let data_dir = std::fs::canonicalize(&config.data_dir).unwrap_or(config.data_dir.clone());
    let instance =
        &steward_crypto::token::sha256_hex(data_dir.as_os_str().as_encoded_bytes())[..16];
    let cgroups = match RunCgroups::detect(instance) {
        Ok(c) => {
            tracing::info!(cgroup = %c.base().display(), "each run gets a cgroup of its own");
            hidden.extend(c.mounts().iter().cloned());
            Some(c)
        }
        Err(e) => {
            tracing::warn!("runs get no cgroup of their own ({e}): descendants of a job are still ended by its sandbox while it lives, but one that outlives a killed sandbox is not found at the next start");
            None
        }
    };
    // The binary itself: jobs may run it, never change it.
    let readonly: Vec<_> = std::fs::canonicalize(&helper).into_iter().collect();
    let every_job = steward_sandbox::Rules {
        require: required,
        hidden,
        readonly,
        ..Default::default()
    };
    Ok(Sandbox::new(helper, every_job, cgroups))
}

/// Sets up `tracing` as configured: text or JSON, with the configured filter.
pub fn init_logging(cfg: &config::LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        // Colour codes only for a terminal, not for log files and journald.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let _ = match cfg.format {
        config::LogFormat::Json => builder.json().try_init(),
        config::LogFormat::Text => builder.try_init(),
    };
}

/// The default node name: this machine's host name ("local" if it has none).
fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "local".into())
}
