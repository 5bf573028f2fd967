//! What one node and two nodes hold: quick jobs (the benchmark's own agent, answering at once) queued at
//! once through the MCP socket into sessions spread over the nodes, on one node with SQLite, one node with
//! PostgreSQL, and two nodes sharing one PostgreSQL database. Jobs done and outbox events written per
//! second, each node's CPU and resident memory, and the PostgreSQL server's CPU.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};
use serde_json::{Value, json};

use crate::daemon::{Daemon, Setup, cpu_of, make_repo};
use crate::pg::PgCluster;
use crate::report::{Figure, mb};
use crate::tg_cases::bench_agent;

/// Open sessions, spread evenly over the nodes.
const SESSIONS: usize = 10;
/// Jobs queued into each session at once (above the default `jobs.max_queued_per_session` of 10, which
/// the case raises to this).
const JOBS: usize = 20;

pub async fn nodes(bin: &Path) -> Vec<Figure> {
    let mut figures = vec![throughput(bin, None, 1).await];
    let pg = PgCluster::start_with(true);
    figures.push(throughput(bin, Some(&pg), 1).await);
    drop(pg);
    let pg = PgCluster::start_with(true);
    figures.push(throughput(bin, Some(&pg), 2).await);
    figures
}

/// The first number of the first row a query answers (a count, a size).
pub async fn count(conn: &DatabaseConnection, sql: &str) -> i64 {
    let row = conn
        .query_one_raw(Statement::from_string(conn.get_database_backend(), sql))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

/// When the last job finished, in Unix seconds, as the daemons wrote it.
async fn last_finished(conn: &DatabaseConnection) -> f64 {
    let sql = match conn.get_database_backend() {
        DbBackend::Postgres => "SELECT EXTRACT(EPOCH FROM MAX(finished_at))::float8 FROM jobs",
        _ => "SELECT (julianday(MAX(finished_at)) - 2440587.5) * 86400.0 FROM jobs",
    };
    let row = conn
        .query_one_raw(Statement::from_string(conn.get_database_backend(), sql))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<f64>(0).unwrap()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// The PostgreSQL server's processes (the postmaster listening on `port` and its children): their CPU so
/// far, with what its children that exited used.
fn server_cpu(port: u16) -> Duration {
    let procs: Vec<(i32, String, String)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().parse::<i32>().ok()?;
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            Some((pid, cmd, stat))
        })
        .collect();
    let Some((postmaster, _, stat)) = procs
        .iter()
        .find(|(_, cmd, _)| cmd.contains(&format!("-p {port} ")) && cmd.contains("postgres"))
    else {
        return Duration::ZERO;
    };
    let fields = |stat: &str| -> Vec<u64> {
        stat.rsplit_once(") ")
            .map(|(_, r)| r)
            .unwrap_or("")
            .split_whitespace()
            .map(|v| v.parse::<u64>().unwrap_or(0))
            .collect()
    };
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    // cutime and cstime: fields 16 and 17 of the line, 14 and 15 after the state.
    let f = fields(stat);
    let waited = f.get(13).unwrap_or(&0) + f.get(14).unwrap_or(&0);
    let mut total = cpu_of(*postmaster) + Duration::from_millis(waited * 1000 / hz);
    for (pid, _, stat) in &procs {
        // The parent's pid: field 4 of the line, 1 after the state.
        if fields(stat).get(1) == Some(&(*postmaster as u64)) {
            total += cpu_of(*pid);
        }
    }
    total
}

/// SESSIONS sessions over `nodes` daemons (each with its own root; on SQLite when `pg` is None), JOBS
/// quick jobs queued into each at once through the first node's socket.
async fn throughput(bin: &Path, pg: Option<&PgCluster>, nodes: usize) -> Figure {
    let setups: Vec<Setup> = (0..nodes)
        .map(|i| {
            let store = pg
                .map(|pg| {
                    format!(
                        "[store]\nurl = \"{}\"\n[cluster]\nnode_id = \"n{i}\"\n",
                        pg.url()
                    )
                })
                .unwrap_or_default();
            let s = Setup::new(
                bin,
                &format!(
                    "{}{store}[jobs]\nmax_queued_per_session = {JOBS}\n",
                    bench_agent()
                ),
            );
            make_repo(&s.root().join(format!("repos/app{i}")), 0);
            s
        })
        .collect();
    // The first node started leads.
    let daemons: Vec<Daemon> = setups.iter().map(|s| s.start(None)).collect();
    if nodes > 1 {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let out = setups[0].command(&["admin", "nodes", "--json"]).output();
            let up = out
                .ok()
                .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
                .and_then(|v| v["nodes"].as_array().map(Vec::len));
            if up == Some(nodes) {
                break;
            }
            assert!(Instant::now() < end, "the nodes did not all register");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // A project on each node (registered by path there), its share of the sessions in it.
    let mut sessions = Vec::new();
    for (i, s) in setups.iter().enumerate() {
        let mcp = s.mcp().await;
        mcp.call("register_project", json!({"path": format!("app{i}")}))
            .await
            .unwrap();
        for _ in 0..SESSIONS / nodes {
            let mut args = json!({"project_id": format!("app{i}")});
            if pg.is_some() {
                args["node"] = json!(format!("n{i}"));
            }
            let got = mcp.call("create_session", args).await.unwrap();
            sessions.push(got["id"].as_str().unwrap().to_string());
        }
        mcp.close().await;
    }
    let url = match pg {
        Some(pg) => pg.url(),
        None => format!(
            "sqlite://{}?mode=rw",
            setups[0].root().join("orchestrator/state.db").display()
        ),
    };
    let store = Database::connect(url).await.unwrap();
    let port = pg.map(|pg| {
        pg.url()
            .rsplit_once(':')
            .and_then(|(_, r)| r.split('/').next()?.parse::<u16>().ok())
            .unwrap()
    });
    // Past the start-up work (the first janitor pass, the first disk measurement).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let events0 = count(&store, "SELECT COUNT(*) FROM events").await;
    let jobs0 = count(&store, "SELECT COUNT(*) FROM jobs").await;
    let cpu0: Vec<Duration> = daemons.iter().map(Daemon::cpu).collect();
    let server0 = port.map(server_cpu).unwrap_or_default();
    // Every job through the first node's socket: sessions on the other node are woken through the store.
    let mcp = setups[0].mcp().await;
    let first = unix_now();
    let t0 = Instant::now();
    for _ in 0..JOBS {
        for id in &sessions {
            mcp.call(
                "run_instruction",
                json!({"session_id": id, "instruction": "quick"}),
            )
            .await
            .unwrap();
        }
    }
    let queued = t0.elapsed();
    let finished = "SELECT COUNT(*) FROM jobs WHERE status IN ('done', 'failed', 'canceled')";
    let total = jobs0 + (sessions.len() * JOBS) as i64;
    let end = Instant::now() + Duration::from_secs(600);
    while count(&store, finished).await < total {
        assert!(
            Instant::now() < end,
            "the jobs did not all end within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cpu: Vec<f64> = daemons
        .iter()
        .zip(&cpu0)
        .map(|(d, c0)| (d.cpu() - *c0).as_secs_f64())
        .collect();
    let server = port
        .map(|p| (server_cpu(p) - server0).as_secs_f64())
        .unwrap_or(0.0);
    let rss: Vec<u64> = daemons.iter().map(|d| d.rss().0).collect();
    let wall = last_finished(&store).await - first;
    let events = count(&store, "SELECT COUNT(*) FROM events").await - events0;
    let jobs = count(&store, "SELECT COUNT(*) FROM jobs").await - jobs0;
    let done = count(&store, "SELECT COUNT(*) FROM jobs WHERE status = 'done'").await;
    mcp.close().await;
    store.close().await.unwrap();
    drop(daemons);
    let engine = if pg.is_some() { "PostgreSQL" } else { "SQLite" };
    let label = if nodes == 1 {
        format!("one node, {engine}")
    } else {
        format!("{nodes} nodes, one {engine}")
    };
    let per_node = |v: &[f64]| {
        v.iter()
            .map(|c| format!("{c:.1} s"))
            .collect::<Vec<_>>()
            .join(" + ")
    };
    let rss_show = rss.iter().map(|r| mb(*r)).collect::<Vec<_>>().join(" + ");
    let server_show = if pg.is_some() {
        format!(", PostgreSQL server {server:.1} s")
    } else {
        String::new()
    };
    let reference = if nodes > 1 {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        format!(
            "both nodes on this machine's {cores} cores: the coordination cost and the store's \
             throughput, not more hardware"
        )
    } else {
        "-".to_string()
    };
    Figure::new(
        &format!(
            "nodes: {} sessions × {JOBS} quick jobs, {label}",
            sessions.len()
        ),
        format!(
            "{:.1} jobs/s · {:.0} events/s ({jobs} jobs, {done} done, {events} events in {:.2} s, \
             queued one after another in {:.2} s; {} sessions open; CPU {}{server_show}; RSS {rss_show})",
            jobs as f64 / wall,
            events as f64 / wall,
            wall,
            queued.as_secs_f64(),
            sessions.len(),
            per_node(&cpu),
        ),
        reference,
    )
    .data(json!({
        "engine": engine, "nodes": nodes, "sessions": sessions.len(), "jobs_per_session": JOBS,
        "jobs": jobs, "done": done, "events": events, "wall_s": wall,
        "queue_s": queued.as_secs_f64(), "jobs_per_s": jobs as f64 / wall,
        "events_per_s": events as f64 / wall, "cpu_s": cpu, "server_cpu_s": server, "rss": rss,
        "max_concurrent": "default (3 per node)", "max_queued_per_session": JOBS,
    }))
}
