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
        // The conversation to resume is gone (the job runs again at once, in a new one), or a usage limit
        // (it waits at the head of the queue for the reset).
        let ending = match ending {
            Ending::Decided {
                decision,
                elapsed,
                breaker,
            } if decision.conversation_lost || decision.usage_limited => {
                let jobs = self.core.jobs();
                let (again, why) = if decision.conversation_lost {
                    let again = jobs
                        .rerun_in_new_conversation(&r.job, &st.session, breaker)
                        .await;
                    (again, "job runs again in a new conversation")
                } else {
                    let resets = (decision.resets_at, decision.agent_reset);
                    let again = jobs
                        .wait_for_limit(&r.job, &st.session, resets, breaker)
                        .await;
                    (again, "job waits for a usage limit")
                };
                match again {
                    Some(again) => {
                        if decision.conversation_lost {
                            self.forget_conversation(st, &r.job).await;
                        }
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

    /// The session's conversation of `job`'s agent is gone: its next job starts a new one.
    async fn forget_conversation(&self, st: &mut SessionActorState, job: &crate::domain::Job) {
        let agent = crate::agents::of_job(job).name();
        st.session.forget_conversation(agent);
        let _ = self
            .core
            .store()
            .set_conversation_id(&st.session.id, agent, None, &st.session.conversations)
            .await;
    }
}
