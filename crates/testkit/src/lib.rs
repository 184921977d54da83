//! Test support: a real PostgreSQL, started by the tests themselves.
//!
//! [`Cluster::shared`] is one cluster for every test process of a run (nextest
//! runs each test in its own process): the first test to ask runs `initdb` into
//! a directory under the system's temporary directory and starts it on a free
//! loopback port, under a file lock so that concurrent first tests agree; later
//! tests find it running. Each test gets a database of its own
//! ([`Cluster::create_database`]); databases of test processes that have ended
//! are dropped by the next one. `.ci/test` stops the cluster when the suite is
//! done (in shell, as [`stop_shared`] does; `steward-testkit stop` by hand).
//!
//! [`Cluster::private`] is a cluster of one test's own, for tests that stop and
//! start the server (a database outage) without disturbing the others.
//!
//! PostgreSQL refuses to run as root: when the tests are root, its programs run
//! as the `postgres` account (`runuser`), which owns the cluster's files.
//! fsync and full-page writes are off: these clusters hold nothing worth
//! keeping and the machine does not crash under them. Commits stay
//! synchronous, so a server stopped at once (an outage test) keeps every
//! commit it acknowledged, as a real one does.
#![forbid(unsafe_code)]
#![allow(clippy::expect_used, clippy::panic)]
// Test support starts PostgreSQL's own programs, not jobs.
#![allow(clippy::disallowed_methods)]

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The superuser tests connect as; its password is random per cluster.
const USER: &str = "steward_test";

pub struct Cluster {
    root: PathBuf,
    bin: PathBuf,
    port: u16,
    password: String,
    /// A private cluster's directory, removed (after a stop) on drop.
    owned: Option<PathBuf>,
    /// PostgreSQL's own durability (fsync, full-page writes), for benchmarks
    /// that compare backends as they would run in production.
    durable: bool,
}

/// Where the shared cluster lives: `STEWARD_TEST_PG_DIR` or a fixed directory
/// under the temporary directory (one per machine user).
pub fn shared_dir() -> PathBuf {
    std::env::var_os("STEWARD_TEST_PG_DIR").map_or_else(
        || std::env::temp_dir().join(format!("steward-test-pg-{}", nix::unistd::geteuid())),
        PathBuf::from,
    )
}

/// Stops the shared cluster if it runs (for `.ci/test` at the end of a run).
pub fn stop_shared() {
    stop_at(&shared_dir());
}

/// Stops the cluster kept in `root`, if it runs.
pub fn stop_at(root: &Path) {
    if root.join("data").join("PG_VERSION").exists() {
        let bin = bin_dir();
        let _ = pg_command(&bin, "pg_ctl")
            .args(["stop", "-m", "fast", "-D"])
            .arg(root.join("data"))
            .status();
    }
}

impl Cluster {
    /// The cluster every test of this run shares, started on first use.
    pub fn shared() -> &'static Cluster {
        static SHARED: OnceLock<Cluster> = OnceLock::new();
        SHARED.get_or_init(|| {
            let root = shared_dir();
            fs::create_dir_all(&root).expect("create the shared cluster's directory");
            let lock_path = root.with_extension("lock");
            let lock_file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .expect("open the cluster lock");
            let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
                .map_err(|(_, e)| e)
                .expect("lock the shared cluster");
            let mut cluster = Cluster::at(root, None, false);
            if !cluster.running() {
                cluster.start();
            } else {
                cluster.port = read_port(&cluster.root);
                cluster.password = read_password(&cluster.root);
            }
            cluster
        })
    }

    /// A cluster of the calling test's own, stopped and removed on drop.
    pub fn private() -> Cluster {
        let root = std::env::temp_dir().join(format!(
            "steward-test-pg-private-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        fs::create_dir_all(&root).expect("create a private cluster's directory");
        let mut cluster = Cluster::at(root.clone(), Some(root), false);
        cluster.start();
        cluster
    }

    /// A cluster kept in `root` across processes (benchmarks): started if it
    /// is not running, with PostgreSQL's default durability when `durable`.
    pub fn persistent(root: PathBuf, durable: bool) -> Cluster {
        let mut cluster = Cluster::at(root, None, durable);
        if cluster.running() {
            cluster.port = read_port(&cluster.root);
            cluster.password = read_password(&cluster.root);
        } else {
            cluster.start();
        }
        cluster
    }

    fn at(root: PathBuf, owned: Option<PathBuf>, durable: bool) -> Cluster {
        Cluster {
            bin: bin_dir(),
            port: 0,
            password: String::new(),
            root,
            owned,
            durable,
        }
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    fn running(&self) -> bool {
        self.data().join("PG_VERSION").exists()
            && pg_command(&self.bin, "pg_ctl")
                .arg("status")
                .arg("-D")
                .arg(self.data())
                .stdout(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    }

    /// Runs `initdb` if there is no cluster yet, then starts it on a free port.
    pub fn start(&mut self) {
        if !self.data().join("PG_VERSION").exists() {
            self.init();
        }
        self.password = read_password(&self.root);
        if self.port == 0 {
            self.port = free_port();
        }
        fs::write(self.root.join("port"), self.port.to_string()).expect("write the port file");
        let durability = if self.durable {
            ""
        } else {
            " -c fsync=off -c full_page_writes=off"
        };
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''{durability} \
             -c max_connections=400",
            self.port
        );
        let status = pg_command(&self.bin, "pg_ctl")
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(self.data())
            .arg("-l")
            .arg(self.root.join("server.log"))
            .args(["-o", &options])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run pg_ctl start");
        if !status.success() {
            let log = fs::read_to_string(self.root.join("server.log")).unwrap_or_default();
            panic!("PostgreSQL did not start ({status}):\n{log}");
        }
    }

    /// Stops the server at once (as a crash or an outage would), keeping its files.
    pub fn stop(&self) {
        let status = pg_command(&self.bin, "pg_ctl")
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.data())
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run pg_ctl stop");
        assert!(status.success(), "pg_ctl stop: {status}");
    }

    fn init(&self) {
        fs::create_dir_all(&self.root).expect("create the cluster's directory");
        let password = format!("pw-{:032x}", rand::random::<u128>());
        let pwfile = self.root.join("password");
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&pwfile)
            .expect("write the password file");
        writeln!(f, "{password}").expect("write the password file");
        drop(f);
        give_to_postgres(&self.root);
        let status = pg_command(&self.bin, "initdb")
            .arg("-D")
            .arg(self.data())
            .args([
                "-U",
                USER,
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run initdb");
        assert!(status.success(), "initdb failed: {status}");
    }

    /// The URL of `database` on this cluster (password included: a test's).
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{USER}:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    /// The password in [`url`](Self::url), for tests that look for it in logs.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A new, empty database for the calling test; returns its URL. Databases
    /// left by test processes that have ended are dropped first.
    pub async fn create_database(&self) -> String {
        self.new_database("t").await
    }

    /// A new database that outlives this process (benchmarks start Steward on
    /// it after `steward-testkit database` has exited); never dropped.
    pub async fn create_kept_database(&self) -> String {
        self.new_database("kept").await
    }

    async fn new_database(&self, prefix: &str) -> String {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        use sqlx::Connection as _;
        let mut admin = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connect to the test cluster");
        let names: Vec<String> =
            sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 't\\_%'")
                .fetch_all(&mut admin)
                .await
                .expect("list test databases");
        for name in names {
            let pid = name.split('_').nth(1).and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&mut admin)
                    .await;
            }
        }
        let name = format!(
            "{prefix}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
            .expect("create a test database");
        self.url(&name)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(dir) = self.owned.take() {
            if self.running() {
                self.stop();
            }
            let _ = fs::remove_dir_all(dir);
        }
    }
}

fn read_port(root: &Path) -> u16 {
    fs::read_to_string(root.join("port"))
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .expect("the running cluster's port file")
}

fn read_password(root: &Path) -> String {
    fs::read_to_string(root.join("password"))
        .expect("read the cluster's password")
        .trim()
        .to_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

/// PostgreSQL's programs directory: `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/*/bin` (Debian keeps them off the PATH).
fn bin_dir() -> PathBuf {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    let mut found: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found
        .pop()
        .expect("PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin); `bash .ci/test` installs it")
}

/// A PostgreSQL program, run as `postgres` when the tests run as root.
fn pg_command(bin: &Path, program: &str) -> Command {
    let path = bin.join(program);
    if nix::unistd::geteuid().is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

/// Hands the cluster's directory to the `postgres` account when running as root.
fn give_to_postgres(root: &Path) {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let user = nix::unistd::User::from_name("postgres")
        .ok()
        .flatten()
        .expect("the postgres account (PostgreSQL's package makes it)");
    nix::unistd::chown(root, Some(user.uid), Some(user.gid)).expect("chown the cluster directory");
    if let Ok(entries) = fs::read_dir(root) {
        for e in entries.flatten() {
            let _ = nix::unistd::chown(&e.path(), Some(user.uid), Some(user.gid));
        }
    }
}
