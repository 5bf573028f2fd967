//! Jobs that wait and run again: `not_before` holds a job queued again for its agent's usage limit until the
//! limit resets; `limit_waits` and `interruptions` count how often it waited for a limit and how often a
//! daemon restart cut it (a job cut twice fails).

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261207_000006_usage_limits"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for sql in [
            "ALTER TABLE jobs ADD COLUMN not_before TEXT;",
            "ALTER TABLE jobs ADD COLUMN limit_waits INTEGER NOT NULL DEFAULT 0;",
            "ALTER TABLE jobs ADD COLUMN interruptions INTEGER NOT NULL DEFAULT 0;",
        ] {
            crate::run(manager, sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for sql in [
            "ALTER TABLE jobs DROP COLUMN interruptions;",
            "ALTER TABLE jobs DROP COLUMN limit_waits;",
            "ALTER TABLE jobs DROP COLUMN not_before;",
        ] {
            crate::run(manager, sql).await?;
        }
        Ok(())
    }
}
