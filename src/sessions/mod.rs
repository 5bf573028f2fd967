//! Sessions: a branch plus a linked worktree of a project, one actor each under the `sessions` supervisor.
//!
//! Creation happens here under a lock (limits, numbering and branch checks cannot race): git first, then the
//! row, then the actor. Closing goes to the session's actor, which owns the session's state.

pub mod actor;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::audit::AuditSubject;
use crate::core::Core;
use crate::domain::{NewSession, Session, SessionState};
use crate::errors::{CoreError, ErrorCode};
use crate::events::{Event, Scope};
use crate::git::GitError;
use crate::jobs::Ending;
use crate::supervisor::{ChildSpec, InitialChildren, SupervisorMsg};
use crate::telemetry::{ProjectLabel, ProjectStateLabel, SessionLabel};
use actor::{CloseRequest, SessionActor, SessionMsg};

/// What `close_session` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Closed {
    #[serde(flatten)]
    pub session: Session,
    pub branch_deleted: bool,
}

/// What `recover_session` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryAction {
    /// The worktree was added again at the same path on the same branch.
    WorktreeRecreated,
    /// The worktree had been put back by hand; only the mark was cleared.
    WorktreeFound,
    /// Git could not add it in place: the session was closed and a new one opened on its branch.
    Replaced,
}

/// What `recover_session` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Recovered {
    pub action: RecoveryAction,
    /// The session that was asked for.
    pub session_id: String,
    /// The session to work in now: the same one, or its replacement.
    pub session: Session,
    /// One sentence saying which of the two happened.
    pub message: String,
    /// Queued jobs of a replaced session, canceled with it.
    pub jobs_canceled: usize,
}

/// Whether a session's worktree is on disk: its directory with the `.git` link git put there. A directory
/// without it (files copied back by hand) is not a worktree git or a job could use.
pub fn worktree_present(path: &Path) -> bool {
    path.is_dir() && path.join(".git").exists()
}

pub fn session_not_found(id: &str) -> CoreError {
    CoreError::new(
        ErrorCode::SessionNotFound,
        format!("no session {id:?}"),
        "list sessions with list_sessions; ids look like S12",
    )
}

/// The child spec of one session actor.
pub fn session_child(core: &Arc<Core>, id: &str) -> ChildSpec {
    let core = core.clone();
    let sid = id.to_string();
    ChildSpec::new(&format!("session:{id}"), move || {
        (
            SessionActor {
                core: core.clone(),
                id: sid.clone(),
            },
            (),
        )
    })
    .transient()
    .with_drill(Arc::new(|cell, what| {
        let r: ractor::ActorRef<SessionMsg> = cell.clone().into();
        r.cast(SessionMsg::Drill(what.to_string()))
            .map_err(|e| e.to_string())
    }))
    .with_below(Arc::new(|cell| {
        Box::pin(async move {
            let r: ractor::ActorRef<SessionMsg> = cell.into();
            ractor::call_t!(r, SessionMsg::Below, 1000).unwrap_or_default()
        })
    }))
}

/// Boot reconciliation, run whenever the `sessions` supervisor starts; returns one child per open session.
pub fn initial_sessions(core: Arc<Core>) -> InitialChildren {
    Arc::new(move || {
        let core = core.clone();
        Box::pin(async move {
            core.expire_orphaned_approvals().await;
            core.recover_jobs().await.map_err(|e| e.to_string())?;
            core.reconcile_sessions().await.map_err(|e| e.to_string())?;
            let open = core
                .store()
                .sessions(None, false)
                .await
                .map_err(|e| e.to_string())?;
            core.refresh_session_metrics().await;
            Ok(open.iter().map(|s| session_child(&core, &s.id)).collect())
        })
    })
}

impl Core {
    pub async fn list_sessions(
        &self,
        project_id: Option<&str>,
        include_closed: bool,
    ) -> Result<Vec<Session>, CoreError> {
        if let Some(p) = project_id {
            self.get_project(p).await?;
        }
        Ok(self.store().sessions(project_id, include_closed).await?)
    }

    pub async fn get_session(&self, id: &str) -> Result<Session, CoreError> {
        let sid = crate::domain::SessionId::parse(id).ok_or_else(|| session_not_found(id))?;
        self.store()
            .session(&sid.to_string())
            .await?
            .ok_or_else(|| session_not_found(id))
    }

    /// Creates a session: a branch (new from `base`, or an existing unused one) and its worktree.
    pub async fn create_session(
        self: &Arc<Self>,
        actor: &str,
        project_id: &str,
        branch: Option<&str>,
        base: Option<&str>,
    ) -> Result<Session, CoreError> {
        let _serial = self.session_create().lock().await;
        let project = self.get_project(project_id).await?;
        if self.store().is_read_only() {
            return Err(crate::store::StoreError::ReadOnly {
                reason: self.store().read_only_reason().unwrap_or_default(),
            }
            .into());
        }
        let limits = &self.config().sessions;
        if self.store().count_open_sessions(Some(&project.id)).await?
            >= limits.max_per_project as u64
        {
            return Err(limit_error(format!(
                "project {} already has {} open sessions (sessions.max_per_project)",
                project.id, limits.max_per_project
            )));
        }
        if self.store().count_open_sessions(None).await? >= limits.max_total as u64 {
            return Err(limit_error(format!(
                "{} sessions are open (sessions.max_total)",
                limits.max_total
            )));
        }
        let workspace_dir = self.layout().workspaces().join(&project.id);
        let mut seq = self.store().next_session_seq().await?;
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
            .create_worktree_with_retry(Path::new(&project.repo_path), &branch, &base, &dest)
            .await?;
        let new = NewSession {
            project_id: project.id.clone(),
            branch: branch.clone(),
            base_branch: base,
            branch_created,
            workspace_dir,
        };
        let session = match self.store().insert_session(seq, &new).await {
            Ok(s) => s,
            Err(e) => {
                // Undo the git side so a refusal changes nothing.
                let _ = self
                    .git()
                    .remove_worktree(Path::new(&project.repo_path), &dest, true)
                    .await;
                if branch_created {
                    let _ = self
                        .git()
                        .delete_branch(Path::new(&project.repo_path), &branch)
                        .await;
                }
                return Err(e.into());
            }
        };
        self.metrics()
            .sessions_total
            .get_or_create(&ProjectLabel {
                project_id: project.id.clone(),
            })
            .inc();
        self.audit()
            .record(
                &self.store(),
                "session.created",
                actor,
                subject(&session),
                json!({"branch": session.branch, "base": session.base_branch, "branch_created": branch_created, "worktree": session.worktree_path}),
            )
            .await;
        self.emit(
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
        match self.git().create_worktree(repo, branch, base, dest).await {
            Err(e) if e.is_failure() => {
                tracing::warn!(target: "televibe.sessions", error = %e, "worktree creation failed; retrying once");
                tokio::time::sleep(Duration::from_millis(500)).await;
                self.git()
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

    async fn start_session_actor(self: &Arc<Self>, id: &str) {
        let spec = session_child(self, id);
        let started = match self.root_child("sessions").await {
            Ok(cell) => {
                let sup: ractor::ActorRef<SupervisorMsg> = cell.into();
                ractor::call_t!(sup, SupervisorMsg::StartChild, 5000, spec)
                    .map_err(|e| e.to_string())
                    .and_then(|r| r)
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
    ) -> Result<(Session, ractor::ActorRef<SessionMsg>), CoreError> {
        let session = self.get_session(id).await?;
        if session.state == SessionState::Closed {
            return Err(CoreError::new(
                ErrorCode::SessionClosing,
                format!("session {} is already closed", session.id),
                "create a new session on the same branch to continue its work",
            ));
        }
        let actor_ref = self
            .session_actors()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&session.id)
            .cloned();
        match actor_ref {
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
        actor: &str,
        id: &str,
        force: bool,
        delete_branch: bool,
    ) -> Result<Closed, CoreError> {
        let (session, actor_ref) = self.open_session_actor(id).await?;
        let req = CloseRequest {
            actor: actor.to_string(),
            force,
            delete_branch,
        };
        // Dirty check, removal and branch deletion each may take up to git.timeout_secs.
        let limit = (4 * self.config().git_timeout.as_millis() + 30_000) as u64;
        ractor::call_t!(actor_ref, SessionMsg::Close, limit, req).map_err(|e| {
            CoreError::internal(format!("session {} did not answer: {e}", session.id))
        })?
    }

    /// Brings back the worktree of an open session whose worktree is missing, through its actor.
    pub async fn recover_session(&self, actor: &str, id: &str) -> Result<Recovered, CoreError> {
        let (session, actor_ref) = self.open_session_actor(id).await?;
        // Prune, add, and in the worst case close and create: each may take up to git.timeout_secs.
        let limit = (6 * self.config().git_timeout.as_millis() + 30_000) as u64;
        ractor::call_t!(actor_ref, SessionMsg::Recover, limit, actor.to_string()).map_err(|e| {
            CoreError::internal(format!("session {} did not answer: {e}", session.id))
        })?
    }

    /// Prunes stale worktree entries, marks sessions whose worktree is gone, finishes interrupted closes.
    pub async fn reconcile_sessions(&self) -> Result<(), CoreError> {
        for project in self.store().projects().await? {
            match self.git().prune(Path::new(&project.repo_path)).await {
                Ok(n) if n > 0 => {
                    tracing::info!(target: "televibe.sessions", project_id = %project.id, pruned = n, "Pruned stale worktree entries")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(target: "televibe.sessions", project_id = %project.id, error = %e, "worktree prune failed")
                }
            }
        }
        // Writes here are best effort: a read-only store must not keep the daemon from starting.
        let warn = |what: &str, id: &str, r: Result<(), crate::store::StoreError>| {
            if let Err(e) = r {
                tracing::error!(target: "televibe.sessions", session_id = id, error = %e, "reconciliation could not {what}");
            }
        };
        for s in self.store().sessions(None, false).await? {
            let exists = worktree_present(Path::new(&s.worktree_path));
            match s.state {
                // A close interrupted after its worktree was removed: finish it.
                SessionState::Closing if !exists => {
                    warn(
                        "close a session",
                        &s.id,
                        self.store()
                            .set_session_state(&s.id, SessionState::Closed)
                            .await,
                    );
                    for job in self.store().queued_jobs(&s.id).await.unwrap_or_default() {
                        let _ = self
                            .end_job(&job, Ending::canceled("its session was closed"))
                            .await;
                    }
                    continue;
                }
                // A close interrupted before: the session stays open. No job survives a restart.
                SessionState::Closing | SessionState::Running | SessionState::Blocked => warn(
                    "reset a session",
                    &s.id,
                    self.store()
                        .set_session_state(&s.id, SessionState::Idle)
                        .await,
                ),
                _ => {}
            }
            if !exists && !s.worktree_missing {
                warn(
                    "mark a worktree missing",
                    &s.id,
                    self.store().set_worktree_missing(&s.id, true).await,
                );
                tracing::warn!(target: "televibe.sessions", session_id = %s.id, path = %s.worktree_path, "Session worktree is missing");
                self.emit(
                    Scope::session(&s),
                    Event::WorktreeMissing {
                        path: s.worktree_path.clone(),
                    },
                )
                .await;
            } else if exists && s.worktree_missing {
                warn(
                    "clear a worktree mark",
                    &s.id,
                    self.store().set_worktree_missing(&s.id, false).await,
                );
            }
        }
        Ok(())
    }

    /// Recomputes `televibe_sessions_active{project_id,state}` and the per-session activity gauges.
    pub async fn refresh_session_metrics(&self) {
        let Ok(open) = self.store().sessions(None, false).await else {
            return;
        };
        let mut counts: std::collections::HashMap<(String, String), i64> = Default::default();
        for s in &open {
            *counts
                .entry((s.project_id.clone(), s.state.as_str().to_string()))
                .or_default() += 1;
            self.metrics()
                .session_last_activity_timestamp
                .get_or_create(&SessionLabel {
                    session_id: s.id.clone(),
                })
                .set(s.last_activity_at.timestamp());
        }
        let mut last = self
            .session_gauge_labels()
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (project_id, state) in last.drain() {
            if !counts.contains_key(&(project_id.clone(), state.clone())) {
                self.metrics()
                    .sessions_active
                    .remove(&ProjectStateLabel { project_id, state });
            }
        }
        for ((project_id, state), n) in counts {
            self.metrics()
                .sessions_active
                .get_or_create(&ProjectStateLabel {
                    project_id: project_id.clone(),
                    state: state.clone(),
                })
                .set(n);
            last.insert((project_id, state));
        }
    }

    /// Forgets the gauges of a closed session and records its lifetime.
    pub fn session_closed_metrics(&self, s: &Session) {
        let label = SessionLabel {
            session_id: s.id.clone(),
        };
        self.metrics()
            .session_last_activity_timestamp
            .remove(&label);
        self.metrics().workspace_disk_bytes.remove(&label);
        let lived = (chrono::Utc::now() - s.created_at)
            .num_milliseconds()
            .max(0) as f64
            / 1000.0;
        self.metrics()
            .session_duration_seconds
            .get_or_create(&ProjectLabel {
                project_id: s.project_id.clone(),
            })
            .observe(lived);
    }

    /// Measures every open session's worktree (janitor; never on a request path).
    pub async fn measure_workspaces(&self) {
        let Ok(open) = self.store().sessions(None, false).await else {
            return;
        };
        for s in open {
            let path = PathBuf::from(&s.worktree_path);
            let bytes = tokio::task::spawn_blocking(move || disk_usage(&path))
                .await
                .unwrap_or(0);
            // A session closed while it was being measured must not get its gauge back.
            let still_open =
                matches!(self.store().session(&s.id).await, Ok(Some(now)) if now.state.is_open());
            if !still_open {
                continue;
            }
            self.metrics()
                .workspace_disk_bytes
                .get_or_create(&SessionLabel {
                    session_id: s.id.clone(),
                })
                .set(bytes as i64);
        }
    }
}

fn limit_error(message: String) -> CoreError {
    CoreError::new(
        ErrorCode::SessionLimit,
        message,
        "close a session first (close_session)",
    )
}

pub fn subject(s: &Session) -> AuditSubject {
    AuditSubject {
        project_id: Some(s.project_id.clone()),
        session_id: Some(s.id.clone()),
        job_id: None,
    }
}

/// Bytes used by the files under `path` (symlinks not followed).
pub fn disk_usage(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| disk_usage(&e.path())).sum())
        .unwrap_or(0)
}
