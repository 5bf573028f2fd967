//! Claude Code's tool names: what each does and which input field names what it acts on.

use crate::agents::ToolKind;

pub fn kind(tool: &str) -> Option<ToolKind> {
    Some(match tool {
        "Bash" => ToolKind::Shell,
        "Write" | "Edit" | "MultiEdit" | "NotebookEdit" => ToolKind::Write,
        "Read" => ToolKind::Read,
        "Grep" | "Glob" => ToolKind::Search,
        "WebFetch" => ToolKind::Fetch,
        "WebSearch" => ToolKind::WebSearch,
        _ => return None,
    })
}

/// The input fields naming what a tool acts on, the one shown first first.
pub fn subject_fields(tool: &str) -> &'static [&'static str] {
    match tool {
        "Bash" => &["command"],
        "Read" | "Write" | "Edit" | "MultiEdit" => &["file_path", "notebook_path"],
        "NotebookEdit" => &["notebook_path", "file_path"],
        "Grep" | "Glob" => &["pattern"],
        "WebFetch" => &["url"],
        "WebSearch" => &["query"],
        _ => &[],
    }
}
