//! The sandbox every command job runs in: the steward binary itself, run as
//! the job's **supervisor** ([`HELPER_ARG`]), which starts the job confined.
//!
//! - The supervisor is started with an empty environment (so nothing the
//!   job's environment names, `LD_PRELOAD` say, is loaded into it), stays
//!   outside the job's Landlock domain and keeps Steward's user, so the job
//!   can neither read its memory nor (Landlock ABI 6) signal it. It reads the
//!   job's environment from its standard input (not argv: other users can
//!   read a process's argv).
//! - **One process start per job** (`spawn`): the supervisor prepares every
//!   rule first, then clones itself straight into the run's cgroup
//!   (`clone3` with `CLONE_INTO_CGROUP`: born inside, not moved in, which
//!   would wait for the kernel's cgroup lock), and the clone applies the
//!   rules and `exec`s the job, which keeps them and the process id. There
//!   is no second copy of Steward between the two.
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
//! Signals from Steward to the supervisor: SIGTERM asks every descendant to
//! stop (SIGTERM to each, in or out of the group); SIGUSR1 kills them all
//! (SIGKILL). If Steward dies, the kernel sends the supervisor SIGUSR1
//! (parent-death signal). The supervisor exits with the main process's
//! status, re-raising its signal.
//!
//! This crate holds the only `unsafe` of the sandbox, one function
//! (`spawn::clone_and_run`), with its safety argument.

mod confine;
mod reap;
mod spawn;

use nix::sys::signal::{SigSet, Signal};
use nix::unistd::getppid;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub use confine::landlock_available;

/// The first argument that turns the steward binary into the supervisor.
pub const HELPER_ARG: &str = "__steward-sandbox";

/// The job's environment, as the supervisor reads it from its standard input.
const MAX_ENV_BYTES: u64 = 4 * 1024 * 1024;

/// Exit status of the supervisor when it could not start the job at all.
const CANNOT_START: u8 = 126;

/// What the supervisor is told on its command line: the rules, the account
/// and the job. Steward builds it with [`Rules::command_line`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// Steward's process id: the supervisor refuses to start the job if its
    /// parent is already someone else (Steward died in between).
    pub parent: Option<i32>,
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
}

impl Rules {
    /// The supervisor's argv (after the binary): the rules, then the job.
    pub fn command_line(&self, program: &Path, args: &[String]) -> Vec<OsString> {
        let mut out: Vec<OsString> = vec![HELPER_ARG.into()];
        if let Some(p) = self.parent {
            out.extend(["--parent".into(), p.to_string().into()]);
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
    let mut rules = Rules::default();
    let (mut uid, mut gid) = (None, None);
    let number = |v: Option<OsString>, what: &str| -> Result<u32, String> {
        v.and_then(|v| v.to_str()?.parse().ok())
            .ok_or_else(|| format!("{what} needs a number"))
    };
    loop {
        let Some(arg) = it.next() else {
            return Err("no program given".into());
        };
        match arg.to_str() {
            Some("--parent") => {
                rules.parent = Some(
                    number(it.next(), "--parent")?
                        .try_into()
                        .map_err(|_| "--parent is out of range".to_owned())?,
                );
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
            Some("--") => break,
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    rules.account = match (uid, gid) {
        (Some(u), Some(g)) => Some((u, g)),
        (None, None) => None,
        _ => return Err("--uid and --gid go together".into()),
    };
    let program = it.next().ok_or("no program given")?.into();
    Ok(Invocation {
        rules,
        program,
        args: it.collect(),
    })
}

/// The supervisor's main: `args` are the arguments after [`HELPER_ARG`].
/// It must run before any thread is started (see `spawn`).
pub fn helper_main(args: impl Iterator<Item = OsString>) -> ExitCode {
    let inv = match parse(args) {
        Ok(a) => a,
        Err(e) => return refuse(&format!("bad helper arguments: {e}")),
    };
    // Orphans of the job are re-parented here, not to init.
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        return refuse(&format!("cannot become the job's subreaper: {e}"));
    }
    // If Steward dies, take the job down with it.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGUSR1);
    if inv.rules.parent.is_some_and(|p| getppid().as_raw() != p) {
        return refuse("Steward ended before the job started");
    }
    let env = match read_env() {
        Ok(env) => env,
        Err(e) => return refuse(&format!("cannot read the job's environment: {e}")),
    };
    // Everything the job's process does before `exec` is prepared here.
    let job = match spawn::Job::prepare(&inv.program, &inv.args, &env) {
        Ok(j) => j,
        Err(e) => return refuse(&e),
    };
    let confinement = match confine::Confinement::prepare(&inv.rules) {
        Ok(c) => c,
        Err(e) => return refuse(&e),
    };
    let signals: SigSet = [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGUSR1,
    ]
    .into_iter()
    .collect();
    if let Err(e) = signals.thread_block() {
        return refuse(&format!("cannot block signals: {e}"));
    }
    let main = match spawn::start(inv.rules.cgroup.as_deref(), job, confinement) {
        Ok(pid) => pid,
        Err(e) => return refuse(&e),
    };
    let status = reap::supervise(main, &signals);
    reap::end_all_descendants(main, &mut None);
    reap::exit_like(status)
}

/// The job's environment from standard input: `KEY=VALUE` entries, each
/// ended by a NUL byte.
fn read_env() -> std::io::Result<Vec<(OsString, OsString)>> {
    use std::io::Read as _;
    use std::os::unix::ffi::OsStrExt as _;
    let mut raw = Vec::new();
    std::io::stdin().take(MAX_ENV_BYTES).read_to_end(&mut raw)?;
    Ok(raw
        .split(|b| *b == 0)
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| {
            let i = kv.iter().position(|b| *b == b'=')?;
            Some((
                std::ffi::OsStr::from_bytes(&kv[..i]).to_owned(),
                std::ffi::OsStr::from_bytes(&kv[i + 1..]).to_owned(),
            ))
        })
        .collect())
}

/// The job's environment as the supervisor reads it: `KEY=VALUE` entries,
/// each ended by a NUL byte (values cannot contain NUL: specs refuse it).
pub fn encode_env<'a>(vars: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in vars {
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
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
            parent: Some(4711),
            require: true,
            cgroup: Some("/sys/fs/cgroup/steward-x/run-7".into()),
            hidden: vec!["/data".into()],
            readonly: vec!["/bin/steward".into()],
            account: Some((65534, 65534)),
        };
        let line = rules.command_line(Path::new("/bin/echo"), &["--".into(), "x".into()]);
        assert_eq!(line[0], HELPER_ARG);
        let inv = parse(line.into_iter().skip(1)).unwrap();
        assert_eq!(inv.rules, rules);
        assert_eq!(inv.program, PathBuf::from("/bin/echo"));
        assert_eq!(inv.args, vec![OsString::from("--"), OsString::from("x")]);
    }

    #[test]
    fn half_an_account_is_refused() {
        let line = ["--uid", "1", "--", "/bin/true"].map(OsString::from);
        let err = parse(line.into_iter()).unwrap_err();
        assert!(err.contains("--uid and --gid"), "{err}");
    }

    #[test]
    fn the_environment_encoding_round_trips_through_the_parser() {
        let raw = encode_env([("A", "1"), ("B", "x=y")]);
        let parts: Vec<_> = raw.split(|b| *b == 0).filter(|p| !p.is_empty()).collect();
        assert_eq!(parts, vec![&b"A=1"[..], &b"B=x=y"[..]]);
    }
}
