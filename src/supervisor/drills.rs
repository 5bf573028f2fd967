//! Failure drills (`televibe admin panic`, `debug_panic_actor`; only with `debug.test_hooks`): how a drill
//! reaches a child by its path and makes it panic inside its own handler, so the supervision that follows
//! is the real one.

use std::sync::Arc;

use ractor::{ActorCell, ActorRef};

use super::{ChildMessage, SupervisorError, SupervisorMsg, SupervisorState};

type PanicFn = Arc<dyn Fn(&ActorCell) + Send + Sync>;

/// Passes a failure drill (`rest` of the path) to a child that owns actors of its own.
pub type DrillFn = Arc<dyn Fn(&ActorCell, &str) -> Result<(), String> + Send + Sync>;

/// How drills reach one child: its own panic message, and optionally what it owns (a session's runner).
#[derive(Clone)]
pub struct Drills {
    pub(super) panic: PanicFn,
    pub(super) below: Option<DrillFn>,
}

impl Drills {
    pub(super) fn of<M: ChildMessage>() -> Drills {
        Drills {
            panic: Arc::new(|cell: &ActorCell| {
                let r: ActorRef<M> = cell.clone().into();
                let _ = r.cast(M::injected_panic());
            }),
            below: None,
        }
    }
}

/// `name` is a child's name, or `child/grandchild` to reach into a child supervisor.
pub(super) async fn inject_panic(
    state: &SupervisorState,
    name: &str,
) -> Result<(), SupervisorError> {
    if let Some((first, rest)) = name.split_once('/') {
        if let Some(child) = state
            .children
            .iter()
            .find(|c| c.spec.name == first && c.spec.drills.below.is_some())
        {
            let cell = child
                .cell
                .as_ref()
                .ok_or_else(|| SupervisorError::NotRunning(first.to_string()))?;
            return (child.spec.drills.below.as_ref().expect("checked"))(cell, rest)
                .map_err(SupervisorError::Unreachable);
        }
        let child = state
            .children
            .iter()
            .find(|c| c.spec.name == first && c.spec.supervises)
            .ok_or_else(|| SupervisorError::NoSuchSupervisor {
                name: first.to_string(),
                supervisor: state.name.clone(),
            })?;
        let cell = child
            .cell
            .clone()
            .ok_or_else(|| SupervisorError::NotRunning(first.to_string()))?;
        let sub: ActorRef<SupervisorMsg> = cell.into();
        return ractor::call_t!(sub, SupervisorMsg::PanicChild, 2000, rest.to_string())
            .map_err(|e| SupervisorError::Unreachable(e.to_string()))?;
    }
    let child = state
        .children
        .iter()
        .find(|c| c.spec.name == name)
        .ok_or_else(|| SupervisorError::NoSuchChild {
            name: name.to_string(),
            supervisor: state.name.clone(),
        })?;
    let cell = child
        .cell
        .as_ref()
        .ok_or_else(|| SupervisorError::NotRunning(name.to_string()))?;
    (child.spec.drills.panic)(cell);
    Ok(())
}
