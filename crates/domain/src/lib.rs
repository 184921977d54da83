//! Pure types and rules of Steward: no I/O, no clock reads, no randomness.
//!
//! Everything that crosses a layer boundary is parsed here into a type that is
//! known good (`JobName`, `Schedule`, `HttpUrl`, ...). The store, engine and web
//! crates depend on this crate; it depends on none of them.
#![forbid(unsafe_code)]

pub mod access;
pub mod audit;
pub mod duration;
pub mod entity;
pub mod error;
pub mod ids;
pub mod job;
pub mod name;
pub mod outbound;
pub mod retry;
pub mod run;
pub mod schedule;
pub mod secret;
pub mod strict;

pub use access::{Access, BuiltinRole, Module, Permission, PermissionSet, Username};
pub use audit::{Actor, ActorKind, AuditContext, AuditRecord};
pub use duration::DurationSpec;
pub use error::ValidationError;
pub use ids::{GroupId, JobId, RoleId, RunId, SessionId, TokenId, UserId};
pub use job::{
    JobDefinition, JobSpec, MissedRunPolicy, OverlapPolicy, Policies, ResourceLock, MAX_CATCH_UP,
};
pub use name::{EnvName, JobName, LockName, Tag};
pub use outbound::{HttpUrl, OutboundRule};
pub use retry::RetryPolicy;
pub use run::{RunHandle, RunOutcome, RunStatus, Trigger};
pub use schedule::{Schedule, ScheduleError, TimeZone};
pub use secret::SecretName;
