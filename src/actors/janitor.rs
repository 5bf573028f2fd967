//! The `janitor` actor: deletes rotated daemon logs, job logs, audit records, delivered outbox rows, finished
//! jobs and backups past their retention, and
//! measures workspace disk usage (`televibe_workspace_disk_bytes`) off the request path.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::core::Core;
use crate::supervisor::ChildMessage;

pub struct Janitor {
    pub core: Arc<Core>,
}

pub enum JanitorMsg {
    Sweep,
    MeasureWorkspaces,
    /// Gives idle memory back (see `memtrim`).
    Trim,
    /// Runs the readiness checks so `televibe_health_check` is current without anyone probing.
    Health,
    Panic,
}

impl ChildMessage for JanitorMsg {
    fn injected_panic() -> Self {
        JanitorMsg::Panic
    }
}

const DAY: u64 = 86_400;
/// How often idle memory is given back: code that ran since comes back in on its next use (a few hundred
/// minor faults for the idle loop, well under a millisecond).
const TRIM_EVERY: Duration = Duration::from_secs(15);
/// How often the health gauges are refreshed (the readiness probe refreshes them too).
const HEALTH_EVERY: Duration = Duration::from_secs(15);

impl Actor for Janitor {
    type Msg = JanitorMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<JanitorMsg>,
        _: (),
    ) -> Result<(), ActorProcessingErr> {
        // Soon after a start (a restart is when old files are most likely), then hourly.
        myself.send_after(Duration::from_secs(5), || JanitorMsg::Sweep);
        myself.send_interval(Duration::from_secs(3600), || JanitorMsg::Sweep);
        myself.send_after(Duration::from_secs(5), || JanitorMsg::MeasureWorkspaces);
        let every = self.core.config().sessions.disk_usage_interval;
        myself.send_interval(every, || JanitorMsg::MeasureWorkspaces);
        myself.send_after(Duration::from_secs(5), || JanitorMsg::Trim);
        myself.send_interval(TRIM_EVERY, || JanitorMsg::Trim);
        myself.send_after(Duration::from_secs(1), || JanitorMsg::Health);
        myself.send_interval(HEALTH_EVERY, || JanitorMsg::Health);
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<JanitorMsg>,
        msg: JanitorMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            JanitorMsg::Sweep => {
                let core = self.core.clone();
                // Directory walks block; keep them off the runtime's worker threads.
                let removed = tokio::task::spawn_blocking(move || sweep(&core))
                    .await
                    .unwrap_or(0);
                if removed > 0 {
                    tracing::info!(target: "televibe.janitor", removed, "Removed files past retention");
                }
                self.prune_audit().await;
                self.prune_history().await;
            }
            JanitorMsg::MeasureWorkspaces => self.core.sessions().measure_workspaces().await,
            JanitorMsg::Trim => {
                let offered = tokio::task::spawn_blocking(crate::memtrim::trim)
                    .await
                    .unwrap_or(0);
                tracing::debug!(target: "televibe.janitor", code_bytes = offered, "Idle memory given back");
            }
            JanitorMsg::Health => {
                // A slow check (Telegram's getMe) must not hold the janitor's other work.
                let core = self.core.clone();
                tokio::spawn(async move {
                    core.health().await;
                });
            }
            JanitorMsg::Panic => panic!("injected panic in janitor"),
        }
        Ok(())
    }
}

impl Janitor {
    /// Delivered outbox rows past `store.events_retention_days` and finished jobs past
    /// `store.jobs_retention_days` (with their approvals and events).
    async fn prune_history(&self) {
        let st = &self.core.config().store;
        let days = |d: u32| chrono::Utc::now() - chrono::Duration::days(i64::from(d));
        let events = self
            .core
            .store()
            .prune_delivered_events(days(st.events_retention_days))
            .await;
        let jobs = self
            .core
            .store()
            .prune_finished_jobs(days(st.jobs_retention_days))
            .await;
        match (events, jobs) {
            (Ok(events), Ok(jobs)) => {
                if events > 0 || jobs > 0 {
                    tracing::info!(target: "televibe.janitor", events, jobs, "Removed history past retention");
                }
            }
            (events, jobs) => {
                tracing::warn!(target: "televibe.janitor", events = ?events.map_err(|e| e.to_string()), jobs = ?jobs.map_err(|e| e.to_string()), "history retention pass failed");
            }
        }
    }

    /// Audit records past `logging.audit_retention_days`, in audit.log and in the table.
    async fn prune_audit(&self) {
        let days = i64::from(self.core.config().logging.audit_retention_days);
        let cutoff = chrono::Utc::now() - chrono::Duration::days(days);
        let core = self.core.clone();
        let from_file = tokio::task::spawn_blocking(move || core.audit().prune(cutoff)).await;
        let from_table = self.core.store().delete_audit_before(cutoff).await;
        match (from_file, from_table) {
            (Ok(Ok(lines)), Ok(rows)) => {
                if lines > 0 || rows > 0 {
                    tracing::info!(target: "televibe.janitor", lines, rows, "Removed audit records past retention");
                }
            }
            (file, table) => {
                tracing::warn!(target: "televibe.janitor", file = ?file.map(|r| r.map_err(|e| e.to_string())), table = ?table.map_err(|e| e.to_string()), "audit retention pass failed");
            }
        }
    }
}

/// One pass over the retention rules; returns how many files went.
pub fn sweep(core: &Core) -> usize {
    let l = &core.config().logging;
    let layout = &core.layout();
    let mut removed = 0;
    // Rotated daemon logs only (`orchestrator.log.<date>`); the live file is never touched.
    removed += remove_older(
        &layout.logs(),
        |n| n.starts_with("orchestrator.log."),
        l.retention_days,
    );
    removed += remove_older(
        &layout.job_logs(),
        |n| n.ends_with(".log"),
        l.job_log_retention_days,
    );
    removed += sweep_backups(&layout.backups(), core.config().backup.retention_days);
    removed += sweep_restores(&layout.orchestrator());
    removed
}

/// Backups past retention, and temporary files a crashed backup run left behind (a day old: no run takes
/// that long). This is the only place backups are deleted. The newest `KEEP_NEWEST` backups stay
/// whatever their age: when runs have failed for longer than the retention, the last good copies are
/// all there is.
pub fn sweep_backups(dir: &Path, retention_days: u32) -> usize {
    let mut named: Vec<(chrono::DateTime<chrono::Utc>, String)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            crate::backup::parse_name(&name).map(|t| (t, name))
        })
        .collect();
    named.sort();
    let keep: Vec<String> = named
        .iter()
        .rev()
        .take(KEEP_NEWEST)
        .map(|(_, n)| n.clone())
        .collect();
    remove_older(
        dir,
        |n| crate::backup::parse_name(n).is_some() && !keep.iter().any(|k| k == n),
        retention_days,
    ) + remove_older(dir, |n| n.starts_with(".tmp-"), 1)
}

/// Backups kept past their retention because they are the newest.
pub const KEEP_NEWEST: usize = 3;

/// Decompressed copies a restore killed halfway left beside `state.db`.
pub fn sweep_restores(orchestrator: &Path) -> usize {
    remove_older(orchestrator, |n| n.starts_with(".restore-"), 1)
}

fn remove_older(dir: &Path, wanted: impl Fn(&str) -> bool, days: u32) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let limit = Duration::from_secs(u64::from(days) * DAY);
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !wanted(&name) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > limit);
        if old && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file names in `dir`, sorted.
    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        names
    }

    fn age(path: &Path, days: u64) {
        let t = SystemTime::now() - Duration::from_secs(days * DAY + 60);
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    #[test]
    fn retention_deletes_old_backups_and_stale_temporary_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let names = [
            "state-2025-01-01T00-00-00.db.gz",
            "state-2025-06-01T00-00-00.db.gz",
            ".tmp-old.db.gz",
            ".tmp-running.db",
            "state.db.corrupted",
            "state-2025-06-02T00-00-00.db.gz",
            "state-2025-06-03T00-00-00.db.gz",
        ];
        for n in names {
            std::fs::write(d.join(n), b"x").unwrap();
        }
        age(&d.join(names[0]), 31);
        age(&d.join(names[1]), 29);
        age(&d.join(names[2]), 2);
        age(&d.join(names[4]), 400);
        assert_eq!(sweep_backups(d, 30), 2);
        let left = names_in(d);
        // The backup inside retention, a run in progress and anything that is not a backup stay.
        assert_eq!(
            left,
            [
                ".tmp-running.db",
                "state-2025-06-01T00-00-00.db.gz",
                "state-2025-06-02T00-00-00.db.gz",
                "state-2025-06-03T00-00-00.db.gz",
                "state.db.corrupted"
            ]
        );
    }

    #[test]
    fn the_newest_backups_stay_whatever_their_age() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for day in 1..=5 {
            let n = format!("state-2025-01-0{day}T00-00-00.db.gz");
            std::fs::write(d.join(&n), b"x").unwrap();
            age(&d.join(&n), 400);
        }
        assert_eq!(sweep_backups(d, 30), 2);
        let left = names_in(d);
        assert_eq!(
            left,
            [
                "state-2025-01-03T00-00-00.db.gz",
                "state-2025-01-04T00-00-00.db.gz",
                "state-2025-01-05T00-00-00.db.gz"
            ]
        );
    }
}
