//! A decision arrives (a person, an expiry, a job's end): written once, the waiting call woken, the
//! message's buttons retired through an `approval.decided` event.

use crate::core::events::{Event, Scope};
use crate::domain::{Approval, ApprovalState};
use crate::errors::{CoreError, ErrorCode};
use tokio::sync::oneshot;

use super::*;

impl Approvals<'_> {
    /// A person decides. The first decision wins; later ones get APPROVAL_ALREADY_DECIDED.
    pub async fn decide_approval(
        &self,
        id: &str,
        choice: Choice,
        by: &str,
    ) -> Result<Approval, CoreError> {
        let a = self
            .core
            .store()
            .approval(id)
            .await?
            .ok_or_else(|| not_found(id))?;
        // A push is approved one at a time: no grant covers the next one.
        if choice == Choice::ApproveSession && a.tool_name == policy::PUSH_TOOL {
            return Err(CoreError::new(
                ErrorCode::ApprovalOnceOnly,
                format!("approval {id} is a push, which is approved one at a time"),
                "approve it once (approve without for_session), or deny it",
            ));
        }
        let state = if choice.approves() {
            ApprovalState::Approved
        } else {
            ApprovalState::Denied
        };
        if !self
            .core
            .store()
            .decide_approval(id, state, choice.as_str(), by)
            .await?
        {
            let a = self
                .core
                .store()
                .approval(id)
                .await?
                .ok_or_else(|| not_found(id))?;
            return Err(CoreError::new(
                ErrorCode::ApprovalAlreadyDecided,
                format!(
                    "already {} by {}",
                    a.state.as_str(),
                    a.decided_by.as_deref().unwrap_or("?")
                ),
                "nothing to do",
            ));
        }
        if choice == Choice::ApproveSession {
            self.core
                .store()
                .insert_grant(
                    &a.session_id,
                    &a.tool_name,
                    &policy::grant_pattern(&a.tool_name, &a.tool_input),
                    by,
                )
                .await?;
        }
        self.count(
            &a.scope,
            if choice.approves() {
                "approved"
            } else {
                "denied"
            },
        );
        if let Ok(job) = self.core.jobs().get_job(&a.job_id).await {
            self.audit_decision(
                &job,
                by,
                Audited::ApprovalDecided {
                    approved: choice.approves(),
                    approval_id: a.id.clone(),
                    tool: a.tool_name.clone(),
                    decision: choice.as_str().to_string(),
                },
            )
            .await;
        }
        let waiter = self.waiters().map.remove(id);
        if let Some((_, tx)) = waiter {
            let _ = tx.send((choice, by.to_string()));
        } else {
            // The job asking may run on another node: its node wakes the call.
            self.core.cluster().wake(&format!("decided:{id}")).await;
        }
        self.emit_decided(&a).await;
        tracing::info!(target: "televibe.approvals", approval_id = %a.id, job_id = %a.job_id, decision = choice.as_str(), by, "Approval decided");
        self.core
            .store()
            .approval(id)
            .await?
            .ok_or_else(|| not_found(id))
    }

    /// A job ended while asking: its requests expire, their buttons go, and the waiting calls answer deny.
    pub async fn end_approvals_of_job(&self, job_id: &str) {
        let waiting: Vec<(String, oneshot::Sender<(Choice, String)>)> = {
            let mut w = self.waiters();
            let ids: Vec<String> = w
                .map
                .iter()
                .filter(|(_, (j, _))| j == job_id)
                .map(|(id, _)| id.clone())
                .collect();
            ids.into_iter()
                .filter_map(|id| w.map.remove(&id).map(|(_, tx)| (id, tx)))
                .collect()
        };
        if !waiting.is_empty() {
            tracing::info!(target: "televibe.approvals", job_id, ended = waiting.len(), "Ending the approval requests of a finished job");
        }
        for (id, tx) in waiting {
            if self
                .core
                .store()
                .decide_approval(&id, ApprovalState::Expired, "expired", "job ended")
                .await
                .unwrap_or(false)
                && let Ok(Some(a)) = self.core.store().approval(&id).await
            {
                self.retire_expired(&a).await;
            }
            let _ = tx.send((Choice::Deny, "daemon".into()));
        }
    }

    /// An `approval.decided` event: the request's message is edited to its decision, buttons gone.
    async fn emit_decided(&self, a: &Approval) {
        let scope = Scope {
            project_id: None,
            session_id: Some(a.session_id.clone()),
            job_id: Some(a.job_id.clone()),
        };
        let approval_id = a.id.clone();
        self.core
            .events()
            .emit(scope, Event::ApprovalDecided { approval_id })
            .await;
    }

    /// An approval that expired without a person: counted, and its message loses its buttons.
    async fn retire_expired(&self, a: &Approval) {
        self.count(&a.scope, "expired");
        self.emit_decided(a).await;
    }

    pub async fn list_pending_approvals(&self) -> Result<Vec<Approval>, CoreError> {
        Ok(self.core.store().pending_approvals().await?)
    }

    /// At boot no waiting call survives: pending approvals expire and their buttons are retired.
    /// Wakes the calls of this node whose approval another node decided (`only`: that one approval; `None`:
    /// every waiting one, the sweep after a missed wake-up).
    pub async fn wake_decided_elsewhere(&self, only: Option<&str>) {
        let ids: Vec<String> = {
            let w = self.waiters();
            w.map
                .keys()
                .filter(|id| only.is_none_or(|o| o == id.as_str()))
                .cloned()
                .collect()
        };
        for id in ids {
            let Ok(Some(a)) = self.core.store().approval(&id).await else {
                continue;
            };
            let choice = match a.decision.as_deref() {
                Some("approve_once") => Choice::ApproveOnce,
                Some("approve_session") => Choice::ApproveSession,
                Some("deny") => Choice::Deny,
                Some("deny_stop") => Choice::DenyStop,
                _ => continue,
            };
            if let Some((_, tx)) = self.waiters().map.remove(&id) {
                tracing::info!(target: "televibe.approvals", approval_id = %id, decision = choice.as_str(), "Approval decided on another node");
                let _ = tx.send((choice, a.decided_by.clone().unwrap_or_default()));
            }
        }
    }

    pub async fn expire_orphaned_approvals(&self) {
        // Only this node's: another node's jobs are still asking.
        let hosted = self.core.sessions().hosted_here().await;
        match self
            .core
            .store()
            .expire_pending_approvals(chrono::Utc::now(), |a| {
                hosted.as_ref().is_none_or(|h| h.contains(&a.session_id))
            })
            .await
        {
            Ok(expired) => {
                for a in expired {
                    self.retire_expired(&a).await;
                }
            }
            Err(e) => {
                tracing::error!(target: "televibe.approvals", error = %e, "pending approvals not expired")
            }
        }
    }
}
