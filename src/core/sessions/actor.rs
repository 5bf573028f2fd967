//! `session:S<n>`: the one writer of an open session: its row, its queue (loaded at start, then kept here)
//! and its jobs' lives (started here, ended here with the runner's decision). Restarted from its SQLite rows.

use std::path::Path;
use std::sync::Arc;

use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::OwnedSemaphorePermit;

use super::{Closed, Recovered, RecoveryAction, worktree_present};
use crate::breaker::BreakerPermit;
use crate::core::Core;
use crate::core::events::{Event, Scope};
use crate::core::jobs::outcome::StopReason;
use crate::core::jobs::process;
use crate::core::jobs::runner::{Report, RunnerMsg};
use crate::domain::{Session, SessionState};
use crate::errors::CoreError;
use crate::supervisor::{ChildMessage, TreeNode};

pub struct SessionActor {
    pub core: Arc<Core>,
    pub id: String,
}

/// Who closes, and how.
#[derive(Debug, Clone)]
pub struct CloseRequest {
    /// Who closes it (recorded in the audit log).
    pub by: String,
    /// Close even with uncommitted changes or a busy session (changes are discarded).
    pub force: bool,
    /// Delete the branch too (kept by default).
    pub delete_branch: bool,
}

mod close;
mod decided;
mod push;
mod queue;
mod recover;

use queue::{cancel_queued, fail_orphan};

pub enum SessionMsg {
    /// A job was queued (its row is written): it joins the queue.
    Enqueued(Box<crate::domain::Job>),
    /// The running job waits for a person (true) or goes on (false): the session is `blocked` meanwhile.
    WaitingForPerson(String, bool, RpcReplyPort<()>),
    Close(CloseRequest, RpcReplyPort<Result<Closed, CoreError>>),
    /// Start the next queued job if the session, the breaker and a run slot allow it.
    TryStart,
    SlotGranted(OwnedSemaphorePermit),
    /// From the running job's runner: started (its process group), alive, its decision.
    Runner(Report),
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
    /// Bring a missing worktree back (who asks); see `Sessions::recover_session`.
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
    job: crate::domain::Job,
    /// A stop asked for (cancel, approval expiry, kill): a run that would go back to the queue ends so.
    stop_requested: Option<StopReason>,
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
    /// The queued jobs, oldest first: loaded from the store when this actor starts, kept here after.
    queue: std::collections::VecDeque<crate::domain::Job>,
    waiting_for_slot: bool,
    /// The `claude_code` permit taken for the job waiting for a run slot (returned if dropped).
    pending_breaker: Option<BreakerPermit>,
    /// When a wait for a usage limit ends and a start is tried (Unix seconds).
    wake_at: Option<i64>,
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
        let mut map = self.core.sessions().actors();
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
            .sessions()
            .actors()
            .insert(session.id.clone(), myself.get_cell());
        let every = (self.core.config().jobs.heartbeat_timeout / 2).min(Duration::from_secs(10));
        myself.send_interval(every, || SessionMsg::Tick);
        // Boot reconciliation checks worktrees once; this timer notices one that disappears later.
        let check = self.core.config().sessions.worktree_check;
        myself.send_interval(check, || SessionMsg::CheckWorktree);
        let queue = self.core.store().queued_jobs(&session.id).await?.into();
        let _ = myself.cast(SessionMsg::TryStart);
        Ok(SessionActorState {
            session,
            core: self.core.clone(),
            me: myself,
            running: None,
            queue,
            waiting_for_slot: false,
            pending_breaker: None,
            wake_at: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        msg: SessionMsg,
        st: &mut SessionActorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SessionMsg::Enqueued(job) => self.enqueued(&myself, st, *job),
            SessionMsg::WaitingForPerson(job_id, waiting, reply) => {
                self.waiting_for_person(st, &job_id, waiting).await;
                let _ = reply.send(());
            }
            SessionMsg::Close(req, reply) => self.on_close(&myself, st, req, reply).await,
            SessionMsg::TryStart => self.try_start(&myself, st).await,
            SessionMsg::SlotGranted(permit) => self.slot_granted(&myself, st, permit).await,
            SessionMsg::Runner(report) => self.on_report(&myself, st, report).await,
            SessionMsg::CancelJob(job_id, by, reply) => {
                let _ = reply.send(self.cancel(st, &job_id, &by).await);
            }
            SessionMsg::StopJob(job_id, reason) => {
                _ = tell_runner(st, &job_id, RunnerMsg::Stop(reason))
            }
            SessionMsg::KillJob(job_id, reply) => {
                let _ = reply.send(tell_runner(
                    st,
                    &job_id,
                    RunnerMsg::Stop(StopReason::Manual),
                ));
            }
            SessionMsg::Tick => self.tick(&myself, st).await,
            SessionMsg::CheckWorktree => _ = self.check_worktree(st).await,
            SessionMsg::Recover(by, reply) => self.on_recover(&myself, st, &by, reply).await,
            SessionMsg::Drill(what) => drill(st, &what),
            SessionMsg::Below(reply) => _ = reply.send(below(st)),
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
            .map(|r| r.job.id.clone())
        else {
            return Ok(());
        };
        let why = crash.unwrap_or_else(|| "runner stopped before writing an outcome".into());
        self.runner_done(&myself, st, &job_id, Some(why)).await;
        Ok(())
    }
}

impl SessionActor {
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
}

impl SessionActor {
    async fn on_close(
        &self,
        myself: &ActorRef<SessionMsg>,
        st: &mut SessionActorState,
        req: CloseRequest,
        reply: RpcReplyPort<Result<Closed, CoreError>>,
    ) {
        let result = self.close(st, &req).await;
        let closed = result.is_ok();
        let _ = reply.send(result);
        if closed {
            myself.stop(Some("closed".into()));
        }
    }

    /// A run slot came: start the next job under the breaker permit taken earlier (or a fresh one).
    async fn slot_granted(
        &self,
        myself: &ActorRef<SessionMsg>,
        st: &mut SessionActorState,
        permit: OwnedSemaphorePermit,
    ) {
        st.waiting_for_slot = false;
        // A push started meanwhile (the job that waited was canceled and a push came to the head), its
        // agent ran into a usage limit while it waited for the slot, or a push is at the head now: the slot
        // and permit go back.
        if st.running.is_some() {
            st.pending_breaker = None;
            drop(permit);
            return;
        }
        let push_next = st
            .queue
            .front()
            .is_some_and(|j| j.kind == crate::domain::JobKind::Push);
        if push_next || self.usage_wait(st).is_some() {
            st.pending_breaker = None;
            drop(permit);
            let _ = myself.cast(SessionMsg::TryStart);
            return;
        }
        // The permit was taken for the job then at the head; another agent's job there now needs its own.
        let head = queue::next_agent(st).breaker();
        let breaker = match st.pending_breaker.take().filter(|b| b.name() == head) {
            Some(b) => Ok(b),
            None => self.core.breakers().acquire(head),
        };
        if let Ok(breaker) = breaker {
            self.start_next(myself, st, permit, breaker).await;
        }
    }

    async fn on_recover(
        &self,
        myself: &ActorRef<SessionMsg>,
        st: &mut SessionActorState,
        by: &str,
        reply: RpcReplyPort<Result<Recovered, CoreError>>,
    ) {
        let result = self.recover(myself, st, by).await;
        let replaced = matches!(&result, Ok(r) if r.action == RecoveryAction::Replaced);
        let _ = reply.send(result);
        if replaced {
            // This session is closed now; its successor has an actor of its own.
            myself.stop(Some("closed".into()));
        }
    }
}

/// Sends a message to the runner of `job_id` if that job is the one running here (a stop is remembered
/// too); answers whether it was.
fn tell_runner(st: &mut SessionActorState, job_id: &str, msg: RunnerMsg) -> bool {
    let here = st.running.as_mut().filter(|r| r.job.id == job_id);
    if let Some(r) = here {
        if let RunnerMsg::Stop(reason) = &msg {
            r.stop_requested.get_or_insert_with(|| reason.clone());
        }
        let _ = r.runner.cast(msg);
        return true;
    }
    false
}

/// A failure drill below this session: its runner panics or stops heart-beating (`runner-stall`).
fn drill(st: &SessionActorState, what: &str) {
    if let Some(r) = st.running.as_ref() {
        let _ = r.runner.cast(match what {
            "runner-stall" => RunnerMsg::Stall,
            _ => RunnerMsg::Panic,
        });
    }
}

/// The live tree below this session: its running job.
fn below(st: &SessionActorState) -> Vec<TreeNode> {
    st.running
        .iter()
        .map(|r| TreeNode {
            name: format!("job:{}", r.job.id),
            status: "running".into(),
            restarts: 0,
            uptime_secs: r.started.elapsed().as_secs(),
            children: Vec::new(),
        })
        .collect()
}

/// Records that a session's worktree is gone: the flag, a warning and the `session.worktree_missing` event.
async fn mark_missing(core: &Core, session: &mut Session) {
    // Best effort like boot reconciliation: the mark in memory stops jobs even if the store is read-only.
    if let Err(e) = core.store().set_worktree_missing(&session.id, true).await {
        tracing::error!(target: "televibe.sessions", session_id = %session.id, error = %e, "could not record a missing worktree");
    }
    session.worktree_missing = true;
    tracing::warn!(target: "televibe.sessions", session_id = %session.id, path = %session.worktree_path, "Session worktree is missing");
    core.events()
        .emit(
            Scope::session(session),
            Event::WorktreeMissing {
                path: session.worktree_path.clone(),
            },
        )
        .await;
}
