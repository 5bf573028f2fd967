//! MCP tools for scheduled instructions: `schedule_instruction`, `list_schedules`, `cancel_schedule`.

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::{ErrorData as McpError, Peer, RoleServer, tool, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;

use super::errors::{respond, respond_list};
use super::server::{ControlServer, caller};

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ScheduleParams {
    /// Session id, e.g. `S12`; the schedule is removed when the session closes.
    pub session_id: String,
    /// Five fields in UTC: minute hour day-of-month month day-of-week, e.g. `0 9 * * 1-5`.
    pub cron: String,
    /// What the agent should do at each run (1 to 10,000 characters).
    pub instruction: String,
    /// The agent that runs it (`claude`, `codex`); default: the session's at the time of each run.
    pub agent: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListSchedulesParams {
    /// Only this session's schedules.
    pub session_id: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CancelScheduleParams {
    /// Schedule id, e.g. `SC3`.
    pub schedule_id: String,
}

#[tool_router(router = schedules_router, vis = "pub(crate)")]
impl ControlServer {
    #[tool(
        description = "Schedule an instruction in a session on a five-field UTC cron: at each occurrence it is queued as run_instruction queues it (a run missed while the daemon was down runs once at start). Answers the schedule with its id (SC<n>) and next_run_at."
    )]
    async fn schedule_instruction(
        &self,
        peer: Peer<RoleServer>,
        Parameters(p): Parameters<ScheduleParams>,
    ) -> Result<CallToolResult, McpError> {
        Ok(respond(
            self.core
                .schedules()
                .schedule_instruction(
                    &caller(&peer),
                    &p.session_id,
                    &p.cron,
                    &p.instruction,
                    p.agent.as_deref(),
                )
                .await,
        ))
    }

    #[tool(
        description = "List the scheduled instructions (not canceled or removed), oldest first, optionally of one session."
    )]
    async fn list_schedules(
        &self,
        Parameters(p): Parameters<ListSchedulesParams>,
    ) -> Result<CallToolResult, McpError> {
        Ok(respond_list(
            "schedules",
            self.core
                .schedules()
                .list_schedules(p.session_id.as_deref())
                .await,
        ))
    }

    #[tool(
        description = "Cancel a scheduled instruction: it runs no more (a job it queued already is left alone). Answers the schedule as removed."
    )]
    async fn cancel_schedule(
        &self,
        peer: Peer<RoleServer>,
        Parameters(p): Parameters<CancelScheduleParams>,
    ) -> Result<CallToolResult, McpError> {
        Ok(respond(
            self.core
                .schedules()
                .cancel_schedule(&caller(&peer), &p.schedule_id)
                .await,
        ))
    }
}
