//! How to start one child: its spawn function, restart kind, what the live tree shows below it, and how
//! failure drills reach it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ractor::{Actor, ActorCell, SpawnErr};

use super::TreeNode;
use super::drills::{DrillFn, Drills};

pub(super) type SpawnFuture = Pin<Box<dyn Future<Output = Result<ActorCell, SpawnErr>> + Send>>;
pub(super) type SpawnFn = Arc<dyn Fn(ActorCell) -> SpawnFuture + Send + Sync>;
type InitialFuture =
    Pin<Box<dyn Future<Output = Result<Vec<ChildSpec>, ractor::ActorProcessingErr>> + Send>>;
/// Builds children when a supervisor starts (e.g. one per open session, read from the store).
pub type InitialChildren = Arc<dyn Fn() -> InitialFuture + Send + Sync>;

type BelowFuture = Pin<Box<dyn Future<Output = Vec<TreeNode>> + Send>>;
/// Asks a child actor for the tree nodes it owns.
pub type BelowFn = Arc<dyn Fn(ActorCell) -> BelowFuture + Send + Sync>;

/// When a child is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Always: any exit the supervisor did not ask for is a failure.
    Permanent,
    /// Only after a failure (panic or error); a normal stop removes the child.
    Transient,
}

/// Messages every supervised actor accepts besides its own: a test hook that makes it panic.
pub trait ChildMessage: ractor::Message {
    /// The message that makes the actor panic inside its handler (used by failure drills only).
    fn injected_panic() -> Self;
}

/// How to (re)start one child.
#[derive(Clone)]
pub struct ChildSpec {
    pub name: String,
    pub(super) spawn: SpawnFn,
    pub(super) restart: Restart,
    /// The child is itself a `Supervisor`: the tree shows its children.
    pub(super) supervises: bool,
    /// How to ask a non-supervisor child for the nodes below it (e.g. a session's running job).
    pub(super) below: Option<BelowFn>,
    /// How failure drills reach it (`admin panic`, only with `debug.test_hooks`).
    pub(super) drills: Drills,
}

impl ChildSpec {
    /// A child built by `make` each time it (re)starts.
    pub fn new<A, F>(name: &str, make: F) -> ChildSpec
    where
        A: Actor,
        A::Msg: ChildMessage,
        F: Fn() -> (A, A::Arguments) + Send + Sync + 'static,
    {
        let make = Arc::new(make);
        ChildSpec {
            name: name.to_string(),
            spawn: Arc::new(move |sup: ActorCell| {
                let (actor, args) = make();
                Box::pin(async move {
                    // Names stay in the supervisor, not ractor's process-global registry, so several
                    // trees can live in one process (tests) and names never collide across hosts.
                    Actor::spawn_linked(None, actor, args, sup)
                        .await
                        .map(|(r, _)| r.get_cell())
                })
            }),
            restart: Restart::Permanent,
            supervises: false,
            below: None,
            drills: Drills::of::<A::Msg>(),
        }
    }

    /// Restarted only after failures; a normal stop removes it.
    pub fn transient(mut self) -> ChildSpec {
        self.restart = Restart::Transient;
        self
    }

    /// Lets failure drills reach what the child owns.
    pub fn with_drill(mut self, drill: DrillFn) -> ChildSpec {
        self.drills.below = Some(drill);
        self
    }

    /// Lets the live tree show what the child owns (it is no supervisor but has children).
    pub fn with_below(mut self, below: BelowFn) -> ChildSpec {
        self.below = Some(below);
        self
    }

    /// Marks a child that is a `Supervisor`, so the live tree descends into it.
    pub fn supervisor(mut self) -> ChildSpec {
        self.supervises = true;
        self
    }
}
