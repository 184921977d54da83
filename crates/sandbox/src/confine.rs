//! The rules the job's process takes on before it becomes the job: built in
//! the supervisor ([`Confinement::prepare`]), applied in the job's process
//! between clone and `exec` ([`Confinement::apply`]), so that the work done
//! per job in the clone is a handful of system calls.

use crate::Rules;
use landlock::{
    path_beneath_rules, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr,
    RulesetCreated, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};
use std::path::{Path, PathBuf};

/// Whether this kernel enforces Landlock (checked once at start, for the warning).
pub fn landlock_available() -> bool {
    Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(ABI::V3))
        .and_then(Ruleset::create)
        .is_ok()
}

/// Everything the job's process applies to itself, ready to apply.
pub(crate) struct Confinement {
    landlock: RulesetCreated,
    require: bool,
    account: Option<(u32, u32)>,
    /// Present when the job runs in a cgroup of its own.
    no_clone3: Option<seccompiler::BpfProgram>,
}

/// The Landlock ruleset every job gets, built once by the launcher and
/// handed to each supervisor it forks (a duplicate of the ruleset's
/// descriptor each), instead of listing directories and adding a rule per
/// entry for every job (about a tenth of what a job's start cost).
///
/// The rules name what existed when they were built: every entry of each
/// directory on the way to a hidden path. An entry added to one of those
/// directories later would have no rule (the job could not reach it), so the
/// launcher builds the ruleset again when any of them changed (its
/// modification time or inode), which it checks before each job.
pub(crate) struct SharedLandlock {
    hidden: Vec<PathBuf>,
    readonly: Vec<PathBuf>,
    require: bool,
    ruleset: RulesetCreated,
    watched: Vec<(PathBuf, Option<Stamp>)>,
}

/// What changes when a directory's entries change.
type Stamp = (i64, i64, u64);

fn stamp(dir: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(dir).ok()?;
    Some((m.mtime(), m.mtime_nsec(), m.ino()))
}

impl SharedLandlock {
    pub(crate) fn build(rules: &Rules) -> Result<Self, String> {
        let (ruleset, listable) = landlock_rules(&rules.hidden, &rules.readonly, rules.require)
            .map_err(|e| format!("cannot isolate the job from Steward's files: {e}"))?;
        Ok(Self {
            hidden: rules.hidden.clone(),
            readonly: rules.readonly.clone(),
            require: rules.require,
            ruleset,
            watched: listable
                .into_iter()
                .map(|d| {
                    let s = stamp(&d);
                    (d, s)
                })
                .collect(),
        })
    }

    /// Whether no directory on the way to a hidden path changed since.
    pub(crate) fn is_current(&self) -> bool {
        self.watched.iter().all(|(d, s)| stamp(d) == *s)
    }

    /// Whether these are the rules `rules` asks for.
    fn serves(&self, rules: &Rules) -> bool {
        self.require == rules.require
            && self.hidden == rules.hidden
            && self.readonly == rules.readonly
    }
}

impl Confinement {
    /// `shared`: the launcher's ruleset, used when it is the one `rules`
    /// asks for (it always is: Steward gives the launcher the same rules).
    pub(crate) fn prepare(rules: &Rules, shared: Option<&SharedLandlock>) -> Result<Self, String> {
        let landlock = match shared.filter(|s| s.serves(rules)) {
            Some(s) => s
                .ruleset
                .try_clone()
                .map_err(|e| format!("cannot isolate the job from Steward's files: {e}"))?,
            None => {
                landlock_rules(&rules.hidden, &rules.readonly, rules.require)
                    .map_err(|e| format!("cannot isolate the job from Steward's files: {e}"))?
                    .0
            }
        };
        let no_clone3 = match &rules.cgroup {
            Some(_) => Some(
                no_clone3_filter()
                    .map_err(|e| format!("cannot keep the job in its cgroup: {e}"))?,
            ),
            None => None,
        };
        Ok(Self {
            landlock,
            require: rules.require,
            account: rules.account,
            no_clone3,
        })
    }

    /// In the job's process: Landlock, then the job's account, then seccomp
    /// (in that order: the account change needs no file, and seccomp last so
    /// that nothing before it is refused).
    pub(crate) fn apply(self) -> Result<(), String> {
        let status = self
            .landlock
            .restrict_self()
            .map_err(|e| format!("cannot isolate the job from Steward's files: {e}"))?;
        if status.ruleset == RulesetStatus::NotEnforced && self.require {
            return Err(
                "this kernel does not enforce Landlock (ABI 3 or later), so the job could read \
                 Steward's key and database; refused (an admin may accept this with \
                 executor.allow_unisolated_commands)"
                    .into(),
            );
        }
        drop_to(self.account).map_err(|e| format!("cannot switch to the job's account: {e}"))?;
        if let Some(program) = &self.no_clone3 {
            // Required for an unprivileged process to install a filter (set
            // by Landlock already where it is enforced).
            nix::sys::prctl::set_no_new_privs()
                .map_err(|e| format!("cannot keep the job in its cgroup: no_new_privs: {e}"))?;
            seccompiler::apply_filter(program)
                .map_err(|e| format!("cannot keep the job in its cgroup: seccomp: {e}"))?;
        }
        Ok(())
    }
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
fn no_clone3_filter() -> Result<seccompiler::BpfProgram, String> {
    use seccompiler::{SeccompAction, SeccompFilter};
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
    filter
        .try_into()
        .map_err(|e| format!("seccomp filter: {e:?}"))
}

/// Drops root for the job's account: no supplementary groups, then the group,
/// then the user (in that order: after the user, the others cannot change).
fn drop_to(account: Option<(u32, u32)>) -> Result<(), nix::Error> {
    use nix::unistd::{setgid, setgroups, setuid, Gid, Uid};
    let Some((uid, gid)) = account else {
        return Ok(());
    };
    if Uid::effective().is_root() {
        setgroups(&[])?;
    }
    setgid(Gid::from_raw(gid))?;
    setuid(Uid::from_raw(uid))
}

/// The Landlock rules hiding `hidden` and protecting `readonly`, not yet
/// applied, and the directories on the way (whose entries the rules name).
/// With `require`, the file-system rights of ABI 3 (Linux 6.2: truncation
/// included) are a hard requirement; newer rights and the signal scope (ABI
/// 6) are added where the kernel has them.
fn landlock_rules(
    hidden: &[PathBuf],
    readonly: &[PathBuf],
    require: bool,
) -> Result<(RulesetCreated, Vec<PathBuf>), landlock::RulesetError> {
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
    Ruleset::default()
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
        .map(|r| (r, listable))
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
    fn the_shared_ruleset_goes_stale_when_a_directory_on_the_way_changes() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(root.join("a/data")).unwrap();
        let rules = Rules {
            hidden: vec![root.join("a/data")],
            ..Rules::default()
        };
        let shared = SharedLandlock::build(&rules).unwrap();
        assert!(shared.serves(&rules));
        assert!(shared.is_current());
        // Inside an open directory: no rule changes, still current.
        std::fs::create_dir(root.join("a/data/inside")).unwrap();
        assert!(shared.is_current());
        // Beside the hidden path: a new entry the rules do not name.
        std::fs::create_dir(root.join("a/new")).unwrap();
        assert!(!shared.is_current());
        let other = Rules {
            require: true,
            ..rules.clone()
        };
        assert!(!shared.serves(&other));
    }

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
}
