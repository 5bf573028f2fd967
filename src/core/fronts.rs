//! What the fronts call besides the domain APIs: the hooks they install at boot (the chat front's readiness
//! check, the approval endpoint server), the values they keep across restarts, the outbox they deliver,
//! and the audit records of their callers. The fronts never reach the store; these are their way in.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::{Core, FrontCheck};
use crate::domain::{Approval, Job, OutboxEvent};
use crate::errors::CoreError;

/// Serves a job's approval endpoint (the protocol the agent's permission tool speaks), until aborted.
/// The MCP front provides it; the daemon installs it at boot.
pub type ApprovalServer =
    fn(tokio::net::UnixListener, Arc<Core>, String) -> Pin<Box<dyn Future<Output = ()> + Send>>;

impl Core {
    /// Installs the chat front's readiness check (once, at boot).
    pub fn set_front_check(&self, check: Box<dyn FrontCheck>) {
        let _ = self.front_check.set(check);
    }

    /// Installs the server of jobs' approval endpoints (once, at boot).
    pub fn set_approval_server(&self, server: ApprovalServer) {
        let _ = self.approval_server.set(server);
    }

    pub fn approval_server(&self) -> Option<ApprovalServer> {
        self.approval_server.get().copied()
    }

    /// A value a front keeps across restarts (chat routing, its poll offset), by key.
    pub async fn front_value(&self, key: &str) -> Option<String> {
        self.store.kv_get(key).await.ok().flatten()
    }

    pub async fn set_front_value(&self, key: &str, value: &str) -> Result<(), CoreError> {
        Ok(self.store.kv_set(key, value).await?)
    }

    pub async fn forget_front_value(&self, key: &str) -> Result<(), CoreError> {
        Ok(self.store.kv_delete(key).await?)
    }

    /// Whether the store refuses writes (degraded mode).
    pub fn is_read_only(&self) -> bool {
        self.store.is_read_only()
    }

    /// Outbox events not yet delivered, after `cursor` (an event id), oldest first.
    pub async fn undelivered_events(
        &self,
        cursor: i64,
        limit: u64,
    ) -> Result<Vec<OutboxEvent>, CoreError> {
        Ok(self.store.undelivered_events(cursor, limit).await?)
    }

    /// Marks outbox events delivered (their message went out, or was refused for good).
    pub async fn mark_delivered(&self, ids: &[i64]) -> Result<(), CoreError> {
        Ok(self.store.mark_delivered(ids).await?)
    }

    /// A job by its whole id (the outbox names jobs so); `None` when unknown or unreadable.
    pub async fn job_by_id(&self, id: &str) -> Option<Job> {
        self.store.job(id).await.ok().flatten()
    }

    /// An approval request by id; `None` when unknown or unreadable.
    pub async fn approval(&self, id: &str) -> Option<Approval> {
        self.store.approval(id).await.ok().flatten()
    }

    /// Records the chat message that shows an approval request (its buttons are edited there later).
    pub async fn set_approval_message(&self, id: &str, chat_id: i64, message_id: i64) {
        if let Err(e) = self
            .store
            .set_approval_message(id, chat_id, message_id)
            .await
        {
            tracing::warn!(target: "televibe.approvals", approval_id = id, error = %e, "approval message not recorded");
        }
    }

    /// The process groups of the jobs running now (the control socket refuses their processes).
    pub async fn running_job_groups(&self) -> Result<Vec<i32>, CoreError> {
        Ok(self
            .store
            .unfinished_running_jobs()
            .await?
            .iter()
            .filter_map(|j| j.pgid)
            .collect())
    }
}
