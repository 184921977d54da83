//! Command jobs against Steward itself: they cannot read (or write) its key
//! file and database, whatever user Steward and the job run as, and no
//! descendant of a run outlives it, also one that double-forks into a new
//! session.

use crate::helpers::{gone, serving_base, wait_pid, work_dir, TestApp};
use serde_json::json;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use steward_clock::SystemClock;

/// A shell script that tries every way at Steward's files it can think of and
/// reports each as READ / DENIED. `as_root`: the job keeps root's capabilities
/// (`run_as_user = "root"` is full privilege, as the start-up warning says),
/// which include reading another process's environment; files stay hidden.
fn thief(data: &std::path::Path, steward_pid: u32, as_root: bool) -> String {
    let d = data.display();
    let bin = env!("CARGO_BIN_EXE_steward");
    let process = if as_root {
        String::new()
    } else {
        format!("\"/proc/{steward_pid}/environ\" \"/proc/{steward_pid}/mem\"")
    };
    format!(
        r#"
for f in "{d}/steward.key" "{d}/steward.db" "{d}/steward.db-wal" "{d}/audit.head" \
         "/proc/{steward_pid}/root{d}/steward.key" "/proc/{steward_pid}/cwd/steward.key" \
         {process}; do
  if head -c 16 "$f" >/dev/null 2>&1; then echo "READ $f"; else echo "DENIED $f"; fi
done
for fd in /proc/{steward_pid}/fd/*; do
  case "$(readlink "$fd")" in
    "{d}"/*) if head -c 16 "$fd" >/dev/null 2>&1; then echo "READ $fd"; else echo "DENIED $fd"; fi ;;
  esac
done
if echo planted > "{d}/planted" 2>/dev/null; then echo "WROTE planted"; fi
if [ -e "{d}/steward.db-shm" ] && rm -f "{d}/steward.db-shm" 2>/dev/null && [ ! -e "{d}/steward.db-shm" ]; then echo "REMOVED shm"; fi
if kill -0 {steward_pid} 2>/dev/null; then echo "SIGNALLED steward"; fi
if kill -STOP $PPID 2>/dev/null; then kill -CONT $PPID; echo "SIGNALLED supervisor"; fi
if : >> "{bin}" 2>/dev/null; then echo "WROTE the steward binary"; fi
ls "{d}" >/dev/null 2>&1 && echo "LISTED"
echo "finished"
"#
    )
}

fn assert_kept_out(out: &str, key: &str) {
    assert!(out.contains("finished"), "{out}");
    assert!(
        out.contains("DENIED") && out.contains("steward.key"),
        "{out}"
    );
    // What the job printed (the `sys` line quotes the script itself).
    let printed: Vec<&str> = out.lines().filter(|l| l.contains(" out ")).collect();
    for bad in ["READ ", "WROTE", "REMOVED", "SIGNALLED", "STOLE"] {
        assert!(
            !printed.iter().any(|l| l.contains(bad)),
            "a job got at Steward's files ({bad}):\n{out}"
        );
    }
    // Not one key line made it into the output.
    for line in key.lines().filter(|l| l.starts_with("key ")) {
        assert!(!out.contains(line), "{out}");
    }
}

async fn run_thief(
    t: &TestApp,
    name: &str,
    data: &std::path::Path,
    pid: u32,
    as_root: bool,
) -> String {
    t.command_job(name, &["sh", "-c", &thief(data, pid, as_root)], json!({}))
        .await;
    let (s, run) = t.post(&format!("/api/v1/jobs/{name}/run"), json!({})).await;
    assert_eq!(s, 202, "{run}");
    let run = t
        .wait_run(run["id"].as_i64().unwrap(), Duration::from_secs(20))
        .await;
    t.text(&format!("/api/v1/runs/{}/output", run["id"])).await
}

/// Runs job `name` once; returns the ended run and its output.
async fn run_to_end(t: &TestApp, name: &str) -> (serde_json::Value, String) {
    let (s, run) = t.post(&format!("/api/v1/jobs/{name}/run"), json!({})).await;
    assert_eq!(s, 202, "{run}");
    let run = t
        .wait_run(run["id"].as_i64().unwrap(), Duration::from_secs(20))
        .await;
    let out = t.text(&format!("/api/v1/runs/{}/output", run["id"])).await;
    (run, out)
}

/// Steward as root, jobs as root (`run_as_user = "root"`) and as `nobody`.
#[tokio::test]
async fn jobs_cannot_read_stewards_key_or_database_when_steward_is_root() {
    let t = TestApp::start().await;
    let data = std::fs::canonicalize(t.dir.path().join("data")).unwrap();
    let key = std::fs::read_to_string(data.join("steward.key")).unwrap();
    let out = run_thief(&t, "thief-as-root", &data, std::process::id(), true).await;
    assert_kept_out(&out, &key);
    t.stop().await;

    let t = TestApp::start_with(
        |c| c.executor.run_as_user = Some("nobody".into()),
        Arc::new(SystemClock),
    )
    .await;
    let data = std::fs::canonicalize(t.dir.path().join("data")).unwrap();
    let key = std::fs::read_to_string(data.join("steward.key")).unwrap();
    let out = run_thief(&t, "thief-as-nobody", &data, std::process::id(), false).await;
    assert_kept_out(&out, &key);
    t.stop().await;
}

/// Steward as an unprivileged user: its jobs run as that same user, and only
/// the sandbox keeps them out.
#[tokio::test]
async fn jobs_cannot_read_stewards_key_or_database_when_steward_is_unprivileged() {
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let home = dir.path().join("steward");
    std::fs::create_dir(&home).unwrap();
    nix::unistd::chown(&home, Some(nobody.uid), Some(nobody.gid)).unwrap();
    let data = home.join("data");
    let mut server = Killed(
        Command::new(env!("CARGO_BIN_EXE_steward"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .env_clear()
            .envs(crate::helpers::database_env(&data))
            .env("PATH", "/usr/bin:/bin")
            .env("STEWARD_LOG_FORMAT", "json")
            .env(
                "STEWARD_BOOTSTRAP_ADMIN_PASSWORD",
                crate::helpers::BOOTSTRAP_PASSWORD,
            )
            .uid(nobody.uid.as_raw())
            .gid(nobody.gid.as_raw())
            .current_dir(&home)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let base = serving_base(server.0.stdout.take().unwrap());
    let token = crate::helpers::admin_token(&base).await;
    let t = TestApp::attach(base, token);
    let data = std::fs::canonicalize(&data).unwrap();
    let key = std::fs::read_to_string(data.join("steward.key")).unwrap();
    // Check the test itself: nothing but the sandbox stands between the job and the key.
    let st = std::fs::metadata(data.join("steward.key")).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&st),
        nobody.uid.as_raw()
    );
    let out = run_thief(&t, "thief", &data, server.0.id(), false).await;
    assert_kept_out(&out, &key);
    // The job is not crippled: it works in its own directory.
    let work = home.join("work");
    std::fs::create_dir(&work).unwrap();
    nix::unistd::chown(&work, Some(nobody.uid), Some(nobody.gid)).unwrap();
    let script = format!("echo hello > {0}/f && cat {0}/f && id -u", work.display());
    t.command_job("worker", &["sh", "-c", &script], json!({}))
        .await;
    let (_, run) = t.post("/api/v1/jobs/worker/run", json!({})).await;
    let run = t
        .wait_run(run["id"].as_i64().unwrap(), Duration::from_secs(20))
        .await;
    let out = t.text(&format!("/api/v1/runs/{}/output", run["id"])).await;
    assert_eq!(run["status"], "succeeded", "{run} {out}");
    assert!(out.contains("out hello"), "{out}");
    assert!(
        out.contains(&format!("out {}", nobody.uid.as_raw())),
        "{out}"
    );
}

/// A server process that is stopped however the test ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn escaper(pidfile: &std::path::Path, main: &str) -> String {
    // The subshell forks the escaper and exits at once (a double fork); the
    // escaper starts a new session, so it is in no group Steward knows.
    format!(
        "(setsid sh -c 'echo $$ > {}; exec sleep 300' </dev/null >/dev/null 2>&1 &); {main}",
        pidfile.display()
    )
}

#[tokio::test]
async fn a_process_that_leaves_the_session_ends_with_its_run() {
    let t = TestApp::start().await;
    let work = work_dir(t.dir.path());
    // Main process ends normally; the escaper would live on.
    let p1 = work.join("e1.pid");
    t.command_job(
        "ends",
        &["sh", "-c", &escaper(&p1, "sleep 0.5; echo done")],
        json!({}),
    )
    .await;
    let (_, run) = t.post("/api/v1/jobs/ends/run", json!({})).await;
    let run = t
        .wait_run(run["id"].as_i64().unwrap(), Duration::from_secs(20))
        .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let pid = wait_pid(&p1).await;
    assert!(gone(pid).await, "escaper {pid} outlived its finished run");

    // Timeout.
    let p2 = work.join("e2.pid");
    t.command_job(
        "times-out",
        &["sh", "-c", &escaper(&p2, "sleep 300")],
        json!({"policies": {"timeout": "1s"}}),
    )
    .await;
    let (_, run) = t.post("/api/v1/jobs/times-out/run", json!({})).await;
    let pid = wait_pid(&p2).await;
    let run = t
        .wait_run(run["id"].as_i64().unwrap(), Duration::from_secs(20))
        .await;
    assert_eq!(run["status"], "timed_out", "{run}");
    assert!(gone(pid).await, "escaper {pid} outlived the timeout");

    // Cancel, with an escaper that ignores SIGTERM.
    let p3 = work.join("e3.pid");
    let stubborn = format!(
        "(setsid sh -c 'trap \"\" TERM; echo $$ > {}; while :; do sleep 1; done' </dev/null >/dev/null 2>&1 &); sleep 300",
        p3.display()
    );
    t.command_job("cancelled", &["sh", "-c", &stubborn], json!({}))
        .await;
    let (_, run) = t.post("/api/v1/jobs/cancelled/run", json!({})).await;
    let id = run["id"].as_i64().unwrap();
    let pid = wait_pid(&p3).await;
    let (s, _) = t
        .post(&format!("/api/v1/runs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(s, 202);
    let run = t.wait_run(id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    assert!(gone(pid).await, "escaper {pid} outlived the cancel");
    t.stop().await;
}

/// Code a job names in its environment (`LD_PRELOAD`) is loaded by the
/// dynamic loader of whatever process gets that environment first: it must be
/// the job itself, inside the sandbox, never Steward's helpers before it.
#[tokio::test]
async fn a_preloaded_library_runs_only_inside_the_sandbox() {
    let t = TestApp::start().await;
    let data = std::fs::canonicalize(t.dir.path().join("data")).unwrap();
    let key = std::fs::read_to_string(data.join("steward.key")).unwrap();
    let work = work_dir(t.dir.path());
    let src = work.join("evil.c");
    std::fs::write(
        &src,
        format!(
            r#"#include <stdio.h>
__attribute__((constructor)) static void steal(void) {{
    char line[256];
    FILE *f = fopen("{}/steward.key", "r");
    if (f && fgets(line, sizeof line, f)) fprintf(stderr, "STOLE %s", line);
    else fprintf(stderr, "preload ran, key DENIED\n");
    if (f) fclose(f);
}}
"#,
            data.display()
        ),
    )
    .unwrap();
    let lib = work.join("evil.so");
    compile(&src, &lib, &["-shared", "-fPIC"]);
    let lib = lib.to_str().unwrap();
    t.command_job(
        "preload",
        &["sh", "-c", "echo finished"],
        json!({"spec": {"kind": "command", "argv": ["sh", "-c", "echo finished"], "env": {"LD_PRELOAD": lib}}}),
    )
    .await;
    let (_, run) = t.post("/api/v1/jobs/preload/run", json!({})).await;
    let run = t
        .wait_run(run["id"].as_i64().unwrap(), Duration::from_secs(20))
        .await;
    let out = t.text(&format!("/api/v1/runs/{}/output", run["id"])).await;
    assert_eq!(run["status"], "succeeded", "{run} {out}");
    assert!(
        out.contains("preload ran, key DENIED"),
        "the library did not run in the job: {out}"
    );
    assert!(!out.contains("STOLE"), "{out}");
    for line in key.lines().filter(|l| l.starts_with("key ")) {
        assert!(!out.contains(line), "{out}");
    }
    t.stop().await;
}

/// `clone3(CLONE_INTO_CGROUP)` takes a directory descriptor, and Landlock does
/// not check `O_PATH` opens: a job running as root that opens the cgroup
/// root that way could start a child outside its run's cgroup. The run's
/// cgroup namespace makes the kernel refuse it.
#[tokio::test]
async fn a_job_cannot_start_a_child_outside_its_cgroup() {
    let Ok(cgroups) = steward_engine::executor::cgroup::RunCgroups::detect(&format!(
        "it-clone3-{}",
        std::process::id()
    )) else {
        eprintln!("skipped: this machine gives Steward no cgroups");
        return;
    };
    let t = TestApp::start().await;
    let work = work_dir(t.dir.path());
    let src = work.join("escape.c");
    std::fs::write(
        &src,
        r#"#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int fd = open(argv[1], O_PATH | O_DIRECTORY);
    if (fd < 0) { printf("open refused: %s\n", strerror(errno)); return 0; }
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_INTO_CGROUP;
    args.exit_signal = SIGCHLD;
    args.cgroup = fd;
    long pid = syscall(SYS_clone3, &args, sizeof args);
    if (pid == 0) { execlp("sleep", "sleep", "300", (char *)0); _exit(1); }
    if (pid < 0) { printf("clone3 refused: %s\n", strerror(errno)); return 0; }
    printf("ESCAPED %ld\n", pid);
    fflush(stdout);
    return 0;
}
"#,
    )
    .unwrap();
    let bin = work.join("escape");
    compile(&src, &bin, &[]);
    let root = cgroups.mounts()[0].display().to_string();
    let bin = bin.display().to_string();
    t.command_job("clone3", &[&bin, &root], json!({})).await;
    let (_, run) = t.post("/api/v1/jobs/clone3/run", json!({})).await;
    let run = t
        .wait_run(run["id"].as_i64().unwrap(), Duration::from_secs(20))
        .await;
    let out = t.text(&format!("/api/v1/runs/{}/output", run["id"])).await;
    if let Some(pid) = out
        .split("ESCAPED ")
        .nth(1)
        .and_then(|p| p.trim().parse::<i32>().ok())
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        panic!("a job started a child outside its run's cgroup: {out}");
    }
    assert!(out.contains("refused"), "{out}");
    t.stop().await;
}

/// Compiles a C attack program with gcc (installed by the test command).
fn compile(src: &std::path::Path, out: &std::path::Path, flags: &[&str]) {
    let cc = Command::new("gcc")
        .args(flags)
        .arg("-o")
        .arg(out)
        .arg(src)
        .output()
        .expect("gcc");
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
}

/// The launcher (the one process that forks every job's supervisor) of this
/// test process's Steward.
fn launcher_pid() -> Option<i32> {
    let parent = format!("--parent\0{}\0", std::process::id());
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline);
        (cmdline.contains("__steward-launcher\0") && cmdline.contains(&parent)).then_some(pid)
    })
}

/// A launcher that dies takes the jobs it started down with it (their
/// supervisors' parent-death signal), those runs end recorded as failed, and
/// the next run gets a new launcher.
#[tokio::test]
async fn a_killed_launcher_ends_its_jobs_and_the_next_run_gets_a_new_one() {
    let t = TestApp::start().await;
    let work = work_dir(t.dir.path());
    let pidfile = work.join("long.pid");
    let script = format!("echo $$ > {}; exec sleep 300", pidfile.display());
    t.command_job("long", &["sh", "-c", &script], json!({}))
        .await;
    let (_, run) = t.post("/api/v1/jobs/long/run", json!({})).await;
    let id = run["id"].as_i64().unwrap();
    let job = wait_pid(&pidfile).await;
    let launcher = launcher_pid().expect("a launcher runs while a job does");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(launcher),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let run = t.wait_run(id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(gone(job).await, "job {job} outlived its launcher");

    t.command_job("after", &["echo", "still here"], json!({}))
        .await;
    let (run, out) = run_to_end(&t, "after").await;
    assert_eq!(run["status"], "succeeded", "{run}\n{out}");
    let again = launcher_pid().expect("a new launcher");
    assert_ne!(again, launcher);
    t.stop().await;
}

/// The launcher builds the Landlock rules once; they name every entry beside
/// the hidden data directory as it was then. A directory made beside it
/// later must still be open to jobs (the rules are built again), and the
/// data directory must stay hidden after that rebuild.
#[tokio::test]
async fn a_directory_made_beside_the_data_directory_after_start_is_open_to_jobs() {
    let t = TestApp::start().await;
    let data = std::fs::canonicalize(t.dir.path().join("data")).unwrap();
    // A first job: the launcher starts and builds its rules.
    let out = run_thief(&t, "before", &data, std::process::id(), true).await;
    assert!(out.contains("finished"), "{out}");
    let later = t.dir.path().join("made-later");
    std::fs::create_dir(&later).unwrap();
    std::fs::write(later.join("note"), "reachable\n").unwrap();
    std::fs::set_permissions(&later, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        later.join("note"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let note = later.join("note");
    t.command_job("later", &["cat", note.to_str().unwrap()], json!({}))
        .await;
    let (run, out) = run_to_end(&t, "later").await;
    assert_eq!(run["status"], "succeeded", "{run}\n{out}");
    assert!(out.contains("reachable"), "{out}");
    // Still hidden with the rebuilt rules.
    let key = std::fs::read_to_string(data.join("steward.key")).unwrap();
    let out = run_thief(&t, "after", &data, std::process::id(), true).await;
    assert_kept_out(&out, &key);
    t.stop().await;
}

/// A job starts as from a shell: no signal blocked, and SIGPIPE not ignored
/// (Rust programs, Steward's launcher and supervisors among them, ignore it,
/// and an ignored signal would stay ignored across `exec`). Signals ignored
/// by whoever started Steward are not Steward's to change.
#[tokio::test]
async fn a_job_starts_with_no_signal_blocked_and_sigpipe_not_ignored() {
    let t = TestApp::start().await;
    t.command_job(
        "signals",
        &["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"],
        json!({}),
    )
    .await;
    let (run, out) = run_to_end(&t, "signals").await;
    assert_eq!(run["status"], "succeeded", "{run}\n{out}");
    let mask = |name: &str| -> u64 {
        let line = out
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no {name} line:\n{out}"));
        let hex = line.rsplit(':').next().unwrap().trim();
        u64::from_str_radix(hex, 16).unwrap()
    };
    assert_eq!(mask("SigBlk"), 0, "{out}");
    let sigpipe = 1u64 << (nix::sys::signal::Signal::SIGPIPE as u32 - 1);
    assert_eq!(mask("SigIgn") & sigpipe, 0, "SIGPIPE is ignored:\n{out}");
    t.stop().await;
}
