//! Starting the job: one clone of the supervisor, born in the run's cgroup,
//! which applies the prepared rules and `exec`s the job.
//!
//! Before, the supervisor started a second copy of the steward binary (the
//! "gate") to do this, and the gate moved itself into the cgroup by writing
//! `cgroup.procs`. Both were the larger part of what a run cost: an `exec`
//! of a large binary, and a migration that waits for the kernel's cgroup
//! lock (an RCU grace period, one migration after another, unless cgroup2
//! is mounted with `favordynmods`). Being born in the cgroup takes the lock
//! only for reading.

use crate::confine::Confinement;
use crate::CANNOT_START;
use nix::errno::Errno;
use nix::sys::signal::SigSet;
use nix::unistd::Pid;
use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

/// The job's `execve` arguments, made before the clone.
pub(crate) struct Job {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

impl Job {
    pub(crate) fn prepare(
        program: &Path,
        args: &[OsString],
        env: &[(OsString, OsString)],
    ) -> Result<Self, String> {
        let c = |bytes: Vec<u8>| {
            CString::new(bytes)
                .map_err(|_| "the job's command line or environment holds a NUL byte".to_owned())
        };
        let program = c(program.as_os_str().as_bytes().to_vec())?;
        let mut argv = vec![program.clone()];
        for a in args {
            argv.push(c(a.as_bytes().to_vec())?);
        }
        let envp = env
            .iter()
            .map(|(k, v)| c([k.as_bytes(), b"=", v.as_bytes()].concat()))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            program,
            argv,
            envp,
        })
    }
}

/// The furthest ahead of its instant a job is started: the clone waits at
/// most this long before `exec` (Steward prepares runs 1.5 s ahead).
const MAX_START_WAIT_NS: i64 = 10_000_000_000;

/// Starts the job's process; returns its id. With `start_at`, the process
/// is made, confined and in its cgroup at once, and `exec`s the job at that
/// wall-clock instant: what is left at the instant is one `exec`.
pub(crate) fn start(
    cgroup: Option<&Path>,
    job: Job,
    confinement: Confinement,
    start_at: Option<i64>,
) -> Result<Pid, String> {
    if !single_threaded() {
        return Err(
            "the supervisor has more than one thread, so it cannot clone itself safely".into(),
        );
    }
    let cgroup_dir = match cgroup {
        Some(dir) => Some(
            open_dir(dir)
                .map_err(|e| format!("cannot enter the run's cgroup {}: {e}", dir.display()))?,
        ),
        None => None,
    };
    let null =
        std::fs::File::open("/dev/null").map_err(|e| format!("cannot open /dev/null: {e}"))?;
    let in_job = move |born_in_cgroup: bool| -> u8 {
        if let Err(e) = nix::unistd::dup2(null.as_raw_fd(), 0) {
            eprintln!("steward: cannot give the job /dev/null as its input: {e}");
            return CANNOT_START;
        }
        // Where the kernel has no clone3, enter the cgroup the slow way,
        // before Landlock hides it.
        if let (Some(dir), false) = (cgroup, born_in_cgroup) {
            if let Err(e) = std::fs::write(dir.join("cgroup.procs"), b"0") {
                eprintln!(
                    "steward: cannot enter the run's cgroup {}: {e}",
                    dir.display()
                );
                return CANNOT_START;
            }
        }
        if let Err(e) = confinement.apply() {
            eprintln!("steward: {e}");
            return CANNOT_START;
        }
        // The supervisor waits for signals with them blocked; the job gets
        // the usual mask.
        let _ = SigSet::all().thread_unblock();
        // Stopping the run before its instant is SIGTERM or SIGKILL, which
        // end this wait (the actions are the defaults).
        if let Some(at) = start_at {
            if let Err(e) = wait_until(at) {
                eprintln!("steward: cannot wait for the run's instant: {e}");
                return CANNOT_START;
            }
        }
        let Err(e) = nix::unistd::execve(&job.program, &job.argv, &job.envp);
        eprintln!("steward: could not start {:?}: {e}", job.program);
        CANNOT_START
    };
    clone_and_run(cgroup_dir.as_ref(), Sigpipe::Default, in_job)
        .map_err(|e| format!("could not start the job: {e}"))
}

/// Forks this process and runs `in_child` in the fork, which then exits
/// with the code it returns. Returns the fork's process id, in the parent.
pub(crate) fn fork_and_run(in_child: impl FnOnce() -> u8) -> Result<Pid, String> {
    if !single_threaded() {
        return Err("the launcher has more than one thread, so it cannot fork safely".into());
    }
    // The supervisor keeps SIGPIPE ignored: a Steward that stopped reading
    // its status pipe must not kill it before it has ended the job's tree.
    clone_and_run(None, Sigpipe::Ignored, |_| in_child()).map_err(|e| format!("fork: {e}"))
}

/// Sleeps until the wall-clock instant `at_ns` (nanoseconds since the
/// epoch), at most [`MAX_START_WAIT_NS`]. What is left is read off the
/// real-time clock once and slept on the monotonic one, as Steward counts
/// the run's timeout: a clock stepped back meanwhile cannot hold the job
/// past its timeout before it even starts.
fn wait_until(at_ns: i64) -> Result<(), Errno> {
    use nix::sys::time::TimeSpec;
    use nix::time::{clock_gettime, clock_nanosleep, ClockId, ClockNanosleepFlags};
    const NS: i64 = 1_000_000_000;
    let ns = |t: TimeSpec| t.tv_sec() * NS + t.tv_nsec();
    let left = at_ns
        .saturating_sub(ns(clock_gettime(ClockId::CLOCK_REALTIME)?))
        .clamp(0, MAX_START_WAIT_NS);
    let until = ns(clock_gettime(ClockId::CLOCK_MONOTONIC)?).saturating_add(left);
    let until = TimeSpec::new(until.div_euclid(NS), until.rem_euclid(NS));
    loop {
        match clock_nanosleep(
            ClockId::CLOCK_MONOTONIC,
            ClockNanosleepFlags::TIMER_ABSTIME,
            &until,
        ) {
            Err(Errno::EINTR) => continue,
            other => return other.map(drop),
        }
    }
}

fn open_dir(dir: &Path) -> std::io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_PATH)
        .open(dir)?;
    Ok(f.into())
}

/// `clone3`'s arguments (`struct clone_args` of linux/sched.h, with `cgroup`).
#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// SIGPIPE in the clone. Rust programs start with it ignored, and an ignored
/// signal stays ignored across `exec`: a job must get the default (a shell
/// pipeline's writer ends quietly when its reader does), as any shell and
/// the standard library's `Command` give it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sigpipe {
    Default,
    Ignored,
}

/// Clones this process (like `fork`) into the cgroup `cgroup` names, where
/// given, and runs `in_child` in the clone, which then exits with the code it
/// returns (`in_child` is meant to `exec`). `in_child` learns whether the
/// clone was born in the cgroup: where the kernel refuses `clone3` (before
/// Linux 5.7 for the cgroup), this falls back to `fork`. Returns the clone's
/// process id, in the parent only.
#[allow(unsafe_code)]
fn clone_and_run(
    cgroup: Option<&OwnedFd>,
    sigpipe: Sigpipe,
    in_child: impl FnOnce(bool) -> u8,
) -> Result<Pid, Errno> {
    let args = CloneArgs {
        flags: if cgroup.is_some() {
            CLONE_INTO_CGROUP
        } else {
            0
        },
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup.map_or(0, |fd| u64::try_from(fd.as_raw_fd()).unwrap_or(0)),
    };
    // SAFETY: `clone3` without CLONE_VM and without a stack, like `fork`,
    // gives the child a copy of this process's memory and only the calling
    // thread. This process has exactly one thread (checked by the callers;
    // the launcher is dispatched in `main` before anything can start one), so
    // no lock in the copy is held by a thread that does not exist there, and
    // the child may allocate. `args` outlives the call and is the size the
    // kernel is told. The child never returns from this function: it runs
    // `in_child` (catching a panic) and `_exit`s, so no destructor of the
    // parent's state runs twice; glibc's cached thread id is stale in the child, which matters
    // only to `raise` and pthread calls, and the child makes none before
    // `exec`.
    let mut ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            std::ptr::addr_of!(args),
            std::mem::size_of::<CloneArgs>(),
        )
    };
    let mut born_in_cgroup = cgroup.is_some();
    if ret == -1 && matches!(Errno::last(), Errno::ENOSYS | Errno::E2BIG | Errno::EINVAL) {
        // SAFETY: as above; `fork` is the same copy without the cgroup.
        ret = libc::c_long::from(unsafe { libc::fork() });
        born_in_cgroup = false;
    }
    match ret {
        -1 => Err(Errno::last()),
        0 => {
            if sigpipe == Sigpipe::Default {
                // SAFETY: sets a signal's action to its default (no handler
                // runs); `signal` is async-signal-safe.
                unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
            }
            // A panic must not unwind into the frames the clone copied
            // from its parent (their destructors would run here too).
            let code =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| in_child(born_in_cgroup)))
                    .unwrap_or(CANNOT_START);
            // SAFETY: ends the child without running the parent's exit
            // handlers or flushing its buffers a second time.
            unsafe { libc::_exit(libc::c_int::from(code)) }
        }
        pid => Ok(Pid::from_raw(
            i32::try_from(pid).map_err(|_| Errno::EOVERFLOW)?,
        )),
    }
}

/// Whether this process has exactly one thread (`/proc/self/task`).
fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|d| d.count() == 1)
}
