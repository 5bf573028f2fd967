//! The PostgreSQL engine behind the store: how the daemon connects (a small pool whose connections are
//! tested before use, short acquire timeouts, so a server that went away and came back is reached again
//! without a restart; a read-only connection with `default_transaction_read_only = on`), its check, the
//! session counter kept in the `sessions.seq` sequence, the advisory locks that make numbers taken by
//! several daemons commit in order, and what its errors say (`cause`).
//!
//! The check: PostgreSQL has no `integrity_check`. The quick check reads every table of the schema
//! (`SELECT count(*)`: each must be present and readable); the full check adds `amcheck`'s
//! `bt_index_check` on every index of the schema when the extension is installed in the database
//! (`CREATE EXTENSION amcheck`, an operator's choice), and says nothing more without it.
//!
//! Backups of a PostgreSQL store are the operator's own (`pg_dump`, the server's own tooling): the daemon's
//! backup commands and schedule say so and do nothing (see `Store::engine`).

use std::time::Duration;

use sea_orm::sqlx::postgres::PgConnectOptions;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, Statement,
};

pub mod cause;
pub mod cluster;

/// What the daemon's backup commands and schedule answer on a PostgreSQL store.
pub const OPERATOR_BACKUPS: &str = "backups of a PostgreSQL store are the operator's own: dump the database \
     with pg_dump --format=custom (and restore a dump with pg_restore --clean --if-exists --single-transaction \
     while the daemon is stopped); televibe's backups (backup now|list|verify|restore, backup.schedule) copy \
     SQLite's state.db only";

/// The SQL dialect of this engine's statements.
pub const BACKEND: DbBackend = DbBackend::Postgres;

/// How long a statement waits for a pooled connection (or a new one) before it fails: short, so a lost
/// server turns into read-only mode quickly instead of holding every writer.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// `postgresql://…` → `postgres://…` (the scheme the driver takes); other text unchanged.
fn driver_url(url: &str) -> String {
    match url.strip_prefix("postgresql:") {
        Some(rest) => format!("postgres:{rest}"),
        None => url.to_string(),
    }
}

fn options(url: &str, password: Option<&str>, max_connections: u32) -> ConnectOptions {
    let mut co = ConnectOptions::new(driver_url(url));
    let password = password.map(str::to_string);
    co.max_connections(max_connections)
        .min_connections(0)
        .connect_timeout(ACQUIRE_TIMEOUT)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(true)
        .sqlx_logging(false)
        .map_sqlx_postgres_opts(move |o: PgConnectOptions| match &password {
            Some(p) => o.password(p),
            None => o,
        });
    co
}

/// Connects the daemon's pool (at most `max_connections`) to the database at `url` (no password in it;
/// `password` is given to the driver on its own).
pub async fn connect(
    url: &str,
    password: Option<&str>,
    max_connections: u32,
) -> Result<DatabaseConnection, DbErr> {
    Database::connect(options(url, password, max_connections)).await
}

/// One connection whose transactions are read-only (`default_transaction_read_only = on`): offline tools.
pub async fn connect_read_only(
    url: &str,
    password: Option<&str>,
) -> Result<DatabaseConnection, DbErr> {
    let mut co = options(url, password, 1);
    let password = password.map(str::to_string);
    co.map_sqlx_postgres_opts(move |o: PgConnectOptions| {
        let o = o.options([("default_transaction_read_only", "on")]);
        match &password {
            Some(p) => o.password(p),
            None => o,
        }
    });
    Database::connect(co).await
}

/// The connect URL with its password, for a dedicated connection of the daemon's own (never logged).
pub fn url_with_password(url: &str, password: Option<&str>) -> String {
    let url = driver_url(url);
    let Some(password) = password else {
        return url;
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return url;
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!(
            "{scheme}://{}:{}{}",
            &rest[..at],
            percent_encode(password),
            &rest[at..]
        ),
        None => url.clone(),
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// How thoroughly to check the database.
#[derive(Debug, Clone, Copy)]
pub enum Check {
    /// Every table read, and `amcheck` on every index when the extension is installed.
    Full,
    /// Every table present and readable.
    Quick,
}

/// The problems the check found in `tables`; empty when the database is sound.
pub async fn check(
    db: &DatabaseConnection,
    how: Check,
    tables: &[&str],
) -> Result<Vec<String>, DbErr> {
    let present = table_names(db).await?;
    let mut found = Vec::new();
    for t in tables {
        if !present.iter().any(|p| p == t) {
            found.push(format!("table {t} is missing"));
            continue;
        }
        // The names come from the store's own list, never from input.
        db.query_one_raw(Statement::from_string(
            BACKEND,
            format!("SELECT count(*) FROM \"{t}\""),
        ))
        .await?;
    }
    if matches!(how, Check::Full) && amcheck_installed(db).await? {
        let rows = db
            .query_all_raw(Statement::from_string(
                BACKEND,
                "SELECT c.relname::text, c.oid::bigint FROM pg_index i \
                 JOIN pg_class c ON c.oid = i.indexrelid \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 JOIN pg_am a ON a.oid = c.relam \
                 WHERE n.nspname = current_schema() AND a.amname = 'btree' ORDER BY c.relname",
            ))
            .await?;
        for r in rows {
            let name = r.try_get_by_index::<String>(0)?;
            let oid = r.try_get_by_index::<i64>(1)?;
            if let Err(e) = db
                .execute_raw(Statement::from_sql_and_values(
                    BACKEND,
                    "SELECT bt_index_check($1::bigint::oid)",
                    [oid.into()],
                ))
                .await
            {
                match cause::sqlstate(&e).as_deref() {
                    Some("XX001" | "XX002") => found.push(format!("index {name}: {e}")),
                    _ => return Err(e),
                }
            }
        }
    }
    Ok(found)
}

async fn amcheck_installed(db: &DatabaseConnection) -> Result<bool, DbErr> {
    Ok(db
        .query_one_raw(Statement::from_string(
            BACKEND,
            "SELECT 1 FROM pg_extension WHERE extname = 'amcheck'",
        ))
        .await?
        .is_some())
}

/// The tables of the connection's schema, by name (`seaql_migrations` included, as SQLite lists it).
pub async fn table_names(db: &impl ConnectionTrait) -> Result<Vec<String>, DbErr> {
    let rows = db
        .query_all_raw(Statement::from_string(
            BACKEND,
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name",
        ))
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| r.try_get_by_index::<String>(0).ok())
        .collect())
}

/// Reserves the next session number from the `sessions.seq` sequence: no two callers (in this daemon or
/// another on the same database) get the same one, and a number is never given again.
pub async fn next_session_seq(db: &impl ConnectionTrait) -> Result<i64, DbErr> {
    let row = db
        .query_one_raw(Statement::from_string(
            BACKEND,
            "SELECT nextval(pg_get_serial_sequence('sessions', 'seq'))",
        ))
        .await?;
    row.map(|r| r.try_get_by_index::<i64>(0))
        .transpose()?
        .ok_or_else(|| DbErr::Custom("the sessions' sequence gave no number".into()))
}

/// Gives `seq` back to the sessions' sequence when it is still the last number taken (the caller holds the
/// sessions' lock, so none is taken meanwhile).
pub async fn release_session_seq(db: &impl ConnectionTrait, seq: i64) -> Result<(), DbErr> {
    db.execute_raw(Statement::from_sql_and_values(
        BACKEND,
        "SELECT CASE WHEN $1 > 1 THEN setval(s.name::regclass, $1 - 1) \
         ELSE setval(s.name::regclass, 1, false) END \
         FROM (SELECT pg_get_serial_sequence('sessions', 'seq') AS name) s \
         WHERE pg_sequence_last_value(s.name::regclass) = $1",
        [seq.into()],
    ))
    .await
    .map(|_| ())
}

/// Raises the sessions' sequence to at least `seq` (never lowers it), so the next number is above it.
pub async fn raise_session_counter(db: &impl ConnectionTrait, seq: i64) -> Result<(), DbErr> {
    db.execute_raw(Statement::from_sql_and_values(
        BACKEND,
        "SELECT setval(s.name::regclass, $1) FROM (SELECT pg_get_serial_sequence('sessions', 'seq') AS name) s \
         WHERE $1 > COALESCE(pg_sequence_last_value(s.name::regclass), 0)",
        [seq.into()],
    ))
    .await
    .map(|_| ())
}

/// Takes the transaction-scoped advisory lock `key` (held until the transaction ends): writers that take
/// numbers from the table's maximum or its sequence commit one after the other, in the numbers' order.
pub async fn lock(db: &impl ConnectionTrait, key: i64) -> Result<(), DbErr> {
    db.execute_raw(Statement::from_sql_and_values(
        BACKEND,
        "SELECT pg_advisory_xact_lock($1)",
        [key.into()],
    ))
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_goes_into_the_url_encoded_and_only_when_asked() {
        assert_eq!(
            url_with_password("postgresql://tv@db:5432/tv", Some("p@ss:/w")),
            "postgres://tv:p%40ss%3A%2Fw@db:5432/tv"
        );
        assert_eq!(
            url_with_password("postgres://tv@db/tv", None),
            "postgres://tv@db/tv"
        );
    }
}
