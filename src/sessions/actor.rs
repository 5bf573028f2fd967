//! `session:S<n>`: owns one open session's state; closing runs here. Restarted from its SQLite row.

use std::path::Path;
use std::sync::Arc;

use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use serde_json::json;
use tokio::sync::OwnedSemaphorePermit;

use super::{Closed, Recovered, RecoveryAction, subject, worktree_present};
use crate::breaker::{BreakerName, BreakerPermit, BreakerState};
use crate::core::Core;
use crate::domain::{ErrorType, Job, JobStatus, Session, SessionState};
use crate::errors::{CoreError, ErrorCode};
use crate::events::{Event, Scope};
use crate::jobs::Ending;
use crate::jobs::outcome::StopReason;
use crate::jobs::process;
use crate::jobs::runner::{Runner, RunnerArgs, RunnerMsg};
use crate::supervisor::{ChildMessage, TreeNode};

pub struct SessionActor {
    pub core: Arc<Core>,
    pub id: String,
}

/// Who closes, and how.
#[derive(Debug, Clone)]
pub struct CloseRequest {
    pub actor: String,
    /// Close even with uncommitted changes or a busy session (changes are discarded).
    pub force: bool,
    /// Delete the branch too (kept by default).
    pub delete_branch: bool,
}

mod recover;

pub enum SessionMsg {
    Snapshot(RpcReplyPort<Session>),
    Close(CloseRequest, RpcReplyPort<Result<Closed, CoreError>>),
    /// Start the next queued job if the session, the breaker and a run slot allow it.
    TryStart,
    SlotGranted(OwnedSemaphorePermit),
    RunnerDone(String),
    /// The runner's process group is up (job id, pgid).
    RunnerStarted(String, i32),
    Heartbeat(String),
    /// Cancel a job of this session (job id, who).
    CancelJob(String, String, RpcReplyPort<Result<(), CoreError>>),
    /// Stop the running job for a reason (an approval expired, or a person denied and stopped it).
    StopJob(String, StopReason),
    /// The manual-termination runbook for the running job; false when it is not running here.
    KillJob(String, RpcReplyPort<bool>),
    Tick,
    /// Is the worktree still on disk? A missing one is marked `worktree_missing` (every
    /// `sessions.worktree_check_secs`, and before a job would start in it).
    CheckWorktree,
    /// Bring a missing worktree back (who asks); see `Core::recover_session`.
    Recover(String, RpcReplyPort<Result<Recovered, CoreError>>),
    /// Failure drills on the running job's runner: `runner` (panic) or `runner-stall` (stops heart-beating).
    Drill(String),
    /// The tree nodes below this session: its running job's runner.
    Below(RpcReplyPort<Vec<TreeNode>>),
    Panic,
}

impl ChildMessage for SessionMsg {
    fn injected_panic() -> Self {
        SessionMsg::Panic
    }
}

/// The job this session runs now.
struct Running {
    job_id: String,
    runner: ActorRef<RunnerMsg>,
    last_heartbeat: Instant,
    started: Instant,
    pgid: Option<i32>,
}

pub struct SessionActorState {
    session: Session,
    core: Arc<Core>,
    me: ActorRef<SessionMsg>,
    running: Option<Running>,
    waiting_for_slot: bool,
    /// The `claude_code` permit taken for the job waiting for a run slot (returned if dropped).
    pending_breaker: Option<BreakerPermit>,
}

/// A runner that stops heart-beating this long is presumed dead (spec RTO: 60 s).
fn heartbeat_limit(core: &Core) -> Duration {
    core.config().jobs.heartbeat_timeout
}

impl Drop for SessionActorState {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            // The runner and its processes die with their session; whoever comes next fails the job.
            r.runner.kill();
            if let Some(pgid) = r.pgid {
                process::signal_group(pgid, libc::SIGKILL);
            }
        }
        let mut map = self
            .core
            .session_actors()
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if map
            .get(&self.session.id)
            .is_some_and(|r| r.get_id() == self.me.get_id())
        {
            map.remove(&self.session.id);
        }
    }
}

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionActorState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<SessionMsg>,
        _: (),
    ) -> Result<SessionActorState, ActorProcessingErr> {
        let session = self
            .core
            .store()
            .session(&self.id)
            .await?
            .ok_or_else(|| format!("session {} has no row", self.id))?;
        if session.state == SessionState::Closed {
            return Err(format!("session {} is closed", self.id).into());
        }
        // A job still `running` here lost its runner with the previous incarnation of this actor.
        for job in self.core.store().unfinished_running_jobs().await? {
            if job.session_id == session.id {
                fail_orphan(
                    &self.core,
                    &job,
                    "the session actor restarted while the job was running",
                )
                .await;
            }
        }
        if session.state == SessionState::Running
            && let Err(e) = self
                .core
                .store()
                .set_session_state(&session.id, SessionState::Idle)
                .await
        {
            tracing::warn!(target: "televibe.sessions", session_id = %session.id, error = %e, "session left running in the store");
        }
        let session = self
            .core
            .store()
            .session(&self.id)
            .await?
            .unwrap_or(session);
        self.core
            .session_actors()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(session.id.clone(), myself.clone());
        let every = (self.core.config().jobs.heartbeat_timeout / 2).min(Duration::from_secs(10));
        myself.send_interval(every, || SessionMsg::Tick);
        // Boot reconciliation checks worktrees once; this timer notices one that disappears later.
        let check = self.core.config().sessions.worktree_check;
        myself.send_interval(check, || SessionMsg::CheckWorktree);
        let _ = myself.cast(SessionMsg::TryStart);
        Ok(SessionActorState {
            session,
            core: self.core.clone(),
            me: myself,
            running: None,
            waiting_for_slot: false,
            pending_breaker: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        msg: SessionMsg,
        st: &mut SessionActorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SessionMsg::Snapshot(reply) => {
                let _ = reply.send(st.session.clone());
            }
            SessionMsg::Close(req, reply) => {
                let result = self.close(st, &req).await;
                let closed = result.is_ok();
                let _ = reply.send(result);
                if closed {
                    myself.stop(Some("closed".into()));
                }
            }
            SessionMsg::TryStart => self.try_start(&myself, st).await,
            SessionMsg::SlotGranted(permit) => {
                st.waiting_for_slot = false;
                let breaker = match st.pending_breaker.take() {
                    Some(b) => Ok(b),
                    None => self.core.breakers().acquire(BreakerName::ClaudeCode),
                };
                if let Ok(breaker) = breaker {
                    self.start_next(&myself, st, permit, breaker).await;
                }
            }
            SessionMsg::RunnerDone(job_id) => self.runner_done(&myself, st, &job_id, None).await,
            SessionMsg::RunnerStarted(job_id, pgid) => {
                if let Some(r) = st.running.as_mut().filter(|r| r.job_id == job_id) {
                    r.pgid = Some(pgid);
                }
            }
            SessionMsg::Heartbeat(job_id) => {
                if let Some(r) = st.running.as_mut().filter(|r| r.job_id == job_id) {
                    r.last_heartbeat = Instant::now();
                }
            }
            SessionMsg::CancelJob(job_id, by, reply) => {
                let _ = reply.send(self.cancel(st, &job_id, &by).await);
            }
            SessionMsg::StopJob(job_id, reason) => {
                if let Some(r) = st.running.as_ref().filter(|r| r.job_id == job_id) {
                    let _ = r.runner.cast(RunnerMsg::Stop(reason));
                }
            }
            SessionMsg::KillJob(job_id, reply) => {
                let here = st.running.as_ref().filter(|r| r.job_id == job_id);
                if let Some(r) = here {
                    let _ = r.runner.cast(RunnerMsg::Stop(StopReason::Manual));
                }
                let _ = reply.send(here.is_some());
            }
            SessionMsg::Tick => self.tick(&myself, st).await,
            SessionMsg::CheckWorktree => {
                self.check_worktree(st).await;
            }
            SessionMsg::Recover(by, reply) => {
                let result = self.recover(&myself, st, &by).await;
                let replaced = matches!(&result, Ok(r) if r.action == RecoveryAction::Replaced);
                let _ = reply.send(result);
                if replaced {
                    // This session is closed now; its successor has an actor of its own.
                    myself.stop(Some("closed".into()));
                }
            }
            SessionMsg::Drill(what) => {
                if let Some(r) = st.running.as_ref() {
                    let _ = r.runner.cast(match what.as_str() {
                        "runner-stall" => RunnerMsg::Stall,
                        _ => RunnerMsg::Panic,
                    });
                }
            }
            SessionMsg::Below(reply) => {
                let nodes = st
                    .running
                    .iter()
                    .map(|r| TreeNode {
                        name: format!("job:{}", r.job_id),
                        status: "running".into(),
                        restarts: 0,
                        uptime_secs: r.started.elapsed().as_secs(),
                        children: Vec::new(),
                    })
                    .collect();
                let _ = reply.send(nodes);
            }
            SessionMsg::Panic => panic!("injected panic in session actor {}", st.session.id),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SessionMsg>,
        evt: SupervisionEvent,
        st: &mut SessionActorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, crash) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => {
                (cell, Some(format!("runner crashed: {err}")))
            }
            SupervisionEvent::ActorTerminated(cell, ..) => (cell, None),
            _ => return Ok(()),
        };
        let Some(job_id) = st
            .running
            .as_ref()
            .filter(|r| r.runner.get_id() == cell.get_id())
            .map(|r| r.job_id.clone())
        else {
            return Ok(());
        };
        let why = crash.unwrap_or_else(|| "runner stopped before writing an outcome".into());
        self.runner_done(&myself, st, &job_id, Some(why)).await;
        Ok(())
    }
}

/// Kills what is left of a job's process group and fails it (`internal`).
async fn fail_orphan(core: &Core, job: &Job, why: &str) {
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

impl SessionActor {
    async fn try_start(&self, myself: &ActorRef<SessionMsg>, st: &mut SessionActorState) {
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
        let breaker = self.core.breakers().get(BreakerName::ClaudeCode);
        if breaker.state() == BreakerState::Closed {
            self.core
                .claude_notice_sent()
                .store(false, std::sync::atomic::Ordering::SeqCst);
        }
        let Ok(breaker_permit) = self.core.breakers().acquire(BreakerName::ClaudeCode) else {
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

    async fn start_next(
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
            session_ref: myself.clone(),
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
    async fn runner_done(
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

    async fn set_idle(&self, st: &mut SessionActorState) {
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

    async fn tick(&self, myself: &ActorRef<SessionMsg>, st: &mut SessionActorState) {
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

    /// True when the worktree is there; otherwise marks the session `worktree_missing` (once: log
    /// warning, outbox event, as boot reconciliation does) and answers false.
    async fn check_worktree(&self, st: &mut SessionActorState) -> bool {
        if st.session.worktree_missing {
            return false;
        }
        if worktree_present(Path::new(&st.session.worktree_path)) {
            return true;
        }
        if let Ok(Some(fresh)) = self.core.store().session(&st.session.id).await {
            st.session = fresh;
        }
        // A close removes the worktree on purpose; that is not a loss.
        if !st.session.state.is_open() || st.session.state == SessionState::Closing {
            return true;
        }
        if st.session.worktree_missing {
            return false;
        }
        mark_missing(&self.core, &mut st.session).await;
        false
    }

    async fn cancel(
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

    async fn close(
        &self,
        st: &mut SessionActorState,
        req: &CloseRequest,
    ) -> Result<Closed, CoreError> {
        if req.force
            && let Some(r) = st.running.take()
        {
            // The agent must not write into a worktree being removed: kill it now and record the cancel here,
            // because this actor (and the runner with it) stops once the session is closed.
            if let Some(pgid) = r.pgid {
                process::signal_group(pgid, libc::SIGKILL);
            }
            r.runner.kill();
            if let Ok(Some(job)) = self.core.store().job(&r.job_id).await {
                let _ = self
                    .core
                    .end_job(&job, Ending::canceled("its session was closed"))
                    .await;
            }
        }
        let closed = close(&self.core, &mut st.session, req).await?;
        for job in self
            .core
            .store()
            .queued_jobs(&st.session.id)
            .await
            .unwrap_or_default()
        {
            let _ = cancel_queued(&self.core, &job.id, "its session was closed").await;
        }
        Ok(closed)
    }
}

/// Records that a session's worktree is gone: the flag, a warning and the `session.worktree_missing` event.
async fn mark_missing(core: &Core, session: &mut Session) {
    // Best effort like boot reconciliation: the mark in memory stops jobs even if the store is read-only.
    if let Err(e) = core.store().set_worktree_missing(&session.id, true).await {
        tracing::error!(target: "televibe.sessions", session_id = %session.id, error = %e, "could not record a missing worktree");
    }
    session.worktree_missing = true;
    tracing::warn!(target: "televibe.sessions", session_id = %session.id, path = %session.worktree_path, "Session worktree is missing");
    core.emit(
        Scope::session(session),
        Event::WorktreeMissing {
            path: session.worktree_path.clone(),
        },
    )
    .await;
}

async fn fail_hung(core: &Core, job: &Job) {
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
async fn cancel_queued(core: &Core, job_id: &str, why: &str) -> Result<(), CoreError> {
    let Some(job) = core.store().job(job_id).await? else {
        return Err(crate::jobs::job_not_found(job_id));
    };
    if job.status != JobStatus::Queued {
        return Ok(());
    }
    core.end_job(&job, Ending::canceled(why)).await?;
    Ok(())
}

async fn close(
    core: &Core,
    session: &mut Session,
    req: &CloseRequest,
) -> Result<Closed, CoreError> {
    if let Some(fresh) = core.store().session(&session.id).await? {
        *session = fresh;
    }
    if session.state == SessionState::Closing {
        return Err(CoreError::new(
            ErrorCode::SessionClosing,
            format!("session {} is already closing", session.id),
            "wait a moment",
        ));
    }
    let busy = core.store().active_jobs_of_session(&session.id).await?;
    if busy > 0 && !req.force {
        return Err(CoreError::new(
            ErrorCode::SessionBusy,
            format!("session {} has a running job", session.id),
            "wait for it or cancel it, or close with force = true",
        ));
    }
    let project = core.get_project(&session.project_id).await?;
    let repo = Path::new(&project.repo_path);
    let worktree = Path::new(&session.worktree_path);
    if worktree.is_dir() && !req.force && core.git().is_dirty(worktree).await? {
        return Err(crate::git::GitError::Dirty(session.worktree_path.clone()).into());
    }
    let before = session.state;
    core.store()
        .set_session_state(&session.id, SessionState::Closing)
        .await?;
    if let Err(e) = core.git().remove_worktree(repo, worktree, req.force).await {
        // After a timeout the removal may still be going on: the session stays `closing` and the next
        // reconciliation finishes or reopens it. Any other refusal changed nothing: reopen it now.
        if !matches!(e, crate::git::GitError::Timeout(_)) {
            core.store().set_session_state(&session.id, before).await?;
        }
        return Err(e.into());
    }
    let branch_deleted = if req.delete_branch {
        match core.git().delete_branch(repo, &session.branch).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(target: "televibe.sessions", session_id = %session.id, error = %e, "branch kept: delete failed");
                false
            }
        }
    } else {
        false
    };
    core.store()
        .set_session_state(&session.id, SessionState::Closed)
        .await?;
    if let Some(fresh) = core.store().session(&session.id).await? {
        *session = fresh;
    }
    core.session_closed_metrics(session);
    core.refresh_session_metrics().await;
    core.audit()
        .record(
            &core.store(),
            "session.closed",
            &req.actor,
            subject(session),
            json!({"force": req.force, "branch": session.branch, "branch_deleted": branch_deleted}),
        )
        .await;
    core.emit(
        Scope::session(session),
        Event::SessionClosed { branch_deleted },
    )
    .await;
    Ok(Closed {
        session: session.clone(),
        branch_deleted,
    })
}
