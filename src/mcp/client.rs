//! A short-lived MCP client of the daemon's socket, used by `televibe admin …` and tests.

use std::path::Path;

use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, JsonObject,
};
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the daemon at {path}: {detail} (is `televibe serve` running with this config?)"
    )]
    Connect { path: String, detail: String },
    #[error("MCP error: {0}")]
    Protocol(String),
    #[error("{code}: {message} — {suggestion}")]
    Tool {
        code: String,
        message: String,
        suggestion: String,
    },
}

/// The client name `televibe admin` announces; audit records name such callers `mcp:televibe-admin`.
pub const ADMIN_CLIENT_NAME: &str = "televibe-admin";

/// A connected client.
pub struct DaemonClient {
    service: RunningService<RoleClient, ClientConfig>,
}

impl DaemonClient {
    pub async fn connect(socket: &Path) -> Result<DaemonClient, ClientError> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|e| ClientError::Connect {
                path: socket.display().to_string(),
                detail: e.to_string(),
            })?;
        let info = ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new(ADMIN_CLIENT_NAME, env!("CARGO_PKG_VERSION")),
        );
        let service = info
            .serve(stream)
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok(DaemonClient { service })
    }

    /// Calls a tool; a result with `isError` becomes `ClientError::Tool`.
    pub async fn call(&self, tool: &str, args: Value) -> Result<Value, ClientError> {
        let mut params = CallToolRequestParams::new(tool.to_string());
        if let Value::Object(map) = args {
            params.arguments = Some(JsonObject::from_iter(map));
        }
        let res = self
            .service
            .call_tool(params)
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let body = res.structured_content.clone().unwrap_or_else(|| {
            res.content
                .first()
                .and_then(|c| c.as_text())
                .and_then(|t| serde_json::from_str(&t.text).ok())
                .unwrap_or(Value::Null)
        });
        if res.is_error == Some(true) {
            let s = |k: &str| {
                body.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            return Err(ClientError::Tool {
                code: s("code"),
                message: s("message"),
                suggestion: s("suggestion"),
            });
        }
        Ok(body)
    }

    /// Names of the tools the daemon offers.
    pub async fn tool_names(&self) -> Result<Vec<String>, ClientError> {
        let tools = self
            .service
            .list_all_tools()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok(tools.into_iter().map(|t| t.name.to_string()).collect())
    }

    pub async fn close(self) {
        let _ = self.service.cancel().await;
    }
}
