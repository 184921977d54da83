#![forbid(unsafe_code)]
use clap::Parser as _;
use std::process::ExitCode;
use steward::admin::AdminTask;
use steward::cli::{AdminCommand, Cli, Command, ConfigCommand, ScheduleCommand};
use steward::config::Config;
use steward::Application;
use steward_domain::{Schedule, TimeZone};

fn main() -> ExitCode {
    // The command sandbox is this binary too; it must not start a runtime.
    let mut args = std::env::args_os();
    if args.nth(1).as_deref() == Some(std::ffi::OsStr::new(steward_sandbox::LAUNCHER_ARG)) {
        return steward_sandbox::launcher_main(args);
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            data_dir,
            listen,
        } => serve(config, data_dir, listen),
        Command::Config {
            command: ConfigCommand::Check { file },
        } => config_check(&file),
        Command::Schedule {
            command:
                ScheduleCommand::Preview {
                    expression,
                    tz,
                    count,
                },
        } => preview(&expression, &tz, count),
        Command::Admin {
            config,
            data_dir,
            command,
        } => admin(config, data_dir, command),
        Command::Jobs { conn, command } => client(steward::client::jobs(&conn, command)),
        Command::Runs { conn, command } => client(steward::client::runs(&conn, command)),
        Command::Tokens { conn, command } => client(steward::client::tokens(&conn, command)),
        Command::Users { conn, command } => client(steward::client::users(&conn, command)),
        Command::Keys { conn, command } => client(steward::client::keys(&conn, command)),
        Command::Secrets { conn, command } => client(steward::client::secrets(&conn, command)),
        Command::Audit { conn, command } => {
            match client_rt(steward::client::audit(&conn, command)) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(code) => code,
            }
        }
    }
}

fn client_rt<T>(fut: impl std::future::Future<Output = anyhow::Result<T>>) -> Result<T, ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("steward: cannot start the runtime: {e}");
            ExitCode::FAILURE
        })?;
    rt.block_on(fut).map_err(|e| {
        eprintln!("error: {e:#}");
        ExitCode::from(1)
    })
}

fn client(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    match client_rt(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

fn admin(
    file: Option<std::path::PathBuf>,
    data_dir: Option<std::path::PathBuf>,
    command: AdminCommand,
) -> ExitCode {
    let mut cfg = match Config::load(file.as_deref(), |k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("steward: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(d) = data_dir {
        cfg.data_dir = d;
    }
    let task = match command {
        AdminCommand::ResetPassword { user } => AdminTask::ResetPassword(user),
        AdminCommand::RotateKey => AdminTask::RotateKey,
        AdminCommand::VerifyAudit => AdminTask::VerifyAudit,
        AdminCommand::ExportAudit => AdminTask::ExportAudit,
    };
    match client_rt(steward::admin::run(cfg, task)) {
        Ok(code) => ExitCode::from(code),
        Err(code) => code,
    }
}

fn serve(
    file: Option<std::path::PathBuf>,
    data_dir: Option<std::path::PathBuf>,
    listen: Option<std::net::SocketAddr>,
) -> ExitCode {
    let mut cfg = match Config::load(file.as_deref(), |k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("steward: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(d) = data_dir {
        cfg.data_dir = d;
    }
    if let Some(l) = listen {
        cfg.listen = l;
    }
    steward::init_logging(&cfg.log);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("steward: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let app = match Application::build(cfg).await {
            Ok(app) => app,
            Err(e) => {
                tracing::error!("cannot start: {e:#}");
                eprintln!("steward: cannot start: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        wait_for_signal().await;
        app.shutdown().await;
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stopping");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

fn config_check(file: &std::path::Path) -> ExitCode {
    let cfg = match Config::from_file(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let mut problems = cfg.validate();
    problems.extend(cfg.check_environment());
    if problems.is_empty() {
        println!("{}: ok", file.display());
        ExitCode::SUCCESS
    } else {
        for p in &problems {
            eprintln!("error: {p}");
        }
        ExitCode::from(1)
    }
}

fn preview(expression: &str, tz: &str, count: u16) -> ExitCode {
    let zone = match TimeZone::parse(tz) {
        Ok(z) => z,
        Err(e) => {
            eprintln!("error: --tz: {}", e.message);
            return ExitCode::from(1);
        }
    };
    let schedule = match Schedule::parse(expression) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    #[allow(clippy::disallowed_methods)] // the CLI's notion of "now" is the wall clock
    let now = chrono::Utc::now();
    let upcoming = schedule.upcoming(now, &zone, usize::from(count));
    if upcoming.is_empty() {
        eprintln!("error: {expression:?} never fires (no matching date in the coming years)");
        return ExitCode::from(1);
    }
    for t in upcoming {
        println!(
            "{}  ({})",
            t.with_timezone(&zone.0).to_rfc3339(),
            t.to_rfc3339()
        );
    }
    ExitCode::SUCCESS
}
