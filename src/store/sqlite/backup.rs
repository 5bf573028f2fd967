//! The store's side of backups: a consistent online copy (`VACUUM INTO`), and checks of a copy on disk
//! (integrity, row counts, rows newer than a point in time) for `televibe backup verify|restore`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use sea_orm::{ConnectionTrait, DbBackend, Statement};

use crate::store::{Store, StoreError};
use crate::telemetry::Metrics;

/// The tables whose rows `verify` and `restore` report, in the order people read them.
pub const REPORTED_TABLES: [&str; 9] = [
    "projects",
    "sessions",
    "jobs",
    "approvals",
    "session_grants",
    "schedules",
    "events",
    "audit",
    "kv",
];

/// What a database file holds, as `verify` and `restore` print it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Contents {
    /// Rows per table (only the tables that exist in the file).
    pub rows: BTreeMap<String, i64>,
    /// Sessions that are not closed.
    pub open_sessions: i64,
}

/// Rows of a newer database that a backup taken at some moment does not have.
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq, Eq)]
pub struct Newer {
    pub projects: i64,
    pub sessions: i64,
    pub jobs: i64,
    pub approvals: i64,
}

impl Store {
    /// Writes a consistent copy of the live database to `dest` (which must not exist) while other
    /// connections keep reading and writing: SQLite's `VACUUM INTO` reads one snapshot of the database.
    /// It does not write the live file, so it also works while the store is read-only.
    pub async fn vacuum_into(&self, dest: &Path) -> Result<(), StoreError> {
        let dest = dest.to_string_lossy().to_string();
        self.db
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                "VACUUM INTO ?",
                [dest.into()],
            ))
            .await?;
        Ok(())
    }

    /// Row counts of the reported tables that exist in this database.
    pub async fn contents(&self) -> Result<Contents, StoreError> {
        let tables = self.table_names().await?;
        let mut rows = BTreeMap::new();
        for t in REPORTED_TABLES {
            if tables.iter().any(|n| n == t) {
                rows.insert(
                    t.to_string(),
                    self.count(&format!("SELECT count(*) FROM {t}"), None)
                        .await?,
                );
            }
        }
        let open_sessions = if rows.contains_key("sessions") {
            self.count(
                "SELECT count(*) FROM sessions WHERE state <> 'closed'",
                None,
            )
            .await?
        } else {
            0
        };
        Ok(Contents {
            rows,
            open_sessions,
        })
    }

    /// Rows created (or queued, or requested) after `since`: what a backup taken at `since` cannot hold.
    pub async fn newer_than(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Newer, StoreError> {
        let at = since.format("%Y-%m-%d %H:%M:%S%.f").to_string();
        let q = |table: &str, col: &str| {
            format!("SELECT count(*) FROM {table} WHERE julianday({col}) > julianday(?)")
        };
        Ok(Newer {
            projects: self.count(&q("projects", "created_at"), Some(&at)).await?,
            sessions: self.count(&q("sessions", "created_at"), Some(&at)).await?,
            jobs: self.count(&q("jobs", "queued_at"), Some(&at)).await?,
            approvals: self
                .count(&q("approvals", "requested_at"), Some(&at))
                .await?,
        })
    }

    async fn count(&self, sql: &str, arg: Option<&str>) -> Result<i64, StoreError> {
        let stmt = match arg {
            Some(a) => Statement::from_sql_and_values(DbBackend::Sqlite, sql, [a.into()]),
            None => Statement::from_string(DbBackend::Sqlite, sql),
        };
        let row = self.db.query_one_raw(stmt).await?;
        Ok(row
            .and_then(|r| r.try_get_by_index::<i64>(0).ok())
            .unwrap_or(0))
    }
}

/// Opens a database file read-only, runs `PRAGMA integrity_check` and counts its rows.
pub async fn check_file(path: &Path) -> Result<Contents, StoreError> {
    let store = Store::open_read_only(path, Arc::new(Metrics::new())).await?;
    let result = async {
        store.integrity_check().await.map_err(|e| match e {
            StoreError::Db(e) => StoreError::Corrupt {
                path: path.display().to_string(),
                backups: String::new(),
                detail: e.to_string(),
            },
            e => e,
        })?;
        store.contents().await
    }
    .await;
    store.close().await;
    result
}

/// Rows of the database file at `path` newer than `since` (`None` when the file cannot be read).
pub async fn newer_in_file(path: &Path, since: chrono::DateTime<chrono::Utc>) -> Option<Newer> {
    let store = Store::open_read_only(path, Arc::new(Metrics::new()))
        .await
        .ok()?;
    let newer = store.newer_than(since).await.ok();
    store.close().await;
    newer
}
