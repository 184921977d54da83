//! What runs an attempt: the context every job kind's execution gets
//! ([`ExecContext`]) and what it returns, and the process and HTTP machinery
//! of the built-in kinds (`kinds::command`, `kinds::http`). Nothing here knows
//! the store, retries or schedules.

pub mod cgroup;
pub mod command;
pub mod http;
pub mod launcher;
pub mod sandbox;

use crate::output::OutputBuffer;
use std::sync::Arc;
use std::time::Duration;
use steward_clock::Clock;
use steward_domain::{RunOutcome, RunStatus};
use tokio_util::sync::CancellationToken;

/// Everything an attempt needs from its surroundings.
pub struct ExecContext {
    pub run: steward_domain::RunId,
    /// When the attempt's work starts: now, or the instant of a scheduled
    /// run prepared ahead (see `JobKind::prepares_ahead`). The timeout
    /// counts from here.
    pub start_at: chrono::DateTime<chrono::Utc>,
    pub timeout: Duration,
    pub cancel: CancellationToken,
    /// Cancelled when Steward begins to shut down: stopping a process then
    /// uses a short kill grace, so the whole stop fits a container's stop timeout.
    pub stopping: CancellationToken,
    pub output: OutputBuffer,
    pub clock: Arc<dyn Clock>,
    /// Extra environment every command gets (STEWARD_RUN_ID, ...).
    pub env: Vec<(String, String)>,
    /// Records what the attempt holds outside Steward (the kind's handle),
    /// for the kind to reconcile after a crash. See [`ExecContext::hold`].
    pub on_hold: Box<dyn Fn(serde_json::Value) + Send + Sync>,
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub struct ExecResult {
    pub status: RunStatus,
    pub outcome: RunOutcome,
}

impl ExecResult {
    pub fn failed(error: impl Into<String>) -> Self {
        Self {
            status: RunStatus::Failed,
            outcome: RunOutcome {
                error: Some(error.into()),
                ..Default::default()
            },
        }
    }

    /// Cancelled before its work started (a run prepared ahead of its
    /// instant, cancelled while it waited).
    pub fn cancelled_before_start() -> Self {
        Self {
            status: RunStatus::Cancelled,
            outcome: RunOutcome {
                error: Some("cancelled before it started".into()),
                ..Default::default()
            },
        }
    }
}

impl ExecContext {
    /// Records the kind's handle of this attempt (a process group, a
    /// container id): kept with the run, given to `JobKind::reconcile` if
    /// Steward stops without recording the run's end. A later call replaces it.
    pub fn hold(&self, handle: serde_json::Value) {
        (self.on_hold)(handle);
    }

    /// How long until [`ExecContext::start_at`] (zero once it has passed).
    pub fn until_start(&self) -> Duration {
        (self.start_at - self.clock.now())
            .to_std()
            .unwrap_or_default()
    }

    pub fn note(&self, msg: &str) {
        self.output.push(
            self.clock.now(),
            crate::output::Stream::Steward,
            msg.as_bytes(),
        );
    }
}
