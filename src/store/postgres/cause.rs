//! What PostgreSQL's errors say about the store: a full disk (`53100 disk_full`), a read-only transaction
//! (`25006 read_only_sql_transaction`: a standby, or `default_transaction_read_only`), a lost server (the
//! connection refused, reset or closed, the pool timed out waiting for one, `57P01`
//! "terminating connection", the `08` connection exceptions, `58030` I/O errors) or damaged data
//! (`XX001`/`XX002`). A lost server puts the daemon in the same read-only mode as a failing disk; the
//! store actor's probe write lifts it once the server answers again (the pool reconnects by itself).

use sea_orm::{DbErr, RuntimeErr};

use crate::store::ReadOnlyCause;

/// The driver's error inside a database error, if there is one.
fn driver_error(err: &DbErr) -> Option<&sea_orm::sqlx::Error> {
    match err {
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => Some(e.as_ref()),
        _ => None,
    }
}

/// The SQLSTATE of an error the server returned.
pub fn sqlstate(err: &DbErr) -> Option<String> {
    driver_error(err)?
        .as_database_error()?
        .code()
        .map(|c| c.into_owned())
}

/// The cause a failed statement's error names, if it is a storage failure at all.
pub fn of_error(err: &DbErr) -> Option<ReadOnlyCause> {
    if let DbErr::ConnectionAcquire(_) = err {
        return Some(ReadOnlyCause::IoError);
    }
    if let Some(code) = sqlstate(err) {
        return of_sqlstate(&code);
    }
    match driver_error(err) {
        Some(
            sea_orm::sqlx::Error::Io(_)
            | sea_orm::sqlx::Error::PoolTimedOut
            | sea_orm::sqlx::Error::PoolClosed
            | sea_orm::sqlx::Error::Tls(_)
            | sea_orm::sqlx::Error::Protocol(_)
            | sea_orm::sqlx::Error::WorkerCrashed,
        ) => Some(ReadOnlyCause::IoError),
        Some(_) => None,
        None => of_text(&err.to_string()),
    }
}

/// The cause of a SQLSTATE.
pub fn of_sqlstate(code: &str) -> Option<ReadOnlyCause> {
    match code {
        "53100" => Some(ReadOnlyCause::DiskFull),
        "25006" => Some(ReadOnlyCause::ReadOnlyFile),
        "XX001" | "XX002" => Some(ReadOnlyCause::Integrity),
        "57P01" | "57P02" | "57P03" | "58030" => Some(ReadOnlyCause::IoError),
        c if c.starts_with("08") => Some(ReadOnlyCause::IoError),
        _ => None,
    }
}

/// The cause a reason's text names (the text [`describe`] wrote, or the driver's words).
pub fn of_text(text: &str) -> Option<ReadOnlyCause> {
    let t = text.to_lowercase();
    if let Some(code) = t.split("sqlstate ").nth(1) {
        let code: String = code.chars().take(5).collect();
        if let Some(c) = of_sqlstate(&code.to_uppercase()) {
            return Some(c);
        }
    }
    if t.contains("could not extend file") || t.contains("no space left") {
        Some(ReadOnlyCause::DiskFull)
    } else if t.contains("read-only transaction") {
        Some(ReadOnlyCause::ReadOnlyFile)
    } else if [
        "connection refused",
        "connection reset",
        "broken pipe",
        "pool timed out",
        "connection acquire",
        "terminating connection",
        "error communicating with database",
        "connection closed",
        "i/o error",
    ]
    .iter()
    .any(|w| t.contains(w))
    {
        Some(ReadOnlyCause::IoError)
    } else {
        None
    }
}

/// Whether an error says the data is damaged.
pub fn looks_corrupt(err: &DbErr) -> bool {
    of_error(err) == Some(ReadOnlyCause::Integrity)
}

/// An error's text with its SQLSTATE, when the server gave one (the reason read-only mode records).
pub fn describe(err: &DbErr) -> String {
    match sqlstate(err) {
        Some(code) => format!("{err} (SQLSTATE {code})"),
        None => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgresql_errors_name_their_cause() {
        for (text, cause) in [
            (
                "Execution Error: could not extend file (SQLSTATE 53100)",
                Some(ReadOnlyCause::DiskFull),
            ),
            (
                "cannot execute INSERT in a read-only transaction (SQLSTATE 25006)",
                Some(ReadOnlyCause::ReadOnlyFile),
            ),
            (
                "terminating connection due to administrator command (SQLSTATE 57P01)",
                Some(ReadOnlyCause::IoError),
            ),
            (
                "Connection Error: error communicating with database: Connection refused (os error 111)",
                Some(ReadOnlyCause::IoError),
            ),
            (
                "Failed to acquire connection from pool: Connection pool timed out",
                Some(ReadOnlyCause::IoError),
            ),
            (
                "invalid page in block 4 (SQLSTATE XX001)",
                Some(ReadOnlyCause::Integrity),
            ),
            (
                "duplicate key value violates unique constraint (SQLSTATE 23505)",
                None,
            ),
        ] {
            assert_eq!(of_text(text), cause, "{text}");
        }
        assert_eq!(
            of_error(&DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout)),
            Some(ReadOnlyCause::IoError)
        );
    }
}
