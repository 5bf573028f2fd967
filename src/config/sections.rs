//! `Config::validate`, one function per section of the file: each checks its raw section, names the
//! offending key when a value is impossible, and returns the section typed.
//!
//! The sections are checked in the file's order (approvals' rules first, as they always were); a file with
//! several mistakes is refused for the first one found.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{
    RawApprovals, RawBackup, RawBreaker, RawBreakers, RawConfig, RawDebug, RawGit, RawHttp,
    RawJobs, RawLogging, RawProjects, RawSessions, RawSocket, RawSupervision, RawTelegram,
};
use super::settings::{
    ApprovalSettings, BackupSettings, DebugSettings, HttpSettings, JobSettings, LoggingSettings,
    RestartPolicy, SessionSettings, TelegramSettings,
};
use super::source::read_token;
use super::{Config, ConfigError, MAX_ROOT_LEN, absolute, agent, invalid, root};
use crate::domain::breaker::{BreakerName, BreakerSettings};

impl Config {
    /// Turns a raw config into typed values, refusing impossible ones with the key named.
    pub fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
        let approvals = approvals(&raw.approvals)?;
        let (root, root_is_fallback) = root(&raw.root)?;
        let agent = agent::section(&raw.agent, &raw.agents)?;
        let (http_listen, http) = http(&raw.http)?;
        let socket_path = socket(&raw.socket, &root)?;
        let (telegram, telegram_token) = telegram(&raw.telegram)?;
        let jobs = jobs(&raw.jobs)?;
        let breakers = breakers(&raw.breakers)?;
        let backup = backup(&raw.backup)?;
        let (logging, log_filter) = logging(&raw.logging)?;
        let allowed_roots = projects(&raw.projects)?;
        let sessions = sessions(&raw.sessions)?;
        let (git_timeout, git_remote_timeout) = git(&raw.git)?;
        let supervision = supervision(&raw.supervision)?;
        let store = super::store::store(&raw.store)?;
        let voice = super::phone::voice(&raw.voice)?;
        let files = super::phone::files(&raw.files)?;
        let github = super::phone::github(&raw.github)?;
        let cluster = super::cluster::cluster(&raw.cluster)?;
        Ok(Config {
            cluster,
            voice,
            files,
            github,
            debug: debug(&raw.debug)?,
            trusted_projects: raw.projects.trusted.clone(),
            agent,
            jobs,
            approvals,
            telegram,
            backup,
            logging,
            sessions,
            http,
            store,
            git_timeout,
            git_remote_timeout,
            root,
            root_is_fallback,
            http_listen,
            socket_path,
            telegram_token,
            breakers,
            supervision,
            log_filter,
            allowed_roots,
            file: None,
            raw,
        })
    }
}

/// `root`: as configured, or the default (`/projects`, or for a user who cannot write it their own state
/// directory); short enough for the job approval sockets under it. Answers whether it is the fallback.
fn root(configured: &Path) -> Result<(PathBuf, bool), ConfigError> {
    let (root, root_is_fallback) = if configured.as_os_str().is_empty() {
        root::default_root()
    } else {
        (absolute(configured), false)
    };
    if root.as_os_str().len() > MAX_ROOT_LEN {
        return Err(invalid(
            "root",
            format!(
                "{} is {} bytes long; job approval sockets under it would not fit a Unix socket \
                 address: use a root of at most {} bytes",
                root.display(),
                root.as_os_str().len(),
                MAX_ROOT_LEN
            ),
        ));
    }
    Ok((root, root_is_fallback))
}

/// `[approvals]`: every rule parses, and a request waits at least a second.
fn approvals(a: &RawApprovals) -> Result<ApprovalSettings, ConfigError> {
    for (key, rules) in [
        ("approvals.auto_allow", &a.auto_allow),
        ("approvals.auto_deny", &a.auto_deny),
    ] {
        for rule in rules {
            crate::policy::check_rule(rule)
                .map_err(|e| invalid(key, format!("rule {rule:?}: {e}")))?;
        }
    }
    if a.timeout_secs == 0 {
        return Err(invalid("approvals.timeout_secs", "must be at least 1"));
    }
    // A reminder at or after the expiry would never come: such a setting means none (documented).
    let remind_after = (a.remind_after_secs > 0 && a.remind_after_secs < a.timeout_secs)
        .then(|| Duration::from_secs(a.remind_after_secs));
    Ok(ApprovalSettings {
        timeout: Duration::from_secs(a.timeout_secs),
        remind_after,
        auto_allow: a.auto_allow.clone(),
        auto_deny: a.auto_deny.clone(),
    })
}

/// `[http]`: a loopback address unless remote access is asked for, and sane connection limits.
fn http(h: &RawHttp) -> Result<(SocketAddr, HttpSettings), ConfigError> {
    let listen: SocketAddr = h.listen.parse().map_err(|e| {
        invalid(
            "http.listen",
            format!(
                "{:?} is not an address with a port in 0..=65535 like 127.0.0.1:9464 ({e})",
                h.listen
            ),
        )
    })?;
    if !listen.ip().is_loopback() && !h.allow_remote {
        return Err(invalid(
            "http.listen",
            format!(
                "{listen} is not a loopback address; set http.allow_remote = true to expose probes and metrics"
            ),
        ));
    }
    if !(1..=300).contains(&h.header_read_timeout_secs) {
        return Err(invalid(
            "http.header_read_timeout_secs",
            "must be in 1..=300",
        ));
    }
    if h.max_connections == 0 {
        return Err(invalid("http.max_connections", "must be at least 1"));
    }
    let settings = HttpSettings {
        header_read_timeout: Duration::from_secs(h.header_read_timeout_secs),
        max_connections: h.max_connections as usize,
    };
    Ok((listen, settings))
}

/// `[socket]`: the admin socket's path, by default under the root; Linux limits it to 107 bytes.
fn socket(s: &RawSocket, root: &Path) -> Result<PathBuf, ConfigError> {
    let path = if s.path.is_empty() {
        root.join("orchestrator").join("televibe.sock")
    } else {
        absolute(Path::new(&s.path))
    };
    if path.as_os_str().len() > 107 {
        return Err(invalid(
            "socket.path",
            format!(
                "{} is longer than the 107 bytes a Unix socket path may have",
                path.display()
            ),
        ));
    }
    Ok(path)
}

/// `[telegram]`: an http(s) API, group chats only in `allowed_chats`, and the token (read from its file).
fn telegram(t: &RawTelegram) -> Result<(TelegramSettings, Option<String>), ConfigError> {
    if !t.api_url.starts_with("http://") && !t.api_url.starts_with("https://") {
        return Err(invalid(
            "telegram.api_url",
            "must start with http:// or https://",
        ));
    }
    if let Some(id) = t.allowed_chats.iter().find(|id| **id >= 0) {
        return Err(invalid(
            "telegram.allowed_chats",
            format!(
                "{id} is not a group chat id (those are negative); private chats are served through telegram.allowed_users"
            ),
        ));
    }
    let token = read_token(t)?;
    let settings = TelegramSettings {
        api_url: t.api_url.clone(),
        token_file: (!t.token_file.is_empty()).then(|| absolute(Path::new(&t.token_file))),
        allowed_users: t.allowed_users.clone(),
        allowed_chats: t.allowed_chats.clone(),
        admin_chat_id: t.admin_chat_id,
    };
    Ok((settings, token))
}

/// `[jobs]`: limits, timeouts and the memory ceiling.
fn jobs(j: &RawJobs) -> Result<JobSettings, ConfigError> {
    if j.max_concurrent == 0 {
        return Err(invalid("jobs.max_concurrent", "must be at least 1"));
    }
    if j.max_queued_per_session == 0 {
        return Err(invalid("jobs.max_queued_per_session", "must be at least 1"));
    }
    if !(1..=14_400).contains(&j.hard_timeout_secs) {
        return Err(invalid("jobs.hard_timeout_secs", "must be in 1..=14400"));
    }
    if j.hang_timeout_secs == 0 {
        return Err(invalid("jobs.hang_timeout_secs", "must be at least 1"));
    }
    if j.kill_grace_secs == 0 || j.kill_grace_secs > 600 {
        return Err(invalid("jobs.kill_grace_secs", "must be in 1..=600"));
    }
    if !(2..=50).contains(&j.heartbeat_timeout_secs) {
        return Err(invalid(
            "jobs.heartbeat_timeout_secs",
            "must be in 2..=50 (the spec's runner RTO is 60 s)",
        ));
    }
    let memory_max = match j.memory_max.bytes() {
        Err(e) => return Err(invalid("jobs.memory_max", &e)),
        Ok(n) if n != 0 && n < 64 << 20 => {
            return Err(invalid(
                "jobs.memory_max",
                "must be 0 (no limit) or at least 64M",
            ));
        }
        Ok(n) => n,
    };
    if j.max_log_bytes < 4096 {
        return Err(invalid("jobs.max_log_bytes", "must be at least 4096"));
    }
    if !(1..=3600).contains(&j.usage_limit_backoff_secs) {
        return Err(invalid(
            "jobs.usage_limit_backoff_secs",
            "must be in 1..=3600",
        ));
    }
    let secs = Duration::from_secs;
    Ok(JobSettings {
        max_concurrent: j.max_concurrent as usize,
        max_queued_per_session: j.max_queued_per_session as usize,
        hard_timeout: secs(j.hard_timeout_secs),
        hang_timeout: secs(j.hang_timeout_secs),
        kill_grace: secs(j.kill_grace_secs),
        max_log_bytes: j.max_log_bytes,
        heartbeat_timeout: secs(j.heartbeat_timeout_secs),
        memory_max,
        retry_interrupted: j.retry_interrupted,
        usage_limit_backoff: secs(j.usage_limit_backoff_secs),
    })
}

/// `[breakers.*]`: the five circuit breakers, in `BreakerName` order.
fn breakers(b: &RawBreakers) -> Result<[(BreakerName, BreakerSettings); 6], ConfigError> {
    Ok([
        (
            BreakerName::ClaudeCode,
            breaker(&b.claude_code, "breakers.claude_code")?,
        ),
        (BreakerName::Codex, breaker(&b.codex, "breakers.codex")?),
        (
            BreakerName::TelegramApi,
            breaker(&b.telegram_api, "breakers.telegram_api")?,
        ),
        (
            BreakerName::GitOperations,
            breaker(&b.git_operations, "breakers.git_operations")?,
        ),
        (
            BreakerName::BackupRemote,
            breaker(&b.backup_remote, "breakers.backup_remote")?,
        ),
        (
            BreakerName::VoiceTranscription,
            breaker(&b.voice_transcription, "breakers.voice_transcription")?,
        ),
    ])
}

fn breaker(b: &RawBreaker, key: &'static str) -> Result<BreakerSettings, ConfigError> {
    if b.failure_threshold == 0 || b.success_threshold == 0 || b.half_open_requests == 0 {
        return Err(invalid(
            key,
            "failure_threshold, success_threshold and half_open_requests must be at least 1",
        ));
    }
    if b.timeout_seconds == 0 {
        return Err(invalid(key, "timeout_seconds must be at least 1"));
    }
    Ok(BreakerSettings {
        failure_threshold: b.failure_threshold,
        success_threshold: b.success_threshold,
        timeout: Duration::from_secs(b.timeout_seconds),
        half_open_requests: b.half_open_requests,
    })
}

/// `[backup]`: the schedule and the remote parsed, a retention of at least a day.
fn backup(b: &RawBackup) -> Result<BackupSettings, ConfigError> {
    let schedule = crate::backup::schedule::Schedule::parse(&b.schedule)
        .map_err(|e| invalid("backup.schedule", e))?;
    let remote =
        crate::backup::remote::Remote::parse(&b.remote).map_err(|e| invalid("backup.remote", e))?;
    if b.retention_days == 0 {
        return Err(invalid("backup.retention_days", "must be at least 1"));
    }
    Ok(BackupSettings {
        schedule,
        retention_days: b.retention_days,
        remote,
        remote_url: b.remote.trim().to_string(),
    })
}

/// `[logging]`: retentions, the daemon's filter (answered beside the section), the stderr format, the
/// file size.
fn logging(l: &RawLogging) -> Result<(LoggingSettings, String), ConfigError> {
    for (key, days) in [
        ("logging.retention_days", l.retention_days),
        ("logging.job_log_retention_days", l.job_log_retention_days),
        ("logging.audit_retention_days", l.audit_retention_days),
    ] {
        if days == 0 {
            return Err(invalid(
                key,
                "must be at least 1 (0 would delete every record at once)",
            ));
        }
    }
    let filter = crate::logging::daemon_filter(&l.level, &l.third_party_level)
        .map_err(|(key, why)| invalid(key, why))?;
    if !matches!(l.stderr.as_str(), "auto" | "human" | "json" | "off") {
        return Err(invalid(
            "logging.stderr",
            "must be one of auto, human, json, off",
        ));
    }
    if l.max_size_mb == 0 {
        return Err(invalid("logging.max_size_mb", "must be at least 1"));
    }
    let settings = LoggingSettings {
        retention_days: l.retention_days,
        max_size_bytes: l.max_size_mb * 1024 * 1024,
        job_log_retention_days: l.job_log_retention_days,
        audit_retention_days: l.audit_retention_days,
        stderr: l.stderr.clone(),
    };
    Ok((settings, filter))
}

/// `[projects]`: the allowed roots are absolute.
fn projects(p: &RawProjects) -> Result<Vec<PathBuf>, ConfigError> {
    p.allowed_roots
        .iter()
        .map(|p| {
            if p.is_absolute() {
                Ok(p.clone())
            } else {
                Err(invalid(
                    "projects.allowed_roots",
                    format!("{} is not an absolute path", p.display()),
                ))
            }
        })
        .collect()
}

/// `[sessions]`: limits, a branch prefix that makes valid branch names, upkeep intervals.
fn sessions(ss: &RawSessions) -> Result<SessionSettings, ConfigError> {
    if ss.max_per_project == 0 || ss.max_total == 0 {
        return Err(invalid(
            "sessions.max_per_project",
            "session limits must be at least 1",
        ));
    }
    let prefix_probe = format!("{}S1", ss.branch_prefix);
    crate::domain::validate_branch(&prefix_probe)
        .map_err(|e| invalid("sessions.branch_prefix", e.0))?;
    if ss.disk_usage_interval_secs == 0 {
        return Err(invalid(
            "sessions.disk_usage_interval_secs",
            "must be at least 1",
        ));
    }
    if ss.worktree_check_secs == 0 {
        return Err(invalid(
            "sessions.worktree_check_secs",
            "must be at least 1",
        ));
    }
    Ok(SessionSettings {
        max_per_project: ss.max_per_project as usize,
        max_total: ss.max_total as usize,
        branch_prefix: ss.branch_prefix.clone(),
        disk_usage_interval: Duration::from_secs(ss.disk_usage_interval_secs),
        worktree_check: Duration::from_secs(ss.worktree_check_secs),
    })
}

/// `[git]`: the longest a git operation may take, and one command talking to a remote.
fn git(g: &RawGit) -> Result<(Duration, Duration), ConfigError> {
    if g.timeout_secs == 0 {
        return Err(invalid("git.timeout_secs", "must be at least 1"));
    }
    if g.remote_timeout_secs == 0 {
        return Err(invalid("git.remote_timeout_secs", "must be at least 1"));
    }
    Ok((
        Duration::from_secs(g.timeout_secs),
        Duration::from_secs(g.remote_timeout_secs),
    ))
}

/// `[supervision]`: the supervisors' restart policy.
fn supervision(s: &RawSupervision) -> Result<RestartPolicy, ConfigError> {
    if s.window_secs == 0 {
        return Err(invalid("supervision.window_secs", "must be at least 1"));
    }
    if s.backoff_initial_ms == 0 || s.backoff_max_ms < s.backoff_initial_ms {
        return Err(invalid(
            "supervision.backoff_max_ms",
            "backoff_initial_ms must be at least 1 and not above backoff_max_ms",
        ));
    }
    Ok(RestartPolicy {
        max_restarts: s.max_restarts,
        window: Duration::from_secs(s.window_secs),
        backoff_initial: Duration::from_millis(s.backoff_initial_ms),
        backoff_max: Duration::from_millis(s.backoff_max_ms),
    })
}

/// `[debug]`: clock offsets within a century; `stop_at` only counts with the test hooks on.
fn debug(d: &RawDebug) -> Result<DebugSettings, ConfigError> {
    Ok(DebugSettings {
        test_hooks: d.test_hooks,
        backup_clock_offset: offset(d.backup_clock_offset_secs, "debug.backup_clock_offset_secs")?,
        scheduler_clock_offset: offset(
            d.scheduler_clock_offset_secs,
            "debug.scheduler_clock_offset_secs",
        )?,
        shutdown_hold: Duration::from_millis(d.shutdown_hold_ms),
        stop_at: (d.test_hooks && !d.stop_at.is_empty()).then(|| d.stop_at.clone()),
    })
}

/// A clock offset of the test hooks: at most a century either way.
fn offset(secs: i64, key: &'static str) -> Result<chrono::TimeDelta, ConfigError> {
    chrono::TimeDelta::try_seconds(secs)
        .filter(|_| secs.unsigned_abs() <= 100 * 366 * 86_400)
        .ok_or_else(|| invalid(key, "must be within a century (in seconds)"))
}
