//! Tool errors: results with `isError: true` and a JSON body `{code, message, suggestion}`.

use rmcp::model::CallToolResult;
use serde::Serialize;

pub use crate::errors::{CoreError as ToolError, ErrorCode};

impl ToolError {
    pub fn into_result(self) -> CallToolResult {
        CallToolResult::structured_error(serde_json::to_value(&self).unwrap_or_default())
    }
}

/// A list answer as a tool result: `structuredContent` must be an object, so the list goes under `key`.
pub fn respond_list<T: Serialize>(key: &str, r: Result<Vec<T>, ToolError>) -> CallToolResult {
    respond(r.map(|items| serde_json::json!({ key: items })))
}

/// A core answer as a tool result.
pub fn respond<T: Serialize>(r: Result<T, ToolError>) -> CallToolResult {
    match r {
        Ok(v) => ok_json(&v),
        Err(e) => e.into_result(),
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
