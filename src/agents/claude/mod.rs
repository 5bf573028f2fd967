//! Claude Code (`claude -p --output-format stream-json`): everything the daemon knows of its protocol.
//!
//! - `launch.rs`: the command line (print mode, the approval bridge as `--mcp-config` and
//!   `--permission-prompt-tool`, `--resume`, repository settings off unless trusted).
//! - `stream.rs`: the `stream-json` output, one JSON object per line, into [`AgentEvent`]s.
//! - `verdict.rs`: the `result` event and the exit into the job's status and the breaker's verdict.
//! - `state.rs`: `CLAUDE_CONFIG_DIR`, `settings.json`, `.credentials.json` and its read-only copy, the
//!   model API's variables and OAuth client.
//! - `tools.rs`: the tool names (`Bash`, `Write`…) and what each acts on.
//!
//! Approvals: Claude Code calls the permission prompt tool of the MCP server it starts; the answer is
//! `{"behavior": "allow", "updatedInput": …}` or `{"behavior": "deny", "message": …, "interrupt": …}`.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::{
    AgentDriver, AgentFiles, AgentOutput, AgentResult, AgentVerdict, ApprovalAnswer, ApprovalAsk,
    ApprovalBridge, Exit, Launch, LaunchSpec, ModelApi, ToolKind, VersionCheck,
};
use crate::domain::breaker::BreakerName;

pub mod launch;
pub mod state;
pub mod stream;
mod tools;
pub mod verdict;

/// The Claude Code driver.
#[derive(Debug, Clone, Copy)]
pub struct Claude;

static VERSION: VersionCheck = VersionCheck {
    args: &["--version"],
    install: "npm install -g @anthropic-ai/claude-code",
    install_for_all: "sudo npm install -g @anthropic-ai/claude-code",
};

/// Claude Code's output, line by line; it remembers only whether the run started (`system/init`).
struct StreamJson {
    /// The run was asked to resume a conversation.
    resumed: bool,
    started: bool,
}

impl AgentOutput for StreamJson {
    fn line(&mut self, line: &str) -> Vec<super::AgentEvent> {
        let mut events = stream::parse_line(line);
        for e in &events {
            if matches!(e, super::AgentEvent::Conversation { .. }) {
                self.started = true;
            }
        }
        // A resumed run that ends before it starts: the conversation is gone (never saved, or removed).
        if self.resumed
            && !self.started
            && events
                .iter()
                .any(|e| matches!(e, super::AgentEvent::Result(r) if r.is_error && r.num_turns == Some(0)))
        {
            events.insert(0, super::AgentEvent::ConversationLost);
        }
        events
    }
}

impl AgentDriver for Claude {
    fn name(&self) -> &'static str {
        "claude"
    }

    fn breaker(&self) -> BreakerName {
        BreakerName::ClaudeCode
    }

    fn launch(&self, job: &LaunchSpec<'_>) -> Launch {
        launch::launch(job)
    }

    fn output(&self, job: &LaunchSpec<'_>) -> Box<dyn AgentOutput> {
        Box::new(StreamJson {
            resumed: job.resume.is_some(),
            started: false,
        })
    }

    fn verdict(&self, exit: Exit, result: Option<&AgentResult>) -> AgentVerdict {
        verdict::verdict(exit, result)
    }

    fn approval_bridge(&self) -> ApprovalBridge {
        ApprovalBridge::McpTool
    }

    /// The answer Claude Code expects from the permission prompt tool, echoing the input when allowing.
    fn approval_answer(&self, _ask: &ApprovalAsk, answer: &ApprovalAnswer) -> String {
        match answer {
            ApprovalAnswer::Allow { input } => {
                json!({"behavior": "allow", "updatedInput": input}).to_string()
            }
            ApprovalAnswer::Deny { message, interrupt } => {
                json!({"behavior": "deny", "message": message, "interrupt": interrupt}).to_string()
            }
        }
    }

    fn files(&self) -> &'static AgentFiles {
        &state::FILES
    }

    fn operator_state(&self, home: &Path) -> PathBuf {
        state::operator_state(home)
    }

    fn login_copy(&self, login: &[u8], placeholder: Option<&str>) -> Option<Vec<u8>> {
        state::login_copy(login, placeholder)
    }

    fn conversations(&self, cwd: &Path) -> Option<PathBuf> {
        Some(state::conversations(cwd))
    }

    fn conversation_file(&self, cwd: &Path, id: &str) -> Option<PathBuf> {
        Some(state::conversations(cwd).join(format!("{id}.jsonl")))
    }

    fn model_api(&self) -> &'static ModelApi {
        &state::MODEL_API
    }

    fn version_check(&self) -> &'static VersionCheck {
        &VERSION
    }

    fn tool_kind(&self, tool: &str) -> Option<ToolKind> {
        tools::kind(tool)
    }

    fn subject_fields(&self, tool: &str) -> &'static [&'static str] {
        tools::subject_fields(tool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approval_answers_in_the_permission_tool_format() {
        let ask = ApprovalAsk {
            tool: "Bash".into(),
            input: json!({"command": "ls"}),
            tool_use_id: None,
            reply_to: None,
        };
        let allow = Claude.approval_answer(
            &ask,
            &ApprovalAnswer::Allow {
                input: json!({"command": "ls"}),
            },
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&allow).unwrap(),
            json!({"behavior": "allow", "updatedInput": {"command": "ls"}})
        );
        let deny = Claude.approval_answer(
            &ask,
            &ApprovalAnswer::Deny {
                message: "no".into(),
                interrupt: true,
            },
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&deny).unwrap(),
            json!({"behavior": "deny", "message": "no", "interrupt": true})
        );
    }

    #[test]
    fn the_login_copy_never_holds_the_refresh_token() {
        let login = br#"{"claudeAiOauth":{"accessToken":"a","refreshToken":"r","expiresAt":1}}"#;
        let copy: serde_json::Value =
            serde_json::from_slice(&Claude.login_copy(login, None).unwrap()).unwrap();
        assert_eq!(
            copy,
            json!({"claudeAiOauth": {"accessToken": "a", "expiresAt": 1}})
        );
        let copy: serde_json::Value =
            serde_json::from_slice(&Claude.login_copy(login, Some("ph")).unwrap()).unwrap();
        assert_eq!(copy["claudeAiOauth"]["accessToken"], "ph");
        assert!(copy["claudeAiOauth"].get("refreshToken").is_none());
        assert!(Claude.login_copy(b"not json", None).is_none());
        assert_eq!(
            Claude.conversations(Path::new("/w/S1.x")),
            Some(PathBuf::from("projects/-w-S1-x"))
        );
    }

    #[test]
    fn a_resumed_run_that_ends_before_it_starts_has_lost_its_conversation() {
        let line = std::fs::read_to_string(format!(
            "{}/tests/data/claude-code-2.1.328/resume-not-found.jsonl",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let spec = |resume| LaunchSpec {
            job_id: "j",
            instruction: "hi",
            resume,
            approvals: None,
            trusted: false,
            extra_args: &[],
            model_base_url: None,
            cwd: "/w",
        };
        let mut resumed = Claude.output(&spec(Some("0b6a76d7")));
        let ev = resumed.line(line.trim());
        assert_eq!(ev[0], super::super::AgentEvent::ConversationLost, "{ev:?}");
        // Not resumed, or started before it failed: nothing was lost.
        let mut fresh = Claude.output(&spec(None));
        assert!(
            !fresh
                .line(line.trim())
                .contains(&super::super::AgentEvent::ConversationLost)
        );
        let mut started = Claude.output(&spec(Some("0b6a76d7")));
        started.line(r#"{"type":"system","subtype":"init","session_id":"0b6a76d7"}"#);
        assert!(
            !started
                .line(line.trim())
                .contains(&super::super::AgentEvent::ConversationLost)
        );
    }
}
