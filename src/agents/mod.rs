//! Coding agents behind one seam: what the daemon must know of an agent CLI, as the [`AgentDriver`] trait,
//! with one folder per agent (`claude/`: Claude Code; `codex/`: OpenAI Codex).
//!
//! The runner, the verdict, the sandbox, the approval endpoint, `doctor` and the approval rules speak only
//! the agent-neutral types of this file. An agent's flags, output format, approval answer format, state
//! and credential files and tool names live in its folder alone (`tests/layering.rs` checks Claude's).
//! A job's agent is found with [`of_job`]; the name of an agent in configuration and records with
//! [`by_name`].

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::domain::breaker::BreakerName;
use crate::domain::{ErrorType, Job, Session};

pub mod claude;
pub mod codex;
pub mod tools;

pub use tools::{ToolKind, subject_field, tool_kind, tool_target};

/// The agent a session runs when nothing names another.
pub const DEFAULT_AGENT: &str = "claude";

/// Every agent the daemon can drive.
pub fn all() -> &'static [&'static dyn AgentDriver] {
    &[&claude::Claude, &codex::Codex]
}

/// The driver of the agent named `name` in configuration and records.
pub fn by_name(name: &str) -> Option<&'static dyn AgentDriver> {
    all().iter().copied().find(|d| d.name() == name)
}

/// The default agent's driver.
pub fn default_driver() -> &'static dyn AgentDriver {
    by_name(DEFAULT_AGENT).unwrap_or(&claude::Claude)
}

/// The driver of a job's agent (a name no driver has, from a record of a later version: the default's).
pub fn of_job(job: &Job) -> &'static dyn AgentDriver {
    by_name(&job.agent).unwrap_or_else(default_driver)
}

/// The agent an instruction runs with: the one it names, else its session's. An unknown name is refused
/// with the configured ones.
pub fn choose(
    named: Option<&str>,
    session: &Session,
    configured: &[&str],
) -> Result<&'static dyn AgentDriver, UnknownAgent> {
    let name = named.map(str::trim).filter(|n| !n.is_empty());
    let name = name.unwrap_or(&session.agent);
    configured_driver(name, configured)
}

/// The driver of agent `name`, when it is one of the `configured` ones.
pub fn configured_driver(
    name: &str,
    configured: &[&str],
) -> Result<&'static dyn AgentDriver, UnknownAgent> {
    by_name(name)
        .filter(|d| configured.contains(&d.name()))
        .ok_or_else(|| UnknownAgent {
            name: name.to_string(),
            configured: configured.iter().map(|s| s.to_string()).collect(),
        })
}

/// An agent name that is not configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownAgent {
    pub name: String,
    pub configured: Vec<String>,
}

impl std::fmt::Display for UnknownAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if by_name(&self.name).is_some() {
            "is not configured"
        } else {
            "is unknown"
        };
        write!(
            f,
            "agent {:?} {what}; the configured agents are: {}",
            self.name,
            self.configured.join(", ")
        )
    }
}

/// Everything the daemon needs of one coding agent CLI. A driver is a stateless value; what one job's
/// conversation needs to remember lives in its [`AgentOutput`].
pub trait AgentDriver: Send + Sync + 'static {
    /// The agent's name in configuration, records and logs (`claude`).
    fn name(&self) -> &'static str;

    /// The circuit breaker that counts this agent's API failures and holds its jobs while open.
    fn breaker(&self) -> BreakerName;

    /// The argv after the program, the environment it adds, and what goes to its stdin.
    fn launch(&self, job: &LaunchSpec<'_>) -> Launch;

    /// A reader of one job's stdout: turns each line into events (and protocol replies).
    fn output(&self, job: &LaunchSpec<'_>) -> Box<dyn AgentOutput>;

    /// How a job the daemon did not stop ended: from its exit and the final result it reported.
    fn verdict(&self, exit: Exit, result: Option<&AgentResult>) -> AgentVerdict;

    /// How the agent asks for approvals.
    fn approval_bridge(&self) -> ApprovalBridge;

    /// A decision in the format the agent expects: the text of the MCP tool's answer
    /// ([`ApprovalBridge::McpTool`]), or the line written to its stdin ([`ApprovalBridge::Stream`]).
    fn approval_answer(&self, ask: &ApprovalAsk, answer: &ApprovalAnswer) -> String;

    /// The agent's state and credential files, which the sandbox provides.
    fn files(&self) -> &'static AgentFiles;

    /// The operator's own agent state directory (settings and login are taken from it), given the home
    /// directory the agent sees.
    fn operator_state(&self, home: &Path) -> PathBuf;

    /// The copy of the operator's login a job may see: never a refresh token; with `placeholder` (its
    /// network goes through the egress proxy) not the access token either. `None`: not a login this
    /// driver knows.
    fn login_copy(&self, login: &[u8], placeholder: Option<&str>) -> Option<Vec<u8>>;

    /// Where, inside a state directory, the agent keeps the conversations of working directory `cwd`
    /// (carried over from per-project state of earlier versions). `None`: nothing to carry over.
    fn conversations(&self, cwd: &Path) -> Option<PathBuf>;

    /// Where, inside a state directory, the agent keeps conversation `id` of working directory `cwd`.
    /// `None`: not a single file the daemon can look for.
    fn conversation_file(&self, _cwd: &Path, _id: &str) -> Option<PathBuf> {
        None
    }

    /// The model API the egress proxy routes the agent's requests to, and the variables carrying its
    /// credential.
    fn model_api(&self) -> &'static ModelApi;

    /// The model API's base URL the operator wrote in the agent's own arguments (`extra_args`), where an
    /// agent takes it there rather than from [`ModelApi::base_url_env`]: the egress proxy's upstream, and
    /// what [`LaunchSpec::model_base_url`] then stands in for. `None`: not given there.
    fn model_upstream(&self, _extra_args: &[String]) -> Option<String> {
        None
    }

    /// How `doctor` asks the agent's version, and how an operator installs it.
    fn version_check(&self) -> &'static VersionCheck;

    /// What a tool of this agent does, by its name; `None`: not one of this agent's tools.
    fn tool_kind(&self, tool: &str) -> Option<ToolKind>;

    /// The fields of a tool's input that say what it acts on, first the one shown first (`command`,
    /// `file_path`…). Empty: none.
    fn subject_fields(&self, tool: &str) -> &'static [&'static str];
}

impl std::fmt::Debug for dyn AgentDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AgentDriver({})", self.name())
    }
}

/// What a driver starts one job from.
#[derive(Debug, Clone, Copy)]
pub struct LaunchSpec<'a> {
    pub job_id: &'a str,
    /// The person's instruction.
    pub instruction: &'a str,
    /// The conversation to continue (an earlier [`AgentEvent::Conversation`]), if any.
    pub resume: Option<&'a str>,
    /// The daemon's stdio bridge to the job's approval endpoint, for [`ApprovalBridge::McpTool`] agents.
    pub approvals: Option<&'a BridgeCommand>,
    /// Whether the repository's own agent settings (hooks, tool servers) may load.
    pub trusted: bool,
    /// The operator's `extra_args` for this agent, last on the command line.
    pub extra_args: &'a [String],
    /// Where the agent finds its model API when it cannot be told by a variable
    /// ([`ModelApi::base_url_env`]): the egress relay inside an isolated sandbox, else the variable's
    /// value in the agent's environment. `None`: the agent's own default.
    pub model_base_url: Option<&'a str>,
    /// The job's working directory (its worktree).
    pub cwd: &'a str,
}

/// A command that serves the job's approval endpoint over stdio (`televibe mcp --job <id> …`), for an
/// agent that starts its tool servers itself.
#[derive(Debug, Clone)]
pub struct BridgeCommand {
    pub program: String,
    pub args: Vec<String>,
    /// Its environment (the job's secret).
    pub env: Vec<(String, String)>,
}

/// How to start one job.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// The argv after the program.
    pub args: Vec<String>,
    /// Variables added to the job's environment.
    pub env: Vec<(String, String)>,
    /// Written to stdin at start: the prompt, or a protocol's opening requests.
    pub stdin: String,
    /// Whether stdin stays open for [`AgentEvent::Reply`] and stream approval answers (closed at
    /// [`AgentEvent::EndInput`]), or closes after `stdin`.
    pub keep_stdin_open: bool,
}

/// One job's stdout as its driver reads it: one call per line, in order.
pub trait AgentOutput: Send {
    fn line(&mut self, line: &str) -> Vec<AgentEvent>;
}

/// What an agent said, in agent-neutral terms.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    /// The conversation to resume later (Claude Code's session id, Codex's thread id).
    Conversation {
        id: String,
        model: Option<String>,
    },
    /// The agent retries the model API (after `retry_delay_ms`, when it says).
    ApiRetry {
        attempt: i64,
        max_retries: i64,
        error_status: Option<i64>,
        error: Option<String>,
        retry_delay_ms: Option<i64>,
    },
    /// The agent reported its usage-limit windows, from its structured output (never its prose).
    Usage(UsageReport),
    /// The conversation the run was to resume does not exist (the agent ended before it started): the job
    /// runs again in a new conversation.
    ConversationLost,
    /// A tool use was refused (by a person, the policy or an expiry).
    PermissionDenied {
        tool_name: String,
        message: String,
    },
    /// Text the agent wrote (the last is the result when none is reported).
    Text(String),
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        is_error: bool,
    },
    /// The run's final result: totals and verdict.
    Result(AgentResult),
    /// The agent asks for an approval on its own output ([`ApprovalBridge::Stream`]).
    ApprovalRequest(ApprovalAsk),
    /// A line the driver must write to the agent's stdin (a protocol's next request or reply).
    Reply(String),
    /// The driver is done talking: stdin closes, so the agent ends.
    EndInput,
    /// A valid message this driver does not model (kept in the job log only).
    Unknown(Value),
    /// Not a message at all (counted; the line is in the job log).
    Malformed(String),
}

/// Totals and verdict of a run, as the agent reports them at its end.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentResult {
    /// The agent's own word for how the run ended (`success`, `error_max_turns`…).
    pub subtype: String,
    pub is_error: bool,
    pub num_turns: Option<i64>,
    pub total_cost_usd: Option<f64>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    /// The final text.
    pub result: Option<String>,
    /// The model API's HTTP status when an API error ended the run.
    pub model_api_status: Option<i64>,
    pub terminal_reason: Option<String>,
    pub permission_denials: usize,
}

/// How the agent process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl Exit {
    /// `code 2`, `signal 9`, for error texts.
    pub fn describe(&self) -> String {
        match (self.code, self.signal) {
            (Some(c), _) => format!("code {c}"),
            (None, Some(s)) => format!("signal {s}"),
            _ => "an unknown status".into(),
        }
    }
}

/// A driver's verdict on a run the daemon did not stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentVerdict {
    /// `None`: the job is done; else its error type and text.
    pub failure: Option<(ErrorType, String)>,
    /// Whether the agent's breaker counts the run as a failure of its API.
    pub api_failure: bool,
    /// The run ended on a usage or rate limit of the model API (HTTP 429): the job waits for the reset
    /// and runs again; it is neither failed nor counted by the breaker.
    pub usage_limited: bool,
}

/// What an agent said about its usage limits: whether it is refused now, until when, and the windows it
/// knows of.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageReport {
    /// The model API refuses this agent's requests now.
    pub limited: bool,
    /// When the refusal ends (Unix seconds), if the agent says.
    pub resets_at: Option<i64>,
    pub windows: Vec<UsageWindow>,
}

/// One usage-limit window of an agent's account (`five_hour`, `seven_day`, Codex's `primary`…).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct UsageWindow {
    pub name: String,
    /// How much of the window is used, in percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used_percent: Option<f64>,
    /// When the window resets (Unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resets_at: Option<i64>,
    /// The window's length in minutes, when the agent says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_minutes: Option<i64>,
    /// Requests are refused in this window.
    pub limited: bool,
}

/// How an agent's approval requests reach the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalBridge {
    /// The agent calls a tool of an MCP server it starts ([`LaunchSpec::approvals`]), which reaches the
    /// job's approval endpoint; the answer is the tool's text.
    McpTool,
    /// The agent asks on its own output ([`AgentEvent::ApprovalRequest`]); the runner writes the answer
    /// to its stdin.
    Stream,
}

/// One approval request, in agent-neutral terms.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalAsk {
    /// The tool the agent wants to use.
    pub tool: String,
    pub input: Value,
    pub tool_use_id: Option<String>,
    /// What the answer must refer to (a JSON-RPC request id), for [`ApprovalBridge::Stream`].
    pub reply_to: Option<Value>,
}

/// A decision on an approval request.
#[derive(Debug, Clone, PartialEq)]
pub enum ApprovalAnswer {
    /// Run the tool with this input.
    Allow { input: Value },
    /// Do not; `interrupt` also ends the agent's turn.
    Deny { message: String, interrupt: bool },
}

/// The files of an agent's state directory the sandbox provides.
#[derive(Debug)]
pub struct AgentFiles {
    /// The variable telling the agent where its state directory is.
    pub state_env: &'static str,
    /// Files copied from the operator's state into each session's and held read-only there (hooks and
    /// plugins stay as the operator wrote them), with their content when the operator has none.
    pub settings: &'static [(&'static str, &'static str)],
    /// The login file of a state directory, of which a job gets a read-only copy.
    pub credentials: Option<&'static str>,
    /// Directories of a state directory that are emptied before each job and held read-only during it:
    /// what the agent reads there would change what later jobs may do (Codex's `rules/`).
    pub locked_dirs: &'static [&'static str],
}

/// The model API of an agent, for the egress proxy.
#[derive(Debug)]
pub struct ModelApi {
    /// The variable that points the agent at another base URL.
    pub base_url_env: &'static str,
    /// The base URL when that variable is not set.
    pub default_upstream: &'static str,
    /// Variables that carry the credential: an isolated job sees placeholders, the proxy the real values.
    pub secrets: &'static [&'static str],
    /// The OAuth client the agent's refreshable login belongs to, if it has one.
    pub oauth: Option<OAuthClient>,
}

/// An OAuth client whose login file the daemon refreshes for isolated jobs.
#[derive(Debug, Clone, Copy)]
pub struct OAuthClient {
    pub client_id: &'static str,
    /// The key of the login's entry in the credentials file.
    pub entry: &'static str,
}

/// How `doctor` checks an agent.
#[derive(Debug)]
pub struct VersionCheck {
    /// The argv that prints the version on stdout.
    pub args: &'static [&'static str],
    /// How to install the agent.
    pub install: &'static str,
    /// How to install it where every user (`agent.run_as`) can run it.
    pub install_for_all: &'static str,
}
