//! `televibe admin cleanup [--apply]`: the "disk full" runbook as one command. Job logs and rotated
//! daemon logs past their retention, backups past theirs (never the newest three), worktrees of sessions
//! closed more than a week ago still on disk, then `git worktree prune` in each registered repository. A
//! dry run unless `--apply`; works with the daemon running or stopped (the database is read read-only).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::Config;
use crate::layout::Layout;
use crate::store::Store;
use crate::telemetry::Metrics;

/// A closed session's worktree left on disk this long is removed.
const CLOSED_FOR: chrono::Duration = chrono::Duration::days(7);

/// One thing to delete: what it is, where, how many bytes it frees.
struct Item {
    kind: &'static str,
    path: PathBuf,
    bytes: u64,
}

pub async fn run(config: &Config, apply: bool, json: bool) -> ExitCode {
    let layout = Layout::new(&config.root);
    let mut items = Vec::new();
    let mut errors = 0;
    let day = |d: u32| Duration::from_secs(u64::from(d) * 86_400);
    // The files the janitor's retention takes: job logs, and rotated daemon logs (never the live
    // `orchestrator.log`, nor `audit.log`, which is pruned record by record).
    old_files(
        &layout.job_logs(),
        |n| n.ends_with(".log"),
        day(config.logging.job_log_retention_days),
        "job log",
        &mut items,
    );
    old_files(
        &layout.logs(),
        |n| n.starts_with("orchestrator.log."),
        day(config.logging.retention_days),
        "rotated log",
        &mut items,
    );
    old_backups(&layout.backups(), config.backup.retention_days, &mut items);
    let (repos, closed) = match from_store(config, &layout).await {
        Ok(found) => found,
        Err(e) => {
            // Logs and backups can still go; repositories and sessions are known only from the database.
            errors += 1;
            eprintln!(
                "cannot read {} ({e}): no worktree removed or pruned; see `televibe doctor`",
                config.store.location(layout.state_db()).shown()
            );
            (Vec::new(), Vec::new())
        }
    };
    for wt in closed {
        let bytes = dir_bytes(&wt);
        items.push(Item {
            kind: "worktree of a session closed over 7 days ago",
            path: wt,
            bytes,
        });
    }
    let mut freed = 0;
    let mut done = Vec::new();
    for item in &items {
        if apply {
            let removed = if item.path.is_dir() {
                std::fs::remove_dir_all(&item.path)
            } else {
                std::fs::remove_file(&item.path)
            };
            if let Err(e) = removed {
                errors += 1;
                eprintln!("cannot remove {}: {e}", item.path.display());
                continue;
            }
        }
        freed += item.bytes;
        done.push(item);
    }
    // After the removals, so git forgets the worktrees just removed.
    let mut pruned = Vec::new();
    for repo in &repos {
        match prune(repo, apply) {
            Ok(lines) => pruned.extend(lines),
            Err(e) => {
                errors += 1;
                eprintln!("git worktree prune in {}: {e}", repo.display());
            }
        }
    }
    if json {
        let doc = serde_json::json!({
            "applied": apply,
            "bytes": freed,
            "items": done.iter().map(|i| serde_json::json!({"kind": i.kind, "path": i.path, "bytes": i.bytes})).collect::<Vec<_>>(),
            "worktree_prune": pruned,
            "errors": errors,
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        let verb = if apply { "removed" } else { "would remove" };
        for i in &done {
            println!("{verb} {} {} ({} bytes)", i.kind, i.path.display(), i.bytes);
        }
        for p in &pruned {
            println!("git worktree prune: {p}");
        }
        println!(
            "cleanup: {} item(s), {:.1} MB {}{}",
            done.len(),
            freed as f64 / 1e6,
            if apply { "freed" } else { "to free" },
            if apply { "" } else { " (dry run: add --apply)" }
        );
    }
    if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// `git worktree prune --verbose` (with `--dry-run` unless applying) in `repo`; answers what git said.
fn prune(repo: &Path, apply: bool) -> Result<Vec<String>, String> {
    let mut args = vec!["worktree", "prune", "--verbose"];
    if !apply {
        args.push("--dry-run");
    }
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(&args)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(said
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("{}: {l}", repo.display()))
        .collect())
}

/// Regular files directly in `dir`, of the names `wanted`, not modified for `age`.
fn old_files(
    dir: &Path,
    wanted: impl Fn(&str) -> bool,
    age: Duration,
    kind: &'static str,
    items: &mut Vec<Item>,
) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    for e in entries.flatten() {
        let Ok(meta) = e.metadata() else { continue };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|a| a > age);
        if meta.is_file() && old && wanted(&e.file_name().to_string_lossy()) {
            items.push(Item {
                kind,
                path: e.path(),
                bytes: meta.len(),
            });
        }
    }
}

/// Backups older than the retention by the time in their names; the newest three always stay, as with the
/// janitor's own retention.
fn old_backups(dir: &Path, days: u32, items: &mut Vec<Item>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut all: Vec<(chrono::DateTime<chrono::Utc>, PathBuf, u64)> = entries
        .flatten()
        .filter_map(|e| {
            let at = crate::backup::parse_name(&e.file_name().to_string_lossy())?;
            Some((at, e.path(), e.metadata().ok()?.len()))
        })
        .collect();
    all.sort();
    all.truncate(
        all.len()
            .saturating_sub(crate::actors::janitor::KEEP_NEWEST),
    );
    let cutoff = chrono::Utc::now() - chrono::Duration::days(i64::from(days));
    for (at, path, bytes) in all {
        if at < cutoff {
            items.push(Item {
                kind: "backup",
                path,
                bytes,
            });
        }
    }
}

/// The registered repositories, and worktrees of sessions closed over a week ago still on disk.
async fn from_store(
    config: &Config,
    layout: &Layout,
) -> Result<(Vec<PathBuf>, Vec<PathBuf>), String> {
    let location = config.store.location(layout.state_db());
    let store = Store::open_read_only_at(&location, Arc::new(Metrics::new()))
        .await
        .map_err(|e| e.to_string())?;
    let repos = store
        .projects()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|p| PathBuf::from(p.repo_path))
        .collect();
    let cutoff = chrono::Utc::now() - CLOSED_FOR;
    let closed = store
        .sessions(None, true)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|s| s.closed_at.is_some_and(|t| t < cutoff))
        .filter_map(|s| session_worktree(&layout.workspaces(), Path::new(&s.worktree_path)))
        .collect();
    store.close().await;
    Ok((repos, closed))
}

/// `path` when it is a real directory exactly at `<workspaces>/<project>/S<n>` with no symbolic link on
/// the way: a database row is never trusted to name what gets deleted.
fn session_worktree(workspaces: &Path, path: &Path) -> Option<PathBuf> {
    let base = workspaces.canonicalize().ok()?;
    let real = path.canonicalize().ok()?;
    if real != path || !real.is_dir() {
        return None;
    }
    let rel = real.strip_prefix(&base).ok()?;
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().to_string())
        .collect();
    let session_like = |n: &str| {
        n.strip_prefix('S')
            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
    };
    (parts.len() == 2 && session_like(&parts[1])).then_some(real)
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_real_session_directory_under_workspaces_is_ever_removed() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("workspaces");
        std::fs::create_dir_all(ws.join("app/S3")).unwrap();
        std::fs::create_dir_all(ws.join("app/notes")).unwrap();
        std::fs::create_dir_all(dir.path().join("elsewhere/S4")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere/S4"), ws.join("app/S4")).unwrap();
        let ws_real = ws.canonicalize().unwrap();
        assert_eq!(
            session_worktree(&ws, &ws_real.join("app/S3")),
            Some(ws_real.join("app/S3"))
        );
        for bad in [
            ws_real.join("app/notes"),
            ws_real.join("app"),
            ws_real.clone(),
            ws_real.join("app/S4"),
            ws_real.join("app/S3/../S3"),
            dir.path().join("elsewhere/S4"),
            PathBuf::from("/"),
        ] {
            assert_eq!(session_worktree(&ws, &bad), None, "{}", bad.display());
        }
    }
}
