//! Several nodes on one PostgreSQL store: this node's name and role, where a new session goes, the calls a
//! node asks of the node hosting a session (create, close, cancel, kill), the wake-ups that carry a queued
//! job, a decision or an outbox row to the node that acts on it, and what happens to the jobs of a node that
//! went silent. On SQLite there is one node: it leads, hosts everything, and nothing here talks to anyone.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::Core;
use crate::domain::{Project, Session};
use crate::errors::{CoreError, ErrorCode};

pub mod actor;
mod calls;
pub use calls::Call;

/// What the cluster service keeps.
#[derive(Default)]
pub struct State {
    leader: AtomicBool,
    /// Set when this node must stop: it was taken for gone, or another node took its name.
    fence: tokio::sync::watch::Sender<Option<String>>,
    /// Calls this node asked of others, waiting for their answer (woken by `done:<id>`).
    asked: Mutex<HashMap<String, oneshot::Sender<()>>>,
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
    pub(super) core: &'a Core,
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

    /// This node's name as rows it hosts record it (a session, a project registered by path: only it has
    /// the repository); `None` on one node.
    pub fn own_node(&self) -> Option<String> {
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
        }
        // Every lost node's running jobs, at every tick: a pass cut short (a failed read, a leader that died
        // after marking) is finished by the next one; a finished pass finds nothing.
        for node in self.core.store().lost_nodes().await.unwrap_or_default() {
            self.core.jobs().node_lost(&node, timeout).await;
        }
    }

    /// This node must stop (exit code 4): the daemon's main loop ends at once, its agents with it.
    pub fn fence(&self, why: &str) {
        self.state().fence.send_replace(Some(why.to_string()));
    }

    /// Resolves with the reason once this node is fenced off.
    pub async fn fenced(&self) -> String {
        let mut rx = self.state().fence.subscribe();
        loop {
            if let Some(why) = rx.borrow_and_update().clone() {
                return why;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Who this node is beyond its name: the machine and the root. A restart is the same instance; another
    /// machine (or root) with the same `cluster.node_id` is not.
    pub fn instance(&self) -> String {
        let machine = std::fs::read_to_string("/etc/machine-id")
            .map(|m| m.trim().to_string())
            .unwrap_or_default();
        format!("{machine}:{}", self.core.config().root.display())
    }

    /// Registers this node; refused while another running node has its name.
    pub async fn register(&self) -> Result<(), CoreError> {
        let config = self.core.config();
        match self
            .core
            .store()
            .register_node(
                self.node_id(),
                &self.instance(),
                &config.root.display().to_string(),
                env!("CARGO_PKG_VERSION"),
                config.cluster.node_timeout,
            )
            .await?
        {
            None => Ok(()),
            Some(age) => Err(unavailable(
                format!(
                    "node name {:?} is taken by another running node (another machine or root; its last heartbeat {age:.0} s ago)",
                    self.node_id()
                ),
                "give every node its own cluster.node_id (default: the host name), or stop the other one",
            )),
        }
    }

    /// `televibe_cluster_nodes`: the nodes that are up, as the store says (every heartbeat, on every node).
    pub async fn count_nodes(&self) {
        if let Ok(rows) = self.core.store().nodes().await {
            let up = rows.iter().filter(|r| r.lost_at.is_none()).count();
            self.core.metrics().cluster_nodes.set(up as i64);
        }
    }
}

/// The kv key naming the node that holds the leader's lock (written by the leader when it takes it).
pub const LEADER_KEY: &str = "cluster.leader";
