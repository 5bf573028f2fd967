//! Indexes for a store with a long history: job lists by session in order, a job's events, and the
//! retention pass over delivered outbox rows and finished jobs.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_000004_scale"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run(manager,
                "CREATE INDEX jobs_session_seq ON jobs(session_id, seq);
                 CREATE INDEX jobs_finished ON jobs(finished_at) WHERE finished_at IS NOT NULL;
                 CREATE INDEX events_job ON events(job_id, id) WHERE job_id IS NOT NULL;
                 CREATE INDEX events_delivered ON events(delivered_at) WHERE delivered_at IS NOT NULL;",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run(
            manager,
            "DROP INDEX jobs_session_seq; DROP INDEX jobs_finished; DROP INDEX events_job;
                 DROP INDEX events_delivered;",
        )
        .await?;
        Ok(())
    }
}
