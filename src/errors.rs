//! Errors of the core API, shared by every front: a code of the product's list, a message, a suggestion.

use std::fmt;

use serde::Serialize;

use crate::breaker::BreakerOpen;
use crate::domain::READ_ONLY_MESSAGE;
use crate::git::GitError;
use crate::store::StoreError;

/// The error codes of the product's interface (MCP `isError` bodies, Telegram replies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    ProjectNotFound,
    SessionNotFound,
    JobNotFound,
    InvalidPath,
    NotARepository,
    InstructionEmpty,
    InstructionTooLong,
    BranchConflict,
    SessionBusy,
    SessionClosing,
    QueueFull,
    ApprovalNotFound,
    ApprovalAlreadyDecided,
    ReadOnly,
    BreakerOpen,
    GitError,
    RunnerError,
    InternalError,
    /// Beyond the product's list: a session limit of `[sessions]` is reached.
    SessionLimit,
    /// Beyond the product's list: `recover_session` on a session whose worktree is on disk.
    WorktreeNotMissing,
    /// Beyond the product's list: an agent name that is not configured.
    UnknownAgent,
    /// Beyond the product's list: a schedule's cron is not five valid fields.
    InvalidSchedule,
    /// Beyond the product's list: no schedule has this id.
    ScheduleNotFound,
    /// Beyond the product's list: no file at this path of the session's worktree (`/get`).
    FileNotFound,
    /// Beyond the product's list: the file is larger than `files.max_bytes`.
    FileTooLarge,
    /// Beyond the product's list: the forge (GitHub) is not set up, unreachable, or refused the request.
    ForgeError,
    /// Beyond the product's list: "approve for this session" asked of a request that is approved one at a
    /// time (a push).
    ApprovalOnceOnly,
    /// Beyond the product's list: the node asked for, or the node hosting the session, is not up (several
    /// nodes on one PostgreSQL store), or the work can only be done on that node.
    NodeUnavailable,
    /// Beyond the product's list: `register_project {url}` names a directory of `<root>/repos`, or a
    /// project id, that something else holds already.
    ProjectExists,
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = serde_json::to_value(self).unwrap_or_default();
        f.write_str(v.as_str().unwrap_or("INTERNAL_ERROR"))
    }
}

/// A refused or failed core call.
#[derive(Debug, Clone, Serialize, serde::Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct CoreError {
    pub code: ErrorCode,
    pub message: String,
    pub suggestion: String,
}

impl CoreError {
    pub fn new(code: ErrorCode, message: impl Into<String>, suggestion: impl Into<String>) -> Self {
        CoreError {
            code,
            message: message.into(),
            suggestion: suggestion.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        CoreError::new(
            ErrorCode::InternalError,
            message,
            "check the daemon log (orchestrator.log) and retry",
        )
    }
}

impl From<StoreError> for CoreError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::ReadOnly { reason } => CoreError::new(
                ErrorCode::ReadOnly,
                format!("{READ_ONLY_MESSAGE} ({reason})"),
                "free disk space or fix the database file, then restart the daemon; reads still work",
            ),
            other => CoreError::internal(other.to_string()),
        }
    }
}

impl From<BreakerOpen> for CoreError {
    fn from(e: BreakerOpen) -> Self {
        CoreError::new(
            ErrorCode::BreakerOpen,
            e.to_string(),
            format!(
                "the {} breaker opened after repeated failures; retry in {} s",
                e.name, e.retry_in_secs
            ),
        )
    }
}

impl From<GitError> for CoreError {
    fn from(e: GitError) -> Self {
        match e {
            GitError::BreakerOpen(b) => b.into(),
            GitError::NotARepository(path) => CoreError::new(
                ErrorCode::NotARepository,
                format!("{path} is not a git repository"),
                "give the path of a directory that contains a .git (git init or git clone it first)",
            ),
            GitError::InvalidBranch(msg) => CoreError::new(
                ErrorCode::GitError,
                msg,
                "use a name git accepts (git check-ref-format --branch), e.g. feature/login",
            ),
            GitError::BranchCheckedOut { branch, at } => CoreError::new(
                ErrorCode::BranchConflict,
                format!("branch {branch} is checked out in {at}"),
                "pick another branch, or close the session that uses it",
            ),
            GitError::BranchMissing(branch) => CoreError::new(
                ErrorCode::GitError,
                format!("branch {branch} does not exist"),
                "give an existing branch as base (list them with git branch)",
            ),
            GitError::Dirty(path) => CoreError::new(
                ErrorCode::SessionBusy,
                format!("the worktree {path} has uncommitted changes"),
                "commit or discard them, or close with force = true to throw them away",
            ),
            e @ (GitError::Timeout(_) | GitError::Failed(_)) => CoreError::new(
                ErrorCode::GitError,
                e.to_string(),
                "check the repository (git status, git fsck); repeated failures open the git_operations breaker",
            ),
            e @ GitError::TooLarge(_) => CoreError::new(
                ErrorCode::GitError,
                e.to_string(),
                "look at the change in the worktree itself, or narrow it",
            ),
            e @ GitError::Remote(_) => CoreError::new(
                ErrorCode::GitError,
                e.to_string(),
                "check the project's remote origin and the git credentials of the daemon's user (git ls-remote origin in the project's repository)",
            ),
            e @ GitError::Unsafe(_) => CoreError::new(
                ErrorCode::GitError,
                e.to_string(),
                "a job left a link, FIFO or oversized file where git keeps its data; remove it (ls -l shows it)",
            ),
        }
    }
}

impl From<crate::agents::UnknownAgent> for CoreError {
    fn from(e: crate::agents::UnknownAgent) -> Self {
        CoreError::new(
            ErrorCode::UnknownAgent,
            e.to_string(),
            format!("name one of: {}", e.configured.join(", ")),
        )
    }
}
