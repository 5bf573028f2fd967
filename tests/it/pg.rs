//! A throwaway PostgreSQL cluster for the tests: `initdb` into a temp dir (trust, no sync, user `televibe`),
//! the server on a free loopback port with its socket in the same dir, stopped (`pg_ctl -m immediate`) and
//! removed when dropped. As root (initdb refuses root), the cluster runs as the `postgres` user. The tests'
//! server skips fsync and waits for no commit ([`PgCluster::start`]); the benchmark's keeps PostgreSQL's
//! defaults ([`PgCluster::start_with`]).
//!
//! `TELEVIBE_TEST_STORE=postgres` gives every `Env` a cluster of its own and points `store.url` at it, so
//! the same tests run on both engines; [`sqlite_only`] marks the few that are about SQLite's file.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Whether this run puts the daemons' stores on PostgreSQL (`TELEVIBE_TEST_STORE=postgres`).
pub fn on_postgres() -> bool {
    std::env::var("TELEVIBE_TEST_STORE").is_ok_and(|v| v == "postgres")
}

/// Guard of a test about SQLite's file (it opens, damages or copies `state.db` itself): true when the test
/// runs (SQLite); on PostgreSQL it says so and the test returns.
pub fn sqlite_only(why: &str) -> bool {
    if on_postgres() {
        eprintln!("SQLite-only test, not run with TELEVIBE_TEST_STORE=postgres: {why}");
        false
    } else {
        true
    }
}

/// The server's programs: the newest `/usr/lib/postgresql/<version>/bin` (scripts/install-deps).
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b).expect(
        "PostgreSQL's initdb not found under /usr/lib/postgresql/*/bin: run scripts/install-deps",
    )
}

/// The uid and gid the cluster runs as when the tests run as root.
fn postgres_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new("postgres").unwrap();
    // SAFETY: getpwnam with a valid C string; the record is read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "the tests run as root and there is no postgres user to run the cluster (scripts/install-deps)"
    );
    // SAFETY: pw is non-null, from getpwnam just above.
    Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    runs_as_postgres: bool,
    /// PostgreSQL's own durability settings (fsync, full page writes, commits waiting for the WAL on disk).
    durable: bool,
}

impl PgCluster {
    /// A new cluster, started, that skips fsync and does not wait for commits to reach the disk.
    pub fn start() -> PgCluster {
        PgCluster::start_with(false)
    }

    /// A new cluster, started; `durable`: with PostgreSQL's default durability, what a server in use runs
    /// (fsync, full page writes, a commit answered once its WAL is on disk).
    pub fn start_with(durable: bool) -> PgCluster {
        let dir = tempfile::Builder::new().prefix("tvpg").tempdir().unwrap();
        let owner = postgres_user();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let cluster = PgCluster {
            bin: bin_dir(),
            port: free_port(),
            runs_as_postgres: owner.is_some(),
            durable,
            dir,
        };
        let data = cluster.data();
        let out = cluster
            .command("initdb")
            .args(["-A", "trust", "--no-sync", "-U", "televibe", "-E", "UTF8"])
            .args(["--locale=C", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.start_server();
        cluster
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut c = if self.runs_as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        c.stdin(Stdio::null()).env("LC_ALL", "C");
        c
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The database the daemons use (the cluster's `postgres`), as user `televibe` over TCP.
    pub fn url(&self) -> String {
        format!("postgres://televibe@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server on the cluster's port (again, after [`PgCluster::stop`]).
    pub fn start_server(&self) {
        let fast = if self.durable {
            ""
        } else {
            " -c fsync=off -c full_page_writes=off -c synchronous_commit=off"
        };
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={}{fast}",
            self.port,
            self.dir.path().display()
        );
        let out = self
            .command("pg_ctl")
            .args(["-w", "-t", "30", "-D"])
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-o", &opts, "start"])
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
    }

    /// Stops the server at once, as a crash or a lost host would (`pg_ctl -m immediate stop`).
    pub fn stop(&self) {
        let _ = self
            .command("pg_ctl")
            .args(["-w", "-m", "immediate", "-D"])
            .arg(self.data())
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
