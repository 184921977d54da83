//! Steward's side of the command sandbox: the rules every command runs
//! under, and the supervisor's command line. The launcher and the
//! supervisors (the steward binary, dispatched first thing in `main`) are
//! the `steward-sandbox` crate, which says what each rule does;
//! `executor::launcher` is Steward's end of the launcher.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use steward_sandbox::landlock_available;

/// How commands are isolated; built once at start.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// The file rules every job gets: the paths no job may read or write,
    /// those it may only read and execute (the steward binary: a job that
    /// could rewrite it would run before the next job's sandbox), and whether
    /// Landlock is required (the default when jobs run as Steward's own
    /// user, since then nothing else protects it). The launcher was given
    /// the same rules, and builds their Landlock ruleset once.
    pub rules: steward_sandbox::Rules,
    /// Where each run gets a cgroup of its own (None: the machine gives none).
    pub cgroups: Option<super::cgroup::RunCgroups>,
    /// Starts each job's supervisor (one launcher process per Steward).
    pub launcher: Arc<super::launcher::Launcher>,
}

impl Sandbox {
    /// `helper`: the steward binary (it runs the launcher).
    pub fn new(
        helper: PathBuf,
        rules: steward_sandbox::Rules,
        cgroups: Option<super::cgroup::RunCgroups>,
    ) -> Self {
        Self {
            launcher: Arc::new(super::launcher::Launcher::new(helper, rules.clone())),
            rules,
            cgroups,
        }
    }

    /// The supervisor's command line: the rules, the account, the instant
    /// to `exec` at (nanoseconds since the epoch; None: at once), then the job.
    pub fn command_line(
        &self,
        program: &Path,
        args: &[String],
        run_as: Option<(u32, u32)>,
        workdir: &Path,
        cgroup: Option<&Path>,
        start_at: Option<i64>,
    ) -> Vec<OsString> {
        steward_sandbox::Rules {
            workdir: Some(workdir.to_path_buf()),
            cgroup: cgroup.map(Path::to_path_buf),
            account: run_as,
            start_at,
            ..self.rules.clone()
        }
        .command_line(program, args)
    }
}
