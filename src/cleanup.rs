//! `televibe admin cleanup [--apply]`: the "disk full" runbook as one command. Daemon and job logs past
//! their retention, backups past theirs (never the newest three), `git worktree prune` in each
//! registered repository, and worktrees of sessions closed more than a week ago still on disk. A dry run
//! unless `--apply`; works with the daemon running or stopped (the database is read read-only).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::Config;
use crate::layout::Layout;
use crate::store::Store;
use crate::telemetry::Metrics;

/// Backups kept whatever their age.
const KEEP_NEWEST: usize = 3;
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
    let day = |d: u32| Duration::from_secs(u64::from(d) * 86_400);
    old_files(
        &layout.job_logs(),
        day(config.logging.job_log_retention_days),
        "job log",
        &mut items,
    );
    old_files(
        &layout.logs(),
        day(config.logging.retention_days),
        "log",
        &mut items,
    );
    old_backups(&layout.backups(), config.backup.retention_days, &mut items);
    let (repos, closed) = from_store(&layout).await;
    for wt in closed {
        let bytes = dir_bytes(&wt);
        items.push(Item {
            kind: "worktree of a session closed over 7 days ago",
            path: wt,
            bytes,
        });
    }
    let mut errors = 0;
    let mut pruned = Vec::new();
    for repo in &repos {
        let mut args = vec!["worktree", "prune", "--verbose"];
        if !apply {
            args.push("--dry-run");
        }
        match std::process::Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(&args)
            .output()
        {
            Ok(out) if out.status.success() => {
                let said = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                for line in said.lines().filter(|l| !l.trim().is_empty()) {
                    pruned.push(format!("{}: {line}", repo.display()));
                }
            }
            Ok(out) => {
                errors += 1;
                eprintln!(
                    "git worktree prune in {}: {}",
                    repo.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Err(e) => {
                errors += 1;
                eprintln!("git worktree prune in {}: {e}", repo.display());
            }
        }
    }
    let mut freed = 0;
    let mut done = Vec::new();
    for item in &items {
        if apply {
            let removed = if item.path.is_dir() {
                remove_worktree(&item.path)
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

/// Regular files directly in `dir` not modified for `age`.
fn old_files(dir: &Path, age: Duration, kind: &'static str, items: &mut Vec<Item>) {
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
        if meta.is_file() && old {
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
    all.truncate(all.len().saturating_sub(KEEP_NEWEST));
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
async fn from_store(layout: &Layout) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let Ok(store) = Store::open_read_only(&layout.state_db(), Arc::new(Metrics::new())).await
    else {
        return (Vec::new(), Vec::new());
    };
    let repos = store
        .projects()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|p| PathBuf::from(p.repo_path))
        .collect();
    let cutoff = chrono::Utc::now() - CLOSED_FOR;
    let closed = store
        .sessions(None, true)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s.closed_at.is_some_and(|t| t < cutoff))
        .map(|s| PathBuf::from(s.worktree_path))
        .filter(|p| p.is_dir())
        .collect();
    store.close().await;
    (repos, closed)
}

fn remove_worktree(path: &Path) -> std::io::Result<()> {
    // git forgets it at the next prune; the directory goes now.
    std::fs::remove_dir_all(path)
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
