//! The agents' tool vocabulary in agent-neutral terms: what a tool does ([`ToolKind`]), which input field
//! names what it acts on, and the short target shown for a tool use.
//!
//! Approvals, events and trackers carry a tool by its name alone, so a name is looked up across the
//! agents; agents' tool names do not overlap (Claude Code's are capitalised words, MCP tools start with
//! `mcp__`).

use serde_json::Value;

use super::all;

/// What a tool does, for the approval scope, the rules and how a request is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolKind {
    /// Runs a shell command (`input.command`): the rules read it the way bash does.
    Shell,
    /// Writes or edits a file.
    Write,
    /// Reads a file.
    Read,
    /// Searches files by a pattern.
    Search,
    /// Fetches a URL.
    Fetch,
    /// Searches the web.
    WebSearch,
    /// A tool of an MCP server.
    Mcp,
    /// Anything else.
    Other,
}

/// What tool `tool` does, whichever agent it belongs to.
pub fn tool_kind(tool: &str) -> ToolKind {
    if tool.starts_with("mcp__") {
        return ToolKind::Mcp;
    }
    all()
        .iter()
        .find_map(|d| d.tool_kind(tool))
        .unwrap_or(ToolKind::Other)
}

/// The fields of `tool`'s input that say what it acts on (empty: none).
fn subject_fields(tool: &str) -> &'static [&'static str] {
    all()
        .iter()
        .map(|d| d.subject_fields(tool))
        .find(|f| !f.is_empty())
        .unwrap_or(&[])
}

/// The field of a tool's input that says what it does, shown first.
pub fn subject_field(tool: &str) -> Option<&'static str> {
    subject_fields(tool).first().copied()
}

/// What a tool use acts on: the first of its subject fields present as text.
pub fn subject<'a>(tool: &str, input: &'a Value) -> Option<&'a str> {
    subject_fields(tool)
        .iter()
        .find_map(|k| input.get(*k).and_then(Value::as_str))
}

/// The short target of a tool use for people: a command, a path or a pattern, on one line of at most
/// 120 characters.
pub fn tool_target(tool: &str, input: &Value) -> String {
    let one_line = subject(tool, input).unwrap_or_default().replace('\n', " ");
    if one_line.chars().count() > 120 {
        format!("{}…", one_line.chars().take(119).collect::<String>())
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tools_are_looked_up_across_the_agents() {
        assert_eq!(tool_kind("Bash"), ToolKind::Shell);
        assert_eq!(tool_kind("NotebookEdit"), ToolKind::Write);
        assert_eq!(tool_kind("WebSearch"), ToolKind::WebSearch);
        assert_eq!(tool_kind("mcp__televibe__anything"), ToolKind::Mcp);
        assert_eq!(tool_kind("Task"), ToolKind::Other);
        assert_eq!(subject_field("Write"), Some("file_path"));
        assert_eq!(subject_field("NotebookEdit"), Some("notebook_path"));
        assert_eq!(subject_field("Task"), None);
        let input = json!({"notebook_path": "/w/n.ipynb", "command": 1});
        assert_eq!(subject("Edit", &input), Some("/w/n.ipynb"));
        assert_eq!(subject("Bash", &input), None, "a command that is not text");
        assert_eq!(tool_target("Bash", &input), "");
    }
}
