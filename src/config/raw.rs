//! The configuration as written: structs that mirror `config.toml` one to one, refuse unknown keys, and
//! hold the documented defaults.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::store::RawStore;

/// Credential places hidden by default (`agent.sandbox_hide`): the agent keeps the network, so what
/// it can read it can send away. `~/` is both the agent's and the daemon's home.
pub const DEFAULT_HIDDEN: &[&str] = &[
    "/etc/televibe",
    "~/.ssh",
    "~/.gnupg",
    "~/.aws",
    "~/.azure",
    "~/.config/gcloud",
    "~/.config/gh",
    "~/.config/televibe",
    "~/.kube",
    "~/.docker",
    "~/.netrc",
    "~/.pgpass",
    "~/.git-credentials",
    "~/.npmrc",
    "~/.pypirc",
    "~/.cargo/credentials.toml",
    "~/.claude",
    "~/.claude.json",
    "~/.codex",
];

/// The file and environment as written, before validation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Directory holding `repos/`, `workspaces/` and `orchestrator/`; empty: `/projects`, or for a user
    /// who cannot write it, `$XDG_STATE_HOME/televibe` (`~/.local/state/televibe`).
    pub root: PathBuf,
    pub http: RawHttp,
    pub socket: RawSocket,
    pub telegram: RawTelegram,
    pub agent: RawAgent,
    /// `[agents.claude]`, `[agents.codex]`: each agent's command, arguments and environment.
    #[serde(default)]
    pub agents: RawAgents,
    pub jobs: RawJobs,
    pub approvals: RawApprovals,
    pub breakers: RawBreakers,
    pub backup: RawBackup,
    pub logging: RawLogging,
    pub projects: RawProjects,
    pub sessions: RawSessions,
    pub git: RawGit,
    pub supervision: RawSupervision,
    pub store: RawStore,
    /// `[voice]`: voice notes transcribed into instructions.
    #[serde(default)]
    pub voice: super::phone::RawVoice,
    /// `[files]`: photos and documents in, `/get` out.
    #[serde(default)]
    pub files: super::phone::RawFiles,
    /// `[github]`: pull requests opened by `/pr`.
    #[serde(default)]
    pub github: super::phone::RawGithub,
    /// `[cluster]`: this node, among the nodes sharing a PostgreSQL store.
    #[serde(default)]
    pub cluster: super::cluster::RawCluster,
    pub debug: RawDebug,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    /// Address of `/health/live`, `/health/ready` and `/metrics`.
    pub listen: String,
    /// Allow a non-loopback `listen` address (off: the probes stay on this machine).
    pub allow_remote: bool,
    /// A connection must send a complete request head within this many seconds.
    pub header_read_timeout_secs: u64,
    /// Connections served at once; more are closed when accepted.
    pub max_connections: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSocket {
    /// Unix socket for MCP and admin clients; empty means `<root>/orchestrator/televibe.sock`.
    pub path: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelegram {
    pub api_url: String,
    /// Bot token; normally from `TELEVIBE_TELEGRAM__TOKEN`. Never printed.
    pub token: String,
    /// A file holding the bot token (used when `token` is empty).
    pub token_file: String,
    pub allowed_users: Vec<i64>,
    /// Group chats (negative ids) where allowed users are served besides their private chats.
    pub allowed_chats: Vec<i64>,
    pub admin_chat_id: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgent {
    pub command: String,
    pub extra_args: Vec<String>,
    /// Variables added to the agent's (scrubbed) environment, e.g. ANTHROPIC_BASE_URL.
    pub env: std::collections::BTreeMap<String, String>,
    /// `bwrap` (every job in a bubblewrap sandbox) or `none` (the operator's explicit choice).
    pub sandbox: String,
    /// Paths hidden inside the sandbox besides the daemon's own (`~/` is the agent's home).
    pub sandbox_hide: Vec<String>,
    /// Paths left writable inside the sandbox besides the worktree (e.g. a build cache).
    pub sandbox_write: Vec<String>,
    /// `allowlist` (jobs reach the network only through the daemon's egress proxy) or `open`.
    pub network: String,
    /// Hosts a job may reach besides its model API: `host`, `host:port` or `*.domain`.
    pub network_allow: Vec<String>,
    /// The unprivileged user jobs run as when the daemon runs as root (name or numeric uid).
    pub run_as: String,
    /// Where the daemon refreshes the operator's `/login` (OAuth `refresh_token` grant).
    pub oauth_token_url: String,
    /// The agent a session runs when nothing names another (`claude` or `codex`).
    pub default: String,
}

/// The agents the daemon drives, each with its own command line. An absent section: the agent's
/// defaults (`[agents.claude]` falls back to `[agent] command/extra_args/env`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgents {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claude: Option<RawAgentCommand>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codex: Option<RawAgentCommand>,
}

/// One agent's command line: `command` (a path, or a name looked up on PATH; empty: the agent's own
/// name), `extra_args` (last on its command line) and `env` (added to its environment).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgentCommand {
    #[serde(default)]
    pub command: String,
    #[serde(default)]
    pub extra_args: Vec<String>,
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJobs {
    pub max_concurrent: u32,
    pub max_queued_per_session: u32,
    pub hard_timeout_secs: u64,
    pub hang_timeout_secs: u64,
    pub kill_grace_secs: u64,
    /// A job log stops growing here (one marker line, then nothing).
    pub max_log_bytes: u64,
    /// A runner silent this long is presumed dead: its session kills the group and fails the job.
    pub heartbeat_timeout_secs: u64,
    /// Memory of one job (its cgroup's `memory.max`): bytes, or a number with K, M, G or T; 0 = no limit.
    pub memory_max: RawSize,
    /// A job a daemon restart cut is run once more, resuming its conversation.
    pub retry_interrupted: bool,
    /// How long a job limited by its agent's usage limit waits when the agent gives no reset time (doubled
    /// for each further limit of the same job, up to an hour).
    pub usage_limit_backoff_secs: u64,
}

/// A size in bytes, written as a number or as text with a binary suffix ("512M", "8G").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(u64),
    Text(String),
}

impl RawSize {
    /// The size in bytes, or why it is no size.
    pub fn bytes(&self) -> Result<u64, SizeError> {
        let text = match self {
            RawSize::Bytes(n) => return Ok(*n),
            RawSize::Text(t) => t.trim(),
        };
        let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let unit = text[digits.len()..].to_ascii_uppercase();
        let n: u64 = digits.trim().parse().map_err(|_| SizeError::NotASize {
            text: text.to_string(),
        })?;
        let shift = match unit.trim_end_matches("IB").trim_end_matches('B') {
            "" => 0,
            "K" => 10,
            "M" => 20,
            "G" => 30,
            "T" => 40,
            _ => {
                return Err(SizeError::UnknownUnit {
                    text: text.to_string(),
                });
            }
        };
        n.checked_mul(1 << shift)
            .ok_or_else(|| SizeError::TooLarge {
                text: text.to_string(),
            })
    }
}

/// Why a size setting is no size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("{text:?} is not a size (bytes, or a number with K, M, G or T)")]
    NotASize { text: String },
    #[error("{text:?}: unknown unit (K, M, G or T)")]
    UnknownUnit { text: String },
    #[error("{text:?} is too large")]
    TooLarge { text: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApprovals {
    pub timeout_secs: u64,
    /// A request still pending this long after it was asked gets one reminder in its chat; 0: never. At or
    /// past `timeout_secs` no reminder comes (the request expires first).
    pub remind_after_secs: u64,
    /// Read-only command forms allowed without asking: program, subcommands, then the options allowed
    /// (`-n=` takes a value, a final `*` allows any further words, a final `$` no operands); operands must
    /// be paths inside the worktree. Only a single simple command without shell syntax can match.
    pub auto_allow: Vec<String>,
    /// Commands always denied, matched after normalising (option order, clustering, long forms, `--`,
    /// git's global options, force and delete refspecs), in every part of a compound command.
    pub auto_deny: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    pub failure_threshold: u32,
    pub success_threshold: u32,
    pub timeout_seconds: u64,
    pub half_open_requests: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreakers {
    pub claude_code: RawBreaker,
    /// Codex's model API, as `claude_code` is Claude Code's.
    pub codex: RawBreaker,
    pub telegram_api: RawBreaker,
    pub git_operations: RawBreaker,
    /// Uploads of backups to `backup.remote`.
    pub backup_remote: RawBreaker,
    /// The voice notes' transcription endpoint (`voice.transcription_url`).
    pub voice_transcription: RawBreaker,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackup {
    /// Five-field cron expression (minute hour day-of-month month day-of-week), evaluated in UTC.
    pub schedule: String,
    pub retention_days: u32,
    /// `s3://bucket/prefix` or `file:///path`; empty = local backups only. Never holds credentials.
    pub remote: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogging {
    /// `debug`, `info`, `warning` or `error` for the daemon's own lines, or a filter such as
    /// `info,televibe.store=debug` (its bare levels are the daemon's, its `target=level` parts as written).
    pub level: String,
    /// Lines of other crates (rmcp, sqlx, hyper…) below this level are left out: `off`, `error`,
    /// `warning`, `info`, `debug` or `trace`.
    pub third_party_level: String,
    pub retention_days: u32,
    pub max_size_mb: u64,
    pub job_log_retention_days: u32,
    pub audit_retention_days: u32,
    /// `auto` (human-readable on a terminal, JSON otherwise), `human`, `json` or `off`.
    pub stderr: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProjects {
    /// Directories besides `<root>/repos` where repositories may be registered.
    pub allowed_roots: Vec<PathBuf>,
    /// Project ids whose repository settings (`.claude/` hooks, MCP servers) the agent may load.
    pub trusted: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSessions {
    pub max_per_project: u32,
    pub max_total: u32,
    /// Branch name given to a session created without one: `<prefix>S<n>`.
    pub branch_prefix: String,
    /// How often the janitor measures workspace disk usage.
    pub disk_usage_interval_secs: u64,
    /// How often each session actor checks that its worktree is still on disk.
    pub worktree_check_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGit {
    /// A git operation running longer than this counts as a failure of the git_operations breaker.
    pub timeout_secs: u64,
    /// One git command talking to a remote (push, ls-remote, the clone of `register_project {url}`) is
    /// killed past this; it is the remote's trouble, not counted by the breaker.
    pub remote_timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSupervision {
    pub max_restarts: u32,
    pub window_secs: u64,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDebug {
    /// Enables the `debug_panic_actor` admin tool used by failure drills. Keep off in production.
    pub test_hooks: bool,
    /// Seconds added to the backup scheduler's clock (only with `test_hooks`), so a test can bring the
    /// next scheduled minute close without waiting for it.
    pub backup_clock_offset_secs: i64,
    /// Seconds added to the instruction scheduler's clock (only with `test_hooks`), so a test can bring a
    /// schedule's next occurrence close, or move past several while the daemon is down.
    pub scheduler_clock_offset_secs: i64,
    /// Milliseconds the daemon keeps serving its probes between reporting "shutting down" and stopping its
    /// children (only with `test_hooks`), so a test can see the not-ready answer.
    pub shutdown_hold_ms: u64,
    /// A step (of `backup restore`, or `after_import` after a job) where the daemon stops and waits to be
    /// killed (only with `test_hooks`), for crash tests; empty = none.
    pub stop_at: String,
}

impl Default for RawConfig {
    fn default() -> Self {
        let breaker = |f, s, t| RawBreaker {
            failure_threshold: f,
            success_threshold: s,
            timeout_seconds: t,
            half_open_requests: 1,
        };
        RawConfig {
            root: PathBuf::new(),
            http: RawHttp {
                listen: "127.0.0.1:9464".into(),
                allow_remote: false,
                header_read_timeout_secs: 10,
                max_connections: 64,
            },
            socket: RawSocket {
                path: String::new(),
            },
            telegram: RawTelegram {
                api_url: "https://api.telegram.org".into(),
                token: String::new(),
                token_file: String::new(),
                allowed_users: Vec::new(),
                allowed_chats: Vec::new(),
                admin_chat_id: 0,
            },
            agent: RawAgent {
                command: "claude".into(),
                extra_args: Vec::new(),
                env: Default::default(),
                sandbox: "bwrap".into(),
                sandbox_hide: DEFAULT_HIDDEN.iter().map(|s| s.to_string()).collect(),
                sandbox_write: Vec::new(),
                network: "allowlist".into(),
                network_allow: Vec::new(),
                run_as: "nobody".into(),
                oauth_token_url: "https://console.anthropic.com/v1/oauth/token".into(),
                default: "claude".into(),
            },
            agents: RawAgents::default(),
            jobs: RawJobs {
                max_concurrent: 3,
                max_queued_per_session: 10,
                hard_timeout_secs: 3600,
                hang_timeout_secs: 60,
                kill_grace_secs: 30,
                max_log_bytes: 100 * 1024 * 1024,
                heartbeat_timeout_secs: 45,
                memory_max: RawSize::Text("4G".into()),
                retry_interrupted: true,
                usage_limit_backoff_secs: 300,
            },
            approvals: RawApprovals {
                timeout_secs: 3600,
                remind_after_secs: 600,
                auto_allow: crate::policy::DEFAULT_ALLOW
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                auto_deny: crate::policy::DEFAULT_DENY
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            },
            breakers: RawBreakers {
                claude_code: breaker(5, 2, 300),
                codex: breaker(5, 2, 300),
                telegram_api: breaker(3, 1, 60),
                git_operations: breaker(3, 1, 30),
                backup_remote: breaker(3, 1, 300),
                voice_transcription: breaker(3, 1, 60),
            },
            backup: RawBackup {
                schedule: "0 */6 * * *".into(),
                retention_days: 30,
                remote: String::new(),
            },
            logging: RawLogging {
                level: "info".into(),
                third_party_level: "warning".into(),
                retention_days: 30,
                max_size_mb: 100,
                job_log_retention_days: 7,
                audit_retention_days: 90,
                stderr: "auto".into(),
            },
            projects: RawProjects {
                allowed_roots: Vec::new(),
                trusted: Vec::new(),
            },
            sessions: RawSessions {
                max_per_project: 10,
                max_total: 50,
                branch_prefix: "televibe/".into(),
                disk_usage_interval_secs: 300,
                worktree_check_secs: 30,
            },
            git: RawGit {
                timeout_secs: 60,
                remote_timeout_secs: 600,
            },
            supervision: RawSupervision {
                max_restarts: 10,
                window_secs: 60,
                backoff_initial_ms: 100,
                backoff_max_ms: 30_000,
            },
            store: RawStore {
                url: String::new(),
                password: String::new(),
                password_file: String::new(),
                busy_timeout_ms: 5000,
                integrity_check_interval_secs: 21_600,
                read_only_probe_secs: 30,
                events_retention_days: 7,
                jobs_retention_days: 90,
            },
            voice: Default::default(),
            files: Default::default(),
            github: Default::default(),
            cluster: Default::default(),
            debug: RawDebug {
                test_hooks: false,
                backup_clock_offset_secs: 0,
                scheduler_clock_offset_secs: 0,
                shutdown_hold_ms: 0,
                stop_at: String::new(),
            },
        }
    }
}
