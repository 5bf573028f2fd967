//! The session's queue, kept in the actor: jobs joining it, starting the next (one at a time, a run slot and
//! the breaker permitting), the runner's decision that ends a job, heartbeats gone silent, cancels, and the
//! jobs a runner left behind.

use super::*;
use crate::breaker::{BreakerPermit, BreakerState};
use crate::core::Core;
use crate::core::jobs::Ending;
use crate::core::jobs::outcome::StopReason;
use crate::core::jobs::process;
use crate::core::jobs::runner::{Runner, RunnerArgs, RunnerMsg};
use crate::domain::{ErrorType, Job, JobKind, JobStatus, SessionState};
use crate::errors::CoreError;
use ractor::{Actor, ActorRef};
use std::time::Instant;
use tokio::sync::OwnedSemaphorePermit;

impl SessionActor {
    /// What the running job's runner reports.
    pub(super) async fn on_report(
        &self,
        myself: &ActorRef<SessionMsg>,
        st: &mut SessionActorState,
        report: Report,
    ) {
        match report {
            Report::Decided { job_id, ending } => self.decided(myself, st, &job_id, ending).await,
            Report::Started { job_id, pgid } => {
                if let Some(r) = st.running.as_mut().filter(|r| r.job.id == job_id) {
                    r.pgid = Some(pgid);
                }
            }
            Report::Conversation { job_id, agent, id } => {
                if st.running.as_ref().is_some_and(|r| r.job.id == job_id)
                    && st.session.conversation(agent) != Some(id.as_str())
                {
                    st.session.set_conversation(agent, &id);
                    let _ = self
                        .core
                        .store()
                        .set_conversation_id(
                            &st.session.id,
                            agent,
                            Some(&id),
                            &st.session.conversations,
                        )
                        .await;
                }
            }
            Report::Alive { job_id } => {
                if let Some(r) = st.running.as_mut().filter(|r| r.job.id == job_id) {
                    r.last_heartbeat = Instant::now();
                }
            }
        }
    }

    /// A job was queued: it joins the end of the queue (once: the queue loaded at start may have it).
    pub(super) fn enqueued(
        &self,
        myself: &ActorRef<SessionMsg>,
        st: &mut SessionActorState,
        job: Job,
    ) {
        let known = st.queue.iter().any(|j| j.id == job.id)
            || st.running.as_ref().is_some_and(|r| r.job.id == job.id);
        if !known && job.status == JobStatus::Queued {
            st.queue.push_back(job);
            self.queue_gauge(st);
        }
        let _ = myself.cast(SessionMsg::TryStart);
    }

    /// `televibe_job_queue_size` of this session, from its queue.
    pub(super) fn queue_gauge(&self, st: &SessionActorState) {
        self.core
            .metrics()
            .job_queue_size
            .get_or_create(&crate::telemetry::SessionLabel {
                session_id: st.session.id.clone(),
            })
            .set(st.queue.len() as i64);
    }

    /// The running job waits for a person, or goes on: the session's row shows `blocked` meanwhile (only
    /// a session still running, or still blocked by that wait, changes: it may have been closed).
    pub(super) async fn waiting_for_person(
        &self,
        st: &mut SessionActorState,
        job_id: &str,
        waiting: bool,
    ) {
        let (from, to) = if waiting {
            (SessionState::Running, SessionState::Blocked)
        } else {
            (SessionState::Blocked, SessionState::Running)
        };
        // A wait that ends after its job did (canceled while it asked) leaves the session idle.
        if st.running.as_ref().is_none_or(|r| r.job.id != job_id) {
            return;
        }
        if let Ok(true) = self
            .core
            .store()
            .set_session_state_if(&st.session.id, from, to)
            .await
        {
            st.session.state = to;
        }
    }

    pub(super) async fn try_start(
        &self,
        myself: &ActorRef<SessionMsg>,
        st: &mut SessionActorState,
    ) {
        // A push needs no run slot: one that came to the head while the job before it waited for a slot
        // (and was canceled) does not wait for that slot either.
        let push_next = st.queue.front().is_some_and(|j| j.kind == JobKind::Push);
        // In read-only mode jobs cannot be recorded, so none starts (spec: "Jobs cannot be created").
        if st.running.is_some()
            || (st.waiting_for_slot && !push_next)
            || st.session.worktree_missing
            || self.core.store().is_read_only()
            || !matches!(st.session.state, SessionState::Idle | SessionState::Running)
        {
            return;
        }
        if st.queue.is_empty() {
            return;
        }
        // An agent started in a vanished directory would fail at once (or write somewhere else):
        // the jobs wait in the queue until the worktree is recovered.
        if !self.check_worktree(st).await {
            return;
        }
        // A push runs no agent: no usage limit, breaker or run slot holds it.
        if push_next {
            // The agent's breaker permit taken for a job that waited for a slot goes back (neutral); the
            // slot, when it comes while the push runs, goes back too (`slot_granted`).
            st.pending_breaker = None;
            return self.start_push(myself, st).await;
        }
        // The next job waits for its agent's usage limit: the queue holds until the reset.
        if let Some(until) = self.usage_wait(st) {
            // Its own limit was told when it was queued again; another job's limit of the same agent is
            // told here, once.
            let own = st
                .queue
                .front()
                .and_then(|j| j.not_before)
                .map(|t| t.timestamp());
            if own != Some(until) {
                let agent = next_agent(st).name();
                self.core
                    .jobs()
                    .notify_usage_limit(&st.session, agent, until)
                    .await;
            }
            self.wake_at(myself, st, until);
            return;
        }
        // The breaker of the session's agent (`claude_code` for Claude Code).
        let agent_breaker = next_agent(st).breaker();
        let breaker = self.core.breakers().get(agent_breaker);
        if breaker.state() == BreakerState::Closed {
            self.core.jobs().agent_available_again(agent_breaker);
        }
        let Ok(breaker_permit) = self.core.breakers().acquire(agent_breaker) else {
            // Jobs stay queued; the tick tries again, and the half-open breaker lets exactly one through.
            self.core
                .jobs()
                .notify_claude_unavailable(&st.session, agent_breaker)
                .await;
            return;
        };
        match self.core.jobs().try_slot() {
            Some(permit) => self.start_next(myself, st, permit, breaker_permit).await,
            None => {
                st.waiting_for_slot = true;
                st.pending_breaker = Some(breaker_permit);
                let (slot, me) = (self.core.jobs().slot(), myself.clone());
                tokio::spawn(async move {
                    if let Some(permit) = slot.await {
                        let _ = me.cast(SessionMsg::SlotGranted(permit));
                    }
                });
            }
        }
    }

    pub(super) async fn start_next(
        &self,
        myself: &ActorRef<SessionMsg>,
        st: &mut SessionActorState,
        permit: OwnedSemaphorePermit,
        breaker: BreakerPermit,
    ) {
        let Some((job, project)) = self.take_next(st).await else {
            return;
        };
        let args = RunnerArgs {
            job: job.clone(),
            session: st.session.clone(),
            project,
            permit,
            breaker: Some(breaker),
            report_to: report_to(myself),
        };
        let runner = Runner {
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

    /// Takes the next job off the queue to start it, with its project, and writes the session running.
    /// `None`: nothing queued, or its project cannot be read (the job stays at the head).
    pub(super) async fn take_next(
        &self,
        st: &mut SessionActorState,
    ) -> Option<(Job, crate::domain::Project)> {
        let core = &self.core;
        let job = st.queue.pop_front()?;
        let project = match core.projects().get_project(&st.session.project_id).await {
            Ok(p) => p,
            Err(_) => {
                st.queue.push_front(job);
                return None;
            }
        };
        self.queue_gauge(st);
        let _ = core
            .store()
            .set_session_state(&st.session.id, SessionState::Running)
            .await;
        st.session.state = SessionState::Running;
        core.sessions().refresh_session_metrics().await;
        Some((job, project))
    }

    /// The runner of `job` was spawned, or could not be: it runs now, or the job fails and the next
    /// may start.
    pub(super) async fn launched(
        &self,
        myself: &ActorRef<SessionMsg>,
        st: &mut SessionActorState,
        job: Job,
        spawned: Result<ActorRef<RunnerMsg>, String>,
    ) {
        let core = &self.core;
        match spawned {
            Ok(runner) => {
                st.running = Some(Running {
                    job,
                    stop_requested: None,
                    runner,
                    last_heartbeat: Instant::now(),
                    started: Instant::now(),
                    pgid: None,
                });
            }
            Err(e) => {
                let why = format!("cannot start the job: {e}");
                tracing::error!(target: "televibe.sessions", job_id = %job.id, error = %why, "Job failed to start");
                let recorded = core
                    .jobs()
                    .end_job(&job, Ending::failed(ErrorType::Internal, &why))
                    .await
                    .unwrap_or(false);
                self.set_idle(st).await;
                // Only go on when the failure is on record; otherwise the same job would start again at once.
                if recorded {
                    let _ = myself.cast(SessionMsg::TryStart);
                }
            }
        }
    }

    /// The running job ended (normally, or its runner is gone: `crash` says why).
    pub(super) async fn runner_done(
        &self,
        myself: &ActorRef<SessionMsg>,
        st: &mut SessionActorState,
        job_id: &str,
        crash: Option<String>,
    ) {
        if st.running.as_ref().is_none_or(|r| r.job.id != job_id) {
            let _ = myself.cast(SessionMsg::TryStart);
            return;
        }
        st.running = None;
        // Whatever ended the runner, its job must not stay open.
        if let Ok(Some(job)) = self.core.store().job(job_id).await
            && !job.status.is_final()
        {
            let why =
                crash.unwrap_or_else(|| "its runner ended without recording an outcome".into());
            fail_orphan(&self.core, &job, &why).await;
        }
        self.set_idle(st).await;
        let _ = myself.cast(SessionMsg::TryStart);
    }

    pub(super) async fn set_idle(&self, st: &mut SessionActorState) {
        if matches!(
            st.session.state,
            SessionState::Running | SessionState::Blocked
        ) {
            let _ = self
                .core
                .store()
                .set_session_state(&st.session.id, SessionState::Idle)
                .await;
            st.session.state = SessionState::Idle;
            self.core.sessions().refresh_session_metrics().await;
        }
    }

    pub(super) async fn tick(&self, myself: &ActorRef<SessionMsg>, st: &mut SessionActorState) {
        let stale = st
            .running
            .as_ref()
            .filter(|r| r.last_heartbeat.elapsed() > heartbeat_limit(&self.core))
            .map(|r| (r.job.id.clone(), r.runner.clone()));
        if let Some((job_id, runner)) = stale {
            tracing::error!(target: "televibe.sessions", job_id = %job_id, "Runner stopped heart-beating; killing its process group");
            runner.kill();
            st.running = None;
            if let Ok(Some(job)) = self.core.store().job(&job_id).await {
                fail_hung(&self.core, &job).await;
            }
            self.set_idle(st).await;
        }
        let _ = myself.cast(SessionMsg::TryStart);
    }

    pub(super) async fn cancel(
        &self,
        st: &mut SessionActorState,
        job_id: &str,
        by: &str,
    ) -> Result<(), CoreError> {
        if let Some(r) = st.running.as_mut().filter(|r| r.job.id == job_id) {
            let stop = StopReason::Canceled { by: by.to_string() };
            r.stop_requested.get_or_insert_with(|| stop.clone());
            let _ = r.runner.cast(RunnerMsg::Stop(stop));
            return Ok(());
        }
        if let Some(i) = st.queue.iter().position(|j| j.id == job_id) {
            st.queue.remove(i);
            self.queue_gauge(st);
        }
        cancel_queued(&self.core, job_id, &format!("canceled by {by}")).await
    }
}

/// Where a runner of this session reports: the session's mailbox.
pub(super) fn report_to(myself: &ActorRef<SessionMsg>) -> crate::core::jobs::runner::ReportTo {
    let me = myself.clone();
    Arc::new(move |report| {
        let _ = me.cast(SessionMsg::Runner(report));
    })
}

/// Kills what is left of a job's process group and fails it (`internal`).
pub(super) async fn fail_orphan(core: &Core, job: &Job, why: &str) {
    if let Some(pgid) = job.recorded_group() {
        process::signal_group(pgid, libc::SIGKILL);
    }
    if core
        .jobs()
        .end_job(job, Ending::failed(ErrorType::Internal, why))
        .await
        .unwrap_or(false)
    {
        tracing::error!(target: "televibe.sessions", job_id = %job.id, reason = why, "Job failed: its runner is gone");
    }
}

pub(super) async fn fail_hung(core: &Core, job: &Job) {
    if let Some(pgid) = job.recorded_group() {
        process::signal_group(pgid, libc::SIGKILL);
    }
    let _ = core
        .jobs()
        .end_job(
            job,
            Ending::failed(ErrorType::Hung, "its runner stopped heart-beating"),
        )
        .await;
}

/// Cancels a job that has not started; a job that already ended is left as it is.
pub(super) async fn cancel_queued(core: &Core, job_id: &str, why: &str) -> Result<(), CoreError> {
    let Some(job) = core.store().job(job_id).await? else {
        return Err(crate::core::jobs::job_not_found(job_id));
    };
    if job.status != JobStatus::Queued {
        return Ok(());
    }
    core.jobs().end_job(&job, Ending::canceled(why)).await?;
    Ok(())
}

impl SessionActor {
    /// Until when (Unix seconds) the next job waits for a usage limit: its own `not_before`, or its
    /// agent's limit known from another job. `None`: it may start.
    pub(super) fn usage_wait(&self, st: &SessionActorState) -> Option<i64> {
        let head = st.queue.front()?;
        let now = chrono::Utc::now().timestamp();
        let own = head.not_before.map(|t| t.timestamp());
        let agent = self.core.jobs().agent_limited_until(&head.agent);
        own.into_iter().chain(agent).filter(|t| *t > now).max()
    }

    /// Tries to start again at `until` (the tick tries every few seconds too).
    fn wake_at(&self, myself: &ActorRef<SessionMsg>, st: &mut SessionActorState, until: i64) {
        if st.wake_at == Some(until) {
            return;
        }
        st.wake_at = Some(until);
        let wait = (until - chrono::Utc::now().timestamp()).max(0) as u64;
        myself.send_after(std::time::Duration::from_secs(wait), || {
            SessionMsg::TryStart
        });
    }
}

/// The agent of the job next in the session's queue (the default's when none waits).
pub(super) fn next_agent(st: &SessionActorState) -> &'static dyn crate::agents::AgentDriver {
    st.queue
        .front()
        .map(crate::agents::of_job)
        .unwrap_or_else(crate::agents::default_driver)
}
