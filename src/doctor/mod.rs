//! `televibe doctor`: checks the installation and the state on disk, with or without a running daemon.
//!
//! It reads the database read-only and never changes anything; each finding says what to do.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::layout::Layout;
use crate::mcp::client::DaemonClient;
use crate::store::Store;
use crate::telemetry::Metrics;

mod checks;

/// The findings, printed as they come (text) or gathered for one JSON document (`--json`).
#[derive(Default)]
pub(crate) struct Report {
    failures: usize,
    warnings: usize,
    json: bool,
    checks: Vec<serde_json::Value>,
}

impl Report {
    fn say(&mut self, status: &str, check: &str, what: &str, fix: Option<&str>) {
        if self.json {
            self.checks.push(serde_json::json!({
                "check": check, "status": status, "message": what, "fix": fix,
            }));
        } else {
            println!("{status:<5} {what}");
            if let Some(fix) = fix {
                println!("      fix: {fix}");
            }
        }
    }
    pub(crate) fn ok(&mut self, check: &str, what: &str) {
        self.say("ok", check, what, None);
    }
    pub(crate) fn warn(&mut self, check: &str, what: &str, fix: &str) {
        self.warnings += 1;
        self.say("WARN", check, what, Some(fix));
    }
    pub(crate) fn fail(&mut self, check: &str, what: &str, fix: &str) {
        self.failures += 1;
        self.say("FAIL", check, what, Some(fix));
    }
}

pub async fn run(config: &Config, json: bool) -> ExitCode {
    let mut r = Report {
        json,
        ..Default::default()
    };
    let layout = Layout::new(&config.root);
    match &config.file {
        Some(f) => r.ok("config", &format!("configuration valid ({})", f.display())),
        None => r.ok(
            "config",
            "configuration valid (built-in defaults and environment)",
        ),
    }
    checks::user(config, &mut r);
    checks::directories(config, &layout, &mut r);
    checks::disk(config, &layout, &mut r);
    checks::socket(config, &mut r);
    checks::agent(config, &mut r).await;
    let sandbox = checks::sandbox(config, &mut r);
    checks::telegram(config, &mut r).await;
    let health = check_daemon(config, &mut r).await;
    checks::cgroups(config, health.as_ref(), &mut r);
    check_store(config, &layout, &mut r).await;
    let backup_age_secs = check_backups(config, &layout, &mut r, chrono::Utc::now());
    // The exit code is the worst finding: 0 all ok, 1 warnings, 2 failures.
    let code = if r.failures > 0 {
        ExitCode::from(2)
    } else if r.warnings > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    };
    if r.json {
        let doc = serde_json::json!({
            "ok": r.failures == 0,
            "failures": r.failures,
            "warnings": r.warnings,
            "sandbox": sandbox,
            "backup_age_secs": backup_age_secs,
            "checks": r.checks,
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return code;
    }
    if r.failures > 0 {
        println!(
            "doctor: {} problem(s), {} warning(s)",
            r.failures, r.warnings
        );
    } else {
        println!("doctor: no problems, {} warning(s)", r.warnings);
    }
    code
}

/// The running daemon's `get_health`, when it runs and answers.
async fn check_daemon(config: &Config, r: &mut Report) -> Option<serde_json::Value> {
    let mut health = None;
    match DaemonClient::connect(&config.socket_path).await {
        Err(_) => r.warn(
            "daemon",
            &format!(
                "daemon not running (no answer on {})",
                config.socket_path.display()
            ),
            "systemctl start televibe (or televibe serve); then journalctl -u televibe -n 100 if it stops again",
        ),
        Ok(client) => {
            match client.call("get_health", serde_json::json!({})).await {
                Ok(h) => {
                    let checks = &h["readiness"]["checks"];
                    let line = format!(
                        "daemon running: ready={} database={} telegram={} repos={}",
                        h["ready"], checks["database"], checks["telegram"], checks["repos"]
                    );
                    let ready = h["ready"] == true;
                    health = Some(h);
                    if ready {
                        r.ok("daemon", &line)
                    } else {
                        r.fail(
                            "daemon",
                            &line,
                            &format!(
                                "see the failing check above and docs/runbooks.md; curl http://{}/health/ready",
                                config.http_listen
                            ),
                        )
                    }
                }
                Err(e) => r.fail(
                    "daemon",
                    &format!("daemon answered get_health with an error: {e}"),
                    "journalctl -u televibe -n 100; systemctl restart televibe",
                ),
            }
            client.close().await;
        }
    }
    health
}

async fn check_store(config: &Config, layout: &Layout, r: &mut Report) {
    let store = match config.store.url {
        Some(_) => open_server_store(config, layout, r).await,
        None => open_store_file(layout, r).await,
    };
    if let Some(store) = store {
        check_contents(&store, layout, r).await;
        store.close().await;
    }
}

/// The PostgreSQL store, read-only, when it answers and its check passes.
async fn open_server_store(config: &Config, layout: &Layout, r: &mut Report) -> Option<Store> {
    let db = layout.state_db();
    let location = config.store.location(db);
    let store = match Store::open_read_only_at(&location, Arc::new(Metrics::new())).await {
        Ok(s) => s,
        Err(e) => {
            r.fail(
                "database",
                &format!("cannot reach the database: {e}"),
                "check that the server runs and accepts this user (store.url, TELEVIBE_STORE__PASSWORD or store.password_file)",
            );
            return None;
        }
    };
    match store.integrity_check().await {
        Ok(()) => {
            r.ok(
                "database",
                &format!("database {} check ok (every table read)", location.shown()),
            );
            Some(store)
        }
        Err(e) => {
            r.fail(
                "database",
                &e.to_string(),
                "restore the database from the operator's own dump of it",
            );
            store.close().await;
            None
        }
    }
}

/// SQLite's state file, read-only, when it is there and its integrity check passes.
async fn open_store_file(layout: &Layout, r: &mut Report) -> Option<Store> {
    let db = layout.state_db();
    let earlier = crate::store::file::earlier_state(layout);
    if !earlier.is_empty() {
        r.fail(
            "database",
            &format!(
                "{} is missing but this root held state before ({}): the daemon refuses to start on an empty database",
                db.display(),
                earlier.join(", ")
            ),
            "televibe backup restore latest (or televibe reconstruct to rebuild projects and sessions from the disk)",
        );
        return None;
    }
    if !db.exists() {
        r.warn(
            "database",
            &format!(
                "{} does not exist yet (created at the first start)",
                db.display()
            ),
            "televibe serve (or televibe backup restore latest if it was lost)",
        );
        return None;
    }
    let store = match Store::open_read_only(&db, Arc::new(Metrics::new())).await {
        Ok(s) => s,
        Err(e) => {
            r.fail(
                "database",
                &format!("cannot open the database: {e}"),
                "systemctl stop televibe && televibe backup restore latest (or televibe reconstruct)",
            );
            return None;
        }
    };
    match store.integrity_check().await {
        Ok(()) => r.ok("database", "database integrity_check ok"),
        Err(e) => {
            r.fail(
                "database",
                &e.to_string(),
                "systemctl stop televibe && televibe backup restore latest && systemctl start televibe",
            );
            store.close().await;
            return None;
        }
    }
    Some(store)
}

/// What the database says against the disk: stuck jobs, sessions without a worktree, stale worktrees.
async fn check_contents(store: &Store, layout: &Layout, r: &mut Report) {
    checks::stuck_jobs(store, r).await;
    let sessions = match store.sessions(None, false).await {
        Ok(s) => s,
        Err(e) => {
            r.fail(
                "database",
                &format!("cannot read sessions: {e}"),
                "televibe backup verify latest; televibe backup restore latest",
            );
            return;
        }
    };
    let mut known: Vec<PathBuf> = Vec::new();
    for s in &sessions {
        let path = PathBuf::from(&s.worktree_path);
        if !path.is_dir() {
            r.warn(
                "worktrees",
                &format!(
                    "session {} ({} on {}) has no worktree at {}",
                    s.id, s.project_id, s.branch, s.worktree_path
                ),
                &format!(
                    "televibe admin session recover {} (re-created from its branch)",
                    s.id
                ),
            );
        }
        known.push(path);
    }
    let unknown = unknown_worktrees(&layout.workspaces(), &known);
    for dir in &unknown {
        r.warn(
            "worktrees",
            &format!(
                "stale worktree {}: not the worktree of any open session",
                dir.display()
            ),
            &format!(
                "inspect it; if nothing in it is needed: rm -rf {}, then televibe admin cleanup --apply (runs git worktree prune)",
                dir.display()
            ),
        );
    }
    r.ok(
        "worktrees",
        &format!(
            "{} open session(s), {} stale worktree(s)",
            sessions.len(),
            unknown.len()
        ),
    );
}

/// The newest backup in `dir`, by the timestamp in its name (file times change when copies are made).
pub fn newest_backup(dir: &Path) -> Option<(String, DateTime<Utc>)> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            crate::backup::parse_name(&name).map(|t| (name, t))
        })
        .max_by_key(|(_, t)| *t)
}

/// The longest gap between consecutive runs of the schedule over its next few runs: one period of a
/// regular schedule, the longest (a weekend, say) of an irregular one.
pub fn schedule_period(
    cron: &crate::backup::Schedule,
    now: DateTime<Utc>,
) -> Option<chrono::Duration> {
    let mut at = cron.next_after(now)?;
    let mut longest = chrono::Duration::zero();
    for _ in 0..8 {
        let next = cron.next_after(at)?;
        longest = longest.max(next - at);
        at = next;
    }
    Some(longest)
}

/// Reports the age of the newest backup; a warning when there is none or it is older than two schedule
/// periods. Returns the age in seconds for `--json`.
fn check_backups(
    config: &Config,
    layout: &Layout,
    r: &mut Report,
    now: DateTime<Utc>,
) -> Option<u64> {
    if config.store.url.is_some() {
        r.ok("backup", crate::store::OPERATOR_BACKUPS);
        return None;
    }
    let dir = layout.backups();
    let schedule = &config.backup.schedule;
    let period = schedule_period(schedule, now);
    let Some((name, at)) = newest_backup(&dir) else {
        r.warn(
            "backup",
            &format!("no backup in {} (state-<timestamp>.db.gz)", dir.display()),
            "televibe backup now (and check backup.schedule)",
        );
        return None;
    };
    let age = (now - at).num_seconds().max(0) as u64;
    let shown = crate::admin::human_duration(age);
    match period {
        Some(p) if age > 2 * p.num_seconds().max(0) as u64 => r.warn(
            "backup",
            &format!(
                "newest backup {name} is {shown} old, more than two periods of backup.schedule {:?} ({} each)",
                schedule.expr(),
                crate::admin::human_duration(p.num_seconds().max(0) as u64)
            ),
            "televibe backup now; then check that the daemon runs and its backups succeed (grep Backup orchestrator.log)",
        ),
        _ => r.ok("backup", &format!("newest backup {name} is {shown} old")),
    }
    Some(age)
}

/// Directories `workspaces/<project>/<name>` that no open session owns.
fn unknown_worktrees(workspaces: &Path, known: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(projects) = std::fs::read_dir(workspaces) else {
        return out;
    };
    for p in projects.flatten().filter(|e| e.path().is_dir()) {
        let Ok(entries) = std::fs::read_dir(p.path()) else {
            continue;
        };
        for e in entries.flatten().filter(|e| e.path().is_dir()) {
            if !known.iter().any(|k| k == &e.path()) {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn newest_is_chosen_by_name_not_file_time() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(newest_backup(dir.path()), None);
        for n in [
            "state-2025-12-13T12-00-00.db.gz",
            "state-2025-12-14T00-00-00.db.gz",
            "state-2025-12-13T18-00-00.db.gz",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(n), "x").unwrap();
        }
        assert_eq!(
            newest_backup(dir.path()).unwrap().0,
            "state-2025-12-14T00-00-00.db.gz"
        );
    }

    #[test]
    fn period_of_regular_and_irregular_schedules() {
        let now = Utc.with_ymd_and_hms(2025, 12, 10, 7, 0, 0).unwrap();
        assert_eq!(
            schedule_period(&crate::backup::Schedule::parse("0 */6 * * *").unwrap(), now),
            Some(chrono::Duration::hours(6))
        );
        // Weekdays at 02:00: the longest gap is the weekend.
        assert_eq!(
            schedule_period(&crate::backup::Schedule::parse("0 2 * * 1-5").unwrap(), now),
            Some(chrono::Duration::hours(72))
        );
        // A schedule that does not parse never gets here: the configuration refuses it at load.
        assert!(crate::backup::Schedule::parse("nonsense").is_err());
    }
}
