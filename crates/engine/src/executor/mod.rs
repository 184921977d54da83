//! Executors: turn a job spec into a finished attempt. They know nothing about
//! the store, retries or schedules; the runner gives them a context and records
//! what they return.

pub mod cgroup;
pub mod command;
pub mod http;
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
    pub timeout: Duration,
    pub cancel: CancellationToken,
    /// Cancelled when Steward begins to shut down: stopping a process then
    /// uses a short kill grace, so the whole stop fits a container's stop timeout.
    pub stopping: CancellationToken,
    pub output: OutputBuffer,
    pub clock: Arc<dyn Clock>,
    /// Extra environment every command gets (STEWARD_RUN_ID, ...).
    pub env: Vec<(String, String)>,
    /// Told the process group of a started command, so it can be recorded.
    pub on_spawn: Box<dyn Fn(i32) + Send + Sync>,
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
}

impl ExecContext {
    pub fn note(&self, msg: &str) {
        self.output.push(
            self.clock.now(),
            crate::output::Stream::Steward,
            msg.as_bytes(),
        );
    }
}
