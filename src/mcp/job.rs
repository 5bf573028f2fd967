//! The MCP server a job's Claude reaches: exactly one tool, `approval_prompt`, bound to that job.

use std::sync::Arc;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ErrorData as McpError, ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use crate::core::Core;

#[derive(Clone)]
pub struct JobServer {
    core: Arc<Core>,
    job_id: String,
    tool_router: ToolRouter<JobServer>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct PromptParams {
    /// The tool Claude wants to use, e.g. `Bash`.
    pub tool_name: String,
    /// The tool's input.
    pub input: serde_json::Map<String, Value>,
    pub tool_use_id: Option<String>,
}

#[tool_router]
impl JobServer {
    pub fn new(core: Arc<Core>, job_id: String) -> JobServer {
        JobServer {
            core,
            job_id,
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        description = "Asks the TeleVibeCode user (or its policy) whether this tool use may run."
    )]
    async fn approval_prompt(
        &self,
        Parameters(p): Parameters<PromptParams>,
    ) -> Result<CallToolResult, McpError> {
        let input = Value::Object(p.input);
        let text = match self
            .core
            .request_approval(&self.job_id, &p.tool_name, input.clone(), p.tool_use_id)
            .await
        {
            Ok(text) => text,
            // No decision can be had: deny, so nothing runs unapproved.
            Err(e) => crate::approvals::answer(false, &input, &e.message, false),
        };
        Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for JobServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("televibe", env!("CARGO_PKG_VERSION")))
    }
}
