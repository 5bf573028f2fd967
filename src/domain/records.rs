//! The domain records: projects, sessions, jobs, approvals, outbox events and audit records, as plain Rust
//! values the store reads and writes and the fronts show (serialisable; no database type in them).

use chrono::{DateTime, Utc};
use serde::Serialize;

string_enum! {
    /// Session states: `idle → running → idle`, `running → blocked → running`, `idle|blocked → closing → closed`.
    SessionState {
        Idle = "idle",
        Running = "running",
        Blocked = "blocked",
        Closing = "closing",
        Closed = "closed",
    }
}

impl SessionState {
    pub fn is_open(self) -> bool {
        self != SessionState::Closed
    }
}

/// A registered git repository.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub repo_path: String,
    pub default_branch: String,
    /// Shown with any credentials in it taken out; the row keeps the address as given.
    #[serde(serialize_with = "super::remote::serialize_redacted")]
    pub remote_url: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The agent may load this repository's own settings (hooks, MCP servers), still sandboxed.
    pub trusted: bool,
    /// The node that has the repository, for a project registered by path on a store several nodes
    /// share; `None` on one node, and for a project cloned from a URL (every node has its own clone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// A session: one worktree on one branch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Session {
    pub id: String,
    pub project_id: String,
    pub branch: String,
    pub base_branch: String,
    /// True when the daemon created the branch (it existed before otherwise).
    pub branch_created: bool,
    pub worktree_path: String,
    /// Set by boot reconciliation when the worktree directory has disappeared.
    pub worktree_missing: bool,
    pub state: SessionState,
    /// Claude Code's conversation in this session (the name it always had).
    pub conversation_id: Option<String>,
    /// The agent the session's jobs run when an instruction names none.
    pub agent: String,
    /// Each agent's conversation in this session, by the agent's name (Claude Code's too).
    pub conversations: std::collections::BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub last_activity_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    /// What its queue waits for, when it waits for a usage limit (`waiting for usage limit until 14:05
    /// UTC`). Not stored: the jobs' `not_before` and the agents' known limits say it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// Why the session cannot work now: its node is gone (no heartbeat for `cluster.node_timeout_secs`).
    /// Not stored: the nodes' heartbeats say it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    /// The node hosting the session (its worktree, its jobs), on a store several nodes share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// The agent whose conversation has the `conversation_id` column.
pub const CLAUDE: &str = "claude";

/// A new session row before it has an id.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub project_id: String,
    pub branch: String,
    pub base_branch: String,
    pub branch_created: bool,
    /// Directory holding the session's worktree; the id is appended.
    pub workspace_dir: std::path::PathBuf,
    /// The session's default agent.
    pub agent: String,
    /// The node hosting it (`None` on one node).
    pub node: Option<String>,
}

impl Session {
    /// The conversation agent `agent` continues in this session, if it has one.
    pub fn conversation(&self, agent: &str) -> Option<&str> {
        self.conversations.get(agent).map(String::as_str)
    }

    /// Agent `agent` continues conversation `id` from now on (Claude Code's also under the name it
    /// always had, `conversation_id`).
    pub fn set_conversation(&mut self, agent: &str, id: &str) {
        if agent == CLAUDE {
            self.conversation_id = Some(id.to_string());
        }
        self.conversations.insert(agent.to_string(), id.to_string());
    }

    /// Agent `agent` has no conversation here any more: its next job starts a new one.
    pub fn forget_conversation(&mut self, agent: &str) {
        if agent == CLAUDE {
            self.conversation_id = None;
        }
        self.conversations.remove(agent);
    }
}

string_enum! {
    /// Approval states: `pending → approved | denied | expired`.
    ApprovalState {
        Pending = "pending",
        Approved = "approved",
        Denied = "denied",
        Expired = "expired",
    }
}

/// One permission request of an agent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Approval {
    pub id: String,
    pub job_id: String,
    pub session_id: String,
    pub tool_name: String,
    /// The tool input as the agent sent it (shown in a bounded preview).
    pub tool_input: serde_json::Value,
    pub tool_use_id: Option<String>,
    pub scope: String,
    pub state: ApprovalState,
    pub decision: Option<String>,
    pub decided_by: Option<String>,
    pub requested_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    pub telegram_chat_id: Option<i64>,
    pub telegram_message_id: Option<i64>,
}

/// An outbox row waiting for delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    pub id: i64,
    pub event_type: String,
    pub project_id: Option<String>,
    pub session_id: Option<String>,
    pub job_id: Option<String>,
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// An audit record.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    pub event: String,
    pub actor: String,
    pub project_id: Option<String>,
    pub session_id: Option<String>,
    pub job_id: Option<String>,
    pub details: serde_json::Value,
    pub timestamp: DateTime<Utc>,
}

string_enum! {
    /// Job statuses: `queued → running → done | failed | canceled`; `running ↔ waiting_approval`; `queued → canceled`.
    JobStatus {
        Queued = "queued",
        Running = "running",
        WaitingApproval = "waiting_approval",
        Done = "done",
        Failed = "failed",
        Canceled = "canceled",
    }
}

impl JobStatus {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Done | JobStatus::Failed | JobStatus::Canceled
        )
    }
}

string_enum! {
    /// Why a job failed or was canceled.
    ErrorType {
        Timeout = "timeout",
        Hung = "hung",
        Killed = "killed",
        AgentError = "agent_error",
        ApiError = "api_error",
        OrchestratorRestart = "orchestrator_restart",
        ApprovalTimeout = "approval_timeout",
        Internal = "internal",
        NodeLost = "node_lost",
    }
}

string_enum! {
    /// What a job does: an agent runs its instruction, or the daemon pushes the session's branch to the
    /// project's `origin` once a person approves (its instruction is the command, `git push origin <branch>`).
    JobKind {
        Agent = "agent",
        Push = "push",
    }
}

/// One agent run on one instruction, or one push of a session's branch (`kind`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    pub id: String,
    pub session_id: String,
    /// An agent's run, or a push of the session's branch.
    pub kind: JobKind,
    pub instruction: String,
    /// The agent that runs it (`claude`, `codex`).
    pub agent: String,
    pub status: JobStatus,
    pub error_type: Option<ErrorType>,
    pub error: Option<String>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub pid: Option<i32>,
    pub pgid: Option<i32>,
    /// The kernel boot and the leader's start time, so a pgid read back is only signalled if still ours.
    #[serde(skip)]
    pub boot_id: Option<String>,
    #[serde(skip)]
    pub leader_start: Option<i64>,
    pub log_path: Option<String>,
    pub base_commit: Option<String>,
    pub is_error: Option<bool>,
    pub result_subtype: Option<String>,
    pub result_text: Option<String>,
    pub terminal_reason: Option<String>,
    pub num_turns: Option<i64>,
    pub total_cost_usd: Option<f64>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    /// The model API's HTTP status when an API error ended the run (`api_error_status` in answers and in
    /// the `jobs` table, the name they always had).
    #[serde(rename = "api_error_status")]
    pub model_api_status: Option<i64>,
    /// Tool uses the agent was denied (by a person, the policy or an expiry).
    pub permission_denials: Option<i64>,
    pub files_changed: Vec<String>,
    pub diff_stat: Option<String>,
    pub queued_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// A job queued again for its agent's usage limit does not start before this (the limit's reset).
    pub not_before: Option<DateTime<Utc>>,
    /// How often it waited for a usage limit.
    pub limit_waits: i64,
    /// How often a daemon restart cut it while it ran.
    pub interruptions: i64,
}

impl Job {
    /// The job's process group id, if it is still the group its runner created (checked before signalling).
    pub fn recorded_group(&self) -> Option<i32> {
        let pgid = self.pgid?;
        crate::procs::is_recorded_group(pgid, self.boot_id.as_deref(), self.leader_start)
            .then_some(pgid)
    }
}

/// How a job ended, written in one update.
#[derive(Debug, Clone, Default)]
pub struct JobOutcome {
    pub status: Option<JobStatus>,
    pub error_type: Option<ErrorType>,
    pub error: Option<String>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub is_error: Option<bool>,
    pub result_subtype: Option<String>,
    pub result_text: Option<String>,
    pub terminal_reason: Option<String>,
    pub num_turns: Option<i64>,
    pub total_cost_usd: Option<f64>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    /// The model API's HTTP status when an API error ended the run.
    pub model_api_status: Option<i64>,
    /// Tool uses the agent was denied (by a person, the policy or an expiry).
    pub permission_denials: Option<i64>,
    pub files_changed: Vec<String>,
    pub diff_stat: Option<String>,
}

/// An instruction queued in a session at each occurrence of a five-field UTC cron (`/every`,
/// `schedule_instruction`). A removed one (canceled, or its session closed) stays as history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduledInstruction {
    /// `SC<n>`, never reused.
    pub id: String,
    pub session_id: String,
    /// Minute, hour, day of month, month, day of week; evaluated in UTC.
    pub cron: String,
    pub instruction: String,
    /// The agent each run names; `None`: the session's agent at the time of the run.
    pub agent: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    /// The scheduled occurrence last run (not when it ran: a run missed while the daemon was down runs
    /// later, once, under the latest occurrence it missed).
    pub last_run_at: Option<DateTime<Utc>>,
    /// The job the last run queued.
    pub last_job_id: Option<String>,
    /// The next occurrence: the scheduler queues the instruction once the clock reaches it.
    pub next_run_at: DateTime<Utc>,
    /// How many runs queued a job.
    pub runs: i64,
    pub removed_at: Option<DateTime<Utc>>,
    pub removed_by: Option<String>,
    /// Why it was removed: `canceled`, or what happened to its session.
    pub removed_reason: Option<String>,
}
