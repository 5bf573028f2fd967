//! The session's queue: starting the next job (one at a time, a run slot and the breaker permitting), the
//! runner's end, heartbeats gone silent, cancels, and the jobs a runner left behind.

use super::*;
use crate::breaker::{BreakerPermit, BreakerState};
use crate::core::Core;
use crate::core::jobs::Ending;
use crate::core::jobs::outcome::StopReason;
use crate::core::jobs::process;
use crate::core::jobs::runner::{Runner, RunnerArgs, RunnerMsg};
use crate::domain::{ErrorType, Job, JobStatus, SessionState};
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
            Report::Done { job_id } => self.runner_done(myself, st, &job_id, None).await,
            Report::Started { job_id, pgid } => {
                if let Some(r) = st.running.as_mut().filter(|r| r.job_id == job_id) {
                    r.pgid = Some(pgid);
                }
            }
            Report::Alive { job_id } => {
                if let Some(r) = st.running.as_mut().filter(|r| r.job_id == job_id) {
                    r.last_heartbeat = Instant::now();
                }
            }
        }
    }

    pub(super) async fn try_start(
        &self,
        myself: &ActorRef<SessionMsg>,
        st: &mut SessionActorState,
    ) {
        // In read-only mode jobs cannot be recorded, so none starts (spec: "Jobs cannot be created").
        if st.running.is_some()
            || st.waiting_for_slot
            || st.session.worktree_missing
            || self.core.store().is_read_only()
            || !matches!(st.session.state, SessionState::Idle | SessionState::Running)
        {
            return;
        }
        match self.core.store().queued_jobs(&st.session.id).await {
            Ok(q) if !q.is_empty() => {}
            _ => return,
        }
        // An agent started in a vanished directory would fail at once (or write somewhere else):
        // the jobs wait in the queue until the worktree is recovered.
        if !self.check_worktree(st).await {
            return;
        }
        // The breaker of the session's agent (`claude_code` for Claude Code).
        let agent_breaker = crate::agents::of_session(&st.session).breaker();
        let breaker = self.core.breakers().get(agent_breaker);
        if breaker.state() == BreakerState::Closed {
            *self
                .core
                .claude_notice()
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = None;
        }
        let Ok(breaker_permit) = self.core.breakers().acquire(agent_breaker) else {
            // Jobs stay queued; the tick tries again, and the half-open breaker lets exactly one through.
            self.core.notify_claude_unavailable(&st.session).await;
            return;
        };
        match self.core.job_slots().clone().try_acquire_owned() {
            Ok(permit) => self.start_next(myself, st, permit, breaker_permit).await,
            Err(_) => {
                st.waiting_for_slot = true;
                st.pending_breaker = Some(breaker_permit);
                let (slots, me) = (self.core.job_slots().clone(), myself.clone());
                tokio::spawn(async move {
                    if let Ok(permit) = slots.acquire_owned().await {
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
        let core = &self.core;
        let next = core
            .store()
            .queued_jobs(&st.session.id)
            .await
            .ok()
            .and_then(|q| q.into_iter().next());
        let (Some(job), Ok(project)) = (next, core.get_project(&st.session.project_id).await)
        else {
            return;
        };
        if let Ok(Some(fresh)) = core.store().session(&st.session.id).await {
            st.session = fresh;
        }
        let _ = core
            .store()
            .set_session_state(&st.session.id, SessionState::Running)
            .await;
        st.session.state = SessionState::Running;
        core.refresh_session_metrics().await;
        let args = RunnerArgs {
            job: job.clone(),
            session: st.session.clone(),
            project,
            permit,
            breaker: Some(breaker),
            report_to: {
                let me = myself.clone();
                Arc::new(move |report| {
                    let _ = me.cast(SessionMsg::Runner(report));
                })
            },
        };
        let runner = Runner { core: core.clone() };
        match Actor::spawn_linked(None, runner, args, myself.get_cell()).await {
            Ok((runner, _)) => {
                st.running = Some(Running {
                    job_id: job.id,
                    runner,
                    last_heartbeat: Instant::now(),
                    started: Instant::now(),
                    pgid: None,
                });
            }
            Err(e) => {
                let why = format!("cannot start the agent: {e}");
                tracing::error!(target: "televibe.sessions", job_id = %job.id, error = %why, "Job failed to start");
                let recorded = core
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
        if st.running.as_ref().is_none_or(|r| r.job_id != job_id) {
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
        if st.session.state == SessionState::Running {
            let _ = self
                .core
                .store()
                .set_session_state(&st.session.id, SessionState::Idle)
                .await;
            st.session.state = SessionState::Idle;
            self.core.refresh_session_metrics().await;
        }
    }

    pub(super) async fn tick(&self, myself: &ActorRef<SessionMsg>, st: &mut SessionActorState) {
        let stale = st
            .running
            .as_ref()
            .filter(|r| r.last_heartbeat.elapsed() > heartbeat_limit(&self.core))
            .map(|r| (r.job_id.clone(), r.runner.clone()));
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
        if let Some(r) = st.running.as_ref().filter(|r| r.job_id == job_id) {
            let _ = r
                .runner
                .cast(RunnerMsg::Stop(StopReason::Canceled { by: by.to_string() }));
            return Ok(());
        }
        cancel_queued(&self.core, job_id, &format!("canceled by {by}")).await
    }
}

/// Kills what is left of a job's process group and fails it (`internal`).
pub(super) async fn fail_orphan(core: &Core, job: &Job, why: &str) {
    if let Some(pgid) = job.recorded_group() {
        process::signal_group(pgid, libc::SIGKILL);
    }
    if core
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
    core.end_job(&job, Ending::canceled(why)).await?;
    Ok(())
}
