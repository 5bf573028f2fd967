//! The end of a running job's run, as its runner decided it: the job ends (the one place a running job's
//! end is written), or goes back to the head of the queue — for its agent's usage limit, or to run again
//! in a new conversation — unless a stop was asked for meanwhile.

use super::*;
use crate::core::jobs::Ending;

impl SessionActor {
    /// The runner decided how its job ends: the job is ended here (the one place a running job's end is
    /// written), then its runner stops and the next job may start.
    pub(super) async fn decided(
        &self,
        myself: &ActorRef<SessionMsg>,
        st: &mut SessionActorState,
        job_id: &str,
        ending: Ending,
    ) {
        let Some(r) = st.running.take_if(|r| r.job.id == job_id) else {
            let _ = myself.cast(SessionMsg::TryStart);
            return;
        };
        // Stopped by a person or the daemon meanwhile: a run that would go back to the queue ends so.
        let ending = match (ending, r.stop_requested.as_ref()) {
            (
                Ending::Decided {
                    decision, breaker, ..
                },
                Some(stop),
            ) if decision.usage_limited || decision.conversation_lost => {
                drop(breaker);
                let (status, error_type, reason) = crate::core::jobs::outcome::stopped(stop);
                Ending::Imposed {
                    status,
                    error_type,
                    reason,
                }
            }
            (ending, _) => ending,
        };
        // The conversation to resume is gone: the job runs again at once, in a new one.
        let ending = match ending {
            Ending::Decided {
                decision,
                elapsed,
                breaker,
            } if decision.conversation_lost => {
                match self
                    .core
                    .jobs()
                    .rerun_in_new_conversation(&r.job, &st.session, breaker)
                    .await
                {
                    Some(again) => {
                        let agent = crate::agents::of_job(&r.job).name();
                        st.session.forget_conversation(agent);
                        let _ = self
                            .core
                            .store()
                            .set_conversation_id(
                                &st.session.id,
                                agent,
                                None,
                                &st.session.conversations,
                            )
                            .await;
                        let why = "job runs again in a new conversation";
                        return self.back_to_queue(myself, st, &r.runner, again, why).await;
                    }
                    None => Ending::Decided {
                        decision,
                        elapsed,
                        breaker: None,
                    },
                }
            }
            other => other,
        };
        // A usage limit: the job goes back to the head of the queue until the reset.
        let ending = match ending {
            Ending::Decided {
                decision,
                elapsed,
                breaker,
            } if decision.usage_limited => {
                let resets = (decision.resets_at, decision.agent_reset);
                match self
                    .core
                    .jobs()
                    .wait_for_limit(&r.job, &st.session, resets, breaker)
                    .await
                {
                    Some(again) => {
                        let why = "job waits for a usage limit";
                        return self.back_to_queue(myself, st, &r.runner, again, why).await;
                    }
                    // Not running any more (or not recorded): it ends as the agent left it.
                    None => Ending::Decided {
                        decision,
                        elapsed,
                        breaker: None,
                    },
                }
            }
            other => other,
        };
        if let Err(e) = self.core.jobs().end_job(&r.job, ending).await {
            tracing::error!(target: "televibe.runner", job_id = %r.job.id, error = %e, "the job's ending was not recorded");
        }
        r.runner.stop(Some("job finished".into()));
        self.set_idle(st).await;
        let _ = myself.cast(SessionMsg::TryStart);
    }

    /// The run's job went back to the queue (its row is `queued` again): its runner stops, and it waits at
    /// the head of the queue for its turn.
    async fn back_to_queue(
        &self,
        myself: &ActorRef<SessionMsg>,
        st: &mut SessionActorState,
        runner: &ActorRef<RunnerMsg>,
        again: crate::domain::Job,
        why: &str,
    ) {
        runner.stop(Some(why.into()));
        st.queue.push_front(again);
        self.queue_gauge(st);
        self.set_idle(st).await;
        let _ = myself.cast(SessionMsg::TryStart);
    }
}
