//! The `cluster` actor (only on a store several nodes share): registers this node, writes its heartbeat,
//! takes the leader's lock when it is free and then starts the leader's children (Telegram's front, the
//! notifier, the backup and schedule timers), gives them up the moment the lock's connection is lost,
//! listens for the other nodes' wake-ups, and, as the leader, watches for nodes gone silent.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio_util::task::AbortOnDropHandle;

use crate::core::Core;
use crate::store::{LeaderLock, Listener};
use crate::supervisor::{ChildMessage, ChildSpec, SupervisorMsg, TreeNode};

/// The exit code of a node that found it had been taken for gone (README, "Exit codes").
pub const FENCED_EXIT: i32 = 4;

pub struct ClusterActor {
    pub core: Arc<Core>,
    /// The children only the leader runs, started in this order when it takes the lock.
    pub leader_children: Vec<ChildSpec>,
    /// The leader's lock when the daemon took it before the tree started (its children started with the
    /// tree); taken by the first start.
    pub boot_lock: Arc<std::sync::Mutex<Option<LeaderLock>>>,
}

pub enum ClusterMsg {
    /// Heartbeat, the leader's lock (kept or tried), the sweep.
    Tick,
    /// What the tree shows below the actor: this node and its role.
    Below(ractor::RpcReplyPort<Vec<TreeNode>>),
    Panic,
}

impl ChildMessage for ClusterMsg {
    fn injected_panic() -> Self {
        ClusterMsg::Panic
    }
}

pub struct ClusterState {
    lock: LeaderLock,
    /// The listener task (aborted with the state).
    _listener: AbortOnDropHandle<()>,
    ticks: u64,
    /// Since when this node leads.
    led_since: Option<std::time::Instant>,
}

impl ClusterActor {
    fn names(&self) -> Vec<String> {
        self.leader_children
            .iter()
            .map(|c| c.name.clone())
            .collect()
    }

    async fn step_up(&self, st: &mut ClusterState) {
        let cluster = self.core.cluster();
        let Some(root) = self.core.root().cloned() else {
            // The tree is still starting: the lock is given back and taken again at the next tick.
            st.lock.release().await;
            return;
        };
        cluster.set_leader(true);
        if let Err(e) = self
            .core
            .store()
            .kv_set(super::LEADER_KEY, cluster.node_id())
            .await
        {
            tracing::warn!(target: "televibe.cluster", error = %e, "leader not recorded");
        }
        tracing::warn!(target: "televibe.cluster", node_id = cluster.node_id(), "This node is the leader now: starting the Telegram front, the notifier, backups and schedules");
        for spec in &self.leader_children {
            let name = spec.name.clone();
            match ractor::call_t!(root, SupervisorMsg::StartChild, 10_000, spec.clone()) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(target: "televibe.cluster", child = %name, error = %e, "leader's child not started")
                }
                Err(e) => {
                    tracing::error!(target: "televibe.cluster", child = %name, error = %e, "leader's child not started")
                }
            }
        }
        cluster.sweep().await;
    }

    async fn step_down(&self, why: &str) {
        let cluster = self.core.cluster();
        cluster.set_leader(false);
        tracing::error!(target: "televibe.cluster", node_id = cluster.node_id(), reason = why, "This node lost the leader's lock: stopping the leader's children");
        if let Some(root) = self.core.root() {
            let _ = ractor::call_t!(root, SupervisorMsg::RemoveChildren, 30_000, self.names());
        }
    }
}

/// Listens for the other nodes' wake-ups; after a lost connection it opens a new one and sweeps (what was
/// sent meanwhile is missed).
async fn listen(core: Arc<Core>) {
    let Some(dial) = core.store().dial() else {
        return;
    };
    loop {
        match Listener::open(&dial).await {
            Ok(mut l) => {
                core.cluster().sweep().await;
                loop {
                    match l.next().await {
                        Ok(payload) => {
                            let c = core.clone();
                            tokio::spawn(async move { c.cluster().on_wake(&payload).await });
                        }
                        Err(e) => {
                            tracing::warn!(target: "televibe.cluster", error = %e, "wake-ups: connection lost");
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(target: "televibe.cluster", error = %e, "wake-ups: cannot listen");
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl Actor for ClusterActor {
    type Msg = ClusterMsg;
    type State = ClusterState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<ClusterMsg>,
        _: (),
    ) -> Result<ClusterState, ActorProcessingErr> {
        let cluster = self.core.cluster();
        cluster.set_leader(false);
        cluster.register().await?;
        let lock = self
            .boot_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match &lock {
            Some(_) => {
                cluster.set_leader(true);
                self.core
                    .store()
                    .kv_set(super::LEADER_KEY, cluster.node_id())
                    .await?;
                tracing::warn!(target: "televibe.cluster", node_id = cluster.node_id(), "This node is the leader (from the start): it runs the Telegram front, the notifier, backups and schedules");
            }
            None => {
                tracing::info!(target: "televibe.cluster", node_id = cluster.node_id(), "Node registered: a follower until it holds the leader's lock")
            }
        }
        let listener = AbortOnDropHandle::new(tokio::spawn(listen(self.core.clone())));
        // The first try comes at once (the tree is up a moment later); then one per heartbeat.
        myself.send_after(Duration::from_millis(200), || ClusterMsg::Tick);
        myself.send_interval(self.core.config().cluster.heartbeat, || ClusterMsg::Tick);
        Ok(ClusterState {
            led_since: lock.as_ref().map(|_| std::time::Instant::now()),
            lock: lock.unwrap_or_default(),
            _listener: listener,
            ticks: 0,
        })
    }

    async fn post_stop(
        &self,
        _: ActorRef<ClusterMsg>,
        st: &mut ClusterState,
    ) -> Result<(), ActorProcessingErr> {
        st.lock.release().await;
        self.core.cluster().set_leader(false);
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<ClusterMsg>,
        msg: ClusterMsg,
        st: &mut ClusterState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ClusterMsg::Tick => {
                st.ticks += 1;
                let cluster = self.core.cluster();
                match self
                    .core
                    .store()
                    .node_heartbeat(cluster.node_id(), &cluster.instance())
                    .await
                {
                    Ok(false) => {
                        // Its running jobs were queued again for when it is back: going on would run them
                        // twice. It stops at once (its agents die with it) and comes back as a new start.
                        tracing::error!(target: "televibe.cluster", node_id = cluster.node_id(), exit_code = FENCED_EXIT, "This node had been taken for gone (no heartbeat for cluster.node_timeout_secs; its running jobs were queued again), or another node took its name: stopping so that no job runs twice");
                        cluster
                            .fence("this node was taken for gone, or another node took its name");
                        return Ok(());
                    }
                    Ok(true) => {}
                    Err(e) => {
                        tracing::warn!(target: "televibe.cluster", error = %e, "heartbeat not written")
                    }
                }
                if self.core.is_shutting_down() {
                    return Ok(());
                }
                // A restarted actor (the lock went with its state) first drops what its predecessor led.
                if st.ticks == 1
                    && !st.lock.held()
                    && let Some(root) = self.core.root()
                {
                    let _ =
                        ractor::call_t!(root, SupervisorMsg::RemoveChildren, 30_000, self.names());
                }
                if st.lock.held() {
                    if !st.lock.still_held().await {
                        st.led_since = None;
                        self.step_down("the lock's connection was lost").await;
                    }
                } else if let Some(dial) = self.core.store().dial() {
                    match st.lock.try_take(&dial).await {
                        Ok(true) => {
                            st.led_since = Some(std::time::Instant::now());
                            self.step_up(st).await
                        }
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(target: "televibe.cluster", error = %e, "leader's lock not tried")
                        }
                    }
                }
                // A new leader gives the others a full timeout to be heard from before taking any for gone
                // (their heartbeats may have waited on the database, as its own did).
                if cluster.is_leader()
                    && st
                        .led_since
                        .is_some_and(|t| t.elapsed() >= self.core.config().cluster.node_timeout)
                {
                    cluster.watch_nodes().await;
                    if st.ticks % 1800 == 1 {
                        let _ = self.core.store().prune_calls().await;
                    }
                }
                cluster.count_nodes().await;
                cluster.sweep().await;
            }
            ClusterMsg::Below(reply) => {
                let cluster = self.core.cluster();
                let role = if cluster.is_leader() {
                    "leader"
                } else {
                    "follower"
                };
                let _ = reply.send(vec![TreeNode {
                    name: format!("node:{} ({role})", cluster.node_id()),
                    status: "running".into(),
                    restarts: 0,
                    uptime_secs: self.core.started().elapsed().as_secs(),
                    children: Vec::new(),
                }]);
            }
            ClusterMsg::Panic => panic!("injected panic in cluster actor"),
        }
        Ok(())
    }
}
