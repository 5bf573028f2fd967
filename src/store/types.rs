//! Domain records the store hands out: plain Rust values, serialisable for the fronts.

use chrono::{DateTime, Utc};
use sea_orm::entity::prelude::*;
use serde::Serialize;

/// Session states: `idle → running → idle`, `running → blocked → running`, `idle|blocked → closing → closed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize)]
#[sea_orm(rs_type = "String", db_type = "Text")]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    #[sea_orm(string_value = "idle")]
    Idle,
    #[sea_orm(string_value = "running")]
    Running,
    #[sea_orm(string_value = "blocked")]
    Blocked,
    #[sea_orm(string_value = "closing")]
    Closing,
    #[sea_orm(string_value = "closed")]
    Closed,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Idle => "idle",
            SessionState::Running => "running",
            SessionState::Blocked => "blocked",
            SessionState::Closing => "closing",
            SessionState::Closed => "closed",
        }
    }

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
    pub remote_url: Option<String>,
    pub created_at: DateTime<Utc>,
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
    pub conversation_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_activity_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
}

/// A new session row before it has an id.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub project_id: String,
    pub branch: String,
    pub base_branch: String,
    pub branch_created: bool,
    /// Directory holding the session's worktree; the id is appended.
    pub workspace_dir: std::path::PathBuf,
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
