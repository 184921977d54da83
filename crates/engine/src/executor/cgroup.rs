//! A cgroup (v2) per run, where the machine lets Steward make one.
//!
//! The sandbox's subreaper ends every descendant of a job while the
//! supervisor lives. A cgroup also holds when it does not: a process cannot
//! leave its cgroup without write access to another one, so whatever a run
//! started, in whatever session, is found in the run's cgroup and killed
//! there (`cgroup.kill`), after the run, and at the next start if Steward and
//! the supervisor were both killed.
//!
//! Layout: `<Steward's own cgroup>/steward-<instance>/run-<id>`. The instance
//! name comes from the data directory, so that several Stewards on one
//! machine never sweep each other's runs. Steward makes the run's directory
//! before the job starts, the sandbox's supervisor starts the job inside it
//! (`clone3` with `CLONE_INTO_CGROUP`, so every descendant is born inside),
//! and Steward kills what is left and removes the directory when the job's
//! supervisor has ended.
//!
//! The job is refused `clone3` by seccomp (so it cannot start a child in
//! another cgroup through a directory descriptor Landlock did not see), and
//! every cgroup2 mount is hidden from jobs (so it cannot write `cgroup.procs`).
//!
//! Everything here touches cgroupfs with blocking calls (the kernel's cgroup
//! lock, waits for killed processes): async callers go through
//! `spawn_blocking`.
//!
//! Where cgroups cannot be made (no cgroup2 mount, a read-only
//! `/sys/fs/cgroup` in a container, no delegation to Steward's user), runs
//! go without: the subreaper still ends descendants, and start-up says so.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use steward_domain::RunId;

/// How long the end of a run waits for the kernel to remove killed processes.
const EMPTY_WAIT: Duration = Duration::from_secs(2);

/// Steward's directory of run cgroups.
#[derive(Debug, Clone)]
pub struct RunCgroups {
    mounts: Vec<PathBuf>,
    base: PathBuf,
    /// Run cgroups that exist now. The instance's directory exists exactly
    /// while this is above zero (one Steward per data directory, so this
    /// process is the only one that makes or removes it).
    live: Arc<Mutex<usize>>,
}

impl RunCgroups {
    /// Finds Steward's own cgroup2 directory and proves that a run's cgroup
    /// can be made and removed in `steward-<instance>` below it.
    pub fn detect(instance: &str) -> Result<Self, String> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        let cgroup = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let mounts = cgroup2_mounts(&mountinfo);
        let own = own_cgroup_dir(&mounts, &cgroup)
            .ok_or("no cgroup2 hierarchy is mounted for this process")?;
        let base = own.join(format!("steward-{instance}"));
        let probe = base.join("probe");
        make_dir(&base)
            .and_then(|()| make_dir(&probe))
            .and_then(|()| std::fs::remove_dir(&probe))
            .map_err(|e| format!("cannot make a run's cgroup in {}: {e}", base.display()))?;
        let _ = std::fs::remove_dir(&base);
        Ok(Self {
            mounts: mounts.into_iter().map(|m| m.point).collect(),
            base,
            live: Arc::default(),
        })
    }

    /// Every cgroup2 mount: hidden from jobs, so that no job can write a
    /// cgroup file (its own run's `cgroup.procs`, another run's `cgroup.kill`).
    pub fn mounts(&self) -> &[PathBuf] {
        &self.mounts
    }

    /// The instance's directory, which holds one cgroup per active run.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// The directory of `run`'s cgroup (made by [`RunCgroups::make`]).
    pub fn path_for(&self, run: RunId) -> PathBuf {
        self.base.join(format!("run-{run}"))
    }

    /// Makes `run`'s cgroup (blocking). Run ids are never reused, so one that
    /// exists already is a leftover the sweep could not remove (a process
    /// in uninterruptible sleep): what is in it is killed first.
    pub fn make(&self, run: RunId) -> io::Result<RunCgroup> {
        let dir = self.path_for(run);
        let mut live = lock(&self.live);
        if *live == 0 {
            make_dir(&self.base)?;
        }
        make_dir(&dir)?;
        if populated(&dir) {
            kill_all(&dir);
            wait_empty(&dir, EMPTY_WAIT);
        }
        *live += 1;
        Ok(RunCgroup {
            dir: Some(dir),
            cgroups: self.clone(),
        })
    }

    /// Kills what previous processes of this instance left in their runs'
    /// cgroups and removes them (blocking; before any run starts). Returns
    /// (cgroup, processes killed) for each.
    pub fn sweep(&self) -> Vec<(PathBuf, usize)> {
        let Ok(entries) = std::fs::read_dir(&self.base) else {
            return vec![];
        };
        let mut swept = vec![];
        for dir in entries.flatten().map(|e| e.path()) {
            if !dir.is_dir() {
                continue;
            }
            let killed = kill_all(&dir);
            wait_empty(&dir, EMPTY_WAIT);
            let _ = std::fs::remove_dir(&dir);
            swept.push((dir, killed));
        }
        self.remove_if_empty();
        swept
    }

    /// Removes the instance's directory if no run's cgroup is in it.
    pub fn remove_if_empty(&self) {
        if *lock(&self.live) == 0 {
            let _ = std::fs::remove_dir(&self.base);
        }
    }

    /// A run's cgroup is gone (or left, populated, to the next sweep).
    fn released(&self, dir: &Path) {
        let removed = std::fs::remove_dir(dir).is_ok();
        let mut live = lock(&self.live);
        *live = live.saturating_sub(1);
        if *live == 0 && removed {
            let _ = std::fs::remove_dir(&self.base);
        }
    }
}

/// One run's cgroup; dropping it kills what is inside and removes it (or
/// leaves it, still populated, to the next start's sweep).
#[derive(Debug)]
pub struct RunCgroup {
    dir: Option<PathBuf>,
    cgroups: RunCgroups,
}

impl RunCgroup {
    pub fn path(&self) -> &Path {
        self.dir.as_deref().unwrap_or(Path::new(""))
    }

    /// Kills everything left in the cgroup, waits (bounded) until the kernel
    /// has removed them, and removes the cgroup. Returns how many processes
    /// were still inside.
    pub async fn end(mut self) -> usize {
        let Some(dir) = self.dir.take() else {
            return 0;
        };
        let cgroups = self.cgroups.clone();
        tokio::task::spawn_blocking(move || finish(&cgroups, &dir))
            .await
            .unwrap_or(0)
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let cgroups = self.cgroups.clone();
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn_blocking(move || finish(&cgroups, &dir))),
                Err(_) => drop(finish(&cgroups, &dir)),
            }
        }
    }
}

fn finish(cgroups: &RunCgroups, dir: &Path) -> usize {
    let killed = if populated(dir) { kill_all(dir) } else { 0 };
    wait_empty(dir, EMPTY_WAIT);
    cgroups.released(dir);
    killed
}

/// SIGKILL to every process in the cgroup: `cgroup.kill` where the kernel has
/// it (5.14+). Else the cgroup is frozen first, so that no listed process can
/// exit and have its id reused by someone else's before it is signalled.
/// Returns how many processes were listed.
fn kill_all(dir: &Path) -> usize {
    let count = procs(dir).len();
    if std::fs::write(dir.join("cgroup.kill"), b"1").is_ok() {
        return count;
    }
    let frozen = std::fs::write(dir.join("cgroup.freeze"), b"1").is_ok();
    for _ in 0..100 {
        let pids = procs(dir);
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if frozen {
        let _ = std::fs::write(dir.join("cgroup.freeze"), b"0");
    }
    count
}

fn procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Whether any process is in the cgroup or below it.
fn populated(dir: &Path) -> bool {
    match std::fs::read_to_string(dir.join("cgroup.events")) {
        Ok(events) => events.lines().any(|l| l.trim() == "populated 1"),
        Err(_) => !procs(dir).is_empty(),
    }
}

fn wait_empty(dir: &Path, limit: Duration) {
    let until = std::time::Instant::now() + limit;
    while populated(dir) && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn make_dir(dir: &Path) -> io::Result<()> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        r => r,
    }
}

fn lock(live: &Mutex<usize>) -> std::sync::MutexGuard<'_, usize> {
    live.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A cgroup2 mount: the directory of the hierarchy it shows (`root`) and
/// where it is mounted (`point`).
#[derive(Debug, PartialEq)]
struct Mount {
    root: PathBuf,
    point: PathBuf,
}

/// Every cgroup2 file system in a mountinfo listing (fields: id, parent,
/// dev, root, mount point, options..., `-`, type, ...).
fn cgroup2_mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            if after.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            let mut fields = before.split_whitespace().skip(3);
            let root = unescape(fields.next()?);
            let point = unescape(fields.next()?);
            Some(Mount { root, point })
        })
        .collect()
}

/// This process's cgroup directory: its `0::` path, on the mount whose root
/// contains it. A path with `..` (a cgroup outside our namespace) is refused.
fn own_cgroup_dir(mounts: &[Mount], cgroup: &str) -> Option<PathBuf> {
    let own = Path::new(cgroup.lines().find_map(|l| l.strip_prefix("0::"))?.trim());
    if own
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return None;
    }
    mounts.iter().find_map(|m| {
        let rest = own.strip_prefix(&m.root).ok()?;
        Some(m.point.join(rest))
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt as _;
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).filter(|d| {
            b[i] == b'\\' && d[0] <= b'3' && d.iter().all(|c| (b'0'..=b'7').contains(c))
        });
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
30 25 0:26 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu
38 25 0:34 / /sys/fs/cgroup/unified rw,relatime shared:17 - cgroup2 cgroup2 rw
41 25 0:34 /system.slice /srv/my\\040cgroups rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn every_cgroup2_mount_is_found_among_v1_mounts() {
        let mounts = cgroup2_mounts(INFO);
        assert_eq!(
            mounts,
            vec![
                Mount {
                    root: "/".into(),
                    point: "/sys/fs/cgroup/unified".into()
                },
                Mount {
                    root: "/system.slice".into(),
                    point: "/srv/my cgroups".into()
                },
            ]
        );
        assert!(cgroup2_mounts("30 25 0:26 / /x rw - cgroup cgroup rw\n").is_empty());
    }

    #[test]
    fn the_own_cgroup_is_found_on_the_mount_that_shows_it() {
        let mounts = cgroup2_mounts(INFO);
        assert_eq!(
            own_cgroup_dir(&mounts, "4:memory:/x\n0::/system.slice/steward.service\n"),
            Some("/sys/fs/cgroup/unified/system.slice/steward.service".into())
        );
        // Outside this namespace's root: no cgroups rather than a wrong one.
        assert_eq!(own_cgroup_dir(&mounts, "0::/../../elsewhere\n"), None);
        let only_bind = &mounts[1..];
        assert_eq!(
            own_cgroup_dir(only_bind, "0::/system.slice/a\n"),
            Some("/srv/my cgroups/a".into())
        );
        assert_eq!(own_cgroup_dir(only_bind, "0::/user.slice/a\n"), None);
    }
}
