//! The state database as a file: replacing it with no moment without a usable `state.db` (restore and
//! reconstruct stage the new file beside it, check and fsync it, then rename it over), keeping the previous
//! file aside, carrying delivery marks from the previous file into a restored one, and telling a first start
//! from a root whose database went missing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DbBackend, Statement};

use crate::layout::Layout;
use crate::store::Store;
use crate::telemetry::Metrics;

/// The SQLite companions of a database file, in the order they may be removed without losing a commit:
/// the shared-memory index and a rollback journal first, the write-ahead log (which may hold commits) last.
const SIDES: [&str; 3] = ["-shm", "-journal", "-wal"];

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The first of `state.db.corrupted`, `state.db.corrupted.1`, `.2`, … that exists neither itself nor with a
/// companion: an earlier copy is evidence and is never overwritten.
pub fn aside_name(db: &Path) -> PathBuf {
    let taken = |p: &Path| {
        ["", "-wal", "-shm", "-journal"]
            .iter()
            .any(|s| with_suffix(p, s).exists())
    };
    let base = with_suffix(db, ".corrupted");
    if !taken(&base) {
        return base;
    }
    (1..)
        .map(|n| with_suffix(&base, &format!(".{n}")))
        .find(|p| !taken(p))
        .expect("some suffix is free")
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("fsync {}: {e}", dir.display()))
}

/// What folding a database's write-ahead log into it came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Checkpoint {
    /// Every frame of the log is in the file: a reader of the file alone misses nothing.
    Done,
    /// The file does not open as a database (damaged): its log is kept aside with it, as it is.
    Unreadable(String),
    /// The file opens but its log could not be folded in (another connection holds it): replacing the
    /// file now would lose commits.
    Busy(String),
}

/// Folds the write-ahead log of the database at `db` into the file itself (`wal_checkpoint(TRUNCATE)`,
/// which must report no busy reader and every frame checkpointed).
pub async fn checkpoint(db: &Path) -> Checkpoint {
    let mut co = ConnectOptions::new(format!("sqlite://{}?mode=rw", db.display()));
    co.max_connections(1)
        .min_connections(1)
        .sqlx_logging(false)
        .connect_timeout(Duration::from_secs(10));
    let conn = match Database::connect(co).await {
        Ok(c) => c,
        Err(e) => return Checkpoint::Unreadable(e.to_string()),
    };
    let row = conn
        .query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            "PRAGMA wal_checkpoint(TRUNCATE)",
        ))
        .await;
    let _ = conn.close().await;
    let row = match row {
        Ok(Some(r)) => r,
        Ok(None) => return Checkpoint::Done,
        Err(e) if e.to_string().contains("locked") || e.to_string().contains("busy") => {
            return Checkpoint::Busy(e.to_string());
        }
        Err(e) => return Checkpoint::Unreadable(e.to_string()),
    };
    let get = |i: usize| row.try_get_by_index::<i64>(i).unwrap_or(-1);
    let (busy, log, done) = (get(0), get(1), get(2));
    // `log` is -1 when the file is not in WAL mode: nothing to fold.
    if busy == 0 && (log == -1 || log == done) {
        Checkpoint::Done
    } else {
        Checkpoint::Busy(format!(
            "checkpoint incomplete (busy {busy}, {done} of {log} frames): another program has it open"
        ))
    }
}

/// Puts `staged` (a checked database file in the same directory tree and file system as `db`) in place of
/// `db`. At every moment `db` is a usable database: first the old file's log is folded into it, then the
/// old file and its companions get a second name (hard links, `state.db.corrupted…`), then the companions
/// are removed (the log last), then `staged` is fsynced and renamed over `db`, and the directory fsynced.
/// A crash before the rename leaves the old database in place; after it, the new one. Returns the name
/// the old file is kept under, if there was one. `at` is called at each step with its name (failure drills
/// stop there).
pub async fn install(
    staged: &Path,
    db: &Path,
    at: &dyn Fn(&str),
) -> Result<Option<PathBuf>, String> {
    let dir = db
        .parent()
        .ok_or_else(|| format!("{} has no directory", db.display()))?
        .to_path_buf();
    std::fs::File::open(staged)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("fsync {}: {e}", staged.display()))?;
    let had_db = db.exists();
    if had_db {
        if let Checkpoint::Busy(why) = checkpoint(db).await {
            return Err(format!(
                "{} is in use ({why}); close whatever has it open and run this again (nothing was changed)",
                db.display()
            ));
        }
        at("checkpointed");
    }
    let sides: Vec<&str> = SIDES
        .iter()
        .copied()
        .filter(|s| with_suffix(db, s).exists())
        .collect();
    let mut kept = None;
    if had_db || !sides.is_empty() {
        let aside = aside_name(db);
        for suffix in std::iter::once("").chain(sides.iter().copied()) {
            let from = with_suffix(db, suffix);
            if from.exists() {
                std::fs::hard_link(&from, with_suffix(&aside, suffix))
                    .map_err(|e| format!("cannot keep {} aside: {e}", from.display()))?;
            }
        }
        sync_dir(&dir)?;
        at("kept_aside");
        // SQLite would replay a log left beside the new file onto it: the companions go before the rename.
        for suffix in &sides {
            let side = with_suffix(db, suffix);
            std::fs::remove_file(&side)
                .map_err(|e| format!("cannot remove {}: {e}", side.display()))?;
            at(&format!("removed{suffix}"));
        }
        kept = Some(aside);
    }
    std::fs::rename(staged, db).map_err(|e| format!("cannot install {}: {e}", db.display()))?;
    at("renamed");
    sync_dir(&dir)?;
    Ok(kept)
}

/// Marks as delivered the outbox rows of the restored file `staged` that the previous database `old`
/// shows delivered after the backup was taken, so a restore sends no result twice. A row counts when `old`
/// has the same row (id, type, time) delivered, or no longer has it although it handed out that id and
/// shares the backup's history (undelivered rows are never pruned, so a missing one was delivered).
/// Returns how many rows were marked; `old` is only read.
pub async fn carry_delivered(staged: &Path, old: &Path) -> Result<u64, String> {
    // `old` must be readable as a database at all; a damaged one carries nothing.
    let probe = Store::open_read_only(old, Arc::new(Metrics::new()))
        .await
        .map_err(|e| e.to_string())?;
    let ok = probe.integrity_check().await;
    probe.close().await;
    ok.map_err(|e| e.to_string())?;
    let mut co = ConnectOptions::new(format!("sqlite://{}?mode=rw", staged.display()));
    co.max_connections(1).min_connections(1).sqlx_logging(false);
    let conn = Database::connect(co).await.map_err(|e| e.to_string())?;
    let uri = format!("file:{}?mode=ro", old.display());
    let result = async {
        conn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "ATTACH DATABASE ? AS old",
            [uri.into()],
        ))
        .await?;
        let marked = conn
            .execute_unprepared(
                "UPDATE events SET delivered_at = COALESCE(
                     (SELECT o.delivered_at FROM old.events o WHERE o.id = events.id),
                     strftime('%Y-%m-%d %H:%M:%f', 'now') || '+00:00')
                 WHERE delivered_at IS NULL AND (
                     EXISTS (SELECT 1 FROM old.events o WHERE o.id = events.id
                             AND o.event_type = events.event_type AND o.created_at = events.created_at
                             AND o.delivered_at IS NOT NULL)
                  OR (NOT EXISTS (SELECT 1 FROM old.events o WHERE o.id = events.id)
                      AND COALESCE((SELECT seq FROM old.sqlite_sequence WHERE name = 'events'),
                                   (SELECT max(id) FROM old.events), 0) >= events.id
                      AND EXISTS (SELECT 1 FROM projects p JOIN old.projects q
                                  ON q.id = p.id AND q.created_at = p.created_at)))",
            )
            .await?
            .rows_affected();
        conn.execute_unprepared("DETACH DATABASE old").await?;
        Ok::<u64, sea_orm::DbErr>(marked)
    }
    .await;
    let _ = conn.close().await;
    let marked = result.map_err(|e| e.to_string())?;
    std::fs::File::open(staged)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("fsync {}: {e}", staged.display()))?;
    Ok(marked)
}

/// Jobs that were running when a backup was taken may have finished after it: in the file about to be
/// restored they are marked (`error_type` `orchestrator_restart` while still running, which every schema
/// has), so boot recovery fails them rather than running them again (`jobs.retry_interrupted`). Answers
/// how many.
pub async fn hold_running_jobs(staged: &Path) -> Result<u64, String> {
    let mut co = ConnectOptions::new(format!("sqlite://{}?mode=rw", staged.display()));
    co.max_connections(1).min_connections(1).sqlx_logging(false);
    let conn = Database::connect(co).await.map_err(|e| e.to_string())?;
    let held = conn
        .execute_unprepared(
            "UPDATE jobs SET error_type = 'orchestrator_restart' \
             WHERE status IN ('running', 'waiting_approval')",
        )
        .await
        .map(|r| r.rows_affected());
    let _ = conn.close().await;
    let held = held.map_err(|e| e.to_string())?;
    std::fs::File::open(staged)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("fsync {}: {e}", staged.display()))?;
    Ok(held)
}

/// What in `layout` shows the root held a database before, when `state.db` is missing: backups, the
/// daemon's log, the job logs or audit log it wrote, sessions' workspaces, a file kept aside. Empty on a
/// first start.
pub fn earlier_state(layout: &Layout) -> Vec<String> {
    let db = layout.state_db();
    if db.exists() {
        return Vec::new();
    }
    let non_empty = |dir: &Path| {
        std::fs::read_dir(dir)
            .map(|mut d| {
                d.any(|e| e.is_ok_and(|e| !e.file_name().to_string_lossy().starts_with('.')))
            })
            .unwrap_or(false)
    };
    let mut found = Vec::new();
    if non_empty(&layout.backups()) {
        found.push(format!("backups in {}", layout.backups().display()));
    }
    if non_empty(&layout.workspaces()) {
        found.push(format!("workspaces in {}", layout.workspaces().display()));
    }
    if non_empty(&layout.job_logs()) {
        found.push(format!("job logs in {}", layout.job_logs().display()));
    }
    if std::fs::metadata(layout.audit_log()).is_ok_and(|m| m.len() > 0) {
        found.push(format!("the audit log {}", layout.audit_log().display()));
    }
    // A start writes its log before it opens the database: a log means a daemon ran here.
    let log = layout.logs().join("orchestrator.log");
    if std::fs::metadata(&log).is_ok_and(|m| m.len() > 0) {
        found.push(format!("the daemon's log {}", log.display()));
    }
    for side in ["-wal", ".corrupted"] {
        let p = with_suffix(&db, side);
        if p.exists() {
            found.push(p.display().to_string());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_earlier_copy_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        assert_eq!(aside_name(&db), dir.path().join("state.db.corrupted"));
        std::fs::write(dir.path().join("state.db.corrupted"), b"x").unwrap();
        assert_eq!(aside_name(&db), dir.path().join("state.db.corrupted.1"));
        std::fs::write(dir.path().join("state.db.corrupted.1-wal"), b"x").unwrap();
        assert_eq!(aside_name(&db), dir.path().join("state.db.corrupted.2"));
    }

    #[tokio::test]
    async fn install_keeps_the_old_file_and_leaves_no_log_behind() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        std::fs::write(&db, b"old").unwrap();
        std::fs::write(with_suffix(&db, "-wal"), b"log").unwrap();
        let staged = dir.path().join("new.db");
        std::fs::write(&staged, b"new").unwrap();
        let kept = install(&staged, &db, &|_| {}).await.unwrap().unwrap();
        assert_eq!(std::fs::read(&db).unwrap(), b"new");
        assert_eq!(std::fs::read(&kept).unwrap(), b"old");
        assert_eq!(std::fs::read(with_suffix(&kept, "-wal")).unwrap(), b"log");
        assert!(!with_suffix(&db, "-wal").exists());
        assert!(!staged.exists());
    }

    #[tokio::test]
    async fn a_restore_does_not_send_again_what_was_delivered_after_the_backup() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("state.db");
        let store = Store::open(&live, Default::default(), Arc::new(Metrics::new()))
            .await
            .unwrap();
        let exec = |sql: &str| {
            let db = store.db.clone();
            let sql = sql.to_string();
            async move { db.execute_unprepared(&sql).await.unwrap() }
        };
        exec("INSERT INTO projects (id, name, repo_path, default_branch, created_at) VALUES ('app','app','/r','main','2026-01-01 00:00:00+00:00')").await;
        for i in 1..=4 {
            exec(&format!("INSERT INTO events (event_type, payload, created_at) VALUES ('job.completed','{{}}','2026-01-01 00:00:0{i}+00:00')")).await;
        }
        exec("UPDATE events SET delivered_at = '2026-01-01 00:00:05+00:00' WHERE id = 1").await;
        let backup = dir.path().join("backup.db");
        store.vacuum_into(&backup).await.unwrap();
        // After the backup: 2 delivered, 3 delivered and pruned, 4 still waiting, 5 new.
        exec("UPDATE events SET delivered_at = '2026-01-02 00:00:00+00:00' WHERE id IN (2, 3)")
            .await;
        exec("DELETE FROM events WHERE id = 3").await;
        exec("INSERT INTO events (event_type, payload, created_at) VALUES ('job.completed','{}','2026-01-03 00:00:00+00:00')").await;
        store.close().await;
        assert_eq!(carry_delivered(&backup, &live).await.unwrap(), 2);
        let restored = Store::open_read_only(&backup, Arc::new(Metrics::new()))
            .await
            .unwrap();
        let waiting = restored
            .db
            .query_all_raw(Statement::from_string(
                DbBackend::Sqlite,
                "SELECT id FROM events WHERE delivered_at IS NULL",
            ))
            .await
            .unwrap();
        let ids: Vec<i64> = waiting
            .iter()
            .map(|r| r.try_get_by_index(0).unwrap())
            .collect();
        assert_eq!(ids, [4]);
        restored.close().await;
        // A previous file that is no database carries nothing and says why.
        std::fs::write(&live, b"not a database").unwrap();
        assert!(carry_delivered(&backup, &live).await.is_err());
    }

    #[test]
    fn a_first_start_shows_no_earlier_state_and_a_lost_database_does() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.create().unwrap();
        assert!(earlier_state(&layout).is_empty());
        std::fs::write(
            layout.backups().join("state-2026-01-01T00-00-00.db.gz"),
            b"x",
        )
        .unwrap();
        assert_eq!(earlier_state(&layout).len(), 1);
        std::fs::write(layout.logs().join("orchestrator.log"), b"{}\n").unwrap();
        assert_eq!(earlier_state(&layout).len(), 2);
        std::fs::write(layout.state_db(), b"").unwrap();
        assert!(earlier_state(&layout).is_empty());
    }
}
