//! A push at the head of the session's queue starts: its runner (`core/sessions/push.rs`) is spawned like
//! an agent's, with no run slot and no breaker permit.

use super::*;
use crate::core::sessions::push::{PushArgs, PushRunner};
use ractor::Actor;

impl SessionActor {
    /// Starts the push job at the head of the queue.
    pub(super) async fn start_push(
        &self,
        myself: &ActorRef<SessionMsg>,
        st: &mut SessionActorState,
    ) {
        let Some((job, project)) = self.take_next(st).await else {
            return;
        };
        let args = PushArgs {
            job: job.clone(),
            session: st.session.clone(),
            project,
            report_to: queue::report_to(myself),
        };
        let runner = PushRunner {
            core: self.core.clone(),
        };
        let spawned = Actor::spawn_linked(None, runner, args, myself.get_cell()).await;
        self.launched(
            myself,
            st,
            job,
            spawned.map(|(r, _)| r).map_err(|e| e.to_string()),
        )
        .await;
    }
}
