//! `session:S<n>`: owns one open session's state; closing runs here. Restarted from its SQLite row.

use std::path::Path;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde_json::json;

use super::{Closed, subject};
use crate::core::Core;
use crate::errors::{CoreError, ErrorCode};
use crate::store::{Session, SessionState};
use crate::supervisor::ChildMessage;

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

pub enum SessionMsg {
    Snapshot(RpcReplyPort<Session>),
    Close(CloseRequest, RpcReplyPort<Result<Closed, CoreError>>),
    Panic,
}

impl ChildMessage for SessionMsg {
    fn injected_panic() -> Self {
        SessionMsg::Panic
    }
}

pub struct SessionActorState {
    session: Session,
    core: Arc<Core>,
    me: ActorRef<SessionMsg>,
}

impl Drop for SessionActorState {
    fn drop(&mut self) {
        let mut map = self
            .core
            .session_actors
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
            .store
            .session(&self.id)
            .await?
            .ok_or_else(|| format!("session {} has no row", self.id))?;
        if session.state == SessionState::Closed {
            return Err(format!("session {} is closed", self.id).into());
        }
        self.core
            .session_actors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(session.id.clone(), myself.clone());
        Ok(SessionActorState {
            session,
            core: self.core.clone(),
            me: myself,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        msg: SessionMsg,
        state: &mut SessionActorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SessionMsg::Snapshot(reply) => {
                let _ = reply.send(state.session.clone());
            }
            SessionMsg::Close(req, reply) => {
                let result = close(&self.core, &mut state.session, &req).await;
                let closed = result.is_ok();
                let _ = reply.send(result);
                if closed {
                    myself.stop(Some("closed".into()));
                }
            }
            SessionMsg::Panic => panic!("injected panic in session actor {}", state.session.id),
        }
        Ok(())
    }
}

async fn close(
    core: &Core,
    session: &mut Session,
    req: &CloseRequest,
) -> Result<Closed, CoreError> {
    if let Some(fresh) = core.store.session(&session.id).await? {
        *session = fresh;
    }
    if session.state == SessionState::Closing {
        return Err(CoreError::new(
            ErrorCode::SessionClosing,
            format!("session {} is already closing", session.id),
            "wait a moment",
        ));
    }
    let busy = core.store.active_jobs_of_session(&session.id).await?;
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
    if worktree.is_dir() && !req.force && core.git.is_dirty(worktree).await? {
        return Err(crate::git::GitError::Dirty(session.worktree_path.clone()).into());
    }
    let before = session.state;
    core.store
        .set_session_state(&session.id, SessionState::Closing)
        .await?;
    if let Err(e) = core.git.remove_worktree(repo, worktree, req.force).await {
        core.store.set_session_state(&session.id, before).await?;
        return Err(e.into());
    }
    let branch_deleted = if req.delete_branch {
        match core.git.delete_branch(repo, &session.branch).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(target: "televibe.sessions", session_id = %session.id, error = %e, "branch kept: delete failed");
                false
            }
        }
    } else {
        false
    };
    core.store
        .set_session_state(&session.id, SessionState::Closed)
        .await?;
    if let Some(fresh) = core.store.session(&session.id).await? {
        *session = fresh;
    }
    core.session_closed_metrics(session);
    core.refresh_session_metrics().await;
    core.audit
        .record(
            &core.store,
            "session.closed",
            &req.actor,
            subject(session),
            json!({"force": req.force, "branch": session.branch, "branch_deleted": branch_deleted}),
        )
        .await;
    let _ = core
        .store
        .insert_event(
            "session.closed",
            Some(&session.project_id),
            Some(&session.id),
            None,
            json!({"branch_deleted": branch_deleted}),
        )
        .await;
    tracing::info!(target: "televibe.sessions", session_id = %session.id, branch_deleted, "Session closed");
    Ok(Closed {
        session: session.clone(),
        branch_deleted,
    })
}
