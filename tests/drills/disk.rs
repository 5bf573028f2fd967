//! Drills on disks and git: the database's disk full (read-only mode), a worktree that git cannot create,
//! and the worktrees' disk full.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;
use crate::fake_telegram::FakeTelegram;
use crate::harness::*;
use crate::record::{Measured, record};

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_disk_full_turns_read_only_until_space_returns() {
    let mnt = tempfile::Builder::new()
        .prefix("tvdrill")
        .tempdir_in("/tmp")
        .unwrap();
    let disk = SmallDisk::mount(mnt.path(), "3m");
    let tg = FakeTelegram::start().await;
    let env = Env::new(&tg_config(
        &tg,
        &format!("{}[store]\nread_only_probe_secs = 1\n", fake_agent("")),
    ));
    // The whole root lives on the small disk (the harness finds it through a symlink).
    let root = mnt.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::os::unix::fs::symlink(&root, env.root()).unwrap();
    let d = start(&env);
    phone_sessions(&env, &tg, 1).await;
    let mcp = Mcp::connect(&env).await;
    let done = run(&mcp, "S1", "finished before the disk filled").await;
    wait_final(&mcp, &done, Duration::from_secs(20)).await;
    let t0 = Instant::now();
    let filler = disk.fill();
    // Writes go on while SQLite still has room in pages it holds; then one fails for good.
    let big = "x".repeat(10_000);
    let mut refused = None;
    // Every job the daemon accepted on the way: none may be missing afterwards.
    let mut accepted = vec![done.clone()];
    for _ in 0..1000 {
        match mcp
            .call(
                "run_instruction",
                json!({"session_id": "S1", "instruction": big}),
            )
            .await
        {
            Err(e) if e.code == "READ_ONLY" => {
                refused = Some(e);
                break;
            }
            Ok(q) => {
                accepted.push(q["id"].as_str().unwrap().to_string());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let err = refused.expect("a write fails once the disk is full");
    let detected = t0.elapsed();
    assert!(err.message.contains("read-only mode"), "{}", err.message);
    assert_eq!(d.metric("televibe_database_read_only "), Some(1.0));
    // What the alerts read: a full disk (DatabaseDiskFull), not corruption (DatabaseCorruption).
    assert_eq!(
        d.metric("televibe_database_read_only_reason{reason=\"disk_full\"}"),
        Some(1.0)
    );
    assert_eq!(
        d.metric("televibe_health_check{check=\"database\"}"),
        Some(1.0)
    );
    assert_eq!(
        mcp.call("list_projects", json!({})).await.unwrap()["projects"][0]["id"],
        "app",
        "reads keep working"
    );
    until(Duration::from_secs(20), "the read-only notice", || {
        tg.messages(USER).iter().any(|m| {
            m.visible
                .contains("⚠️ System in read-only mode. Writes disabled.")
        })
    })
    .await;
    // The operator frees space (`televibe admin cleanup --apply` or by hand).
    let t1 = Instant::now();
    std::fs::remove_file(&filler).unwrap();
    eventually(Duration::from_secs(30), "ready again", || {
        d.get("/health/ready").0 == 200
    });
    let after = run(&mcp, "S1", "after the disk was freed").await;
    let recovered = t1.elapsed();
    assert_eq!(
        wait_final(&mcp, &after, Duration::from_secs(20)).await["status"],
        "done"
    );
    // Jobs accepted before the refusal all ran (none dropped), and each result reached the phone once.
    accepted.push(after.clone());
    let mut missing = 0;
    for id in &accepted {
        match mcp.call("get_job", json!({"job_id": id})).await {
            Ok(_) => {
                wait_final(&mcp, id, Duration::from_secs(120)).await;
            }
            Err(_) => missing += 1,
        }
    }
    let ids = accepted;
    all_delivered(&tg, &ids, Duration::from_secs(120)).await;
    let (undelivered, duplicated) = deliveries(&tg, &ids);
    let lost = missing + undelivered;
    for (key, detection) in [
        (
            "sqlite_disk_full",
            "SQLite write fails (SQLITE_FULL): the store turns read-only",
        ),
        (
            "degraded_database_read_only",
            "televibe_database_read_only 1; readiness 503; writes refused READ_ONLY",
        ),
    ] {
        record(Measured {
            key,
            detected_after: detected,
            recovered_after: recovered,
            detection,
            user_saw: "⚠️ System in read-only mode. Writes disabled.",
            lost,
            duplicated,
            settings: "3 MiB tmpfs root; read_only_probe_secs = 1; recovery without a restart once space returns",
        });
    }
    assert_eq!((lost, duplicated), (0, 0));
    drop(mcp);
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn worktree_creation_failure_is_retried_then_reported() {
    let tg = FakeTelegram::start().await;
    let env = Env::new(&tg_config(&tg, &fake_agent("")));
    let d = start(&env);
    phone_sessions(&env, &tg, 0).await;
    let repo = env.root().join("repos/app");
    let config = std::fs::read(repo.join(".git/config")).unwrap();
    let t0 = Instant::now();
    std::fs::write(repo.join(".git/config"), "[core\n\tbroken = = =\n").unwrap();
    say(&tg, "/new app", "GIT_ERROR").await;
    let detected = t0.elapsed();
    let told = last_reply_with(&tg, "GIT_ERROR");
    assert!(
        told.contains("twice"),
        "tried again before reporting: {told}"
    );
    let mcp = Mcp::connect(&env).await;
    let sessions = mcp.call("list_sessions", json!({})).await.unwrap();
    assert_eq!(
        sessions["sessions"].as_array().unwrap().len(),
        0,
        "nothing half-made: {sessions}"
    );
    let t1 = Instant::now();
    std::fs::write(repo.join(".git/config"), &config).unwrap();
    say(&tg, "/new app", "Session <b>S1").await;
    let recovered = t1.elapsed();
    record(Measured {
        key: "worktree_creation_failure",
        detected_after: detected,
        recovered_after: recovered,
        detection: "git fails (broken .git/config); the creation is tried twice",
        user_saw: &told.lines().take(2).collect::<Vec<_>>().join(" — "),
        lost: 0,
        duplicated: 0,
        settings: "recovery = the repository fixed, then /new again",
    });
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn worktree_disk_full_is_reported_and_cleared() {
    let tg = FakeTelegram::start().await;
    let env = Env::new(&tg_config(&tg, &fake_agent("")));
    // The worktrees have a disk of their own, 4 MiB.
    let disk = SmallDisk::mount(&env.root().join("workspaces"), "4m");
    let d = start(&env);
    phone_sessions(&env, &tg, 1).await;
    let t0 = Instant::now();
    let filler = disk.fill();
    say(&tg, "/new app", "GIT_ERROR").await;
    let detected = t0.elapsed();
    let told = last_reply_with(&tg, "GIT_ERROR");
    // The operator's check names the full disk.
    let out = env.run(&["doctor", "--json"]);
    let report = json(&String::from_utf8_lossy(&out.stdout));
    let disk_check = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["check"] == "disk" && c["message"].as_str().unwrap_or("").contains("workspaces")
        })
        .cloned()
        .unwrap_or_else(|| panic!("doctor checks the workspaces disk: {report}"));
    assert_ne!(disk_check["status"], "ok", "doctor warns: {report}");
    assert!(
        disk_check["message"]
            .as_str()
            .unwrap()
            .starts_with("0.0 MB free"),
        "the full disk, not just a small one: {disk_check}"
    );
    let t1 = Instant::now();
    std::fs::remove_file(&filler).unwrap();
    say(&tg, "/new app", "Session <b>S2").await;
    let recovered = t1.elapsed();
    let mcp = Mcp::connect(&env).await;
    let id = run(&mcp, "S2", "work after the cleanup").await;
    assert_eq!(
        wait_final(&mcp, &id, Duration::from_secs(20)).await["status"],
        "done"
    );
    record(Measured {
        key: "worktree_disk_full",
        detected_after: detected,
        recovered_after: recovered,
        detection: "git fails with no space left on device; `televibe doctor` warns on the workspaces disk",
        user_saw: &told.lines().take(2).collect::<Vec<_>>().join(" — "),
        lost: 0,
        duplicated: 0,
        settings: "4 MiB tmpfs under workspaces/; recovery = space freed, then /new again",
    });
    drop(mcp);
    drop(d);
}
