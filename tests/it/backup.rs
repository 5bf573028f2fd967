//! Backups end to end: a copy taken while jobs write restores every committed row, a corrupted database is
//! brought back with `televibe backup restore latest`, uploads reach a real S3-compatible server on loopback
//! (and its absence costs only the upload), and the schedule fires on its own.

use std::io::BufRead;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Timelike;
use serde_json::{Value, json};

use crate::harness::*;
use crate::jobs::{run, session, wait_final};

const FAKE_AGENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fake-agent.sh");
const MOTO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/.moto-venv/bin/moto_server");

fn cli_json(env: &Env, args: &[&str]) -> Value {
    let out = env.run(args);
    assert!(
        out.status.success(),
        "televibe {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    json(&String::from_utf8_lossy(&out.stdout))
}

/// Row counts of a state database, read the way `backup verify` reads them.
async fn rows(db: &Path) -> Value {
    let c = televibe::store::backup::check_file(db).await.unwrap();
    serde_json::to_value(c.rows).unwrap()
}

async fn job_ids(db: &Path) -> Vec<String> {
    let store = televibe::store::Store::open_read_only(db, Default::default())
        .await
        .unwrap();
    let jobs = store.jobs(None, None, 10_000).await.unwrap();
    store.close().await;
    jobs.into_iter().map(|j| j.id).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_taken_while_jobs_write_restores_every_committed_row() {
    if !crate::pg::sqlite_only(
        "backups copy SQLite's state.db; a PostgreSQL store's backups are the operator's own (pg_dump)",
    ) {
        return;
    }
    let env = Env::new(&format!(
        "[agent]\ncommand = \"{FAKE_AGENT}\"\n[jobs]\nkill_grace_secs = 1\n"
    ));
    let d = env.start();
    let mcp = Mcp::connect(&env).await;
    session(&env, &mcp).await;
    // Chatty jobs write hundreds of events while the copy is taken.
    // A second session holds a job waiting for a person, so the copy has an approval to carry.
    let asking_session = mcp
        .call("create_session", json!({"project_id": "app"}))
        .await
        .unwrap();
    let asking_session = asking_session["id"].as_str().unwrap().to_string();
    let asking = run(&mcp, &asking_session, "ask-approval").await;
    let approval = {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let pending = mcp.call("list_pending_approvals", json!({})).await.unwrap();
            if let Some(id) = pending["approvals"][0]["id"].as_str() {
                break id.to_string();
            }
            assert!(std::time::Instant::now() < deadline, "no approval asked");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let mut before = Vec::new();
    for i in 0..4 {
        before.push(run(&mcp, "S1", &format!("chatty {i}")).await);
    }
    let taken = tokio::task::spawn_blocking({
        let config = env.config();
        move || {
            Command::new(BIN)
                .arg("--config")
                .arg(config)
                .args(["backup", "now", "--json"])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        taken.status.success(),
        "{}",
        String::from_utf8_lossy(&taken.stderr)
    );
    let taken = json(&String::from_utf8_lossy(&taken.stdout));
    assert_eq!(taken["verified"], true, "{taken}");
    let file = PathBuf::from(taken["path"].as_str().unwrap());
    let reported = taken["contents"]["rows"].clone();
    assert_eq!(reported["projects"], 1, "{taken}");
    assert!(reported["jobs"].as_i64().unwrap() >= 4, "{taken}");
    assert!(reported["approvals"].as_i64().unwrap() >= 1, "{taken}");
    mcp.call("deny", json!({"approval_id": approval}))
        .await
        .unwrap();
    let asked = wait_final(&mcp, &asking, Duration::from_secs(30)).await;
    assert!(
        asked["result_text"]
            .as_str()
            .is_some_and(|t| t.contains("deny")),
        "{asked}"
    );
    // A job queued after the backup is what a restore loses.
    let after = run(&mcp, "S1", "after the backup").await;
    for id in before.iter().chain([&after]) {
        wait_final(&mcp, id, Duration::from_secs(60)).await;
    }
    drop(mcp);
    assert!(d.stop().success());

    // Restore into a fresh root: the copy holds exactly what the daemon reported, and every job committed
    // before the backup started.
    let fresh = Env::new("");
    std::fs::create_dir_all(fresh.orchestrator().join("backups")).unwrap();
    let copy = fresh
        .orchestrator()
        .join("backups")
        .join(file.file_name().unwrap());
    std::fs::copy(&file, &copy).unwrap();
    let restored = cli_json(&fresh, &["backup", "restore", "latest", "--json"]);
    assert_eq!(restored["kept_as"], Value::Null, "{restored}");
    let db = fresh.orchestrator().join("state.db");
    assert_eq!(rows(&db).await, reported);
    let jobs = job_ids(&db).await;
    for id in &before {
        assert!(jobs.contains(id), "job {id} missing from {jobs:?}");
    }
    assert!(!jobs.contains(&after));
    assert!(jobs.contains(&asking));
    let store = televibe::store::Store::open_read_only(&db, Default::default())
        .await
        .unwrap();
    let kept = store.approval(&approval).await.unwrap();
    store.close().await;
    let kept = kept.expect("the approval pending at backup time is in the copy");
    assert_eq!(kept.job_id, asking);
    let d2 = fresh.start();
    let mcp = Mcp::connect(&fresh).await;
    let projects = mcp.call("list_projects", json!({})).await.unwrap();
    assert_eq!(projects["projects"][0]["id"], "app", "{projects}");
    let sessions = mcp
        .call("list_sessions", json!({"include_closed": true}))
        .await
        .unwrap();
    let mut ids: Vec<&str> = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    ids.sort();
    assert_eq!(ids, ["S1", "S2"], "{sessions}");
    drop(mcp);
    assert!(d2.stop().success());

    // Restoring over the original root names what is newer than the backup and keeps the old file.
    let back = cli_json(
        &env,
        &["backup", "restore", file.to_str().unwrap(), "--json"],
    );
    assert!(
        back["lost"]["jobs"].as_i64().unwrap() >= 1,
        "the job queued after the backup is reported lost: {back}"
    );
    assert!(
        back["kept_as"]
            .as_str()
            .unwrap()
            .ends_with("state.db.corrupted"),
        "{back}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupted_database_is_restored_with_the_command_the_refusal_names() {
    if !crate::pg::sqlite_only(
        "backups copy SQLite's state.db; a PostgreSQL store's backups are the operator's own (pg_dump)",
    ) {
        return;
    }
    let env = Env::new("");
    let d = env.start();
    let mcp = Mcp::connect(&env).await;
    session(&env, &mcp).await;
    drop(mcp);
    let taken = cli_json(&env, &["backup", "now", "--json"]);
    let reported = taken["contents"]["rows"].clone();
    // While the daemon runs, restore refuses and touches nothing.
    let out = env.run(&["backup", "restore", "latest"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("running"));
    assert!(d.stop().success());

    let db = env.orchestrator().join("state.db");
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 8192);
    for b in &mut bytes[4096 + 8..4096 + 2048] {
        *b = 0xff;
    }
    std::fs::write(&db, &bytes).unwrap();
    let out = env.run(&["serve"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("televibe backup restore latest"), "{err}");

    // An earlier damaged file is never overwritten.
    std::fs::write(env.orchestrator().join("state.db.corrupted"), b"older").unwrap();
    let restored = cli_json(&env, &["backup", "restore", "latest", "--json"]);
    assert!(
        restored["kept_as"]
            .as_str()
            .unwrap()
            .ends_with("state.db.corrupted.1"),
        "{restored}"
    );
    assert_eq!(
        std::fs::read(env.orchestrator().join("state.db.corrupted")).unwrap(),
        b"older"
    );
    assert_eq!(restored["recovered"]["projects"], 1, "{restored}");
    assert_eq!(restored["recovered"]["open_sessions"], 1, "{restored}");
    assert_eq!(rows(&db).await, reported);

    starts_with_s1(&env).await;
}

/// The daemon starts on the root and lists session S1 again; then it stops.
async fn starts_with_s1(env: &Env) {
    let d = env.start();
    let mcp = Mcp::connect(env).await;
    let sessions = mcp.call("list_sessions", json!({})).await.unwrap();
    assert_eq!(sessions["sessions"][0]["id"], "S1", "{sessions}");
    drop(mcp);
    assert!(d.stop().success());
}

/// moto's S3-compatible server on a loopback port, stopped when dropped.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start() -> Moto {
        assert!(
            Path::new(MOTO).is_file(),
            "{MOTO} is missing: run scripts/test, or `python3 -m venv .moto-venv && \
             .moto-venv/bin/pip install 'moto[server]'` (apt-get install python3-venv if venv fails)"
        );
        // Port 0: the server binds a free port itself and names it on stderr (" * Running on http://…:PORT").
        let mut child = Command::new(MOTO)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(port) = line
                    .split("Running on http://127.0.0.1:")
                    .nth(1)
                    .and_then(|p| p.trim().parse::<u16>().ok())
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(port);
                }
                // Keeps reading so that the server never blocks on a full pipe.
            }
        });
        let mut m = Moto { child, port: 0 };
        m.port = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("moto_server named its port within 30 s");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", m.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {} within 30 s",
                m.port
            );
            assert!(
                m.child.try_wait().unwrap().is_none(),
                "moto_server exited at start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        m
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_ahead_log_left_behind_is_set_aside_not_replayed_onto_the_restore() {
    if !crate::pg::sqlite_only(
        "backups copy SQLite's state.db; a PostgreSQL store's backups are the operator's own (pg_dump)",
    ) {
        return;
    }
    // The daemon dies with writes still in its write-ahead log; the operator moves only state.db away
    // (as the spec's runbook reads) and restores. The old log must not be replayed onto the copy.
    let env = Env::new("");
    let d = env.start();
    let mcp = Mcp::connect(&env).await;
    session(&env, &mcp).await;
    let taken = cli_json(&env, &["backup", "now", "--json"]);
    let reported = taken["contents"]["rows"].clone();
    for _ in 0..3 {
        mcp.call("create_session", json!({"project_id": "app"}))
            .await
            .unwrap();
    }
    drop(mcp);
    d.signal(libc::SIGKILL);
    let mut d = d;
    d.wait_exit(Duration::from_secs(5));
    let orchestrator = env.orchestrator();
    assert!(
        orchestrator.join("state.db-wal").exists(),
        "the killed daemon left its write-ahead log"
    );
    std::fs::rename(
        orchestrator.join("state.db"),
        orchestrator.join("moved-by-hand.db"),
    )
    .unwrap();
    let restored = cli_json(&env, &["backup", "restore", "latest", "--json"]);
    assert!(
        restored["kept_as"]
            .as_str()
            .is_some_and(|k| k.ends_with("state.db.corrupted")),
        "{restored}"
    );
    assert!(orchestrator.join("state.db.corrupted-wal").exists());
    assert!(!orchestrator.join("state.db-wal").exists());
    assert_eq!(rows(&orchestrator.join("state.db")).await, reported);
    // While a daemon holds the state (even before its socket answers), restore refuses.
    let d = env.start();
    let out = env.run(&["backup", "restore", "latest"]);
    assert_eq!(out.status.code(), Some(1));
    drop(d);
}

/// `televibe <args>` on `env` with the S3 credentials of moto at `endpoint`; its JSON answer.
fn aws_cli(env: &Env, endpoint: &str, args: &[&str]) -> Value {
    let mut c = env.command(args);
    aws_env(&mut c, endpoint);
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(&String::from_utf8_lossy(&out.stdout))
}

fn aws_env(cmd: &mut Command, endpoint: &str) {
    cmd.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", endpoint);
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_reach_s3_and_a_missing_server_costs_only_the_upload() {
    if !crate::pg::sqlite_only(
        "backups copy SQLite's state.db; a PostgreSQL store's backups are the operator's own (pg_dump)",
    ) {
        return;
    }
    let mut moto = Moto::start();
    let http = reqwest::Client::new();
    let made = http
        .put(format!("{}/tvbackups", moto.url()))
        .send()
        .await
        .unwrap();
    assert!(made.status().is_success(), "{made:?}");
    let env = Env::new("[backup]\nremote = \"s3://tvbackups/televibe/backups\"\n");
    let endpoint = moto.url();
    let d = env.start_with(|c| aws_env(c, &endpoint));
    let cli = |args: &[&str]| aws_cli(&env, &endpoint, args);
    let up = cli(&["backup", "now", "--json"]);
    assert_eq!(up["remote"]["ok"], true, "{up}");
    let file = up["file"].as_str().unwrap().to_string();
    let listing = http
        .get(format!("{}/tvbackups?list-type=2", moto.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        listing.contains(&format!("<Key>televibe/backups/{file}</Key>")),
        "{listing}"
    );
    // What the server holds is the verified backup: another machine with only the remote restores it,
    // and gets the rows the backup reported.
    let elsewhere = Env::new("[backup]\nremote = \"s3://tvbackups/televibe/backups\"\n");
    let restored = aws_cli(
        &elsewhere,
        &endpoint,
        &["backup", "restore", &format!("remote:{file}"), "--json"],
    );
    assert_eq!(
        restored["recovered"]["rows"], up["contents"]["rows"],
        "{restored}"
    );
    assert_eq!(
        rows(&elsewhere.orchestrator().join("state.db")).await,
        up["contents"]["rows"]
    );
    let list = cli(&["backup", "list", "--json"]);
    let row = list["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["file"] == file.as_str())
        .unwrap_or_else(|| panic!("{file} not listed: {list}"))
        .clone();
    assert_eq!(row["local"], true, "{row}");
    assert_eq!(row["remote"], true, "{row}");

    moto.stop();
    let down = cli(&["backup", "now", "--json"]);
    assert_eq!(down["verified"], true, "{down}");
    assert_eq!(down["remote"]["ok"], false, "{down}");
    assert!(Path::new(down["path"].as_str().unwrap()).is_file());
    assert!(
        d.metric("televibe_backups_total{result=\"remote_failure\"}")
            .unwrap()
            >= 1.0
    );
    assert!(
        d.metric("televibe_backups_total{result=\"success\"}")
            .unwrap()
            >= 2.0
    );
    assert!(d.metric("televibe_backup_bytes").unwrap() > 0.0);
    // Three failed attempts opened the uploads' own breaker; the operator can close it by hand.
    assert_eq!(
        d.metric("televibe_circuit_breaker_state{name=\"backup_remote\"}"),
        Some(0.0)
    );
    let reset = cli_json(
        &env,
        &["admin", "breakers", "reset", "backup_remote", "--json"],
    );
    assert_eq!(reset["state"], "closed", "{reset}");
    assert_eq!(
        d.metric("televibe_circuit_breaker_state{name=\"backup_remote\"}"),
        Some(1.0)
    );
    // The admin chat is told through the outbox like any other notice.
    let store = env.store_read_only().await;
    assert!(store.reader_count_events("backup.failed").await.unwrap() >= 1);
    store.close().await;
    assert!(d.stop().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_backup_runs_and_is_listed() {
    if !crate::pg::sqlite_only(
        "backups copy SQLite's state.db; a PostgreSQL store's backups are the operator's own (pg_dump)",
    ) {
        return;
    }
    let env = Env::new("[backup]\nschedule = \"* * * * *\"\n");
    // Shift the scheduler's clock to second 50 of a minute, so the next scheduled minute is 10 s away.
    let offset = (110 - i64::from(chrono::Utc::now().second())) % 60;
    let d = env.start_with(|c| {
        c.env(
            "TELEVIBE_DEBUG__BACKUP_CLOCK_OFFSET_SECS",
            offset.to_string(),
        );
    });
    let names = || -> Vec<String> {
        let list = cli_json(&env, &["backup", "list", "--json"]);
        list["backups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["file"].as_str().unwrap().to_string())
            .collect()
    };
    // The first run is the missed one (no backup existed); the scheduled one lands on second 00.
    eventually(Duration::from_secs(40), "a backup on the minute", || {
        names().iter().any(|n| n.ends_with("-00.db.gz"))
    });
    assert!(names().len() >= 2, "{:?}", names());
    assert!(d.metric("televibe_backup_last_success_timestamp").unwrap() > 0.0);
    assert!(d.stop().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn periodic_integrity_failure_drops_the_health_gauge_and_tells_the_admin_chat() {
    if !crate::pg::sqlite_only("it damages the live state.db file (SQLite's integrity_check)") {
        return;
    }
    let env = Env::new("[store]\nintegrity_check_interval_secs = 1\n");
    let d = env.start();
    assert_eq!(
        d.metric("televibe_health_check{check=\"database\"}"),
        Some(1.0)
    );
    assert_eq!(
        d.metric("televibe_database_read_only_reason{reason=\"integrity\"}"),
        Some(0.0)
    );
    damage_live_database(&env).await;
    eventually(Duration::from_secs(20), "the health gauge at 0", || {
        d.metric("televibe_health_check{check=\"database\"}") == Some(0.0)
    });
    // The read-only cause names the integrity failure, not a full disk.
    assert_eq!(
        d.metric("televibe_database_read_only_reason{reason=\"integrity\"}"),
        Some(1.0)
    );
    assert_eq!(
        d.metric("televibe_database_read_only_reason{reason=\"disk_full\"}"),
        Some(0.0)
    );
    assert_eq!(d.metric("televibe_database_read_only "), Some(1.0));
    // The notice is written first, then the store turns read-only and readiness fails.
    eventually(Duration::from_secs(10), "readiness to fail", || {
        d.get("/health/ready").0 == 503
    });
    let store = env.store_read_only().await;
    assert_eq!(
        store
            .reader_count_events("database.corrupted")
            .await
            .unwrap(),
        1
    );
    store.close().await;
    assert!(d.stop().success());
}

/// Open sessions in a state database, read the way `backup verify` counts them.
async fn open_sessions(db: &Path) -> i64 {
    televibe::store::backup::check_file(db)
        .await
        .unwrap()
        .open_sessions
}

/// A root with project `app`, session S1 and a backup of that, the daemon stopped.
async fn backed_up_root() -> Env {
    let env = Env::new("");
    let d = env.start();
    let mcp = Mcp::connect(&env).await;
    session(&env, &mcp).await;
    cli_json(&env, &["backup", "now", "--json"]);
    drop(mcp);
    assert!(d.stop().success());
    env
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_killed_at_any_step_never_leaves_the_next_start_on_an_empty_database() {
    if !crate::pg::sqlite_only(
        "backups copy SQLite's state.db; a PostgreSQL store's backups are the operator's own (pg_dump)",
    ) {
        return;
    }
    let env = backed_up_root().await;
    let db = env.orchestrator().join("state.db");
    // (step, whether every build reaches it). The companions are removed only when the checkpoint left some.
    let steps = [
        ("staged", true),
        ("carried", true),
        ("checkpointed", true),
        ("kept_aside", true),
        ("removed-shm", false),
        ("removed-wal", false),
        ("renamed", true),
    ];
    let mut reached = Vec::new();
    for (step, always) in steps {
        // The live database moves past the backup: one more session, left in the log of a killed daemon.
        let d = env.start();
        let mcp = Mcp::connect(&env).await;
        mcp.call("create_session", json!({"project_id": "app"}))
            .await
            .unwrap();
        drop(mcp);
        let mut d = d;
        d.signal(libc::SIGKILL);
        d.wait_exit(Duration::from_secs(5));
        let before = open_sessions(&db).await;
        assert!(before >= 2, "{step}: {before}");

        let mut restore = env.command(&["backup", "restore", "latest"]);
        restore
            .env("TELEVIBE_DEBUG__STOP_AT", step)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = restore.spawn().unwrap();
        let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        if line.trim() == format!("stopped at {step}") {
            reached.push(step);
            child.kill().unwrap();
        } else {
            assert!(!always, "{step} was not reached: {line}");
        }
        child.wait().unwrap();

        // Whatever the step, state.db is a sound database: the previous one (nothing lost from its log)
        // until the rename, the restored one after it. The next start comes up on it.
        let now = open_sessions(&db).await;
        let renamed = step == "renamed" || !reached.contains(&step);
        assert_eq!(now, if renamed { 1 } else { before }, "{step}");
        let d = env.start();
        let mcp = Mcp::connect(&env).await;
        let sessions = mcp.call("list_sessions", json!({})).await.unwrap();
        assert_eq!(
            sessions["sessions"].as_array().unwrap().len() as i64,
            now,
            "{step}: {sessions}"
        );
        drop(mcp);
        assert!(d.stop().success());
    }
    assert!(reached.len() >= 5, "{reached:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_database_on_a_used_root_is_refused_with_the_way_back() {
    if !crate::pg::sqlite_only(
        "backups copy SQLite's state.db; a PostgreSQL store's backups are the operator's own (pg_dump)",
    ) {
        return;
    }
    let env = backed_up_root().await;
    let orchestrator = env.orchestrator();
    std::fs::rename(
        orchestrator.join("state.db"),
        orchestrator.join("elsewhere.db"),
    )
    .unwrap();
    let out = env.run(&["serve"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("televibe backup restore latest"), "{err}");
    assert!(err.contains("televibe reconstruct"), "{err}");
    assert!(
        !orchestrator.join("state.db").exists(),
        "the refused start created nothing"
    );
    cli_json(&env, &["backup", "restore", "latest", "--json"]);
    starts_with_s1(&env).await;

    // A first start on an empty root still creates its database; once a daemon ran there (its log is
    // all it left), a lost database is refused too.
    let fresh = Env::new("");
    let d = fresh.start();
    assert!(fresh.orchestrator().join("state.db").exists());
    assert!(d.stop().success());
    for f in ["state.db", "state.db-wal", "state.db-shm"] {
        let _ = std::fs::remove_file(fresh.orchestrator().join(f));
    }
    let out = fresh.run(&["serve"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("orchestrator.log"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_is_restored_from_the_remote_alone() {
    if !crate::pg::sqlite_only(
        "backups copy SQLite's state.db; a PostgreSQL store's backups are the operator's own (pg_dump)",
    ) {
        return;
    }
    let remote = tempfile::tempdir().unwrap();
    let env = Env::new(&format!(
        "[backup]\nremote = \"file://{}\"\n",
        remote.path().display()
    ));
    let d = env.start();
    let mcp = Mcp::connect(&env).await;
    session(&env, &mcp).await;
    drop(mcp);
    let taken = cli_json(&env, &["backup", "now", "--json"]);
    assert_eq!(taken["remote"]["ok"], true, "{taken}");
    let file = taken["file"].as_str().unwrap().to_string();
    assert!(d.stop().success());
    // The remote copy is the backup itself: it decompresses to a sound database with the same rows.
    let copy = remote.path().join(&file);
    let unpacked = env.dir.path().join("from-remote.db");
    televibe::backup::decompress(&copy, &unpacked).unwrap();
    assert_eq!(rows(&unpacked).await, taken["contents"]["rows"]);

    // The machine lost its disk: no local backup, no database. The remote alone brings it back.
    std::fs::remove_dir_all(env.orchestrator().join("backups")).unwrap();
    for f in ["state.db", "state.db-wal", "state.db-shm"] {
        let _ = std::fs::remove_file(env.orchestrator().join(f));
    }
    let out = env.run(&["backup", "restore", "latest"]);
    assert_eq!(out.status.code(), Some(1), "no local backup named latest");
    let restored = cli_json(&env, &["backup", "restore", "remote:latest", "--json"]);
    assert_eq!(restored["recovered"]["open_sessions"], 1, "{restored}");
    assert!(
        env.orchestrator().join("backups").join(&file).is_file(),
        "the fetched backup is kept locally"
    );
    starts_with_s1(&env).await;
    // A name the remote does not hold is refused, and nothing changes.
    let before = std::fs::read(env.orchestrator().join("state.db")).unwrap();
    let out = env.run(&[
        "backup",
        "restore",
        "remote:state-2001-01-01T00-00-00.db.gz",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        std::fs::read(env.orchestrator().join("state.db")).unwrap(),
        before
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_of_an_older_schema_is_restored_and_migrated_at_start() {
    if !crate::pg::sqlite_only(
        "backups copy SQLite's state.db; a PostgreSQL store's backups are the operator's own (pg_dump)",
    ) {
        return;
    }
    use migrations::MigratorTrait;
    use migrations::sea_orm::ConnectionTrait;
    let env = Env::new("");
    make_repo(&env.root().join("repos/app"));
    // A database as the first schema wrote it: one project, none of the later tables or columns.
    let old = env.dir.path().join("old.db");
    let db = migrations::sea_orm::Database::connect(format!("sqlite://{}?mode=rwc", old.display()))
        .await
        .unwrap();
    migrations::Migrator::up(&db, Some(1)).await.unwrap();
    db.execute_unprepared(&format!(
        "INSERT INTO projects (id, name, repo_path, default_branch, created_at) \
         VALUES ('app', 'app', '{}', 'main', '2026-11-29 00:00:00+00:00')",
        env.root().join("repos/app").display()
    ))
    .await
    .unwrap();
    db.close().await.unwrap();
    let backups = env.orchestrator().join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    let gz = backups.join("state-2026-11-30T00-00-00.db.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::default(),
    );
    std::io::copy(&mut std::fs::File::open(&old).unwrap(), &mut enc).unwrap();
    enc.finish().unwrap();

    let restored = cli_json(&env, &["backup", "restore", "latest", "--json"]);
    assert_eq!(restored["recovered"]["projects"], 1, "{restored}");
    // The start applies the later migrations; the project is there and sessions (a later schema) work.
    let d = env.start();
    let mcp = Mcp::connect(&env).await;
    let projects = mcp.call("list_projects", json!({})).await.unwrap();
    assert_eq!(projects["projects"][0]["id"], "app", "{projects}");
    let s = mcp
        .call("create_session", json!({"project_id": "app"}))
        .await
        .unwrap();
    assert_eq!(s["id"], "S1", "{s}");
    drop(mcp);
    assert!(d.stop().success());
    let store = env.store_read_only().await;
    assert!(
        store
            .table_names()
            .await
            .unwrap()
            .iter()
            .any(|t| t == "session_grants"),
        "the later migrations ran"
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_running_when_the_backup_was_taken_is_not_run_again_after_a_restore() {
    if !crate::pg::sqlite_only(
        "backups copy SQLite's state.db; a PostgreSQL store's backups are the operator's own (pg_dump)",
    ) {
        return;
    }
    let env = Env::new(&format!(
        "[agent]\ncommand = \"{FAKE_AGENT}\"\n[jobs]\nkill_grace_secs = 1\n"
    ));
    let d = env.start();
    let mcp = Mcp::connect(&env).await;
    session(&env, &mcp).await;
    let job = run(&mcp, "S1", "hang").await;
    crate::jobs::wait_status(&mcp, &job, Duration::from_secs(20), |s| s == "running").await;
    drop(mcp);
    cli_json(&env, &["backup", "now", "--json"]);
    assert!(d.stop().success());
    cli_json(&env, &["backup", "restore", "latest", "--json"]);
    // The backup cannot tell whether the job finished after it was taken: it is not run a second time.
    let d = env.start();
    let mcp = Mcp::connect(&env).await;
    let j = wait_final(&mcp, &job, Duration::from_secs(20)).await;
    assert_eq!(
        (j["status"].as_str(), j["error_type"].as_str()),
        (Some("failed"), Some("orchestrator_restart")),
        "{j}"
    );
    assert!(
        j["error"]
            .as_str()
            .unwrap()
            .contains("restored from a backup"),
        "{j}"
    );
    drop(mcp);
    drop(d);
}
