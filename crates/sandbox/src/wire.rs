//! What Steward and the launcher say to each other. Both ends are here, so
//! that the format has one owner.
//!
//! - Steward makes a **connection** ([`connection`]): a `SOCK_SEQPACKET`
//!   pair, one end the launcher's standard input.
//! - Per job, Steward sends one message of one byte carrying four pipe ends
//!   ([`send_job`]): the supervisor's request (read end), its standard output
//!   and error (write ends), and its status (write end).
//! - On the request pipe Steward writes the supervisor's command line and
//!   the job's environment ([`encode_request`]), then closes it.
//! - On the status pipe the supervisor writes `started <pid>` as soon as it
//!   runs, and `ended <wait status>` when the job's main process has ended
//!   and every descendant is gone ([`Status`]). A pipe that ends without
//!   `ended` means the supervisor was killed. Empty lines are skipped: the
//!   supervisor writes one just before it starts the job, to learn whether
//!   Steward still reads.

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
use std::ffi::OsString;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};

/// The pipe ends one job's supervisor gets.
pub struct JobPipes {
    /// Read end: the command line and the environment.
    pub request: OwnedFd,
    /// Write end: the job's standard output.
    pub stdout: OwnedFd,
    /// Write end: the job's standard error.
    pub stderr: OwnedFd,
    /// Write end: [`Status`] lines.
    pub status: OwnedFd,
}

/// Steward's end (non-blocking) and the launcher's end (blocking) of a new
/// connection, both close-on-exec (the launcher's end becomes its standard
/// input).
pub fn connection() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (ours, theirs) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::io::ioctl_fionbio(&ours, true)?;
    Ok((ours, theirs))
}

/// Steward: hands the launcher one job's pipe ends. Does not block: a full
/// socket is `WouldBlock`.
pub fn send_job(socket: BorrowedFd<'_>, pipes: [BorrowedFd<'_>; 4]) -> std::io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&pipes)) {
        return Err(std::io::Error::other("no room for four descriptors"));
    }
    rustix::net::sendmsg(
        socket,
        &[IoSlice::new(b"j")],
        &mut control,
        SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
    )?;
    Ok(())
}

/// What the launcher received.
pub enum Received {
    Job(JobPipes),
    /// A message without the four descriptors (ignored).
    Malformed,
    /// Steward closed the connection.
    Closed,
}

/// The launcher: waits for the next job (blocking; a receive timeout on the
/// socket surfaces as `WouldBlock`).
pub fn receive_job(socket: BorrowedFd<'_>) -> std::io::Result<Received> {
    let mut byte = [0u8; 1];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = rustix::net::recvmsg(
        socket,
        &mut [IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds: Vec<OwnedFd> = vec![];
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = m {
            fds.extend(received);
        }
    }
    if msg.bytes == 0 && fds.is_empty() {
        return Ok(Received::Closed);
    }
    let Ok([request, stdout, stderr, status]) = <[OwnedFd; 4]>::try_from(fds) else {
        return Ok(Received::Malformed);
    };
    Ok(Received::Job(JobPipes {
        request,
        stdout,
        stderr,
        status,
    }))
}

/// The request: the length of the command line (4 bytes, little endian),
/// the command line (each argument ended by a NUL byte), then the
/// environment (`KEY=VALUE`, each ended by a NUL byte). Refused when any
/// part holds a NUL byte (or a name a `=`): one in a path would end it early
/// and start a flag of its own (`--` then a program, dropping the rules), so
/// this fails closed whatever the callers checked.
pub fn encode_request<'a>(
    command_line: &[OsString],
    env: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<u8>, String> {
    let mut line = Vec::new();
    for (i, a) in command_line.iter().enumerate() {
        // The position only: an argument may hold a secret's value.
        if a.as_bytes().contains(&0) {
            return Err(format!(
                "a NUL byte in element {i} of the supervisor's command line"
            ));
        }
        line.extend_from_slice(a.as_bytes());
        line.push(0);
    }
    let mut out = u32::try_from(line.len())
        .unwrap_or(u32::MAX)
        .to_le_bytes()
        .to_vec();
    out.extend_from_slice(&line);
    for (k, v) in env {
        if k.contains(['\0', '=']) || v.contains('\0') {
            return Err(format!(
                "a NUL byte in the environment variable {k:?}, or a `=` in its name"
            ));
        }
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    Ok(out)
}

/// The job's environment: names and values.
pub(crate) type Environment = Vec<(OsString, OsString)>;

/// The supervisor's reading of [`encode_request`]: the command line and the
/// environment.
pub(crate) fn decode_request(raw: &[u8]) -> Result<(Vec<OsString>, Environment), String> {
    let (len, rest) = raw
        .split_first_chunk::<4>()
        .ok_or("the request ended before its command line")?;
    let len = usize::try_from(u32::from_le_bytes(*len)).map_err(|_| "bad request length")?;
    if rest.len() < len || (len > 0 && rest[len - 1] != 0) {
        return Err("the request's command line is cut short".into());
    }
    let (line, env) = rest.split_at(len);
    let line = match line.split_last() {
        Some((_, entries)) => entries
            .split(|b| *b == 0)
            .map(|a| OsString::from_vec(a.to_vec()))
            .collect(),
        None => vec![],
    };
    let env = env
        .split(|b| *b == 0)
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| {
            let i = kv.iter().position(|b| *b == b'=')?;
            Some((
                OsString::from_vec(kv[..i].to_vec()),
                OsString::from_vec(kv[i + 1..].to_vec()),
            ))
        })
        .collect();
    Ok((line, env))
}

/// A line on the status pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The supervisor runs, with this process id (its process group too).
    Started(i32),
    /// The job ended with this wait status (as `waitpid` gives it).
    Ended(i32),
}

impl Status {
    pub fn line(self) -> String {
        match self {
            Status::Started(pid) => format!("started {pid}\n"),
            Status::Ended(raw) => format!("ended {raw}\n"),
        }
    }

    pub fn parse(line: &str) -> Option<Self> {
        let (word, n) = line.trim_end().split_once(' ')?;
        let n = n.parse().ok()?;
        match word {
            "started" => Some(Status::Started(n)),
            "ended" => Some(Status::Ended(n)),
            _ => None,
        }
    }
}

/// Whether Steward still reads the status pipe: an empty line (which
/// Steward skips) fails with EPIPE once it stopped (the supervisor ignores
/// SIGPIPE).
pub(crate) fn still_wanted(status_pipe: impl AsFd) -> bool {
    rustix::io::write(status_pipe, b"\n").is_ok()
}

/// Writes a status line; a Steward that stopped listening is no error here.
pub(crate) fn report(status_pipe: impl AsFd, status: Status) {
    let _ = rustix::io::write(status_pipe, status.line().as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_round_trips_with_empty_arguments() {
        let line: Vec<OsString> = ["--", "/bin/echo", "", "a b"].map(OsString::from).to_vec();
        let raw = encode_request(&line, [("A", "1"), ("B", "x=y")]).unwrap();
        let (l, env) = decode_request(&raw).unwrap();
        assert_eq!(l, line);
        assert_eq!(
            env,
            vec![
                (OsString::from("A"), OsString::from("1")),
                (OsString::from("B"), OsString::from("x=y"))
            ]
        );
    }

    #[test]
    fn a_nul_byte_cannot_smuggle_a_flag_into_the_request() {
        // A working directory that would end the rules and name a program.
        let line: Vec<OsString> = [
            "--workdir",
            "/x\0--\0/bin/sh",
            "--require",
            "--",
            "/bin/true",
        ]
        .map(OsString::from)
        .to_vec();
        assert!(encode_request(&line, []).is_err());
        let ok: Vec<OsString> = ["--", "/bin/true"].map(OsString::from).to_vec();
        assert!(encode_request(&ok, [("A", "x\0y")]).is_err());
        assert!(encode_request(&ok, [("A=B", "x")]).is_err());
        assert!(encode_request(&ok, [("A", "x=y")]).is_ok());
    }

    #[test]
    fn a_cut_request_is_refused() {
        let raw = encode_request(&[OsString::from("/bin/true")], []).unwrap();
        assert!(decode_request(&raw[..raw.len() - 1]).is_err());
        assert!(decode_request(&raw[..2]).is_err());
    }

    #[test]
    fn status_lines_round_trip() {
        for s in [Status::Started(4711), Status::Ended(9), Status::Ended(256)] {
            assert_eq!(Status::parse(&s.line()), Some(s));
        }
        assert_eq!(Status::parse("ended x\n"), None);
        assert_eq!(Status::parse("\n"), None);
        let (r, w) = std::io::pipe().unwrap();
        assert!(still_wanted(&w));
        drop(r);
        assert!(!still_wanted(&w));
    }

    #[test]
    fn four_pipe_ends_cross_the_connection() {
        use std::io::Read as _;
        let (steward, launcher) = connection().unwrap();
        let (mut status_r, status_w) = std::io::pipe().unwrap();
        let others: Vec<_> = (0..3).map(|_| std::io::pipe().unwrap()).collect();
        let ends = [
            others[0].0.as_fd(),
            others[1].1.as_fd(),
            others[2].1.as_fd(),
            status_w.as_fd(),
        ];
        send_job(steward.as_fd(), ends).unwrap();
        drop(status_w);
        let Received::Job(got) = receive_job(launcher.as_fd()).unwrap() else {
            panic!("no job received");
        };
        // The received status end writes into the pipe Steward reads.
        report(&got.status, Status::Started(7));
        drop(got);
        let mut line = String::new();
        status_r.read_to_string(&mut line).unwrap();
        assert_eq!(Status::parse(&line), Some(Status::Started(7)));
        drop(steward);
        assert!(matches!(
            receive_job(launcher.as_fd()).unwrap(),
            Received::Closed
        ));
    }
}
