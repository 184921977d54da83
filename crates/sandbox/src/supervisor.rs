//! One job's supervisor: a fork of the launcher, made for one job. It takes
//! the job's pipes as its standard input, output and error, reports itself
//! on the status pipe, reads the request, starts the job confined (`spawn`),
//! waits for it and every descendant (`reap`), and reports how it ended.

use crate::confine::SharedLandlock;
use crate::wire::{report, still_wanted, JobPipes, Status};
use crate::{confine, parse, reap, spawn, CANNOT_START};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::{getpid, getppid, Pid};
use std::io::Read as _;
use std::os::fd::AsRawFd as _;

/// The request: a command line and an environment of at most 4 MiB each.
const MAX_REQUEST_BYTES: u64 = 8 * 1024 * 1024;

/// The supervisor's main, in the launcher's fork; returns its exit code.
pub(crate) fn run(pipes: JobPipes, launcher: Pid, landlock: Option<&SharedLandlock>) -> u8 {
    for (fd, to) in [(&pipes.request, 0), (&pipes.stdout, 1), (&pipes.stderr, 2)] {
        if nix::unistd::dup2(fd.as_raw_fd(), to).is_err() {
            return CANNOT_START;
        }
    }
    let JobPipes { status, .. } = pipes;
    // A process group of its own, led by the supervisor: Steward stops the
    // job by signalling the group, and the group outlives a Steward crash as
    // the run's handle.
    let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
    report(&status, Status::Started(getpid().as_raw()));
    let ended = supervise(launcher, landlock, &status);
    report(&status, Status::Ended(ended));
    0
}

/// Everything from the request to the job's end; returns the wait status to
/// report (exit status 126 when the job could not start, after saying why on
/// its standard error).
fn supervise(
    launcher: Pid,
    landlock: Option<&SharedLandlock>,
    status: &std::os::fd::OwnedFd,
) -> i32 {
    // Orphans of the job are re-parented here, not to init.
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        return refused(&format!("cannot become the job's subreaper: {e}"));
    }
    // If the launcher dies (it does when Steward dies), take the job down.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGUSR1);
    if getppid() != launcher {
        return refused("Steward's launcher ended before the job started");
    }
    let mut raw = Vec::new();
    if let Err(e) = std::io::stdin()
        .take(MAX_REQUEST_BYTES)
        .read_to_end(&mut raw)
    {
        return refused(&format!("cannot read the job's request: {e}"));
    }
    let (line, env) = match crate::wire::decode_request(&raw) {
        Ok(r) => r,
        Err(e) => return refused(&e),
    };
    let inv = match parse(line.into_iter()) {
        Ok(i) => i,
        Err(e) => return refused(&format!("bad supervisor arguments: {e}")),
    };
    if let Some(dir) = &inv.rules.workdir {
        if let Err(e) = std::env::set_current_dir(dir) {
            return refused(&format!(
                "cannot enter the working directory {}: {e}",
                dir.display()
            ));
        }
    }
    // Everything the job's process does before `exec` is prepared here.
    let job = match spawn::Job::prepare(&inv.program, &inv.args, &env) {
        Ok(j) => j,
        Err(e) => return refused(&e),
    };
    let confinement = match confine::Confinement::prepare(&inv.rules, landlock) {
        Ok(c) => c,
        Err(e) => return refused(&e),
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
        return refused(&format!("cannot block signals: {e}"));
    }
    // Steward gives up on a supervisor that does not start in time, and then
    // stops reading: no job of a run nobody watches.
    if !still_wanted(status) {
        return refused("Steward stopped waiting for this job to start");
    }
    let main = match spawn::start(
        inv.rules.cgroup.as_deref(),
        job,
        confinement,
        inv.rules.start_at,
    ) {
        Ok(pid) => pid,
        Err(e) => return refused(&e),
    };
    let status = reap::supervise(main, &signals);
    reap::end_all_descendants(main, &mut None);
    raw_status(status)
}

fn refused(msg: &str) -> i32 {
    eprintln!("steward: {msg}");
    i32::from(CANNOT_START) << 8
}

/// The wait status `waitpid` gave, as the kernel encodes it.
fn raw_status(status: WaitStatus) -> i32 {
    match status {
        WaitStatus::Exited(_, code) => (code & 0xff) << 8,
        WaitStatus::Signaled(_, sig, core) => sig as i32 | if core { 0x80 } else { 0 },
        _ => 1 << 8,
    }
}
