//! The store: the one interface the services speak to (typed reads and writes of every record), integrity
//! check at open, migrations, and the write gate. The engine (SQLite today) sits behind it in `sqlite/`.
//!
//! Only this module imports sea-orm. A write that fails because of the disk or the file (full, I/O error,
//! read-only file, corruption) flips the store into read-only mode: reads keep working, writes answer
//! `READ_ONLY` until a probe write succeeds again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use migrations::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, Statement};

use crate::telemetry::Metrics;

mod approvals;
mod entities;
mod jobs;
pub use jobs::Requeue;
mod nodes;
mod projects;
mod records;
pub use nodes::{CallRow, Dial, LeaderLock, Listener, NodeRow};
mod postgres;
mod schedules;
mod sqlite;

pub use crate::domain::READ_ONLY_MESSAGE;
pub use schedules::{NewSchedule, ScheduleRun, ScheduleRunOutcome};
use sqlite::BACKEND;
pub use sqlite::cause::ReadOnlyCause;
use sqlite::cause::looks_corrupt;
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
    #[error("cannot open state database {path}: {detail}")]
    Open { path: String, detail: String },
    #[error("database error: {0}")]
    Db(#[from] DbErr),
}

/// Whether a database error means the file or disk can no longer take writes.
fn is_storage_failure(err: &DbErr) -> bool {
    ReadOnlyCause::of_error(&err.to_string()).is_some()
}

/// The read-only reason of a database that failed its integrity check.
pub const CORRUPT: &str = "integrity check failed";

/// A handle on the state database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    path: PathBuf,
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
    /// Opens (creating if missing) the database, checks its integrity and applies pending migrations.
    pub async fn open(
        path: &Path,
        opts: StoreOptions,
        metrics: Arc<Metrics>,
    ) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        let backups = path
            .parent()
            .map(|p| p.join("backups").display().to_string())
            .unwrap_or_default();
        let corrupt = |detail: String| StoreError::Corrupt {
            path: shown.clone(),
            backups: backups.clone(),
            detail,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Open {
                path: shown.clone(),
                detail: e.to_string(),
            })?;
        }
        let mut db = sqlite::connect(path, opts.max_connections, opts.busy_timeout)
            .await
            .map_err(|e| {
                let detail = e.to_string();
                if looks_corrupt(&detail) {
                    corrupt(detail)
                } else {
                    StoreError::Open {
                        path: shown.clone(),
                        detail,
                    }
                }
            })?;
        let statements = metrics.db_statements_total.clone();
        db.set_metric_callback(move |_| {
            statements.inc();
        });
        let store = Store {
            db,
            path: path.to_path_buf(),
            read_only: Arc::new(AtomicBool::new(false)),
            read_only_reason: Arc::new(Mutex::new(None)),
            read_only_cause: Arc::new(Mutex::new(None)),
            corrupt: Arc::new(AtomicBool::new(false)),
            metrics,
        };
        match store.quick_check().await {
            Ok(()) => {}
            Err(StoreError::Db(e)) => return Err(corrupt(e.to_string())),
            Err(e) => return Err(e),
        }
        Migrator::up(&store.db, None).await.map_err(|e| {
            let detail = e.to_string();
            if looks_corrupt(&detail) {
                corrupt(detail)
            } else {
                StoreError::Open {
                    path: shown.clone(),
                    detail: format!("migrations failed: {detail}"),
                }
            }
        })?;
        store.metrics.set_health("database", true);
        Ok(store)
    }

    /// Opens an existing database read-only, without migrations (offline tools such as `doctor`).
    pub async fn open_read_only(path: &Path, metrics: Arc<Metrics>) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        if !path.is_file() {
            return Err(StoreError::Open {
                path: shown,
                detail: "no such file".into(),
            });
        }
        let db = sqlite::connect_read_only(path)
            .await
            .map_err(|e| StoreError::Open {
                path: shown,
                detail: e.to_string(),
            })?;
        Ok(Store {
            db,
            path: path.to_path_buf(),
            read_only: Arc::new(AtomicBool::new(true)),
            read_only_reason: Arc::new(Mutex::new(Some("opened read-only".into()))),
            read_only_cause: Arc::new(Mutex::new(None)),
            corrupt: Arc::new(AtomicBool::new(false)),
            metrics,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the store is PostgreSQL (several nodes may share it).
    pub fn is_postgres(&self) -> bool {
        self.db.get_database_backend() == sea_orm::DbBackend::Postgres
    }

    /// The PostgreSQL URL and password, for connections of the cluster's own.
    pub(crate) fn postgres_url(&self) -> Option<(String, Option<String>)> {
        None
    }

    /// The engine's full integrity check; any finding is corruption.
    pub async fn integrity_check(&self) -> Result<(), StoreError> {
        self.check(sqlite::Check::Full).await
    }

    /// The engine's quick check: every page, b-tree and record is read and checked as the full check
    /// does, only the cross-check of index entries against their tables is left out, which makes it about
    /// three times faster on a large database. The daemon runs it at boot (the full check follows in the
    /// background, see `actors::store`).
    pub async fn quick_check(&self) -> Result<(), StoreError> {
        self.check(sqlite::Check::Quick).await
    }

    async fn check(&self, how: sqlite::Check) -> Result<(), StoreError> {
        let lines = sqlite::check(&self.db, how).await?;
        if lines.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Corrupt {
                path: self.path.display().to_string(),
                backups: self
                    .path
                    .parent()
                    .map(|p| p.join("backups").display().to_string())
                    .unwrap_or_default(),
                detail: lines.join("; "),
            })
        }
    }

    /// The readiness query of the spec: `SELECT 1`. An answer saying the file is damaged counts as a failed
    /// integrity check.
    pub async fn ping(&self) -> Result<(), StoreError> {
        if let Err(e) = self
            .db
            .query_one_raw(Statement::from_string(BACKEND, "SELECT 1"))
            .await
        {
            if looks_corrupt(&e.to_string()) {
                self.enter_corrupt();
            }
            return Err(e.into());
        }
        Ok(())
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
        if !self.enter_read_only(CORRUPT) {
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
    /// cause (`televibe_database_read_only_reason`) is read from `reason`, SQLite's error text.
    pub fn enter_read_only(&self, reason: &str) -> bool {
        let flipped = !self.read_only.swap(true, Ordering::SeqCst);
        if flipped {
            *self
                .read_only_reason
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(reason.to_string());
            let cause = if reason == CORRUPT {
                Some(ReadOnlyCause::Integrity)
            } else {
                ReadOnlyCause::of_error(reason)
            };
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
            Err(e) if is_storage_failure(&e) => {
                let reason = e.to_string();
                if looks_corrupt(&reason) {
                    self.enter_corrupt();
                } else {
                    self.enter_read_only(&reason);
                }
                Err(StoreError::ReadOnly { reason })
            }
            Err(e) => Err(StoreError::Db(e)),
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
        let stmt = Statement::from_sql_and_values(
            BACKEND,
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
                if is_storage_failure(&e) {
                    self.enter_read_only(&e.to_string());
                }
                Err(StoreError::Db(e))
            }
        }
    }

    /// Reads a value of the key-value table.
    pub async fn kv_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        let row = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                BACKEND,
                "SELECT value FROM kv WHERE key = ?",
                [key.into()],
            ))
            .await?;
        Ok(row.and_then(|r| r.try_get_by_index::<String>(0).ok()))
    }

    /// Writes a value of the key-value table through the gate.
    pub async fn kv_set(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let (key, value) = (key.to_string(), value.to_string());
        self.write(|db| async move {
            db.execute_raw(Statement::from_sql_and_values(
                BACKEND,
                "INSERT INTO kv(key, value, updated_at) VALUES (?, ?, ?) \
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                [key.into(), value.into(), chrono::Utc::now().to_rfc3339().into()],
            ))
            .await
            .map(|_| ())
        })
        .await
    }

    /// Deletes a value of the key-value table (absent already: nothing to do).
    pub async fn kv_delete(&self, key: &str) -> Result<(), StoreError> {
        let key = key.to_string();
        self.write(|db| async move {
            db.execute_raw(Statement::from_sql_and_values(
                BACKEND,
                "DELETE FROM kv WHERE key = ?",
                [key.into()],
            ))
            .await
            .map(|_| ())
        })
        .await
    }

    /// Rows of the key-value table whose key starts with `prefix` (tests: bounded growth).
    pub async fn kv_count(&self, prefix: &str) -> Result<i64, StoreError> {
        let row = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                BACKEND,
                "SELECT COUNT(*) FROM kv WHERE substr(key, 1, length(?)) = ?",
                [prefix.into(), prefix.into()],
            ))
            .await?;
        Ok(row
            .and_then(|r| r.try_get_by_index::<i64>(0).ok())
            .unwrap_or(0))
    }

    /// Names of the tables, for checks that the schema came from the migrations.
    pub async fn table_names(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlite::table_names(&self.db).await?)
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
