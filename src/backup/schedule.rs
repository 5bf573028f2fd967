//! When backups run and what they are called: the five-field cron schedule (UTC), the spec's file naming,
//! whether a run was missed, and the listing of the backup files in a directory.

use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;

/// `state-2025-12-13T06-00-00.db.gz`: the spec's naming, UTC.
const NAME_FORMAT: &str = "state-%Y-%m-%dT%H-%M-%S.db.gz";

/// The file name of a backup taken at `t`.
pub fn file_name(t: DateTime<Utc>) -> String {
    t.format(NAME_FORMAT).to_string()
}

/// The time a backup file name states, or `None` for any other file.
pub fn parse_name(name: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(name, NAME_FORMAT)
        .ok()
        .map(|t| t.and_utc())
}

/// Why a `backup.schedule` is no schedule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("{expr:?} must have five fields: minute hour day-of-month month day-of-week")]
    Fields { expr: String },
    #[error("{expr:?}: {reason}")]
    Cron { expr: String, reason: String },
}

/// A five-field cron schedule (minute hour day-of-month month day-of-week), evaluated in UTC.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
    expr: String,
}

impl Schedule {
    pub fn parse(expr: &str) -> Result<Schedule, ScheduleError> {
        if expr.split_whitespace().count() != 5 {
            return Err(ScheduleError::Fields {
                expr: expr.to_string(),
            });
        }
        croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Disallowed)
            .build()
            .parse(expr)
            .map(|cron| Schedule {
                cron,
                expr: expr.to_string(),
            })
            .map_err(|e| ScheduleError::Cron {
                expr: expr.to_string(),
                reason: e.to_string(),
            })
    }

    /// The expression as written (`backup.schedule`).
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The first occurrence strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&t, false).ok()
    }

    /// The latest occurrence at or before `t`.
    pub fn previous(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_previous_occurrence(&t, true).ok()
    }
}

/// Whether a run was missed while the daemon was down: there is no backup, or the newest one is older than
/// the latest scheduled time that has already passed.
pub fn missed(schedule: &Schedule, newest: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    match (newest, schedule.previous(now)) {
        (None, _) => true,
        (Some(newest), Some(due)) => newest < due,
        (Some(_), None) => false,
    }
}

/// A backup file in `backups/`.
#[derive(Debug, Clone, Serialize)]
pub struct LocalBackup {
    pub file: String,
    pub path: PathBuf,
    pub time: DateTime<Utc>,
    pub bytes: u64,
}

/// The backups in `dir`, oldest first. Only files with the backup naming count: temporary files of a run
/// in progress (or of one that crashed) are never listed or restored.
pub fn list_local(dir: &Path) -> Vec<LocalBackup> {
    let mut out: Vec<LocalBackup> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().to_string();
            let time = parse_name(&file)?;
            let bytes = e.metadata().ok()?.len();
            Some(LocalBackup {
                path: e.path(),
                file,
                time,
                bytes,
            })
        })
        .collect();
    out.sort_by_key(|b| b.time);
    out
}
