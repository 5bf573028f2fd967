//! `televibe reconstruct`: rebuilds a lost `state.db` from what git keeps on disk, for when no backup can
//! be restored.
//!
//! Repositories one level below `<root>/repos` and every `projects.allowed_roots` entry become projects;
//! the linked worktrees each repository lists under `<root>/workspaces/<project>/S<n>` become open
//! sessions with their numbers and branches. Job history, approvals, the outbox and conversation ids
//! live only in the database, so they are gone, and the command says so. The daemon must be stopped.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use serde::Serialize;
use serde_json::json;

use crate::audit::Audited;
use crate::audit::{Audit, AuditSubject};
use crate::breaker::Breakers;
use crate::config::Config;
use crate::domain::{NewSession, Project};
use crate::domain::{SessionId, is_project_id, slugify};
use crate::git::{Git, GitError};
use crate::layout::Layout;
use crate::mcp::client::DaemonClient;
use crate::store::{self, Store, StoreOptions};
use crate::telemetry::Metrics;

/// What was lost with the database and cannot be rebuilt from git.
pub const LOST: &[&str] = &[
    "job history (jobs, outcomes, costs; job log files stay in logs/jobs but are no longer linked)",
    "approvals and session grants",
    "undelivered notifications (the outbox) and Telegram message links",
    "agent conversation ids (the next job of a session starts a new conversation)",
    "project display names and per-project trust flags (projects.trusted in the config still applies)",
    "audit rows before now (audit.log keeps them)",
];

/// The report, printed as text or as one JSON document.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub database: String,
    /// Where the previous database file was moved, when there was one.
    pub moved_aside: Option<String>,
    pub projects: usize,
    pub sessions: usize,
    pub sessions_missing_worktree: usize,
    pub jobs: usize,
    pub job_history: &'static str,
    pub next_session: String,
    pub project_ids: Vec<String>,
    pub session_ids: Vec<String>,
    pub skipped: Vec<Skipped>,
    pub lost: Vec<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

/// A linked worktree found where the daemon puts session worktrees.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FoundSession {
    seq: i64,
    /// The `<project>` directory it lives in: the project id it was created for.
    project_dir: String,
    path: PathBuf,
    branch: Option<String>,
    present: bool,
}

/// `(project directory, n)` when `path` is `<workspaces>/<project>/S<n>`.
pub fn session_dir(workspaces: &Path, path: &Path) -> Option<(String, i64)> {
    let rel = path.strip_prefix(workspaces).ok()?;
    let parts: Vec<&str> = rel.iter().filter_map(|c| c.to_str()).collect();
    match parts.as_slice() {
        [project, name] if name.starts_with('S') => {
            let id = SessionId::parse(name)?;
            Some((project.to_string(), id.0))
        }
        _ => None,
    }
}

/// The session number in a branch the daemon named itself (`<prefix>S<n>`).
pub fn prefixed_number(branch: &str, prefix: &str) -> Option<i64> {
    let rest = branch.strip_prefix(prefix)?;
    rest.starts_with('S')
        .then(|| SessionId::parse(rest))
        .flatten()
        .map(|s| s.0)
}

/// Why the database at `db` cannot serve the daemon, or None when it is readable.
async fn unusable(db: &Path) -> Option<String> {
    let store = match Store::open_read_only(db, Arc::new(Metrics::new())).await {
        Ok(s) => s,
        Err(e) => return Some(e.to_string()),
    };
    let why = match store.integrity_check().await {
        Err(e) => Some(e.to_string()),
        Ok(()) => match store.table_names().await {
            Err(e) => Some(e.to_string()),
            Ok(t) if !t.iter().any(|n| n == "sessions") => {
                Some("it holds no sessions table (not the daemon's database)".into())
            }
            Ok(_) => None,
        },
    };
    store.close().await;
    why
}

/// Directories one level below each root, hidden ones left out, each once.
fn candidate_repos(roots: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for root in roots {
        let Ok(entries) = std::fs::read_dir(root) else {
            continue;
        };
        let mut dirs: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.is_dir()
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        dirs.sort();
        for d in dirs {
            let canonical = d.canonicalize().unwrap_or(d);
            if seen.insert(canonical.clone()) {
                out.push(canonical);
            }
        }
    }
    out
}

/// Highest `S<n>` directory under `workspaces/<project>/` (numbers a crash or a lost row left behind).
fn highest_session_dir(workspaces: &Path) -> i64 {
    let mut max = 0;
    for p in std::fs::read_dir(workspaces)
        .into_iter()
        .flatten()
        .flatten()
    {
        for e in std::fs::read_dir(p.path()).into_iter().flatten().flatten() {
            if let Some((_, n)) = session_dir(workspaces, &e.path()) {
                max = max.max(n);
            }
        }
    }
    max
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("televibe reconstruct: {msg}");
    ExitCode::from(1)
}

pub async fn run(config: &Config, force: bool, json_out: bool) -> ExitCode {
    if let Ok(client) = DaemonClient::connect(&config.socket_path).await {
        client.close().await;
        return fail(&format!(
            "the daemon is running (it answers on {}); stop it first (systemctl stop televibe)",
            config.socket_path.display()
        ));
    }
    if config.store.url.is_some() {
        return fail(
            "reconstruct rebuilds SQLite's state.db; this daemon's store is PostgreSQL (store.url): restore \
             the database from the operator's own dump of it instead",
        );
    }
    let layout = Layout::new(&config.root);
    if let Err(e) = layout.create() {
        return fail(&e.to_string());
    }
    // A daemon that is starting has not bound its socket yet; the state lock tells for sure.
    let _lock = match crate::lock::StateLock::acquire(&layout.orchestrator()) {
        Ok(l) => l,
        Err(e) => return fail(&e),
    };
    let db = layout.state_db();
    let mut report = Report {
        database: db.display().to_string(),
        job_history: "lost",
        lost: LOST.to_vec(),
        ..Default::default()
    };
    let previous = ["", "-wal"].iter().any(|s| {
        let mut p = db.as_os_str().to_owned();
        p.push(s);
        Path::new(&p).exists()
    });
    if previous {
        match unusable(&db).await {
            None if !force => {
                return fail(&format!(
                    "{} is readable; reconstructing would replace it and lose its job history. Restore a backup or \
                     keep it; to rebuild anyway, run `televibe reconstruct --force` (the current file is kept as {})",
                    db.display(),
                    store::file::aside_name(&db).display()
                ));
            }
            Some(why) => eprintln!("televibe reconstruct: {} is unusable: {why}", db.display()),
            None => {}
        }
    }
    if previous {
        report.moved_aside = Some(store::file::aside_name(&db).display().to_string());
    }
    // The new database is built beside state.db and renamed over it once complete: a crash meanwhile leaves
    // the previous file in place, never a root without a state.db.
    let stage = match tempfile::Builder::new()
        .prefix(".reconstruct-")
        .tempdir_in(layout.orchestrator())
    {
        Ok(t) => t,
        Err(e) => return fail(&format!("cannot create a temporary directory: {e}")),
    };
    let staged = stage.path().join("state.db");
    let metrics = Arc::new(Metrics::new());
    let store = match Store::open(&staged, StoreOptions::default(), metrics.clone()).await {
        Ok(s) => s,
        Err(e) => return fail(&e.to_string()),
    };
    let result = rebuild(config, &layout, &store, metrics, &mut report).await;
    if let Err(e) = result {
        store.close().await;
        return fail(&e);
    }
    Audit::new(layout.audit_log())
        .record(
            &store,
            &Audited::StateReconstructed {
                details: json!({
                    "projects": report.projects,
                    "sessions": report.sessions,
                    "sessions_missing_worktree": report.sessions_missing_worktree,
                    "next_session": report.next_session,
                    "moved_aside": report.moved_aside,
                    "job_history": "lost",
                }),
            },
            "admin",
            AuditSubject::default(),
        )
        .await;
    store.close().await;
    match store::file::checkpoint(&staged).await {
        store::file::Checkpoint::Done => {}
        other => return fail(&format!("the rebuilt database is not whole: {other:?}")),
    }
    match store::file::install(&staged, &db, &|_| {}).await {
        Ok(kept) => report.moved_aside = kept.map(|k| k.display().to_string()),
        Err(e) => return fail(&e),
    }
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", render(&report));
    }
    ExitCode::SUCCESS
}

/// Fills the fresh database from the disk.
async fn rebuild(
    config: &Config,
    layout: &Layout,
    store: &Store,
    metrics: Arc<Metrics>,
    report: &mut Report,
) -> Result<(), String> {
    let breakers = Arc::new(Breakers::new(&config.breakers, metrics));
    let git = Git::new(breakers, config.git_timeout, config.git_remote_timeout);
    let workspaces = layout.workspaces();
    let workspaces_canonical = workspaces.canonicalize().unwrap_or(workspaces.clone());
    let prefix = &config.sessions.branch_prefix;
    let roots: Vec<PathBuf> = std::iter::once(layout.repos())
        .chain(config.allowed_roots.iter().cloned())
        .collect();
    let mut highest = highest_session_dir(&workspaces);
    let mut taken_ids: HashSet<String> = HashSet::new();
    let mut seen_seqs: HashSet<i64> = HashSet::new();
    for repo in candidate_repos(&roots) {
        let shown = repo.display().to_string();
        let info = match git.inspect(&repo).await {
            Ok(i) => i,
            Err(GitError::NotARepository(why)) => {
                report.skipped.push(Skipped {
                    path: shown,
                    reason: format!("{why} is not a git repository"),
                });
                continue;
            }
            Err(e) => {
                report.skipped.push(Skipped {
                    path: shown,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let mut found = Vec::new();
        for wt in git.worktrees(&repo).await.map_err(|e| e.to_string())? {
            let place = session_dir(&workspaces, &wt.path)
                .or_else(|| session_dir(&workspaces_canonical, &wt.path));
            let Some((project_dir, seq)) = place else {
                continue;
            };
            highest = highest.max(seq);
            found.push(FoundSession {
                seq,
                project_dir,
                present: crate::core::sessions::worktree_present(&wt.path),
                path: wt.path,
                branch: wt.branch,
            });
        }
        for b in git.branches(&repo).await.map_err(|e| e.to_string())? {
            if let Some(n) = prefixed_number(&b, prefix) {
                highest = highest.max(n);
            }
        }
        let id = project_id(&repo, &found, &taken_ids);
        taken_ids.insert(id.clone());
        let project = Project {
            id: id.clone(),
            name: repo
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_else(|| id.clone()),
            repo_path: shown,
            default_branch: info.default_branch,
            remote_url: info.remote_url,
            created_at: chrono::Utc::now(),
            trusted: false,
            node: None,
        };
        store
            .insert_project(&project)
            .await
            .map_err(|e| e.to_string())?;
        report.projects += 1;
        report.project_ids.push(id.clone());
        found.sort_by_key(|f| f.seq);
        for f in found {
            let shown = f.path.display().to_string();
            let Some(branch) = f.branch.clone() else {
                report.skipped.push(Skipped {
                    path: shown,
                    reason: "its HEAD is detached: a session works on a branch".into(),
                });
                continue;
            };
            if !seen_seqs.insert(f.seq) {
                report.skipped.push(Skipped {
                    path: shown,
                    reason: format!("S{} is taken by another worktree", f.seq),
                });
                continue;
            }
            let workspace_dir = f.path.parent().map(Path::to_path_buf).unwrap_or_default();
            let new = NewSession {
                project_id: id.clone(),
                branch,
                base_branch: project.default_branch.clone(),
                branch_created: false,
                workspace_dir,
                agent: crate::agents::DEFAULT_AGENT.to_string(),
                node: None,
            };
            let session = store
                .insert_session(f.seq, &new)
                .await
                .map_err(|e| e.to_string())?;
            if !f.present {
                store
                    .set_worktree_missing(&session.id, true)
                    .await
                    .map_err(|e| e.to_string())?;
                report.sessions_missing_worktree += 1;
            }
            report.sessions += 1;
            report.session_ids.push(session.id);
        }
    }
    store
        .raise_session_counter(highest)
        .await
        .map_err(|e| e.to_string())?;
    report.next_session = format!(
        "S{}",
        store.next_session_seq().await.map_err(|e| e.to_string())?
    );
    Ok(())
}

/// The id a repository gets back: the `workspaces/<project>` directory its worktrees live in (the id it
/// had), else the slug of its directory name; `-2`, `-3`… when taken.
fn project_id(repo: &Path, found: &[FoundSession], taken: &HashSet<String>) -> String {
    let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
    for f in found {
        *votes.entry(f.project_dir.as_str()).or_default() += 1;
    }
    let from_worktrees = votes
        .into_iter()
        .filter(|(d, _)| is_project_id(d) && !taken.contains(*d))
        .max_by_key(|(_, n)| *n)
        .map(|(d, _)| d.to_string());
    if let Some(id) = from_worktrees {
        return id;
    }
    let base = slugify(
        &repo
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default(),
    );
    (1..)
        .map(|n| {
            if n == 1 {
                base.clone()
            } else {
                let suffix = format!("-{n}");
                let keep: String = base.chars().take(63 - suffix.len()).collect();
                format!("{}{suffix}", keep.trim_end_matches('-'))
            }
        })
        .find(|c| !taken.contains(c))
        .unwrap_or(base)
}

fn render(r: &Report) -> String {
    let mut out = format!(
        "reconstructed {} from the repositories on disk\n",
        r.database
    );
    out.push_str(&format!(
        "  projects: {} ({})\n",
        r.projects,
        r.project_ids.join(", ")
    ));
    out.push_str(&format!(
        "  sessions: {} open ({}), {} with a missing worktree (recover them with `televibe admin session recover <S>`)\n",
        r.sessions,
        r.session_ids.join(", "),
        r.sessions_missing_worktree
    ));
    out.push_str(&format!("  next session: {}\n", r.next_session));
    for s in &r.skipped {
        out.push_str(&format!("  skipped {}: {}\n", s.path, s.reason));
    }
    if let Some(p) = &r.moved_aside {
        out.push_str(&format!("  previous database kept as {p}\n"));
    }
    out.push_str("  job history: lost. Not recoverable from git:\n");
    for l in &r.lost {
        out.push_str(&format!("    - {l}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_dirs_are_two_levels_below_workspaces() {
        let ws = Path::new("/r/workspaces");
        assert_eq!(
            session_dir(ws, Path::new("/r/workspaces/app/S12")),
            Some(("app".into(), 12))
        );
        assert_eq!(session_dir(ws, Path::new("/r/workspaces/app/x")), None);
        assert_eq!(session_dir(ws, Path::new("/r/workspaces/app/S0")), None);
        assert_eq!(session_dir(ws, Path::new("/r/workspaces/a/b/S1")), None);
        assert_eq!(session_dir(ws, Path::new("/elsewhere/app/S1")), None);
    }

    #[test]
    fn only_the_daemons_own_branch_names_count() {
        assert_eq!(prefixed_number("televibe/S7", "televibe/"), Some(7));
        assert_eq!(prefixed_number("televibe/7", "televibe/"), None);
        assert_eq!(prefixed_number("feature/S7", "televibe/"), None);
        assert_eq!(prefixed_number("televibe/S7x", "televibe/"), None);
    }

    #[test]
    fn project_ids_come_back_from_the_workspace_directories() {
        let found = |dir: &str, seq| FoundSession {
            seq,
            project_dir: dir.into(),
            path: PathBuf::new(),
            branch: None,
            present: true,
        };
        let none = HashSet::new();
        let repo = Path::new("/r/repos/My App");
        assert_eq!(project_id(repo, &[], &none), "my-app");
        assert_eq!(
            project_id(repo, &[found("app", 1), found("app", 3)], &none),
            "app"
        );
        let taken: HashSet<String> = ["app".to_string(), "my-app".to_string()].into();
        assert_eq!(project_id(repo, &[found("app", 1)], &taken), "my-app-2");
    }
}
