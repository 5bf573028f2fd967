//! The initial schema: projects, sessions, jobs, approvals, the events outbox, audit records and a key-value table.
//!
//! States are closed sets enforced by CHECK constraints, matching the Rust enums stored through sea-orm.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261129_000001_initial"
    }
}

const UP: &str = r#"
CREATE TABLE projects (
    id              TEXT PRIMARY KEY NOT NULL CHECK (length(id) BETWEEN 1 AND 63),
    name            TEXT NOT NULL,
    repo_path       TEXT NOT NULL UNIQUE,
    default_branch  TEXT NOT NULL,
    remote_url      TEXT,
    created_at      TEXT NOT NULL
);

CREATE TABLE sessions (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    id                TEXT NOT NULL UNIQUE,
    project_id        TEXT NOT NULL REFERENCES projects(id),
    branch            TEXT NOT NULL,
    base_branch       TEXT NOT NULL,
    branch_created    INTEGER NOT NULL DEFAULT 0,
    worktree_path     TEXT NOT NULL,
    worktree_missing  INTEGER NOT NULL DEFAULT 0,
    state             TEXT NOT NULL CHECK (state IN ('idle','running','blocked','closing','closed')),
    conversation_id   TEXT,
    created_at        TEXT NOT NULL,
    last_activity_at  TEXT NOT NULL,
    closed_at         TEXT
);
CREATE UNIQUE INDEX sessions_one_open_per_branch ON sessions(project_id, branch) WHERE state <> 'closed';
CREATE INDEX sessions_project ON sessions(project_id);

CREATE TABLE jobs (
    id                TEXT PRIMARY KEY NOT NULL,
    seq               INTEGER NOT NULL UNIQUE,
    session_id        TEXT NOT NULL REFERENCES sessions(id),
    instruction       TEXT NOT NULL CHECK (length(instruction) BETWEEN 1 AND 10000),
    status            TEXT NOT NULL CHECK (status IN ('queued','running','waiting_approval','done','failed','canceled')),
    error_type        TEXT CHECK (error_type IS NULL OR error_type IN ('timeout','hung','killed','agent_error','api_error','orchestrator_restart','approval_timeout','internal')),
    error             TEXT,
    exit_code         INTEGER,
    signal            INTEGER,
    pid               INTEGER,
    pgid              INTEGER,
    boot_id           TEXT,
    leader_start      INTEGER,
    log_path          TEXT,
    base_commit       TEXT,
    is_error          INTEGER,
    result_subtype    TEXT,
    result_text       TEXT,
    terminal_reason   TEXT,
    num_turns         INTEGER,
    total_cost_usd    REAL,
    input_tokens      INTEGER,
    output_tokens     INTEGER,
    api_error_status  INTEGER,
    permission_denials INTEGER,
    files_changed     TEXT,
    diff_stat         TEXT,
    queued_at         TEXT NOT NULL,
    started_at        TEXT,
    finished_at       TEXT,
    heartbeat_at      TEXT
);
CREATE INDEX jobs_session_status ON jobs(session_id, status);
CREATE INDEX jobs_status ON jobs(status);

CREATE TABLE approvals (
    id                    TEXT PRIMARY KEY NOT NULL,
    job_id                TEXT NOT NULL REFERENCES jobs(id),
    session_id            TEXT NOT NULL REFERENCES sessions(id),
    tool_name             TEXT NOT NULL,
    tool_input            TEXT NOT NULL,
    tool_use_id           TEXT,
    scope                 TEXT NOT NULL CHECK (scope IN ('shell','write','git_push','network','mcp','other')),
    state                 TEXT NOT NULL CHECK (state IN ('pending','approved','denied','expired')),
    decision              TEXT CHECK (decision IS NULL OR decision IN ('approve_once','approve_session','deny','deny_stop','expired','policy_allow','policy_deny')),
    decided_by            TEXT,
    requested_at          TEXT NOT NULL,
    decided_at            TEXT,
    expires_at            TEXT NOT NULL,
    telegram_chat_id      INTEGER,
    telegram_message_id   INTEGER
);
CREATE INDEX approvals_state ON approvals(state);
CREATE INDEX approvals_job ON approvals(job_id);

CREATE TABLE events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    event_type    TEXT NOT NULL,
    project_id    TEXT,
    session_id    TEXT,
    job_id        TEXT,
    payload       TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    delivered_at  TEXT
);
CREATE INDEX events_undelivered ON events(id) WHERE delivered_at IS NULL;

CREATE TABLE audit (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    event        TEXT NOT NULL,
    actor        TEXT NOT NULL,
    project_id   TEXT,
    session_id   TEXT,
    job_id       TEXT,
    details      TEXT NOT NULL,
    created_at   TEXT NOT NULL
);
CREATE INDEX audit_event ON audit(event);

CREATE TABLE kv (
    key         TEXT PRIMARY KEY NOT NULL,
    value       TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
"#;

const DOWN: &str = r#"
DROP TABLE kv;
DROP TABLE audit;
DROP TABLE events;
DROP TABLE approvals;
DROP TABLE jobs;
DROP TABLE sessions;
DROP TABLE projects;
"#;

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run(manager, UP).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run(manager, DOWN).await?;
        Ok(())
    }
}
