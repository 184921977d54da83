//! Local commands: argv without a shell (unless the spec says `shell: true`), a
//! clean environment, stdin closed, a process group of their own, and on timeout
//! or cancel SIGTERM to the whole group, then SIGKILL after the grace period.
//! Each command runs under a supervisor forked by the launcher
//! (`executor::launcher`, `executor::sandbox`): Landlock hides Steward's own
//! files, and as the job's subreaper it kills every descendant, also those
//! that left the group with `setsid`, when the main process ends; whatever is
//! left in the group is killed too, so no orphan outlives its run.

use super::{ExecContext, ExecResult};
use crate::kinds::command::CommandSpec;
use crate::output::Stream;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::{Gid, Pid, Uid};
use std::os::unix::process::ExitStatusExt as _;
use std::process::Stdio;
use std::time::Duration;
use steward_domain::{RunOutcome, RunStatus};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::Command;

const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The account commands run as, when Steward itself runs as root.
#[derive(Debug, Clone)]
pub struct RunAs {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
    pub home: String,
}

impl RunAs {
    /// Looks the user up in the system's user database.
    pub fn lookup(name: &str) -> Result<Self, String> {
        match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => Ok(Self {
                name: u.name,
                uid: u.uid,
                gid: u.gid,
                home: u.dir.to_string_lossy().into_owned(),
            }),
            Ok(None) => Err(format!("user {name:?} does not exist")),
            Err(e) => Err(format!("cannot look up user {name:?}: {e}")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CommandSettings {
    pub kill_grace: Duration,
    pub default_workdir: String,
    /// Set only when Steward runs as root.
    pub run_as: Option<RunAs>,
    /// Runs each command under a supervisor (Landlock, subreaper, cgroup).
    pub sandbox: Option<super::sandbox::Sandbox>,
}

impl Default for CommandSettings {
    /// Unsandboxed, as Steward's own user, in `/`: for describing the kind
    /// and for engine unit tests (the binary always sets a sandbox).
    fn default() -> Self {
        Self {
            kill_grace: Duration::from_secs(10),
            default_workdir: "/".into(),
            run_as: None,
            sandbox: None,
        }
    }
}

pub async fn execute(
    spec: &CommandSpec,
    settings: &CommandSettings,
    ctx: &ExecContext,
) -> ExecResult {
    let argv: Vec<String> = if spec.shell {
        vec!["/bin/sh".into(), "-c".into(), spec.argv.concat()]
    } else {
        spec.argv.clone()
    };
    let Some((program, args)) = argv.split_first() else {
        return ExecResult::failed("empty argv");
    };
    // Look the program up in the child's PATH ourselves: that is the PATH the
    // user means, and it lets the standard library use posix_spawn instead of
    // fork (a fork of a large multi-threaded server is what costs most per run).
    let child_path = spec
        .env
        .iter()
        .find(|(k, _)| k.as_str() == "PATH")
        .map_or(SAFE_PATH, |(_, v)| v.as_str());
    let Some(program_path) = resolve_program(program, child_path) else {
        let msg = format!("could not start {program:?}: not found in PATH {child_path}");
        ctx.note(&msg);
        return ExecResult::failed(msg);
    };
    let workdir = spec
        .workdir
        .clone()
        .unwrap_or_else(|| settings.default_workdir.clone());
    ctx.note(&format!(
        "command {} shell={} workdir={} user={}",
        serde_json::to_string(&spec.argv).unwrap_or_default(),
        spec.shell,
        workdir,
        settings
            .run_as
            .as_ref()
            .map_or("(steward's own)", |r| r.name.as_str()),
    ));

    // The job's whole environment, in order (later entries win).
    let mut vars: Vec<(&str, &str)> = vec![("PATH", SAFE_PATH)];
    if let Some(user) = &settings.run_as {
        vars.push(("HOME", &user.home));
        vars.push(("USER", &user.name));
    }
    vars.extend(ctx.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    vars.extend(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));

    // A run prepared ahead of its instant: everything below happens now, and
    // the job's process `exec`s at the instant (the supervisor's clone
    // waits for it, confined and in its cgroup). The timeout counts from it.
    let wait = ctx.until_start();
    let work_starts = tokio::time::Instant::now() + wait;
    // The supervisor sleeps on the machine's real-time clock, so the instant
    // is handed over on it: `wait` from now (equal to `start_at` with the
    // system clock; with a test's manual clock, that much real time).
    #[allow(clippy::disallowed_methods)]
    let start_at_ns = (!wait.is_zero())
        .then(|| std::time::SystemTime::now() + wait)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_nanos()).ok());

    if ctx.cancel.is_cancelled() {
        return ExecResult::cancelled_before_start();
    }
    // The run's cgroup, made before the job starts (the job is born in it).
    let cgroup = match settings.sandbox.as_ref().and_then(|s| s.cgroups.clone()) {
        Some(cgroups) => {
            let run = ctx.run;
            match tokio::task::spawn_blocking(move || cgroups.make(run)).await {
                Ok(Ok(c)) => Some(c),
                Ok(Err(e)) => {
                    let msg = format!("could not make this run's cgroup: {e}");
                    ctx.note(&msg);
                    return ExecResult::failed(msg);
                }
                Err(e) => {
                    return ExecResult::failed(format!("could not make this run's cgroup: {e}"))
                }
            }
        }
        None => None,
    };
    let started = match &settings.sandbox {
        Some(sandbox) => {
            // The supervisor is forked by the launcher (no environment, no
            // file of the job's loaded) and stays Steward's own user; it gets
            // the job's environment on a pipe, and the job's process switches
            // to the job's account itself.
            let account = settings
                .run_as
                .as_ref()
                .map(|u| (u.uid.as_raw(), u.gid.as_raw()));
            let line = sandbox.command_line(
                &program_path,
                args,
                account,
                std::path::Path::new(&workdir),
                cgroup.as_ref().map(super::cgroup::RunCgroup::path),
                start_at_ns,
            );
            sandbox
                .launcher
                .launch(&line, vars.iter().copied())
                .await
                .map(Process::Sandboxed)
        }
        None => {
            // Unsandboxed (engine unit tests): wait here.
            tokio::select! {
                () = ctx.clock.sleep_until(ctx.start_at) => {}
                () = ctx.cancel.cancelled() => return ExecResult::cancelled_before_start(),
            }
            #[allow(clippy::disallowed_methods)] // the executor is where processes are started
            let mut c = Command::new(&program_path);
            c.args(args)
                .env_clear()
                .stdin(Stdio::null())
                .current_dir(&workdir)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0)
                .kill_on_drop(true);
            for (k, v) in &vars {
                c.env(k, v);
            }
            if let Some(user) = &settings.run_as {
                c.uid(user.uid.as_raw()).gid(user.gid.as_raw());
            }
            c.spawn().map(Process::Plain)
        }
    };
    let mut child = match started {
        Ok(c) => c,
        Err(e) => {
            if let Some(cg) = cgroup {
                cg.end().await;
            }
            let msg = format!("could not start {program:?}: {e}");
            ctx.note(&msg);
            return ExecResult::failed(msg);
        }
    };
    let mut ending = SupervisorGuard(child.supervisor());
    let pgid = child.id().map(Pid::from_raw);
    if let Some(pg) = pgid {
        ctx.hold(serde_json::json!({ "process_group": pg.as_raw() }));
    }
    let (stdout, stderr) = child.take_output();
    let readers = [
        stdout.map(|s| {
            tokio::spawn(pump(
                s,
                Stream::Stdout,
                ctx.output.clone(),
                ctx.clock.clone(),
            ))
        }),
        stderr.map(|s| {
            tokio::spawn(pump(
                s,
                Stream::Stderr,
                ctx.output.clone(),
                ctx.clock.clone(),
            ))
        }),
    ];

    // Wait for the process, the timeout, or a cancel; the latter two escalate.
    let (status, mut verdict) = tokio::select! {
        s = child.wait() => (s, None),
        () = tokio::time::sleep_until(work_starts + ctx.timeout) => {
            ctx.note(&format!("timeout of {} reached; sending SIGTERM", humanize(ctx.timeout)));
            (stop(&mut child, pgid, settings.kill_grace, ctx).await, Some(RunStatus::TimedOut))
        }
        () = ctx.cancel.cancelled() => {
            ctx.note("cancelled; sending SIGTERM");
            (stop(&mut child, pgid, settings.kill_grace, ctx).await, Some(RunStatus::Cancelled))
        }
    };
    // Reaped (or beyond reach): its pid is no longer ours to signal.
    ending.0 = None;
    // The leader is gone; take down anything it left behind in its group and
    // in its cgroup (where even a process that outlived its supervisor is).
    if let Some(pg) = pgid {
        let _ = killpg(pg, Signal::SIGKILL);
    }
    if let Some(cg) = cgroup {
        let left = cg.end().await;
        if left > 0 {
            ctx.note(&format!(
                "killed {left} process(es) left in the run's cgroup"
            ));
        }
    }
    for mut r in readers.into_iter().flatten() {
        // A process that escaped the group (setsid) may hold the pipe; stop reading
        // (and drop the reader's handle on the output) instead of waiting forever.
        if tokio::time::timeout(Duration::from_secs(2), &mut r)
            .await
            .is_err()
        {
            r.abort();
            ctx.note("output pipe still held by a process that left the group; stopped reading");
        }
    }

    let mut outcome = RunOutcome::default();
    match status {
        Ok(st) => {
            outcome.detail = Some(match (st.code(), st.signal()) {
                (Some(code), _) => serde_json::json!({ "exit_code": code }),
                (None, Some(signal)) => serde_json::json!({ "signal": signal }),
                (None, None) => serde_json::json!({}),
            });
            if verdict.is_none() {
                verdict = Some(if st.success() {
                    RunStatus::Succeeded
                } else {
                    RunStatus::Failed
                });
                if !st.success() {
                    outcome.error = Some(match (st.code(), st.signal()) {
                        (Some(c), _) => format!("exited with status {c}"),
                        (None, Some(s)) => format!("killed by signal {s}"),
                        _ => "failed".into(),
                    });
                }
            }
        }
        Err(e) => {
            outcome.error = Some(format!("waiting for the process failed: {e}"));
            verdict = verdict.or(Some(RunStatus::Failed));
        }
    }
    let status = verdict.unwrap_or(RunStatus::Failed);
    match status {
        RunStatus::TimedOut => {
            outcome.error = Some(format!("timed out after {}", humanize(ctx.timeout)))
        }
        RunStatus::Cancelled => outcome.error = outcome.error.or_else(|| Some("cancelled".into())),
        _ => {}
    }
    ExecResult { status, outcome }
}

/// The started job: a supervised one (the binary always sandboxes) or, for
/// engine unit tests, a plain child.
enum Process {
    Sandboxed(super::launcher::Supervised),
    Plain(tokio::process::Child),
}

type Output = Box<dyn AsyncRead + Send + Unpin>;

impl Process {
    /// The process id, also the run's process group.
    fn id(&self) -> Option<i32> {
        match self {
            Process::Sandboxed(s) => Some(s.pid),
            Process::Plain(c) => c.id().and_then(|id| i32::try_from(id).ok()),
        }
    }

    fn supervisor(&self) -> Option<Pid> {
        match self {
            Process::Sandboxed(s) => Some(Pid::from_raw(s.pid)),
            Process::Plain(_) => None,
        }
    }

    fn take_output(&mut self) -> (Option<Output>, Option<Output>) {
        match self {
            Process::Sandboxed(s) => (
                s.stdout.take().map(|o| Box::new(o) as Output),
                s.stderr.take().map(|o| Box::new(o) as Output),
            ),
            Process::Plain(c) => (
                c.stdout.take().map(|o| Box::new(o) as Output),
                c.stderr.take().map(|o| Box::new(o) as Output),
            ),
        }
    }

    /// Cancel-safe.
    async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match self {
            Process::Sandboxed(s) => s.wait().await,
            Process::Plain(c) => c.wait().await,
        }
    }

    /// The last resort: SIGKILL to the supervisor (it then reports nothing,
    /// and its descendants get SIGUSR1's treatment from nobody: the caller
    /// kills the group and the cgroup) or to the plain child.
    fn start_kill(&mut self) {
        match self {
            Process::Sandboxed(s) => {
                let _ = nix::sys::signal::kill(Pid::from_raw(s.pid), Signal::SIGKILL);
            }
            Process::Plain(c) => {
                let _ = c.start_kill();
            }
        }
    }
}

/// Asks the supervisor to kill the whole job when the run's future goes away
/// before it ended (SIGUSR1). Disarmed once it reported its end: the pid may
/// then be another process's.
struct SupervisorGuard(Option<Pid>);

impl Drop for SupervisorGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = nix::sys::signal::kill(pid, Signal::SIGUSR1);
        }
    }
}

/// The kill grace while Steward shuts down: `docker stop` waits 10 s in all,
/// and `scheduler.shutdown_grace` (5 s) comes first.
const SHUTDOWN_KILL_GRACE: Duration = Duration::from_secs(2);

/// SIGTERM to the group (the supervisor, its leader, relays it to every
/// descendant, also those that left the group), then after the grace period
/// SIGUSR1 to the supervisor (which kills them all) or SIGKILL to the group;
/// returns the exit.
async fn stop(
    child: &mut Process,
    pgid: Option<Pid>,
    grace: Duration,
    ctx: &ExecContext,
) -> std::io::Result<std::process::ExitStatus> {
    if let Some(pg) = pgid {
        let _ = killpg(pg, Signal::SIGTERM);
    }
    let grace = if ctx.stopping.is_cancelled() {
        grace.min(SHUTDOWN_KILL_GRACE)
    } else {
        grace
    };
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(s) => s,
        Err(_) => {
            ctx.note(&format!(
                "still running after {}; sending SIGKILL",
                humanize(grace)
            ));
            if let Some(supervisor) = child.supervisor() {
                let _ = nix::sys::signal::kill(supervisor, Signal::SIGUSR1);
                if let Ok(s) = tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
                    return s;
                }
            }
            if let Some(pg) = pgid {
                let _ = killpg(pg, Signal::SIGKILL);
            }
            child.start_kill();
            child.wait().await
        }
    }
}

/// Reads lines into the output buffer. A line is cut at `MAX_LINE` bytes so a
/// process that never writes a newline cannot grow memory without bound.
async fn pump(
    src: impl AsyncRead + Unpin,
    stream: Stream,
    out: crate::output::OutputBuffer,
    clock: std::sync::Arc<dyn steward_clock::Clock>,
) {
    const MAX_LINE: usize = 16 * 1024;
    // Small: a thousand runs at once hold two of these each, and the buffer
    // is zeroed (touched) when it is made. A large output costs a few more
    // reads of the pipe, not memory.
    const READ_BUFFER: usize = 8 * 1024;
    let mut reader = BufReader::with_capacity(READ_BUFFER, src);
    let mut line = Vec::with_capacity(256);
    loop {
        let data = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(d) => d,
        };
        let (take, complete) = match data.iter().position(|&b| b == b'\n') {
            Some(i) if line.len() + i <= MAX_LINE => (i + 1, true),
            _ => ((MAX_LINE - line.len()).min(data.len()), false),
        };
        let chunk = &data[..take];
        line.extend_from_slice(chunk.strip_suffix(b"\n").unwrap_or(chunk));
        reader.consume(take);
        if complete || line.len() >= MAX_LINE {
            out.push(clock.now(), stream, &line);
            line.clear();
        }
    }
    if !line.is_empty() {
        out.push(clock.now(), stream, &line);
    }
}

fn humanize(d: Duration) -> String {
    steward_domain::DurationSpec::from(d).to_string()
}

/// Kills what a crashed Steward left running: the process group recorded for
/// `run`, but only if a member of that group still carries the run's
/// `STEWARD_RUN_ID` (a reused group id belongs to someone else and is spared).
/// Returns how many processes were signalled.
pub fn kill_leftovers(pgid: i32, run: steward_domain::RunId) -> usize {
    let marker = format!("STEWARD_RUN_ID={run}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let members: Vec<i32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|pid| process_group_of(*pid) == Some(pgid))
        .collect();
    let ours = members.iter().any(|pid| {
        std::fs::read(format!("/proc/{pid}/environ"))
            .map(|env| env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()))
            .unwrap_or(false)
    });
    if !ours {
        return 0;
    }
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    members.len()
}

fn process_group_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// `program` itself if it contains a slash, else the first executable file of
/// that name in `path`.
fn resolve_program(program: &str, path: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    if program.contains('/') {
        return Some(program.into());
    }
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| std::path::Path::new(d).join(program))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_in_the_childs_path() {
        assert_eq!(
            resolve_program("sh", SAFE_PATH).map(|p| p.is_absolute()),
            Some(true)
        );
        assert_eq!(resolve_program("./x", SAFE_PATH), Some("./x".into()));
        assert_eq!(resolve_program("no-such-program-here", SAFE_PATH), None);
        assert_eq!(resolve_program("sh", "/nonexistent"), None);
    }
}
