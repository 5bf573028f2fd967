//! Which engine holds the store and where (`Engine`, `StoreLocation`), and the few things the queries need
//! to speak to either: `?` placeholders in the engine's dialect (`statement`) and the locks that keep
//! numbers taken by several daemons in commit order on PostgreSQL (`serialize`).

use std::path::PathBuf;

use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};

use super::postgres;

/// What a masked password is shown as.
pub(super) const MASK: &str = "********";

/// The tables the migrations create; the PostgreSQL check reads each.
pub const TABLES: &[&str] = &[
    "approvals",
    "audit",
    "calls",
    "events",
    "jobs",
    "kv",
    "nodes",
    "projects",
    "schedules",
    "session_grants",
    "sessions",
];

/// The engine that holds the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// A file under the root (`orchestrator/state.db`): the default.
    Sqlite,
    /// A PostgreSQL database (`store.url`).
    Postgres,
}

impl Engine {
    pub(super) fn of(backend: DbBackend) -> Engine {
        if backend == postgres::BACKEND {
            Engine::Postgres
        } else {
            Engine::Sqlite
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgresql",
        }
    }
}

/// Where the store lives: `store.url` empty is SQLite's file, a `postgres://` URL a PostgreSQL database.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    Sqlite(PathBuf),
    /// `url` never holds the password; `password` is given to the driver on its own.
    Postgres {
        url: String,
        password: Option<String>,
    },
}

impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Sqlite(p) => f.debug_tuple("Sqlite").field(p).finish(),
            StoreLocation::Postgres { url, password } => f
                .debug_struct("Postgres")
                .field("url", url)
                .field("password", &password.as_ref().map(|_| MASK))
                .finish(),
        }
    }
}

impl StoreLocation {
    /// The location `store.url` names (`None`: the SQLite file `state_db`).
    pub fn new(url: Option<&str>, password: Option<&str>, state_db: PathBuf) -> StoreLocation {
        match url {
            Some(url) => StoreLocation::Postgres {
                url: url.to_string(),
                password: password.map(str::to_string),
            },
            None => StoreLocation::Sqlite(state_db),
        }
    }

    /// What a message may show: the file's path, or the URL (which holds no password).
    pub fn shown(&self) -> String {
        match self {
            StoreLocation::Sqlite(p) => p.display().to_string(),
            StoreLocation::Postgres { url, .. } => url.clone(),
        }
    }

    pub fn engine(&self) -> Engine {
        match self {
            StoreLocation::Sqlite(_) => Engine::Sqlite,
            StoreLocation::Postgres { .. } => Engine::Postgres,
        }
    }

    /// `text` with the password masked (an error of the driver never quotes it; this makes sure).
    pub(super) fn scrub(&self, text: String) -> String {
        match self {
            StoreLocation::Postgres {
                password: Some(p), ..
            } if !p.is_empty() && text.contains(p.as_str()) => text.replace(p.as_str(), MASK),
            _ => text,
        }
    }
}

/// A raw statement written with `?` placeholders, for `backend`: PostgreSQL numbers them `$1..$n` (a `?`
/// inside a string literal stays).
pub(crate) fn statement<I>(backend: DbBackend, sql: &str, values: I) -> Statement
where
    I: IntoIterator<Item = sea_orm::Value>,
{
    if backend != postgres::BACKEND {
        return Statement::from_sql_and_values(backend, sql, values);
    }
    let mut out = String::with_capacity(sql.len() + 8);
    let (mut n, mut quoted) = (0, false);
    for c in sql.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            }
            _ => out.push(c),
        }
    }
    Statement::from_sql_and_values(backend, out, values)
}

/// The numbers writers take from a table's maximum or its sequence, each kept in commit order on PostgreSQL
/// by a transaction-scoped advisory lock (a reader following ids with `id > last` never skips one that
/// commits late). SQLite runs one writer at a time already.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Numbers {
    /// The outbox's `events.id`.
    Events = 1,
    /// `jobs.seq`.
    Jobs = 2,
    /// `schedules.seq`.
    Schedules = 3,
    /// The sessions' sequence, while a number is reserved or given back.
    Sessions = 4,
}

/// The advisory lock keys' base ("tv" in the high bytes), so they stay apart from other users' locks.
const LOCK_BASE: i64 = 0x7476_0000;

/// Whether writers of numbers on `db` take [`Numbers`]' locks (PostgreSQL).
pub(crate) fn serialized(db: &impl ConnectionTrait) -> bool {
    db.get_database_backend() == postgres::BACKEND
}

/// Takes `what`'s lock on PostgreSQL, inside the caller's transaction; nothing on SQLite.
pub(crate) async fn serialize(db: &impl ConnectionTrait, what: Numbers) -> Result<(), DbErr> {
    if serialized(db) {
        postgres::lock(db, LOCK_BASE + what as i64).await
    } else {
        Ok(())
    }
}
