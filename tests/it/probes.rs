//! Probes, metrics, logs and the store's boot checks, against the real daemon.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::*;

#[test]
fn live_ready_and_metrics_follow_the_spec() {
    let env = Env::new("");
    let d = env.start();
    assert_eq!(
        d.get("/health/live"),
        (200, r#"{"status":"alive"}"#.to_string())
    );
    let (code, body) = d.get("/health/ready");
    assert_eq!(code, 200, "{body}");
    let ready = json(&body);
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"]["database"], "ok");
    assert_eq!(ready["checks"]["repos"], "ok");
    assert_eq!(ready["checks"]["sandbox"], "ok", "bubblewrap works here");
    assert_eq!(
        ready["checks"]["telegram"], "disabled",
        "no token configured"
    );

    let ct = http_content_type(d.addr(), "/metrics");
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let (code, metrics) = d.get("/metrics");
    assert_eq!(code, 200);
    for name in ["claude_code", "telegram_api", "git_operations"] {
        assert!(
            metrics.contains(&format!(
                "televibe_circuit_breaker_state{{name=\"{name}\"}} 1"
            )),
            "{metrics}"
        );
        assert!(
            metrics.contains(&format!(
                "televibe_circuit_breaker_failures_total{{name=\"{name}\"}} 0"
            )),
            "{metrics}"
        );
    }
    for actor in ["store", "breakers", "http", "janitor", "sessions", "socket"] {
        assert!(
            metrics.contains(&format!(
                "televibe_actor_restarts_total{{actor=\"{actor}\"}} 0"
            )),
            "{metrics}"
        );
    }
    assert!(
        metrics.contains("televibe_health_check{check=\"database\"} 1"),
        "{metrics}"
    );

    promtool_check_metrics(&metrics);
    assert_eq!(d.get("/nope").0, 404);
    assert!(d.stop().success());
}

#[test]
fn readiness_reports_a_missing_repos_directory() {
    let env = Env::new("");
    let d = env.start();
    std::fs::remove_dir(env.root().join("repos")).unwrap();
    let (code, body) = d.get("/health/ready");
    assert_eq!(code, 503, "{body}");
    let ready = json(&body);
    assert_eq!(ready["status"], "not_ready");
    assert_eq!(ready["checks"]["database"], "ok");
    assert!(
        ready["checks"]["repos"]
            .as_str()
            .unwrap()
            .starts_with("failed: "),
        "{body}"
    );
    assert_eq!(
        d.get("/health/live").0,
        200,
        "liveness does not depend on readiness"
    );
    std::fs::create_dir(env.root().join("repos")).unwrap();
    assert_eq!(d.get("/health/ready").0, 200);
}

#[test]
fn readiness_reports_an_unreachable_telegram() {
    // A token with a Bot API URL nothing can listen on (port 0 refuses connections): getMe fails, so not ready.
    let port = 0;
    let env = Env::new(&format!(
        "[telegram]\napi_url = \"http://127.0.0.1:{port}\"\ntoken_file = \"{}/token\"",
        std::env::temp_dir().join("tv-no-such-dir").display()
    ));
    // token_file pointing nowhere is a config error naming the key.
    let out = env.run(&["config", "check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("telegram.token_file"));

    let env = Env::new(&format!(
        "[telegram]\napi_url = \"http://127.0.0.1:{port}\""
    ));
    let d = env.start_with(|c| {
        c.env("TELEVIBE_TELEGRAM__TOKEN", "123456:secret-token-value");
    });
    let (code, body) = d.get("/health/ready");
    assert_eq!(code, 503, "{body}");
    let ready = json(&body);
    assert_eq!(
        ready["checks"]["telegram"], "failed: connection refused",
        "{body}"
    );
    drop(d);
    let log = std::fs::read_to_string(env.orchestrator().join("logs/orchestrator.log")).unwrap();
    assert!(
        !log.contains("secret-token-value"),
        "the token must never be logged"
    );
}

#[test]
fn json_log_lines_have_the_spec_fields() {
    let env = Env::new("");
    let d = env.start();
    assert!(d.stop().success());
    let log = std::fs::read_to_string(env.orchestrator().join("logs/orchestrator.log")).unwrap();
    let lines: Vec<serde_json::Value> = log.lines().map(json).collect();
    assert!(lines.len() >= 3, "{log}");
    for l in &lines {
        for key in [
            "timestamp",
            "level",
            "logger",
            "message",
            "context",
            "trace_id",
            "span_id",
        ] {
            assert!(l.get(key).is_some(), "missing {key} in {l}");
        }
        let ts = l["timestamp"].as_str().unwrap();
        assert!(
            ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[19] == b'.',
            "{ts}"
        );
        assert!(
            ["debug", "info", "warning", "error", "critical"]
                .contains(&l["level"].as_str().unwrap())
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "Daemon ready" && l["logger"] == "televibe.daemon")
    );
    assert!(
        lines
            .iter()
            .any(|l| l["message"].as_str().unwrap().contains("Telegram disabled"))
    );
}

#[test]
fn garbage_state_db_is_refused_with_restore_steps() {
    if !crate::pg::sqlite_only("it writes garbage into the state.db file") {
        return;
    }
    let env = Env::new("");
    std::fs::create_dir_all(env.orchestrator()).unwrap();
    std::fs::write(env.orchestrator().join("state.db"), vec![0x42u8; 16384]).unwrap();
    let mut child = env
        .command(&["serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(30));
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("corrupted") && err.contains("backups") && err.contains("integrity_check"),
        "{err}"
    );
    assert!(
        !env.socket().exists(),
        "no actor may start on a corrupted database"
    );
}

#[test]
fn damaged_pages_are_refused_at_start() {
    if !crate::pg::sqlite_only("it damages the state.db file's pages") {
        return;
    }
    let env = Env::new("");
    let d = env.start();
    assert!(d.stop().success());
    let db = env.orchestrator().join("state.db");
    // Overwrite the middle of the schema's table pages, keeping the header valid.
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 8192, "database has several pages");
    for b in &mut bytes[4096 + 8..4096 + 2048] {
        *b = 0xff;
    }
    std::fs::write(&db, &bytes).unwrap();
    let out = env.run(&["serve"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("corrupted"), "{err}");
}

/// The disk under the database fills up: writes are refused with READ_ONLY, reads go on, readiness says
/// so, and once space is back a probe write lifts the mode.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_turns_the_store_read_only_until_space_returns() {
    if !crate::pg::sqlite_only("it fills the disk under the state.db file") {
        return;
    }
    use serde_json::json;
    let mnt = tempfile::Builder::new()
        .prefix("tvdisk")
        .tempdir_in("/tmp")
        .unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(mnt.path())
        .status()
        .expect("mount(8)");
    assert!(
        status.success(),
        "this drill mounts a small tmpfs (needs root, as CI has)"
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.path().to_path_buf());
    // The daemon's root lives on the small disk (the harness finds it through a symlink).
    const USER: i64 = 4242;
    let tg = crate::fake_telegram::FakeTelegram::start().await;
    let env = Env::new(&format!(
        "[store]\nread_only_probe_secs = 1\n[agent]\ncommand = \"/nonexistent/agent\"\n[telegram]\napi_url = \"{}\"\nallowed_users = [{USER}]\n",
        tg.url()
    ));
    let root = mnt.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::os::unix::fs::symlink(&root, env.root()).unwrap();
    make_repo(&root.join("repos/app"));
    let d = env.start_with(|c| {
        c.env("TELEVIBE_TELEGRAM__TOKEN", crate::fake_telegram::TOKEN);
    });
    // The user has talked to the bot, so it may write to them.
    tg.send_text(USER, "/help");
    until(Duration::from_secs(20), "the bot answers", || {
        !tg.messages(USER).is_empty()
    })
    .await;
    let mcp = Mcp::connect(&env).await;
    mcp.call("register_project", json!({"path": "app"}))
        .await
        .unwrap();
    mcp.call("create_session", json!({"project_id": "app"}))
        .await
        .unwrap();
    // Fill the disk.
    let filler = mnt.path().join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    // Writes go on while SQLite still has room in pages it already holds; then one fails for good.
    let big = "x".repeat(10_000);
    let mut refused = None;
    for _ in 0..500 {
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
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let err = refused.expect("a write fails once the disk is full");
    assert!(err.message.contains("read-only mode"), "{}", err.message);
    mcp.refused(
        "run_instruction",
        json!({"session_id": "S1", "instruction": "more"}),
        "READ_ONLY",
    )
    .await;
    assert_eq!(
        mcp.call("list_projects", json!({})).await.unwrap()["projects"][0]["id"],
        "app",
        "reads keep working"
    );
    let (code, body) = d.get("/health/ready");
    assert_eq!(code, 503, "{body}");
    assert!(
        json(&body)["checks"]["database"]
            .as_str()
            .unwrap()
            .starts_with("failed: read-only mode"),
        "{body}"
    );
    assert_eq!(d.metric("televibe_database_read_only "), Some(1.0));
    // The metrics name the failure: a full disk, not corruption (the integrity signal stays 1, so
    // `DatabaseDiskFull` fires and `DatabaseCorruption` does not).
    assert_eq!(
        d.metric("televibe_health_check{check=\"database\"}"),
        Some(1.0),
        "a full disk is not corruption"
    );
    assert_eq!(
        d.metric("televibe_database_read_only_reason{reason=\"disk_full\"}"),
        Some(1.0)
    );
    assert_eq!(
        d.metric("televibe_database_read_only_reason{reason=\"integrity\"}"),
        Some(0.0)
    );
    // The user hears of it on Telegram, once.
    until(
        Duration::from_secs(20),
        "the read-only notice on Telegram",
        || {
            tg.messages(USER).iter().any(|m| {
                m.visible
                    .contains("System in read-only mode. Writes disabled.")
            })
        },
    )
    .await;
    // Space comes back: the probe write lifts read-only mode.
    std::fs::remove_file(&filler).unwrap();
    eventually(Duration::from_secs(15), "ready again", || {
        d.get("/health/ready").0 == 200
    });
    assert_eq!(
        d.metric("televibe_database_read_only_reason{reason=\"disk_full\"}"),
        Some(0.0),
        "the cause is cleared with the mode"
    );
    mcp.call(
        "run_instruction",
        json!({"session_id": "S1", "instruction": "after the disk was freed"}),
    )
    .await
    .unwrap();
    // A second notice would still be queued: wait until nothing is left to send.
    settled(&env, &d).await;
    assert_eq!(
        tg.messages(USER)
            .iter()
            .filter(|m| m.visible.contains("read-only mode"))
            .count(),
        1,
        "told once"
    );
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_says_shutting_down_while_the_daemon_stops() {
    // The test hook keeps the daemon serving its probes for 3 s after it began stopping.
    let env = Env::new("[debug]\nshutdown_hold_ms = 3000\n");
    let mut d = env.start();
    let addr = d.addr();
    assert_eq!(http_get(addr, "/health/ready").unwrap().0, 200);
    d.signal(libc::SIGTERM);
    let mut seen = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        match http_get(addr, "/health/ready") {
            Ok((503, body)) if body.contains("shutting down") => {
                seen = Some(body);
                break;
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("the server went before readiness said so: {e}"),
        }
    }
    let body = seen.expect("readiness answered 503 shutting down before the server went");
    assert_eq!(json(&body)["status"], "not_ready", "{body}");
    assert!(d.wait_exit(Duration::from_secs(30)).success());
}

/// Reads until the server closes the connection; panics if it is still open after `limit`.
fn closed_within(s: &mut std::net::TcpStream, limit: Duration, what: &str) -> String {
    use std::io::Read;
    s.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{what}: still open after {limit:?} ({e})"),
    }
    String::from_utf8_lossy(&got).to_string()
}

#[test]
fn slow_and_surplus_http_connections_are_closed() {
    let env = Env::new(
        "[http]\nlisten = \"127.0.0.1:0\"\nheader_read_timeout_secs = 2\nmax_connections = 2\n",
    );
    let d = env.start();
    // Two connections take both slots; a third is closed at once, without an answer. The probes the harness made
    // may still hold a slot for a moment: then the second connection is the one refused (closed before the
    // third), and the round is tried again.
    let open = |s: &std::net::TcpStream| {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        let still = matches!(std::io::Read::read(&mut &*s, &mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        s.set_nonblocking(false).unwrap();
        still
    };
    let mut round = None;
    for _ in 0..20 {
        let mut slow = std::net::TcpStream::connect(d.addr()).unwrap();
        slow.write_all(b"GET /health/li").unwrap();
        let idle = std::net::TcpStream::connect(d.addr()).unwrap();
        let mut surplus = std::net::TcpStream::connect(d.addr()).unwrap();
        let _ = surplus.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n");
        // Were it served, it would answer 200 whatever the timing; it is closed instead.
        let answer = closed_within(
            &mut surplus,
            Duration::from_secs(10),
            "the surplus connection",
        );
        assert!(!answer.contains("200"), "{answer}");
        if open(&slow) && open(&idle) {
            round = Some((slow, idle));
            break;
        }
        drop((slow, idle));
        std::thread::sleep(Duration::from_millis(100));
    }
    let (mut slow, mut idle) = round.expect("both slots were taken by this test's connections");
    // Half a request line never completes: the server hangs up after the header timeout.
    let answer = closed_within(&mut slow, Duration::from_secs(15), "the slow connection");
    assert!(!answer.contains(" 200 "), "{answer}");
    closed_within(&mut idle, Duration::from_secs(15), "the idle connection");
    // The slots are free again.
    eventually(Duration::from_secs(5), "a probe is served again", || {
        http_get(d.addr(), "/health/live").is_ok_and(|r| r.0 == 200)
    });
    drop(d);
}

/// A fresh daemon, before any project exists, lists every family of the spec (and those its alerts read)
/// with HELP and TYPE, the process's own, and promtool finds nothing to complain about.
#[test]
fn a_fresh_daemon_exports_every_spec_family() {
    let env = Env::new("");
    let d = env.start();
    let (code, body) = d.get("/metrics");
    assert_eq!(code, 200);
    for (name, kind) in [
        ("televibe_sessions_total", "counter"),
        ("televibe_sessions_active", "gauge"),
        ("televibe_session_duration_seconds", "histogram"),
        ("televibe_jobs_total", "counter"),
        ("televibe_jobs_active", "gauge"),
        ("televibe_job_duration_seconds", "histogram"),
        ("televibe_job_queue_size", "gauge"),
        ("televibe_approvals_total", "counter"),
        ("televibe_approvals_pending", "gauge"),
        ("televibe_approval_response_seconds", "histogram"),
        ("televibe_events_total", "counter"),
        ("televibe_event_delivery_seconds", "histogram"),
        ("televibe_circuit_breaker_state", "gauge"),
        ("televibe_circuit_breaker_failures_total", "counter"),
        ("televibe_workspace_disk_bytes", "gauge"),
        ("televibe_log_file_bytes", "gauge"),
        ("televibe_health_check", "gauge"),
        ("televibe_job_start_timestamp", "gauge"),
        ("televibe_session_last_activity_timestamp", "gauge"),
        ("televibe_database_read_only", "gauge"),
        ("televibe_backup_last_success_timestamp", "gauge"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_cpu_seconds_total", "counter"),
        ("process_open_fds", "gauge"),
    ] {
        assert!(
            body.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} {kind} missing:\n{body}"
        );
        assert!(
            body.contains(&format!("# HELP {name} ")),
            "{name} has no HELP"
        );
    }
    // Health is measured on a timer, not only when someone asks for readiness.
    eventually(Duration::from_secs(10), "the repos health gauge", || {
        d.metric("televibe_health_check{check=\"repos\"}").is_some()
    });
    promtool_check_metrics(&body);
    drop(d);
}

/// `promtool check metrics` on an exposition: it must find nothing to complain about.
fn promtool_check_metrics(text: &str) {
    let promtool = required_tool(
        "promtool",
        "install the Debian package prometheus (scripts/test does)",
    );
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
