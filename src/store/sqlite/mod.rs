//! The SQLite engine behind the store: how a database file is opened (WAL, busy timeout, foreign keys, a
//! read-only open), its integrity checks, the session counter kept in `sqlite_sequence`, the online copy
//! (`VACUUM INTO`, in `backup`), the file's installation beside the daemon (`file`) and what SQLite's errors
//! say about the disk (`cause`).
//!
//! Everything SQLite-only lives here; the services speak to `Store`, whose queries go through sea-orm and
//! `BACKEND`. A second engine is a sibling folder with the same functions (see `actors.md`, "How to add a
//! store"); `tests/layering.rs` keeps SQLite's words inside this folder.

use std::path::Path;
use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, Statement,
};

pub mod backup;
pub mod cause;
pub mod file;

/// The SQL dialect of the store's raw statements.
pub const BACKEND: DbBackend = DbBackend::Sqlite;

/// Opens (creating if missing) a database for the daemon: WAL, `synchronous = NORMAL`, the busy timeout,
/// foreign keys, at most `max_connections` pooled connections.
pub async fn connect(
    path: &Path,
    max_connections: u32,
    busy: Duration,
) -> Result<DatabaseConnection, DbErr> {
    let file = path.to_path_buf();
    let mut co = ConnectOptions::new(format!("sqlite://{}?mode=rwc", path.display()));
    co.max_connections(max_connections)
        .min_connections(1)
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(move |o| {
            o.filename(&file)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(busy)
                .foreign_keys(true)
        });
    Database::connect(co).await
}

/// Opens an existing database file read-only (one connection, no migrations).
pub async fn connect_read_only(path: &Path) -> Result<DatabaseConnection, DbErr> {
    let file = path.to_path_buf();
    let mut co = ConnectOptions::new(format!("sqlite://{}?mode=ro", path.display()));
    co.max_connections(1)
        .min_connections(1)
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(move |o| {
            o.filename(&file)
                .read_only(true)
                .busy_timeout(Duration::from_secs(5))
        });
    Database::connect(co).await
}

/// How thoroughly to check a database.
#[derive(Debug, Clone, Copy)]
pub enum Check {
    /// `PRAGMA integrity_check`: everything, index entries against their tables too.
    Full,
    /// `PRAGMA quick_check`: every page, b-tree and record, without the cross-check of indexes (about three
    /// times faster on a large database).
    Quick,
}

/// The problems the check found; empty when the database is sound.
pub async fn check(db: &DatabaseConnection, how: Check) -> Result<Vec<String>, DbErr> {
    let pragma = match how {
        Check::Full => "PRAGMA integrity_check",
        Check::Quick => "PRAGMA quick_check",
    };
    let rows = db
        .query_all_raw(Statement::from_string(BACKEND, pragma))
        .await?;
    let lines: Vec<String> = rows
        .iter()
        .filter_map(|r| r.try_get_by_index::<String>(0).ok())
        .collect();
    Ok(if lines.len() == 1 && lines[0] == "ok" {
        Vec::new()
    } else {
        lines
    })
}

/// The user tables, by name.
pub async fn table_names(db: &DatabaseConnection) -> Result<Vec<String>, DbErr> {
    let rows = db
        .query_all_raw(Statement::from_string(
            BACKEND,
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        ))
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| r.try_get_by_index::<String>(0).ok())
        .collect())
}

/// The number the next session would get: one above every number ever used (AUTOINCREMENT's counter).
pub async fn next_session_seq(db: &impl ConnectionTrait) -> Result<i64, DbErr> {
    let row = db
        .query_one_raw(Statement::from_string(
            BACKEND,
            "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'sessions'), 0), COALESCE((SELECT MAX(seq) FROM sessions), 0)) + 1",
        ))
        .await?;
    Ok(row
        .and_then(|r| r.try_get_by_index::<i64>(0).ok())
        .unwrap_or(1))
}

/// Raises the sessions' AUTOINCREMENT counter to at least `seq`.
pub async fn raise_session_counter(db: &impl ConnectionTrait, seq: i64) -> Result<(), DbErr> {
    db.execute_raw(Statement::from_sql_and_values(
        BACKEND,
        "UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = 'sessions'",
        [seq.into()],
    ))
    .await?;
    // No row yet when no session was ever inserted.
    db.execute_raw(Statement::from_sql_and_values(
        BACKEND,
        "INSERT INTO sqlite_sequence(name, seq) SELECT 'sessions', ? \
         WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'sessions')",
        [seq.into()],
    ))
    .await
    .map(|_| ())
}
