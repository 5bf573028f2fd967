//! Jobs of more than one kind: `agent` (an agent runs the instruction, as every job before) and `push` (the
//! daemon pushes the session's branch to the project's `origin` once a person approves). Earlier rows are
//! agent jobs.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261207_000009_job_kinds"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run(
            manager,
            "ALTER TABLE jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'agent' \
                 CHECK (kind IN ('agent','push'));",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run(manager, "ALTER TABLE jobs DROP COLUMN kind;").await?;
        Ok(())
    }
}
