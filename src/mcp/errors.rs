//! Tool errors: results with `isError: true` and a JSON body `{code, message, suggestion}`.

use rmcp::model::CallToolResult;
use serde::Serialize;

/// The error codes of the product's MCP interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    ProjectNotFound,
    SessionNotFound,
    JobNotFound,
    InvalidPath,
    NotARepository,
    InstructionEmpty,
    InstructionTooLong,
    BranchConflict,
    SessionBusy,
    SessionClosing,
    QueueFull,
    ApprovalNotFound,
    ApprovalAlreadyDecided,
    ReadOnly,
    BreakerOpen,
    GitError,
    RunnerError,
    InternalError,
}

/// A failed tool call as the client sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ToolError {
    pub code: ErrorCode,
    pub message: String,
    pub suggestion: String,
}

impl ToolError {
    pub fn new(code: ErrorCode, message: impl Into<String>, suggestion: impl Into<String>) -> Self {
        ToolError {
            code,
            message: message.into(),
            suggestion: suggestion.into(),
        }
    }

    pub fn into_result(self) -> CallToolResult {
        CallToolResult::structured_error(serde_json::to_value(&self).unwrap_or_default())
    }
}

/// A successful tool call carrying `value` as structured content and as JSON text.
pub fn ok_json<T: Serialize>(value: &T) -> CallToolResult {
    match serde_json::to_value(value) {
        Ok(v) => CallToolResult::structured(v),
        Err(e) => ToolError::new(
            ErrorCode::InternalError,
            format!("cannot encode result: {e}"),
            "report this as a bug",
        )
        .into_result(),
    }
}
