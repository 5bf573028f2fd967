//! The real `televibe` binary on a temporary root: build, config, repository, start, admin, metrics, stop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// Set for every process the demo starts: the demo refuses to run where it is set.
pub const INSIDE_VAR: &str = "TVDEMO_INSIDE";

/// The daemon binary of this example's own profile (`target/<profile>/televibe`), built by cargo first
/// (a no-op when it is up to date).
pub fn binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("the demo's own path")?;
    // target/<profile>/examples/demo
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the demo runs from target/<profile>/examples")?;
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_string(),
        Some(other) => other.to_string(),
        None => bail!("no profile directory above {}", exe.display()),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("building the daemon: cargo build --profile {profile} --bin televibe …");
    let status = Command::new(cargo)
        .args(["build", "--profile", &profile, "--bin", "televibe"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status();
    let bin = profile_dir.join("televibe");
    match status {
        Ok(s) if s.success() => Ok(bin),
        Ok(s) => bail!("building the daemon failed ({s})"),
        // No cargo here: a binary built earlier still does.
        Err(e) if bin.is_file() => {
            eprintln!("cargo did not run ({e}); using {}", bin.display());
            Ok(bin)
        }
        Err(e) => bail!("cargo did not run: {e}"),
    }
}

/// A temporary root with a config, and the daemon serving it.
pub struct Daemon {
    // Before `dir`: on an early exit the process is killed before its root goes.
    child: Option<tokio::process::Child>,
    dir: tempfile::TempDir,
    bin: PathBuf,
    addr: Option<SocketAddr>,
}

impl Daemon {
    /// A fresh temporary directory; the root must stay short (a job's endpoint is a Unix socket path).
    pub fn new(bin: &Path) -> Result<Daemon> {
        let mut dir = tempfile::Builder::new().prefix("televibe-demo").tempdir()?;
        if dir.path().join("root").as_os_str().len() > 60 {
            dir = tempfile::Builder::new()
                .prefix("televibe-demo")
                .tempdir_in("/tmp")?;
        }
        // When the demo runs as root, jobs run as `agent.run_as` (nobody): they must be able to walk down
        // to their worktree and run the binary, as they can under `/projects`.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))?;
        std::fs::create_dir_all(dir.path().join("home"))?;
        // A private link to the binary: cargo replacing target/<profile>/televibe meanwhile (another
        // build in the same target directory) must not take the path the daemon hands its jobs away.
        let private = dir.path().join("televibe");
        if std::fs::hard_link(bin, &private).is_err() {
            std::fs::copy(bin, &private).context("copying the daemon binary")?;
        }
        Ok(Daemon {
            dir,
            bin: private,
            child: None,
            addr: None,
        })
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }
    fn config(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }
    fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("daemon.stderr")
    }

    /// The config: this root, an HTTP port chosen by the kernel, JSON logs on stderr, then `extra`.
    pub fn write_config(&self, extra: &str) -> Result<()> {
        let text = format!(
            "root = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[logging]\nstderr = \"json\"\n{extra}",
            self.root().display()
        );
        Ok(std::fs::write(self.config(), text)?)
    }

    /// A `televibe` command on this config, with no `TELEVIBE_*` of the demo's own environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--config").arg(self.config()).args(args);
        c.env(INSIDE_VAR, "1");
        for (k, _) in std::env::vars() {
            if k.starts_with("TELEVIBE_") || k == "NOTIFY_SOCKET" || k.starts_with("WATCHDOG_") {
                c.env_remove(k);
            }
        }
        c
    }

    /// What `televibe doctor` says of the sandbox: `ok`, or why jobs cannot be sandboxed here.
    pub fn sandbox_check(&self) -> Result<String> {
        let out = self.command(&["doctor", "--json"]).output()?;
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("doctor --json: {}", String::from_utf8_lossy(&out.stderr)))?;
        Ok(report["sandbox"].as_str().unwrap_or("unknown").to_string())
    }

    /// `televibe serve` with the fake Bot API's token; waits until `/health/ready` answers 200.
    pub async fn start(&mut self, token: &str) -> Result<()> {
        let log = std::fs::File::create(self.stderr_path())?;
        let mut cmd = tokio::process::Command::from(self.command(&["serve"]));
        cmd.env("TELEVIBE_TELEGRAM__TOKEN", token)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        self.child = Some(cmd.spawn().context("starting televibe serve")?);
        let end = Instant::now() + Duration::from_secs(30);
        let addr_file = self.root().join("orchestrator/http.addr");
        while Instant::now() < end {
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("the daemon exited at start ({st})");
            }
            let addr = std::fs::read_to_string(&addr_file)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            if let Some(a) = addr
                && http_get(a, "/health/ready").is_ok_and(|(code, _)| code == 200)
            {
                self.addr = Some(a);
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the daemon was not ready within 30 s")
    }

    pub fn get(&self, path: &str) -> Result<String> {
        let addr = self
            .addr
            .ok_or_else(|| anyhow!("the daemon is not running"))?;
        let (code, body) = http_get(addr, path)?;
        if code != 200 {
            bail!("GET {path}: {code} {body}");
        }
        Ok(body)
    }

    /// `televibe admin tree` as it prints.
    pub fn admin(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["admin"];
        full.extend_from_slice(args);
        let out = self.command(&full).output()?;
        if !out.status.success() {
            bail!(
                "televibe admin {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// SIGTERM, then up to 30 s for a graceful exit (it drains its replies first), then SIGKILL.
    pub async fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
            Ok(Ok(st)) if st.success() => Ok(()),
            Ok(Ok(st)) => bail!("the daemon exited with {st}"),
            Ok(Err(e)) => bail!("waiting for the daemon: {e}"),
            Err(_) => {
                let _ = child.kill().await;
                bail!("the daemon did not stop within 30 s; killed")
            }
        }
    }

    /// Removes the temporary directory (root, config, logs), saying so when it cannot.
    pub fn remove(self) -> Result<()> {
        let path = self.dir.path().to_path_buf();
        self.dir
            .close()
            .with_context(|| format!("removing {}", path.display()))
    }

    /// The last warnings and errors of the daemon's log, as `level: message`.
    pub fn log_tail(&self, n: usize) -> Vec<String> {
        let text = std::fs::read_to_string(self.stderr_path()).unwrap_or_default();
        let lines: Vec<String> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["level"] != "info" && v["level"] != "debug")
            .map(|v| {
                format!(
                    "{}: {} {}",
                    v["level"].as_str().unwrap_or("?"),
                    v["message"].as_str().unwrap_or(""),
                    v["context"]
                )
            })
            .collect();
        lines[lines.len().saturating_sub(n)..].to_vec()
    }

    /// A git repository `repos/<name>` with one commit on `main`: a README and a script to change.
    pub fn make_repo(&self, name: &str) -> Result<()> {
        let repo = self.root().join("repos").join(name);
        std::fs::create_dir_all(&repo)?;
        std::fs::write(
            repo.join("README.md"),
            "# greeter\n\n`sh greet.sh` says hello.\n",
        )?;
        std::fs::write(repo.join("greet.sh"), "#!/bin/sh\necho \"Hello, world!\"\n")?;
        for args in [
            &["init", "-q", "-b", "main"][..],
            &["add", "-A"],
            &["commit", "-q", "-m", "A script that says hello"],
        ] {
            let out = Command::new("git")
                .args(["-c", "user.name=Demo", "-c", "user.email=demo@example.com"])
                .args(args)
                .current_dir(&repo)
                .output()
                .context("git runs")?;
            if !out.status.success() {
                bail!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        Ok(())
    }
}

/// A minimal HTTP/1.1 GET on a fresh connection: status and body.
fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_string()))
}
