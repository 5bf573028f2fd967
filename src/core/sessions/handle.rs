//! `SessionHandle`: the typed way to a session's actor. Jobs are queued, canceled, stopped and killed, and
//! a wait for a person is told, only through it; the actor owns the session's row and its queue.

use ractor::ActorRef;

use super::actor::{CloseRequest, SessionMsg};
use super::{Closed, Recovered};
use crate::core::jobs::outcome::StopReason;
use crate::domain::Job;
use crate::errors::CoreError;

/// A running session actor.
#[derive(Clone)]
pub struct SessionHandle {
    session_id: String,
    actor: ActorRef<SessionMsg>,
}

impl SessionHandle {
    pub(super) fn new(session_id: &str, actor: ActorRef<SessionMsg>) -> SessionHandle {
        SessionHandle {
            session_id: session_id.to_string(),
            actor,
        }
    }

    fn no_answer(&self, e: impl std::fmt::Display) -> CoreError {
        CoreError::internal(format!("session {} did not answer: {e}", self.session_id))
    }

    /// A job was queued (its row written): it joins the end of the session's queue.
    pub fn enqueued(&self, job: Job) {
        let _ = self.actor.cast(SessionMsg::Enqueued(Box::new(job)));
    }

    /// Cancels a queued job at once, or stops the running one (TERM, grace, KILL).
    pub async fn cancel(&self, job_id: &str, by: &str) -> Result<(), CoreError> {
        ractor::call_t!(
            self.actor,
            SessionMsg::CancelJob,
            10_000,
            job_id.to_string(),
            by.to_string()
        )
        .map_err(|e| self.no_answer(e))?
    }

    /// Stops the running job for a reason (an approval expired, or a person denied and stopped it).
    pub fn stop(&self, job_id: &str, reason: StopReason) {
        let _ = self
            .actor
            .cast(SessionMsg::StopJob(job_id.to_string(), reason));
    }

    /// The manual-termination runbook for the running job; false when it does not run here.
    pub async fn kill(&self, job_id: &str) -> bool {
        ractor::call_t!(self.actor, SessionMsg::KillJob, 10_000, job_id.to_string())
            .unwrap_or(false)
    }

    /// The running job waits for a person (`true`) or goes on (`false`): the session shows `blocked`
    /// while it waits. Answers once the session's row says so.
    pub async fn waiting_for_person(&self, job_id: &str, waiting: bool) {
        let _ = ractor::call_t!(
            self.actor,
            SessionMsg::WaitingForPerson,
            10_000,
            job_id.to_string(),
            waiting
        );
    }

    /// Closes the session; `limit_ms` covers its git work.
    pub async fn close(&self, req: CloseRequest, limit_ms: u64) -> Result<Closed, CoreError> {
        ractor::call_t!(self.actor, SessionMsg::Close, limit_ms, req)
            .map_err(|e| self.no_answer(e))?
    }

    /// Brings a missing worktree back; `limit_ms` covers its git work.
    pub async fn recover(&self, by: &str, limit_ms: u64) -> Result<Recovered, CoreError> {
        ractor::call_t!(self.actor, SessionMsg::Recover, limit_ms, by.to_string())
            .map_err(|e| self.no_answer(e))?
    }
}
