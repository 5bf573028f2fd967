//! Several nodes on one PostgreSQL store: this node's name and role, where a new session goes, the calls a
//! node asks of the node hosting a session (create, close, cancel, kill), the wake-ups that carry a queued
//! job, a decision or an outbox row to the node that acts on it, and what happens to the jobs of a node that
//! went silent. On SQLite there is one node: it leads, hosts everything, and nothing here talks to anyone.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::oneshot;

use super::Core;
use crate::domain::{Project, Session};
use crate::errors::{CoreError, ErrorCode};

pub mod actor;

/// What the cluster service keeps.
#[derive(Default)]
pub struct State {
    leader: AtomicBool,
    /// Calls this node asked of others, waiting for their answer (woken by `done:<id>`).
    asked: Mutex<HashMap<String, oneshot::Sender<()>>>,
}

/// A call one node asks of the node hosting a session.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Call {
    CreateSession {
        by: String,
        project_id: String,
        branch: Option<String>,
        base: Option<String>,
        agent: Option<String>,
    },
    CloseSession {
        by: String,
        id: String,
        force: bool,
        delete_branch: bool,
    },
    CancelJob {
        by: String,
        id: String,
    },
    KillJob {
        by: String,
        id: String,
    },
}

impl Call {
    fn kind(&self) -> &'static str {
        match self {
            Call::CreateSession { .. } => "create_session",
            Call::CloseSession { .. } => "close_session",
            Call::CancelJob { .. } => "cancel_job",
            Call::KillJob { .. } => "kill_job",
        }
    }

    /// How long the asker waits: a session's creation and closing run git, each step up to its timeout.
    fn limit(&self, git: Duration) -> Duration {
        match self {
            Call::CreateSession { .. } | Call::CloseSession { .. } => {
                git * 4 + Duration::from_secs(30)
            }
            _ => Duration::from_secs(60),
        }
    }
}

/// One node, as `admin nodes` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeView {
    pub node_id: String,
    pub leader: bool,
    /// `up`, or `lost` (no heartbeat for `cluster.node_timeout_secs`).
    pub state: String,
    pub root: String,
    pub version: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub last_heartbeat_at: chrono::DateTime<chrono::Utc>,
    pub heartbeat_age_secs: f64,
    pub running_jobs: i64,
    pub open_sessions: i64,
}

/// What `admin nodes` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Nodes {
    /// The store the nodes share: `sqlite` (one node) or `postgres`.
    pub store: String,
    /// The node that answered.
    pub this_node: String,
    pub leader: Option<String>,
    pub nodes: Vec<NodeView>,
}

/// The cluster service.
pub struct Cluster<'a> {
    core: &'a Core,
}

impl Core {
    pub fn cluster(&self) -> Cluster<'_> {
        Cluster { core: self }
    }
}

fn unavailable(message: String, suggestion: &str) -> CoreError {
    CoreError::new(ErrorCode::NodeUnavailable, message, suggestion)
}

impl<'a> Cluster<'a> {
    fn state(&self) -> &'a State {
        &self.core.cluster_state
    }

    pub fn node_id(&self) -> &'a str {
        &self.core.config().cluster.node_id
    }

    /// Whether several nodes may share the store (PostgreSQL).
    pub fn shared(&self) -> bool {
        self.core.store().is_postgres()
    }

    /// Whether this node runs the Telegram front, the notifier and the schedulers: the one node of a SQLite
    /// store, the holder of the leader's lock on a shared one.
    pub fn is_leader(&self) -> bool {
        !self.shared() || self.state().leader.load(Ordering::SeqCst)
    }

    pub(crate) fn set_leader(&self, leader: bool) {
        self.state().leader.store(leader, Ordering::SeqCst);
        self.core.metrics().cluster_leader.set(i64::from(leader));
    }

    /// The node recorded on a project registered by path here (it alone has the repository).
    pub fn path_project_node(&self) -> Option<String> {
        self.shared().then(|| self.node_id().to_string())
    }

    /// Whether this node hosts the session (always, on one node).
    pub fn hosts(&self, s: &Session) -> bool {
        s.node.as_deref().is_none_or(|n| n == self.node_id())
    }

    /// The node a session runs on, when it is another one.
    pub fn elsewhere<'s>(&self, s: &'s Session) -> Option<&'s str> {
        s.node.as_deref().filter(|n| *n != self.node_id())
    }

    /// Refuses work on a session's files that only its node can do (they are on its disk).
    pub fn on_this_node(&self, s: &Session, what: &str) -> Result<(), CoreError> {
        match self.elsewhere(s) {
            None => Ok(()),
            Some(node) => Err(unavailable(
                format!(
                    "session {} runs on node {node}: {what} only works there",
                    s.id
                ),
                "use that node's own MCP socket (televibe mcp on it), or a session hosted here",
            )),
        }
    }

    /// Every node with its heartbeat and load (one, on SQLite).
    pub async fn nodes(&self) -> Result<Nodes, CoreError> {
        let me = self.node_id().to_string();
        if !self.shared() {
            let running = self.core.store().running_job_count().await? as i64;
            let open = self.core.store().count_open_sessions(None).await? as i64;
            let now = chrono::Utc::now();
            return Ok(Nodes {
                store: "sqlite".into(),
                this_node: me.clone(),
                leader: Some(me.clone()),
                nodes: vec![NodeView {
                    node_id: me,
                    leader: true,
                    state: "up".into(),
                    root: self.core.config().root.display().to_string(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    started_at: now
                        - chrono::Duration::from_std(self.core.started().elapsed())
                            .unwrap_or_default(),
                    last_heartbeat_at: now,
                    heartbeat_age_secs: 0.0,
                    running_jobs: running,
                    open_sessions: open,
                }],
            });
        }
        let store = self.core.store();
        let rows = store.nodes().await?;
        let running: HashMap<String, i64> = store.running_per_node().await?.into_iter().collect();
        let open: HashMap<String, i64> =
            store.open_sessions_per_node().await?.into_iter().collect();
        let leader = store.kv_get(LEADER_KEY).await?;
        let nodes = rows
            .into_iter()
            .map(|r| NodeView {
                leader: leader.as_deref() == Some(r.id.as_str()) && r.lost_at.is_none(),
                state: if r.lost_at.is_some() { "lost" } else { "up" }.into(),
                running_jobs: running.get(&r.id).copied().unwrap_or(0),
                open_sessions: open.get(&r.id).copied().unwrap_or(0),
                node_id: r.id,
                root: r.root,
                version: r.version,
                started_at: r.started_at,
                last_heartbeat_at: r.heartbeat_at,
                heartbeat_age_secs: (r.silent_secs * 10.0).round() / 10.0,
            })
            .collect::<Vec<_>>();
        Ok(Nodes {
            store: "postgres".into(),
            this_node: me,
            leader: nodes.iter().find(|n| n.leader).map(|n| n.node_id.clone()),
            nodes,
        })
    }

    /// The nodes that are up (no heartbeat missing), by id.
    async fn live_nodes(&self) -> Result<Vec<String>, CoreError> {
        Ok(self
            .core
            .store()
            .nodes()
            .await?
            .into_iter()
            .filter(|n| n.lost_at.is_none())
            .map(|n| n.id)
            .collect())
    }

    /// Whether the session's node is gone (no heartbeat for `cluster.node_timeout_secs`): why, if so.
    pub async fn unavailable_reason(&self, s: &Session) -> Option<String> {
        let node = self.elsewhere(s)?;
        let rows = self.core.store().nodes().await.ok()?;
        let row = rows.iter().find(|r| r.id == node);
        match row {
            Some(r) if r.lost_at.is_none() => None,
            Some(r) => Some(format!(
                "node {node} is gone (no heartbeat since {} UTC)",
                r.heartbeat_at.format("%H:%M:%S")
            )),
            None => Some(format!("node {node} is not registered")),
        }
    }

    /// Where a new session of `project` goes: the node asked for, else the project's own node (registered
    /// by path), else the node with the fewest running jobs (this one among equals, then by name).
    pub async fn place(&self, asked: Option<&str>, project: &Project) -> Result<String, CoreError> {
        let me = self.node_id().to_string();
        let asked = asked.map(str::trim).filter(|n| !n.is_empty());
        if !self.shared() {
            return match asked {
                Some(n) if n != me => Err(unavailable(
                    format!(
                        "no node {n:?}: this daemon is the only node ({me}; store.url is empty)"
                    ),
                    "leave node out, or share a PostgreSQL store between nodes (store.url)",
                )),
                _ => Ok(me),
            };
        }
        let live = self.live_nodes().await?;
        if let Some(n) = asked {
            if !live.iter().any(|l| l == n) {
                return Err(unavailable(
                    format!("node {n:?} is not up (known and up: {})", live.join(", ")),
                    "pick a node that `televibe admin nodes` lists as up",
                ));
            }
            if let Some(owner) = project.node.as_deref().filter(|o| *o != n) {
                return Err(unavailable(
                    format!(
                        "project {} was registered by path on node {owner}: only that node has it",
                        project.id
                    ),
                    "create the session on that node, or register the project by URL (every node clones it)",
                ));
            }
            return Ok(n.to_string());
        }
        if let Some(owner) = project.node.as_deref() {
            if !live.iter().any(|l| l == owner) {
                return Err(unavailable(
                    format!(
                        "project {} lives on node {owner}, which is not up",
                        project.id
                    ),
                    "start that node again, or register the project by URL",
                ));
            }
            return Ok(owner.to_string());
        }
        let running: HashMap<String, i64> = self
            .core
            .store()
            .running_per_node()
            .await?
            .into_iter()
            .collect();
        let load = |n: &String| running.get(n).copied().unwrap_or(0);
        let least = live.iter().map(load).min().unwrap_or(0);
        if live.contains(&me) && load(&me) == least {
            return Ok(me);
        }
        Ok(live
            .iter()
            .filter(|n| load(n) == least)
            .min()
            .cloned()
            .unwrap_or(me))
    }

    /// Asks `node` to do `call` and waits for its answer (an error of its own, or a value).
    pub async fn call(&self, node: &str, call: Call) -> Result<Value, CoreError> {
        if let Some(reason) = self.node_down(node).await {
            return Err(unavailable(
                reason,
                "wait for the node to come back (`televibe admin nodes`)",
            ));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let args = serde_json::to_string(&call).map_err(|e| CoreError::internal(e.to_string()))?;
        let (tx, mut rx) = oneshot::channel();
        self.state().asked.lock().unwrap().insert(id.clone(), tx);
        let limit = call.limit(self.core.config().git_timeout);
        let asked = self
            .core
            .store()
            .insert_call(&id, node, self.node_id(), call.kind(), &args)
            .await;
        let answer = async {
            asked?;
            let deadline = tokio::time::Instant::now() + limit;
            loop {
                if let Some(a) = self.core.store().call_answer(&id).await? {
                    return Ok(a);
                }
                // Woken by `done:<id>`; the poll covers a wake-up missed while the listener reconnected.
                let wait = Duration::from_secs(1);
                if tokio::time::Instant::now() >= deadline {
                    return Err(unavailable(
                        format!(
                            "node {node} did not answer {} within {} s",
                            call.kind(),
                            limit.as_secs()
                        ),
                        "check `televibe admin nodes`; the call may still be carried out there",
                    ));
                }
                let _ = tokio::time::timeout(wait, &mut rx).await;
            }
        }
        .await;
        self.state().asked.lock().unwrap().remove(&id);
        let text: String = answer?;
        let answer: Result<Value, CoreError> =
            serde_json::from_str(&text).map_err(|e| CoreError::internal(e.to_string()))?;
        answer
    }

    /// Why `node` cannot answer now, if it cannot.
    async fn node_down(&self, node: &str) -> Option<String> {
        match self.core.store().nodes().await {
            Ok(rows) => match rows.iter().find(|r| r.id == node) {
                Some(r) if r.lost_at.is_none() => None,
                Some(r) => Some(format!(
                    "node {node} is gone (no heartbeat since {} UTC)",
                    r.heartbeat_at.format("%H:%M:%S")
                )),
                None => Some(format!("node {node} is not registered")),
            },
            Err(e) => Some(format!("the nodes cannot be read: {e}")),
        }
    }

    /// Carries out the calls other nodes asked of this one.
    pub async fn serve_calls(&self) {
        let calls = match self.core.store().claim_calls(self.node_id()).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(target: "televibe.cluster", error = %e, "calls not read");
                return;
            }
        };
        for c in calls {
            let core = self.core.arc();
            // Each on its own task: a session's creation does not hold a cancel behind it.
            tokio::spawn(async move {
                let answer = match serde_json::from_str::<Call>(&c.args) {
                    Ok(call) => core.cluster().carry_out(call).await,
                    Err(e) => Err(CoreError::internal(format!(
                        "unreadable call {}: {e}",
                        c.kind
                    ))),
                };
                let text = serde_json::to_string(&answer).unwrap_or_else(|_| "null".into());
                if let Err(e) = core.store().finish_call(&c.id, &text).await {
                    tracing::warn!(target: "televibe.cluster", call_id = %c.id, error = %e, "call answer not written");
                }
            });
        }
    }

    async fn carry_out(&self, call: Call) -> Result<Value, CoreError> {
        tracing::info!(target: "televibe.cluster", kind = call.kind(), "Carrying out a call of another node");
        let sessions = self.core.sessions();
        match call {
            Call::CreateSession {
                by,
                project_id,
                branch,
                base,
                agent,
            } => {
                let s = sessions
                    .create_session_here(
                        &by,
                        &project_id,
                        branch.as_deref(),
                        base.as_deref(),
                        agent.as_deref(),
                    )
                    .await?;
                Ok(serde_json::json!({ "id": s.id }))
            }
            Call::CloseSession {
                by,
                id,
                force,
                delete_branch,
            } => {
                let c = sessions
                    .close_session(&by, &id, force, delete_branch)
                    .await?;
                Ok(serde_json::json!({ "branch_deleted": c.branch_deleted }))
            }
            Call::CancelJob { by, id } => {
                sessions.cancel_job(&by, &id).await?;
                Ok(Value::Null)
            }
            Call::KillJob { by, id } => {
                sessions.kill_job(&by, &id).await?;
                Ok(Value::Null)
            }
        }
    }

    /// Tells the other nodes something changed (a no-op on one node).
    pub async fn wake(&self, payload: &str) {
        if !self.shared() {
            return;
        }
        if let Err(e) = self.core.store().notify_nodes(payload).await {
            tracing::warn!(target: "televibe.cluster", payload, error = %e, "wake-up not sent");
        }
    }

    /// What a wake-up from another node means here.
    pub async fn on_wake(&self, payload: &str) {
        let (what, arg) = payload.split_once(':').unwrap_or((payload, ""));
        match what {
            "call" if arg == self.node_id() => self.serve_calls().await,
            "done" => {
                if let Some(tx) = self.state().asked.lock().unwrap().remove(arg) {
                    let _ = tx.send(());
                }
            }
            "enqueued" if arg == self.node_id() => self.core.sessions().resync_queues().await,
            "decided" => {
                self.core
                    .approvals()
                    .wake_decided_elsewhere(Some(arg))
                    .await
            }
            "outbox" if self.is_leader() => self.core.events().outbox_written_elsewhere(),
            _ => {}
        }
    }

    /// What a wake-up missed while the listener reconnected would have done (every heartbeat).
    pub async fn sweep(&self) {
        self.serve_calls().await;
        self.core.sessions().resync_queues().await;
        self.core.approvals().wake_decided_elsewhere(None).await;
        if self.is_leader() {
            self.core.events().outbox_written_elsewhere();
            // Schedules other nodes created or removed are read again.
            self.core.schedules().changed();
        }
    }

    /// The leader's watch over the others: nodes silent for `cluster.node_timeout_secs` are marked lost
    /// and their running jobs end `node_lost` (queued once more, as after a restart, when the retry rule
    /// allows: they run when the node is back).
    pub async fn watch_nodes(&self) {
        let timeout = self.core.config().cluster.node_timeout;
        let lost = match self.core.store().mark_lost_nodes(timeout).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(target: "televibe.cluster", error = %e, "nodes not checked");
                return;
            }
        };
        for node in lost {
            tracing::error!(target: "televibe.cluster", node_id = %node, timeout_secs = timeout.as_secs(), "Node lost: no heartbeat; its running jobs end node_lost");
            self.core.jobs().node_lost(&node, timeout).await;
        }
        if let Ok(rows) = self.core.store().nodes().await {
            let up = rows.iter().filter(|r| r.lost_at.is_none()).count();
            self.core.metrics().cluster_nodes.set(up as i64);
        }
    }
}

/// The kv key naming the node that holds the leader's lock (written by the leader when it takes it).
pub const LEADER_KEY: &str = "cluster.leader";
