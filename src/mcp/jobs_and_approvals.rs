//! MCP tools for jobs.

use rmcp::handler::server::wrapper::Parameters;
use std::time::Duration;

use rmcp::model::{CallToolResult, ProgressNotificationParam, RequestMetaObject};
use rmcp::{ErrorData as McpError, Peer, RoleServer, tool, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;

use super::errors::{respond, respond_list};
use super::server::{ControlServer, caller};
use crate::core::approvals::Choice;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RunParams {
    /// Session id, e.g. `S12`.
    pub session_id: String,
    /// What the agent should do (1 to 10,000 characters).
    pub instruction: String,
    /// Answer when the job ends (as `wait_job` does) instead of when it is queued.
    pub wait: Option<bool>,
    /// With `wait`: the longest to wait, in seconds (default 600, at most 3600).
    pub timeout_secs: Option<u64>,
    /// The agent that runs this instruction (`claude`, `codex`); default: the session's.
    pub agent: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct PushParams {
    /// Session id, e.g. `S12`.
    pub session_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct WaitParams {
    /// Job id, or a unique prefix of at least 8 characters.
    pub job_id: String,
    /// The longest to wait, in seconds (default 60, at most 3600).
    pub timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct JobParams {
    /// Job id, or a unique prefix of at least 8 characters.
    pub job_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListJobsParams {
    pub session_id: Option<String>,
    /// queued, running, waiting_approval, done, failed or canceled.
    pub status: Option<String>,
    /// At most this many, newest first (default 50, at most 500).
    pub limit: Option<u64>,
    /// The next page: jobs older than this one (the previous page's `next_before`).
    pub before: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct LogParams {
    pub job_id: String,
    /// How many lines from the end (default 100, at most 5000).
    pub lines: Option<usize>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ApproveParams {
    pub approval_id: String,
    /// Also allow the same tool and command (or path) for the rest of the session.
    pub for_session: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct DenyParams {
    pub approval_id: String,
    /// Also stop the job.
    pub stop: Option<bool>,
}

impl ControlServer {
    /// Waits for a job, forwarding its events as MCP progress notifications when the client asked.
    async fn wait(
        &self,
        peer: &Peer<RoleServer>,
        meta: &RequestMetaObject,
        job_id: &str,
        timeout: Duration,
    ) -> CallToolResult {
        let token = meta.get_progress_token();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, String)>();
        let forward = token.map(|token| {
            let peer = peer.clone();
            tokio::spawn(async move {
                while let Some((n, message)) = rx.recv().await {
                    let note = ProgressNotificationParam::new(token.clone(), n as f64)
                        .with_message(message);
                    if peer.notify_progress(note).await.is_err() {
                        return;
                    }
                }
            })
        });
        let waited = self
            .core
            .jobs()
            .wait_job(job_id, timeout, |n, line| {
                let _ = tx.send((n, line));
            })
            .await;
        drop(tx);
        if let Some(f) = forward {
            // Notifications go before the answer.
            let _ = f.await;
        }
        respond(waited)
    }
}

#[tool_router(router = jobs_router, vis = "pub(crate)")]
impl ControlServer {
    #[tool(
        description = "Queue an instruction for the agent in a session; answers the job and its queue position, or with wait: true the job once it ended (progress notifications while it runs when the request carries a progressToken)."
    )]
    async fn run_instruction(
        &self,
        peer: Peer<RoleServer>,
        meta: RequestMetaObject,
        Parameters(p): Parameters<RunParams>,
    ) -> Result<CallToolResult, McpError> {
        let queued = self
            .core
            .sessions()
            .run_instruction(&p.session_id, &p.instruction, p.agent.as_deref())
            .await;
        match queued {
            Ok(q) if p.wait.unwrap_or(false) => {
                let timeout = Duration::from_secs(p.timeout_secs.unwrap_or(600));
                Ok(self.wait(&peer, &meta, &q.job.id, timeout).await)
            }
            other => Ok(respond(other)),
        }
    }

    #[tool(
        description = "Queue a push of the session's branch to the project's origin: a job (kind push) that waits for the jobs before it, asks for an approval of scope git_push (approve/deny; never approved for the session) and pushes with the daemon's git credentials; its result tells the commit range, or the remote's refusal. Answers the job and its queue position."
    )]
    async fn push_session(
        &self,
        Parameters(p): Parameters<PushParams>,
    ) -> Result<CallToolResult, McpError> {
        Ok(respond(
            self.core.sessions().push_session(&p.session_id).await,
        ))
    }

    #[tool(
        description = "Wait until a job ends (done, failed, canceled) or timeout_secs pass; answers the job and timed_out. Sends progress notifications while waiting when the request carries a progressToken."
    )]
    async fn wait_job(
        &self,
        peer: Peer<RoleServer>,
        meta: RequestMetaObject,
        Parameters(p): Parameters<WaitParams>,
    ) -> Result<CallToolResult, McpError> {
        let timeout = Duration::from_secs(p.timeout_secs.unwrap_or(60));
        Ok(self.wait(&peer, &meta, &p.job_id, timeout).await)
    }

    #[tool(description = "Get a job: status, error, result, turns, cost, files changed.")]
    async fn get_job(
        &self,
        Parameters(p): Parameters<JobParams>,
    ) -> Result<CallToolResult, McpError> {
        Ok(respond(self.core.jobs().get_job(&p.job_id).await))
    }

    #[tool(description = "List jobs, newest first, optionally of one session or one status.")]
    async fn list_jobs(
        &self,
        Parameters(p): Parameters<ListJobsParams>,
    ) -> Result<CallToolResult, McpError> {
        Ok(respond(
            self.core
                .jobs()
                .list_jobs_page(
                    p.session_id.as_deref(),
                    p.status.as_deref(),
                    p.limit,
                    p.before.as_deref(),
                )
                .await,
        ))
    }

    #[tool(
        description = "Cancel a job: a queued one at once, a running one with SIGTERM, then SIGKILL after the grace period."
    )]
    async fn cancel_job(
        &self,
        peer: Peer<RoleServer>,
        Parameters(p): Parameters<JobParams>,
    ) -> Result<CallToolResult, McpError> {
        Ok(respond(
            self.core
                .sessions()
                .cancel_job(&caller(&peer), &p.job_id)
                .await,
        ))
    }

    #[tool(
        description = "The last lines of a job's log (stdout and stderr, tagged); truncated says earlier lines exist."
    )]
    async fn get_job_logs(
        &self,
        Parameters(p): Parameters<LogParams>,
    ) -> Result<CallToolResult, McpError> {
        Ok(respond(self.core.jobs().job_logs(&p.job_id, p.lines).await))
    }

    #[tool(
        description = "Operator runbook for a stuck job: SIGTERM, grace, SIGKILL, failed with Manual termination (audited)."
    )]
    async fn kill_job(
        &self,
        peer: Peer<RoleServer>,
        Parameters(p): Parameters<JobParams>,
    ) -> Result<CallToolResult, McpError> {
        Ok(respond(
            self.core
                .sessions()
                .kill_job(&caller(&peer), &p.job_id)
                .await,
        ))
    }

    #[tool(description = "Approval requests waiting for a decision.")]
    async fn list_pending_approvals(&self) -> Result<CallToolResult, McpError> {
        Ok(respond_list(
            "approvals",
            self.core.approvals().list_pending_approvals().await,
        ))
    }

    #[tool(
        description = "Approve a pending request (for_session: also the same tool and command for the rest of the session)."
    )]
    async fn approve(
        &self,
        peer: Peer<RoleServer>,
        Parameters(p): Parameters<ApproveParams>,
    ) -> Result<CallToolResult, McpError> {
        let choice = if p.for_session.unwrap_or(false) {
            Choice::ApproveSession
        } else {
            Choice::ApproveOnce
        };
        Ok(respond(
            self.core
                .approvals()
                .decide_approval(&p.approval_id, choice, &caller(&peer))
                .await,
        ))
    }

    #[tool(description = "Deny a pending request (stop: also stop the job).")]
    async fn deny(
        &self,
        peer: Peer<RoleServer>,
        Parameters(p): Parameters<DenyParams>,
    ) -> Result<CallToolResult, McpError> {
        let choice = if p.stop.unwrap_or(false) {
            Choice::DenyStop
        } else {
            Choice::Deny
        };
        Ok(respond(
            self.core
                .approvals()
                .decide_approval(&p.approval_id, choice, &caller(&peer))
                .await,
        ))
    }
}
