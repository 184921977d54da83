//! The supervisor's part once the job has started: wait for it, relay
//! Steward's stop requests to every descendant, and leave none behind.

use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{getpid, Pid};
use std::collections::HashMap;

/// Waits for the main process, relaying Steward's stop requests to every
/// descendant. Returns how the main process ended.
pub(crate) fn supervise(main: Pid, signals: &SigSet) -> WaitStatus {
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
pub(crate) fn end_all_descendants(main: Pid, main_status: &mut Option<WaitStatus>) {
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
