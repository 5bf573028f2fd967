//! The sessions service on a store several nodes share: which sessions this node hosts, the calls that
//! carry a create, close, cancel or kill to the node hosting the session, and the queues taken up again
//! from the store when another node queued a job here.

use std::collections::HashSet;

use super::*;
use crate::core::cluster::Call;
use crate::domain::Job;

impl Sessions<'_> {
    /// The ids of the sessions this node hosts; `None` on one node (it hosts them all).
    pub async fn hosted_here(&self) -> Option<HashSet<String>> {
        let cluster = self.core.cluster();
        if !cluster.shared() {
            return None;
        }
        match self
            .core
            .store()
            .session_ids_on_node(cluster.node_id())
            .await
        {
            Ok(ids) => Some(ids.into_iter().collect()),
            Err(e) => {
                tracing::error!(target: "televibe.sessions", error = %e, "sessions of this node not read");
                Some(HashSet::new())
            }
        }
    }

    /// The node hosting the session, when it is another one.
    pub(super) async fn host_elsewhere(
        &self,
        session_id: &str,
    ) -> Result<Option<String>, CoreError> {
        if !self.core.cluster().shared() {
            return Ok(None);
        }
        let s = self.get_session(session_id).await?;
        Ok(self.core.cluster().elsewhere(&s).map(str::to_string))
    }

    /// Creates a session on the node asked for (`node`), or where `cluster::place` puts it.
    pub async fn create_session_on(
        &self,
        by: &str,
        project_id: &str,
        branch: Option<&str>,
        base: Option<&str>,
        agent: Option<&str>,
        node: Option<&str>,
    ) -> Result<Session, CoreError> {
        let project = self.core.projects().get_project(project_id).await?;
        let target = self.core.cluster().place(node, &project).await?;
        if target == self.core.cluster().node_id() {
            return self
                .create_session_here(by, project_id, branch, base, agent)
                .await;
        }
        let answer = self
            .core
            .cluster()
            .call(
                &target,
                Call::CreateSession {
                    by: by.to_string(),
                    project_id: project_id.to_string(),
                    branch: branch.map(str::to_string),
                    base: base.map(str::to_string),
                    agent: agent.map(str::to_string),
                },
            )
            .await?;
        let id = answer
            .get("id")
            .and_then(|v| v.as_str())
            .ok_or_else(|| CoreError::internal(format!("node {target} answered no session id")))?;
        self.get_session(id).await
    }

    /// Carries a close to the session's node; `None` when this node hosts it.
    pub(super) async fn close_elsewhere(
        &self,
        by: &str,
        id: &str,
        force: bool,
        delete_branch: bool,
    ) -> Result<Option<Closed>, CoreError> {
        let Some(node) = self.host_elsewhere(id).await? else {
            return Ok(None);
        };
        let answer = self
            .core
            .cluster()
            .call(
                &node,
                Call::CloseSession {
                    by: by.to_string(),
                    id: id.to_string(),
                    force,
                    delete_branch,
                },
            )
            .await?;
        Ok(Some(Closed {
            session: self.get_session(id).await?,
            branch_deleted: answer
                .get("branch_deleted")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
        }))
    }

    /// Carries a cancel (`kill`: the runbook's kill) of a job to its session's node; `None` when this node
    /// hosts it.
    pub(super) async fn stop_elsewhere(
        &self,
        by: &str,
        job: &Job,
        kill: bool,
    ) -> Result<Option<Job>, CoreError> {
        let Some(node) = self.host_elsewhere(&job.session_id).await? else {
            return Ok(None);
        };
        let (by, id) = (by.to_string(), job.id.clone());
        let call = if kill {
            Call::KillJob { by, id }
        } else {
            Call::CancelJob { by, id }
        };
        self.core.cluster().call(&node, call).await?;
        Ok(Some(self.core.jobs().get_job(&job.id).await?))
    }

    /// Gives each session actor of this node the queued jobs it does not know yet (queued by another node:
    /// the actor keeps each job once).
    pub async fn resync_queues(&self) {
        let ids: Vec<String> = self.actors().keys().cloned().collect();
        for id in ids {
            let Some(handle) = self.handle(&id) else {
                continue;
            };
            match self.core.store().queued_jobs(&id).await {
                Ok(jobs) => {
                    for job in jobs {
                        handle.enqueued(job);
                    }
                }
                Err(e) => {
                    tracing::warn!(target: "televibe.sessions", session_id = %id, error = %e, "queue not read")
                }
            }
        }
    }
}
