//! Command-line interface.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "steward",
    version,
    about = "Self-hosted, security-first orchestrator for scheduled operations work"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server: scheduler, executors, API.
    Serve {
        /// Configuration file (default: ./steward.toml if it exists).
        #[arg(long, env = "STEWARD_CONFIG")]
        config: Option<PathBuf>,
        /// Data directory (overrides the configuration).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Listen address (overrides the configuration).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Schedule tools.
    Schedule {
        #[command(subcommand)]
        command: ScheduleCommand,
    },
    /// Offline maintenance on a data directory (reset-password, rotate-key, verify-audit, export-audit).
    Admin {
        /// Configuration file (default: ./steward.toml if it exists).
        #[arg(long, env = "STEWARD_CONFIG", global = true)]
        config: Option<PathBuf>,
        /// Data directory (overrides the configuration).
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Jobs on a running server (API client).
    Jobs {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Runs on a running server (API client).
    Runs {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        command: RunsCommand,
    },
    /// Your API tokens (API client).
    Tokens {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// User accounts (API client).
    Users {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// The audit log (API client).
    Audit {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Sealed secrets (API client): set, list, delete; values are never shown.
    Secrets {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        command: SecretsCommand,
    },
    /// Sealing keys (API client): rotate online.
    Keys {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        command: KeysCommand,
    },
}

/// Where the server is and how to authenticate.
#[derive(clap::Args, Debug, Clone)]
pub struct Connection {
    /// Base URL of the server.
    #[arg(
        long,
        env = "STEWARD_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// API token (create one with POST /api/v1/tokens or `steward tokens create`).
    #[arg(long, env = "STEWARD_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Give USER a new one-time password, end their sessions and revoke their API tokens (server stopped).
    ResetPassword { user: String },
    /// Add a sealing key and re-seal everything under it (server stopped).
    RotateKey,
    /// Check the audit log's hash chain; exit 1 and name the first bad entry if edited.
    VerifyAudit,
    /// Print the audit log as JSON lines.
    ExportAudit,
}

#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// Jobs with schedule, state, next run and last status, every page
    /// (--tag T, --name PART, --enabled true|false, --status S, --sort name|next_run).
    List {
        #[arg(long)]
        tag: Option<String>,
        /// Case-insensitive part of the name.
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        enabled: Option<bool>,
        /// How the job's last run ended (succeeded, failed, skipped, ...).
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value = "name")]
        sort: String,
    },
    /// One job's definition (by name or id).
    Show { job: String },
    /// Create a job from a JSON or TOML file (`-` reads standard input).
    Create {
        #[arg(long, short = 'f')]
        file: PathBuf,
    },
    /// Create the job in FILE, or replace the job of that name with it, and
    /// print what changed; applying the same file again changes nothing.
    Apply {
        #[arg(long, short = 'f')]
        file: PathBuf,
    },
    /// Start a run now; with --wait, follow its output and exit with its result.
    Run {
        job: String,
        /// Stream the output until the run ends; exit 1 unless it succeeded.
        #[arg(long, short = 'w')]
        wait: bool,
    },
    /// Schedule the job again.
    Enable { job: String },
    /// Stop scheduling the job (manual runs still work).
    Disable { job: String },
    /// Delete the job and its run history.
    Delete { job: String },
}

#[derive(Subcommand, Debug)]
pub enum RunsCommand {
    /// Runs, newest first (--job NAME, --status STATE, --limit N).
    List {
        #[arg(long)]
        job: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One run's record.
    Show { run: i64 },
    /// Print a run's output; --follow streams it until the run ends.
    Logs {
        run: i64,
        /// Stream until the run ends; exit 1 unless it succeeded.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Cancel a queued or running run and wait for its final state.
    Cancel { run: i64 },
}

#[derive(Subcommand, Debug)]
pub enum TokensCommand {
    /// Your tokens (never their secrets).
    List,
    /// Create a token; the secret is printed once.
    Create {
        name: String,
        /// Permission such as jobs:read (repeatable); default: all of yours.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Lifetime such as 30d.
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// Revoke a token by id.
    Revoke { id: i64 },
}

#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    /// Users with their roles.
    List,
    /// One user.
    Show { user: String },
    /// Create a user, who must change the initial password at first sign-in;
    /// the password is read from --password-file, else asked for on a
    /// terminal (twice, not echoed), else read from standard input.
    Create {
        username: String,
        #[arg(long)]
        email: Option<String>,
        /// Role to grant (repeatable): admin, operator, viewer or a custom role.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// File holding the initial password.
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Delete a user.
    Delete { user: String },
}

#[derive(Subcommand, Debug)]
pub enum SecretsCommand {
    /// Names, descriptions and key versions (never values).
    List,
    /// Set NAME's value: from --file, else asked for on a terminal (twice, not
    /// echoed), else read from standard input. Jobs refer to it as ${secret:NAME}.
    Set {
        name: String,
        /// File holding the value (a trailing newline is dropped).
        #[arg(long)]
        file: Option<PathBuf>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Delete a secret no job uses.
    Delete { name: String },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Entries, newest first (--actor USER, --event job or job.update, --target job:NAME).
    List {
        #[arg(long)]
        actor: Option<String>,
        #[arg(long)]
        event: Option<String>,
        #[arg(long)]
        target: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// All entries as JSON lines.
    Export,
    /// Ask the server to check the hash chain.
    Verify,
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Add a key and re-seal every stored credential under it, while serving.
    Rotate,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate a configuration file and explain every problem with its key.
    Check { file: PathBuf },
}

#[derive(Subcommand, Debug)]
pub enum ScheduleCommand {
    /// Show the next occurrences of a schedule expression.
    Preview {
        /// Cron expression, @alias or "@every <duration>".
        expression: String,
        /// IANA time zone.
        #[arg(long, default_value = "UTC")]
        tz: String,
        /// How many occurrences.
        #[arg(long, short = 'n', default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=1000))]
        count: u16,
    },
}
