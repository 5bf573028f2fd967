//! The store: the one interface the services speak to (typed reads and writes of every record), integrity
//! check at open, migrations, and the write gate. The engine sits behind it: SQLite (the default, a file
//! under the root) in `sqlite/`, PostgreSQL (`store.url`) in `postgres/`.
//!
//! Only this module imports sea-orm. A write that fails because of the disk, the file or the server (full,
//! I/O error, read-only file, a lost connection, corruption) flips the store into read-only mode: reads keep
//! working, writes answer `READ_ONLY` until a probe write succeeds again.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};

use crate::telemetry::Metrics;

mod approvals;
mod engine;
mod entities;
mod jobs;
mod kv;
mod open;
pub use jobs::Requeue;
mod nodes;
mod projects;
mod records;
pub use nodes::{CallRow, Dial, LeaderLock, Listener, NodeRow};
mod postgres;
mod schedules;
mod sqlite;

pub use crate::domain::READ_ONLY_MESSAGE;
pub use engine::{Engine, StoreLocation, TABLES};
pub(crate) use engine::{Numbers, serialize, serialized, statement};
pub use postgres::OPERATOR_BACKUPS;
pub use schedules::{NewSchedule, ScheduleRun, ScheduleRunOutcome};
pub use sqlite::cause::ReadOnlyCause;
pub use sqlite::{backup, file};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{READ_ONLY_MESSAGE} ({reason})")]
    ReadOnly { reason: String },
    #[error(
        "state database {path} is corrupted ({detail}). The daemon refuses to start on it. To restore the \
         newest backup from {backups}: run `televibe backup restore latest` (with the same --config) while \
         the daemon is stopped; it keeps the damaged file as state.db.corrupted, runs SQLite's integrity_check \
         on the backup before and after copying it, and prints what was recovered and what is lost. Then \
         start the daemon again"
    )]
    Corrupt {
        path: String,
        backups: String,
        detail: String,
    },
    #[error(
        "state database {url} failed its check ({detail}). The daemon refuses to start on it: restore the \
         database from your own backups of the server (pg_restore of a dump), then start the daemon again"
    )]
    Unsound { url: String, detail: String },
    #[error("cannot open state database {path}: {detail}")]
    Open { path: String, detail: String },
    #[error("database error: {0}")]
    Db(#[from] DbErr),
}

impl StoreError {
    /// What the engine's check found, when this error is a failed check (the database is damaged).
    pub fn damage(&self) -> Option<&str> {
        match self {
            StoreError::Corrupt { detail, .. } | StoreError::Unsound { detail, .. } => Some(detail),
            _ => None,
        }
    }
}

/// The read-only reason of a database that failed its integrity check.
pub const CORRUPT: &str = "integrity check failed";

/// A handle on the state database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    location: StoreLocation,
    read_only: Arc<AtomicBool>,
    read_only_reason: Arc<Mutex<Option<String>>>,
    /// What made it read-only (`televibe_database_read_only_reason`); `None` while writable or opened
    /// read-only on purpose.
    read_only_cause: Arc<Mutex<Option<ReadOnlyCause>>>,
    /// The database failed its integrity check (or a write said it is malformed): read-only for good.
    corrupt: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub busy_timeout: Duration,
    pub max_connections: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            busy_timeout: Duration::from_secs(5),
            max_connections: 4,
        }
    }
}

impl Store {
    /// The SQLite file's path (empty on PostgreSQL: see [`Store::location`]).
    pub fn path(&self) -> &Path {
        match &self.location {
            StoreLocation::Sqlite(p) => p,
            StoreLocation::Postgres { .. } => Path::new(""),
        }
    }

    /// Where the store lives (the password, if any, is in it: show [`StoreLocation::shown`] only).
    pub fn location(&self) -> &StoreLocation {
        &self.location
    }

    /// The engine that holds the store.
    pub fn engine(&self) -> Engine {
        Engine::of(self.db.get_database_backend())
    }

    pub fn is_postgres(&self) -> bool {
        self.engine() == Engine::Postgres
    }

    /// The PostgreSQL connect URL with its password, for a dedicated connection of the daemon's own (a
    /// listener, say); `None` on SQLite. Never log it.
    pub fn connect_url(&self) -> Option<String> {
        match &self.location {
            StoreLocation::Postgres { url, password } => {
                Some(postgres::url_with_password(url, password.as_deref()))
            }
            StoreLocation::Sqlite(_) => None,
        }
    }

    /// The SQL dialect of the connection.
    fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// The PostgreSQL URL and password apart, for connections of the cluster's own (never logged).
    pub(crate) fn postgres_url(&self) -> Option<(String, Option<String>)> {
        match &self.location {
            StoreLocation::Postgres { url, password } => Some((url.clone(), password.clone())),
            StoreLocation::Sqlite(_) => None,
        }
    }

    /// The engine's full integrity check; any finding is corruption.
    pub async fn integrity_check(&self) -> Result<(), StoreError> {
        self.check(true).await
    }

    /// The engine's quick check. SQLite: every page, b-tree and record is read and checked as the full
    /// check does, only the cross-check of index entries against their tables is left out, which makes it
    /// about three times faster on a large database. PostgreSQL: every table present and readable. The
    /// daemon runs it at boot (the full check follows in the background, see `actors::store`).
    pub async fn quick_check(&self) -> Result<(), StoreError> {
        self.check(false).await
    }

    async fn check(&self, full: bool) -> Result<(), StoreError> {
        let lines = match self.engine() {
            Engine::Sqlite => {
                let how = if full {
                    sqlite::Check::Full
                } else {
                    sqlite::Check::Quick
                };
                sqlite::check(&self.db, how).await?
            }
            Engine::Postgres => {
                let how = if full {
                    postgres::Check::Full
                } else {
                    postgres::Check::Quick
                };
                postgres::check(&self.db, how, TABLES).await?
            }
        };
        if lines.is_empty() {
            return Ok(());
        }
        Err(match &self.location {
            StoreLocation::Sqlite(path) => StoreError::Corrupt {
                path: path.display().to_string(),
                backups: path
                    .parent()
                    .map(|p| p.join("backups").display().to_string())
                    .unwrap_or_default(),
                detail: lines.join("; "),
            },
            StoreLocation::Postgres { url, .. } => StoreError::Unsound {
                url: url.clone(),
                detail: lines.join("; "),
            },
        })
    }

    /// Whether an error says the database is damaged.
    fn looks_corrupt(&self, e: &DbErr) -> bool {
        match self.engine() {
            Engine::Sqlite => sqlite::cause::looks_corrupt(&e.to_string()),
            Engine::Postgres => postgres::cause::looks_corrupt(e),
        }
    }

    /// The reason and cause of a failed write, when it means the database cannot take writes.
    fn storage_failure(&self, e: &DbErr) -> Option<(String, ReadOnlyCause)> {
        match self.engine() {
            Engine::Sqlite => {
                let reason = e.to_string();
                ReadOnlyCause::of_error(&reason).map(|c| (reason, c))
            }
            Engine::Postgres => postgres::cause::of_error(e)
                .map(|c| (self.location.scrub(postgres::cause::describe(e)), c)),
        }
    }

    /// The readiness query of the spec: `SELECT 1`. An answer saying the file is damaged counts as a failed
    /// integrity check.
    pub async fn ping(&self) -> Result<(), StoreError> {
        if let Err(e) = self
            .db
            .query_one_raw(Statement::from_string(self.backend(), "SELECT 1"))
            .await
        {
            if self.looks_corrupt(&e) {
                self.enter_corrupt();
            }
            return Err(self.db_error(e));
        }
        Ok(())
    }

    /// A database error as the store reports it (never with the password).
    fn db_error(&self, e: DbErr) -> StoreError {
        match &self.location {
            StoreLocation::Postgres {
                password: Some(p), ..
            } if !p.is_empty() && e.to_string().contains(p.as_str()) => {
                StoreError::Db(DbErr::Custom(self.location.scrub(e.to_string())))
            }
            _ => StoreError::Db(e),
        }
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only.load(Ordering::SeqCst)
    }

    /// Whether the database failed an integrity check (or SQLite called it malformed) since the start.
    pub fn is_corrupt(&self) -> bool {
        self.corrupt.load(Ordering::SeqCst)
    }

    pub fn read_only_reason(&self) -> Option<String> {
        self.read_only_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// What made the store read-only, when it is for a failure (not opened read-only on purpose).
    pub fn read_only_cause(&self) -> Option<ReadOnlyCause> {
        *self
            .read_only_cause
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn set_cause(&self, cause: Option<ReadOnlyCause>) {
        *self
            .read_only_cause
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = cause;
        self.metrics
            .set_read_only_cause(cause.map(ReadOnlyCause::as_str));
    }

    /// Flips the store into read-only mode for good (until a restart): the integrity check failed.
    /// Whatever mode it was in (a full disk first, say), the reason becomes the integrity failure and no
    /// probe write lifts it. `televibe_health_check{check="database"}` goes to 0 here, and only here.
    pub fn enter_corrupt(&self) -> bool {
        let first = !self.corrupt.swap(true, Ordering::SeqCst);
        if !self.enter_read_only_as(CORRUPT, Some(ReadOnlyCause::Integrity)) {
            *self
                .read_only_reason
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(CORRUPT.to_string());
            self.set_cause(Some(ReadOnlyCause::Integrity));
        }
        // Last, so whoever sees the gauge at 0 sees the read-only cause too.
        self.metrics.set_health("database", false);
        first
    }

    /// Flips the store into read-only mode (idempotent); returns true when this call flipped it. The
    /// cause (`televibe_database_read_only_reason`) is read from `reason`, the engine's error text.
    pub fn enter_read_only(&self, reason: &str) -> bool {
        let cause = if reason == CORRUPT {
            Some(ReadOnlyCause::Integrity)
        } else {
            match self.engine() {
                Engine::Sqlite => ReadOnlyCause::of_error(reason),
                Engine::Postgres => postgres::cause::of_text(reason),
            }
        };
        self.enter_read_only_as(reason, cause)
    }

    fn enter_read_only_as(&self, reason: &str, cause: Option<ReadOnlyCause>) -> bool {
        let flipped = !self.read_only.swap(true, Ordering::SeqCst);
        if flipped {
            *self
                .read_only_reason
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(reason.to_string());
            self.set_cause(cause);
            self.metrics.database_read_only.set(1);
            let cause = cause.map_or("other", ReadOnlyCause::as_str);
            tracing::error!(target: "televibe.store", critical = true, reason, cause, "Store entered read-only mode: writes disabled");
        }
        flipped
    }

    fn leave_read_only(&self) {
        if self.read_only.swap(false, Ordering::SeqCst) {
            *self
                .read_only_reason
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = None;
            self.set_cause(None);
            self.metrics.database_read_only.set(0);
            tracing::info!(target: "televibe.store", "Store left read-only mode: a write succeeded again");
        }
    }

    /// Runs a write through the gate: refused while read-only; a storage failure flips read-only mode.
    pub async fn write<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(DatabaseConnection) -> Fut,
        Fut: Future<Output = Result<T, DbErr>>,
    {
        if self.is_read_only() {
            return Err(StoreError::ReadOnly {
                reason: self.read_only_reason().unwrap_or_default(),
            });
        }
        match f(self.db.clone()).await {
            Ok(v) => Ok(v),
            Err(e) => match self.storage_failure(&e) {
                Some((reason, cause)) => {
                    if cause == ReadOnlyCause::Integrity {
                        self.enter_corrupt();
                    } else {
                        self.enter_read_only_as(&reason, Some(cause));
                    }
                    Err(StoreError::ReadOnly { reason })
                }
                None => Err(self.db_error(e)),
            },
        }
    }

    /// Read access for queries; reads work in read-only mode too.
    pub fn reader(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Tries one small write past the gate; success leaves read-only mode. A database that failed its
    /// integrity check stays read-only whatever the probe would say: only a restore (and a restart) ends it.
    pub async fn probe_write(&self) -> Result<(), StoreError> {
        if self.corrupt.load(Ordering::SeqCst) {
            return Err(StoreError::ReadOnly {
                reason: CORRUPT.to_string(),
            });
        }
        let now = chrono::Utc::now().to_rfc3339();
        let stmt = statement(
            self.backend(),
            "INSERT INTO kv(key, value, updated_at) VALUES ('store.probe', ?, ?) \
             ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            [now.clone().into(), now.into()],
        );
        match self.db.execute_raw(stmt).await {
            Ok(_) => {
                self.leave_read_only();
                Ok(())
            }
            Err(e) => {
                if let Some((reason, cause)) = self.storage_failure(&e) {
                    self.enter_read_only_as(&reason, Some(cause));
                }
                Err(self.db_error(e))
            }
        }
    }

    /// Names of the tables, for checks that the schema came from the migrations.
    pub async fn table_names(&self) -> Result<Vec<String>, StoreError> {
        Ok(match self.engine() {
            Engine::Sqlite => sqlite::table_names(&self.db).await?,
            Engine::Postgres => postgres::table_names(&self.db).await?,
        })
    }

    /// Runs one statement on one pooled connection (test drills: `PRAGMA query_only = 1`).
    pub async fn execute_unchecked(&self, sql: &str) -> Result<(), StoreError> {
        self.db.execute_unprepared(sql).await?;
        Ok(())
    }

    pub async fn close(self) {
        let _ = self.db.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlite::BACKEND;

    async fn open(dir: &Path, conns: u32) -> Result<Store, StoreError> {
        Store::open(
            &dir.join("state.db"),
            StoreOptions {
                max_connections: conns,
                ..Default::default()
            },
            Arc::new(Metrics::new()),
        )
        .await
    }

    #[tokio::test]
    async fn migrations_create_the_full_schema_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 2).await.unwrap();
        let tables = store.table_names().await.unwrap();
        for t in [
            "approvals",
            "audit",
            "events",
            "jobs",
            "kv",
            "projects",
            "sessions",
        ] {
            assert!(tables.contains(&t.to_string()), "{tables:?}");
        }
        let row = store
            .reader()
            .query_one_raw(Statement::from_string(BACKEND, "PRAGMA journal_mode"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.try_get_by_index::<String>(0).unwrap(), "wal");
        let fk = store
            .reader()
            .query_one_raw(Statement::from_string(BACKEND, "PRAGMA foreign_keys"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(fk.try_get_by_index::<i32>(0).unwrap(), 1);
        store.close().await;
        // Opening again applies nothing new and keeps data.
        let store = open(dir.path(), 1).await.unwrap();
        store.kv_set("a", "1").await.unwrap();
        assert_eq!(store.kv_get("a").await.unwrap().as_deref(), Some("1"));
    }

    #[tokio::test]
    async fn the_session_counter_only_moves_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 1).await.unwrap();
        assert_eq!(store.next_session_seq().await.unwrap(), 1);
        store.raise_session_counter(7).await.unwrap();
        assert_eq!(store.next_session_seq().await.unwrap(), 8);
        // A lower number (fewer sessions found than once existed) never lowers it.
        store.raise_session_counter(3).await.unwrap();
        assert_eq!(store.next_session_seq().await.unwrap(), 8);
    }

    #[tokio::test]
    async fn garbage_file_is_refused_with_restore_advice() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("state.db"), vec![0x5a; 8192]).unwrap();
        let err = open(dir.path(), 1).await.err().expect("must refuse");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("backups"), "{err}");
    }

    #[tokio::test]
    async fn failed_write_flips_read_only_and_a_good_probe_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 1).await.unwrap();
        store.kv_set("k", "before").await.unwrap();
        // The single pooled connection now refuses writes the way a read-only file does.
        store
            .execute_unchecked("PRAGMA query_only = 1")
            .await
            .unwrap();
        let err = store.kv_set("k", "after").await.unwrap_err();
        assert!(matches!(err, StoreError::ReadOnly { .. }), "{err}");
        assert!(store.is_read_only());
        assert_eq!(store.read_only_cause(), Some(ReadOnlyCause::ReadOnlyFile));
        let text = store.metrics.encode();
        assert!(
            text.contains("televibe_database_read_only_reason{reason=\"read_only_file\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("televibe_health_check{check=\"database\"} 1"),
            "{text}"
        );
        // Reads keep working, and later writes are refused at the gate.
        assert_eq!(store.kv_get("k").await.unwrap().as_deref(), Some("before"));
        assert!(matches!(
            store.kv_set("x", "y").await,
            Err(StoreError::ReadOnly { .. })
        ));
        assert!(store.probe_write().await.is_err());
        store
            .execute_unchecked("PRAGMA query_only = 0")
            .await
            .unwrap();
        store.probe_write().await.unwrap();
        assert!(!store.is_read_only());
        assert_eq!(store.read_only_cause(), None);
        assert!(
            store
                .metrics
                .encode()
                .contains("televibe_database_read_only_reason{reason=\"read_only_file\"} 0")
        );
        store.kv_set("k", "after").await.unwrap();
    }

    #[tokio::test]
    async fn a_corrupt_store_stays_read_only_even_when_a_full_disk_came_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 1).await.unwrap();
        // Read-only for a full disk first, then the integrity check fails.
        assert!(store.enter_read_only("database or disk is full"));
        let gauges = |store: &Store| {
            let text = store.metrics.encode();
            let value = |series: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(series))
                    .map(str::trim)
                    .unwrap_or_else(|| panic!("no {series} in {text}"))
                    .to_string()
            };
            (
                value("televibe_health_check{check=\"database\"}"),
                value("televibe_database_read_only_reason{reason=\"disk_full\"}"),
                value("televibe_database_read_only_reason{reason=\"integrity\"}"),
            )
        };
        // A full disk is no integrity failure: the health gauge stays 1 and the cause is disk_full.
        assert_eq!(store.read_only_cause(), Some(ReadOnlyCause::DiskFull));
        assert_eq!(gauges(&store), ("1".into(), "1".into(), "0".into()));
        assert!(store.enter_corrupt());
        assert!(store.is_corrupt());
        assert_eq!(store.read_only_reason().as_deref(), Some(CORRUPT));
        assert_eq!(store.read_only_cause(), Some(ReadOnlyCause::Integrity));
        assert_eq!(gauges(&store), ("0".into(), "0".into(), "1".into()));
        // The file takes writes again, yet the probe does not lift read-only mode.
        assert!(store.probe_write().await.is_err());
        assert!(store.is_read_only());
        assert!(matches!(
            store.kv_set("x", "y").await,
            Err(StoreError::ReadOnly { .. })
        ));
    }

    #[tokio::test]
    async fn retention_prunes_old_delivered_history_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 2).await.unwrap();
        let now = chrono::Utc::now();
        let old = now - chrono::Duration::days(100);
        let exec = |sql: &str, values: Vec<sea_orm::Value>| {
            let stmt = Statement::from_sql_and_values(BACKEND, sql, values);
            let db = store.reader().clone();
            async move { db.execute_raw(stmt).await.unwrap() }
        };
        exec(
            "INSERT INTO projects (id, name, repo_path, default_branch, created_at) VALUES ('p','p','/r','main',?)",
            vec![now.into()],
        )
        .await;
        exec(
            "INSERT INTO sessions (id, project_id, branch, base_branch, worktree_path, state, created_at, last_activity_at) \
             VALUES ('S1','p','b','main','/w','idle',?,?)",
            vec![now.into(), now.into()],
        )
        .await;
        // (job, status, finished, its event delivered?)
        let jobs = [
            ("old-done", "done", Some(old), true),
            ("old-failed", "failed", Some(old), true),
            ("old-undelivered", "done", Some(old), false),
            ("new-done", "done", Some(now), true),
            ("queued", "queued", None, false),
        ];
        for (seq, (id, status, finished, delivered)) in jobs.iter().enumerate() {
            exec(
                "INSERT INTO jobs (id, seq, session_id, instruction, status, queued_at, finished_at) VALUES (?,?,'S1','x',?,?,?)",
                vec![(*id).into(), (seq as i64 + 1).into(), (*status).into(), old.into(), (*finished).into()],
            )
            .await;
            exec(
                "INSERT INTO events (event_type, session_id, job_id, payload, created_at, delivered_at) VALUES ('job.completed','S1',?,'{}',?,?)",
                vec![(*id).into(), old.into(), delivered.then_some(old).into()],
            )
            .await;
        }
        exec(
            "INSERT INTO approvals (id, job_id, session_id, tool_name, tool_input, scope, state, requested_at, expires_at) \
             VALUES ('a1','old-done','S1','Bash','{}','shell','denied',?,?)",
            vec![old.into(), old.into()],
        )
        .await;
        // A notice without a job, delivered long ago, and one delivered just now.
        for at in [old, now] {
            exec(
                "INSERT INTO events (event_type, payload, created_at, delivered_at) VALUES ('breaker.opened','{}',?,?)",
                vec![at.into(), at.into()],
            )
            .await;
        }
        for (id, _, _, _) in &jobs {
            store
                .kv_set(&format!("telegram.tracker.{id}"), "1:2")
                .await
                .unwrap();
        }
        store.kv_set("telegram.offset", "7").await.unwrap();
        let cutoff = now - chrono::Duration::days(90);
        assert_eq!(store.prune_finished_jobs(cutoff).await.unwrap(), 2);
        // The pruned jobs' tracker rows went with them; the others' and other keys stay.
        assert_eq!(store.kv_count("telegram.tracker.").await.unwrap(), 3);
        assert!(
            store
                .kv_get("telegram.tracker.old-done")
                .await
                .unwrap()
                .is_none()
        );
        assert!(store.kv_get("telegram.offset").await.unwrap().is_some());
        let left: Vec<String> = store
            .jobs(None, None, 50)
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(left, ["queued", "new-done", "old-undelivered"]);
        // The jobs' approvals and events went with them (foreign keys would refuse otherwise).
        assert_eq!(
            store
                .prune_delivered_events(now - chrono::Duration::days(7))
                .await
                .unwrap(),
            2
        );
        let count = |sql: &'static str| {
            let db = store.reader().clone();
            async move {
                db.query_one_raw(Statement::from_string(BACKEND, sql))
                    .await
                    .unwrap()
                    .unwrap()
                    .try_get_by_index::<i64>(0)
                    .unwrap()
            }
        };
        assert_eq!(count("SELECT COUNT(*) FROM approvals").await, 0);
        // Left: the undelivered job's row, the queued job's, and the notice delivered just now.
        assert_eq!(count("SELECT COUNT(*) FROM events").await, 3);
        assert_eq!(
            count("SELECT COUNT(*) FROM events WHERE delivered_at IS NULL").await,
            2
        );
        assert_eq!(
            store.prune_finished_jobs(cutoff).await.unwrap(),
            0,
            "nothing left to prune"
        );
    }
}
