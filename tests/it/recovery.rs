//! Recovery: rebuilding a lost database from git (`reconstruct`), bringing back a worktree that
//! disappeared while the daemon runs (`recover_session`), and doctor's backup age.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::harness::*;

fn remove_db(env: &Env) {
    for f in ["state.db", "state.db-wal", "state.db-shm"] {
        let _ = std::fs::remove_file(env.orchestrator().join(f));
    }
}

async fn create(mcp: &Mcp, project: &str, branch: &str) -> serde_json::Value {
    mcp.call(
        "create_session",
        json!({"project_id": project, "branch": branch}),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn reconstruct_rebuilds_projects_and_sessions_from_git() {
    if !crate::pg::sqlite_only("reconstruct rebuilds SQLite's state.db (it refuses on PostgreSQL)")
    {
        return;
    }
    let extra_dir = tempfile::Builder::new()
        .prefix("tv-extra")
        .tempdir_in("/tmp")
        .unwrap();
    let extra_root = extra_dir.path().canonicalize().unwrap();
    let env = Env::new(&format!(
        "[projects]\nallowed_roots = [\"{}\"]\n",
        extra_root.display()
    ));
    let d = env.start();
    let app = env.root().join("repos/app");
    make_repo(&app);
    let lib = extra_root.join("lib");
    make_repo(&lib);
    let mcp = Mcp::connect(&env).await;
    // A display name makes the id differ from the directory: reconstruction finds it in workspaces/.
    mcp.call("register_project", json!({"path": "app", "name": "My App"}))
        .await
        .unwrap();
    mcp.call(
        "register_project",
        json!({"path": lib.display().to_string()}),
    )
    .await
    .unwrap();
    assert_eq!(create(&mcp, "my-app", "feature/a").await["id"], "S1");
    assert_eq!(create(&mcp, "my-app", "feature/b").await["id"], "S2");
    assert_eq!(create(&mcp, "my-app", "feature/c").await["id"], "S3");
    assert_eq!(create(&mcp, "lib", "lib-work").await["id"], "S4");
    // The highest number belongs to a closed session whose branch (televibe/S5) stays: its number must
    // not come back either.
    let s5 = mcp
        .call("create_session", json!({"project_id": "lib"}))
        .await
        .unwrap();
    assert_eq!(
        (&s5["id"], &s5["branch"]),
        (&json!("S5"), &json!("televibe/S5"))
    );
    for s in ["S2", "S5"] {
        mcp.call("close_session", json!({"session_id": s}))
            .await
            .unwrap();
    }
    // A job's row is history the database alone held.
    mcp.call(
        "run_instruction",
        json!({"session_id": "S1", "instruction": "say hi"}),
    )
    .await
    .unwrap();
    drop(mcp);

    // While it runs, the daemon's database is never replaced.
    let out = env.run(&["reconstruct", "--force"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("daemon is running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(d.stop().success());

    // A readable database is refused without --force.
    let out = env.run(&["reconstruct"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("readable") && err.contains("--force"), "{err}");
    assert!(env.orchestrator().join("state.db").is_file());

    remove_db(&env);
    let out = env.run(&["reconstruct", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(report["projects"], 2, "{report}");
    assert_eq!(report["sessions"], 3, "{report}");
    assert_eq!(report["session_ids"], json!(["S1", "S3", "S4"]), "{report}");
    assert_eq!(report["next_session"], "S6", "{report}");
    assert_eq!(report["jobs"], 0, "{report}");
    assert_eq!(report["job_history"], "lost", "{report}");
    assert!(report["moved_aside"].is_null(), "{report}");
    let text = String::from_utf8_lossy(&env.run(&["reconstruct", "--help"]).stdout).to_string();
    assert!(text.contains("--force"), "{text}");

    // --force keeps each replaced file, never overwriting an earlier one.
    for expected in ["state.db.corrupted", "state.db.corrupted.1"] {
        let out = env.run(&["reconstruct", "--force", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r = json(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(
            r["moved_aside"],
            env.orchestrator().join(expected).display().to_string()
        );
        assert_eq!(r["sessions"], 3, "{r}");
    }
    assert!(env.orchestrator().join("state.db.corrupted").is_file());
    // The text form says what is gone.
    remove_db(&env);
    let out = env.run(&["reconstruct"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("job history: lost"),
        "{text}"
    );

    let _d = env.start();
    let mcp = Mcp::connect(&env).await;
    let sessions = mcp.call("list_sessions", json!({})).await.unwrap()["sessions"].clone();
    let by_id = |id: &str| {
        sessions
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("{id} missing: {sessions}"))
            .clone()
    };
    assert_eq!(sessions.as_array().unwrap().len(), 3, "{sessions}");
    let s1 = by_id("S1");
    assert_eq!(
        (&s1["project_id"], &s1["branch"]),
        (&json!("my-app"), &json!("feature/a"))
    );
    assert_eq!(s1["worktree_missing"], false);
    assert_eq!(
        s1["worktree_path"],
        env.root()
            .join("workspaces/my-app/S1")
            .display()
            .to_string()
    );
    assert_eq!(by_id("S3")["branch"], "feature/c");
    let s4 = by_id("S4");
    assert_eq!(
        (&s4["project_id"], &s4["branch"]),
        (&json!("lib"), &json!("lib-work"))
    );
    let lib_project = mcp
        .call("get_project", json!({"project_id": "lib"}))
        .await
        .unwrap();
    assert_eq!(lib_project["repo_path"], lib.display().to_string());
    assert_eq!(
        mcp.call("list_jobs", json!({})).await.unwrap()["jobs"],
        json!([])
    );
    // Numbering continues after every number ever used.
    assert_eq!(create(&mcp, "my-app", "feature/d").await["id"], "S6");
    // The reconstructed sessions work: S1 closes like any other.
    mcp.call("close_session", json!({"session_id": "S1"}))
        .await
        .unwrap();
    assert!(
        audit_events(&env)
            .iter()
            .any(|e| e["event"] == "state.reconstructed" && e["details"]["sessions"] == 3)
    );
}

fn wait_missing(env: &Env, id: &str) {
    eventually(
        Duration::from_secs(10),
        &format!("{id} marked missing"),
        || {
            let out = env.run(&["admin", "sessions", "--json"]);
            json(&String::from_utf8_lossy(&out.stdout))["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["id"] == id && s["worktree_missing"] == true)
        },
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worktree_lost_while_running_is_noticed_and_recovered() {
    let env = Env::new(&format!(
        "[sessions]\nworktree_check_secs = 1\n[agent]\ncommand = \"{}/tests/data/fake-agent.sh\"\n",
        env!("CARGO_MANIFEST_DIR")
    ));
    let d = env.start();
    let repo = env.root().join("repos/app");
    make_repo(&repo);
    let mcp = Mcp::connect(&env).await;
    mcp.call("register_project", json!({"path": "app"}))
        .await
        .unwrap();
    create(&mcp, "app", "feature/a").await;
    create(&mcp, "app", "feature/b").await;
    create(&mcp, "app", "feature/c").await;
    let ws = |n: u32| env.root().join(format!("workspaces/app/S{n}"));
    std::fs::write(ws(1).join("work.txt"), "committed work\n").unwrap();
    git(&ws(1), &["add", "work.txt"]);
    git(&ws(1), &["commit", "-q", "-m", "work"]);

    mcp.refused(
        "recover_session",
        json!({"session_id": "S1"}),
        "WORKTREE_NOT_MISSING",
    )
    .await;
    mcp.refused(
        "recover_session",
        json!({"session_id": "S99"}),
        "SESSION_NOT_FOUND",
    )
    .await;

    std::fs::remove_dir_all(ws(1)).unwrap();
    wait_missing(&env, "S1");
    eventually(Duration::from_secs(10), "the loss is logged", || {
        d.stderr_text().contains("Session worktree is missing")
    });
    // A job queued meanwhile waits: nothing starts in a directory that is gone.
    let job = mcp
        .call(
            "run_instruction",
            json!({"session_id": "S1", "instruction": "hello"}),
        )
        .await
        .unwrap();
    let job_id = job["id"].as_str().unwrap().to_string();
    let recovering = chrono::Utc::now();
    let out = env.run(&["admin", "session", "recover", "S1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("re-created"), "{text}");
    assert_eq!(
        std::fs::read_to_string(ws(1).join("work.txt")).unwrap(),
        "committed work\n"
    );
    assert_eq!(
        git(&ws(1), &["branch", "--show-current"]).trim(),
        "feature/a"
    );
    let s1 = mcp
        .call("get_session", json!({"session_id": "S1"}))
        .await
        .unwrap();
    assert_eq!(s1["worktree_missing"], false, "{s1}");
    // The job queued while the worktree was gone starts only now, in the recovered worktree.
    let j = crate::jobs::wait_final(&mcp, &job_id, Duration::from_secs(30)).await;
    assert_eq!(j["status"], "done", "{j}");
    let started: chrono::DateTime<chrono::Utc> = j["started_at"].as_str().unwrap().parse().unwrap();
    assert!(started >= recovering, "started before the recovery: {j}");
    // The session hears of the job's end right after it is written.
    until_session(&mcp, "S1", "idle").await;
    // Recovered, it stays healthy across the next checks.
    assert_eq!(
        mcp.call("get_session", json!({"session_id": "S1"}))
            .await
            .unwrap()["worktree_missing"],
        false
    );

    // Over MCP for another session.
    std::fs::remove_dir_all(ws(2)).unwrap();
    wait_missing(&env, "S2");
    let r = mcp
        .call("recover_session", json!({"session_id": "S2"}))
        .await
        .unwrap();
    assert_eq!(r["action"], "worktree_recreated", "{r}");
    assert_eq!(r["session"]["id"], "S2");
    assert_eq!(r["session"]["worktree_missing"], false);
    assert!(ws(2).join("README.md").is_file());
    assert!(
        git(&repo, &["worktree", "list"]).contains(&ws(2).display().to_string()),
        "git lists it again"
    );

    // Files copied back by hand without git's link cannot become the worktree again: the session is
    // replaced by a new one on the same branch, and the answer says so.
    std::fs::remove_dir_all(ws(3)).unwrap();
    std::fs::create_dir_all(ws(3)).unwrap();
    std::fs::write(ws(3).join("notes.txt"), "keep me").unwrap();
    wait_missing(&env, "S3");
    let r = mcp
        .call("recover_session", json!({"session_id": "S3"}))
        .await
        .unwrap();
    assert_eq!(r["action"], "replaced", "{r}");
    assert_eq!(r["session"]["id"], "S4", "{r}");
    assert_eq!(r["session"]["branch"], "feature/c");
    assert!(r["message"].as_str().unwrap().contains("S4"), "{r}");
    assert_eq!(
        std::fs::read_to_string(ws(3).join("notes.txt")).unwrap(),
        "keep me"
    );
    assert_eq!(
        mcp.call("get_session", json!({"session_id": "S3"}))
            .await
            .unwrap()["state"],
        "closed"
    );
    assert!(ws(4).join("README.md").is_file());

    let recovered: Vec<_> = audit_events(&env)
        .into_iter()
        .filter(|e| e["event"] == "session.recovered")
        .collect();
    let ids: Vec<_> = recovered.iter().map(|e| e["session_id"].clone()).collect();
    assert_eq!(
        ids,
        vec![json!("S1"), json!("S2"), json!("S3")],
        "{recovered:?}"
    );
    assert_eq!(recovered[0]["actor"], "mcp:televibe-admin");
    drop(d);
}

fn doctor_json(env: &Env) -> (Option<i32>, serde_json::Value) {
    let out = env.run(&["doctor", "--json"]);
    (
        out.status.code(),
        json(&String::from_utf8_lossy(&out.stdout)),
    )
}

fn backup_check(report: &serde_json::Value) -> serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["message"].as_str().unwrap_or("").contains("backup"))
        .unwrap_or_else(|| panic!("no backup check: {report}"))
        .clone()
}

fn write_backup(dir: &Path, at: chrono::DateTime<chrono::Utc>) {
    let name = format!("state-{}.db.gz", at.format("%Y-%m-%dT%H-%M-%S"));
    std::fs::write(dir.join(name), b"not read by doctor").unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_reports_the_age_of_the_newest_backup() {
    if !crate::pg::sqlite_only(
        "backups copy SQLite's state.db; a PostgreSQL store's backups are the operator's own",
    ) {
        return;
    }
    let env = Env::new("[backup]\nschedule = \"0 */6 * * *\"\n");
    // A first start lays out the root; the daemon is stopped again, so its own backups (a missed run at
    // start) cannot race the files this test writes.
    assert!(env.start().stop().success());
    let backups = env.orchestrator().join("backups");
    for e in std::fs::read_dir(&backups).unwrap().flatten() {
        std::fs::remove_file(e.path()).unwrap();
    }

    let (code, report) = doctor_json(&env);
    assert_eq!(
        code,
        Some(1),
        "warnings are exit code 1, not a failure (2): {report}"
    );
    assert!(report["backup_age_secs"].is_null(), "{report}");
    let check = backup_check(&report);
    assert_eq!(check["status"], "WARN", "{check}");
    assert!(
        check["message"].as_str().unwrap().contains("no backup"),
        "{check}"
    );

    let now = chrono::Utc::now();
    // An old one first: the newest by name decides, whatever the order of creation.
    write_backup(&backups, now - chrono::Duration::hours(13));
    let (code, report) = doctor_json(&env);
    assert_eq!(code, Some(1), "{report}");
    assert!(
        report["backup_age_secs"].as_u64().unwrap() >= 13 * 3600,
        "{report}"
    );
    let check = backup_check(&report);
    assert_eq!(check["status"], "WARN", "{check}");
    assert!(
        check["message"].as_str().unwrap().contains("two periods"),
        "{check}"
    );

    write_backup(&backups, now - chrono::Duration::seconds(5));
    let (code, report) = doctor_json(&env);
    // Other warnings remain here (no daemon, no agent), so 1 is the worst; the backup is ok.
    assert_eq!(report["failures"], 0, "{report}");
    assert_eq!(code, Some(1), "{report}");
    let age = report["backup_age_secs"].as_u64().unwrap();
    assert!((5..120).contains(&age), "{report}");
    let check = backup_check(&report);
    assert_eq!(check["status"], "ok", "{check}");
    assert!(
        check["message"].as_str().unwrap().contains("old"),
        "{check}"
    );
    let text = String::from_utf8_lossy(&env.run(&["doctor"]).stdout).to_string();
    assert!(text.contains("newest backup state-"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_during_the_after_job_import_leaves_branch_and_objects_consistent() {
    const FAKE_AGENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fake-agent.sh");
    let agent = format!("[agent]\ncommand = \"{FAKE_AGENT}\"\n[jobs]\nkill_grace_secs = 1\n");
    let env = Env::new(&format!("{agent}[debug]\nstop_at = \"after_import\"\n"));
    let mut d = env.start();
    let mcp = Mcp::connect(&env).await;
    crate::jobs::session(&env, &mcp).await;
    let repo = env.root().join("repos/app");
    let branch = "televibe/S1";
    let before = git(&repo, &["rev-parse", branch]);
    let job = crate::jobs::run(&mcp, "S1", "commit").await;
    eventually(
        Duration::from_secs(60),
        "the daemon between the import and the branch move",
        || d.stderr_text().contains("stopped at after_import"),
    );
    drop(mcp);
    d.signal(libc::SIGKILL);
    d.wait_exit(Duration::from_secs(5));
    // The job's objects are in the repository, its branch where it was: git finds nothing wrong.
    assert_eq!(git(&repo, &["rev-parse", branch]), before);
    git(&repo, &["fsck", "--no-dangling", "--no-progress"]);

    env.write_config(&agent);
    let d = env.start();
    let mcp = Mcp::connect(&env).await;
    let j = crate::jobs::wait_final(&mcp, &job, Duration::from_secs(30)).await;
    assert_eq!(j["error_type"], "orchestrator_restart", "{j}");
    // Its agent had ended: it is not run again (`jobs.retry_interrupted` reruns only a cut agent).
    assert!(
        j["error"].as_str().unwrap().contains("the agent had ended"),
        "{j}"
    );
    // The session goes on: the next job's commit lands on the branch.
    let again = crate::jobs::run(&mcp, "S1", "commit").await;
    let j = crate::jobs::wait_final(&mcp, &again, Duration::from_secs(60)).await;
    assert_eq!(j["status"], "done", "{j}");
    let after = git(&repo, &["rev-parse", branch]);
    assert_ne!(after, before);
    assert_eq!(
        git(&repo, &["log", "-1", "--format=%s", branch]).trim(),
        "the job's commit"
    );
    git(&repo, &["fsck", "--no-dangling", "--no-progress"]);
    drop(mcp);
    assert!(d.stop().success());
}
