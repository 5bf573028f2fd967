//! Keeping sessions true to the disk: boot reconciliation (rows against worktrees), the session gauges,
//! and workspace disk usage.

use super::*;
use crate::core::events::{Event, Scope};
use crate::core::jobs::Ending;
use crate::domain::{Session, SessionState};
use crate::errors::CoreError;
use crate::telemetry::{ProjectLabel, ProjectStateLabel, SessionLabel};
use std::path::{Path, PathBuf};

impl Sessions<'_> {
    /// Prunes stale worktree entries, marks sessions whose worktree is gone, finishes interrupted closes.
    pub async fn reconcile_sessions(&self) -> Result<(), CoreError> {
        for project in self.core.projects().list_projects().await? {
            if project
                .node
                .as_deref()
                .is_some_and(|n| n != self.core.cluster().node_id())
            {
                continue;
            }
            match self.core.git().prune(Path::new(&project.repo_path)).await {
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
        for s in self.core.store().sessions(None, false).await? {
            // Another node's sessions are that node's to reconcile.
            if !self.core.cluster().hosts(&s) {
                continue;
            }
            let exists = worktree_present(Path::new(&s.worktree_path));
            match s.state {
                // A close interrupted after its worktree was removed: finish it.
                SessionState::Closing if !exists => {
                    warn(
                        "close a session",
                        &s.id,
                        self.core
                            .store()
                            .set_session_state(&s.id, SessionState::Closed)
                            .await,
                    );
                    for job in self
                        .core
                        .store()
                        .queued_jobs(&s.id)
                        .await
                        .unwrap_or_default()
                    {
                        let _ = self
                            .core
                            .jobs()
                            .end_job(&job, Ending::canceled("its session was closed"))
                            .await;
                    }
                    let reason = format!("its session {} was closed", s.id);
                    self.core
                        .schedules()
                        .session_closed("daemon", &s, &reason)
                        .await;
                    continue;
                }
                // A close interrupted before: the session stays open. No job runs across a restart (one cut is
                // queued again, or failed, by `recover_jobs` before this).
                SessionState::Closing | SessionState::Running | SessionState::Blocked => warn(
                    "reset a session",
                    &s.id,
                    self.core
                        .store()
                        .set_session_state(&s.id, SessionState::Idle)
                        .await,
                ),
                _ => {}
            }
            if !exists && !s.worktree_missing {
                warn(
                    "mark a worktree missing",
                    &s.id,
                    self.core.store().set_worktree_missing(&s.id, true).await,
                );
                tracing::warn!(target: "televibe.sessions", session_id = %s.id, path = %s.worktree_path, "Session worktree is missing");
                self.core
                    .events()
                    .emit(
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
                    self.core.store().set_worktree_missing(&s.id, false).await,
                );
            }
        }
        Ok(())
    }

    /// Recomputes `televibe_sessions_active{project_id,state}` and the per-session activity gauges.
    pub async fn refresh_session_metrics(&self) {
        if let Ok(projects) = self.core.store().projects().await {
            for p in &projects {
                self.core.metrics().project_known(&p.id);
            }
        }
        let Ok(open) = self.core.store().sessions(None, false).await else {
            return;
        };
        // Each node counts the sessions it hosts: summed over the nodes, no session is counted twice.
        let open: Vec<_> = open
            .into_iter()
            .filter(|s| self.core.cluster().hosts(s))
            .collect();
        let mut counts: std::collections::HashMap<(String, String), i64> = Default::default();
        for s in &open {
            *counts
                .entry((s.project_id.clone(), s.state.as_str().to_string()))
                .or_default() += 1;
            self.core
                .metrics()
                .session_last_activity_timestamp
                .get_or_create(&SessionLabel {
                    session_id: s.id.clone(),
                })
                .set(s.last_activity_at.timestamp());
        }
        let mut last = self
            .state()
            .gauge_labels
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (project_id, state) in last.drain() {
            if !counts.contains_key(&(project_id.clone(), state.clone())) {
                self.core
                    .metrics()
                    .sessions_active
                    .remove(&ProjectStateLabel { project_id, state });
            }
        }
        for ((project_id, state), n) in counts {
            self.core
                .metrics()
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
        self.core
            .metrics()
            .session_last_activity_timestamp
            .remove(&label);
        self.core.metrics().workspace_disk_bytes.remove(&label);
        self.core.metrics().job_queue_size.remove(&label);
        let lived = (chrono::Utc::now() - s.created_at)
            .num_milliseconds()
            .max(0) as f64
            / 1000.0;
        self.core
            .metrics()
            .session_duration_seconds
            .get_or_create(&ProjectLabel {
                project_id: s.project_id.clone(),
            })
            .observe(lived);
    }

    /// Measures every open session's worktree (janitor; never on a request path).
    pub async fn measure_workspaces(&self) {
        let Ok(open) = self.core.store().sessions(None, false).await else {
            return;
        };
        // Another node's worktrees are on its disk: it measures them.
        for s in open.into_iter().filter(|s| self.core.cluster().hosts(s)) {
            let path = PathBuf::from(&s.worktree_path);
            let bytes = tokio::task::spawn_blocking(move || disk_usage(&path))
                .await
                .unwrap_or(0);
            // A session closed while it was being measured must not get its gauge back.
            let still_open = matches!(self.core.store().session(&s.id).await, Ok(Some(now)) if now.state.is_open());
            if !still_open {
                continue;
            }
            self.core
                .metrics()
                .workspace_disk_bytes
                .get_or_create(&SessionLabel {
                    session_id: s.id.clone(),
                })
                .set(bytes as i64);
        }
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
