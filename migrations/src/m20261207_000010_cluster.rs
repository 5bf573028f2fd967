//! Several nodes on one database: each session (and each project registered by path) names the node that
//! hosts it; `nodes` holds every node's heartbeat and `calls` what one node asks of another. On a store
//! of one node (SQLite) the columns stay empty and the tables unused. PostgreSQL also learns the job error
//! `node_lost` (a job whose node went silent); SQLite never sees it, so its CHECK is left as it is.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261207_000010_cluster"
    }
}

const ERROR_TYPES: &str = "'timeout','hung','killed','agent_error','api_error','orchestrator_restart',\
'approval_timeout','internal','node_lost'";

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let pg = manager.get_database_backend() == DbBackend::Postgres;
        let time = if pg { "TIMESTAMPTZ" } else { "TEXT" };
        let mut sql = vec![
            "ALTER TABLE sessions ADD COLUMN node TEXT;".to_string(),
            "ALTER TABLE projects ADD COLUMN node TEXT;".to_string(),
            "CREATE INDEX sessions_node ON sessions(node) WHERE node IS NOT NULL;".to_string(),
            format!(
                "CREATE TABLE nodes (
                    id            TEXT PRIMARY KEY NOT NULL,
                    instance      TEXT NOT NULL,
                    root          TEXT NOT NULL,
                    version       TEXT NOT NULL,
                    started_at    {time} NOT NULL,
                    heartbeat_at  {time} NOT NULL,
                    lost_at       {time}
                );"
            ),
            format!(
                "CREATE TABLE calls (
                    id          TEXT PRIMARY KEY NOT NULL,
                    node        TEXT NOT NULL,
                    from_node   TEXT NOT NULL,
                    kind        TEXT NOT NULL,
                    args        TEXT NOT NULL,
                    answer      TEXT,
                    created_at  {time} NOT NULL,
                    deadline    {time} NOT NULL,
                    claimed_at  {time},
                    done_at     {time}
                );"
            ),
            "CREATE INDEX calls_waiting ON calls(node, created_at) WHERE claimed_at IS NULL;"
                .to_string(),
        ];
        if pg {
            sql.push("ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_error_type_check;".into());
            sql.push(format!(
                "ALTER TABLE jobs ADD CONSTRAINT jobs_error_type_check CHECK \
                 (error_type IS NULL OR error_type IN ({ERROR_TYPES}));"
            ));
        }
        for s in sql {
            db.execute_unprepared(&s).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for s in [
            "DROP TABLE calls;",
            "DROP TABLE nodes;",
            "DROP INDEX sessions_node;",
            "ALTER TABLE projects DROP COLUMN node;",
            "ALTER TABLE sessions DROP COLUMN node;",
        ] {
            db.execute_unprepared(s).await?;
        }
        Ok(())
    }
}
