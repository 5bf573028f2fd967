//! Pushing a session's branch from the phone: a bare repository as the project's `origin`, a stand-in agent
//! that commits, `/push` and MCP `push_session`, people deciding on the fake Telegram or through MCP.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::fake_telegram::{FakeTelegram, Sent, TOKEN};
use crate::harness::*;
use crate::jobs::{run, wait_final, wait_status};

const USER: i64 = 4343;
const PUSH_AGENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/push-agent.sh");
const LIMIT: Duration = Duration::from_secs(60);

/// A daemon whose agent is the push stand-in, a project `app` whose `origin` is a bare repository, and
/// session S1 with one commit of its job on its branch.
struct Pushing {
    env: Env,
    daemon: Daemon,
    mcp: Mcp,
    repo: PathBuf,
    bare: PathBuf,
    worktree: PathBuf,
    branch: String,
}

fn agent_config(extra: &str) -> String {
    format!("[agent]\ncommand = \"{PUSH_AGENT}\"\n[jobs]\nkill_grace_secs = 1\n{extra}")
}

fn telegram_config(tg: &FakeTelegram) -> String {
    format!(
        "[telegram]\napi_url = \"{}\"\nallowed_users = [{USER}]\n",
        tg.url()
    )
}

/// Starts the daemon on `env`, with `home` as its HOME when given, and opens S1 with a committed job.
async fn pushing(env: Env, home: Option<&Path>, origin: Option<&str>) -> Pushing {
    let repo = env.root().join("repos/app");
    make_repo(&repo);
    let bare = env.dir.path().join("origin.git");
    git(env.dir.path(), &["init", "-q", "--bare", "origin.git"]);
    let url = origin
        .map(str::to_string)
        .unwrap_or_else(|| bare.display().to_string());
    // The origin has the project's main branch, as a clone's would.
    git(&repo, &["push", "-q", bare.to_str().unwrap(), "main"]);
    git(&repo, &["remote", "add", "origin", &url]);
    let daemon = env.start_with(|c| {
        c.env("TELEVIBE_TELEGRAM__TOKEN", TOKEN);
        if let Some(home) = home {
            c.env("HOME", home);
        }
    });
    let mcp = Mcp::connect(&env).await;
    let s = crate::jobs::open_app_session(&mcp).await;
    let p = Pushing {
        worktree: PathBuf::from(s["worktree_path"].as_str().unwrap()),
        branch: s["branch"].as_str().unwrap().to_string(),
        env,
        daemon,
        mcp,
        repo,
        bare,
    };
    p.commit().await;
    p
}

impl Pushing {
    /// A job of S1 commits on the session's branch.
    async fn commit(&self) {
        let job = run(&self.mcp, "S1", "commit").await;
        let j = wait_final(&self.mcp, &job, LIMIT).await;
        assert_eq!(j["status"], "done", "{j}");
    }

    /// The session's branch in the project's repository.
    fn head(&self) -> String {
        git(
            &self.repo,
            &["rev-parse", &format!("refs/heads/{}", self.branch)],
        )
        .trim()
        .to_string()
    }

    /// The session's branch on the bare origin, if it has it.
    fn remote_head(&self) -> Option<String> {
        let out = git(
            &self.bare,
            &[
                "for-each-ref",
                "--format=%(objectname)",
                &format!("refs/heads/{}", self.branch),
            ],
        );
        Some(out.trim().to_string()).filter(|s| !s.is_empty())
    }

    /// MCP `push_session` on S1: the push job's id.
    async fn push(&self) -> String {
        let q = self
            .mcp
            .call("push_session", json!({"session_id": "S1"}))
            .await
            .unwrap();
        assert_eq!(q["status"], "queued", "{q}");
        assert_eq!(q["kind"], "push", "{q}");
        q["id"].as_str().unwrap().to_string()
    }

    /// The one pending approval, once it is there.
    async fn pending(&self) -> Value {
        let deadline = std::time::Instant::now() + LIMIT;
        loop {
            let p = self
                .mcp
                .call("list_pending_approvals", json!({}))
                .await
                .unwrap();
            if !p["approvals"][0].is_null() {
                return p["approvals"][0].clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no pending push approval"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn approve(&self) -> Value {
        let a = self.pending().await;
        self.mcp
            .call("approve", json!({"approval_id": a["id"]}))
            .await
            .unwrap();
        a
    }
}

/// Writes a script git may run.
fn executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn short(id: &str) -> &str {
    &id[..7]
}

/// The approval messages the chat got.
fn approval_messages(tg: &FakeTelegram) -> Vec<Sent> {
    tg.messages(USER)
        .into_iter()
        .filter(|m| m.text.contains("Approval needed"))
        .collect()
}

fn buttons(m: &Sent) -> Vec<(String, String)> {
    m.markup["inline_keyboard"][0]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|b| {
                    (
                        b["text"].as_str().unwrap().to_string(),
                        b["callback_data"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `/push S1` from the phone: its approval message, once it is there.
async fn push_from_phone(tg: &FakeTelegram) -> Sent {
    tg.send_text(USER, "/start");
    until(LIMIT, "the bot answers /start", || {
        !tg.messages(USER).is_empty()
    })
    .await;
    tg.send_text(USER, "/push S1");
    until(LIMIT, "an approval message for the push", || {
        approval_messages(tg).len() == 1
    })
    .await;
    approval_messages(tg).remove(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_approved_on_the_phone_reaches_the_origin_and_is_told() {
    let tg = FakeTelegram::start().await;
    let env = Env::new(&agent_config(&telegram_config(&tg)));
    let p = pushing(env, None, None).await;
    let head = p.head();
    let msg = push_from_phone(&tg).await;
    let range = format!("0000000..{}", short(&head));
    assert!(
        msg.visible.contains("git_push")
            && msg.visible.contains(&p.branch)
            && msg.visible.contains(&range)
            && msg.visible.contains("1 commit, new branch"),
        "{}",
        msg.visible
    );
    // The person sees what the commit changes: the job's file.
    assert!(msg.visible.contains("📁 commit-0.txt"), "{}", msg.visible);
    let shown = buttons(&msg);
    assert_eq!(
        shown.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        ["✅ Approve push", "❌ Deny"],
        "a push is approved once or denied"
    );
    // Nothing is on the origin before the tap.
    assert_eq!(p.remote_head(), None);
    let jobs = p
        .mcp
        .call("list_jobs", json!({"session_id": "S1"}))
        .await
        .unwrap();
    let push = jobs["jobs"][0].clone();
    assert_eq!(push["kind"], "push", "{jobs}");
    assert_eq!(push["status"], "waiting_approval", "{jobs}");
    assert_eq!(push["instruction"], format!("git push origin {}", p.branch));

    tg.tap(USER, USER, msg.message_id, &shown[0].1);
    let j = wait_final(&p.mcp, push["id"].as_str().unwrap(), LIMIT).await;
    assert_eq!(j["status"], "done", "{j}");
    assert_eq!(p.remote_head(), Some(head.clone()), "the session's commit");
    assert!(j["result_text"].as_str().unwrap().contains(&range), "{j}");
    until(LIMIT, "the chat told the pushed range", || {
        tg.messages(USER)
            .iter()
            .any(|m| m.visible.contains("Pushed") && m.visible.contains(&range))
    })
    .await;
    // The request and the tap are in the audit log.
    let audit = std::fs::read_to_string(p.env.orchestrator().join("logs/audit.log")).unwrap();
    let events: Vec<Value> = audit.lines().map(json).collect();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "job.approval_needed" && e["actor"] == "daemon"),
        "{audit}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "job.approved" && e["actor"] == format!("telegram:{USER}")),
        "{audit}"
    );
    // A push job runs no agent: the agent's breaker counted nothing for it, neither way.
    let breakers = p.mcp.call("get_breakers", json!({})).await.unwrap();
    let claude = breakers["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "claude_code")
        .unwrap()
        .clone();
    assert_eq!(claude["state"], "closed", "{claude}");
    drop(p.daemon);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_denied_push_leaves_the_origin_alone() {
    let tg = FakeTelegram::start().await;
    let env = Env::new(&agent_config(&telegram_config(&tg)));
    let p = pushing(env, None, None).await;
    let msg = push_from_phone(&tg).await;
    let deny = buttons(&msg)
        .into_iter()
        .find(|(t, _)| t.contains("Deny"))
        .unwrap()
        .1;
    tg.tap(USER, USER, msg.message_id, &deny);
    let jobs = p
        .mcp
        .call("list_jobs", json!({"session_id": "S1"}))
        .await
        .unwrap();
    let j = wait_final(&p.mcp, jobs["jobs"][0]["id"].as_str().unwrap(), LIMIT).await;
    assert_eq!(j["status"], "canceled", "{j}");
    assert_eq!(j["error"], format!("push denied by telegram:{USER}"), "{j}");
    until(LIMIT, "the chat told of the denial", || {
        tg.messages(USER)
            .iter()
            .any(|m| m.visible.contains("push denied by"))
    })
    .await;
    assert_eq!(p.remote_head(), None, "nothing pushed");
    drop(p.daemon);
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_pushes_with_an_approval_and_tells_each_range() {
    let env = Env::new(&agent_config(""));
    let p = pushing(env, None, None).await;
    let first = p.head();
    let id = p.push().await;
    let a = p.pending().await;
    assert_eq!(a["tool_name"], "git_push", "{a}");
    assert_eq!(a["scope"], "git_push", "{a}");
    assert_eq!(a["tool_input"]["commit"], first.as_str(), "{a}");
    assert_eq!(a["tool_input"]["commits"], 1, "{a}");
    // Approving "for the session" is refused and changes nothing: each push is approved on its own.
    p.mcp
        .refused(
            "approve",
            json!({"approval_id": a["id"], "for_session": true}),
            "APPROVAL_ONCE_ONLY",
        )
        .await;
    assert_eq!(p.remote_head(), None);
    p.approve().await;
    let j = wait_final(&p.mcp, &id, LIMIT).await;
    assert_eq!(j["status"], "done", "{j}");
    assert_eq!(j["kind"], "push");
    let range = format!("0000000..{}", short(&first));
    assert!(j["result_text"].as_str().unwrap().contains(&range), "{j}");
    assert_eq!(p.remote_head(), Some(first.clone()));

    // Two more commits: the next push is a fast-forward, asked again.
    p.commit().await;
    p.commit().await;
    let second = p.head();
    let id = p.push().await;
    let a = p.approve().await;
    assert_eq!(a["tool_input"]["commits"], 2, "{a}");
    let j = wait_final(&p.mcp, &id, LIMIT).await;
    assert_eq!(j["status"], "done", "{j}");
    let range = format!("{}..{}", short(&first), short(&second));
    assert!(j["result_text"].as_str().unwrap().contains(&range), "{j}");
    assert_eq!(p.remote_head(), Some(second));
    drop(p.daemon);
}

/// Moves the session's branch on the bare origin to a commit of its own, as someone else's push would.
fn move_origin_elsewhere(p: &Pushing) {
    let other = p.env.dir.path().join("other");
    git(
        p.env.dir.path(),
        &["clone", "-q", p.bare.to_str().unwrap(), "other"],
    );
    std::fs::write(other.join("theirs.txt"), "someone else's\n").unwrap();
    git(&other, &["checkout", "-q", "-b", "x"]);
    git(&other, &["add", "theirs.txt"]);
    git(&other, &["commit", "-q", "-m", "someone else's"]);
    git(
        &other,
        &[
            "push",
            "-q",
            "origin",
            &format!("HEAD:refs/heads/{}", p.branch),
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_remotes_refusal_is_told_in_its_own_words() {
    let env = Env::new(&agent_config(""));
    let p = pushing(env, None, None).await;
    // The origin declines every push, saying why.
    let hook = p.bare.join("hooks/pre-receive");
    executable(
        &hook,
        "#!/bin/sh\necho 'pushes are closed today' >&2\nexit 1\n",
    );
    let id = p.push().await;
    p.approve().await;
    let j = wait_final(&p.mcp, &id, LIMIT).await;
    assert_eq!(j["status"], "failed", "{j}");
    let error = j["error"].as_str().unwrap();
    assert!(
        error.contains("[remote rejected]") && error.contains("remote: pushes are closed today"),
        "{error}"
    );
    std::fs::remove_file(&hook).unwrap();

    // The origin's branch moved elsewhere: not a fast-forward, refused.
    move_origin_elsewhere(&p);
    let theirs = p.remote_head().unwrap();
    let id = p.push().await;
    let a = p.approve().await;
    assert_eq!(
        a["tool_input"]["range"],
        format!("{}..{}", short(&theirs), short(&p.head())),
        "{a}"
    );
    let j = wait_final(&p.mcp, &id, LIMIT).await;
    assert_eq!(j["status"], "failed", "{j}");
    assert!(j["error"].as_str().unwrap().contains("[rejected]"), "{j}");
    assert_eq!(p.remote_head(), Some(theirs), "the origin kept its branch");
    drop(p.daemon);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_waits_for_the_job_before_it() {
    let env = Env::new(&agent_config(""));
    let p = pushing(env, None, None).await;
    let busy = run(&p.mcp, "S1", "wait-for-go").await;
    wait_status(&p.mcp, &busy, LIMIT, |s| s == "running").await;
    let push = p.push().await;
    // The session has taken the push in and tried to start it (the tree's question goes through the
    // session after the push was queued): it waits behind the running job.
    p.mcp.call("get_supervision_tree", json!({})).await.unwrap();
    let pending = p
        .mcp
        .call("list_pending_approvals", json!({}))
        .await
        .unwrap();
    assert_eq!(pending["approvals"], json!([]));
    let j = p
        .mcp
        .call("get_job", json!({"job_id": push}))
        .await
        .unwrap();
    assert_eq!(j["status"], "queued", "{j}");
    std::fs::write(p.worktree.join("go"), "").unwrap();
    let done = wait_final(&p.mcp, &busy, LIMIT).await;
    assert_eq!(done["status"], "done", "{done}");
    p.approve().await;
    let j = wait_final(&p.mcp, &push, LIMIT).await;
    assert_eq!(j["status"], "done", "{j}");
    assert!(
        j["started_at"].as_str().unwrap() >= done["finished_at"].as_str().unwrap(),
        "the push started after the job before it ended: {j} {done}"
    );
    drop(p.daemon);
}

/// The daemon's home: its git credentials, an SSH key, a file that is no credential (the control), and a
/// global configuration that names the origin (`vault:` → the bare repository), read by the daemon's push.
fn daemon_home(env: &Env) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let home = env.dir.path().join("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::write(
        home.join(".git-credentials"),
        "https://tv:secret-token@example.com\n",
    )
    .unwrap();
    std::fs::write(home.join(".ssh/id_ed25519"), "a private key\n").unwrap();
    std::fs::write(home.join("control.txt"), "not a credential\n").unwrap();
    let bare = env.dir.path().join("origin.git");
    std::fs::write(
        home.join(".gitconfig"),
        format!("[url \"{}\"]\n\tinsteadOf = vault:\n", bare.display()),
    )
    .unwrap();
    // Readable by anyone, so only the sandbox's hiding keeps a job out.
    for p in [home.clone(), home.join(".ssh")] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for f in [
        ".git-credentials",
        ".ssh/id_ed25519",
        "control.txt",
        ".gitconfig",
    ] {
        std::fs::set_permissions(home.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    home
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_sees_no_credential_and_no_hook_it_plants_runs_when_the_daemon_pushes() {
    // Not under /tmp, which every sandbox replaces: what the job cannot read is hidden by its rules.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/containment");
    let env = Env::new_in(&root, "");
    let home = daemon_home(&env);
    let mark = env.dir.path().join("hook-ran");
    env.write_config(&agent_config("").replace(
        "[jobs]",
        &format!(
            "env = {{ TV_HOME = \"{}\", TV_MARK = \"{}\" }}\n[jobs]",
            home.display(),
            mark.display()
        ),
    ));
    let p = pushing(env, Some(&home), Some("vault:")).await;
    let peek = run(&p.mcp, "S1", "peek").await;
    let j = wait_final(&p.mcp, &peek, LIMIT).await;
    let said = j["result_text"].as_str().unwrap_or_default().to_string();
    assert!(
        said.starts_with("read: control.txt;"),
        "the job reads its home but not the credentials in it: {j}"
    );
    assert!(said.contains("/hooks"), "the job planted a hook: {said}");
    // Hooks where an unconfined job could write them: the repository's own, which a plain push runs.
    let hooks = p.repo.join(".git/hooks");
    for name in ["pre-push", "reference-transaction"] {
        executable(
            &hooks.join(name),
            &format!("#!/bin/sh\ntouch '{}'\n", mark.display()),
        );
    }
    let scratch = p.env.dir.path().join("scratch.git");
    git(p.env.dir.path(), &["init", "-q", "--bare", "scratch.git"]);
    git(&p.repo, &["push", "-q", scratch.to_str().unwrap(), "main"]);
    assert!(mark.exists(), "the planted hook runs on a plain push");
    std::fs::remove_file(&mark).unwrap();

    let head = p.head();
    let id = p.push().await;
    let a = p.approve().await;
    assert!(
        a["tool_input"]["remote"]
            .as_str()
            .unwrap()
            .contains("origin.git"),
        "the daemon's own configuration resolved the origin: {a}"
    );
    let j = wait_final(&p.mcp, &id, LIMIT).await;
    assert_eq!(j["status"], "done", "{j}");
    assert_eq!(p.remote_head(), Some(head));
    assert!(!mark.exists(), "a hook ran when the daemon pushed");
    drop(p.daemon);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_cut_by_a_restart_asks_again_and_runs_no_agent() {
    let env = Env::new(&agent_config(""));
    let mut p = pushing(env, None, None).await;
    let id = p.push().await;
    let first = p.pending().await;
    p.daemon.signal(libc::SIGKILL);
    p.daemon.wait_exit(Duration::from_secs(5));
    assert_eq!(p.remote_head(), None);
    p.daemon = p.env.start();
    p.mcp = Mcp::connect(&p.env).await;
    // The request died with the daemon; the push runs again and asks again.
    let again = p.pending().await;
    assert_ne!(again["id"], first["id"], "a new request");
    assert_eq!(again["job_id"], id.as_str());
    p.approve().await;
    let j = wait_final(&p.mcp, &id, LIMIT).await;
    assert_eq!(j["status"], "done", "{j}");
    assert_eq!(j["interruptions"], 1, "{j}");
    assert_eq!(p.remote_head(), Some(p.head()));
    // Its log is the push's own: no agent was started for it.
    let log = std::fs::read_to_string(j["log_path"].as_str().unwrap()).unwrap();
    assert!(log.contains("push") && !log.contains(" agent "), "{log}");
    drop(p.daemon);
}
