//! The configuration's typed sections: what the rest of the daemon reads (durations, counts, parsed
//! schedules and URLs), built once by `Config::validate`.

use std::path::PathBuf;
use std::time::Duration;

/// Restart policy of a supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// At most this many restarts inside `window`; one more and the supervisor gives up.
    pub max_restarts: u32,
    pub window: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

/// One agent's command line, validated: `[agents.<name>]` (Claude Code's from `[agent]` too).
#[derive(Debug, Clone, Default)]
pub struct AgentCommand {
    pub command: String,
    pub extra_args: Vec<String>,
    pub env: std::collections::BTreeMap<String, String>,
}

/// `[agent]` and `[agents.*]`, validated.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// Claude Code's command line (`[agent]`, overridden by `[agents.claude]`).
    pub command: String,
    pub extra_args: Vec<String>,
    pub env: std::collections::BTreeMap<String, String>,
    /// Every configured agent's command line, by the agent's name.
    pub agents: std::collections::BTreeMap<String, AgentCommand>,
    /// `agent.default`: the agent a session runs when nothing names another.
    pub default: String,
    /// False with `agent.sandbox = "none"`: agents run unconfined, by the operator's choice.
    pub sandboxed: bool,
    pub sandbox_hide: Vec<String>,
    pub sandbox_write: Vec<String>,
    /// False with `agent.network = "open"`: jobs share the host's network, by the operator's choice.
    pub network_allowlist: bool,
    /// `agent.network_allow`, validated: `host`, `host:port` or `*.domain`, lower case.
    pub network_allow: Vec<String>,
    /// `agent.run_as`: the user jobs run as when the daemon is root.
    pub run_as: String,
    /// `agent.oauth_token_url`.
    pub oauth_token_url: String,
}

impl AgentSettings {
    /// The command line of agent `name` (a configured one; else Claude Code's).
    pub fn of(&self, name: &str) -> AgentCommand {
        self.agents
            .get(name)
            .cloned()
            .unwrap_or_else(|| AgentCommand {
                command: self.command.clone(),
                extra_args: self.extra_args.clone(),
                env: self.env.clone(),
            })
    }

    /// The configured agents' names, for messages.
    pub fn names(&self) -> Vec<&str> {
        self.agents.keys().map(String::as_str).collect()
    }
}

/// `[jobs]`, validated.
#[derive(Debug, Clone)]
pub struct JobSettings {
    pub max_concurrent: usize,
    pub max_queued_per_session: usize,
    pub hard_timeout: Duration,
    pub hang_timeout: Duration,
    pub kill_grace: Duration,
    pub max_log_bytes: u64,
    pub heartbeat_timeout: Duration,
    /// `jobs.memory_max` in bytes; 0 = no limit.
    pub memory_max: u64,
    pub retry_interrupted: bool,
    /// `jobs.usage_limit_backoff_secs`.
    pub usage_limit_backoff: Duration,
}

/// `[approvals]`, validated (rules checked by the policy's parser).
#[derive(Debug, Clone)]
pub struct ApprovalSettings {
    pub timeout: Duration,
    /// When a pending request gets its one reminder: `None` when never (0, or not before the expiry).
    pub remind_after: Option<Duration>,
    pub auto_allow: Vec<String>,
    pub auto_deny: Vec<String>,
}

/// `[telegram]` without the token (that is `Config::telegram_token`).
#[derive(Debug, Clone)]
pub struct TelegramSettings {
    pub api_url: String,
    /// Where the token was read from, if from a file (hidden from every sandbox).
    pub token_file: Option<PathBuf>,
    pub allowed_users: Vec<i64>,
    pub allowed_chats: Vec<i64>,
    /// 0 when unset.
    pub admin_chat_id: i64,
}

/// `[backup]`, parsed.
#[derive(Debug, Clone)]
pub struct BackupSettings {
    pub schedule: crate::backup::schedule::Schedule,
    pub retention_days: u32,
    /// The object store uploads go to, if any, and its URL as configured.
    pub remote: Option<crate::backup::remote::Remote>,
    pub remote_url: String,
}

/// `[logging]`, validated (the level is `Config::log_filter`).
#[derive(Debug, Clone)]
pub struct LoggingSettings {
    pub retention_days: u32,
    pub max_size_bytes: u64,
    pub job_log_retention_days: u32,
    pub audit_retention_days: u32,
    /// `auto`, `human`, `json` or `off`.
    pub stderr: String,
}

/// `[sessions]`, validated.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub max_per_project: usize,
    pub max_total: usize,
    pub branch_prefix: String,
    pub disk_usage_interval: Duration,
    pub worktree_check: Duration,
}

/// `[http]`, validated (the address is `Config::http_listen`).
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

/// `[store]`, validated.
#[derive(Clone)]
pub struct StoreSettings {
    /// `None`: SQLite at `<root>/orchestrator/state.db`; otherwise a PostgreSQL URL without a password.
    pub url: Option<String>,
    /// The PostgreSQL password (`TELEVIBE_STORE__PASSWORD` or the first line of `store.password_file`).
    pub password: Option<String>,
    /// `store.password_file`, hidden from every job like the bot token's file.
    pub password_file: Option<std::path::PathBuf>,
    pub busy_timeout: Duration,
    pub integrity_check_interval: Duration,
    pub read_only_probe: Duration,
    pub events_retention_days: u32,
    pub jobs_retention_days: u32,
}

impl std::fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSettings")
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| super::MASK))
            .field("busy_timeout", &self.busy_timeout)
            .field("integrity_check_interval", &self.integrity_check_interval)
            .field("read_only_probe", &self.read_only_probe)
            .field("events_retention_days", &self.events_retention_days)
            .field("jobs_retention_days", &self.jobs_retention_days)
            .finish()
    }
}

impl StoreSettings {
    /// Where the store lives: `store.url` (PostgreSQL) or the SQLite file `state_db`.
    pub fn location(&self, state_db: std::path::PathBuf) -> crate::store::StoreLocation {
        crate::store::StoreLocation::new(self.url.as_deref(), self.password.as_deref(), state_db)
    }
}

/// `[debug]`: test hooks, inert unless `test_hooks` is on.
#[derive(Debug, Clone)]
pub struct DebugSettings {
    pub test_hooks: bool,
    /// Added to the backup scheduler's clock (only with `test_hooks`).
    pub backup_clock_offset: chrono::TimeDelta,
    /// Added to the instruction scheduler's clock (only with `test_hooks`).
    pub scheduler_clock_offset: chrono::TimeDelta,
    /// How long shutdown keeps answering "shutting down" before stopping (only with `test_hooks`).
    pub shutdown_hold: Duration,
    /// The step where `backup restore` stops to be killed (only with `test_hooks`).
    pub stop_at: Option<String>,
}
