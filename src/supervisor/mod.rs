//! A one-for-one supervisor actor: restarts a failed child with exponential backoff inside a restart budget.
//!
//! The budget is Erlang's intensity rule: more than `max_restarts` restarts within `window` and the supervisor
//! gives up by failing itself, which escalates to its parent; at the root it ends the process non-zero.
//! Children are spawned in order and stopped in reverse order. The supervisor also answers for the live tree.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{
    Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr, SupervisionEvent,
};
use tokio::sync::mpsc;

use crate::config::RestartPolicy;

mod drills;
mod spec;
mod tree;

pub use tree::{NodeStatus, TreeNode};

use crate::telemetry::Metrics;
pub use drills::DrillFn;
use drills::inject_panic;
pub use spec::{BelowFn, ChildMessage, ChildSpec, InitialChildren, Restart};

/// Why a supervisor refused a request (a drill, a new child).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SupervisorError {
    #[error("no actor named {name:?} under {supervisor}")]
    NoSuchChild { name: String, supervisor: String },
    #[error("no supervisor named {name:?} under {supervisor}")]
    NoSuchSupervisor { name: String, supervisor: String },
    #[error("actor {0} is not running")]
    NotRunning(String),
    #[error("supervisor {0} is shutting down")]
    ShuttingDown(String),
    #[error("{0} is already running")]
    AlreadyRunning(String),
    #[error("starting {name} failed: {reason}")]
    StartFailed { name: String, reason: String },
    /// A child supervisor or actor did not take the request.
    #[error("{0}")]
    Unreachable(String),
}

/// How a child ended, as the supervisor saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum ChildExit {
    /// It panicked or its handler returned an error.
    Failed(String),
    /// It stopped by itself (normal for a transient child, a failure for a permanent one).
    Stopped(Option<String>),
    /// Its restart did not start.
    RestartFailed(String),
}

impl std::fmt::Display for ChildExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChildExit::Failed(e) => write!(f, "failed: {e}"),
            ChildExit::Stopped(reason) => {
                write!(f, "stopped: {}", reason.as_deref().unwrap_or("no reason"))
            }
            ChildExit::RestartFailed(e) => write!(f, "restart failed: {e}"),
        }
    }
}

struct ChildRecord {
    spec: ChildSpec,
    cell: Option<ActorCell>,
    status: NodeStatus,
    restarts: u64,
    started: Instant,
}

pub struct SupervisorState {
    name: String,
    policy: RestartPolicy,
    children: Vec<ChildRecord>,
    recent: VecDeque<Instant>,
    started: Instant,
    shutting_down: bool,
    metrics: Option<Arc<Metrics>>,
    exhausted: Option<mpsc::UnboundedSender<String>>,
}

/// Arguments of a supervisor.
pub struct SupervisorArgs {
    pub name: String,
    pub policy: RestartPolicy,
    pub children: Vec<ChildSpec>,
    pub metrics: Option<Arc<Metrics>>,
    /// Told why, when the restart budget runs out (the root's owner exits non-zero on it).
    pub exhausted: Option<mpsc::UnboundedSender<String>>,
    /// More children, built at every start of the supervisor (after `children`).
    pub initial: Option<InitialChildren>,
}

pub enum SupervisorMsg {
    /// Start a child again after its backoff.
    Restart(String),
    /// The live tree below and including this supervisor.
    Tree(RpcReplyPort<TreeNode>),
    /// True while every child runs (the watchdog pings only then).
    Healthy(RpcReplyPort<bool>),
    /// Failure drill: make the named child panic.
    PanicChild(String, RpcReplyPort<Result<(), SupervisorError>>),
    /// The cell of a running child, by name.
    Child(String, RpcReplyPort<Option<ActorCell>>),
    /// Start one more child (dynamic children such as sessions).
    StartChild(ChildSpec, RpcReplyPort<Result<(), SupervisorError>>),
    /// Stop the children in reverse start order, then answer.
    Shutdown(RpcReplyPort<()>),
    /// Stop these children now, for good (the fronts, first in a shutdown), then answer.
    StopChildren(Vec<String>, RpcReplyPort<()>),
    /// Stop these children and forget them (a follower giving up the leader's children): the same names
    /// may be started again later with `StartChild`.
    RemoveChildren(Vec<String>, RpcReplyPort<()>),
    /// Test hook: the supervisor itself panics (escalation drills).
    InjectedPanic,
}

impl ChildMessage for SupervisorMsg {
    fn injected_panic() -> Self {
        SupervisorMsg::InjectedPanic
    }
}

pub struct Supervisor;

impl SupervisorState {
    /// The cell of a running child, by name.
    fn cell_of(&self, name: &str) -> Option<ActorCell> {
        self.children
            .iter()
            .find(|c| c.spec.name == name)
            .and_then(|c| c.cell.clone())
    }

    /// Every child runs and no shutdown began (the watchdog pings only then).
    fn healthy(&self) -> bool {
        !self.shutting_down
            && self
                .children
                .iter()
                .all(|c| c.status == NodeStatus::Running)
    }

    fn find(&mut self, cell: &ActorCell) -> Option<usize> {
        self.children
            .iter()
            .position(|c| c.cell.as_ref().is_some_and(|x| x.get_id() == cell.get_id()))
    }

    /// Records one restart against the budget; false when the budget is exhausted.
    fn charge_restart(&mut self) -> bool {
        let now = Instant::now();
        self.recent.push_back(now);
        while let Some(first) = self.recent.front() {
            if now.duration_since(*first) > self.policy.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        self.recent.len() as u32 <= self.policy.max_restarts
    }

    fn backoff(&self) -> Duration {
        let n = self.recent.len().saturating_sub(1).min(16) as u32;
        (self.policy.backoff_initial * 2u32.pow(n)).min(self.policy.backoff_max)
    }

    async fn start_child(
        &mut self,
        idx: usize,
        myself: &ActorRef<SupervisorMsg>,
    ) -> Result<(), SpawnErr> {
        let spawn = self.children[idx].spec.spawn.clone();
        let cell = spawn(myself.get_cell()).await?;
        let rec = &mut self.children[idx];
        rec.cell = Some(cell);
        rec.status = NodeStatus::Running;
        rec.started = Instant::now();
        Ok(())
    }

    /// A child ended unexpectedly: restart it after backoff, or give up when the budget is spent.
    fn on_child_exit(
        &mut self,
        idx: usize,
        why: ChildExit,
        myself: &ActorRef<SupervisorMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let name = self.children[idx].spec.name.clone();
        self.children[idx].cell = None;
        self.children[idx].status = NodeStatus::Restarting;
        if !self.charge_restart() {
            let msg = format!(
                "supervisor {}: restart budget exhausted ({} restarts within {} s); last failure in {name}: {why}",
                self.name,
                self.policy.max_restarts,
                self.policy.window.as_secs()
            );
            tracing::error!(target: "televibe.supervisor", critical = true, supervisor = %self.name, actor = %name, "{msg}");
            if let Some(tx) = &self.exhausted {
                let _ = tx.send(msg.clone());
            }
            return Err(msg.into());
        }
        let delay = self.backoff();
        tracing::warn!(target: "televibe.supervisor", supervisor = %self.name, actor = %name, reason = %why, backoff_ms = delay.as_millis() as u64, "Actor failed; restarting after backoff");
        myself.send_after(delay, move || SupervisorMsg::Restart(name));
        Ok(())
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let mut state = SupervisorState {
            name: args.name,
            policy: args.policy,
            children: args
                .children
                .into_iter()
                .map(|spec| ChildRecord {
                    spec,
                    cell: None,
                    status: NodeStatus::Stopped,
                    restarts: 0,
                    started: Instant::now(),
                })
                .collect(),
            recent: VecDeque::new(),
            started: Instant::now(),
            shutting_down: false,
            metrics: args.metrics,
            exhausted: args.exhausted,
        };
        if let Some(initial) = &args.initial {
            let more = initial()
                .await
                .map_err(|e| format!("supervisor {}: cannot build children: {e}", state.name))?;
            state
                .children
                .extend(more.into_iter().map(|spec| ChildRecord {
                    spec,
                    cell: None,
                    status: NodeStatus::Stopped,
                    restarts: 0,
                    started: Instant::now(),
                }));
        }
        for idx in 0..state.children.len() {
            if let Some(m) = &state.metrics {
                m.register_actor(&state.children[idx].spec.name);
            }
            state
                .start_child(idx, &myself)
                .await
                .map_err(|e| format!("starting {} failed: {e}", state.children[idx].spec.name))?;
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::InjectedPanic => panic!("injected panic in supervisor {}", state.name),
            SupervisorMsg::Restart(name) => return restart(&myself, state, &name).await,
            SupervisorMsg::Tree(reply) => _ = reply.send(state.tree().await),
            SupervisorMsg::Child(name, reply) => _ = reply.send(state.cell_of(&name)),
            SupervisorMsg::StartChild(spec, reply) => {
                _ = reply.send(start_new_child(&myself, state, spec).await)
            }
            SupervisorMsg::Healthy(reply) => _ = reply.send(state.healthy()),
            SupervisorMsg::PanicChild(name, reply) => {
                _ = reply.send(inject_panic(state, &name).await)
            }
            SupervisorMsg::Shutdown(reply) => {
                shutdown_children(state).await;
                _ = reply.send(());
            }
            SupervisorMsg::StopChildren(names, reply) => {
                stop_children(state, &names).await;
                _ = reply.send(());
            }
            SupervisorMsg::RemoveChildren(names, reply) => {
                stop_children(state, &names).await;
                state.children.retain(|c| !names.contains(&c.spec.name));
                _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, exit) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, ChildExit::Failed(err.to_string())),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, ChildExit::Stopped(reason))
            }
            _ => return Ok(()),
        };
        if state.shutting_down {
            return Ok(());
        }
        let Some(idx) = state.find(&cell) else {
            return Ok(());
        };
        // A transient child that stopped normally is done; every other unexpected exit is a failure.
        if state.children[idx].spec.restart == Restart::Transient
            && matches!(exit, ChildExit::Stopped(_))
        {
            state.children.remove(idx);
            return Ok(());
        }
        state.on_child_exit(idx, exit, &myself)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        shutdown_children(state).await;
        Ok(())
    }
}

async fn restart(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    name: &str,
) -> Result<(), ActorProcessingErr> {
    if state.shutting_down {
        return Ok(());
    }
    let Some(idx) = state.children.iter().position(|c| c.spec.name == name) else {
        return Ok(());
    };
    if state.children[idx].status != NodeStatus::Restarting {
        return Ok(());
    }
    state.children[idx].restarts += 1;
    if let Some(m) = &state.metrics {
        m.actor_restarted(name);
    }
    match state.start_child(idx, myself).await {
        Ok(()) => {
            tracing::info!(target: "televibe.supervisor", supervisor = %state.name, actor = name, restarts = state.children[idx].restarts, "Actor restarted");
            Ok(())
        }
        Err(e) => state.on_child_exit(idx, ChildExit::RestartFailed(e.to_string()), myself),
    }
}

async fn start_new_child(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    spec: ChildSpec,
) -> Result<(), SupervisorError> {
    if state.shutting_down {
        return Err(SupervisorError::ShuttingDown(state.name.clone()));
    }
    if state.children.iter().any(|c| c.spec.name == spec.name) {
        return Err(SupervisorError::AlreadyRunning(spec.name));
    }
    if let Some(m) = &state.metrics {
        m.register_actor(&spec.name);
    }
    state.children.push(ChildRecord {
        spec,
        cell: None,
        status: NodeStatus::Stopped,
        restarts: 0,
        started: Instant::now(),
    });
    let idx = state.children.len() - 1;
    if let Err(e) = state.start_child(idx, myself).await {
        let rec = state.children.remove(idx);
        return Err(SupervisorError::StartFailed {
            name: rec.spec.name,
            reason: e.to_string(),
        });
    }
    Ok(())
}

/// Stops the named children in reverse start order; taking their cells first means their ends are not
/// seen as failures.
async fn stop_children(state: &mut SupervisorState, names: &[String]) {
    for child in state.children.iter_mut().rev() {
        if !names.contains(&child.spec.name) {
            continue;
        }
        if let Some(cell) = child.cell.take() {
            let _ = cell
                .stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(10)))
                .await;
        }
        child.status = NodeStatus::Stopped;
    }
}

async fn shutdown_children(state: &mut SupervisorState) {
    state.shutting_down = true;
    for child in state.children.iter_mut().rev() {
        if let Some(cell) = child.cell.take() {
            let _ = cell
                .stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(10)))
                .await;
        }
        child.status = NodeStatus::Stopped;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child that panics on demand and counts its starts.
    struct Flaky {
        starts: Arc<std::sync::atomic::AtomicU32>,
    }
    enum FlakyMsg {
        Panic,
    }
    impl ChildMessage for FlakyMsg {
        fn injected_panic() -> Self {
            FlakyMsg::Panic
        }
    }
    impl Actor for Flaky {
        type Msg = FlakyMsg;
        type State = ();
        type Arguments = ();
        async fn pre_start(&self, _: ActorRef<FlakyMsg>, _: ()) -> Result<(), ActorProcessingErr> {
            self.starts
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
        async fn handle(
            &self,
            _: ActorRef<FlakyMsg>,
            msg: FlakyMsg,
            _: &mut (),
        ) -> Result<(), ActorProcessingErr> {
            match msg {
                FlakyMsg::Panic => panic!("flaky child panics on purpose"),
            }
        }
    }

    fn policy(max: u32) -> RestartPolicy {
        RestartPolicy {
            max_restarts: max,
            window: Duration::from_secs(60),
            backoff_initial: Duration::from_millis(1),
            backoff_max: Duration::from_millis(5),
        }
    }

    async fn tree(sup: &ActorRef<SupervisorMsg>) -> TreeNode {
        ractor::call!(sup, SupervisorMsg::Tree).unwrap()
    }

    async fn wait_running(sup: &ActorRef<SupervisorMsg>, restarts: u64) -> TreeNode {
        for _ in 0..500 {
            let t = tree(sup).await;
            if t.children[0].status == "running" && t.children[0].restarts == restarts {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!(
            "child never came back with {restarts} restarts: {:?}",
            tree(sup).await
        );
    }

    fn spawn_args(
        max: u32,
        starts: Arc<std::sync::atomic::AtomicU32>,
        metrics: Arc<Metrics>,
    ) -> (SupervisorArgs, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let child = ChildSpec::new("flaky", move || {
            (
                Flaky {
                    starts: starts.clone(),
                },
                (),
            )
        });
        (
            SupervisorArgs {
                name: "root".into(),
                policy: policy(max),
                children: vec![child],
                metrics: Some(metrics),
                exhausted: Some(tx),
                initial: None,
            },
            rx,
        )
    }

    #[tokio::test]
    async fn panicking_child_is_restarted_and_counted() {
        let starts = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let metrics = Arc::new(Metrics::new());
        let (args, _rx) = spawn_args(5, starts.clone(), metrics.clone());
        let (sup, _h) = Actor::spawn(None, Supervisor, args).await.unwrap();
        for n in 1..=3u64 {
            ractor::call!(sup, SupervisorMsg::PanicChild, "flaky".into())
                .unwrap()
                .unwrap();
            let t = wait_running(&sup, n).await;
            assert_eq!(t.children[0].name, "flaky");
        }
        assert_eq!(starts.load(std::sync::atomic::Ordering::SeqCst), 4);
        assert!(
            metrics
                .encode()
                .contains("televibe_actor_restarts_total{actor=\"flaky\"} 3")
        );
        assert!(ractor::call!(sup, SupervisorMsg::Healthy).unwrap());
        sup.stop(None);
    }

    #[tokio::test]
    async fn exhausted_budget_fails_the_supervisor() {
        let starts = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let (args, mut rx) = spawn_args(2, starts.clone(), Arc::new(Metrics::new()));
        let (sup, handle) = Actor::spawn(None, Supervisor, args).await.unwrap();
        for n in 1..=2u64 {
            ractor::call!(sup, SupervisorMsg::PanicChild, "flaky".into())
                .unwrap()
                .unwrap();
            wait_running(&sup, n).await;
        }
        // The third failure inside the window is one more than the budget allows.
        ractor::call!(sup, SupervisorMsg::PanicChild, "flaky".into())
            .unwrap()
            .unwrap();
        let why = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(why.contains("restart budget exhausted"), "{why}");
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(starts.load(std::sync::atomic::Ordering::SeqCst), 3);
    }
}
