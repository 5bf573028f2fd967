//! Opening the store: SQLite's file (created when missing, checked, then migrated) or a PostgreSQL
//! database (connected, migrated, then checked), and read-only opens for the offline tools.

use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use migrations::{Migrator, MigratorTrait};
use sea_orm::{DatabaseConnection, DbErr};

use super::{Store, StoreError, StoreLocation, StoreOptions, postgres, sqlite};
use crate::telemetry::Metrics;

impl Store {
    /// Opens (creating if missing) the SQLite database at `path`, checks its integrity and applies pending
    /// migrations.
    pub async fn open(
        path: &Path,
        opts: StoreOptions,
        metrics: Arc<Metrics>,
    ) -> Result<Store, StoreError> {
        Store::open_at(&StoreLocation::Sqlite(path.to_path_buf()), opts, metrics).await
    }

    /// Opens the store at `location`: SQLite as [`Store::open`]; PostgreSQL: connects, applies pending
    /// migrations, then checks every table.
    pub async fn open_at(
        location: &StoreLocation,
        opts: StoreOptions,
        metrics: Arc<Metrics>,
    ) -> Result<Store, StoreError> {
        match location {
            StoreLocation::Sqlite(path) => Store::open_sqlite(path, opts, metrics).await,
            StoreLocation::Postgres { url, password } => {
                let open_error = |e: DbErr| StoreError::Open {
                    path: url.clone(),
                    detail: location.scrub(postgres::cause::describe(&e)),
                };
                let mut db = postgres::connect(url, password.as_deref(), opts.max_connections)
                    .await
                    .map_err(open_error)?;
                let statements = metrics.db_statements_total.clone();
                db.set_metric_callback(move |_| {
                    statements.inc();
                });
                let store = Store::new(db, location.clone(), false, metrics);
                Migrator::up(&store.db, None)
                    .await
                    .map_err(|e| StoreError::Open {
                        path: url.clone(),
                        detail: location.scrub(format!(
                            "migrations failed: {}",
                            postgres::cause::describe(&e)
                        )),
                    })?;
                store.quick_check().await?;
                store.metrics.set_health("database", true);
                Ok(store)
            }
        }
    }

    fn new(
        db: DatabaseConnection,
        location: StoreLocation,
        read_only: bool,
        metrics: Arc<Metrics>,
    ) -> Store {
        Store {
            db,
            location,
            read_only: Arc::new(AtomicBool::new(read_only)),
            read_only_reason: Arc::new(Mutex::new(read_only.then(|| "opened read-only".into()))),
            read_only_cause: Arc::new(Mutex::new(None)),
            corrupt: Arc::new(AtomicBool::new(false)),
            metrics,
        }
    }

    async fn open_sqlite(
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
                if sqlite::cause::looks_corrupt(&detail) {
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
        let store = Store::new(
            db,
            StoreLocation::Sqlite(path.to_path_buf()),
            false,
            metrics,
        );
        match store.quick_check().await {
            Ok(()) => {}
            Err(StoreError::Db(e)) => return Err(corrupt(e.to_string())),
            Err(e) => return Err(e),
        }
        Migrator::up(&store.db, None).await.map_err(|e| {
            let detail = e.to_string();
            if sqlite::cause::looks_corrupt(&detail) {
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

    /// Opens an existing SQLite database read-only, without migrations (offline tools such as `doctor`).
    pub async fn open_read_only(path: &Path, metrics: Arc<Metrics>) -> Result<Store, StoreError> {
        Store::open_read_only_at(&StoreLocation::Sqlite(path.to_path_buf()), metrics).await
    }

    /// Opens the store at `location` read-only, without migrations: SQLite's file read-only; on PostgreSQL
    /// one connection whose transactions are read-only.
    pub async fn open_read_only_at(
        location: &StoreLocation,
        metrics: Arc<Metrics>,
    ) -> Result<Store, StoreError> {
        let shown = location.shown();
        let db = match location {
            StoreLocation::Sqlite(path) => {
                if !path.is_file() {
                    return Err(StoreError::Open {
                        path: shown,
                        detail: "no such file".into(),
                    });
                }
                sqlite::connect_read_only(path)
                    .await
                    .map_err(|e| StoreError::Open {
                        path: shown,
                        detail: e.to_string(),
                    })?
            }
            StoreLocation::Postgres { url, password } => {
                postgres::connect_read_only(url, password.as_deref())
                    .await
                    .map_err(|e| StoreError::Open {
                        path: shown,
                        detail: location.scrub(postgres::cause::describe(&e)),
                    })?
            }
        };
        Ok(Store::new(db, location.clone(), true, metrics))
    }
}
