//! `steward admin ...`: offline maintenance on a data directory.
//!
//! `reset-password` and `rotate-key` change state, so they take the data
//! directory's lock (the server must be stopped; `steward keys rotate` rotates
//! online through the API). `verify-audit` and `export-audit` only read and
//! work beside a running server.

use crate::config::Config;
use std::sync::Arc;
use steward_clock::SystemClock;
use steward_store::Store;

pub enum AdminTask {
    ResetPassword(String),
    RotateKey,
    VerifyAudit,
    ExportAudit,
}

async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let db = config.data_dir.join("steward.db");
    if config.database_url()?.is_none() && !db.exists() {
        anyhow::bail!(
            "no Steward database at {} (is --data-dir right?)",
            db.display()
        );
    }
    crate::open_store(config).await
}

/// Runs one task; returns the process exit code (1 when verification fails).
pub async fn run(config: Config, task: AdminTask) -> anyhow::Result<u8> {
    match task {
        AdminTask::ResetPassword(user) => {
            let _lock = crate::lock_data_dir(&config.data_dir)?;
            let store = open_store(&config).await?;
            let vault = crate::open_vault(&config, &store, Arc::new(SystemClock))?;
            let mailer = steward_notify::Mailer::new(vault);
            let access = crate::build_access(&config, &store, mailer, Arc::new(SystemClock))?;
            let password = access
                .admin_reset_password(&user)
                .await
                .map_err(|e| anyhow::anyhow!("{user}: {e}"))?;
            use secrecy::ExposeSecret as _;
            println!(
                "New one-time password for {user}: {}",
                password.expose_secret()
            );
            println!("All of {user}'s sessions and API tokens were ended; the password must be changed at the next sign-in.");
            store.anchor_audit_head().await?;
            store.close().await;
            Ok(0)
        }
        AdminTask::RotateKey => {
            let _lock = crate::lock_data_dir(&config.data_dir).map_err(|e| {
                anyhow::anyhow!(
                    "{e}\nwhile the server runs, rotate online instead: steward keys rotate"
                )
            })?;
            let store = open_store(&config).await?;
            let vault = crate::open_vault(&config, &store, Arc::new(SystemClock))?;
            let report = vault
                .rotate(
                    &steward_domain::AuditContext::system("cli admin rotate-key"),
                    &|p| {
                        eprintln!("key v{}: {} values re-sealed", p.new_version, p.resealed);
                    },
                )
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!(
                "Now sealing with key v{}; {} values re-sealed; retired keys: {:?}",
                report.new_version, report.resealed, report.retired
            );
            store.anchor_audit_head().await?;
            store.close().await;
            Ok(0)
        }
        AdminTask::VerifyAudit => {
            let store = open_store(&config).await?;
            let report = store.verify_audit().await?;
            store.close().await;
            match report.problem {
                None => {
                    println!(
                        "audit log intact: {} entries, every hash and link checks out",
                        report.entries
                    );
                    Ok(0)
                }
                Some(p) => {
                    println!(
                        "audit log TAMPERED: {p} ({} entries verified before it)",
                        report.entries
                    );
                    Ok(1)
                }
            }
        }
        AdminTask::ExportAudit => {
            let store = open_store(&config).await?;
            let mut after = 0;
            loop {
                let page = store.read().await?.audit_page(after, 1000).await?;
                let Some(last) = page.last() else { break };
                after = last.id;
                for e in &page {
                    crate::client::emit(&format!("{}\n", serde_json::to_string(e)?));
                }
            }
            store.close().await;
            Ok(0)
        }
    }
}
