//! `televibe doctor` on a deliberately broken root: each problem named with the command that fixes it.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::json;

use crate::harness::*;

const FAKE_AGENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fake-agent.sh");

#[tokio::test(flavor = "multi_thread")]
async fn doctor_names_each_problem_of_a_broken_root_and_its_fix() {
    let env = Env::new("");
    env.write_config(&format!(
        "[agent]\ncommand = \"{FAKE_AGENT}\"\nsandbox = \"none\"\n"
    ));
    // The socket's directory (it holds the database and the secrets too).
    let sock_dir = env.orchestrator();
    // A job left running by a daemon that died, started long ago.
    let mut d = env.start();
    let mcp = Mcp::connect(&env).await;
    make_repo(&env.root().join("repos/app"));
    mcp.call("register_project", json!({"path": "app"}))
        .await
        .unwrap();
    mcp.call("create_session", json!({"project_id": "app"}))
        .await
        .unwrap();
    let q = mcp
        .call(
            "run_instruction",
            json!({"session_id": "S1", "instruction": "hang"}),
        )
        .await
        .unwrap();
    let job = q["id"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(20), "the job runs", || {
        env.run(&["admin", "jobs", "--json"])
            .stdout
            .windows(7)
            .any(|w| w == b"running")
    });
    drop(mcp);
    d.signal(libc::SIGKILL);
    d.wait_exit(Duration::from_secs(10));
    let store = env.store().await;
    store
        .execute_unchecked(&format!(
            "UPDATE jobs SET started_at = '2020' || substr(started_at, 5) WHERE id = '{job}'"
        ))
        .await
        .unwrap();
    store.close().await;
    // A stale worktree, an old backup, an unreadable socket directory, bubblewrap missing.
    std::fs::create_dir_all(env.root().join("workspaces/app/S77")).unwrap();
    let backups = env.orchestrator().join("backups");
    for e in std::fs::read_dir(&backups).unwrap().flatten() {
        std::fs::remove_file(e.path()).unwrap();
    }
    let old = chrono::Utc::now() - chrono::Duration::days(3);
    std::fs::write(
        backups.join(format!("state-{}.db.gz", old.format("%Y-%m-%dT%H-%M-%S"))),
        b"old",
    )
    .unwrap();
    std::fs::set_permissions(&sock_dir, std::fs::Permissions::from_mode(0o000)).unwrap();
    let text = std::fs::read_to_string(env.config()).unwrap();
    std::fs::write(
        env.config(),
        text.replace("sandbox = \"none\"", "sandbox = \"bwrap\""),
    )
    .unwrap();
    let empty = env.dir.path().join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let run = |json_out: bool| {
        let mut args = vec!["doctor"];
        if json_out {
            args.push("--json");
        }
        env.command(&args).env("PATH", &empty).output().unwrap()
    };
    let out = run(true);
    assert_eq!(out.status.code(), Some(2), "failures are exit code 2");
    let report = json(&String::from_utf8_lossy(&out.stdout));
    let find = |check: &str, needle: &str| -> serde_json::Value {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == check && c["message"].as_str().unwrap().contains(needle))
            .cloned()
            .unwrap_or_else(|| panic!("no {check} finding with {needle:?}: {report}"))
    };
    for (check, needle, status, fix) in [
        ("worktrees", "S77", "WARN", "rm -rf"),
        (
            "jobs",
            &job[..],
            "WARN",
            &format!("televibe admin job kill {job}")[..],
        ),
        ("permissions", "socket directory", "FAIL", "chmod 700"),
        ("backup", "old", "WARN", "televibe backup now"),
        ("sandbox", "failed", "FAIL", "apt-get install bubblewrap"),
    ] {
        let f = find(check, needle);
        assert_eq!(f["status"], status, "{f}");
        assert!(f["fix"].as_str().unwrap_or("").contains(fix), "{f}");
    }
    let text = String::from_utf8_lossy(&run(false).stdout).to_string();
    assert!(
        text.contains(&format!("fix: televibe admin job kill {job}")),
        "{text}"
    );
    std::fs::set_permissions(&sock_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn cleanup_is_a_dry_run_until_applied_and_keeps_the_newest_backups() {
    let env = Env::new("");
    let d = env.start();
    drop(d);
    let backups = env.orchestrator().join("backups");
    for e in std::fs::read_dir(&backups).unwrap().flatten() {
        std::fs::remove_file(e.path()).unwrap();
    }
    let name = |days: i64| {
        let at = chrono::Utc::now() - chrono::Duration::days(days);
        backups.join(format!("state-{}.db.gz", at.format("%Y-%m-%dT%H-%M-%S")))
    };
    // Four past the 30 days of retention: the newest three stay, as the janitor keeps them.
    let (older, old) = (name(60), name(40));
    for f in [&older, &name(50), &name(45), &old] {
        std::fs::write(f, vec![0u8; 1000]).unwrap();
    }
    let log = env.orchestrator().join("logs/jobs/ancient.log");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    std::fs::write(&log, "x").unwrap();
    let touched = std::process::Command::new("touch")
        .args(["-d", "40 days ago"])
        .arg(&log)
        .status()
        .unwrap();
    assert!(touched.success());
    let report = |apply: bool| {
        let mut args = vec!["admin", "cleanup", "--json"];
        if apply {
            args.push("--apply");
        }
        let out = env.run(&args);
        assert!(out.status.success(), "{out:?}");
        json(&String::from_utf8_lossy(&out.stdout))
    };
    let dry = report(false);
    let paths: Vec<String> = dry["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["path"].as_str().unwrap().to_string())
        .collect();
    assert!(paths.contains(&older.display().to_string()), "{dry}");
    assert!(paths.contains(&log.display().to_string()), "{dry}");
    assert!(
        !paths.contains(&old.display().to_string()),
        "the newest three backups stay: {dry}"
    );
    assert!(older.exists() && log.exists(), "a dry run deletes nothing");
    let applied = report(true);
    assert_eq!(applied["applied"], true);
    assert!(!older.exists() && !log.exists(), "{applied}");
    assert!(old.exists(), "the newest backup stays");
}

/// `doctor --json` on `env`: its exit code and its `user` finding.
fn user_finding(env: &Env) -> (Option<i32>, serde_json::Value) {
    let out = env.run(&["doctor", "--json"]);
    let report = json(&String::from_utf8_lossy(&out.stdout));
    let user = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "user")
        .cloned()
        .unwrap_or_else(|| panic!("no user finding: {report}"));
    (out.status.code(), user)
}

/// The uid `id -u <name>` gives.
fn uid_of(name: &str) -> u32 {
    let out = std::process::Command::new("id")
        .args(["-u", name])
        .output()
        .unwrap();
    assert!(out.status.success(), "id -u {name}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn doctor_warns_when_the_daemon_runs_as_root_and_fails_when_run_as_is_no_user() {
    let config = |run_as: &str| {
        format!("[agent]\ncommand = \"{FAKE_AGENT}\"\nsandbox = \"none\"\nrun_as = \"{run_as}\"\n")
    };
    let env = Env::new(&config("nobody"));
    let (code, user) = user_finding(&env);
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        assert_eq!(user["status"], "WARN", "{user}");
        assert_eq!(
            user["message"],
            format!(
                "the daemon runs as root: jobs run as the unprivileged user nobody (uid {}) in a user namespace with every capability dropped, but the daemon itself holds root; a dedicated user is safer",
                uid_of("nobody")
            ),
            "{user}"
        );
        let fix = user["fix"].as_str().unwrap();
        assert!(
            fix.contains("sudo useradd --system --create-home --home-dir /var/lib/televibe --shell /usr/sbin/nologin televibe")
                && fix.contains("User=televibe"),
            "{user}"
        );
        assert!(code.unwrap() >= 1, "a warning is exit code 1 at least");
        let text = String::from_utf8_lossy(&env.run(&["doctor"]).stdout).to_string();
        assert!(
            text.lines()
                .any(|l| l.starts_with("WARN") && l.contains("the daemon runs as root")),
            "{text}"
        );
        // A run_as that names no user here: no job could start.
        env.write_config(&config("televibe-no-such-user"));
        let (code, user) = user_finding(&env);
        assert_eq!(user["status"], "FAIL", "{user}");
        let message = user["message"].as_str().unwrap();
        assert!(
            message.contains("agent.run_as")
                && message.contains("televibe-no-such-user")
                && message.contains("is not a user on this machine"),
            "{user}"
        );
        assert!(
            user["fix"].as_str().unwrap().contains("useradd --system"),
            "{user}"
        );
        assert_eq!(code, Some(2), "a failure is exit code 2");
    } else {
        assert_eq!(user["status"], "ok", "{user}");
        let message = user["message"].as_str().unwrap();
        assert!(
            message.starts_with("runs as ")
                && message.ends_with(&format!(
                    "(uid {euid}); jobs run as this user in a user namespace with no capabilities"
                )),
            "{user}"
        );
        assert!(user["fix"].is_null(), "{user}");
        // agent.run_as matters only to a root daemon: one that names no user here changes nothing.
        env.write_config(&config("televibe-no-such-user"));
        let (_, user) = user_finding(&env);
        assert_eq!(user["status"], "ok", "{user}");
    }
}

/// The `agent` findings of `doctor --json`.
fn agent_findings(env: &Env) -> Vec<serde_json::Value> {
    let out = env.run(&["doctor", "--json"]);
    let report = json(&String::from_utf8_lossy(&out.stdout));
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["check"] == "agent")
        .cloned()
        .collect()
}

#[test]
fn doctor_checks_every_configured_agent() {
    let claude = claude_cli();
    let codex = codex_cli();
    let env = Env::new(&format!(
        "[agent]\ncommand = \"{}\"\n[agents.codex]\ncommand = \"{}\"\n",
        claude.display(),
        codex.display()
    ));
    let found = agent_findings(&env);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().all(|f| f["status"] == "ok"), "{found:?}");
    assert!(
        found[1]["message"]
            .as_str()
            .unwrap()
            .contains("codex-cli 0.169.0"),
        "{found:?}"
    );
    // A Codex that is not there is named with how to install it; Claude Code alone is not checked twice.
    env.write_config(&format!(
        "[agent]\ncommand = \"{}\"\n[agents.codex]\ncommand = \"/nonexistent/codex\"\n",
        claude.display()
    ));
    let found = agent_findings(&env);
    let codex = found
        .iter()
        .find(|f| f["message"].as_str().unwrap().contains("codex"))
        .unwrap_or_else(|| panic!("{found:?}"));
    assert_eq!(codex["status"], "WARN", "{codex}");
    assert!(
        codex["fix"].as_str().unwrap().contains("@openai/codex"),
        "{codex}"
    );
    // Without [agents.codex] Codex is not configured, and not checked.
    env.write_config(&format!("[agent]\ncommand = \"{}\"\n", claude.display()));
    assert_eq!(agent_findings(&env).len(), 1);
}
