//! Test harness: a daemon as a child process on a temp root, plus small HTTP and CLI helpers.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_televibe");

/// A temp directory with a config file whose root lives inside it.
pub struct Env {
    pub dir: tempfile::TempDir,
    /// The user the daemon and its clients run as (`None`: the test's own).
    pub user: Option<(u32, u32)>,
    /// The PostgreSQL cluster the store lives in (`TELEVIBE_TEST_STORE=postgres`); `None`: SQLite's file.
    pub pg: Option<crate::pg::PgCluster>,
}

/// Who runs the daemon in a security test. Every attack runs once per entry: as root (the daemon's jobs
/// then run as `agent.run_as`) and as a normal user, when the tests run as root (as CI does); as the
/// test's own user only otherwise (which this prints).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonUser {
    /// The test's own user, root when the tests run as root.
    Own,
    /// An unprivileged user (`nobody`) while the tests run as root.
    Unprivileged(u32, u32),
}

pub fn daemon_users() -> Vec<DaemonUser> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        vec![DaemonUser::Own, DaemonUser::Unprivileged(65534, 65534)]
    } else {
        eprintln!("the tests run as a normal user: attacks run as this user only, not as root");
        vec![DaemonUser::Own]
    }
}

impl Env {
    /// `extra` is appended to a config that sets the root, port 0 and test hooks.
    pub fn new(extra: &str) -> Env {
        Env::new_in(Path::new("/tmp"), extra)
    }

    /// Like `new`, under `parent` (containment tests keep their root out of `/tmp`, which every sandbox
    /// replaces, so that what they find hidden was hidden on purpose).
    pub fn new_in(parent: &Path, extra: &str) -> Env {
        Env::create(parent, extra, crate::pg::on_postgres())
    }

    /// Like `new`, with the store on a PostgreSQL cluster of its own whatever `TELEVIBE_TEST_STORE` says.
    pub fn new_postgres(extra: &str) -> Env {
        Env::create(Path::new("/tmp"), extra, true)
    }

    fn create(parent: &Path, extra: &str, postgres: bool) -> Env {
        std::fs::create_dir_all(parent).unwrap();
        let dir = tempfile::Builder::new()
            .prefix("tv")
            .tempdir_in(parent)
            .unwrap();
        // Jobs may run as another user (the daemon's `agent.run_as` when it is root): they must be able
        // to walk down to their worktree, as they can to `/projects`.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let pg = postgres.then(crate::pg::PgCluster::start);
        let env = Env {
            dir,
            user: None,
            pg,
        };
        env.write_config(extra);
        env
    }

    pub fn write_config(&self, extra: &str) {
        // Port 0 unless the test brings its own [http] section.
        let http = if extra.contains("[http]") {
            ""
        } else {
            "[http]\nlisten = \"127.0.0.1:0\"\n"
        };
        // JSON on stderr, which tests read; inside the test's own [logging] section when it has one.
        let (extra, logging) = if extra.contains("[logging]\n") {
            (
                extra.replace("[logging]\n", "[logging]\nstderr = \"json\"\n"),
                "",
            )
        } else {
            (extra.to_string(), "[logging]\nstderr = \"json\"\n")
        };
        // Test hooks on, inside the test's own [debug] section when it has one.
        let (extra, debug) = if extra.contains("[debug]\n") {
            (
                extra.replace("[debug]\n", "[debug]\ntest_hooks = true\n"),
                "",
            )
        } else {
            (extra, "[debug]\ntest_hooks = true\n")
        };
        // The PostgreSQL store, inside the test's own [store] section when it has one.
        let (extra, store) = match &self.pg {
            None => (extra, String::new()),
            Some(pg) if extra.contains("[store]\n") => (
                extra.replace("[store]\n", &format!("[store]\nurl = \"{}\"\n", pg.url())),
                String::new(),
            ),
            Some(pg) => (extra, format!("[store]\nurl = \"{}\"\n", pg.url())),
        };
        let text = format!(
            "root = \"{}\"\n{}\n{http}{debug}{logging}{store}",
            self.root().display(),
            extra
        );
        std::fs::write(self.config(), text).unwrap();
    }

    /// Where the daemon's store lives: `state.db` under the root, or the Env's PostgreSQL database.
    pub fn store_location(&self) -> televibe::store::StoreLocation {
        match &self.pg {
            Some(pg) => televibe::store::StoreLocation::Postgres {
                url: pg.url(),
                password: None,
            },
            None => televibe::store::StoreLocation::Sqlite(self.orchestrator().join("state.db")),
        }
    }

    /// The daemon's database, read-only (safe beside a running daemon).
    pub async fn store_read_only(&self) -> televibe::store::Store {
        televibe::store::Store::open_read_only_at(&self.store_location(), Default::default())
            .await
            .unwrap()
    }

    /// The daemon's database opened for writing, as a second process would (tests plant rows with it).
    pub async fn store(&self) -> televibe::store::Store {
        televibe::store::Store::open_at(
            &self.store_location(),
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap()
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }
    pub fn orchestrator(&self) -> PathBuf {
        self.root().join("orchestrator")
    }
    pub fn socket(&self) -> PathBuf {
        self.orchestrator().join("televibe.sock")
    }

    /// A `televibe` command with `--config` set and a clean `TELEVIBE_*` environment.
    /// From now on the daemon and every `televibe` command of this environment run as `user`; the
    /// environment's files are handed to it when the daemon starts.
    pub fn run_as(&mut self, user: DaemonUser) {
        if let DaemonUser::Unprivileged(uid, gid) = user {
            self.user = Some((uid, gid));
        }
    }

    /// Hands everything under the environment to its user (files the test made since included).
    pub fn hand_over(&self) {
        if let Some((uid, gid)) = self.user {
            let out = Command::new("chown")
                .arg("-R")
                .arg(format!("{uid}:{gid}"))
                .arg(self.dir.path())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "chown: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new(BIN);
        c.arg("--config").arg(self.config()).args(args);
        if let Some((uid, gid)) = self.user {
            // Its own home: git and gix read the user's configuration and attributes there.
            c.uid(uid)
                .gid(gid)
                .env("HOME", self.dir.path().join("home"));
        }
        for (k, _) in std::env::vars() {
            if k.starts_with("TELEVIBE_") || k == "NOTIFY_SOCKET" || k.starts_with("WATCHDOG_") {
                c.env_remove(k);
            }
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Starts `televibe serve` and waits until `/health/live` answers.
    pub fn start(&self) -> Daemon {
        self.start_with(|_| {})
    }

    pub fn start_with(&self, tweak: impl FnOnce(&mut Command)) -> Daemon {
        let _ = std::fs::remove_file(self.orchestrator().join("http.addr"));
        let stderr = std::fs::File::create(self.dir.path().join("daemon.stderr")).unwrap();
        self.hand_over();
        let mut cmd = self.command(&["serve"]);
        cmd.stdout(Stdio::null()).stderr(stderr);
        tweak(&mut cmd);
        let child = cmd.spawn().unwrap();
        let mut d = Daemon {
            child,
            addr: None,
            orchestrator: self.orchestrator(),
            stderr: self.dir.path().join("daemon.stderr"),
        };
        d.wait_live();
        d
    }
}

pub struct Daemon {
    pub child: Child,
    pub addr: Option<SocketAddr>,
    orchestrator: PathBuf,
    stderr: PathBuf,
}

impl Daemon {
    fn wait_live(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("daemon exited early with {status}: {}", self.stderr_text());
            }
            if let Ok(text) = std::fs::read_to_string(self.orchestrator.join("http.addr"))
                && let Ok(addr) = text.trim().parse::<SocketAddr>()
                && self.orchestrator.join("televibe.sock").exists()
                && http_get(addr, "/health/live")
                    .map(|r| r.0 == 200)
                    .unwrap_or(false)
            {
                self.addr = Some(addr);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("daemon never became live: {}", self.stderr_text());
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("daemon is live")
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr(), path).unwrap()
    }

    /// The value of the first sample of `/metrics` whose line starts with `prefix`.
    pub fn metric(&self, prefix: &str) -> Option<f64> {
        let (_, m) = self.get("/metrics");
        m.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// SIGTERM and wait for the exit.
    pub fn stop(mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        wait_exit(&mut self.child, Duration::from_secs(30))
    }

    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        wait_exit(&mut self.child, limit)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A minimal HTTP/1.1 GET: status code and body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

/// The `Content-Type` header of a GET.
pub fn http_content_type(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    raw.lines()
        .find_map(|l| {
            l.to_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default()
}

/// Polls `cond` until it holds or `limit` passes.
pub fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("timed out waiting for: {what}");
}

/// Awaits `cond` (polled every 50 ms) or panics naming `what` after `limit`.
pub async fn until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Awaits an asynchronous `cond` (polled every 100 ms) or panics naming `what` after `limit`.
pub async fn until_async<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Waits until session `id` is in `state` (a session hears of its job's end just after it is written).
pub async fn until_session(mcp: &Mcp, id: &str, state: &str) {
    until_async(
        Duration::from_secs(20),
        &format!("session {id} {state}"),
        || async {
            mcp.call("get_session", serde_json::json!({"session_id": id}))
                .await
                .unwrap()["state"]
                == state
        },
    )
    .await;
}

/// A tool the test suite needs from the machine; missing tools fail loudly, never skip.
pub fn required_tool(name: &str, install_hint: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{name} not found on PATH: {install_hint}"))
}

/// The pinned Claude Code CLI installed by `scripts/test` into `.claude-cli/`.
/// The Claude Code CLI the tests speak to, checked to be the version the captures and fakes follow.
pub const CLAUDE_VERSION: &str = "2.1.328";

pub fn claude_cli() -> PathBuf {
    static CHECKED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CHECKED
        .get_or_init(|| {
            let p = match std::env::var_os("TELEVIBE_TEST_CLAUDE") {
                Some(p) => PathBuf::from(p),
                None => Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join(".claude-cli/node_modules/@anthropic-ai/claude-code-linux-x64/claude"),
            };
            pinned(p, "Claude Code CLI", CLAUDE_VERSION, |v| {
                v.split_whitespace().next()
            })
        })
        .clone()
}

/// The OpenAI Codex CLI the tests speak to, installed by `scripts/install-deps` into `.codex-cli/`.
pub const CODEX_VERSION: &str = "0.169.0";

pub fn codex_cli() -> PathBuf {
    static CHECKED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CHECKED
        .get_or_init(|| {
            let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(
                ".codex-cli/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex",
            );
            pinned(p, "Codex CLI", CODEX_VERSION, |v| {
                v.split_whitespace().last()
            })
        })
        .clone()
}

/// `p`, once checked to be the CLI `what` at `version` (`--version`'s output read by `version_of`); a
/// missing or other CLI fails the test with how to install the pinned one.
fn pinned(p: PathBuf, what: &str, version: &str, version_of: fn(&str) -> Option<&str>) -> PathBuf {
    assert!(
        p.is_file(),
        "{what} {version} not found at {}: run scripts/install-deps (it installs it with npm)",
        p.display()
    );
    let out = Command::new(&p)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("{} --version: {e}", p.display()));
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        version_of(&said),
        Some(version),
        "the tests follow {what} {version}, {} is {said:?}: run scripts/install-deps",
        p.display()
    );
    p
}

/// The audit records the daemon wrote to `logs/audit.log`, oldest first.
pub fn audit_events(env: &Env) -> Vec<serde_json::Value> {
    std::fs::read_to_string(env.orchestrator().join("logs/audit.log"))
        .unwrap_or_default()
        .lines()
        .map(json)
        .collect()
}

pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// An rmcp client speaking to the daemon through a `televibe mcp` bridge process.
/// `televibe mcp` (the stdio bridge MCP clients run) on piped stdin and stdout, killed when dropped.
pub fn bridge(env: &Env) -> tokio::process::Child {
    tokio::process::Command::from(env.command(&["mcp"]))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

pub struct Mcp {
    pub client: rmcp::service::RunningService<rmcp::RoleClient, ()>,
    _bridge: tokio::process::Child,
}

/// A refused tool call: `code` and `message` of the `isError` body.
#[derive(Debug, Clone)]
pub struct ToolErr {
    pub code: String,
    pub message: String,
}

impl Mcp {
    pub async fn connect(env: &Env) -> Mcp {
        use rmcp::ServiceExt;
        let mut bridge = bridge(env);
        let io = (bridge.stdout.take().unwrap(), bridge.stdin.take().unwrap());
        let client = ().serve(io).await.unwrap();
        Mcp {
            client,
            _bridge: bridge,
        }
    }

    pub async fn call(
        &self,
        tool: &str,
        args: serde_json::Value,
    ) -> Result<serde_json::Value, ToolErr> {
        let mut p = rmcp::model::CallToolRequestParams::new(tool.to_string());
        if let serde_json::Value::Object(m) = args {
            p.arguments = Some(m);
        }
        let r = self
            .client
            .call_tool(p)
            .await
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        let body = r
            .structured_content
            .clone()
            .unwrap_or(serde_json::Value::Null);
        if r.is_error == Some(true) {
            Err(ToolErr {
                code: body["code"].as_str().unwrap_or("").to_string(),
                message: body["message"].as_str().unwrap_or("").to_string(),
            })
        } else {
            Ok(body)
        }
    }

    /// A call that must be refused with `code`.
    pub async fn refused(&self, tool: &str, args: serde_json::Value, code: &str) -> ToolErr {
        match self.call(tool, args.clone()).await {
            Ok(v) => panic!("{tool} {args} should fail with {code}, got {v}"),
            Err(e) => {
                assert_eq!(e.code, code, "{tool} {args}: {}", e.message);
                e
            }
        }
    }
}

/// Runs git in `dir` with a fixed identity; panics on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.com",
            // Tests read repositories a daemon of another user (`DaemonUser::Unprivileged`) made.
            "-c",
            "safe.directory=*",
            "-C",
        ])
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A repository with one commit on `main`.
pub fn make_repo(path: &Path) {
    std::fs::create_dir_all(path).unwrap();
    git(path, &["init", "-q", "-b", "main"]);
    std::fs::write(path.join("README.md"), "# test\n").unwrap();
    git(path, &["add", "README.md"]);
    git(path, &["commit", "-q", "-m", "initial"]);
}

/// Every file and directory below `dir`, for "nothing changed" assertions.
pub fn tree_listing(dir: &Path) -> Vec<PathBuf> {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(entries) = std::fs::read_dir(d) {
            for e in entries.flatten() {
                out.push(e.path());
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    walk(&e.path(), out);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}

/// Damages the live `state.db` from another connection so that `PRAGMA integrity_check` fails: an index
/// whose declared order no longer matches its b-tree, and a new schema version so the daemon's
/// connections read the damaged schema.
pub async fn damage_live_database(env: &Env) {
    let store = televibe::store::Store::open(
        &env.orchestrator().join("state.db"),
        televibe::store::StoreOptions {
            max_connections: 1,
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap();
    for sql in [
        "CREATE TABLE damage(a); CREATE INDEX damage_a ON damage(a); \
         INSERT INTO damage VALUES (1), (2), (3), (4), (5);",
        "PRAGMA writable_schema = ON; \
         UPDATE sqlite_schema SET sql = 'CREATE INDEX damage_a ON damage(a DESC)' WHERE name = 'damage_a'; \
         PRAGMA writable_schema = OFF;",
        "PRAGMA schema_version = 1000",
    ] {
        store.execute_unchecked(sql).await.unwrap();
    }
    store.close().await;
}

/// Nothing is left to send: every outbox row is delivered and the notifier's queue is empty. What was
/// decided before this returns has reached the fake (or was refused for good), and no later sweep of the
/// outbox can send anything again: a "nothing more happens" window closed by a cause, not a sleep.
pub async fn settled(env: &Env, d: &Daemon) {
    let store = env.store_read_only().await;
    until_async(
        Duration::from_secs(30),
        "the outbox delivered and the queue empty",
        || async {
            store.undelivered_events(0, 1).await.unwrap().is_empty()
                && d.metric("televibe_notification_queue_size") == Some(0.0)
        },
    )
    .await;
}
