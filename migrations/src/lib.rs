//! Schema migrations of the televibe state database; the schema is created and changed only here.
//!
//! Each migration is written once, in SQLite's SQL, and runs through [`for_backend`], which gives it to
//! SQLite unchanged and rewrites it for PostgreSQL: the types the store's entities read and write
//! (`BIGSERIAL` keys, `BOOLEAN`, `INTEGER` for 32-bit values, `BIGINT`, `DOUBLE PRECISION`, `TIMESTAMPTZ`).

pub use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

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

/// Runs a migration's statements (SQLite's SQL) on the manager's connection, in its engine's dialect.
pub(crate) async fn run(manager: &SchemaManager<'_>, sql: &str) -> Result<(), DbErr> {
    let sql = for_backend(manager.get_database_backend(), sql);
    manager.get_connection().execute_unprepared(&sql).await?;
    Ok(())
}

/// A migration's SQL for `backend`: unchanged for SQLite; for PostgreSQL, `INTEGER PRIMARY KEY
/// AUTOINCREMENT` becomes `BIGSERIAL PRIMARY KEY` and each column named in [`column_type`] gets that type
/// (a boolean's `DEFAULT 0`/`1` becomes `false`/`true`). String literals are copied as they are.
pub fn for_backend(backend: DbBackend, sql: &str) -> String {
    match backend {
        DbBackend::Postgres => to_postgres(sql),
        _ => sql.to_string(),
    }
}

/// SQLite's column types as the migrations write them.
const SQLITE_TYPES: &[&str] = &["INTEGER", "TEXT", "REAL", "BOOLEAN"];

/// The PostgreSQL type of a column, by name, as the entities (`src/store/entities.rs`) and the raw
/// statements read and write it; `None`: the SQLite type stands (`TEXT`). A name means the same type in
/// every table.
pub fn column_type(name: &str) -> Option<&'static str> {
    Some(match name {
        "branch_created" | "worktree_missing" | "is_error" | "trusted" => "BOOLEAN",
        "exit_code" | "signal" | "pid" | "pgid" => "INTEGER",
        "seq"
        | "leader_start"
        | "num_turns"
        | "input_tokens"
        | "output_tokens"
        | "api_error_status"
        | "permission_denials"
        | "telegram_chat_id"
        | "telegram_message_id"
        | "limit_waits"
        | "interruptions"
        | "runs" => "BIGINT",
        "total_cost_usd" => "DOUBLE PRECISION",
        "created_at" | "last_activity_at" | "closed_at" | "queued_at" | "started_at"
        | "finished_at" | "heartbeat_at" | "not_before" | "requested_at" | "decided_at"
        | "expires_at" | "delivered_at" | "last_run_at" | "next_run_at" | "removed_at" => {
            "TIMESTAMPTZ"
        }
        _ => return None,
    })
}

fn to_postgres(sql: &str) -> String {
    let sql = sql.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY");
    let mut out = String::with_capacity(sql.len() + 64);
    let mut chars = sql.char_indices().peekable();
    // The type the column just named gets, while only blanks came after its name.
    let mut pending: Option<&'static str> = None;
    // Inside a boolean column's definition: its `DEFAULT 0`/`1` is rewritten.
    let mut in_boolean = false;
    while let Some((start, c)) = chars.next() {
        if c == '\'' {
            out.push(c);
            for (_, c) in chars.by_ref() {
                out.push(c);
                if c == '\'' {
                    break;
                }
            }
            pending = None;
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let mut end = start + c.len_utf8();
            while let Some(&(i, n)) = chars.peek() {
                if n.is_ascii_alphanumeric() || n == '_' {
                    chars.next();
                    end = i + n.len_utf8();
                } else {
                    break;
                }
            }
            let word = &sql[start..end];
            if let Some(ty) = pending.take()
                && SQLITE_TYPES.contains(&word)
            {
                out.push_str(ty);
                in_boolean = ty == "BOOLEAN";
                continue;
            }
            if in_boolean && word == "DEFAULT" {
                out.push_str(word);
                while let Some(&(_, n)) = chars.peek() {
                    if n.is_ascii_whitespace() {
                        out.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                match chars.peek() {
                    Some(&(_, '0')) => {
                        chars.next();
                        out.push_str("false");
                    }
                    Some(&(_, '1')) => {
                        chars.next();
                        out.push_str("true");
                    }
                    _ => {}
                }
                continue;
            }
            pending = column_type(word);
            out.push_str(word);
            continue;
        }
        if matches!(c, ',' | ';' | '\n') {
            in_boolean = false;
        }
        if !c.is_ascii_whitespace() {
            pending = None;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_gets_the_migrations_unchanged() {
        let sql = "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, trusted INTEGER NOT NULL DEFAULT 0);";
        assert_eq!(for_backend(DbBackend::Sqlite, sql), sql);
    }

    #[test]
    fn postgresql_gets_the_entities_types() {
        let sql = "CREATE TABLE sessions (\n    seq INTEGER PRIMARY KEY AUTOINCREMENT,\n    \
                   branch_created INTEGER NOT NULL DEFAULT 0,\n    state TEXT NOT NULL CHECK (state IN ('seq INTEGER','x')),\n    \
                   created_at TEXT NOT NULL,\n    exit_code INTEGER,\n    runs INTEGER NOT NULL DEFAULT 0,\n    \
                   total_cost_usd REAL\n);\nCREATE INDEX s ON sessions(seq) WHERE created_at IS NOT NULL;\n\
                   ALTER TABLE projects ADD COLUMN trusted BOOLEAN NOT NULL DEFAULT 1;";
        assert_eq!(
            for_backend(DbBackend::Postgres, sql),
            "CREATE TABLE sessions (\n    seq BIGSERIAL PRIMARY KEY,\n    \
             branch_created BOOLEAN NOT NULL DEFAULT false,\n    state TEXT NOT NULL CHECK (state IN ('seq INTEGER','x')),\n    \
             created_at TIMESTAMPTZ NOT NULL,\n    exit_code INTEGER,\n    runs BIGINT NOT NULL DEFAULT 0,\n    \
             total_cost_usd DOUBLE PRECISION\n);\nCREATE INDEX s ON sessions(seq) WHERE created_at IS NOT NULL;\n\
             ALTER TABLE projects ADD COLUMN trusted BOOLEAN NOT NULL DEFAULT true;"
        );
    }
}
