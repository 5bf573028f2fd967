//! The release daemon as the benchmark drives it: a root in a temp directory, a config, start, readiness,
//! the MCP socket, and what `/proc` says about the process.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use televibe::mcp::client::DaemonClient;

/// The release binary, built first when needed (`cargo build --release --bin televibe`).
pub fn binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--quiet", "--bin", "televibe"])
        .current_dir(root)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the release binary failed");
    root.join("target/release/televibe")
}

/// A root and a config for one case.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub bin: PathBuf,
}

impl Setup {
    /// `extra` goes into the config after the root, a port-0 probe listener and quiet logs.
    pub fn new(bin: &Path, extra: &str) -> Setup {
        // Not under /tmp: every job's sandbox replaces /tmp.
        let base = std::env::var("TVBENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-work"));
        std::fs::create_dir_all(&base).unwrap();
        // TVBENCH_KEEP=1 keeps each case's root (logs, database) for a look afterwards.
        let dir = tempfile::Builder::new()
            .prefix("bench")
            .disable_cleanup(std::env::var_os("TVBENCH_KEEP").is_some())
            .tempdir_in(&base)
            .unwrap();
        // As root, jobs run as `agent.run_as`: they must be able to walk down to their worktree.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let s = Setup {
            dir,
            bin: bin.to_path_buf(),
        };
        let http = if extra.contains("[http]") {
            ""
        } else {
            "[http]\nlisten = \"127.0.0.1:0\"\n"
        };
        std::fs::write(
            s.config(),
            format!("root = \"{}\"\n{extra}\n{http}", s.root().display()),
        )
        .unwrap();
        std::fs::create_dir_all(s.root().join("repos")).unwrap();
        s
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }
    pub fn socket(&self) -> PathBuf {
        self.root().join("orchestrator/televibe.sock")
    }

    /// A `televibe` command on this config, with no `TELEVIBE_*` from the bench's own environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--config").arg(self.config()).args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("TELEVIBE_") || k == "NOTIFY_SOCKET" || k.starts_with("WATCHDOG_") {
                c.env_remove(k);
            }
        }
        c
    }

    /// Starts `televibe serve` (with a bot token when given); answers at once, before readiness.
    pub fn spawn(&self, token: Option<&str>) -> Daemon {
        let _ = std::fs::remove_file(self.root().join("orchestrator/http.addr"));
        let mut c = self.command(&["serve"]);
        if let Some(t) = token {
            c.env("TELEVIBE_TELEGRAM__TOKEN", t);
        }
        let log = std::fs::File::create(self.dir.path().join("daemon.stderr")).unwrap();
        let child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("televibe starts");
        Daemon {
            child,
            addr_file: self.root().join("orchestrator/http.addr"),
            addr: None,
        }
    }

    /// Starts the daemon and waits for readiness.
    pub fn start(&self, token: Option<&str>) -> Daemon {
        let mut d = self.spawn(token);
        d.wait_ready(Duration::from_secs(60)).unwrap_or_else(|e| {
            panic!(
                "{e}; see {}",
                self.dir.path().join("daemon.stderr").display()
            )
        });
        d
    }

    /// Registers `repos/app` and opens session S1 in it; answers the client that did.
    pub async fn session(&self) -> DaemonClient {
        let mcp = self.mcp().await;
        mcp.call("register_project", serde_json::json!({"path": "app"}))
            .await
            .expect("app registers");
        mcp.call("create_session", serde_json::json!({"project_id": "app"}))
            .await
            .expect("S1 opens");
        mcp
    }

    /// A client on the control socket (which may come up a moment after readiness).
    pub async fn mcp(&self) -> DaemonClient {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            match DaemonClient::connect(&self.socket()).await {
                Ok(c) => return c,
                Err(e) if Instant::now() > end => panic!("the control socket answers: {e:?}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }
}

pub struct Daemon {
    pub child: Child,
    addr_file: PathBuf,
    addr: Option<SocketAddr>,
}

impl Daemon {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Polls `/health/ready` every 2 ms until it answers 200; answers how long that took.
    pub fn wait_ready(&mut self, limit: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(format!("the daemon exited: {st}"));
            }
            if self.addr.is_none() {
                self.addr = std::fs::read_to_string(&self.addr_file)
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
            }
            if let Some(addr) = self.addr
                && http_status(addr, "/health/ready") == Some(200)
            {
                return Ok(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Err(format!("not ready after {limit:?}"))
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for the exit.
    pub fn stop(&mut self) {
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let _ = self.child.wait();
    }

    /// Resident memory now and at its peak, in bytes.
    pub fn rss(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let kb = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                * 1024
        };
        (kb("VmRSS:"), kb("VmHWM:"))
    }

    /// `/proc/<pid>/status` lines of memory (`VmRSS`, `RssAnon`, `RssFile`, …) as they read.
    pub fn memory_detail(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("Rss") || l.starts_with("VmRSS") || l.starts_with("VmHWM"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The `n` mappings with the most resident memory (TVBENCH_SMAPS=1 prints them): (kB, perms and path).
    pub fn top_mappings(&self, n: usize) -> Vec<(u64, String)> {
        let smaps =
            std::fs::read_to_string(format!("/proc/{}/smaps", self.pid())).unwrap_or_default();
        let mut maps: Vec<(u64, String)> = Vec::new();
        let mut name = String::new();
        for l in smaps.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.first()
                .is_some_and(|r| r.contains('-') && !r.ends_with(':'))
            {
                name = format!("{} {}", f.get(1).unwrap_or(&""), f.get(5).unwrap_or(&""));
            } else if f.first() == Some(&"Rss:") {
                maps.push((
                    f.get(1).and_then(|v| v.parse().ok()).unwrap_or(0),
                    name.clone(),
                ));
            }
        }
        maps.sort_by_key(|m| std::cmp::Reverse(m.0));
        maps.truncate(n);
        maps
    }

    /// CPU time used so far (user + system, all threads).
    pub fn cpu(&self) -> Duration {
        cpu_of(self.pid())
    }

    /// Threads of the process.
    pub fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

pub fn cpu_of(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the state.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis((ticks(11) + ticks(12)) * 1000 / hz)
}

/// One HTTP/1.1 GET on a fresh connection: its status.
pub fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_whitespace().nth(1)?.parse().ok()
}

/// A git repository with one commit (and `files` more files in it, 100 to a directory).
pub fn make_repo(path: &Path, files: usize) {
    std::fs::create_dir_all(path).unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(path)
            .env("GIT_AUTHOR_NAME", "bench")
            .env("GIT_AUTHOR_EMAIL", "bench@example.com")
            .env("GIT_COMMITTER_NAME", "bench")
            .env("GIT_COMMITTER_EMAIL", "bench@example.com")
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(path.join("README.md"), "bench\n").unwrap();
    for i in 0..files {
        let dir = path.join(format!("d{:03}", i / 100));
        if i % 100 == 0 {
            std::fs::create_dir_all(&dir).unwrap();
        }
        std::fs::write(dir.join(format!("f{i:05}.txt")), format!("file {i}\n")).unwrap();
    }
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "init"]);
}
