//! The run state machine.
//!
//! ```text
//! queued ──> running ──> succeeded | failed | timed_out | cancelled
//!   │           └──────> abandoned   (found running after a crash)
//!   ├──> skipped                    (overlap policy)
//!   └──> cancelled                  (cancelled before it started)
//! ```

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    Abandoned,
    Skipped,
}

impl RunStatus {
    pub const ALL: [RunStatus; 8] = [
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::TimedOut,
        Self::Cancelled,
        Self::Abandoned,
        Self::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
            Self::Abandoned => "abandoned",
            Self::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }

    /// Whether a run may move from `self` to `next`. Terminal states are final.
    pub fn can_become(self, next: RunStatus) -> bool {
        use RunStatus::*;
        matches!(
            (self, next),
            (Queued, Running | Skipped | Cancelled)
                | (
                    Running,
                    Succeeded | Failed | TimedOut | Cancelled | Abandoned
                )
        )
    }

    /// The states a run may be in for it to become `self`: the guard the
    /// store puts on every status change, so that no write skips a step or
    /// reopens a finished run.
    pub fn predecessors(self) -> Vec<RunStatus> {
        Self::ALL
            .into_iter()
            .filter(|s| s.can_become(self))
            .collect()
    }

    /// A failure that the retry policy may answer with another attempt.
    pub fn is_retryable_failure(self) -> bool {
        matches!(self, Self::Failed | Self::TimedOut)
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Schedule,
    Manual,
    Retry,
    Chain,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "schedule",
            Self::Manual => "manual",
            Self::Retry => "retry",
            Self::Chain => "chain",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Schedule, Self::Manual, Self::Retry, Self::Chain]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// How an attempt ended, as its kind reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunOutcome {
    /// The kind's own account of the ending, stored as data of that kind:
    /// a command's `{"exit_code": 0}` or `{"signal": 9}`, an HTTP call's
    /// `{"status": 204}`. Absent when the attempt never got that far.
    pub detail: Option<serde_json::Value>,
    /// A short, secret-free explanation when the run did not succeed.
    pub error: Option<String>,
}

/// What a running attempt holds outside Steward (a process group, a
/// container, an upload), as its kind describes it. Kept with the run so
/// that after a crash the same kind can find and end what was left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunHandle {
    pub kind: String,
    pub data: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        use RunStatus::*;
        assert!(Queued.can_become(Running));
        assert!(Queued.can_become(Skipped));
        assert!(Running.can_become(TimedOut));
        assert!(Running.can_become(Abandoned));
        assert!(!Queued.can_become(Succeeded));
        assert!(!Queued.can_become(Abandoned));
        assert_eq!(Running.predecessors(), vec![Queued]);
        assert_eq!(Cancelled.predecessors(), vec![Queued, Running]);
        assert!(Queued.predecessors().is_empty());
        for t in RunStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            for n in RunStatus::ALL {
                assert!(!t.can_become(n), "{t} -> {n} allowed");
            }
        }
        for s in RunStatus::ALL {
            assert_eq!(RunStatus::parse(s.as_str()), Some(s));
        }
        assert!(Failed.is_retryable_failure() && TimedOut.is_retryable_failure());
        assert!(!Cancelled.is_retryable_failure());
    }
}
