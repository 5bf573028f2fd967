//! What several nodes on one PostgreSQL database coordinate through, all of it PostgreSQL's own: the
//! `nodes` rows and their heartbeats (the database's clock, so the nodes' clocks need not agree), the
//! leader's session-level advisory lock on a connection of its own (it goes with the connection, so a
//! node killed with -9 or cut off loses it at once), `LISTEN/NOTIFY` on one channel to wake a node, and the
//! `calls` a node asks of another, claimed with `FOR UPDATE SKIP LOCKED`.

use std::str::FromStr;
use std::time::Duration;

use sea_orm::sqlx::postgres::{PgConnectOptions, PgConnection, PgListener};
use sea_orm::sqlx::{self, Connection};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, Value};

/// The channel every node listens on; a payload names what changed (see `core::cluster`).
pub const CHANNEL: &str = "televibe_cluster";

/// The advisory lock key of the leader: "tvleader" as eight bytes.
const LEADER_KEY: i64 = 0x7476_6c65_6164_6572;

const PG: DbBackend = DbBackend::Postgres;

fn stmt(sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(PG, sql, values)
}

/// How to open a dedicated connection (the lock's, the listener's): the URL and the password apart.
#[derive(Clone)]
pub struct Dial {
    pub url: String,
    pub password: Option<String>,
}

impl Dial {
    fn options(&self) -> Result<PgConnectOptions, String> {
        let mut o = PgConnectOptions::from_str(&self.url).map_err(|e| scrub(&e.to_string()))?;
        if let Some(p) = &self.password {
            o = o.password(p);
        }
        // The server notices a client machine that died (no FIN, no RST) within about 11 s, and frees the
        // lock it held, instead of after the system's default of two hours.
        Ok(o.application_name("televibe-cluster").options([
            ("tcp_keepalives_idle", "5"),
            ("tcp_keepalives_interval", "2"),
            ("tcp_keepalives_count", "3"),
        ]))
    }
}

/// An error text without anything that could be a password (sqlx names the URL in some errors).
fn scrub(text: &str) -> String {
    match (text.find("://"), text.find('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…{}", &text[..s], &text[at..]),
        _ => text.to_string(),
    }
}

/// The leader's lock, held on a connection of its own for as long as it is open.
pub struct LeaderLock {
    conn: Option<PgConnection>,
}

impl LeaderLock {
    pub fn new() -> LeaderLock {
        LeaderLock { conn: None }
    }

    pub fn held(&self) -> bool {
        self.conn.is_some()
    }

    /// Tries to take the lock (never waits for it): true when this node holds it now.
    pub async fn try_take(&mut self, dial: &Dial) -> Result<bool, String> {
        if self.conn.is_some() {
            return Ok(true);
        }
        let mut conn = tokio::time::timeout(
            Duration::from_secs(5),
            PgConnection::connect_with(&dial.options()?),
        )
        .await
        .map_err(|_| "connecting timed out".to_string())?
        .map_err(|e| scrub(&e.to_string()))?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LEADER_KEY)
            .fetch_one(&mut conn)
            .await
            .map_err(|e| scrub(&e.to_string()))?;
        if got {
            self.conn = Some(conn);
        } else {
            let _ = conn.close().await;
        }
        Ok(got)
    }

    /// Whether the lock's connection still answers (a lost connection is a lost lock). On failure the
    /// connection is dropped: the lock is gone.
    pub async fn still_held(&mut self) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        let ok = tokio::time::timeout(Duration::from_secs(3), async {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted)",
            )
            .fetch_one(&mut *conn)
            .await
        })
        .await;
        if matches!(ok, Ok(Ok(true))) {
            true
        } else {
            self.conn = None;
            false
        }
    }

    /// Gives the lock up (its connection closed).
    pub async fn release(&mut self) {
        if let Some(c) = self.conn.take() {
            let _ = c.close().await;
        }
    }
}

impl Default for LeaderLock {
    fn default() -> Self {
        LeaderLock::new()
    }
}

/// A connection listening on `CHANNEL`.
pub struct Listener {
    inner: PgListener,
}

impl Listener {
    pub async fn open(dial: &Dial) -> Result<Listener, String> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(dial.options()?);
        let mut inner = PgListener::connect_with(&pool)
            .await
            .map_err(|e| scrub(&e.to_string()))?;
        inner
            .listen(CHANNEL)
            .await
            .map_err(|e| scrub(&e.to_string()))?;
        Ok(Listener { inner })
    }

    /// The next payload. An error means the connection was lost (the listener reconnects at the next call;
    /// what was sent meanwhile is missed, so callers sweep after an error).
    pub async fn next(&mut self) -> Result<String, String> {
        self.inner
            .recv()
            .await
            .map(|n| n.payload().to_string())
            .map_err(|e| scrub(&e.to_string()))
    }
}

/// Wakes every listening node with `payload` (delivered when the surrounding transaction, if any, commits).
pub async fn notify(db: &impl ConnectionTrait, payload: &str) -> Result<(), DbErr> {
    db.execute_raw(stmt(
        "SELECT pg_notify($1, $2)",
        vec![CHANNEL.into(), payload.into()],
    ))
    .await
    .map(|_| ())
}

/// One node as the database knows it.
#[derive(Debug, Clone)]
pub struct NodeRow {
    pub id: String,
    pub root: String,
    pub version: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub heartbeat_at: chrono::DateTime<chrono::Utc>,
    /// Seconds since the last heartbeat, by the database's clock.
    pub silent_secs: f64,
    pub lost_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Registers this node (again): its row with a fresh start and heartbeat, no longer lost. `instance` names
/// the machine and root (a restart is the same instance); another instance's row with a heartbeat younger
/// than `timeout` that is not marked lost is another running node with the same name: refused, its
/// heartbeat's age answered.
pub async fn register(
    db: &DatabaseConnection,
    id: &str,
    instance: &str,
    root: &str,
    version: &str,
    timeout: Duration,
) -> Result<Option<f64>, DbErr> {
    let taken = db
        .query_one_raw(stmt(
            "SELECT EXTRACT(EPOCH FROM (now() - heartbeat_at))::float8 FROM nodes \
             WHERE id = $1 AND instance <> $2 AND lost_at IS NULL \
             AND heartbeat_at > now() - make_interval(secs => $3)",
            vec![id.into(), instance.into(), timeout.as_secs_f64().into()],
        ))
        .await?;
    if let Some(row) = taken {
        return Ok(Some(row.try_get_by_index::<f64>(0)?));
    }
    db.execute_raw(stmt(
        "INSERT INTO nodes (id, instance, root, version, started_at, heartbeat_at, lost_at) \
         VALUES ($1, $2, $3, $4, now(), now(), NULL) \
         ON CONFLICT (id) DO UPDATE SET instance = excluded.instance, root = excluded.root, \
         version = excluded.version, started_at = now(), heartbeat_at = now(), lost_at = NULL",
        vec![id.into(), instance.into(), root.into(), version.into()],
    ))
    .await
    .map(|_| None)
}

/// This node's heartbeat: false when its row no longer takes it (marked lost meanwhile, or taken by
/// another instance of the same name): the node has been fenced off.
pub async fn heartbeat(db: &DatabaseConnection, id: &str, instance: &str) -> Result<bool, DbErr> {
    let done = db
        .execute_raw(stmt(
            "UPDATE nodes SET heartbeat_at = now() \
             WHERE id = $1 AND instance = $2 AND lost_at IS NULL",
            vec![id.into(), instance.into()],
        ))
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Every node, by id.
pub async fn nodes(db: &DatabaseConnection) -> Result<Vec<NodeRow>, DbErr> {
    let rows = db
        .query_all_raw(stmt(
            "SELECT id, root, version, started_at, heartbeat_at, \
             EXTRACT(EPOCH FROM (now() - heartbeat_at))::float8, lost_at FROM nodes ORDER BY id",
            vec![],
        ))
        .await?;
    rows.iter()
        .map(|r| {
            Ok(NodeRow {
                id: r.try_get_by_index(0)?,
                root: r.try_get_by_index(1)?,
                version: r.try_get_by_index(2)?,
                started_at: r.try_get_by_index(3)?,
                heartbeat_at: r.try_get_by_index(4)?,
                silent_secs: r.try_get_by_index(5)?,
                lost_at: r.try_get_by_index(6)?,
            })
        })
        .collect()
}

/// The nodes marked lost.
pub async fn lost_nodes(db: &DatabaseConnection) -> Result<Vec<String>, DbErr> {
    let rows = db
        .query_all_raw(stmt(
            "SELECT id FROM nodes WHERE lost_at IS NOT NULL ORDER BY id",
            vec![],
        ))
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| r.try_get_by_index::<String>(0).ok())
        .collect())
}

/// Marks lost every node silent for longer than `timeout` and not marked yet; answers their ids.
pub async fn mark_lost(db: &DatabaseConnection, timeout: Duration) -> Result<Vec<String>, DbErr> {
    let rows = db
        .query_all_raw(stmt(
            "UPDATE nodes SET lost_at = now() \
             WHERE lost_at IS NULL AND heartbeat_at < now() - make_interval(secs => $1) RETURNING id",
            vec![timeout.as_secs_f64().into()],
        ))
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| r.try_get_by_index::<String>(0).ok())
        .collect())
}

/// Running jobs (running or waiting for a person) per node.
pub async fn running_per_node(db: &DatabaseConnection) -> Result<Vec<(String, i64)>, DbErr> {
    let rows = db
        .query_all_raw(stmt(
            "SELECT s.node, COUNT(*) FROM jobs j JOIN sessions s ON s.id = j.session_id \
             WHERE j.status IN ('running', 'waiting_approval') AND s.node IS NOT NULL GROUP BY s.node",
            vec![],
        ))
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some((
                r.try_get_by_index::<String>(0).ok()?,
                r.try_get_by_index::<i64>(1).ok()?,
            ))
        })
        .collect())
}

/// A call one node asks of another.
#[derive(Debug, Clone)]
pub struct CallRow {
    pub id: String,
    pub kind: String,
    pub args: String,
}

/// Writes a call for `node` and wakes it.
pub async fn insert_call(
    db: &DatabaseConnection,
    id: &str,
    node: &str,
    from: &str,
    kind: &str,
    args: &str,
    limit: Duration,
) -> Result<(), DbErr> {
    db.execute_raw(stmt(
        "INSERT INTO calls (id, node, from_node, kind, args, created_at, deadline) \
         VALUES ($1, $2, $3, $4, $5, now(), now() + make_interval(secs => $6))",
        vec![
            id.into(),
            node.into(),
            from.into(),
            kind.into(),
            args.into(),
            limit.as_secs_f64().into(),
        ],
    ))
    .await?;
    notify(db, &format!("call:{node}")).await
}

/// Takes the calls waiting for `node` that no other worker of it took (`FOR UPDATE SKIP LOCKED`) and whose
/// asker still waits (a call past its deadline was answered "did not answer" and is never carried out).
pub async fn claim_calls(db: &DatabaseConnection, node: &str) -> Result<Vec<CallRow>, DbErr> {
    let rows = db
        .query_all_raw(stmt(
            "UPDATE calls SET claimed_at = now() WHERE id IN ( \
               SELECT id FROM calls WHERE node = $1 AND claimed_at IS NULL AND deadline > now() \
               ORDER BY created_at FOR UPDATE SKIP LOCKED) \
             RETURNING id, kind, args",
            vec![node.into()],
        ))
        .await?;
    rows.iter()
        .map(|r| {
            Ok(CallRow {
                id: r.try_get_by_index(0)?,
                kind: r.try_get_by_index(1)?,
                args: r.try_get_by_index(2)?,
            })
        })
        .collect()
}

/// Writes a call's answer and wakes its asker.
pub async fn finish_call(db: &DatabaseConnection, id: &str, answer: &str) -> Result<(), DbErr> {
    db.execute_raw(stmt(
        "UPDATE calls SET answer = $2, done_at = now() WHERE id = $1",
        vec![id.into(), answer.into()],
    ))
    .await?;
    notify(db, &format!("done:{id}")).await
}

/// A call's answer, once there is one.
pub async fn call_answer(db: &DatabaseConnection, id: &str) -> Result<Option<String>, DbErr> {
    let row = db
        .query_one_raw(stmt(
            "SELECT answer FROM calls WHERE id = $1",
            vec![id.into()],
        ))
        .await?;
    Ok(row.and_then(|r| r.try_get_by_index::<Option<String>>(0).ok().flatten()))
}

/// Removes answered calls older than a day, and unanswered ones older than a week.
pub async fn prune_calls(db: &DatabaseConnection) -> Result<(), DbErr> {
    db.execute_raw(stmt(
        "DELETE FROM calls WHERE (done_at IS NOT NULL AND done_at < now() - interval '1 day') \
         OR created_at < now() - interval '7 days'",
        vec![],
    ))
    .await
    .map(|_| ())
}
