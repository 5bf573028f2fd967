//! OpenAI Codex (`codex app-server`, JSON-RPC over stdio): everything the daemon knows of its protocol.
//!
//! - `launch.rs`: the command line (`app-server`, the model provider when the daemon points Codex at its
//!   model API, then `[agents.codex] extra_args`) and the opening requests on stdin.
//! - `app_server.rs`: the conversation on stdout: JSON-RPC responses, notifications and Codex's own
//!   requests (approvals) into [`AgentEvent`](super::AgentEvent)s, and the next requests.
//! - `state.rs`: `CODEX_HOME`, its `config.toml` and `auth.json`, the model API's variables.
//!
//! Why `app-server`: it is the one mode of Codex that asks. `codex exec` forces the approval policy to
//! "never" (an escalated command is refused, a plain one runs unasked), and the elicitations of
//! `codex mcp-server` were not reliable. In `app-server` every command and file change Codex wants is an
//! `item/commandExecution/requestApproval` or `item/fileChange/requestApproval` request, answered
//! `{"decision": "accept" | "decline" | "cancel"}` on stdin after the daemon's policy and, where it
//! asks, a person decided.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::{
    AgentDriver, AgentFiles, AgentOutput, AgentResult, AgentVerdict, ApprovalAnswer, ApprovalAsk,
    ApprovalBridge, Exit, Launch, LaunchSpec, ModelApi, ToolKind, VersionCheck,
};
use crate::domain::ErrorType;
use crate::domain::breaker::BreakerName;

pub mod app_server;
pub mod launch;
pub mod state;

/// The Codex driver.
#[derive(Debug, Clone, Copy)]
pub struct Codex;

/// The pinned version the tests run; others may work.
pub const TESTED_VERSION: &str = "0.169.0";

static VERSION: VersionCheck = VersionCheck {
    args: &["--version"],
    install: "npm install -g @openai/codex@0.169.0",
    install_for_all: "sudo npm install -g @openai/codex@0.169.0",
};

/// Codex's tool for commands, as approvals and trackers name it.
pub const SHELL: &str = "shell";
/// Codex's tool for file changes.
pub const APPLY_PATCH: &str = "apply_patch";

impl AgentDriver for Codex {
    fn name(&self) -> &'static str {
        "codex"
    }

    fn breaker(&self) -> BreakerName {
        BreakerName::Codex
    }

    fn launch(&self, job: &LaunchSpec<'_>) -> Launch {
        launch::launch(job)
    }

    fn output(&self, job: &LaunchSpec<'_>) -> Box<dyn AgentOutput> {
        Box::new(app_server::AppServer::new(job))
    }

    fn verdict(&self, exit: Exit, result: Option<&AgentResult>) -> AgentVerdict {
        verdict(exit, result)
    }

    fn approval_bridge(&self) -> ApprovalBridge {
        ApprovalBridge::Stream
    }

    /// The JSON-RPC response to Codex's approval request: accept, decline, or cancel (ends the turn).
    fn approval_answer(&self, ask: &ApprovalAsk, answer: &ApprovalAnswer) -> String {
        let decision = match answer {
            ApprovalAnswer::Allow { .. } => "accept",
            ApprovalAnswer::Deny {
                interrupt: true, ..
            } => "cancel",
            ApprovalAnswer::Deny { .. } => "decline",
        };
        json!({"jsonrpc": "2.0", "id": ask.reply_to.clone().unwrap_or_default(), "result": {"decision": decision}})
            .to_string()
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

    /// Codex keeps its threads under its state directory by date, not by working directory.
    fn conversations(&self, _cwd: &Path) -> Option<PathBuf> {
        None
    }

    fn model_api(&self) -> &'static ModelApi {
        &state::MODEL_API
    }

    fn model_upstream(&self, extra_args: &[String]) -> Option<String> {
        launch::provider_base_url(extra_args)
    }

    fn version_check(&self) -> &'static VersionCheck {
        &VERSION
    }

    fn tool_kind(&self, tool: &str) -> Option<ToolKind> {
        match tool {
            SHELL => Some(ToolKind::Shell),
            APPLY_PATCH => Some(ToolKind::Write),
            _ => None,
        }
    }

    fn subject_fields(&self, tool: &str) -> &'static [&'static str] {
        match tool {
            SHELL => &["command"],
            APPLY_PATCH => &["file_path"],
            _ => &[],
        }
    }
}

/// A run's verdict: a completed turn and a clean exit is done; a failed turn is the model API's failure
/// when Codex said so (an HTTP status, or an error of the model's connection), else the agent's; an
/// exit without a turn's end failed.
pub fn verdict(exit: Exit, result: Option<&AgentResult>) -> AgentVerdict {
    let api = result.is_some_and(|r| {
        r.model_api_status.is_some()
            || r.terminal_reason
                .as_deref()
                .is_some_and(app_server::is_model_api_error)
    });
    let failure = match result {
        // The turn completed: done, unless the process then failed.
        Some(r) if !r.is_error => exit.code.filter(|c| *c != 0).map(|c| {
            (
                ErrorType::AgentError,
                format!("agent exited with code {c} after its turn"),
            )
        }),
        Some(r) => Some((
            if api {
                ErrorType::ApiError
            } else {
                ErrorType::AgentError
            },
            r.result
                .clone()
                .unwrap_or_else(|| format!("the agent's turn ended {}", r.subtype)),
        )),
        None if exit.signal.is_some() => Some((
            ErrorType::Killed,
            format!("agent killed by {}", exit.describe()),
        )),
        None => Some((
            ErrorType::AgentError,
            format!("agent exited with {} and no result", exit.describe()),
        )),
    };
    // A spent usage limit, or a rate limit Codex gave up retrying: the job waits for it.
    let usage_limited = result.is_some_and(|r| {
        r.is_error
            && (r.model_api_status == Some(429)
                || r.terminal_reason
                    .as_deref()
                    .is_some_and(|t| t.contains(app_server::USAGE_LIMIT)))
    });
    AgentVerdict {
        failure,
        api_failure: (api || exit.signal == Some(libc::SIGKILL)) && !usage_limited,
        usage_limited,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approval_answers_are_json_rpc_responses_to_the_request() {
        let ask = ApprovalAsk {
            tool: SHELL.into(),
            input: json!({"command": "ls"}),
            tool_use_id: Some("call_1".into()),
            reply_to: Some(json!(7)),
        };
        let said = |a: &ApprovalAnswer| -> serde_json::Value {
            serde_json::from_str(&Codex.approval_answer(&ask, a)).unwrap()
        };
        assert_eq!(
            said(&ApprovalAnswer::Allow { input: json!({}) }),
            json!({"jsonrpc": "2.0", "id": 7, "result": {"decision": "accept"}})
        );
        let deny = |interrupt| ApprovalAnswer::Deny {
            message: "no".into(),
            interrupt,
        };
        assert_eq!(said(&deny(false))["result"]["decision"], "decline");
        assert_eq!(said(&deny(true))["result"]["decision"], "cancel");
    }

    #[test]
    fn verdicts_from_the_turn_and_the_exit() {
        let done = AgentResult {
            subtype: "completed".into(),
            ..Default::default()
        };
        let ok = Exit {
            code: Some(0),
            signal: None,
        };
        assert_eq!(verdict(ok, Some(&done)).failure, None);
        let failed = AgentResult {
            subtype: "failed".into(),
            is_error: true,
            result: Some("stream disconnected".into()),
            model_api_status: Some(500),
            ..Default::default()
        };
        let v = verdict(ok, Some(&failed));
        assert_eq!(v.failure.unwrap().0, ErrorType::ApiError);
        assert!(v.api_failure);
        let v = verdict(
            Exit {
                code: Some(1),
                signal: None,
            },
            None,
        );
        assert_eq!(v.failure.unwrap().0, ErrorType::AgentError);
        assert!(!v.api_failure);
    }
}
