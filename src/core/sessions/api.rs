//! The sessions API: list, get, create (limits, numbering, branch checks, the worktree), close, recover,
//! and a session's diff.

use super::*;
use crate::audit::Audited;
use crate::core::events::{Event, Scope};
use crate::domain::{NewSession, Session, SessionState};
use crate::errors::{CoreError, ErrorCode};
use crate::git::GitError;
use crate::supervisor::SupervisorMsg;
use crate::telemetry::ProjectLabel;
use actor::CloseRequest;
use std::path::Path;
use std::time::Duration;

impl Sessions<'_> {
    pub async fn list_sessions(
        &self,
        project_id: Option<&str>,
        include_closed: bool,
    ) -> Result<Vec<Session>, CoreError> {
        if let Some(p) = project_id {
            self.core.projects().get_project(p).await?;
        }
        let mut sessions = self
            .core
            .store()
            .sessions(project_id, include_closed)
            .await?;
        for s in &mut sessions {
            s.waiting = self.usage_waiting(s).await;
            if s.state.is_open() {
                s.unavailable = self.core.cluster().unavailable_reason(s).await;
            }
        }
        Ok(sessions)
    }

    pub async fn get_session(&self, id: &str) -> Result<Session, CoreError> {
        let sid = crate::domain::SessionId::parse(id).ok_or_else(|| session_not_found(id))?;
        let mut s = self
            .core
            .store()
            .session(&sid.to_string())
            .await?
            .ok_or_else(|| session_not_found(id))?;
        s.waiting = self.usage_waiting(&s).await;
        if s.state.is_open() {
            s.unavailable = self.core.cluster().unavailable_reason(&s).await;
        }
        Ok(s)
    }

    /// `waiting for usage limit until 14:05 UTC` while the session's next job waits for a usage limit
    /// (its own reset, or its agent's known limit), or its running job's agent waits one out itself.
    async fn usage_waiting(&self, s: &Session) -> Option<String> {
        if !s.state.is_open() {
            return None;
        }
        let now = chrono::Utc::now().timestamp();
        let jobs = self.core.jobs();
        let until = if s.state == crate::domain::SessionState::Idle {
            let head = self
                .core
                .store()
                .queued_jobs(&s.id)
                .await
                .ok()?
                .into_iter()
                .next()?;
            let own = head.not_before.map(|t| t.timestamp());
            own.into_iter()
                .chain(jobs.agent_limited_until(&head.agent))
                .max()
        } else {
            jobs.session_waits_itself(&s.id)
        };
        until
            .filter(|t| *t > now)
            .map(crate::core::jobs::usage::waiting_text)
    }

    /// Creates a session: a branch (new from `base`, or an existing unused one) and its worktree.
    pub async fn create_session(
        &self,
        by: &str,
        project_id: &str,
        branch: Option<&str>,
        base: Option<&str>,
        agent: Option<&str>,
    ) -> Result<Session, CoreError> {
        self.create_session_on(by, project_id, branch, base, agent, None)
            .await
    }

    /// Creates a session on this node (its worktree here, its actor here).
    pub(crate) async fn create_session_here(
        &self,
        by: &str,
        project_id: &str,
        branch: Option<&str>,
        base: Option<&str>,
        agent: Option<&str>,
    ) -> Result<Session, CoreError> {
        let config = self.core.config();
        let agent = crate::agents::configured_driver(
            agent
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .unwrap_or(&config.agent.default),
            &config.agent.names(),
        )?
        .name();
        // A project registered by URL is worked on in this node's clone, cloned first if missing (outside
        // the creation lock: a clone may take minutes).
        let repo = {
            let project = self.core.projects().get_project(project_id).await?;
            self.core.projects().ensure_clone(&project).await?
        };
        let _serial = self.state().create.lock().await;
        let project = self.core.projects().get_project(project_id).await?;
        if self.core.store().is_read_only() {
            return Err(crate::store::StoreError::ReadOnly {
                reason: self.core.store().read_only_reason().unwrap_or_default(),
            }
            .into());
        }
        let limits = &self.core.config().sessions;
        if self
            .core
            .store()
            .count_open_sessions(Some(&project.id))
            .await?
            >= limits.max_per_project as u64
        {
            return Err(limit_error(format!(
                "project {} already has {} open sessions (sessions.max_per_project)",
                project.id, limits.max_per_project
            )));
        }
        if self.core.store().count_open_sessions(None).await? >= limits.max_total as u64 {
            return Err(limit_error(format!(
                "{} sessions are open (sessions.max_total)",
                limits.max_total
            )));
        }
        let workspace_dir = self.core.layout().workspaces().join(&project.id);
        let reserved = self.core.store().next_session_seq().await?;
        let made = async {
            let mut seq = reserved;
            while workspace_dir.join(format!("S{seq}")).exists() {
                // A directory left by a crash keeps its number; doctor reports it.
                seq += 1;
            }
            // No branch given: the session gets its own; a given branch is taken as typed (empty is refused).
            let branch = match branch {
                Some(b) => b.to_string(),
                None => format!("{}S{seq}", limits.branch_prefix),
            };
            crate::domain::validate_branch(&branch)
                .map_err(|e| CoreError::from(GitError::InvalidBranch(e.0)))?;
            if let Some(other) = self
                .core
                .store()
                .open_session_on_branch(&project.id, &branch)
                .await?
            {
                return Err(CoreError::new(
                    ErrorCode::BranchConflict,
                    format!(
                        "session {} already works on branch {branch} of {}",
                        other.id, project.id
                    ),
                    format!("use session {} or pick another branch", other.id),
                ));
            }
            let base = base
                .map(str::trim)
                .filter(|b| !b.is_empty())
                .unwrap_or(&project.default_branch)
                .to_string();
            let dest = workspace_dir.join(format!("S{seq}"));
            let branch_created = self
                .create_worktree_with_retry(&repo, &branch, &base, &dest)
                .await?;
            let new = NewSession {
                project_id: project.id.clone(),
                branch: branch.clone(),
                base_branch: base,
                branch_created,
                workspace_dir,
                agent: agent.to_string(),
                node: self.core.cluster().own_node(),
            };
            let session = match self.core.store().insert_session(seq, &new).await {
                Ok(s) => s,
                Err(e) => {
                    // Undo the git side so a refusal changes nothing.
                    let _ = self.core.git().remove_worktree(&repo, &dest, true).await;
                    if branch_created {
                        let _ = self.core.git().delete_branch(&repo, &branch).await;
                    }
                    return Err(e.into());
                }
            };
            Ok::<_, CoreError>((session, branch_created))
        }
        .await;
        if made.is_err() {
            let _ = self.core.store().release_session_seq(reserved).await;
        }
        let (session, branch_created) = made?;
        self.core
            .metrics()
            .sessions_total
            .get_or_create(&ProjectLabel {
                project_id: project.id.clone(),
            })
            .inc();
        self.core
            .events()
            .audit(
                by,
                subject(&session),
                Audited::SessionCreated {
                    branch: session.branch.clone(),
                    base: session.base_branch.clone(),
                    branch_created,
                    worktree: session.worktree_path.clone(),
                },
            )
            .await;
        self.core
            .events()
            .emit(
                Scope::session(&session),
                Event::SessionCreated {
                    branch: session.branch.clone(),
                },
            )
            .await;
        self.refresh_session_metrics().await;
        self.start_session_actor(&session.id).await;
        Ok(session)
    }

    async fn create_worktree_with_retry(
        &self,
        repo: &Path,
        branch: &str,
        base: &str,
        dest: &Path,
    ) -> Result<bool, CoreError> {
        match self
            .core
            .git()
            .create_worktree(repo, branch, base, dest)
            .await
        {
            Err(e) if e.is_failure() => {
                tracing::warn!(target: "televibe.sessions", error = %e, "worktree creation failed; retrying once");
                tokio::time::sleep(Duration::from_millis(500)).await;
                self.core
                    .git()
                    .create_worktree(repo, branch, base, dest)
                    .await
                    .map_err(|e| {
                        let mut err = CoreError::from(e);
                        err.message = format!("worktree creation failed twice: {}", err.message);
                        err
                    })
            }
            other => other.map_err(CoreError::from),
        }
    }

    async fn start_session_actor(&self, id: &str) {
        let spec = session_child(&self.core.arc(), id);
        let started = match self.core.root_child("sessions").await {
            Ok(cell) => {
                let sup: ractor::ActorRef<SupervisorMsg> = cell.into();
                ractor::call_t!(sup, SupervisorMsg::StartChild, 5000, spec)
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
            }
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = started {
            // The row is there; the sessions supervisor starts the actor from it at its next start.
            tracing::warn!(target: "televibe.sessions", session_id = id, error = %e, "session actor not started");
        }
    }

    /// An open session and its actor: closed sessions are refused, and a session whose actor is
    /// restarting asks to be retried.
    async fn open_session_actor(
        &self,
        id: &str,
    ) -> Result<(Session, super::SessionHandle), CoreError> {
        let session = self.get_session(id).await?;
        if session.state == SessionState::Closed {
            return Err(CoreError::new(
                ErrorCode::SessionClosing,
                format!("session {} is already closed", session.id),
                "create a new session on the same branch to continue its work",
            ));
        }
        match self.handle(&session.id) {
            Some(r) => Ok((session, r)),
            None => Err(CoreError::internal(format!(
                "session {} is restarting; retry in a moment",
                session.id
            ))),
        }
    }

    /// Closes a session through its actor.
    pub async fn close_session(
        &self,
        by: &str,
        id: &str,
        force: bool,
        delete_branch: bool,
    ) -> Result<Closed, CoreError> {
        if let Some(closed) = self.close_elsewhere(by, id, force, delete_branch).await? {
            return Ok(closed);
        }
        let (_, handle) = self.open_session_actor(id).await?;
        let req = CloseRequest {
            by: by.to_string(),
            force,
            delete_branch,
        };
        // Dirty check, removal and branch deletion each may take up to git.timeout_secs.
        let limit = (4 * self.core.config().git_timeout.as_millis() + 30_000) as u64;
        handle.close(req, limit).await
    }

    /// Brings back the worktree of an open session whose worktree is missing, through its actor.
    pub async fn recover_session(&self, by: &str, id: &str) -> Result<Recovered, CoreError> {
        let s = self.get_session(id).await?;
        self.core
            .cluster()
            .on_this_node(&s, "recovering the worktree")?;
        let (_, handle) = self.open_session_actor(id).await?;
        // Prune, add, and in the worst case close and create: each may take up to git.timeout_secs.
        let limit = (6 * self.core.config().git_timeout.as_millis() + 30_000) as u64;
        handle.recover(by, limit).await
    }

    /// The session's changes against its base branch (uncommitted ones included) and its new files.
    pub async fn session_diff(&self, s: &crate::domain::Session) -> Result<String, CoreError> {
        self.core.cluster().on_this_node(s, "the diff")?;
        let wt = std::path::Path::new(&s.worktree_path);
        if !wt.is_dir() {
            return Err(CoreError::new(
                crate::errors::ErrorCode::GitError,
                format!("the worktree of {} is missing", s.id),
                "close the session and open a new one on the branch",
            ));
        }
        Ok(self.core.git().diff(wt, &s.base_branch).await?)
    }
}

fn limit_error(message: String) -> CoreError {
    CoreError::new(
        ErrorCode::SessionLimit,
        message,
        "close a session first (close_session)",
    )
}
