//! The MCP server a job's agent reaches (agents whose approval bridge is an MCP tool): exactly one tool,
//! `approval_prompt`, bound to that job; its answer is worded by the job's agent driver.

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
pub struct ApprovalEndpoint {
    core: Arc<Core>,
    job_id: String,
    tool_router: ToolRouter<ApprovalEndpoint>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct PromptParams {
    /// The tool the agent wants to use.
    pub tool_name: String,
    /// The tool's input.
    pub input: serde_json::Map<String, Value>,
    pub tool_use_id: Option<String>,
}

#[tool_router]
impl ApprovalEndpoint {
    pub fn new(core: Arc<Core>, job_id: String) -> ApprovalEndpoint {
        ApprovalEndpoint {
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
        let ask = crate::agents::ApprovalAsk {
            tool: p.tool_name,
            input: Value::Object(p.input),
            tool_use_id: p.tool_use_id,
            reply_to: None,
        };
        let answer = match self
            .core
            .approvals()
            .request_approval(
                &self.job_id,
                &ask.tool,
                ask.input.clone(),
                ask.tool_use_id.clone(),
            )
            .await
        {
            Ok(answer) => answer,
            // No decision can be had: deny, so nothing runs unapproved.
            Err(e) => crate::core::approvals::answer(false, &ask.input, &e.message, false),
        };
        // The job's agent words the answer (a job gone meanwhile: the default agent's words, a denial).
        let driver = match self.core.jobs().get_job(&self.job_id).await {
            Ok(job) => crate::agents::of_job(&job),
            Err(_) => crate::agents::default_driver(),
        };
        let text = driver.approval_answer(&ask, &answer);
        Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for ApprovalEndpoint {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("televibe", env!("CARGO_PKG_VERSION")))
    }
}

/// Serves job `job_id`'s own approval endpoint: every connection must open with the job's preamble
/// (`{"televibe_job": id, "token": secret}`) and then sees only `approval_prompt` for this job. The
/// listener lives in the job's sandbox and ends with the job (aborting this future ends every
/// connection it serves).
pub async fn serve_endpoint(listener: tokio::net::UnixListener, core: Arc<Core>, job_id: String) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                conns.spawn(serve_job_connection(stream, core.clone(), job_id.clone()));
            }
            Err(e) => {
                tracing::warn!(target: "televibe.socket", job_id = %job_id, error = %e, "approval endpoint accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
        while conns.try_join_next().is_some() {}
    }
}

async fn serve_job_connection(stream: tokio::net::UnixStream, core: Arc<Core>, job_id: String) {
    use rmcp::ServiceExt;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut first = String::new();
    let read_first = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        (&mut reader).take(4096).read_line(&mut first).await
    })
    .await;
    if !matches!(read_first, Ok(Ok(n)) if n > 0) {
        return;
    }
    let preamble = serde_json::from_str::<Value>(&first).unwrap_or(Value::Null);
    let token = preamble["token"].as_str().unwrap_or("");
    if preamble["televibe_job"].as_str() != Some(job_id.as_str())
        || !core.jobs().job_token_valid(&job_id, token)
    {
        tracing::warn!(target: "televibe.socket", job_id = %job_id, "Approval connection refused: wrong job or secret");
        let _ = write
            .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32001,\"message\":\"unknown or finished job\"}}\n")
            .await;
        return;
    }
    if let Ok(running) = ApprovalEndpoint::new(core, job_id)
        .serve((reader, write))
        .await
    {
        let _ = running.waiting().await;
    }
}
