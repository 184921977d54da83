//! The sandbox every command job runs in: a small helper process (the steward
//! binary itself, started with [`HELPER_ARG`]) that stands between Steward and
//! the job and does two things the kernel offers and a plain spawn does not.
//!
//! - **Landlock** hides Steward's own files (the data directory with the
//!   database and the key file, the configuration, secret files) from the job
//!   and from everything it starts, whatever user both run as. Landlock grants
//!   by allow-list, so the helper allows everything *beside* each hidden path:
//!   every entry of each directory on the way down to it, except the one that
//!   leads to it. The directories on the way may be listed, not written: a job
//!   cannot create files directly in a directory that contains the data
//!   directory. A Landlock domain also cannot ptrace or (ABI 6) signal
//!   processes outside it, so the job cannot read Steward's memory either.
//! - **A child subreaper**: a process that double-forks into a new session
//!   leaves the run's process group, but not its subreaper. When the job's
//!   main process ends, or the run is stopped, the helper kills every
//!   descendant it has, until none is left.
//!
//! Signals from Steward to the helper: SIGTERM asks every descendant to stop
//! (SIGTERM to each, in or out of the group); SIGUSR1 kills them all (SIGKILL).
//! If Steward dies, the kernel sends the helper SIGUSR1 (parent-death signal).
//! The helper exits with the main process's status, re-raising its signal.

use nix::sys::signal::{kill, raise, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{getpid, getppid, Pid};
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The first argument that turns the steward binary into the helper.
pub const HELPER_ARG: &str = "__steward-sandbox";

/// Exit status of the helper when it could not start the job at all.
const CANNOT_START: u8 = 126;

/// How commands are isolated; built once at start.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// The steward binary (it runs the helper).
    pub helper: PathBuf,
    /// Paths no job may read or write.
    pub hidden: Vec<PathBuf>,
    /// Refuse to run a job when Landlock cannot be enforced (the default when
    /// jobs run as Steward's own user, since then nothing else protects it).
    pub required: bool,
}

impl Sandbox {
    /// The helper's argv (after the program): hidden paths, then the job.
    pub fn args(&self, program: &Path, args: &[String]) -> Vec<OsString> {
        let mut out: Vec<OsString> = vec![HELPER_ARG.into(), "--parent".into()];
        out.push(std::process::id().to_string().into());
        if self.required {
            out.push("--require".into());
        }
        for h in &self.hidden {
            out.push("--hide".into());
            out.push(h.clone().into_os_string());
        }
        out.push("--".into());
        out.push(program.as_os_str().to_owned());
        out.extend(args.iter().map(OsString::from));
        out
    }
}

/// Whether this kernel enforces Landlock (checked once at start, for the warning).
pub fn landlock_available() -> bool {
    use landlock::{Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, ABI};
    Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(ABI::V1))
        .and_then(landlock::Ruleset::create)
        .is_ok()
}

struct HelperArgs {
    parent: Option<i32>,
    require: bool,
    hidden: Vec<PathBuf>,
    program: PathBuf,
    args: Vec<OsString>,
}

fn parse(mut it: impl Iterator<Item = OsString>) -> Result<HelperArgs, String> {
    let mut a = HelperArgs {
        parent: None,
        require: false,
        hidden: vec![],
        program: PathBuf::new(),
        args: vec![],
    };
    loop {
        let Some(arg) = it.next() else {
            return Err("no program given".into());
        };
        match arg.to_str() {
            Some("--parent") => {
                a.parent = it.next().and_then(|p| p.to_str()?.parse().ok());
            }
            Some("--require") => a.require = true,
            Some("--hide") => a
                .hidden
                .push(it.next().ok_or("--hide needs a path")?.into()),
            Some("--") => break,
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    a.program = it.next().ok_or("no program given")?.into();
    a.args = it.collect();
    Ok(a)
}

/// The helper's main: `args` are the arguments after [`HELPER_ARG`].
pub fn helper_main(args: impl Iterator<Item = OsString>) -> ExitCode {
    let a = match parse(args) {
        Ok(a) => a,
        Err(e) => return refuse(&format!("bad helper arguments: {e}")),
    };
    // Orphans of the job are re-parented here, not to init.
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        return refuse(&format!("cannot become the job's subreaper: {e}"));
    }
    // If Steward dies, take the job down with it.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGUSR1);
    if a.parent.is_some_and(|p| getppid().as_raw() != p) {
        return refuse("Steward ended before the job started");
    }
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
    match restrict(&a.hidden) {
        Ok(true) => {}
        Ok(false) if !a.require => {}
        Ok(false) => {
            return refuse(
                "this kernel does not enforce Landlock, so the job could read Steward's key and \
                 database; refused (an admin may accept this with executor.allow_unisolated_commands)",
            )
        }
        Err(e) => return refuse(&format!("cannot isolate the job from Steward's files: {e}")),
    }
    // The standard library resets the signal mask and dispositions in the child.
    #[allow(clippy::disallowed_methods)] // the command executor's helper starts the job
    let child = std::process::Command::new(&a.program).args(&a.args).spawn();
    let main = match child {
        Ok(c) => Pid::from_raw(i32::try_from(c.id()).unwrap_or(i32::MAX)),
        Err(e) => return refuse(&format!("could not start {:?}: {e}", a.program)),
    };
    let status = supervise(main, &signals);
    end_all_descendants(main, &mut None);
    exit_like(status)
}

/// Waits for the main process, relaying Steward's stop requests to every
/// descendant. Returns how the main process ended.
fn supervise(main: Pid, signals: &SigSet) -> WaitStatus {
    let mut main_status = None;
    loop {
        reap(main, &mut main_status);
        if let Some(s) = main_status {
            return s;
        }
        match signals.wait() {
            Ok(Signal::SIGCHLD) => {}
            Ok(Signal::SIGUSR1) => signal_descendants(Signal::SIGKILL),
            Ok(_) => signal_descendants(Signal::SIGTERM),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
}

/// Collects exited children without blocking; notes the main one's status.
fn reap(main: Pid, main_status: &mut Option<WaitStatus>) {
    while let Ok(s) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        match s {
            WaitStatus::StillAlive => break,
            s if s.pid() == Some(main) => *main_status = Some(s),
            _ => {}
        }
    }
}

/// SIGKILL to every descendant, again and again, until the helper has no
/// child left (descendants of killed processes are re-parented here).
fn end_all_descendants(main: Pid, main_status: &mut Option<WaitStatus>) {
    loop {
        signal_descendants(Signal::SIGKILL);
        match waitpid(None, None) {
            Ok(s) if s.pid() == Some(main) => *main_status = Some(s),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return, // ECHILD: nobody left
        }
    }
}

fn signal_descendants(sig: Signal) {
    for pid in descendants(getpid().as_raw()) {
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

/// Every process whose chain of parents leads to `root`, from `/proc`.
fn descendants(root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            if let Some(ppid) = parent_of(pid) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = vec![];
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).map_or(&[][..], Vec::as_slice) {
            out.push(c);
            todo.push(c);
        }
    }
    out
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name, which is in parentheses and may contain anything.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn exit_like(status: WaitStatus) -> ExitCode {
    match status {
        WaitStatus::Exited(_, code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        WaitStatus::Signaled(_, sig, _) => {
            // Die of the same signal, so Steward records it as the job's.
            let _ = SigSet::all().thread_unblock();
            let _ = raise(sig);
            ExitCode::from(128u8.saturating_add(u8::try_from(sig as i32).unwrap_or(0)))
        }
        _ => ExitCode::FAILURE,
    }
}

fn refuse(msg: &str) -> ExitCode {
    eprintln!("steward: {msg}");
    ExitCode::from(CANNOT_START)
}

/// Applies the Landlock rules hiding `hidden`. Ok(true) when enforced.
fn restrict(hidden: &[PathBuf]) -> Result<bool, String> {
    use landlock::{
        path_beneath_rules, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr,
        RulesetStatus, Scope, ABI,
    };
    let abi = ABI::V6;
    let hidden: Vec<PathBuf> = hidden
        .iter()
        .filter_map(|h| std::fs::canonicalize(h).ok())
        .collect();
    let (open, listable) = allowed_around(&hidden);
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .and_then(|r| r.scope(Scope::Signal))
        .and_then(Ruleset::create)
        .and_then(|r| r.add_rules(path_beneath_rules(&open, AccessFs::from_all(abi))))
        .and_then(|r| r.add_rules(path_beneath_rules(&listable, AccessFs::ReadDir)))
        .and_then(landlock::RulesetCreated::restrict_self)
        .map_err(|e| e.to_string())?;
    Ok(status.ruleset != RulesetStatus::NotEnforced)
}

/// The paths to allow fully (everything beside the hidden paths) and the
/// directories on the way to them (listable only).
fn allowed_around(hidden: &[PathBuf]) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let is_hidden = |p: &Path| hidden.iter().any(|h| h == p);
    let leads_to_hidden = |p: &Path| hidden.iter().any(|h| h != p && h.starts_with(p));
    let mut open = vec![];
    let mut listable = vec![];
    let mut todo = vec![PathBuf::from("/")];
    if hidden.is_empty() {
        return (todo, listable);
    }
    while let Some(dir) = todo.pop() {
        listable.push(dir.clone());
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if is_hidden(&p) {
                continue;
            }
            if leads_to_hidden(&p) {
                todo.push(p);
            } else {
                open.push(p);
            }
        }
    }
    (open, listable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_beside_the_hidden_path_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        for d in ["a/data", "a/work", "b"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let (open, listable) = allowed_around(&[root.join("a/data")]);
        assert!(open.contains(&root.join("a/work")));
        assert!(open.contains(&root.join("b")));
        assert!(!open.iter().any(|p| p.starts_with(root.join("a/data"))));
        assert!(listable.contains(&root.join("a")));
        assert!(listable.contains(&PathBuf::from("/")));
        assert!(!open.contains(&root.join("a")));
    }

    #[test]
    fn helper_arguments_round_trip() {
        let s = Sandbox {
            helper: "/bin/steward".into(),
            hidden: vec!["/data".into()],
            required: true,
        };
        let args = s.args(Path::new("/bin/echo"), &["--".into(), "x".into()]);
        assert_eq!(args[0], HELPER_ARG);
        let a = parse(args.into_iter().skip(1)).unwrap();
        assert!(a.require);
        assert_eq!(a.hidden, vec![PathBuf::from("/data")]);
        assert_eq!(a.program, PathBuf::from("/bin/echo"));
        assert_eq!(a.args, vec![OsString::from("--"), OsString::from("x")]);
    }
}
