//! The entities the services work with: what a job, a run, a user, a role,
//! a group, a session, an API token, an audit entry and a secret's metadata
//! are, whichever backend holds them. Database rows never leave the store;
//! it turns them into these.

use crate::{
    AuditRecord, GroupId, JobDefinition, JobId, JobName, PermissionSet, RoleId, RunHandle, RunId,
    RunStatus, SecretName, SessionId, TokenId, Trigger, UserId, Username,
};
use chrono::{DateTime, Utc};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: JobId,
    pub definition: JobDefinition,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub schedule_cursor: Option<DateTime<Utc>>,
    /// The next occurrence as last written (for sorting lists; a view of
    /// one job computes it afresh from the schedule).
    pub next_run_at: Option<DateTime<Utc>>,
    /// How the job's most recently ended run ended.
    pub last_status: Option<RunStatus>,
}

impl Job {
    pub fn name(&self) -> &JobName {
        &self.definition.name
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    pub id: RunId,
    pub job_id: JobId,
    pub job_name: JobName,
    pub status: RunStatus,
    pub trigger: Trigger,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub not_before: Option<DateTime<Utc>>,
    pub attempt: u32,
    pub parent_run_id: Option<RunId>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The kind's account of how the run ended (see [`crate::RunOutcome`]).
    pub outcome: Option<serde_json::Value>,
    /// What the run holds outside Steward while it executes (its kind's
    /// handle, for reconciling after a crash); internal, not shown.
    #[serde(skip)]
    pub handle: Option<RunHandle>,
    pub error: Option<String>,
    pub output_truncated: bool,
    /// Why a queued run has not started yet, as the dispatcher last saw it
    /// ("waiting for lock restic:offsite, held by run 4711 of job weekly").
    pub waiting_for: Option<String>,
    /// The node that claimed the run (set once it left the queue).
    pub claimed_by: Option<String>,
    /// A queued run not started by then is recorded as skipped.
    pub start_deadline: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: UserId,
    pub username: Username,
    pub email: Option<String>,
    pub password_hash: String,
    pub must_change: bool,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Role {
    pub id: RoleId,
    pub name: String,
    pub builtin: bool,
    /// For custom roles; built-in roles' sets come from `BuiltinRole`.
    pub permissions: PermissionSet,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub id: GroupId,
    pub name: String,
    pub members: Vec<Username>,
    pub roles: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Session {
    pub id: SessionId,
    pub user_id: UserId,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub address: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ApiToken {
    pub id: TokenId,
    pub user_id: UserId,
    pub name: String,
    pub hint: String,
    pub scopes: PermissionSet,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A stored entry: the record, its position and its chain hashes.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    #[serde(flatten)]
    pub record: AuditRecord,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Debug, Clone)]
pub struct SecretMeta {
    pub name: SecretName,
    pub description: String,
    pub key_version: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}
