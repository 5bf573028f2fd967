//! Recovery of a session whose worktree is gone: re-created in place, or the session replaced.

use crate::audit::Audited;
use std::path::Path;

use ractor::ActorRef;
use serde_json::json;

use super::{SessionActor, SessionActorState, SessionMsg, cancel_queued, mark_missing};
use crate::core::sessions::{Recovered, RecoveryAction, subject, worktree_present};
use crate::domain::SessionState;
use crate::errors::{CoreError, ErrorCode};

impl SessionActor {
    /// Re-creates a missing worktree on the session's branch at the same path; when git cannot, closes
    /// the session and opens a new one on that branch.
    pub(super) async fn recover(
        &self,
        myself: &ActorRef<SessionMsg>,
        st: &mut SessionActorState,
        by: &str,
    ) -> Result<Recovered, CoreError> {
        let core = &self.core;
        if let Some(fresh) = core.store().session(&st.session.id).await? {
            st.session = fresh;
        }
        let id = st.session.id.clone();
        if st.session.state == SessionState::Closing {
            return Err(CoreError::new(
                ErrorCode::SessionClosing,
                format!("session {id} is closing"),
                "wait a moment, then create a new session on the same branch",
            ));
        }
        let path = std::path::PathBuf::from(&st.session.worktree_path);
        if worktree_present(&path) {
            if !st.session.worktree_missing {
                return Err(CoreError::new(
                    ErrorCode::WorktreeNotMissing,
                    format!(
                        "the worktree of session {id} is not missing: it is at {}",
                        path.display()
                    ),
                    "nothing to recover; use the session as it is",
                ));
            }
            // Someone put it back by hand: only the mark is out of date.
            core.store().set_worktree_missing(&id, false).await?;
            st.session.worktree_missing = false;
            let out = Recovered {
                action: RecoveryAction::WorktreeFound,
                session_id: id.clone(),
                session: st.session.clone(),
                message: format!(
                    "session {id}: the worktree is back at {}; the missing mark is cleared",
                    path.display()
                ),
                jobs_canceled: 0,
            };
            self.recovered_audit(by, &out).await;
            let _ = myself.cast(SessionMsg::TryStart);
            return Ok(out);
        }
        if st.running.is_some() {
            return Err(CoreError::new(
                ErrorCode::SessionBusy,
                format!("session {id} has a running job in its missing worktree"),
                "cancel it (cancel_job) or wait for it to end, then recover the session",
            ));
        }
        if !st.session.worktree_missing {
            mark_missing(core, &mut st.session).await;
        }
        let project = core.projects().get_project(&st.session.project_id).await?;
        let repo = Path::new(&project.repo_path);
        // The repository still lists the lost worktree (git refuses to add one at a listed path).
        core.git().prune(repo).await?;
        // An empty directory left where the worktree was would make the add fail; anything else in
        // the way is somebody's data and stays untouched (the session is replaced instead).
        if path.is_dir() {
            let _ = std::fs::remove_dir(&path);
        }
        match core
            .git()
            .create_worktree(repo, &st.session.branch, &st.session.base_branch, &path)
            .await
        {
            Ok(branch_recreated) => {
                core.store().set_worktree_missing(&id, false).await?;
                if let Some(fresh) = core.store().session(&id).await? {
                    st.session = fresh;
                }
                let branch = &st.session.branch;
                let mut message = format!(
                    "session {id}: worktree re-created at {} on branch {branch}",
                    path.display()
                );
                if branch_recreated {
                    message.push_str(&format!(
                        " (the branch was gone and starts again from {})",
                        st.session.base_branch
                    ));
                }
                let out = Recovered {
                    action: RecoveryAction::WorktreeRecreated,
                    session_id: id.clone(),
                    session: st.session.clone(),
                    message,
                    jobs_canceled: 0,
                };
                tracing::info!(target: "televibe.sessions", session_id = %id, path = %path.display(), "Session worktree recovered");
                self.recovered_audit(by, &out).await;
                let _ = myself.cast(SessionMsg::TryStart);
                Ok(out)
            }
            // Git itself is unavailable: replacing the session would fail the same way.
            Err(e @ (crate::git::GitError::BreakerOpen(_) | crate::git::GitError::Timeout(_))) => {
                Err(e.into())
            }
            Err(e) => {
                tracing::warn!(target: "televibe.sessions", session_id = %id, error = %e, "worktree cannot be re-created in place; replacing the session");
                self.replace(st, by, &e.to_string()).await
            }
        }
    }

    /// The fallback of recovery: this session is closed (its queued jobs canceled) and a new one opens
    /// on the same branch.
    async fn replace(
        &self,
        st: &mut SessionActorState,
        by: &str,
        why: &str,
    ) -> Result<Recovered, CoreError> {
        let core = &self.core;
        let old = st.session.clone();
        let queued = core.store().queued_jobs(&old.id).await.unwrap_or_default();
        core.store()
            .set_session_state(&old.id, SessionState::Closed)
            .await?;
        for job in &queued {
            let _ = cancel_queued(
                core,
                &job.id,
                "its session lost its worktree and was replaced",
            )
            .await;
        }
        if let Some(fresh) = core.store().session(&old.id).await? {
            st.session = fresh;
        }
        // The agent as stored (`/agent` writes the row, not this actor's copy).
        let agent = st.session.agent.clone();
        core.sessions().session_closed_metrics(&st.session);
        core.events()
            .audit(
                by,
                subject(&old),
                Audited::SessionReplaced {
                    branch: old.branch.clone(),
                    error: why.to_string(),
                },
            )
            .await;
        let reason = format!("its session {} lost its worktree and was closed", old.id);
        core.schedules().session_closed(by, &old, &reason).await;
        let new = core
            .sessions().create_session_here(by, &old.project_id, Some(&old.branch), Some(&old.base_branch), Some(&agent))
            .await
            .map_err(|mut e| {
                e.message = format!(
                    "session {} was closed (its worktree could not be re-created: {why}), but no new session could be opened on branch {}: {}",
                    old.id, old.branch, e.message
                );
                e
            })?;
        let out = Recovered {
            action: RecoveryAction::Replaced,
            session_id: old.id.clone(),
            message: format!(
                "session {} could not get its worktree back in place ({why}); it is closed and session {} now works on branch {} at {}",
                old.id, new.id, new.branch, new.worktree_path
            ),
            session: new,
            jobs_canceled: queued.len(),
        };
        self.recovered_audit(by, &out).await;
        Ok(out)
    }

    async fn recovered_audit(&self, by: &str, r: &Recovered) {
        let core = &self.core;
        let mut who = subject(&r.session);
        who.session_id = Some(r.session_id.clone());
        core.events()
            .audit(
                by,
                who,
                Audited::SessionRecovered {
                    action: json!(r.action),
                    session: r.session.id.clone(),
                    branch: r.session.branch.clone(),
                    worktree: r.session.worktree_path.clone(),
                    jobs_canceled: r.jobs_canceled,
                },
            )
            .await;
        core.sessions().refresh_session_metrics().await;
    }
}
