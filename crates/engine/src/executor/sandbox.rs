//! Steward's side of the command sandbox: the rules every command runs
//! under, and the supervisor's command line. The supervisor itself (the
//! steward binary, dispatched first thing in `main`) is the
//! `steward-sandbox` crate, which says what each rule does.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub use steward_sandbox::{encode_env, landlock_available, HELPER_ARG};

/// How commands are isolated; built once at start.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// The steward binary (it runs the supervisor).
    pub helper: PathBuf,
    /// Paths no job may read or write.
    pub hidden: Vec<PathBuf>,
    /// Paths a job may read and execute but not change (the steward binary:
    /// a job that could rewrite it would run before the next job's sandbox).
    pub readonly: Vec<PathBuf>,
    /// Refuse to run a job when Landlock cannot be enforced (the default when
    /// jobs run as Steward's own user, since then nothing else protects it).
    pub required: bool,
    /// Where each run gets a cgroup of its own (None: the machine gives none).
    pub cgroups: Option<super::cgroup::RunCgroups>,
}

impl Sandbox {
    /// The supervisor's argv: the rules, the account, then the job.
    pub fn args(
        &self,
        program: &Path,
        args: &[String],
        run_as: Option<(u32, u32)>,
        cgroup: Option<&Path>,
    ) -> Vec<OsString> {
        steward_sandbox::Rules {
            parent: i32::try_from(std::process::id()).ok(),
            require: self.required,
            cgroup: cgroup.map(Path::to_path_buf),
            hidden: self.hidden.clone(),
            readonly: self.readonly.clone(),
            account: run_as,
        }
        .command_line(program, args)
    }
}
