//! The launcher: one long-lived copy of the steward binary, started by
//! Steward with a connection (`wire`) as its standard input, that forks one
//! supervisor per job. A fork of this small, single-threaded process costs a
//! fraction of starting the steward binary anew, which each job did before
//! (most of that was the dynamic loader relocating a 30 MB executable).
//!
//! It dies with Steward (parent-death signal), and each supervisor ends its
//! job when the launcher dies, so no job outlives Steward unnoticed. Steward
//! starts a new launcher when it finds this one gone.

use crate::confine::SharedLandlock;
use crate::wire::{receive_job, Received};
use crate::Rules;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{getpid, getppid};
use std::os::fd::AsFd as _;
use std::process::ExitCode;
use std::time::Duration;

/// How often ended supervisors are reaped while no job arrives.
const REAP_EVERY: Duration = Duration::from_secs(1);

/// The launcher's main: `parent` is Steward's process id, `rules` the file
/// rules every job gets (their Landlock ruleset is built here, once, and
/// again when a directory it names changes: `confine::SharedLandlock`).
pub(crate) fn main(parent: i32, rules: &Rules) -> ExitCode {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if getppid().as_raw() != parent {
        return ExitCode::FAILURE;
    }
    let mut shared: Option<SharedLandlock> = None;
    let socket = std::io::stdin();
    let socket = socket.as_fd();
    if let Err(e) = rustix::net::sockopt::set_socket_timeout(
        socket,
        rustix::net::sockopt::Timeout::Recv,
        Some(REAP_EVERY),
    ) {
        eprintln!("steward launcher: standard input is not Steward's connection: {e}");
        return ExitCode::FAILURE;
    }
    let me = getpid();
    loop {
        reap_ended();
        let pipes = match receive_job(socket) {
            Ok(Received::Job(p)) => p,
            Ok(Received::Malformed) => continue,
            Ok(Received::Closed) => return ExitCode::SUCCESS,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                eprintln!("steward launcher: cannot read from Steward: {e}");
                return ExitCode::FAILURE;
            }
        };
        if !shared.as_ref().is_some_and(SharedLandlock::is_current) {
            // On failure each supervisor builds its own, and says why not.
            shared = SharedLandlock::build(rules).ok();
        }
        // The supervisor's own pipe ends leave with it; the launcher keeps
        // none (dropped when this iteration ends).
        let landlock = shared.as_ref();
        if let Err(e) = crate::spawn::fork_and_run(|| crate::supervisor::run(pipes, me, landlock)) {
            // The pipes are dropped here: Steward reads no status, and says
            // the job could not start.
            eprintln!("steward launcher: cannot start a supervisor: {e}");
        }
    }
}

/// Collects every supervisor that has ended.
fn reap_ended() {
    while let Ok(s) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if s == WaitStatus::StillAlive {
            break;
        }
    }
}
