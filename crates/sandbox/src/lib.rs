//! The sandbox every command job runs in, and how it is started.
//!
//! - **The launcher** (`launcher`, [`LAUNCHER_ARG`]): one long-lived copy of
//!   the steward binary per Steward, started with an empty environment, that
//!   forks one supervisor per job on Steward's request (`wire`).
//! - **The supervisor** (`supervisor`), one per job, stays outside the job's
//!   Landlock domain and keeps Steward's user, so the job can neither read
//!   its memory nor (Landlock ABI 6) signal it. It reads the job's command
//!   line and environment from a pipe (not argv: other users can read a
//!   process's argv), and nothing the job's environment names (`LD_PRELOAD`
//!   say) is loaded into it.
//! - **One clone per job** (`spawn`): the supervisor prepares every rule
//!   first, then clones itself straight into the run's cgroup (`clone3` with
//!   `CLONE_INTO_CGROUP`: born inside, not moved in, which would wait for the
//!   kernel's cgroup lock), and the clone applies the rules and `exec`s the
//!   job, which keeps them and the process id.
//! - **Landlock** (`confine`) hides Steward's own files (the data directory
//!   with the database and the key file, the configuration, secret files)
//!   from the job and from everything it starts, whatever user both run as.
//!   Landlock grants by allow-list, so the rules allow everything *beside*
//!   each hidden path: every entry of each directory on the way down to it,
//!   except the one that leads to it. The directories on the way may be
//!   listed, not written. A Landlock domain also cannot ptrace or (ABI 6)
//!   signal processes outside it, so the job cannot read Steward's memory.
//! - **A child subreaper** (`reap`): a process that double-forks into a new
//!   session leaves the run's process group, but not its subreaper. When the
//!   job's main process ends, or the run is stopped, the supervisor kills
//!   every descendant it has, until none is left.
//! - **A cgroup per run** (Steward's `executor::cgroup`, where the machine
//!   allows): the job is born in it, and `clone3` is refused to the job by
//!   seccomp, so that nothing the job starts can be born elsewhere.
//!
//! Signals from Steward to the supervisor (the leader of the run's process
//! group): SIGTERM asks every descendant to stop (SIGTERM to each, in or out
//! of the group); SIGUSR1 kills them all (SIGKILL). If the launcher dies (it
//! does when Steward dies), the kernel sends each supervisor SIGUSR1
//! (parent-death signal). The supervisor reports how the job's main process
//! ended on its status pipe.
//!
//! This crate holds the only `unsafe` of the sandbox, one function
//! (`spawn::clone_and_run`), with its safety argument.

mod confine;
mod launcher;
mod reap;
mod spawn;
mod supervisor;
pub mod wire;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub use confine::landlock_available;

/// The first argument that turns the steward binary into the launcher.
pub const LAUNCHER_ARG: &str = "__steward-launcher";

/// Exit status of the supervisor when it could not start the job at all.
const CANNOT_START: u8 = 126;

/// What the supervisor is told in its request: the rules, the account and
/// the job. Steward builds it with [`Rules::command_line`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// The job's working directory.
    pub workdir: Option<PathBuf>,
    /// Refuse to run the job when Landlock cannot be enforced.
    pub require: bool,
    /// The run's cgroup directory.
    pub cgroup: Option<PathBuf>,
    /// Paths the job may neither read nor write.
    pub hidden: Vec<PathBuf>,
    /// Paths the job may read and execute only.
    pub readonly: Vec<PathBuf>,
    /// The job's account (uid, gid); None keeps Steward's.
    pub account: Option<(u32, u32)>,
    /// Not before this wall-clock instant (nanoseconds since the Unix epoch,
    /// `CLOCK_REALTIME`) does the job `exec`: a scheduled run is prepared
    /// ahead of its instant (`spawn`), so that only the `exec` is left when
    /// the instant comes.
    pub start_at: Option<i64>,
}

impl Rules {
    /// The supervisor's command line: the rules, then the job.
    pub fn command_line(&self, program: &Path, args: &[String]) -> Vec<OsString> {
        let mut out: Vec<OsString> = vec![];
        if let Some(dir) = &self.workdir {
            out.extend(["--workdir".into(), dir.clone().into_os_string()]);
        }
        if self.require {
            out.push("--require".into());
        }
        if let Some(dir) = &self.cgroup {
            out.extend(["--cgroup".into(), dir.clone().into_os_string()]);
        }
        for h in &self.hidden {
            out.extend(["--hide".into(), h.clone().into_os_string()]);
        }
        for r in &self.readonly {
            out.extend(["--readonly".into(), r.clone().into_os_string()]);
        }
        if let Some((uid, gid)) = self.account {
            out.extend(["--uid".into(), uid.to_string().into()]);
            out.extend(["--gid".into(), gid.to_string().into()]);
        }
        if let Some(at) = self.start_at {
            out.extend(["--start-at".into(), at.to_string().into()]);
        }
        out.push("--".into());
        out.push(program.as_os_str().to_owned());
        out.extend(args.iter().map(OsString::from));
        out
    }
}

/// The rules and the job, as the supervisor parses them.
#[derive(Debug)]
struct Invocation {
    rules: Rules,
    program: PathBuf,
    args: Vec<OsString>,
}

fn parse(mut it: impl Iterator<Item = OsString>) -> Result<Invocation, String> {
    let (rules, separated) = parse_rules(&mut it)?;
    if !separated {
        return Err("no program given".into());
    }
    let program = it.next().ok_or("no program given")?.into();
    Ok(Invocation {
        rules,
        program,
        args: it.collect(),
    })
}

/// The rules' flags, up to `--` (then true) or the end (false).
fn parse_rules(it: &mut impl Iterator<Item = OsString>) -> Result<(Rules, bool), String> {
    let mut rules = Rules::default();
    let (mut uid, mut gid) = (None, None);
    let number = |v: Option<OsString>, what: &str| -> Result<u32, String> {
        v.and_then(|v| v.to_str()?.parse().ok())
            .ok_or_else(|| format!("{what} needs a number"))
    };
    let mut separated = false;
    while let Some(arg) = it.next() {
        match arg.to_str() {
            Some("--workdir") => {
                rules.workdir = Some(it.next().ok_or("--workdir needs a path")?.into());
            }
            Some("--require") => rules.require = true,
            Some("--cgroup") => {
                rules.cgroup = Some(it.next().ok_or("--cgroup needs a path")?.into());
            }
            Some("--hide") => rules
                .hidden
                .push(it.next().ok_or("--hide needs a path")?.into()),
            Some("--readonly") => rules
                .readonly
                .push(it.next().ok_or("--readonly needs a path")?.into()),
            Some("--uid") => uid = Some(number(it.next(), "--uid")?),
            Some("--gid") => gid = Some(number(it.next(), "--gid")?),
            Some("--start-at") => {
                rules.start_at = Some(
                    it.next()
                        .and_then(|v| v.to_str()?.parse().ok())
                        .ok_or("--start-at needs nanoseconds since the epoch")?,
                );
            }
            Some("--") => {
                separated = true;
                break;
            }
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    rules.account = match (uid, gid) {
        (Some(u), Some(g)) => Some((u, g)),
        (None, None) => None,
        _ => return Err("--uid and --gid go together".into()),
    };
    Ok((rules, separated))
}

/// The launcher's command line (after the binary): Steward's process id and
/// the file rules every job gets (Landlock's part of `rules`), so that the
/// launcher builds the Landlock ruleset once, not once per job.
pub fn launcher_args(parent: u32, rules: &Rules) -> Vec<OsString> {
    let mut out: Vec<OsString> = vec![
        LAUNCHER_ARG.into(),
        "--parent".into(),
        parent.to_string().into(),
    ];
    if rules.require {
        out.push("--require".into());
    }
    for h in &rules.hidden {
        out.extend(["--hide".into(), h.clone().into_os_string()]);
    }
    for r in &rules.readonly {
        out.extend(["--readonly".into(), r.clone().into_os_string()]);
    }
    out
}

/// The launcher's main: `args` are the arguments after [`LAUNCHER_ARG`]
/// (see [`launcher_args`]). It must run before any thread is started (see
/// `spawn`), and its standard input must be Steward's connection.
pub fn launcher_main(mut args: impl Iterator<Item = OsString>) -> ExitCode {
    let parent = match (args.next(), args.next()) {
        (Some(flag), Some(pid)) if flag == "--parent" => pid.to_str().and_then(|p| p.parse().ok()),
        _ => None,
    };
    let Some(parent) = parent else {
        return refuse("the launcher needs --parent <pid>");
    };
    match parse_rules(&mut args) {
        Ok((rules, false)) => launcher::main(parent, &rules),
        Ok((_, true)) => refuse("the launcher takes no program"),
        Err(e) => refuse(&format!("bad launcher arguments: {e}")),
    }
}

fn refuse(msg: &str) -> ExitCode {
    eprintln!("steward: {msg}");
    ExitCode::from(CANNOT_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_round_trips() {
        let rules = Rules {
            workdir: Some("/srv/work".into()),
            require: true,
            cgroup: Some("/sys/fs/cgroup/steward-x/run-7".into()),
            hidden: vec!["/data".into()],
            readonly: vec!["/bin/steward".into()],
            account: Some((65534, 65534)),
            start_at: Some(1_796_000_000_123_456_789),
        };
        let line = rules.command_line(Path::new("/bin/echo"), &["--".into(), "x".into()]);
        let inv = parse(line.into_iter()).unwrap();
        assert_eq!(inv.rules, rules);
        assert_eq!(inv.program, PathBuf::from("/bin/echo"));
        assert_eq!(inv.args, vec![OsString::from("--"), OsString::from("x")]);
    }

    #[test]
    fn the_launchers_rules_round_trip() {
        let rules = Rules {
            require: true,
            hidden: vec!["/data".into(), "/etc/steward.toml".into()],
            readonly: vec!["/bin/steward".into()],
            ..Rules::default()
        };
        let line = launcher_args(4711, &rules);
        assert_eq!(
            line[..3],
            [LAUNCHER_ARG, "--parent", "4711"].map(OsString::from)
        );
        let (parsed, separated) = parse_rules(&mut line.into_iter().skip(3)).unwrap();
        assert_eq!((parsed, separated), (rules, false));
    }

    #[test]
    fn half_an_account_is_refused() {
        let line = ["--uid", "1", "--", "/bin/true"].map(OsString::from);
        let err = parse(line.into_iter()).unwrap_err();
        assert!(err.contains("--uid and --gid"), "{err}");
    }
}
