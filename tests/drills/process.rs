//! Drills on the daemon's process and its database: kill -9, memory exhaustion under a cgroup limit,
//! corruption restored from a backup.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;
use crate::fake_telegram::FakeTelegram;
use crate::harness::*;
use crate::record::{Measured, record};

/// Jobs around a failure: one finished before, one running through it, one queued behind it.
struct Around {
    before: String,
    running: String,
    queued: String,
}

async fn jobs_around(mcp: &Mcp) -> Around {
    let before = run(mcp, "S1", "finished before the failure").await;
    wait_final(mcp, &before, Duration::from_secs(20)).await;
    let running = run(mcp, "S1", "interruptible").await;
    wait_status(mcp, &running, Duration::from_secs(20), &["running"]).await;
    let queued = run(mcp, "S1", "queued across the failure").await;
    Around {
        before,
        running,
        queued,
    }
}

/// After the restart: the interrupted job ran again, resuming its conversation, and finished
/// (`jobs.retry_interrupted`), the queued one ran, every result reached the phone once. Answers (lost,
/// duplicated).
async fn nothing_lost(env: &Env, d: &Daemon, tg: &FakeTelegram, a: &Around) -> (usize, usize) {
    let mcp = Mcp::connect(env).await;
    let j = wait_final(&mcp, &a.running, Duration::from_secs(20)).await;
    assert_eq!(
        (
            j["status"].as_str(),
            j["result_text"].as_str(),
            j["interruptions"].as_i64()
        ),
        (Some("done"), Some("finished after the restart"), Some(1)),
        "{j}"
    );
    let q = wait_final(&mcp, &a.queued, Duration::from_secs(30)).await;
    assert_eq!(q["status"], "done", "the queued job survives: {q}");
    let ids = [a.before.clone(), a.running.clone(), a.queued.clone()];
    all_delivered(tg, &ids, Duration::from_secs(30)).await;
    // Nothing is left to send, so no later sweep can add a duplicate.
    settled(env, d).await;
    deliveries(tg, &ids)
}

/// A daemon with the phone's session S1 and jobs around the failure to come.
async fn daemon_with_jobs_around() -> (FakeTelegram, Env, Daemon, Mcp, Around) {
    let tg = FakeTelegram::start().await;
    let env = Env::new(&tg_config(&tg, &fake_agent("")));
    let d = start(&env);
    phone_sessions(&env, &tg, 1).await;
    let mcp = Mcp::connect(&env).await;
    let around = jobs_around(&mcp).await;
    (tg, env, d, mcp, around)
}

#[tokio::test(flavor = "multi_thread")]
async fn orchestrator_crash_kill_9() {
    let (tg, env, mut d, mcp, around) = daemon_with_jobs_around().await;
    drop(mcp);
    let t0 = Instant::now();
    d.signal(libc::SIGKILL);
    // The supervisor (systemd, here the drill) sees the process end.
    d.wait_exit(Duration::from_secs(10));
    let detected = t0.elapsed();
    assert!(
        std::os::unix::net::UnixStream::connect(env.socket()).is_err(),
        "all operations are blocked while it is down"
    );
    let d2 = start(&env);
    wait_ready(&d2, Duration::from_secs(30));
    let recovered = t0.elapsed() - detected;
    let (lost, duplicated) = nothing_lost(&env, &d2, &tg, &around).await;
    record(Measured {
        key: "orchestrator_crash",
        detected_after: detected,
        recovered_after: recovered,
        detection: "process exit seen by the supervisor (Restart=always)",
        user_saw: "interrupted job ran again and finished; queued job ran; each result once",
        lost,
        duplicated,
        settings: "restart at once (the unit's RestartSec adds to this)",
    });
    assert_eq!((lost, duplicated), (0, 0));
    drop(d2);
}

/// A memory cgroup (v1 or v2) holding the daemon, removed when dropped.
struct MemoryCgroup {
    dir: std::path::PathBuf,
    v2: bool,
}

impl MemoryCgroup {
    fn new(limit: u64) -> MemoryCgroup {
        let name = format!("televibe-drill-{}", std::process::id());
        let v1 = std::path::Path::new("/sys/fs/cgroup/memory");
        let (dir, v2) = if v1.join("memory.limit_in_bytes").exists() {
            (v1.join(&name), false)
        } else {
            let root = std::path::Path::new("/sys/fs/cgroup");
            let controllers =
                std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            assert!(
                controllers.contains("memory"),
                "this drill needs a memory cgroup (v1 /sys/fs/cgroup/memory or v2 with the memory controller) and root"
            );
            (root.join(&name), true)
        };
        std::fs::create_dir_all(&dir).expect("create a memory cgroup (needs root)");
        let cg = MemoryCgroup { dir, v2 };
        if v2 {
            cg.write("memory.max", &limit.to_string());
            cg.write("memory.swap.max", "0");
        } else {
            cg.write("memory.limit_in_bytes", &limit.to_string());
            if cg.dir.join("memory.memsw.limit_in_bytes").exists() {
                cg.write("memory.memsw.limit_in_bytes", &limit.to_string());
            }
        }
        cg
    }

    fn write(&self, file: &str, value: &str) {
        std::fs::write(self.dir.join(file), value)
            .unwrap_or_else(|e| panic!("write {value} to {file}: {e}"));
    }

    fn add(&self, pid: u32) {
        self.write("cgroup.procs", &pid.to_string());
    }

    fn oom_kills(&self) -> u64 {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        std::fs::read_to_string(self.dir.join(file))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_exhaustion_under_a_cgroup_limit() {
    let (tg, env, mut d, mcp, around) = daemon_with_jobs_around().await;
    // systemd's MemoryMax: a limit well above the daemon's needs, below what the leak takes.
    let cgroup = MemoryCgroup::new(384 << 20);
    cgroup.add(d.child.id());
    let t0 = Instant::now();
    mcp.call("debug_exhaust_memory", json!({"max_mib": 4096}))
        .await
        .unwrap();
    drop(mcp);
    let status = d.wait_exit(Duration::from_secs(60));
    let detected = t0.elapsed();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the OOM killer ends it: {status}"
    );
    assert!(cgroup.oom_kills() >= 1, "the cgroup counts the OOM kill");
    drop(cgroup);
    let t1 = Instant::now();
    let d2 = start(&env);
    wait_ready(&d2, Duration::from_secs(30));
    let recovered = t1.elapsed();
    let (lost, duplicated) = nothing_lost(&env, &d2, &tg, &around).await;
    assert!(
        d2.metric("process_resident_memory_bytes")
            .is_some_and(|b| b > 0.0),
        "memory is watched through the process metrics"
    );
    record(Measured {
        key: "memory_exhaustion",
        detected_after: detected,
        recovered_after: recovered,
        detection: "OOM kill in a 384 MiB memory cgroup (SIGKILL), exit seen by the supervisor",
        user_saw: "interrupted job ran again and finished; queued job ran; each result once",
        lost,
        duplicated,
        settings: "memory cgroup limit 384 MiB; detection includes the leak's growth to the limit",
    });
    assert_eq!((lost, duplicated), (0, 0));
    drop(d2);
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_corruption_restored_from_backup() {
    let tg = FakeTelegram::start().await;
    let env = Env::new(&tg_config(
        &tg,
        &format!(
            "{}[store]\nintegrity_check_interval_secs = 1\nread_only_probe_secs = 1\n",
            fake_agent("")
        ),
    ));
    let d = start(&env);
    phone_sessions(&env, &tg, 1).await;
    let mcp = Mcp::connect(&env).await;
    let done = run(&mcp, "S1", "finished before the backup").await;
    wait_final(&mcp, &done, Duration::from_secs(20)).await;
    drop(mcp);
    all_delivered(&tg, std::slice::from_ref(&done), Duration::from_secs(20)).await;
    let out = env.run(&["backup", "now"]);
    assert!(out.status.success(), "{out:?}");
    let t0 = Instant::now();
    damage_live_database(&env).await;
    eventually(Duration::from_secs(30), "the health gauge at 0", || {
        d.metric("televibe_health_check{check=\"database\"}") == Some(0.0)
    });
    let detected = t0.elapsed();
    until(Duration::from_secs(20), "the admin chat told", || {
        tg.messages(USER)
            .iter()
            .any(|m| m.visible.to_lowercase().contains("integrity"))
    })
    .await;
    let told = tg
        .messages(USER)
        .into_iter()
        .rev()
        .find(|m| m.visible.to_lowercase().contains("integrity"))
        .map(|m| m.visible)
        .unwrap_or_default();
    // A corrupt database stays read-only, whatever a probe write would say.
    eventually(Duration::from_secs(10), "read-only mode", || {
        d.metric("televibe_database_read_only") == Some(1.0)
    });
    // Three more probe rounds (each logs "store still read-only") have run, and none lifted it.
    let probes = |d: &Daemon| d.stderr_text().matches("store still read-only").count();
    let seen = probes(&d);
    eventually(Duration::from_secs(20), "three more probe rounds", || {
        probes(&d) >= seen + 3
    });
    assert_eq!(
        d.metric("televibe_database_read_only"),
        Some(1.0),
        "probe writes do not lift read-only mode after a failed integrity check"
    );
    // The runbook: stop, restore the newest verified backup, start, check.
    let t1 = Instant::now();
    assert!(d.stop().success());
    let out = env.run(&["backup", "restore", "latest"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d2 = start(&env);
    wait_ready(&d2, Duration::from_secs(30));
    let recovered = t1.elapsed();
    let mcp = Mcp::connect(&env).await;
    let j = job(&mcp, &done).await;
    assert_eq!(j["status"], "done", "the backed-up result is there: {j}");
    let s = mcp.call("list_sessions", json!({})).await.unwrap();
    assert_eq!(s["sessions"][0]["id"], "S1", "{s}");
    let after = run(&mcp, "S1", "after the restore").await;
    assert_eq!(
        wait_final(&mcp, &after, Duration::from_secs(20)).await["status"],
        "done"
    );
    let ids = [done.clone(), after.clone()];
    all_delivered(&tg, &ids, Duration::from_secs(20)).await;
    let (lost, duplicated) = deliveries(&tg, &ids);
    let first_line = told.lines().next().unwrap_or("").to_string();
    record(Measured {
        key: "sqlite_corruption",
        detected_after: detected,
        recovered_after: recovered,
        detection: "periodic PRAGMA integrity_check; televibe_health_check{check=\"database\"} 0; readiness 503",
        user_saw: &format!("admin chat: {first_line}"),
        lost,
        duplicated,
        settings: "integrity_check_interval_secs = 1, read_only_probe_secs = 1 (it stays read-only); recovery = stop, `televibe backup restore latest`, start",
    });
    assert_eq!((lost, duplicated), (0, 0));
    drop(d2);
}
