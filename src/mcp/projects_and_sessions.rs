//! MCP tools for projects and sessions.

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::{ErrorData as McpError, Peer, RoleServer, tool, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;

use super::errors::{respond, respond_list};
use super::server::{ControlServer, caller};

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ProjectParams {
    /// Project id, e.g. `myapp`.
    pub project_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RegisterParams {
    /// Path of a repository already on disk: absolute, or relative to `<root>/repos`. Give path or url.
    pub path: Option<String>,
    /// URL of a repository to clone into `<root>/repos/<id>`: `https://…`, `ssh://…`, `git@host:path`,
    /// `file:///…` or an absolute path. Give path or url.
    pub url: Option<String>,
    /// Display name; the project id is its slug (default: the directory name, or the URL's last
    /// component without `.git`). With url, the clone's directory is named by the id.
    pub name: Option<String>,
    /// Let the agent load the repository's own settings (`.claude/` hooks, `.mcp.json` servers),
    /// still inside the sandbox. Default false. Setting it on a registered project marks it trusted.
    pub trusted: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListSessionsParams {
    /// Only this project's sessions.
    pub project_id: Option<String>,
    /// Include closed sessions (history).
    pub include_closed: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CreateSessionParams {
    pub project_id: String,
    /// Branch to work on: created from `base` if missing, reused if it exists and is unused.
    /// Default: `<sessions.branch_prefix>S<n>`.
    pub branch: Option<String>,
    /// Branch a new branch starts from (default: the project's default branch).
    pub base: Option<String>,
    /// The agent the session's instructions run with (`claude`, `codex`); default: `agent.default`.
    pub agent: Option<String>,
    /// The node to host the session (several nodes on one PostgreSQL store); default: the node with the
    /// fewest running jobs (a project registered by path: the node that has it).
    pub node: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SessionParams {
    /// Session id, e.g. `S12`.
    pub session_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CloseSessionParams {
    pub session_id: String,
    /// Close even with uncommitted changes or a running job (changes are discarded).
    pub force: Option<bool>,
    /// Also delete the session's branch (kept by default).
    pub delete_branch: Option<bool>,
}

#[tool_router(router = domain_router, vis = "pub(crate)")]
impl ControlServer {
    #[tool(description = "List registered projects (git repositories).")]
    async fn list_projects(&self) -> Result<CallToolResult, McpError> {
        Ok(respond_list(
            "projects",
            self.core.projects().list_projects().await,
        ))
    }

    #[tool(description = "Get one project by id.")]
    async fn get_project(
        &self,
        Parameters(p): Parameters<ProjectParams>,
    ) -> Result<CallToolResult, McpError> {
        Ok(respond(
            self.core.projects().get_project(&p.project_id).await,
        ))
    }

    #[tool(
        description = "Register a git repository as a project: by path (inside <root>/repos or an allowed root) or by url (cloned with the daemon's git credentials into <root>/repos/<id>, id = slug of name or of the URL's last component). Registering the same path, or the same url under the same id, twice returns the existing project."
    )]
    async fn register_project(
        &self,
        peer: Peer<RoleServer>,
        Parameters(p): Parameters<RegisterParams>,
    ) -> Result<CallToolResult, McpError> {
        Ok(respond(
            self.core
                .projects()
                .register_path_or_url(
                    &caller(&peer),
                    p.path.as_deref(),
                    p.url.as_deref(),
                    p.name.as_deref(),
                    p.trusted.unwrap_or(false),
                )
                .await,
        ))
    }

    #[tool(
        description = "Register every git repository one level below <root>/repos that is not registered yet."
    )]
    async fn scan_projects(&self, peer: Peer<RoleServer>) -> Result<CallToolResult, McpError> {
        Ok(respond(
            self.core.projects().scan_projects(&caller(&peer)).await,
        ))
    }

    #[tool(description = "List sessions (open ones unless include_closed), newest first.")]
    async fn list_sessions(
        &self,
        Parameters(p): Parameters<ListSessionsParams>,
    ) -> Result<CallToolResult, McpError> {
        Ok(respond_list(
            "sessions",
            self.core
                .sessions()
                .list_sessions(p.project_id.as_deref(), p.include_closed.unwrap_or(false))
                .await,
        ))
    }

    #[tool(description = "Open a session: a branch of the project plus its own git worktree.")]
    async fn create_session(
        &self,
        peer: Peer<RoleServer>,
        Parameters(p): Parameters<CreateSessionParams>,
    ) -> Result<CallToolResult, McpError> {
        Ok(respond(
            self.core
                .sessions()
                .create_session_on(
                    &caller(&peer),
                    &p.project_id,
                    p.branch.as_deref(),
                    p.base.as_deref(),
                    p.agent.as_deref(),
                    p.node.as_deref(),
                )
                .await,
        ))
    }

    #[tool(description = "Get one session by id (S<n>).")]
    async fn get_session(
        &self,
        Parameters(p): Parameters<SessionParams>,
    ) -> Result<CallToolResult, McpError> {
        Ok(respond(
            self.core.sessions().get_session(&p.session_id).await,
        ))
    }

    #[tool(
        description = "Close a session: removes its worktree (refused with uncommitted changes or a running job unless force), keeps the branch unless delete_branch."
    )]
    async fn close_session(
        &self,
        peer: Peer<RoleServer>,
        Parameters(p): Parameters<CloseSessionParams>,
    ) -> Result<CallToolResult, McpError> {
        let r = self
            .core
            .sessions()
            .close_session(
                &caller(&peer),
                &p.session_id,
                p.force.unwrap_or(false),
                p.delete_branch.unwrap_or(false),
            )
            .await;
        Ok(respond(r))
    }

    #[tool(
        description = "Recover a session whose worktree is missing (worktree_missing): re-creates the worktree on the same branch at the same path, or, when git cannot, closes the session and opens a new one on that branch. The answer's action says which (worktree_recreated, worktree_found, replaced)."
    )]
    async fn recover_session(
        &self,
        peer: Peer<RoleServer>,
        Parameters(p): Parameters<SessionParams>,
    ) -> Result<CallToolResult, McpError> {
        Ok(respond(
            self.core
                .sessions()
                .recover_session(&caller(&peer), &p.session_id)
                .await,
        ))
    }
}
