//! The `command` kind: a local command, run as argv without a shell unless
//! the spec says `shell: true` (the process handling is `executor::command`).
//! Its handle is the process group; after a crash, what is left of that
//! group (if it still carries the run's id) is killed.

use super::{canonical, parse_fields, Fields, JobKind, KindSchema, SecretField};
use crate::executor::command::{self, CommandSettings};
use crate::executor::{ExecContext, ExecResult};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use steward_domain::{EnvName, JobSpec, RunId, ValidationError};

const MAX_ARGV: usize = 4096;

pub struct CommandKind {
    settings: CommandSettings,
}

impl CommandKind {
    pub fn new(settings: CommandSettings) -> Self {
        Self { settings }
    }
}

#[async_trait]
impl JobKind for CommandKind {
    fn name(&self) -> &'static str {
        "command"
    }

    fn schema(&self) -> KindSchema {
        KindSchema::of::<CommandSpec>()
    }

    fn secret_fields(&self) -> &'static [SecretField] {
        const FIELDS: &[SecretField] = &[
            SecretField::text("argv/*"),
            // Environment variables are where credentials of commands go
            // (PGPASSWORD, AWS_SECRET_ACCESS_KEY): the audit log shows none.
            SecretField::credential("env/*"),
        ];
        FIELDS
    }

    fn validate(&self, spec: &JobSpec) -> Result<Fields, ValidationError> {
        let spec: CommandSpec = parse_fields(spec)?;
        spec.validate()?;
        canonical(&spec)
    }

    fn prepares_ahead(&self) -> bool {
        true
    }

    async fn execute(&self, spec: &JobSpec, ctx: &ExecContext) -> ExecResult {
        match parse_fields::<CommandSpec>(spec) {
            Ok(spec) => command::execute(&spec, &self.settings, ctx).await,
            Err(e) => ExecResult::failed(format!("invalid spec: {e}")),
        }
    }

    async fn reconcile(&self, run: RunId, handle: &Value) -> String {
        let Some(group) = handle
            .get("process_group")
            .and_then(Value::as_i64)
            .and_then(|g| i32::try_from(g).ok())
            .filter(|g| *g > 1)
        else {
            return "no process group recorded".into();
        };
        // Only kills processes that carry the run's id.
        let killed = tokio::task::spawn_blocking(move || command::kill_leftovers(group, run))
            .await
            .unwrap_or(0);
        format!("killed {killed} process(es) left in process group {group}")
    }
}

/// A local command, run as argv without a shell unless `shell` is true.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    /// Program and arguments. With `shell: true`, exactly one element: the script
    /// given to `/bin/sh -c`. At most 4096 elements, no NUL bytes.
    #[schema(min_items = 1, max_items = 4096, example = json!(["/usr/local/bin/report", "--daily"]))]
    pub argv: Vec<String>,
    /// Run through `/bin/sh -c`. Explicit, and recorded in every run's output header.
    #[serde(default)]
    pub shell: bool,
    /// Absolute working directory; default `executor.workdir` of the server (`/`).
    #[serde(default)]
    pub workdir: Option<String>,
    /// Variables added to the process's environment, which is otherwise empty
    /// but for a minimal `PATH`, `STEWARD_RUN_ID`, `STEWARD_JOB_NAME`,
    /// `STEWARD_ATTEMPT`, `STEWARD_SCHEDULED_FOR` and, when it runs as another
    /// account, `HOME` and `USER`. A `PATH` here replaces the default.
    #[serde(default)]
    pub env: BTreeMap<EnvName, String>,
}

impl CommandSpec {
    pub fn validate(&self) -> Result<(), ValidationError> {
        let Some(program) = self.argv.first() else {
            return Err(ValidationError::new("argv", "must name a program"));
        };
        if program.is_empty() {
            return Err(ValidationError::new(
                "argv",
                "the program must not be empty",
            ));
        }
        if self.argv.len() > MAX_ARGV {
            return Err(ValidationError::new(
                "argv",
                format!("more than {MAX_ARGV} arguments"),
            ));
        }
        if let Some(i) = self.argv.iter().position(|a| a.contains('\0')) {
            return Err(ValidationError::new(
                format!("argv[{i}]"),
                "must not contain NUL bytes",
            ));
        }
        if let Some((name, _)) = self.env.iter().find(|(_, v)| v.contains('\0')) {
            return Err(ValidationError::new(
                format!("env.{}", name.as_str()),
                "must not contain NUL bytes",
            ));
        }
        if self.shell && self.argv.len() != 1 {
            return Err(ValidationError::new(
                "argv",
                "with shell: true, argv holds exactly one script",
            ));
        }
        if let Some(dir) = &self.workdir {
            if !dir.starts_with('/') {
                return Err(ValidationError::new("workdir", "must be an absolute path"));
            }
            if dir.contains('\0') {
                return Err(ValidationError::new(
                    "workdir",
                    "must not contain NUL bytes",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(fields: Value) -> Result<(), String> {
        let Value::Object(f) = fields else { panic!() };
        let spec = JobSpec::new("command", f).unwrap();
        CommandKind::new(CommandSettings::default())
            .validate(&spec)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn rules_name_the_field() {
        assert!(check(serde_json::json!({"argv": ["true"]})).is_ok());
        let e = check(serde_json::json!({"argv": ["a", "b"], "shell": true})).unwrap_err();
        assert!(e.contains("argv"), "{e}");
        let e = check(serde_json::json!({"argv": ["true"], "sh": 1})).unwrap_err();
        assert!(e.contains("sh"), "{e}");
        let e = check(serde_json::json!({"argv": []})).unwrap_err();
        assert!(e.contains("argv"), "{e}");
        let e = check(serde_json::json!({"argv": ["true"], "workdir": "tmp"})).unwrap_err();
        assert!(e.contains("workdir"), "{e}");
        let e = check(serde_json::json!({"argv": ["true"], "workdir": "/x\0--"})).unwrap_err();
        assert!(e.contains("workdir") && e.contains("NUL"), "{e}");
    }
}
