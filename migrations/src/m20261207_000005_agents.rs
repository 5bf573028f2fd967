//! More than one agent: a session's default agent, each job's agent, and each agent's conversation in a
//! session (`conversation_id` stays Claude Code's; the others are in `conversations`, a JSON object).

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261207_000005_agents"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for sql in [
            "ALTER TABLE sessions ADD COLUMN agent TEXT NOT NULL DEFAULT 'claude';",
            "ALTER TABLE sessions ADD COLUMN conversations TEXT NOT NULL DEFAULT '{}';",
            "ALTER TABLE jobs ADD COLUMN agent TEXT NOT NULL DEFAULT 'claude';",
        ] {
            crate::run(manager, sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for sql in [
            "ALTER TABLE jobs DROP COLUMN agent;",
            "ALTER TABLE sessions DROP COLUMN conversations;",
            "ALTER TABLE sessions DROP COLUMN agent;",
        ] {
            crate::run(manager, sql).await?;
        }
        Ok(())
    }
}
