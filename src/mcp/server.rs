//! The MCP tool server each socket connection gets.

use crate::audit::Audited;
use std::sync::Arc;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{
    ErrorData as McpError, Peer, RoleServer, ServerHandler, tool, tool_handler, tool_router,
};
use schemars::JsonSchema;
use serde::Deserialize;

use super::errors::{ErrorCode, ToolError, ok_json, respond};
use crate::core::Core;
use crate::supervisor::SupervisorMsg;

/// The tools of one connection.
#[derive(Clone)]
pub struct ControlServer {
    pub(crate) core: Arc<Core>,
    tool_router: ToolRouter<ControlServer>,
}

/// Who is calling, for audit records: `mcp:<client name>` for every client, the admin CLI included.
pub fn caller(peer: &Peer<RoleServer>) -> String {
    actor_for(
        peer.peer_info()
            .map(|i| i.client_info.name.clone())
            .as_deref(),
    )
}

/// The audit actor for a client that introduced itself as `name`. A client chooses its own name, so no
/// name earns a role: the admin CLI is recorded as `mcp:televibe-admin` like any other client, and who may
/// connect at all is decided by the socket's file mode.
fn actor_for(name: Option<&str>) -> String {
    match name {
        Some(name) => format!("mcp:{name}"),
        None => "mcp".into(),
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct BreakerParams {
    /// claude_code, telegram_api, git_operations or backup_remote.
    pub name: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct PanicActorParams {
    /// Name of a child of the root supervisor, as `get_supervision_tree` shows it.
    pub name: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ShiftClockParams {
    /// Seconds to move the scheduler's clock on (negative: back).
    pub secs: i64,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ExhaustMemoryParams {
    /// Stop allocating after this many MiB (a guard for a daemon with no memory limit).
    pub max_mib: u64,
}

#[tool_router]
impl ControlServer {
    pub fn new(core: Arc<Core>) -> ControlServer {
        let mut tool_router = Self::tool_router()
            + Self::domain_router()
            + Self::jobs_router()
            + Self::schedules_router()
            + Self::pull_requests_router();
        if !core.config().debug.test_hooks {
            tool_router.remove_route("debug_panic_actor");
            tool_router.remove_route("debug_exhaust_memory");
            tool_router.remove_route("debug_shift_scheduler_clock");
        }
        ControlServer { core, tool_router }
    }

    #[tool(
        description = "Each configured agent's usage limits as its CLI last reported them: the windows (used percent, reset time as Unix seconds), and until when the agent is limited (its jobs wait and resume then)."
    )]
    async fn get_usage(&self) -> Result<CallToolResult, McpError> {
        let config = self.core.config();
        let agents = self.core.jobs().usage(&config.agent.names());
        Ok(ok_json(&serde_json::json!({ "agents": agents })))
    }

    #[tool(
        description = "Daemon health: liveness, readiness checks (database, telegram, repos), read-only mode, agent command, breakers."
    )]
    async fn get_health(&self) -> Result<CallToolResult, McpError> {
        Ok(ok_json(&self.core.health().await))
    }

    #[tool(
        description = "The live supervision tree: each actor's name, status, restarts and uptime."
    )]
    async fn get_supervision_tree(&self) -> Result<CallToolResult, McpError> {
        Ok(match self.core.supervision_tree().await {
            Ok(tree) => ok_json(&tree),
            Err(e) => ToolError::new(
                ErrorCode::InternalError,
                e,
                "check the daemon log; it may be shutting down",
            )
            .into_result(),
        })
    }

    #[tool(
        description = "The nodes sharing the store (several machines on PostgreSQL): the leader, each node's last heartbeat, running jobs and open sessions. On SQLite: this one node."
    )]
    async fn list_nodes(&self) -> Result<CallToolResult, McpError> {
        Ok(respond(self.core.cluster().nodes().await))
    }

    #[tool(
        description = "State of the circuit breakers claude_code, telegram_api, git_operations and backup_remote."
    )]
    async fn get_breakers(&self) -> Result<CallToolResult, McpError> {
        Ok(ok_json(
            &serde_json::json!({"breakers": self.core.breakers().statuses()}),
        ))
    }

    #[tool(description = "Close a circuit breaker by hand (audited as admin.breaker_reset).")]
    async fn reset_breaker(
        &self,
        peer: Peer<RoleServer>,
        Parameters(p): Parameters<BreakerParams>,
    ) -> Result<CallToolResult, McpError> {
        let Some(name) = crate::breaker::BreakerName::parse(&p.name) else {
            return Ok(ToolError::new(
                ErrorCode::InternalError,
                format!("no breaker named {:?}", p.name),
                "use claude_code, telegram_api, git_operations or backup_remote",
            )
            .into_result());
        };
        self.core.breakers().get(name).reset();
        self.core
            .events()
            .audit(
                &caller(&peer),
                Default::default(),
                Audited::BreakerReset {
                    breaker: name.as_str().to_string(),
                },
            )
            .await;
        Ok(ok_json(&self.core.breakers().get(name).status()))
    }

    #[tool(
        description = "Take a backup of the state database now (verified, compressed, uploaded when backup.remote is set); audited as admin.backup_now."
    )]
    async fn backup_now(&self, peer: Peer<RoleServer>) -> Result<CallToolResult, McpError> {
        let cell = match self.core.root_child("backup").await {
            Ok(c) => c,
            Err(e) => {
                return Ok(ToolError::new(
                    ErrorCode::InternalError,
                    e.to_string(),
                    "retry in a moment",
                )
                .into_result());
            }
        };
        let actor: ractor::ActorRef<crate::actors::backup::BackupMsg> = cell.into();
        // A run waits for a run in progress; both copy, check and upload at most a few minutes.
        let outcome = ractor::call_t!(actor, crate::actors::backup::BackupMsg::RunNow, 900_000);
        let (result, details) = match outcome {
            Ok(Ok(o)) => (
                ok_json(&o),
                serde_json::json!({"file": o.file, "bytes": o.bytes}),
            ),
            Ok(Err(e)) => (
                ToolError::new(
                    ErrorCode::InternalError,
                    format!("backup failed: {e}"),
                    "check free space in orchestrator/backups and the daemon log",
                )
                .into_result(),
                serde_json::json!({"error": e}),
            ),
            Err(e) => (
                ToolError::new(ErrorCode::InternalError, e.to_string(), "retry").into_result(),
                serde_json::json!({"error": e.to_string()}),
            ),
        };
        self.core
            .events()
            .audit(
                &caller(&peer),
                Default::default(),
                Audited::BackupNow { outcome: details },
            )
            .await;
        Ok(result)
    }

    #[tool(
        description = "Failure drill: allocate and touch memory in 8 MiB steps up to max_mib, so a memory limit (cgroup) kills the daemon (only with debug.test_hooks = true)."
    )]
    async fn debug_exhaust_memory(
        &self,
        Parameters(p): Parameters<ExhaustMemoryParams>,
    ) -> Result<CallToolResult, McpError> {
        tracing::warn!(target: "televibe.drill", max_mib = p.max_mib, "Failure drill: exhausting memory");
        std::thread::spawn(move || {
            let mut held: Vec<Vec<u8>> = Vec::new();
            for _ in 0..p.max_mib.div_ceil(8) {
                held.push(vec![0x5a; 8 << 20]);
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            // Reached the guard without being stopped: keep the memory until the process ends.
            std::mem::forget(held);
        });
        Ok(ok_json(&serde_json::json!({"allocating_mib": p.max_mib})))
    }

    #[tool(
        description = "Test hook: move the instruction scheduler's clock on by secs; answers its new time (only with debug.test_hooks = true)."
    )]
    async fn debug_shift_scheduler_clock(
        &self,
        Parameters(p): Parameters<ShiftClockParams>,
    ) -> Result<CallToolResult, McpError> {
        let now = self.core.schedules().shift_clock(p.secs);
        tracing::warn!(target: "televibe.drill", secs = p.secs, now = %now, "Test hook: the scheduler's clock moved");
        Ok(ok_json(&serde_json::json!({"scheduler_now": now})))
    }

    #[tool(
        description = "Failure drill: make a supervised actor panic (only with debug.test_hooks = true)."
    )]
    async fn debug_panic_actor(
        &self,
        Parameters(p): Parameters<PanicActorParams>,
    ) -> Result<CallToolResult, McpError> {
        let Some(root) = self.core.root() else {
            return Ok(ToolError::new(
                ErrorCode::InternalError,
                "supervision tree not running",
                "retry in a moment",
            )
            .into_result());
        };
        let name = p.name.clone();
        Ok(
            match ractor::call_t!(root, SupervisorMsg::PanicChild, 2000, name) {
                Ok(Ok(())) => ok_json(&serde_json::json!({"panicked": p.name})),
                Ok(Err(e)) => ToolError::new(
                    ErrorCode::InternalError,
                    e.to_string(),
                    "use a name from get_supervision_tree",
                )
                .into_result(),
                Err(e) => {
                    ToolError::new(ErrorCode::InternalError, e.to_string(), "retry").into_result()
                }
            },
        )
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for ControlServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("televibe", env!("CARGO_PKG_VERSION")))
            .with_instructions("TeleVibeCode daemon: projects, sessions on git worktrees, agent jobs, approvals, health.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_client_name_is_elevated_to_admin() {
        assert_eq!(
            actor_for(Some(crate::mcp::client::ADMIN_CLIENT_NAME)),
            "mcp:televibe-admin"
        );
        assert_eq!(actor_for(Some("admin")), "mcp:admin");
        assert_eq!(actor_for(Some("claude-code")), "mcp:claude-code");
        assert_eq!(actor_for(None), "mcp");
    }
}
