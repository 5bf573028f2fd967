//! Containment: a hostile scripted agent tries to get around the approval wall and out of its worktree,
//! and fails at each attempt; an ordinary agent can still write and commit in its own worktree.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::harness::*;

/// A port on the host's loopback where a service of the test's listens (as `/metrics` does), answering
/// "service reached" to whoever connects; the same for every test in this binary.
fn loopback_port() -> u16 {
    static PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    *PORT.get_or_init(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            use std::io::Write;
            for mut s in listener.incoming().flatten() {
                // The request first (a socket closed with unread bytes is reset, and the answer lost).
                std::thread::spawn(move || {
                    use std::io::Read;
                    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                    let (mut head, mut buf) = (Vec::new(), [0u8; 1024]);
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = s.write_all(
                        b"HTTP/1.0 200 OK\r\nContent-Length: 16\r\nConnection: close\r\n\r\nservice reached\n",
                    );
                });
            }
        });
        port
    })
}
use crate::jobs::{run, session, wait_final};

const HOSTILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/hostile-agent.pl");

/// A daemon whose agent is the hostile script, with sessions S1 (where it runs) and S2 (a neighbour).
struct Hostile {
    env: Env,
    _daemon: Daemon,
    mcp: Mcp,
    own: PathBuf,
    other: PathBuf,
    /// A directory on the host outside every worktree.
    outside: PathBuf,
    /// The argument of the `sleep` the agent tries to leave behind, unique to this run.
    mark: String,
    /// Where a test may listen as a service of the user's under `/run`.
    run_socket: PathBuf,
}

/// Where containment tests keep their roots: not under `/tmp`, which every sandbox replaces with its own,
/// so that what a test finds hidden was hidden by the sandbox's own rules.
fn containment_env() -> Env {
    Env::new_in(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("target/containment"),
        "",
    )
}

async fn hostile(sandbox: &str) -> Hostile {
    hostile_as(sandbox, DaemonUser::Own, "").await
}

/// A file outside every worktree that attacks aim at.
fn target(env: &Env) -> PathBuf {
    env.dir.path().join("outside/target.txt")
}

/// The hostile script's targets, as variables of its environment (an inline TOML table's entries).
fn hostile_vars(env: &Env, outside: &Path, mark: &str, run_socket: &Path) -> String {
    format!(
        "TV_ROOT = \"{root}\", TV_SOCKET = \"{sock}\", TV_CONFIG = \"{config}\", \
         TV_OTHER = \"{root}/workspaces/app/S2\", TV_OUTSIDE = \"{outside}\", \
         TV_MARK = \"{mark}\", TV_RUN_SOCKET = \"{run_socket}\", TV_TARGET = \"{target}\", \
         TV_SECRET_OBJECTS = \"{root}/repos/vault/.git/objects\", TV_ABSTRACT = \"tvtest-abs-{mark}\", \
         TV_LOOPBACK = \"127.0.0.1:{loopback}\"",
        target = target(env).display(),
        loopback = loopback_port(),
        root = env.root().display(),
        sock = env.socket().display(),
        config = env.config().display(),
        outside = outside.display(),
        run_socket = run_socket.display(),
    )
}

/// `hostile` with the daemon run by `user` and `extra` config lines in `[agent]`.
async fn hostile_as(sandbox: &str, user: DaemonUser, extra: &str) -> Hostile {
    hostile_with(user, |vars, home| {
        format!(
            "[agent]\ncommand = \"{HOSTILE}\"\nsandbox = \"{sandbox}\"\n\
             env = {{ {vars}, HOME = \"{}\" }}\n{extra}\n",
            home.display()
        )
    })
    .await
}

/// A daemon run by `user` whose agent configuration is `agent(<the hostile targets>, <home>)`.
async fn hostile_with(user: DaemonUser, agent: impl FnOnce(&str, &Path) -> String) -> Hostile {
    let mut env = containment_env();
    env.run_as(user);
    let outside = env.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let mark = (100_000 + nanos % 900_000).to_string();
    // Root may listen in /run itself; anyone else in their /run/user/<uid>.
    let run_socket = if unsafe { libc::getuid() } == 0 {
        PathBuf::from(format!("/run/tvtest-{mark}.sock"))
    } else {
        PathBuf::from(format!("/run/user/{}/tvtest-{mark}.sock", unsafe {
            libc::getuid()
        }))
    };
    let vars = hostile_vars(&env, &outside, &mark, &run_socket);
    let agent = agent(&vars, &env.dir.path().join("home"));
    env.write_config(&format!("{agent}[jobs]\nkill_grace_secs = 1\n"));
    std::fs::create_dir_all(env.dir.path().join("home")).unwrap();
    std::fs::write(target(&env), "keep\n").unwrap();
    let daemon = env.start();
    let mcp = Mcp::connect(&env).await;
    let own = session(&env, &mcp).await;
    let s2 = mcp
        .call("create_session", json!({"project_id": "app"}))
        .await
        .unwrap();
    let other = PathBuf::from(s2["worktree_path"].as_str().unwrap());
    Hostile {
        env,
        _daemon: daemon,
        mcp,
        own,
        other,
        outside,
        mark,
        run_socket,
    }
}

impl Hostile {
    /// Runs the hostile agent with `instruction` in S1 and returns its attempts: name → (reached, detail).
    async fn attempt(&self, instruction: &str) -> HashMap<String, (bool, String)> {
        self.attempt_inner(instruction).await
    }

    async fn attempt_inner(&self, instruction: &str) -> HashMap<String, (bool, String)> {
        let (job, attempts) = self.attempt_in("S1", instruction).await;
        assert_eq!(job["status"], "done", "{job}\n{attempts:?}");
        attempts
    }

    /// Runs the hostile agent in `session` and returns how its job ended and its attempts.
    async fn attempt_in(
        &self,
        session: &str,
        instruction: &str,
    ) -> (serde_json::Value, HashMap<String, (bool, String)>) {
        let id = run(&self.mcp, session, instruction).await;
        let job = wait_final(&self.mcp, &id, Duration::from_secs(60)).await;
        let log = std::fs::read_to_string(job["log_path"].as_str().unwrap()).unwrap_or_default();
        let attempts = attempts_in(&log);
        assert!(
            !attempts.is_empty(),
            "the hostile agent did not run: {job}\n{log}"
        );
        (job, attempts)
    }
}

/// The real Claude Code CLI against `model`, its state under `home`.
fn claude_config(model: &crate::fake_model::FakeModel, home: &Path) -> String {
    format!(
        "[agent]\ncommand = \"{}\"\nenv = {{ ANTHROPIC_BASE_URL = \"{}\", ANTHROPIC_API_KEY = \"sk-test\", \
         CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = \"1\", HOME = \"{}\" }}\n[jobs]\nhard_timeout_secs = 120\n",
        claude_cli().display(),
        model.url(),
        home.display()
    )
}

fn assert_blocked(attempts: &HashMap<String, (bool, String)>, name: &str) {
    let (reached, detail) = attempts
        .get(name)
        .unwrap_or_else(|| panic!("attempt {name} missing: {attempts:?}"));
    assert!(!reached, "{name} got through: {detail}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sandboxed_agent_cannot_reach_the_control_socket() {
    let h = hostile("bwrap").await;
    let attempts = h.attempt("socket").await;
    for name in ["socket-direct", "socket-fork", "socket-setsid"] {
        assert_blocked(&attempts, name);
        // Hidden, not refused: the daemon never saw the connection.
        let (_, detail) = &attempts[name];
        assert!(detail.starts_with("connect:"), "{name}: {detail}");
    }
    assert_eq!(
        h.mcp
            .call("list_pending_approvals", json!({}))
            .await
            .unwrap()["approvals"],
        json!([]),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unsandboxed_the_peer_check_still_refuses_a_vanished_peer() {
    // Defence in depth: with the sandbox off, the control socket is visible, and the peer check is what
    // stands: a peer that connected and handed the connection to a child (the fork trick) is judged by
    // the credentials taken at accept, so it is refused whether it was still there or already gone.
    let h = hostile("none").await;
    let attempts = h.attempt("socket").await;
    assert_blocked(&attempts, "socket-direct");
    assert_blocked(&attempts, "socket-fork");
    let (_, detail) = &attempts["socket-fork"];
    assert!(
        detail.contains("agents may not use the control socket"),
        "{detail}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sandboxed_agent_cannot_read_the_daemon_state() {
    let h = hostile("bwrap").await;
    let attempts = h.attempt("read").await;
    for name in ["read-db", "read-config", "read-environ"] {
        assert_blocked(&attempts, name);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sandboxed_agent_cannot_read_the_store_password() {
    // Readable by anyone, outside the root and /etc/televibe: only the sandbox's hiding keeps them away.
    let h = hostile_with(DaemonUser::Own, |vars, home| {
        let secrets = home.parent().unwrap().join("secrets");
        std::fs::create_dir_all(&secrets).unwrap();
        std::fs::create_dir_all(home).unwrap();
        let file = secrets.join("pg");
        for f in [file.clone(), home.join(".pgpass")] {
            std::fs::write(&f, "db-secret-7\n").unwrap();
            std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o644))
                .unwrap();
        }
        format!(
            "[agent]\ncommand = \"{HOSTILE}\"\nsandbox = \"bwrap\"\n\
             env = {{ {vars}, TV_PASSWORD_FILE = \"{}\", HOME = \"{}\" }}\n\
             [store]\npassword_file = \"{}\"\n",
            file.display(),
            home.display(),
            file.display()
        )
    })
    .await;
    let attempts = h.attempt("read").await;
    for name in ["read-store-password", "read-pgpass"] {
        assert_blocked(&attempts, name);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sandboxed_agent_cannot_reach_the_users_sockets_under_run() {
    // A service of the operator's on a Unix socket under /run (a session bus, a key agent, a container
    // engine); a read-only mount would not stop connect(2).
    let h = hostile("bwrap").await;
    let path = h.run_socket.clone();
    let listener = std::os::unix::net::UnixListener::bind(&path)
        .unwrap_or_else(|e| panic!("this test listens at {} and cannot: {e}", path.display()));
    let accept = std::thread::spawn(move || {
        use std::io::Write;
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.write_all(b"service reached\n");
        }
    });
    let attempts = h.attempt("run-socket").await;
    let _ = std::fs::remove_file(&path);
    assert_blocked(&attempts, "run-socket");
    drop(accept);
}

#[tokio::test(flavor = "multi_thread")]
async fn code_planted_in_the_worktree_is_never_run_by_the_daemon() {
    let h = hostile("bwrap").await;
    let attempts = h.attempt("plant").await;
    assert!(attempts["plant-submodule"].0, "{attempts:?}");
    assert_blocked(&attempts, "write-worktree-config");
    // The job's end measured the worktree with git (files changed, diff stat); so does a diff.
    let wt = h.own.clone();
    assert!(wt.join("sub/.git/config").exists());
    assert!(
        !h.outside.join("filter-ran").exists(),
        "the submodule's filter ran"
    );
    assert!(
        !h.outside.join("worktree-filter-ran").exists(),
        "the worktree config's filter ran"
    );
    let out = h.env.run(&["admin", "jobs", "--json"]);
    assert!(out.status.success());
    assert!(!h.outside.join("filter-ran").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sandboxed_agent_cannot_write_outside_its_worktree() {
    let h = hostile("bwrap").await;
    let repo = h.env.root().join("repos/app");
    let main_before = git(&repo, &["rev-parse", "main"]);
    let config_before = std::fs::read_to_string(repo.join(".git/config")).unwrap();
    let attempts = h.attempt("write").await;
    for name in [
        "write-other-worktree",
        "write-outside",
        "write-git-config",
        "write-git-hook",
        "delete-object",
        "write-home",
        "write-user-settings",
    ] {
        assert_blocked(&attempts, name);
    }
    // What the sandbox let it write (its private /tmp, a copy of the refs) never reaches the host.
    assert!(!h.other.join("pwned.txt").exists());
    assert!(!h.outside.join("pwned.txt").exists());
    assert!(!h.env.dir.path().join("home/pwned.txt").exists());
    assert!(!repo.join(".git/hooks/post-commit").exists());
    assert_eq!(
        std::fs::read_to_string(repo.join(".git/config")).unwrap(),
        config_before
    );
    assert_eq!(git(&repo, &["rev-parse", "main"]), main_before);
    git(&repo, &["fsck", "--no-dangling"]);
    // The daemon's own git commands in the worktree still run clean (no fsmonitor planted).
    until_session(&h.mcp, "S1", "idle").await;
    assert!(!h.outside.join("fsmonitor-ran").exists());
}

/// Live processes running `sleep <mark>`.
fn sleepers(mark: &str) -> Vec<i32> {
    let cmdline = format!("sleep\0{mark}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == cmdline.as_bytes())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemonised_process_does_not_outlive_its_job() {
    let h = hostile("bwrap").await;
    let attempts = h.attempt("daemonise").await;
    assert!(attempts["daemonise"].0, "{attempts:?}");
    eventually(Duration::from_secs(10), "no daemonised sleep left", || {
        sleepers(&h.mark).is_empty()
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sandboxed_agent_writes_and_commits_its_own_worktree() {
    let h = hostile("bwrap").await;
    let attempts = h.attempt("commit").await;
    let (ok, detail) = &attempts["own-commit"];
    assert!(ok, "{detail}");
    let commit = detail.split_whitespace().last().unwrap().to_string();
    assert_eq!(
        std::fs::read_to_string(h.own.join("own.txt")).unwrap(),
        "mine\n"
    );
    let repo = h.env.root().join("repos/app");
    assert_eq!(
        git(&repo, &["rev-parse", "televibe/S1"]).trim(),
        commit,
        "the job's commit is on the session's branch"
    );
    assert_eq!(
        git(&repo, &["log", "-1", "--format=%s", "televibe/S1"]).trim(),
        "own work"
    );
    until_session(&h.mcp, "S1", "idle").await;
    // A job that leaves its branch: the worktree is pointed back at the session's branch.
    let attempts = h.attempt("switch").await;
    assert!(attempts["switch-branch"].0, "{attempts:?}");
    assert_eq!(
        git(&h.own, &["symbolic-ref", "HEAD"]).trim(),
        "refs/heads/televibe/S1"
    );
    assert!(
        git(&repo, &["branch", "--list", "elsewhere"])
            .trim()
            .is_empty()
    );
    let attempts = h.attempt("commit again").await;
    assert!(attempts["own-commit"].0, "{attempts:?}");
}

/// A repository whose committed `.claude/settings.json` runs hooks at session start and on every prompt:
/// each writes one marker inside the worktree and one outside it.
fn repo_with_hooks(repo: &Path, outside: &Path) {
    make_repo(repo);
    let hook = |name: &str| {
        json!([{"hooks": [{"type": "command",
            "command": format!("touch {}/{name}-outside; touch ./{name}-inside", outside.display())}]}])
    };
    let settings = json!({"hooks": {
        "SessionStart": hook("session-start"),
        "UserPromptSubmit": hook("prompt"),
    }});
    std::fs::create_dir_all(repo.join(".claude")).unwrap();
    std::fs::write(repo.join(".claude/settings.json"), settings.to_string()).unwrap();
    git(repo, &["add", ".claude/settings.json"]);
    git(repo, &["commit", "-q", "-m", "hooks"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn repository_hooks_are_off_unless_trusted_and_stay_in_the_sandbox_when_trusted() {
    let model = crate::fake_model::FakeModel::start(|_| {
        crate::fake_model::Reply::Text("nothing to do".into())
    })
    .await;
    let env = Env::new("");
    let home = env.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let outside = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/containment")
        .join(env.dir.path().file_name().unwrap());
    std::fs::create_dir_all(&outside).unwrap();
    env.write_config(&claude_config(&model, &home));
    repo_with_hooks(&env.root().join("repos/app"), &outside);
    let _d = env.start();
    let mcp = Mcp::connect(&env).await;
    let p = mcp
        .call("register_project", json!({"path": "app"}))
        .await
        .unwrap();
    assert_eq!(p["trusted"], false);
    let s = mcp
        .call("create_session", json!({"project_id": "app"}))
        .await
        .unwrap();
    let wt = PathBuf::from(s["worktree_path"].as_str().unwrap());
    let markers = |dir: &Path| -> Vec<String> {
        let mut m: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with("-inside") || n.ends_with("-outside"))
            .collect();
        m.sort();
        m
    };

    let id = run(&mcp, "S1", "say something").await;
    let j = wait_final(&mcp, &id, Duration::from_secs(90)).await;
    assert_eq!(j["status"], "done", "{j}");
    assert_eq!(markers(&wt), Vec::<String>::new(), "untrusted: no hook ran");
    assert_eq!(markers(&outside), Vec::<String>::new());

    let p = mcp
        .call("register_project", json!({"path": "app", "trusted": true}))
        .await
        .unwrap();
    assert_eq!(p["trusted"], true, "{p}");
    let id = run(&mcp, "S1", "say something again").await;
    let j = wait_final(&mcp, &id, Duration::from_secs(90)).await;
    assert_eq!(j["status"], "done", "{j}");
    assert!(
        markers(&wt).contains(&"prompt-inside".to_string()),
        "trusted: the hooks ran, in the worktree: {:?}",
        markers(&wt)
    );
    assert_eq!(
        markers(&outside),
        Vec::<String>::new(),
        "even trusted hooks cannot write outside the sandbox"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_bubblewrap_jobs_fail_clearly_and_readiness_tells() {
    // A PATH with git but no bwrap.
    let env = Env::new("");
    let bin = env.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(required_tool("git", "apt-get install git"), bin.join("git"))
        .unwrap();
    env.write_config(&format!(
        "[agent]\ncommand = \"{}\"\n",
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fake-agent.sh")
    ));
    let d = env.start_with(|c| {
        c.env("PATH", &bin);
    });
    let (code, body) = d.get("/health/ready");
    assert_eq!(code, 503, "{body}");
    let body = json(&body);
    assert!(
        body["checks"]["sandbox"]
            .as_str()
            .is_some_and(|s| s.starts_with("failed: ") && s.contains("bwrap")),
        "{body}"
    );
    let mcp = Mcp::connect(&env).await;
    session(&env, &mcp).await;
    let id = run(&mcp, "S1", "anything").await;
    let j = wait_final(&mcp, &id, Duration::from_secs(30)).await;
    assert_eq!(j["status"], "failed", "{j}");
    assert!(
        j["error"]
            .as_str()
            .is_some_and(|e| e.contains("bubblewrap")),
        "{j}"
    );
    let doctor = env
        .command(&["doctor", "--json"])
        .env("PATH", &bin)
        .output()
        .unwrap();
    assert_eq!(doctor.status.code(), Some(2), "a failure is exit code 2");
    let report = json(&String::from_utf8_lossy(&doctor.stdout));
    assert!(
        report["sandbox"]
            .as_str()
            .is_some_and(|s| s.starts_with("failed: ")),
        "{report}"
    );
    drop(d);

    // The operator's explicit opt-out: ready, shown as unconfined, warned about at start.
    env.write_config(&format!(
        "[agent]\ncommand = \"{}\"\nsandbox = \"none\"\n",
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fake-agent.sh")
    ));
    let d = env.start_with(|c| {
        c.env("PATH", &bin);
    });
    let (code, body) = d.get("/health/ready");
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        json(&body)["checks"]["sandbox"],
        "none (agents run unconfined)"
    );
    assert!(d.stderr_text().contains("Sandbox disabled"));
    let doctor = env.run(&["doctor"]);
    assert!(
        String::from_utf8_lossy(&doctor.stdout).contains("agents run unconfined"),
        "{}",
        String::from_utf8_lossy(&doctor.stdout)
    );
    let report = json(&String::from_utf8_lossy(
        &env.run(&["doctor", "--json"]).stdout,
    ));
    assert_eq!(
        report["sandbox"], "none (agents run unconfined)",
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_command_reached_through_a_link_under_tmp_still_runs() {
    // Installers put links on PATH; /tmp is replaced inside the sandbox, so the link must be followed
    // before the sandbox starts.
    let links = tempfile::Builder::new()
        .prefix("tvlink")
        .tempdir_in("/tmp")
        .unwrap();
    let link = links.path().join("agent");
    std::os::unix::fs::symlink(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fake-agent.sh"),
        &link,
    )
    .unwrap();
    let env = containment_env();
    env.write_config(&format!("[agent]\ncommand = \"{}\"\n", link.display()));
    let _d = env.start();
    let mcp = Mcp::connect(&env).await;
    session(&env, &mcp).await;
    let id = run(&mcp, "S1", "anything").await;
    let j = wait_final(&mcp, &id, Duration::from_secs(30)).await;
    assert_eq!(j["status"], "done", "{j}");
}

/// The daemon is live: `/health/live` answers.
fn assert_live(d: &Daemon) {
    let (code, body) = d.get("/health/live");
    assert_eq!(code, 200, "{body}");
}

fn assert_contained(job: &serde_json::Value, words: &[&str], d: &Daemon) {
    let job = &serde_json::json!({"job": job, "daemon": d.stderr_text().lines().filter(|l| l.contains("ERROR") || l.contains("panick")).collect::<Vec<_>>()});
    let h = &job["job"];
    let _ = h;
    assert_eq!(job["job"]["status"], "failed", "{job}");
    assert_eq!(job["job"]["error_type"], "agent_error", "{job}");
    assert!(
        job["job"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("refused a file the job left")),
        "{job}"
    );
    let error = job["job"]["error"].as_str().unwrap_or_default();
    for w in words {
        assert!(error.contains(w), "{w:?} not in the error: {job}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn whoever_runs_the_daemon_the_sandbox_keeps_no_privilege() {
    for user in daemon_users() {
        let h = hostile_as("bwrap", user, "").await;
        let attempts = h.attempt("remount").await;
        for name in [
            "remount",
            "remount-write-outside",
            "capabilities",
            "nested-userns",
            "read-shadow",
            "cgroup-escape",
        ] {
            assert_blocked(&attempts, name);
        }
        assert!(!h.outside.join("remount-pwned.txt").exists(), "{user:?}");
    }
    // The attack works where the sandbox holds privileges: bubblewrap as root without a user namespace.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let out = std::process::Command::new("bwrap")
            .args([
                "--unshare-pid",
                "--ro-bind",
                "/",
                "/",
                "--dev",
                "/dev",
                "--proc",
                "/proc",
            ])
            .args(["--tmpfs", "/tmp", "--", "sh", "-c"])
            .arg("umount -l /tmp && mount -o remount,rw,bind / / && echo escaped")
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("escaped"),
            "the attack itself must work without the defence: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            std::fs::read("/etc/shadow").is_ok(),
            "root reads /etc/shadow outside"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_link_planted_where_the_daemon_writes_head_is_not_followed() {
    for user in daemon_users() {
        let h = hostile_as("bwrap", user, "").await;
        let (job, attempts) = h.attempt_in("S1", "head-link").await;
        assert!(
            attempts["head-link"].0,
            "the link was planted: {attempts:?}"
        );
        assert_contained(&job, &["HEAD.televibe", "symbolic link"], &h._daemon);
        assert_eq!(std::fs::read_to_string(target(&h.env)).unwrap(), "keep\n");
        assert_live(&h._daemon);
        // The session is usable again: HEAD is back on its branch.
        assert_eq!(
            git(&h.own, &["symbolic-ref", "HEAD"]).trim(),
            "refs/heads/televibe/S1"
        );
        let attempts = h.attempt("commit").await;
        assert!(attempts["own-commit"].0, "{attempts:?}");
    }
    // The mechanics: a write through such a link lands in the target.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("target"), "keep").unwrap();
    std::os::unix::fs::symlink(dir.path().join("target"), dir.path().join("HEAD.televibe"))
        .unwrap();
    std::fs::write(dir.path().join("HEAD.televibe"), "ref: refs/heads/x\n").unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("target")).unwrap(),
        "ref: refs/heads/x\n"
    );
}

/// A second project whose repository holds a blob no other project may read; its id.
fn vault(env: &Env) -> String {
    let repo = env.root().join("repos/vault");
    make_repo(&repo);
    std::fs::write(repo.join("secret.txt"), "the vault's secret\n").unwrap();
    git(&repo, &["add", "secret.txt"]);
    git(&repo, &["commit", "-q", "-m", "secret"]);
    // Loose, so that links to its fan-out directory would reach it.
    git(&repo, &["rev-parse", "HEAD:secret.txt"])
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn links_out_of_the_private_object_store_import_nothing() {
    for user in daemon_users() {
        let h = hostile_as("bwrap", user, "").await;
        let secret = vault(&h.env);
        h.env.hand_over();
        let app = h.env.root().join("repos/app");
        let missing = |repo: &Path| {
            !std::process::Command::new("git")
                .arg("-C")
                .arg(repo)
                .args(["cat-file", "-e", &secret])
                .status()
                .unwrap()
                .success()
        };
        assert!(missing(&app));
        // The mechanics: git reading through such links finds the vault's blob.
        let farm = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(
            h.env
                .root()
                .join("repos/vault/.git/objects")
                .join(&secret[..2]),
            farm.path().join(&secret[..2]),
        )
        .unwrap();
        let through = std::process::Command::new("git")
            .arg("--git-dir")
            .arg(app.join(".git"))
            .env("GIT_OBJECT_DIRECTORY", farm.path())
            .args(["cat-file", "-e", &secret])
            .status()
            .unwrap();
        assert!(through.success(), "git follows the links");

        let (job, attempts) = h.attempt_in("S1", "object-links").await;
        assert!(attempts["object-links"].0, "{attempts:?}");
        assert_contained(&job, &["symbolic link", "object directory"], &h._daemon);
        assert!(missing(&app), "the vault's blob was imported ({user:?})");
        assert_live(&h._daemon);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fifos_left_as_the_branch_do_not_freeze_the_daemon() {
    for user in daemon_users() {
        let h = hostile_as("bwrap", user, "").await;
        // Two at once: each would hold a worker forever if read plainly.
        let (one, two) = tokio::join!(
            h.attempt_in("S1", "fifo-ref"),
            h.attempt_in("S2", "fifo-ref")
        );
        for (job, attempts) in [one, two] {
            assert!(attempts["fifo-ref"].0, "{attempts:?}");
            assert_contained(&job, &["FIFO"], &h._daemon);
        }
        assert_live(&h._daemon);
        let attempts = h.attempt("commit").await;
        assert!(
            attempts["own-commit"].0,
            "the session still works: {attempts:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_can_neither_change_nor_refresh_the_operators_login() {
    for user in daemon_users() {
        let h = hostile_as("bwrap", user, "").await;
        let login = h.env.dir.path().join("home/.claude/.credentials.json");
        std::fs::create_dir_all(login.parent().unwrap()).unwrap();
        let text = r#"{"claudeAiOauth":{"accessToken":"at-1","refreshToken":"rt-secret","expiresAt":4102444800000}}"#;
        std::fs::write(&login, text).unwrap();
        let attempts = h.attempt("login").await;
        // The mechanics: the job does see a login (it can work), just not the refresh token.
        assert!(attempts["login-read"].0, "{attempts:?}");
        assert_blocked(&attempts, "login-refresh-token");
        // Behind the egress proxy not even the access token: a placeholder the proxy swaps.
        assert_blocked(&attempts, "login-access-token");
        assert_blocked(&attempts, "login-write");
        assert_eq!(std::fs::read_to_string(&login).unwrap(), text);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_neither_read_nor_instruct_each_other_through_agent_state() {
    for user in daemon_users() {
        let h = hostile_as("bwrap", user, "").await;
        let (_, attempts) = h.attempt_in("S2", "state").await;
        assert!(attempts["state-plant"].0, "{attempts:?}");
        // The mechanics: S2's plant is there on the host, where a shared state would show it to S1.
        let planted = h.env.root().join("agents/app/S2/CLAUDE.md");
        assert!(
            std::fs::read_to_string(&planted)
                .unwrap()
                .contains("planted by S2"),
            "{}",
            planted.display()
        );
        let attempts = h.attempt("state").await;
        assert_blocked(&attempts, "state-other-session");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_reach_neither_the_hosts_loopback_nor_its_abstract_sockets() {
    let listen_abstract = |name: String| {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
        std::thread::spawn(move || {
            use std::io::Write;
            for mut s in listener.incoming().flatten() {
                let _ = s.write_all(b"service reached\n");
            }
        });
    };
    for user in daemon_users() {
        let h = hostile_as("bwrap", user, "").await;
        listen_abstract(format!("tvtest-abs-{}", h.mark));
        let attempts = h.attempt("network").await;
        for name in [
            "net-abstract",
            "net-loopback",
            "net-curl",
            "net-curl-listed",
            "net-curl-direct",
        ] {
            assert_blocked(&attempts, name);
        }
        let refused = h._daemon.stderr_text();
        assert!(
            refused.contains("Egress refused") && refused.contains("example.org"),
            "refusals are logged with the host"
        );
    }
    // The mechanics: a host on agent.network_allow is reached by curl through the proxy, and with the
    // network open the same steps reach the abstract socket and loopback directly.
    let listed = format!("network_allow = [\"127.0.0.1:{}\"]", loopback_port());
    let h = hostile_as("bwrap", DaemonUser::Own, &listed).await;
    let attempts = h.attempt("network").await;
    assert!(attempts["net-curl-listed"].0, "{attempts:?}");
    assert_blocked(&attempts, "net-curl");
    let h = hostile_as("bwrap", DaemonUser::Own, "network = \"open\"").await;
    listen_abstract(format!("tvtest-abs-{}", h.mark));
    let attempts = h.attempt("network").await;
    assert!(attempts["net-abstract"].0, "{attempts:?}");
    assert!(attempts["net-loopback"].0, "{attempts:?}");
    assert!(attempts["net-curl-direct"].0, "{attempts:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_the_job_user_cannot_run_fails_clearly_and_doctor_says_so() {
    // A copy of the agent behind a directory only root may enter (as under /root).
    let env = containment_env();
    let closed = env.dir.path().join("closed");
    std::fs::create_dir_all(&closed).unwrap();
    let agent = closed.join("agent");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fake-agent.sh"),
        &agent,
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
    env.write_config(&format!("[agent]\ncommand = \"{}\"\n", agent.display()));
    let _d = env.start();
    let mcp = Mcp::connect(&env).await;
    session(&env, &mcp).await;
    let id = run(&mcp, "S1", "anything").await;
    let j = wait_final(&mcp, &id, Duration::from_secs(30)).await;
    let doctor = String::from_utf8_lossy(&env.run(&["doctor"]).stdout).to_string();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // Jobs run as agent.run_as (nobody), which cannot walk into the directory.
        assert_eq!(j["status"], "failed", "{j}");
        assert!(
            j["error"]
                .as_str()
                .is_some_and(|e| e.contains("cannot run") && e.contains("agent.run_as")),
            "{j}"
        );
        assert!(doctor.contains("which cannot run it"), "{doctor}");
    } else {
        // The daemon's own user runs its jobs: the directory is its own.
        assert_eq!(j["status"], "done", "{j}");
        assert!(!doctor.contains("which cannot run it"), "{doctor}");
    }
}

/// Approves the first pending approval (waiting up to a minute for one) and returns its id.
async fn approve_next(mcp: &Mcp) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let id = loop {
        let p = mcp.call("list_pending_approvals", json!({})).await.unwrap();
        if let Some(a) = p["approvals"].as_array().unwrap().first() {
            break a["id"].as_str().unwrap().to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no approval came");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    mcp.call("approve", json!({"approval_id": id}))
        .await
        .unwrap();
    id
}

#[tokio::test(flavor = "multi_thread")]
async fn the_real_cli_works_behind_the_allowlist_and_its_curl_to_an_unlisted_host_fails() {
    use crate::fake_model::{FakeModel, Reply, after_tool, text_of};
    let model = FakeModel::start(|req| {
        let text = text_of(req);
        if after_tool(req) {
            // The tool's output goes back into the conversation: the model echoes how curl ended.
            // The last mention: the tool's output, after the command that printed it.
            let code = text
                .rsplit("curl-exit=")
                .next()
                .map(|r| {
                    r.chars()
                        .take_while(char::is_ascii_digit)
                        .collect::<String>()
                })
                .unwrap_or_default();
            Reply::Text(format!("curl ended with {code}"))
        } else {
            Reply::ToolUse {
                name: "Bash".into(),
                input: json!({"command": "curl -fsS -m 10 http://example.org/; echo curl-exit=$?"}),
            }
        }
    })
    .await;
    for user in daemon_users() {
        let mut env = containment_env();
        env.run_as(user);
        let home = env.dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        env.write_config(&claude_config(&model, &home));
        let d = env.start();
        let mcp = Mcp::connect(&env).await;
        session(&env, &mcp).await;
        let id = run(&mcp, "S1", "fetch example.org").await;
        approve_next(&mcp).await;
        let j = wait_final(&mcp, &id, Duration::from_secs(90)).await;
        assert_eq!(j["status"], "done", "{j}");
        let said = j["result_text"].as_str().unwrap_or_default().to_string();
        // 22: the proxy's 403 (curl -f); 0 would mean the host was reached.
        assert_eq!(said, "curl ended with 22", "{user:?}: {j}");
        assert!(
            d.stderr_text().contains("example.org"),
            "the refusal is logged with its host"
        );
        // The model API saw the real key; the agent only ever had a placeholder.
        let keys = model.keys();
        assert!(
            !keys.is_empty() && keys.iter().all(|k| k == "sk-test"),
            "{keys:?}"
        );
    }
}

/// A loopback OAuth token endpoint: answers every refresh with `at-new`/`rt-2` (an hour) and keeps the
/// request bodies.
fn token_endpoint() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1/oauth/token", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut s in listener.incoming().flatten() {
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        log.lock().unwrap().push(body.to_string());
                        break;
                    }
                }
            }
            let answer = r#"{"access_token":"at-new","refresh_token":"rt-2","expires_in":3600,"token_type":"Bearer"}"#;
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_refreshes_the_operators_login_and_jobs_never_hold_it() {
    use crate::fake_model::{FakeModel, Reply};
    let model = FakeModel::start(|_| Reply::Text("done".into())).await;
    let (token_url, refreshes) = token_endpoint();
    for user in daemon_users() {
        let mut env = containment_env();
        env.run_as(user);
        let home = env.dir.path().join("home");
        let login = home.join(".claude/.credentials.json");
        std::fs::create_dir_all(login.parent().unwrap()).unwrap();
        // An expired subscription login: only a refresh makes it work again.
        std::fs::write(
            &login,
            r#"{"claudeAiOauth":{"accessToken":"at-old","refreshToken":"rt-1","expiresAt":1000,"scopes":["user:inference"],"subscriptionType":"pro"}}"#,
        )
        .unwrap();
        env.write_config(&format!(
            "[agent]\ncommand = \"{}\"\noauth_token_url = \"{token_url}\"\n\
             env = {{ ANTHROPIC_BASE_URL = \"{}\", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = \"1\", HOME = \"{}\" }}\n\
             [jobs]\nhard_timeout_secs = 120\n",
            claude_cli().display(),
            model.url(),
            home.display()
        ));
        let before = refreshes.lock().unwrap().len();
        let _d = env.start();
        let mcp = Mcp::connect(&env).await;
        session(&env, &mcp).await;
        for instruction in ["first", "second"] {
            let id = run(&mcp, "S1", instruction).await;
            let j = wait_final(&mcp, &id, Duration::from_secs(90)).await;
            assert_eq!(j["status"], "done", "{user:?}: {j}");
        }
        // Refreshed once by the daemon, with the refresh token the job never saw.
        let seen = refreshes.lock().unwrap()[before..].to_vec();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(seen[0].contains("\"refresh_token\":\"rt-1\""), "{seen:?}");
        assert!(
            seen[0].contains("\"grant_type\":\"refresh_token\""),
            "{seen:?}"
        );
        // The model API got the fresh token; the job only ever had a placeholder.
        let keys = model.keys();
        assert!(
            keys.last().is_some_and(|k| k == "Bearer at-new"),
            "{keys:?}"
        );
        assert!(keys.iter().all(|k| !k.contains("placeholder")), "{keys:?}");
        // The operator's file holds the new tokens (the operator's own CLI keeps working).
        let saved = std::fs::read_to_string(&login).unwrap();
        assert!(
            saved.contains("at-new") && saved.contains("rt-2"),
            "{saved}"
        );
    }
}

/// The hostile script's attempts in `text` (its lines `HOSTILE <name> reached|blocked <detail>`): name →
/// (reached, detail).
fn attempts_in(text: &str) -> HashMap<String, (bool, String)> {
    text.lines()
        .filter_map(|l| l.split_once("HOSTILE ").map(|(_, rest)| rest))
        .filter_map(|rest| {
            let mut w = rest.splitn(3, ' ');
            let (name, verdict) = (w.next()?, w.next()?);
            Some((
                name.to_string(),
                (verdict == "reached", w.next().unwrap_or("").to_string()),
            ))
        })
        .collect()
}

/// The real Codex as the hostile one: the model has it run the hostile script as a shell command (asked,
/// and approved over MCP as a careless person would), so every attempt is made by a process Codex
/// started in the job's sandbox; the attempts are read back from the command's output.
async fn codex_attempts(
    user: DaemonUser,
    instruction: &str,
) -> (Hostile, HashMap<String, (bool, String)>) {
    let api = crate::fake_openai::FakeOpenAi::start(|req| {
        use crate::fake_openai::{Reply, after_tool, last_user_text};
        if after_tool(req) {
            Reply::text("hostile run over")
        } else {
            // Waiting for the whole run (unified exec otherwise returns what came within 10 s).
            Reply::Call {
                name: "exec_command".into(),
                arguments: json!({
                    "cmd": format!("echo {} | perl {HOSTILE}", last_user_text(req)),
                    "yield_time_ms": 120_000,
                }),
            }
        }
    })
    .await;
    let h = hostile_with(user, |vars, home| {
        let section = crate::codex::codex_section(&api, home);
        let section = section.replace("env = {", &format!("env = {{ {vars},"));
        format!("[agent]\ndefault = \"codex\"\n{section}")
    })
    .await;
    let id = run(&h.mcp, "S1", instruction).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let job = loop {
        let job = h.mcp.call("get_job", json!({"job_id": id})).await.unwrap();
        if ["done", "failed", "canceled"].contains(&job["status"].as_str().unwrap_or("")) {
            break job;
        }
        assert!(std::time::Instant::now() < deadline, "{job}");
        let pending = h
            .mcp
            .call("list_pending_approvals", json!({}))
            .await
            .unwrap();
        for a in pending["approvals"].as_array().unwrap() {
            let _ = h.mcp.call("approve", json!({"approval_id": a["id"]})).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(job["status"], "done", "{job}");
    let output: String = api
        .requests()
        .iter()
        .map(crate::fake_openai::tool_output)
        .collect::<Vec<_>>()
        .join("\n");
    let attempts = attempts_in(&output);
    assert!(
        !attempts.is_empty(),
        "the hostile command did not run: {job}\n{output}"
    );
    (h, attempts)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_codex_job_cannot_write_outside_its_worktree_nor_reach_a_host_off_the_allowlist() {
    for user in daemon_users() {
        let (h, attempts) = codex_attempts(user, "write read socket network").await;
        for name in [
            "write-other-worktree",
            "write-outside",
            "write-git-config",
            "write-git-hook",
            "write-home",
            "read-db",
            "read-config",
            "socket-direct",
            "net-loopback",
            "net-curl",
            "net-curl-listed",
            "net-curl-direct",
        ] {
            assert_blocked(&attempts, name);
        }
        assert!(!h.other.join("pwned.txt").exists());
        assert!(!h.outside.join("pwned.txt").exists());
        assert!(!h.env.dir.path().join("home/pwned.txt").exists());
        let refused = h._daemon.stderr_text();
        assert!(
            refused.contains("Egress refused") && refused.contains("example.org"),
            "refusals are logged with the host"
        );
        eprintln!("{user:?}: {} attempts, all blocked", attempts.len());
    }
}
