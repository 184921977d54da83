//! Steward's end of the sandbox launcher (`steward_sandbox`'s launcher and
//! `wire`): one launcher process per Steward, started on first use and again
//! whenever it is found gone, and per job the pipes its supervisor gets.
//!
//! The launcher is started from a runtime worker thread, never from a
//! blocking-pool thread: its parent-death signal fires when the *thread*
//! that started it ends, and blocking-pool threads end when idle.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd as _, OwnedFd};
use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use steward_sandbox::wire::{self, Status};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::unix::pipe;

/// How long starting a supervisor may take (it takes milliseconds).
pub const LAUNCH_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Starts each job's supervisor through one launcher process.
pub struct Launcher {
    helper: PathBuf,
    /// The file rules every job gets: the launcher builds their Landlock
    /// ruleset once.
    rules: steward_sandbox::Rules,
    current: tokio::sync::Mutex<Option<Connection>>,
}

impl std::fmt::Debug for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launcher")
            .field("helper", &self.helper)
            .finish_non_exhaustive()
    }
}

/// The connection's `SOCK_SEQPACKET` socket, registered with the runtime
/// through tokio's datagram type (which handles any message socket: only its
/// readiness and `async_io` are used, with `wire::send_job`).
type Socket = tokio::net::UnixDatagram;

struct Connection {
    socket: Arc<Socket>,
    /// Killed when dropped (the launcher then takes its supervisors' jobs
    /// down with it: they are ended by their parent-death signal).
    process: tokio::process::Child,
}

impl Launcher {
    /// `helper`: the steward binary; `rules`: the file rules every job gets
    /// (hidden and read-only paths, Landlock required or not).
    pub fn new(helper: PathBuf, rules: steward_sandbox::Rules) -> Self {
        Self {
            helper,
            rules,
            current: tokio::sync::Mutex::new(None),
        }
    }

    /// Starts one job's supervisor with `command_line` (its rules and the
    /// job) and the job's environment; returns once it runs. A launcher that
    /// does not answer within [`LAUNCH_LIMIT`] (stopped, say) fails the start
    /// instead of holding the run before its own timeout applies.
    pub async fn launch<'a>(
        &self,
        command_line: &[OsString],
        env: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> io::Result<Supervised> {
        let request = wire::encode_request(command_line, env).map_err(io::Error::other)?;
        tokio::time::timeout(LAUNCH_LIMIT, self.start_supervisor(&request))
            .await
            .unwrap_or_else(|_| {
                Err(io::Error::other(format!(
                    "the sandbox launcher did not start the job's supervisor within {} s",
                    LAUNCH_LIMIT.as_secs()
                )))
            })
    }

    async fn start_supervisor(&self, request: &[u8]) -> io::Result<Supervised> {
        let (request_r, request_w) = io::pipe()?;
        let (stdout_r, stdout_w) = io::pipe()?;
        let (stderr_r, stderr_w) = io::pipe()?;
        let (status_r, status_w) = io::pipe()?;
        self.send([
            request_r.into(),
            stdout_w.into(),
            stderr_w.into(),
            status_w.into(),
        ])
        .await?;
        let mut w = pipe::Sender::from_owned_fd(request_w.into())?;
        w.write_all(request).await?;
        drop(w);
        let mut supervised = Supervised {
            pid: 0,
            stdout: Some(pipe::Receiver::from_owned_fd(stdout_r.into())?),
            stderr: Some(pipe::Receiver::from_owned_fd(stderr_r.into())?),
            status: BufReader::new(pipe::Receiver::from_owned_fd(status_r.into())?),
            line: Vec::new(),
            ended: None,
        };
        match supervised.next_status().await? {
            Some(Status::Started(pid)) => {
                supervised.pid = pid;
                Ok(supervised)
            }
            _ => Err(io::Error::other(
                "the sandbox launcher did not start the job's supervisor",
            )),
        }
    }

    /// Hands the pipe ends to the launcher, starting one if there is none or
    /// it is gone (then once more, with a new one). The ends are closed here
    /// afterwards: the supervisor holds its own copies.
    async fn send(&self, ends: [OwnedFd; 4]) -> io::Result<()> {
        let mut last = None;
        for _ in 0..2 {
            let socket = self.socket().await?;
            let borrowed = [
                ends[0].as_fd(),
                ends[1].as_fd(),
                ends[2].as_fd(),
                ends[3].as_fd(),
            ];
            let sent = socket
                .async_io(tokio::io::Interest::WRITABLE, || {
                    wire::send_job(socket.as_fd(), borrowed)
                })
                .await;
            match sent {
                Ok(()) => return Ok(()),
                // Only a launcher that is gone is replaced: replacing a live
                // one would end every job it started (their supervisors'
                // parent-death signal), and a job can make sends fail (file
                // descriptors in flight count against Steward's user).
                Err(e) if gone(&e) => {
                    self.forget(&socket).await;
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("the sandbox launcher is gone")))
    }

    /// The live launcher's socket; starts a launcher when there is none.
    async fn socket(&self) -> io::Result<Arc<Socket>> {
        let mut current = self.current.lock().await;
        if let Some(c) = current.as_mut() {
            if matches!(c.process.try_wait(), Ok(None)) {
                return Ok(c.socket.clone());
            }
            tracing::warn!("the sandbox launcher ended; starting a new one");
        }
        let (ours, theirs) = wire::connection()?;
        #[allow(clippy::disallowed_methods)] // the executor is where processes are started
        let process = tokio::process::Command::new(&self.helper)
            .args(steward_sandbox::launcher_args(
                std::process::id(),
                &self.rules,
            ))
            .env_clear()
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            // Its own process group: a Ctrl-C meant for Steward (which then
            // stops its runs gracefully) must not reach the launcher.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()?;
        let socket = Arc::new(Socket::from_std(ours.into())?);
        *current = Some(Connection {
            socket: socket.clone(),
            process,
        });
        Ok(socket)
    }

    /// Drops the connection `socket` belongs to, if it is still the current one.
    async fn forget(&self, socket: &Arc<Socket>) {
        let mut current = self.current.lock().await;
        if current
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(&c.socket, socket))
        {
            *current = None;
        }
    }
}

/// Whether a send failed because the launcher's end is closed.
fn gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            nix::libc::EPIPE
                | nix::libc::ECONNRESET
                | nix::libc::ENOTCONN
                | nix::libc::ECONNREFUSED
        )
    )
}

/// A job's supervisor, as Steward sees it.
pub struct Supervised {
    /// The supervisor's process id, also the run's process group.
    pub pid: i32,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
    status: BufReader<pipe::Receiver>,
    /// A status line read in part (kept across a cancelled `wait`).
    line: Vec<u8>,
    ended: Option<ExitStatus>,
}

impl Supervised {
    /// How the job's main process ended, once every descendant is gone. A
    /// supervisor that was killed reports nothing: that reads as SIGKILL.
    /// Cancel-safe.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        while self.ended.is_none() {
            match self.next_status().await? {
                Some(Status::Ended(raw)) => self.ended = Some(ExitStatus::from_raw(raw)),
                Some(Status::Started(_)) => {}
                None => self.ended = Some(ExitStatus::from_raw(libc_sigkill())),
            }
        }
        Ok(self
            .ended
            .unwrap_or_else(|| ExitStatus::from_raw(libc_sigkill())))
    }

    /// The next status line; None at the end of the pipe.
    async fn next_status(&mut self) -> io::Result<Option<Status>> {
        loop {
            let n = self.status.read_until(b'\n', &mut self.line).await?;
            if n == 0 {
                return Ok(None);
            }
            if self.line.ends_with(b"\n") {
                let line = std::mem::take(&mut self.line);
                if let Some(s) = std::str::from_utf8(&line).ok().and_then(Status::parse) {
                    return Ok(Some(s));
                }
            }
        }
    }
}

fn libc_sigkill() -> i32 {
    nix::sys::signal::Signal::SIGKILL as i32
}
