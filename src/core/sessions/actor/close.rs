//! Closing a session: refused while busy or dirty unless forced, then the running job canceled, the
//! worktree removed, the branch deleted when the daemon created it, queued jobs canceled and the session's
//! schedules removed.

use super::*;
use crate::audit::Audited;
use crate::core::Core;
use crate::core::events::{Event, Scope};
use crate::core::jobs::Ending;
use crate::core::jobs::process;
use crate::core::sessions::{Closed, subject};
use crate::domain::{Session, SessionState};
use crate::errors::{CoreError, ErrorCode};
use std::path::Path;

impl SessionActor {
    pub(super) async fn close(
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
            if let Ok(Some(job)) = self.core.store().job(&r.job.id).await {
                let _ = self
                    .core
                    .jobs()
                    .end_job(&job, Ending::canceled("its session was closed"))
                    .await;
            }
        }
        let closed = close(&self.core, &mut st.session, req).await?;
        for job in std::mem::take(&mut st.queue) {
            let _ = cancel_queued(&self.core, &job.id, "its session was closed").await;
        }
        let reason = format!("its session {} was closed", closed.session.id);
        self.core
            .schedules()
            .session_closed(&req.by, &closed.session, &reason)
            .await;
        Ok(closed)
    }
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
    let project = core.projects().get_project(&session.project_id).await?;
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
    core.sessions().session_closed_metrics(session);
    core.sessions().refresh_session_metrics().await;
    core.events()
        .audit(
            &req.by,
            subject(session),
            Audited::SessionClosed {
                force: req.force,
                branch: session.branch.clone(),
                branch_deleted,
            },
        )
        .await;
    core.events()
        .emit(
            Scope::session(session),
            Event::SessionClosed { branch_deleted },
        )
        .await;
    Ok(Closed {
        session: session.clone(),
        branch_deleted,
    })
}
