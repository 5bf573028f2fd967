//! Trusted projects: whether the agent may load a repository's own settings (hooks, MCP servers).

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_000003_project_trust"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run(
            manager,
            "ALTER TABLE projects ADD COLUMN trusted BOOLEAN NOT NULL DEFAULT 0;",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run(manager, "ALTER TABLE projects DROP COLUMN trusted;").await?;
        Ok(())
    }
}
