//! Calls one node asks of the node hosting a session (create, close, cancel, kill): a row of `calls` the
//! hosting node claims (`FOR UPDATE SKIP LOCKED`), carries out with its own services and answers, woken by
//! `LISTEN/NOTIFY` and swept every heartbeat.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::oneshot;

use super::{Cluster, unavailable};
use crate::errors::CoreError;

/// A call one node asks of the node hosting a session.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Call {
    CreateSession {
        by: String,
        project_id: String,
        branch: Option<String>,
        base: Option<String>,
        agent: Option<String>,
    },
    CloseSession {
        by: String,
        id: String,
        force: bool,
        delete_branch: bool,
    },
    CancelJob {
        by: String,
        id: String,
    },
    KillJob {
        by: String,
        id: String,
    },
}

impl Call {
    fn kind(&self) -> &'static str {
        match self {
            Call::CreateSession { .. } => "create_session",
            Call::CloseSession { .. } => "close_session",
            Call::CancelJob { .. } => "cancel_job",
            Call::KillJob { .. } => "kill_job",
        }
    }

    /// How long the asker waits: a session's creation and closing run git, each step up to its timeout.
    fn limit(&self, git: Duration, remote: Duration) -> Duration {
        match self {
            // A session of a project cloned by URL may first need its clone on that node.
            Call::CreateSession { .. } => remote + git * 4 + Duration::from_secs(30),
            Call::CloseSession { .. } => git * 4 + Duration::from_secs(30),
            _ => Duration::from_secs(60),
        }
    }
}

impl<'a> Cluster<'a> {
    /// Asks `node` to do `call` and waits for its answer (an error of its own, or a value).
    pub async fn call(&self, node: &str, call: Call) -> Result<Value, CoreError> {
        if let Some(reason) = self.node_down(node).await {
            return Err(unavailable(
                reason,
                "wait for the node to come back (`televibe admin nodes`)",
            ));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let args = serde_json::to_string(&call).map_err(|e| CoreError::internal(e.to_string()))?;
        let (tx, mut rx) = oneshot::channel();
        self.state().asked.lock().unwrap().insert(id.clone(), tx);
        let config = self.core.config();
        let limit = call.limit(config.git_timeout, config.git_remote_timeout);
        let asked = self
            .core
            .store()
            .insert_call(&id, node, self.node_id(), call.kind(), &args, limit)
            .await;
        let answer = async {
            asked?;
            let deadline = tokio::time::Instant::now() + limit;
            loop {
                if let Some(a) = self.core.store().call_answer(&id).await? {
                    return Ok(a);
                }
                // Woken by `done:<id>`; the poll covers a wake-up missed while the listener reconnected.
                let wait = Duration::from_secs(1);
                if tokio::time::Instant::now() >= deadline {
                    return Err(unavailable(
                        format!(
                            "node {node} did not answer {} within {} s",
                            call.kind(),
                            limit.as_secs()
                        ),
                        "check `televibe admin nodes`; the call may still be carried out there",
                    ));
                }
                let _ = tokio::time::timeout(wait, &mut rx).await;
            }
        }
        .await;
        self.state().asked.lock().unwrap().remove(&id);
        let text: String = answer?;
        let answer: Result<Value, CoreError> =
            serde_json::from_str(&text).map_err(|e| CoreError::internal(e.to_string()))?;
        answer
    }

    /// Why `node` cannot answer now, if it cannot.
    async fn node_down(&self, node: &str) -> Option<String> {
        match self.core.store().nodes().await {
            Ok(rows) => match rows.iter().find(|r| r.id == node) {
                Some(r) if r.lost_at.is_none() => None,
                Some(r) => Some(format!(
                    "node {node} is gone (no heartbeat since {} UTC)",
                    r.heartbeat_at.format("%H:%M:%S")
                )),
                None => Some(format!("node {node} is not registered")),
            },
            Err(e) => Some(format!("the nodes cannot be read: {e}")),
        }
    }

    /// Carries out the calls other nodes asked of this one.
    pub async fn serve_calls(&self) {
        let calls = match self.core.store().claim_calls(self.node_id()).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(target: "televibe.cluster", error = %e, "calls not read");
                return;
            }
        };
        for c in calls {
            let core = self.core.arc();
            // Each on its own task: a session's creation does not hold a cancel behind it.
            tokio::spawn(async move {
                let answer = match serde_json::from_str::<Call>(&c.args) {
                    Ok(call) => core.cluster().carry_out(call).await,
                    Err(e) => Err(CoreError::internal(format!(
                        "unreadable call {}: {e}",
                        c.kind
                    ))),
                };
                let text = serde_json::to_string(&answer).unwrap_or_else(|_| "null".into());
                if let Err(e) = core.store().finish_call(&c.id, &text).await {
                    tracing::warn!(target: "televibe.cluster", call_id = %c.id, error = %e, "call answer not written");
                }
            });
        }
    }

    async fn carry_out(&self, call: Call) -> Result<Value, CoreError> {
        tracing::info!(target: "televibe.cluster", kind = call.kind(), "Carrying out a call of another node");
        let sessions = self.core.sessions();
        match call {
            Call::CreateSession {
                by,
                project_id,
                branch,
                base,
                agent,
            } => {
                let s = sessions
                    .create_session_here(
                        &by,
                        &project_id,
                        branch.as_deref(),
                        base.as_deref(),
                        agent.as_deref(),
                    )
                    .await?;
                Ok(serde_json::json!({ "id": s.id }))
            }
            Call::CloseSession {
                by,
                id,
                force,
                delete_branch,
            } => {
                let c = sessions
                    .close_session(&by, &id, force, delete_branch)
                    .await?;
                Ok(serde_json::json!({ "branch_deleted": c.branch_deleted }))
            }
            Call::CancelJob { by, id } => {
                sessions.cancel_job(&by, &id).await?;
                Ok(Value::Null)
            }
            Call::KillJob { by, id } => {
                sessions.kill_job(&by, &id).await?;
                Ok(Value::Null)
            }
        }
    }
}
