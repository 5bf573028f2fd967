//! MCP tools for forges: `open_pull_request` proposes a session's branch against its base branch on the
//! forge its project's origin names (GitHub), as `/pr` does.

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::{ErrorData as McpError, Peer, RoleServer, tool, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;

use super::errors::respond;
use super::server::{ControlServer, caller};

#[derive(Debug, Deserialize, JsonSchema)]
pub struct OpenPullRequestParams {
    /// Session id, e.g. `S12`.
    pub session_id: String,
    /// The pull request's title (default: the first line of the session's first instruction, else the
    /// branch).
    pub title: Option<String>,
}

#[tool_router(router = pull_requests_router, vis = "pub(crate)")]
impl ControlServer {
    #[tool(
        description = "Open a pull request of a session's branch into its base branch on GitHub (the project's origin names the repository; the daemon's github.token is used). The branch must be on the remote already (push_session). Returns the number and address; GitHub's refusal (already open, no commits, unknown head) comes back as FORGE_ERROR in its own words."
    )]
    async fn open_pull_request(
        &self,
        peer: Peer<RoleServer>,
        Parameters(p): Parameters<OpenPullRequestParams>,
    ) -> Result<CallToolResult, McpError> {
        Ok(respond(
            self.core
                .sessions()
                .open_pull_request(&caller(&peer), &p.session_id, p.title.as_deref())
                .await,
        ))
    }
}
