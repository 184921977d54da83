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
