//! Schema migrations of the televibe state database; the schema is created and changed only here.

pub use sea_orm_migration::prelude::*;

mod m20261129_000001_initial;
mod m20261129_000002_session_grants;
mod m20261202_000003_project_trust;
mod m20261202_000004_scale;
mod m20261207_000005_agents;
mod m20261207_000006_usage_limits;
mod m20261207_000008_schedules;
mod m20261207_000009_job_kinds;
mod m20261207_000010_cluster;

/// The ordered list of migrations applied at start, before any actor runs.
pub struct Migrator;

#[sea_orm_migration::async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261129_000001_initial::Migration),
            Box::new(m20261129_000002_session_grants::Migration),
            Box::new(m20261202_000003_project_trust::Migration),
            Box::new(m20261202_000004_scale::Migration),
            Box::new(m20261207_000005_agents::Migration),
            Box::new(m20261207_000006_usage_limits::Migration),
            Box::new(m20261207_000008_schedules::Migration),
            Box::new(m20261207_000009_job_kinds::Migration),
            Box::new(m20261207_000010_cluster::Migration),
        ]
    }
}
