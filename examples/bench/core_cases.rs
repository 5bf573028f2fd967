//! Cases through the MCP socket: agent spawn latency, MCP round trips, create_session on a large
//! repository, idle cost with 50 sessions, a large store (on SQLite and on PostgreSQL), and hung-job
//! detection.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::agent::now_ns;
use crate::daemon::{Setup, cpu_of, make_repo};
use crate::pg::PgCluster;
use crate::report::{Figure, Samples, mb, ms};
use crate::tg_cases::{bench_agent, marks};

/// `run_instruction` → the agent process running (its first instruction), against a bare spawn of the
/// same program.
pub async fn spawn(bin: &Path) -> Vec<Figure> {
    let s = Setup::new(bin, &bench_agent());
    make_repo(&s.root().join("repos/app"), 0);
    let d = s.start(None);
    let mcp = s.session().await;
    let (mut via, mut bare) = (Vec::new(), Vec::new());
    for _ in 0..21 {
        let t0 = now_ns();
        let q = mcp
            .call(
                "run_instruction",
                json!({"session_id": "S1", "instruction": "spawn", "wait": true}),
            )
            .await
            .unwrap();
        let id = q["id"].as_str().unwrap();
        if let Some((_, ns)) = marks(&s.root(), id).into_iter().find(|(w, _)| w == "spawn") {
            via.push((ns - t0) as f64 / 1e6);
        }
        let t0 = now_ns();
        let out = Command::new(std::env::current_exe().unwrap())
            .env("TVBENCH_AGENT", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        if let Some(ns) = err
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse::<u128>().ok())
        {
            bare.push((ns - t0) as f64 / 1e6);
        }
    }
    let sandbox = s.command(&["config", "check"]).output().unwrap();
    let sandbox = String::from_utf8_lossy(&sandbox.stdout)
        .lines()
        .find(|l| l.starts_with("sandbox ="))
        .unwrap_or("sandbox = ?")
        .to_string();
    mcp.close().await;
    drop(d);
    let (via, bare) = (
        Samples::ms(via[1..].to_vec()),
        Samples::ms(bare[1..].to_vec()),
    );
    vec![
        Figure::new(
            &format!("`run_instruction` → agent spawned ({sandbox})"),
            via.show(),
            format!("bare spawn {}", bare.show()),
        )
        .data(json!({"run_instruction": via.json(), "bare": bare.json()})),
    ]
}

/// `list_projects` through `televibe mcp` (the stdio bridge any MCP client uses), and straight on the socket.
pub async fn mcp_round_trip(bin: &Path) -> Vec<Figure> {
    use rmcp::ServiceExt;
    let s = Setup::new(bin, "");
    let d = s.start(None);
    let mut bridge = tokio::process::Command::from(s.command(&["mcp"]))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let io = (bridge.stdout.take().unwrap(), bridge.stdin.take().unwrap());
    let client = ().serve(io).await.unwrap();
    let call = || {
        let mut p = rmcp::model::CallToolRequestParams::new("list_projects");
        p.arguments = Some(Default::default());
        client.call_tool(p)
    };
    let mut via = Vec::new();
    for i in 0..550 {
        let t = Instant::now();
        call().await.unwrap();
        if i >= 50 {
            via.push(t.elapsed());
        }
    }
    let _ = client.cancel().await;
    let direct_client = s.mcp().await;
    let mut direct = Vec::new();
    for i in 0..550 {
        let t = Instant::now();
        direct_client
            .call("list_projects", json!({}))
            .await
            .unwrap();
        if i >= 50 {
            direct.push(t.elapsed());
        }
    }
    direct_client.close().await;
    drop(d);
    let (via, direct) = (Samples::of(&via), Samples::of(&direct));
    vec![
        Figure::new(
            "MCP round trip through `televibe mcp` (`list_projects`)",
            via.show(),
            format!("straight on the socket {}", direct.show()),
        )
        .target("p99 ≤ 2 ms", via.p99() <= 2.0)
        .data(json!({"bridge": via.json(), "socket": direct.json()})),
    ]
}

/// `create_session` on a repository of 10,000 files against `git worktree add` of the same repository.
pub async fn create_session(bin: &Path) -> Vec<Figure> {
    let s = Setup::new(bin, "[sessions]\nmax_per_project = 20\nmax_total = 20\n");
    let repo = s.root().join("repos/big");
    make_repo(&repo, 10_000);
    let d = s.start(None);
    let mcp = s.mcp().await;
    mcp.call("register_project", json!({"path": "big"}))
        .await
        .unwrap();
    let (mut ours, mut git) = (Vec::new(), Vec::new());
    let plain = s.dir.path().join("plain");
    for i in 0..6 {
        let t = Instant::now();
        mcp.call("create_session", json!({"project_id": "big"}))
            .await
            .unwrap();
        ours.push(t.elapsed());
        let t = Instant::now();
        let out = Command::new("git")
            .args(["worktree", "add", "-q", "-b", &format!("plain{i}")])
            .arg(plain.join(format!("w{i}")))
            .current_dir(&repo)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        git.push(t.elapsed());
    }
    mcp.close().await;
    drop(d);
    let (ours, git) = (Samples::of(&ours[1..]), Samples::of(&git[1..]));
    let ratio = ours.p50() / git.p50();
    vec![
        Figure::new(
            "`create_session`, repository of 10,000 files",
            format!("{} ({ratio:.2}×)", ours.show()),
            format!("`git worktree add` {}", git.show()),
        )
        .target("≤ 1.1× git", ratio <= 1.1)
        .data(
            json!({"create_session": ours.json(), "git_worktree_add": git.json(), "ratio": ratio}),
        ),
    ]
}

/// Resident memory and CPU of a daemon with 50 open sessions, idle, its Telegram poller on.
pub async fn idle(bin: &Path) -> Vec<Figure> {
    let tg = crate::fake_telegram::FakeTelegram::start().await;
    let s = Setup::new(
        bin,
        &format!(
            "{}[telegram]\napi_url = \"{}\"\nallowed_users = [5001]\n[sessions]\nmax_per_project = 50\nmax_total = 50\n",
            bench_agent(),
            tg.url()
        ),
    );
    make_repo(&s.root().join("repos/app"), 0);
    let d = s.start(Some(crate::fake_telegram::TOKEN));
    let mcp = s.mcp().await;
    mcp.call("register_project", json!({"path": "app"}))
        .await
        .unwrap();
    for _ in 0..50 {
        mcp.call("create_session", json!({"project_id": "app"}))
            .await
            .unwrap();
    }
    mcp.close().await;
    // Past the janitor's first pass and the first disk measurement.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let (cpu0, t0) = (d.cpu(), Instant::now());
    tokio::time::sleep(Duration::from_secs(20)).await;
    let cpu = (d.cpu() - cpu0).as_secs_f64() / t0.elapsed().as_secs_f64() * 100.0;
    let (rss, _) = d.rss();
    let threads = d.threads();
    let detail = d.memory_detail();
    eprintln!("    memory: {detail}");
    if std::env::var_os("TVBENCH_SMAPS").is_some() {
        for (kb, name) in d.top_mappings(12) {
            eprintln!("      {kb:>7} kB {name}");
        }
    }
    drop(d);
    // Reference: a process that does nothing (this benchmark's own agent, waiting for input).
    let mut idle_child = Command::new(std::env::current_exe().unwrap())
        .env("TVBENCH_AGENT", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", idle_child.id())).unwrap_or_default();
    let base = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024;
    let _ = cpu_of(idle_child.id() as i32);
    let _ = idle_child.kill();
    let _ = idle_child.wait();
    vec![
        Figure::new(
            "idle RSS, 50 open sessions, Telegram polling",
            format!("{} ({threads} threads)", mb(rss)),
            format!("a Rust process doing nothing {}", mb(base)),
        )
        .target("≤ 25 MB", rss <= 25_000_000)
        .data(json!({"rss": rss, "threads": threads, "reference_rss": base, "status": detail})),
        Figure::new(
            "idle CPU, 50 open sessions",
            format!("{cpu:.2} % of one core"),
            "-".into(),
        )
        .data(json!({"cpu_percent": cpu})),
    ]
}

/// 100,000 finished jobs and 1,000,000 delivered events: start → ready, kill -9 → ready, list_jobs pages.
pub async fn large_store(bin: &Path) -> Vec<Figure> {
    large_store_on(bin, None).await
}

/// The same on PostgreSQL: a server of its own, with PostgreSQL's default durability.
pub async fn large_store_pg(bin: &Path) -> Vec<Figure> {
    let pg = PgCluster::start_with(true);
    large_store_on(bin, Some(&pg)).await
}

async fn large_store_on(bin: &Path, pg: Option<&PgCluster>) -> Vec<Figure> {
    let store = pg.map(|pg| pg.url());
    let extra = store
        .as_ref()
        .map(|url| format!("[store]\nurl = \"{url}\"\n"))
        .unwrap_or_default();
    let s = Setup::new(bin, &extra);
    make_repo(&s.root().join("repos/app"), 0);
    // On PostgreSQL the first start makes the schema, which the rows below go into.
    let mut d = s.start(None);
    let mcp = s.session().await;
    mcp.close().await;
    d.stop();
    let db = s.root().join("orchestrator/state.db");
    let (size, engine) = match &store {
        None => {
            fill(&db).await;
            (std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0), "")
        }
        Some(url) => (fill_pg(url).await, ", PostgreSQL"),
    };
    let mut d = s.spawn(None);
    let cold = d.wait_ready(Duration::from_secs(120)).unwrap();
    d.kill9();
    let restarted = Instant::now();
    let mut d = s.spawn(None);
    let after_kill = d.wait_ready(Duration::from_secs(120)).unwrap();
    // The backup missed while it was stopped runs at start (SQLite: PostgreSQL's backups are the
    // operator's), and the full integrity check a minute after: both are let finish, so they do not weigh
    // on the figures below (they are start-up work, not load).
    let backups = s.root().join("orchestrator/backups");
    let end = Instant::now() + Duration::from_secs(120);
    while store.is_none()
        && Instant::now() < end
        && !std::fs::read_dir(&backups)
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".db.gz"))
            })
            .unwrap_or(false)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep_until((restarted + Duration::from_secs(66)).into()).await;
    // list_jobs, page by page from the newest.
    let mcp = s.mcp().await;
    let mut pages = Vec::new();
    let mut before: Option<String> = None;
    for _ in 0..300 {
        let mut args = json!({"limit": 50});
        if let Some(b) = &before {
            args["before"] = json!(b);
        }
        let t = Instant::now();
        let page = mcp.call("list_jobs", args).await.unwrap();
        pages.push(t.elapsed());
        before = page["next_before"].as_str().map(str::to_string);
    }
    let mut by_session = Vec::new();
    for _ in 0..100 {
        let t = Instant::now();
        mcp.call(
            "list_jobs",
            json!({"session_id": "S1", "status": "done", "limit": 50}),
        )
        .await
        .unwrap();
        by_session.push(t.elapsed());
    }
    mcp.close().await;
    drop(d);
    let (pages, by_session) = (Samples::of(&pages), Samples::of(&by_session));
    let secs = |d: Duration| ms(d.as_secs_f64() * 1000.0);
    vec![
        Figure::new(
            &format!("start → ready, 100k jobs and 1M events{engine}"),
            format!("{} (database {})", secs(cold), mb(size)),
            "-".into(),
        )
        .target("≤ 1 s", cold <= Duration::from_secs(1))
        .data(json!({"ms": cold.as_secs_f64() * 1000.0, "db_bytes": size})),
        Figure::new(
            &format!("kill -9 → ready, same database{engine}"),
            secs(after_kill),
            "-".into(),
        )
        .target("≤ 1 s", after_kill <= Duration::from_secs(1))
        .data(json!({"ms": after_kill.as_secs_f64() * 1000.0})),
        Figure::new(
            &format!("`list_jobs` page of 50 (300 pages from the newest){engine}"),
            pages.show(),
            format!("one session, status done: {}", by_session.show()),
        )
        .target("p99 ≤ 5 ms", pages.p99() <= 5.0 && by_session.p99() <= 5.0)
        .data(json!({"pages": pages.json(), "by_session": by_session.json()})),
    ]
}

/// Writes 100,000 finished jobs (in session S1) and 1,000,000 delivered events into a stopped daemon's
/// database, in one transaction.
async fn fill(db: &Path) {
    use sea_orm::{ConnectionTrait, Database};
    let conn = Database::connect(format!("sqlite://{}?mode=rw", db.display()))
        .await
        .unwrap();
    let now = chrono::Utc::now();
    for sql in [
        "BEGIN",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000) \
         INSERT INTO jobs (id, seq, session_id, instruction, status, queued_at, started_at, finished_at, \
                           num_turns, result_text) \
         SELECT printf('%08x-0000-4000-8000-%012x', x, x), x + 1000, 'S1', 'benchmark history ' || x, \
                'done', ?1, ?1, ?1, 1, 'ok' FROM c",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000) \
         INSERT INTO events (event_type, project_id, session_id, job_id, payload, created_at, delivered_at) \
         SELECT 'job.tool_started', 'app', 'S1', printf('%08x-0000-4000-8000-%012x', x / 10 + 1, x / 10 + 1), \
                '{\"tool\":\"Bash\",\"target\":\"ls\",\"tool_use_id\":\"t' || x || '\"}', ?1, ?1 FROM c",
        "COMMIT",
    ] {
        let stmt = sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Sqlite,
            sql,
            if sql.contains("?1") {
                vec![now.into()]
            } else {
                vec![]
            },
        );
        conn.execute_raw(stmt).await.unwrap();
    }
    conn.close().await.unwrap();
}

/// The same rows into a stopped daemon's PostgreSQL database, in one transaction, then `VACUUM ANALYZE`
/// as autovacuum would have done on a database that grew to this size; answers the database's size.
async fn fill_pg(url: &str) -> u64 {
    use sea_orm::{ConnectionTrait, Database, TransactionTrait};
    let conn = Database::connect(url).await.unwrap();
    let tx = conn.begin().await.unwrap();
    for sql in [
        "INSERT INTO jobs (id, seq, session_id, instruction, status, queued_at, started_at, finished_at, \
                           num_turns, result_text) \
         SELECT lpad(to_hex(x), 8, '0') || '-0000-4000-8000-' || lpad(to_hex(x), 12, '0'), x + 1000, 'S1', \
                'benchmark history ' || x, 'done', now(), now(), now(), 1, 'ok' \
         FROM generate_series(1, 100000) AS x",
        "INSERT INTO events (event_type, project_id, session_id, job_id, payload, created_at, delivered_at) \
         SELECT 'job.tool_started', 'app', 'S1', \
                lpad(to_hex(x / 10 + 1), 8, '0') || '-0000-4000-8000-' || lpad(to_hex(x / 10 + 1), 12, '0'), \
                '{\"tool\":\"Bash\",\"target\":\"ls\",\"tool_use_id\":\"t' || x || '\"}', now(), now() \
         FROM generate_series(1, 1000000) AS x",
    ] {
        tx.execute_unprepared(sql).await.unwrap();
    }
    tx.commit().await.unwrap();
    conn.execute_unprepared("VACUUM ANALYZE jobs, events")
        .await
        .unwrap();
    let size = crate::nodes_case::count(&conn, "SELECT pg_database_size(current_database())").await;
    conn.close().await.unwrap();
    size as u64
}

/// A job that goes quiet (no output, no CPU): how long after `jobs.hang_timeout_secs` it is failed `hung`.
pub async fn hang_overshoot(bin: &Path) -> Vec<Figure> {
    const HANG: u64 = 3;
    let s = Setup::new(
        bin,
        &format!(
            "{}[jobs]\nhang_timeout_secs = {HANG}\nkill_grace_secs = 1\n",
            bench_agent()
        ),
    );
    make_repo(&s.root().join("repos/app"), 0);
    let d = s.start(None);
    let mcp = s.session().await;
    let mut over = Vec::new();
    for _ in 0..3 {
        let q = mcp
            .call(
                "run_instruction",
                json!({"session_id": "S1", "instruction": "hang", "wait": true, "timeout_secs": 120}),
            )
            .await
            .unwrap();
        assert_eq!(q["error_type"], "hung", "{q}");
        let id = q["id"].as_str().unwrap();
        let quiet = marks(&s.root(), id)
            .into_iter()
            .find(|(w, _)| w == "quiet")
            .map(|(_, ns)| ns)
            .unwrap();
        let finished = chrono::DateTime::parse_from_rfc3339(q["finished_at"].as_str().unwrap())
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap() as u128;
        over.push((finished as f64 - quiet as f64) / 1e6 - (HANG * 1000) as f64);
    }
    mcp.close().await;
    drop(d);
    let over = Samples::ms(over);
    vec![
        Figure::new(
            &format!("hung-job detection overshoot (hang_timeout_secs = {HANG})"),
            over.show(),
            "-".into(),
        )
        .data(over.json()),
    ]
}
