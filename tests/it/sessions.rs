//! Projects and sessions on real git repositories, through `televibe mcp` and a real MCP client.

use serde_json::json;

use crate::harness::*;

fn worktrees(repo: &std::path::Path) -> Vec<String> {
    git(repo, &["worktree", "list", "--porcelain"])
        .lines()
        .filter_map(|l| l.strip_prefix("worktree ").map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_on_worktrees_lifecycle() {
    let env = Env::new("");
    let d = env.start();
    let repo = env.root().join("repos/app");
    make_repo(&repo);
    let mcp = Mcp::connect(&env).await;

    let reg = mcp
        .call("register_project", json!({"path": "app"}))
        .await
        .unwrap();
    assert_eq!(reg["already_registered"], false);
    assert_eq!(reg["id"], "app");
    assert_eq!(reg["default_branch"], "main");
    let again = mcp
        .call(
            "register_project",
            json!({"path": repo.display().to_string()}),
        )
        .await
        .unwrap();
    assert_eq!(again["already_registered"], true);
    assert_eq!(again["id"], "app");
    assert_eq!(
        mcp.call("list_projects", json!({})).await.unwrap()["projects"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        mcp.call("get_project", json!({"project_id": "app"}))
            .await
            .unwrap()["id"],
        "app"
    );
    mcp.refused(
        "get_project",
        json!({"project_id": "nope"}),
        "PROJECT_NOT_FOUND",
    )
    .await;

    let s1 = mcp
        .call(
            "create_session",
            json!({"project_id": "app", "branch": "feature/a"}),
        )
        .await
        .unwrap();
    let s2 = mcp
        .call(
            "create_session",
            json!({"project_id": "app", "branch": "feature/b"}),
        )
        .await
        .unwrap();
    assert_eq!(s1["id"], "S1");
    assert_eq!(s2["id"], "S2");
    assert_eq!(s1["state"], "idle");
    let ws1 = env.root().join("workspaces/app/S1");
    assert_eq!(s1["worktree_path"], ws1.display().to_string());
    let wts = worktrees(&repo);
    assert_eq!(wts.len(), 3, "{wts:?}");
    assert!(wts.contains(&ws1.display().to_string()), "{wts:?}");
    assert!(ws1.join("README.md").is_file());

    // Refusals change nothing.
    let before = (
        tree_listing(&env.root().join("workspaces")),
        git(&repo, &["branch", "--list"]),
    );
    mcp.refused(
        "create_session",
        json!({"project_id": "app", "branch": "feature/a"}),
        "BRANCH_CONFLICT",
    )
    .await;
    mcp.refused(
        "create_session",
        json!({"project_id": "app", "branch": "main"}),
        "BRANCH_CONFLICT",
    )
    .await;
    for bad in ["", "-x", "a..b", "has space", "x.lock"] {
        mcp.refused(
            "create_session",
            json!({"project_id": "app", "branch": bad}),
            "GIT_ERROR",
        )
        .await;
    }
    mcp.refused(
        "create_session",
        json!({"project_id": "app", "branch": "c", "base": "nope"}),
        "GIT_ERROR",
    )
    .await;
    mcp.refused(
        "create_session",
        json!({"project_id": "ghost"}),
        "PROJECT_NOT_FOUND",
    )
    .await;
    assert_eq!(
        before,
        (
            tree_listing(&env.root().join("workspaces")),
            git(&repo, &["branch", "--list"])
        )
    );
    let listed = mcp.call("list_sessions", json!({})).await.unwrap();
    assert_eq!(
        listed["sessions"]
            .as_array()
            .unwrap_or_else(|| panic!("{listed}"))
            .len(),
        2
    );

    // Close S1: the worktree goes, the branch stays, the row stays as history.
    let closed = mcp
        .call("close_session", json!({"session_id": "S1"}))
        .await
        .unwrap();
    assert_eq!(closed["state"], "closed");
    assert_eq!(closed["branch_deleted"], false);
    assert!(!ws1.exists());
    assert!(!worktrees(&repo).contains(&ws1.display().to_string()));
    assert!(git(&repo, &["branch", "--list"]).contains("feature/a"));
    assert_eq!(
        mcp.call("get_session", json!({"session_id": "S1"}))
            .await
            .unwrap()["state"],
        "closed"
    );
    mcp.refused(
        "close_session",
        json!({"session_id": "S1"}),
        "SESSION_CLOSING",
    )
    .await;
    mcp.refused(
        "get_session",
        json!({"session_id": "S99"}),
        "SESSION_NOT_FOUND",
    )
    .await;
    assert_eq!(
        mcp.call("list_sessions", json!({})).await.unwrap()["sessions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        mcp.call("list_sessions", json!({"include_closed": true}))
            .await
            .unwrap()["sessions"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Reopen on the same branch: the existing branch is reused, with a new number.
    let s3 = mcp
        .call(
            "create_session",
            json!({"project_id": "app", "branch": "feature/a"}),
        )
        .await
        .unwrap();
    assert_eq!(s3["id"], "S3");
    assert_eq!(s3["branch_created"], false);

    // Uncommitted changes block a close unless forced; delete_branch removes the branch.
    let ws2 = env.root().join("workspaces/app/S2");
    std::fs::write(ws2.join("wip.txt"), "work in progress").unwrap();
    mcp.refused("close_session", json!({"session_id": "S2"}), "SESSION_BUSY")
        .await;
    assert!(
        ws2.join("wip.txt").exists(),
        "a refused close touches nothing"
    );
    let forced = mcp
        .call(
            "close_session",
            json!({"session_id": "S2", "force": true, "delete_branch": true}),
        )
        .await
        .unwrap();
    assert_eq!(forced["branch_deleted"], true);
    assert!(!ws2.exists());
    assert!(!git(&repo, &["branch", "--list"]).contains("feature/b"));

    // A session without a branch name gets its own branch.
    let s4 = mcp
        .call("create_session", json!({"project_id": "app"}))
        .await
        .unwrap();
    assert_eq!(s4["branch"], "televibe/S4");

    let events: Vec<String> = audit_events(&env)
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        events.iter().filter(|e| *e == "project.registered").count(),
        1,
        "{events:?}"
    );
    assert_eq!(
        events.iter().filter(|e| *e == "session.created").count(),
        4,
        "{events:?}"
    );
    assert_eq!(
        events.iter().filter(|e| *e == "session.closed").count(),
        2,
        "{events:?}"
    );
    let created = audit_events(&env)
        .into_iter()
        .find(|e| e["event"] == "session.created")
        .unwrap();
    assert_eq!(created["session_id"], "S1");
    assert_eq!(created["actor"], "mcp:rmcp");

    let (_, metrics) = d.get("/metrics");
    assert!(
        metrics.contains("televibe_sessions_total{project_id=\"app\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("televibe_sessions_active{project_id=\"app\",state=\"idle\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("televibe_session_duration_seconds_count{project_id=\"app\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("televibe_session_last_activity_timestamp{session_id=\"S3\"}"),
        "{metrics}"
    );

    let out = env.run(&["admin", "sessions"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("S3") && text.contains("feature/a") && !text.contains("S1 "),
        "{text}"
    );
    let out = env.run(&["admin", "sessions", "--all", "--json"]);
    assert_eq!(
        json(&String::from_utf8_lossy(&out.stdout))["sessions"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_project_paths_are_refused_and_change_nothing() {
    let env = Env::new("");
    let d = env.start();
    let outside = env.dir.path().join("outside");
    make_repo(&outside);
    std::os::unix::fs::symlink(&outside, env.root().join("repos/sneaky")).unwrap();
    std::fs::create_dir_all(env.root().join("repos/plain")).unwrap();
    std::fs::write(env.root().join("repos/plain/file.txt"), "not a repo").unwrap();
    make_repo(&env.root().join("repos/real"));
    let mcp = Mcp::connect(&env).await;
    let before = tree_listing(&env.root());

    mcp.refused(
        "register_project",
        json!({"path": outside.display().to_string()}),
        "INVALID_PATH",
    )
    .await;
    mcp.refused(
        "register_project",
        json!({"path": "sneaky"}),
        "INVALID_PATH",
    )
    .await;
    mcp.refused(
        "register_project",
        json!({"path": "../outside"}),
        "INVALID_PATH",
    )
    .await;
    mcp.refused(
        "register_project",
        json!({"path": "missing"}),
        "INVALID_PATH",
    )
    .await;
    mcp.refused("register_project", json!({"path": ""}), "INVALID_PATH")
        .await;
    mcp.refused(
        "register_project",
        json!({"path": "plain"}),
        "NOT_A_REPOSITORY",
    )
    .await;
    mcp.refused(
        "register_project",
        json!({"path": "real/.git"}),
        "NOT_A_REPOSITORY",
    )
    .await;
    assert_eq!(
        mcp.call("list_projects", json!({})).await.unwrap(),
        json!({"projects": []})
    );
    let after: Vec<_> = tree_listing(&env.root())
        .into_iter()
        .filter(|p| !p.starts_with(env.orchestrator()))
        .collect();
    let before: Vec<_> = before
        .into_iter()
        .filter(|p| !p.starts_with(env.orchestrator()))
        .collect();
    assert_eq!(before, after);

    let scan = mcp.call("scan_projects", json!({})).await.unwrap();
    let registered: Vec<&str> = scan["registered"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(registered, vec!["real"]);
    let skipped: Vec<&str> = scan["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    assert_eq!(skipped.len(), 2, "{scan}");
    let again = mcp.call("scan_projects", json!({})).await.unwrap();
    assert_eq!(again["registered"], json!([]));
    assert_eq!(again["already_registered"], json!(["real"]));
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn git_breaker_opens_fails_fast_and_recovers() {
    let env = Env::new(
        // Long enough that the refusals below cannot straddle the move to half-open on a loaded machine.
        "[breakers.git_operations]\nfailure_threshold = 3\nsuccess_threshold = 1\ntimeout_seconds = 6\nhalf_open_requests = 1",
    );
    let d = env.start();
    let repo = env.root().join("repos/app");
    make_repo(&repo);
    let mcp = Mcp::connect(&env).await;
    mcp.call("register_project", json!({"path": "app"}))
        .await
        .unwrap();
    let gauge = || {
        d.metric("televibe_circuit_breaker_state{name=\"git_operations\"}")
            .unwrap()
    };
    assert_eq!(gauge(), 1.0);
    let config = std::fs::read(repo.join(".git/config")).unwrap();
    std::fs::write(repo.join(".git/config"), "[core\n\tbroken = = =\n").unwrap();
    // Each creation tries twice; the third failure opens the breaker.
    let first = mcp
        .refused(
            "create_session",
            json!({"project_id": "app", "branch": "x"}),
            "GIT_ERROR",
        )
        .await;
    assert!(first.message.contains("twice"), "{}", first.message);
    mcp.refused(
        "create_session",
        json!({"project_id": "app", "branch": "x"}),
        "BREAKER_OPEN",
    )
    .await;
    assert_eq!(gauge(), 0.0);
    let failures = || {
        d.metric("televibe_circuit_breaker_failures_total{name=\"git_operations\"}")
            .unwrap()
    };
    let before = failures();
    assert_eq!(before, 3.0);
    mcp.refused(
        "create_session",
        json!({"project_id": "app", "branch": "x"}),
        "BREAKER_OPEN",
    )
    .await;
    // Failing fast: refused without trying git (a try would have failed and been counted).
    assert_eq!(failures(), before, "no git call while open");
    assert_eq!(gauge(), 0.0, "still open");
    std::fs::write(repo.join(".git/config"), &config).unwrap();
    eventually(
        std::time::Duration::from_secs(20),
        "half-open after the timeout",
        || gauge() == 0.5,
    );
    let s = mcp
        .call(
            "create_session",
            json!({"project_id": "app", "branch": "x"}),
        )
        .await
        .unwrap();
    assert_eq!(s["id"], "S1");
    assert_eq!(gauge(), 1.0);
    let out = env.run(&["admin", "breakers", "--json"]);
    let b = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        b["breakers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == "git_operations")
            .unwrap()["state"],
        "closed"
    );
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_reconciles_and_session_actors_come_back() {
    let env = Env::new("");
    let d = env.start();
    let repo = env.root().join("repos/app");
    make_repo(&repo);
    let mcp = Mcp::connect(&env).await;
    mcp.call("register_project", json!({"path": "app"}))
        .await
        .unwrap();
    mcp.call(
        "create_session",
        json!({"project_id": "app", "branch": "one"}),
    )
    .await
    .unwrap();
    mcp.call(
        "create_session",
        json!({"project_id": "app", "branch": "two"}),
    )
    .await
    .unwrap();
    drop(mcp);

    // A session actor that panics is restarted from its row.
    assert!(
        env.run(&["admin", "panic", "sessions/session:S1"])
            .status
            .success()
    );
    eventually(
        std::time::Duration::from_secs(10),
        "session:S1 restarted",
        || {
            let out = env.run(&["admin", "tree", "--json"]);
            let t = json(&String::from_utf8_lossy(&out.stdout));
            let sessions = t["children"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == "sessions")
                .unwrap()
                .clone();
            sessions["children"].as_array().unwrap().iter().any(|c| {
                c["name"] == "session:S1" && c["restarts"] == 1 && c["status"] == "running"
            })
        },
    );
    assert!(d.stop().success());

    // While the daemon is down, S2's worktree disappears and a stray directory appears.
    std::fs::remove_dir_all(env.root().join("workspaces/app/S2")).unwrap();
    std::fs::create_dir_all(env.root().join("workspaces/app/S77")).unwrap();
    let d = env.start();
    let mcp = Mcp::connect(&env).await;
    let s2 = mcp
        .call("get_session", json!({"session_id": "S2"}))
        .await
        .unwrap();
    assert_eq!(s2["worktree_missing"], true);
    assert_eq!(
        mcp.call("get_session", json!({"session_id": "S1"}))
            .await
            .unwrap()["worktree_missing"],
        false
    );
    assert!(
        !worktrees(&repo).iter().any(|w| w.ends_with("S2")),
        "stale entry pruned"
    );
    let out = env.run(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("S77") && text.contains("not the worktree of any open session"),
        "{text}"
    );
    assert!(
        text.contains("session S2") && text.contains("has no worktree"),
        "{text}"
    );
    assert!(
        text.lines()
            .filter(|l| !l.trim_start().starts_with("fix:"))
            .filter(|l| l.contains("S77") || l.contains("has no worktree"))
            .all(|l| l.starts_with("WARN")),
        "{text}"
    );
    assert_eq!(out.status.code(), Some(1), "warnings only: {text}");
    // Both actors run again, and closing the missing one still works.
    let out = env.run(&["admin", "tree"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("session:S1") && text.contains("session:S2"),
        "{text}"
    );
    mcp.call("close_session", json!({"session_id": "S2"}))
        .await
        .unwrap();
    let s3 = mcp
        .call(
            "create_session",
            json!({"project_id": "app", "branch": "two"}),
        )
        .await
        .unwrap();
    assert_eq!(s3["id"], "S3", "numbers are never reused");
    drop(d);
    // A failing check: exit code 2, the check marked FAIL, the summary counts it.
    std::fs::remove_dir_all(env.orchestrator().join("logs")).unwrap();
    let out = env.run(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("logs is missing")),
        "{text}"
    );
    assert!(text.contains("doctor: 1 problem(s)"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_resets_an_open_breaker_and_it_is_audited() {
    let env = Env::new("");
    let d = env.start();
    let repo = env.root().join("repos/app");
    make_repo(&repo);
    let mcp = Mcp::connect(&env).await;
    mcp.call("register_project", json!({"path": "app"}))
        .await
        .unwrap();
    let config = std::fs::read(repo.join(".git/config")).unwrap();
    std::fs::write(repo.join(".git/config"), "[core\n\tbroken = = =\n").unwrap();
    mcp.refused("create_session", json!({"project_id": "app"}), "GIT_ERROR")
        .await;
    mcp.refused(
        "create_session",
        json!({"project_id": "app"}),
        "BREAKER_OPEN",
    )
    .await;
    std::fs::write(repo.join(".git/config"), &config).unwrap();
    let out = env.run(&["admin", "breakers"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("git_operations  open"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = env.run(&["admin", "breakers", "reset", "git_operations"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("git_operations  closed"));
    assert!(
        !env.run(&["admin", "breakers", "reset", "nope"])
            .status
            .success()
    );
    mcp.call("create_session", json!({"project_id": "app"}))
        .await
        .unwrap();
    let reset = audit_events(&env)
        .into_iter()
        .find(|e| e["event"] == "admin.breaker_reset")
        .expect("audited");
    assert_eq!(reset["actor"], "mcp:televibe-admin");
    assert_eq!(reset["details"]["breaker"], "git_operations");
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn workspace_disk_usage_is_measured_in_the_background() {
    let env = Env::new("[sessions]\ndisk_usage_interval_secs = 1");
    let d = env.start();
    make_repo(&env.root().join("repos/app"));
    let mcp = Mcp::connect(&env).await;
    mcp.call("register_project", json!({"path": "app"}))
        .await
        .unwrap();
    mcp.call("create_session", json!({"project_id": "app"}))
        .await
        .unwrap();
    std::fs::write(
        env.root().join("workspaces/app/S1/big.bin"),
        vec![7u8; 100_000],
    )
    .unwrap();
    eventually(
        std::time::Duration::from_secs(15),
        "disk usage gauge",
        || {
            let (_, m) = d.get("/metrics");
            m.lines()
                .find(|l| l.starts_with("televibe_workspace_disk_bytes{session_id=\"S1\"}"))
                .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .is_some_and(|bytes| bytes > 100_000)
        },
    );
    mcp.call("close_session", json!({"session_id": "S1", "force": true}))
        .await
        .unwrap();
    let (_, m) = d.get("/metrics");
    assert!(
        !m.contains("televibe_workspace_disk_bytes{session_id=\"S1\"}"),
        "closed sessions leave the gauge"
    );
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_base_that_looks_like_an_option_is_refused_and_writes_nothing() {
    let env = Env::new("");
    let d = env.start();
    let repo = env.root().join("repos/app");
    make_repo(&repo);
    git(&repo, &["branch", "existing"]);
    let mcp = Mcp::connect(&env).await;
    mcp.call("register_project", json!({"path": "app"}))
        .await
        .unwrap();
    let target = env.dir.path().join("injected.diff");
    let base = format!("--output={}", target.display());
    for branch in ["existing", "fresh"] {
        let e = mcp
            .refused(
                "create_session",
                json!({"project_id": "app", "branch": branch, "base": base}),
                "GIT_ERROR",
            )
            .await;
        assert!(e.message.contains("base"), "{}", e.message);
    }
    assert!(!target.exists(), "git wrote the injected output file");
    assert_eq!(
        mcp.call("list_sessions", json!({})).await.unwrap()["sessions"],
        json!([])
    );
    assert_eq!(worktrees(&repo).len(), 1, "no worktree was added");
    drop(d);
}
