//! Scheduled instructions: an instruction queued in a session at each occurrence of a five-field UTC cron.
//! A removed schedule (canceled, or its session closed) stays as a history row, so its id is never reused.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261207_000008_schedules"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run(
            manager,
            r#"
CREATE TABLE schedules (
    id              TEXT PRIMARY KEY NOT NULL,
    seq             INTEGER NOT NULL UNIQUE,
    session_id      TEXT NOT NULL REFERENCES sessions(id),
    cron            TEXT NOT NULL,
    instruction     TEXT NOT NULL CHECK (length(instruction) BETWEEN 1 AND 10000),
    agent           TEXT,
    created_by      TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    last_run_at     TEXT,
    last_job_id     TEXT,
    next_run_at     TEXT NOT NULL,
    runs            INTEGER NOT NULL DEFAULT 0,
    removed_at      TEXT,
    removed_by      TEXT,
    removed_reason  TEXT
);
CREATE INDEX schedules_session ON schedules(session_id) WHERE removed_at IS NULL;
"#,
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run(manager, "DROP TABLE schedules;").await?;
        Ok(())
    }
}
