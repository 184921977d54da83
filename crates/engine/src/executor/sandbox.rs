//! The sandbox every command job runs in: the steward binary itself, in two
//! stages between Steward and the job.
//!
//! 1. The **supervisor** ([`HELPER_ARG`]) is started with an empty environment
//!    (so nothing the job's environment names, `LD_PRELOAD` say, is loaded
//!    into it), stays outside the job's Landlock domain and keeps Steward's
//!    user, so the job can neither read its memory nor (Landlock ABI 6) signal
//!    it. It is the job's child subreaper.
//! 2. The **gate** ([`GATE_ARG`]), the supervisor's child, also starts with an
//!    empty environment, reads the job's environment from its standard input
//!    (not argv: other users can read a process's argv), restricts itself with
//!    Landlock, drops to the job's account, and `exec`s the job, which keeps
//!    the restriction and the process id.
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
//! - **A cgroup per run** (`executor::cgroup`, where the machine allows):
//!   the gate enters it before anything else, and refuses `clone3` to the
//!   job by seccomp, so that nothing the job starts can be born elsewhere.
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

/// The first argument that turns the steward binary into the supervisor.
pub const HELPER_ARG: &str = "__steward-sandbox";
/// The first argument of the gate (started by the supervisor only).
pub const GATE_ARG: &str = "__steward-sandbox-gate";

/// The job's environment, as the gate reads it from its standard input.
const MAX_ENV_BYTES: u64 = 4 * 1024 * 1024;

/// Exit status of the helper when it could not start the job at all.
const CANNOT_START: u8 = 126;

/// How commands are isolated; built once at start.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// The steward binary (it runs the helper).
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
        let mut out: Vec<OsString> = vec![HELPER_ARG.into(), "--parent".into()];
        out.push(std::process::id().to_string().into());
        if self.required {
            out.push("--require".into());
        }
        if let Some(dir) = cgroup {
            out.extend(["--cgroup".into(), dir.as_os_str().to_owned()]);
        }
        for h in &self.hidden {
            out.push("--hide".into());
            out.push(h.clone().into_os_string());
        }
        for r in &self.readonly {
            out.push("--readonly".into());
            out.push(r.clone().into_os_string());
        }
        if let Some((uid, gid)) = run_as {
            out.extend(["--uid".into(), uid.to_string().into()]);
            out.extend(["--gid".into(), gid.to_string().into()]);
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
        .handle_access(AccessFs::from_all(ABI::V3))
        .and_then(landlock::Ruleset::create)
        .is_ok()
}

struct HelperArgs {
    parent: Option<i32>,
    require: bool,
    cgroup: Option<PathBuf>,
    hidden: Vec<PathBuf>,
    readonly: Vec<PathBuf>,
    uid: Option<u32>,
    gid: Option<u32>,
    program: PathBuf,
    args: Vec<OsString>,
}

impl HelperArgs {
    /// The gate's argv: the same rules and job, without the supervisor's parts.
    fn gate_args(&self) -> Vec<OsString> {
        let mut out: Vec<OsString> = vec![GATE_ARG.into()];
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
        if let Some(u) = self.uid {
            out.extend(["--uid".into(), u.to_string().into()]);
        }
        if let Some(g) = self.gid {
            out.extend(["--gid".into(), g.to_string().into()]);
        }
        out.push("--".into());
        out.push(self.program.clone().into_os_string());
        out.extend(self.args.iter().cloned());
        out
    }
}

fn parse(mut it: impl Iterator<Item = OsString>) -> Result<HelperArgs, String> {
    let mut a = HelperArgs {
        parent: None,
        require: false,
        cgroup: None,
        hidden: vec![],
        readonly: vec![],
        uid: None,
        gid: None,
        program: PathBuf::new(),
        args: vec![],
    };
    let number = |v: Option<OsString>| -> Result<u32, String> {
        v.and_then(|v| v.to_str()?.parse().ok())
            .ok_or_else(|| "--uid and --gid need a number".to_owned())
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
            Some("--cgroup") => a.cgroup = Some(it.next().ok_or("--cgroup needs a path")?.into()),
            Some("--hide") => a
                .hidden
                .push(it.next().ok_or("--hide needs a path")?.into()),
            Some("--readonly") => a
                .readonly
                .push(it.next().ok_or("--readonly needs a path")?.into()),
            Some("--uid") => a.uid = Some(number(it.next())?),
            Some("--gid") => a.gid = Some(number(it.next())?),
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
    // The gate inherits standard input (the job's environment from Steward)
    // and output; the standard library resets the signal mask in the child.
    // `/proc/self/exe`: this very binary, even if its path was replaced.
    #[allow(clippy::disallowed_methods)] // the command executor's helper starts the job
    let child = std::process::Command::new("/proc/self/exe")
        .args(a.gate_args())
        .env_clear()
        .spawn();
    let main = match child {
        Ok(c) => Pid::from_raw(i32::try_from(c.id()).unwrap_or(i32::MAX)),
        Err(e) => return refuse(&format!("could not start the sandbox gate: {e}")),
    };
    let status = supervise(main, &signals);
    end_all_descendants(main, &mut None);
    exit_like(status)
}

/// The gate's main: environment from stdin, Landlock, the job's account, exec.
pub fn gate_main(args: impl Iterator<Item = OsString>) -> ExitCode {
    use std::io::Read as _;
    use std::os::unix::process::CommandExt as _;
    let a = match parse(args) {
        Ok(a) => a,
        Err(e) => return refuse(&format!("bad gate arguments: {e}")),
    };
    let mut raw = Vec::new();
    if let Err(e) = std::io::stdin().take(MAX_ENV_BYTES).read_to_end(&mut raw) {
        return refuse(&format!("cannot read the job's environment: {e}"));
    }
    let env: Vec<(OsString, OsString)> = raw
        .split(|b| *b == 0)
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| {
            let i = kv.iter().position(|b| *b == b'=')?;
            use std::os::unix::ffi::OsStrExt as _;
            Some((
                std::ffi::OsStr::from_bytes(&kv[..i]).to_owned(),
                std::ffi::OsStr::from_bytes(&kv[i + 1..]).to_owned(),
            ))
        })
        .collect();
    // Into the run's cgroup first, so the job and all it starts are born there.
    if let Some(dir) = &a.cgroup {
        if let Err(e) = super::cgroup::enter(dir) {
            return refuse(&format!(
                "cannot enter the run's cgroup {}: {e}",
                dir.display()
            ));
        }
    }
    match restrict(&a.hidden, &a.readonly, a.require) {
        Ok(true) => {}
        Ok(false) if !a.require => {}
        Ok(false) => {
            return refuse(
                "this kernel does not enforce Landlock (ABI 3 or later), so the job could read \
                 Steward's key and database; refused (an admin may accept this with \
                 executor.allow_unisolated_commands)",
            )
        }
        Err(e) => return refuse(&format!("cannot isolate the job from Steward's files: {e}")),
    }
    if let Err(e) = drop_to(a.uid, a.gid) {
        return refuse(&format!("cannot switch to the job's account: {e}"));
    }
    if a.cgroup.is_some() {
        if let Err(e) = forbid_clone_into_cgroup() {
            return refuse(&format!("cannot keep the job in its cgroup: {e}"));
        }
    }
    #[allow(clippy::disallowed_methods)] // the command executor's gate becomes the job
    let err = std::process::Command::new(&a.program)
        .args(&a.args)
        .env_clear()
        .envs(env)
        .stdin(std::process::Stdio::null())
        .exec();
    refuse(&format!("could not start {:?}: {err}", a.program))
}

/// `clone3` fails with ENOSYS for the job and everything it starts (C
/// libraries and runtimes then use `clone`). `clone3(CLONE_INTO_CGROUP)`
/// places a child in the cgroup a directory descriptor names, and such a
/// descriptor can be opened with `O_PATH`, which Landlock does not check
/// (nor does a cgroup namespace stop it, unless cgroup2 is mounted with
/// `nsdelegate`): without this, a job with write access to a cgroup (root,
/// or Steward's own user under delegation) could start a child outside its
/// run's cgroup. Writing `cgroup.procs`, the other way out, is closed by
/// Landlock hiding every cgroup2 mount.
fn forbid_clone_into_cgroup() -> Result<(), String> {
    use seccompiler::{SeccompAction, SeccompFilter};
    // Required for an unprivileged process to install a filter (set by
    // Landlock already where it is enforced).
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| format!("seccomp on {}: {e:?}", std::env::consts::ARCH))?;
    let filter = SeccompFilter::new(
        [(libc::SYS_clone3, vec![])].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(|e| format!("seccomp filter: {e}"))?;
    let program: seccompiler::BpfProgram = filter
        .try_into()
        .map_err(|e| format!("seccomp filter: {e:?}"))?;
    seccompiler::apply_filter(&program).map_err(|e| format!("seccomp: {e}"))
}

/// Drops root for the job's account: no supplementary groups, then the group,
/// then the user (in that order: after the user, the others cannot change).
fn drop_to(uid: Option<u32>, gid: Option<u32>) -> Result<(), nix::Error> {
    use nix::unistd::{setgid, setgroups, setuid, Gid, Uid};
    if uid.is_none() && gid.is_none() {
        return Ok(());
    }
    if Uid::effective().is_root() {
        setgroups(&[])?;
    }
    if let Some(g) = gid {
        setgid(Gid::from_raw(g))?;
    }
    if let Some(u) = uid {
        setuid(Uid::from_raw(u))?;
    }
    Ok(())
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

/// SIGKILL to every descendant, again and again, until the supervisor has no
/// child left (descendants of killed processes are re-parented here). With
/// no child left there can be no descendant at all, so the usual ending (the
/// job left nothing behind) costs one `waitpid`, not a scan of `/proc`.
fn end_all_descendants(main: Pid, main_status: &mut Option<WaitStatus>) {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return, // ECHILD: nobody left
            Ok(WaitStatus::StillAlive) => {}
            Ok(s) => {
                if s.pid() == Some(main) {
                    *main_status = Some(s);
                }
                continue;
            }
        }
        signal_descendants(Signal::SIGKILL);
        match waitpid(None, None) {
            Ok(s) if s.pid() == Some(main) => *main_status = Some(s),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
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

/// The job's environment as the gate reads it: `KEY=VALUE` entries, each
/// ended by a NUL byte (values cannot contain NUL: specs refuse it).
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

/// Applies the Landlock rules hiding `hidden` and protecting `readonly`.
/// Ok(true) when enforced. With `require`, the file-system rights of ABI 3
/// (Linux 6.2: truncation included) are a hard requirement; newer rights and
/// the signal scope (ABI 6) are applied where the kernel has them.
fn restrict(hidden: &[PathBuf], readonly: &[PathBuf], require: bool) -> Result<bool, String> {
    use landlock::{
        path_beneath_rules, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr,
        RulesetCreatedAttr, RulesetStatus, Scope, ABI,
    };
    let newest = ABI::V6;
    let canonical = |ps: &[PathBuf]| -> Vec<PathBuf> {
        ps.iter()
            .filter_map(|h| std::fs::canonicalize(h).ok())
            .collect()
    };
    let readonly = canonical(readonly);
    let mut hidden = canonical(hidden);
    hidden.extend(readonly.iter().cloned());
    let (open, listable) = allowed_around(&hidden);
    let floor = if require {
        CompatLevel::HardRequirement
    } else {
        CompatLevel::BestEffort
    };
    let status = Ruleset::default()
        .set_compatibility(floor)
        .handle_access(AccessFs::from_all(ABI::V3))
        .map(|r| r.set_compatibility(CompatLevel::BestEffort))
        .and_then(|r| r.handle_access(AccessFs::from_all(newest)))
        .and_then(|r| r.scope(Scope::Signal))
        .and_then(Ruleset::create)
        .and_then(|r| r.add_rules(path_beneath_rules(&open, AccessFs::from_all(newest))))
        .and_then(|r| r.add_rules(path_beneath_rules(&listable, AccessFs::ReadDir)))
        .and_then(|r| {
            r.add_rules(path_beneath_rules(
                &readonly,
                AccessFs::Execute | AccessFs::ReadFile,
            ))
        })
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
            // A symbolic link beside a hidden path may point into it; a rule
            // on the link would be a rule on its target. Where links lead,
            // the real paths have their own rules.
            if is_hidden(&p) || e.file_type().map_or(true, |t| t.is_symlink()) {
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
        // A link beside the hidden path that points into it is no way in.
        std::os::unix::fs::symlink(root.join("a/data"), root.join("a/link")).unwrap();
        let (open, listable) = allowed_around(&[root.join("a/data")]);
        assert!(!open.contains(&root.join("a/link")));
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
            readonly: vec!["/bin/steward".into()],
            required: true,
            cgroups: None,
        };
        let args = s.args(
            Path::new("/bin/echo"),
            &["--".into(), "x".into()],
            Some((65534, 65534)),
            Some(Path::new("/sys/fs/cgroup/steward-x/run-7")),
        );
        assert_eq!(args[0], HELPER_ARG);
        let a = parse(args.into_iter().skip(1)).unwrap();
        assert!(a.require);
        assert_eq!(
            a.cgroup,
            Some(PathBuf::from("/sys/fs/cgroup/steward-x/run-7"))
        );
        let gate = a.gate_args();
        assert!(gate
            .windows(2)
            .any(|w| w[0] == "--cgroup" && w[1] == "/sys/fs/cgroup/steward-x/run-7"));
        assert_eq!(a.hidden, vec![PathBuf::from("/data")]);
        assert_eq!(a.readonly, vec![PathBuf::from("/bin/steward")]);
        assert_eq!((a.uid, a.gid), (Some(65534), Some(65534)));
        assert_eq!(a.program, PathBuf::from("/bin/echo"));
        assert_eq!(a.args, vec![OsString::from("--"), OsString::from("x")]);
        // The gate gets the same rules and job.
        let g = a.gate_args();
        assert_eq!(g[0], GATE_ARG);
        let b = parse(g.into_iter().skip(1)).unwrap();
        assert_eq!((b.hidden, b.readonly, b.uid), (a.hidden, a.readonly, a.uid));
        assert_eq!((b.program, b.args), (a.program, a.args));
    }
}
