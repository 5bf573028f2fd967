//! Git operations (gix): inspect repositories, create and remove linked worktrees, branches, dirtiness, prune.
//!
//! Every operation runs on the blocking pool under a timeout and through the `git_operations` breaker. Only
//! real git failures (errors reading or writing the repository, timeouts) count against the breaker; refusals
//! that git answered correctly (not a repository, branch checked out, dirty worktree) do not.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::breaker::{BreakerName, BreakerOpen, Breakers};

#[derive(Debug, Clone, thiserror::Error)]
pub enum GitError {
    #[error(transparent)]
    BreakerOpen(#[from] BreakerOpen),
    #[error("{0} is not a git repository")]
    NotARepository(String),
    #[error("{0}")]
    InvalidBranch(String),
    #[error("branch {branch} is checked out in {at}")]
    BranchCheckedOut { branch: String, at: String },
    #[error("branch {0} does not exist")]
    BranchMissing(String),
    #[error("worktree {0} has uncommitted changes")]
    Dirty(String),
    #[error("git operation timed out after {0} s")]
    Timeout(u64),
    #[error("git failed: {0}")]
    Failed(String),
    /// A file a job left where git keeps its data is not what it must be (a link, a FIFO, too big).
    #[error("refused a file the job left: {0}")]
    Unsafe(String),
    /// Output past what the daemon reads (a diff of a huge change).
    #[error("{0}")]
    TooLarge(String),
    /// A remote could not be reached or read (no `origin`, refused credentials, no network): its words.
    /// Not a failure of the repository, so the breaker does not count it.
    #[error("{0}")]
    Remote(String),
}

impl GitError {
    /// Whether the `git_operations` breaker counts this outcome as a failure.
    pub fn is_failure(&self) -> bool {
        matches!(self, GitError::Timeout(_) | GitError::Failed(_))
    }
}

fn failed(e: impl std::fmt::Display) -> GitError {
    GitError::Failed(e.to_string())
}

/// What registration needs to know about a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoInfo {
    pub default_branch: String,
    pub remote_url: Option<String>,
}

/// A linked worktree as git knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorktreeInfo {
    pub path: PathBuf,
    pub branch: Option<String>,
}

/// The git module's handle.
pub struct Git {
    breakers: Arc<Breakers>,
    timeout: Duration,
    /// `git.remote_timeout_secs`: the longest one command talking to a remote (push, clone) may take.
    remote_timeout: Duration,
}

mod cli;
mod clone;
mod push;
mod repo;

pub use crate::domain::redact_credentials as redact;
use cli::*;
pub use clone::Cloned;
pub use push::{PushPlan, Pushed, REMOTE, runs_elsewhere};
use repo::*;
pub use repo::{validate_revision, worktree_git_dirs};

impl Git {
    pub fn new(breakers: Arc<Breakers>, timeout: Duration, remote_timeout: Duration) -> Git {
        set_timeout(timeout);
        Git {
            breakers,
            timeout,
            remote_timeout,
        }
    }

    async fn guarded<T, F>(&self, op: F) -> Result<T, GitError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, GitError> + Send + 'static,
    {
        self.guarded_for(self.timeout, op).await
    }

    /// [`Git::guarded`] with a time limit of its own (what talks to a remote may take longer).
    async fn guarded_for<T, F>(&self, limit: std::time::Duration, op: F) -> Result<T, GitError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, GitError> + Send + 'static,
    {
        let permit = self.breakers.acquire(BreakerName::GitOperations)?;
        let outcome = match tokio::time::timeout(limit, tokio::task::spawn_blocking(op)).await {
            Err(_) => Err(GitError::Timeout(limit.as_secs())),
            Ok(Err(join)) => Err(failed(format!("git task panicked: {join}"))),
            Ok(Ok(r)) => r,
        };
        match &outcome {
            Err(e) if e.is_failure() => {
                tracing::warn!(target: "televibe.git", error = %e, "git operation failed");
                permit.failure();
            }
            _ => permit.success(),
        }
        outcome
    }

    /// Default branch and origin URL; `NotARepository` when `path` holds no repository.
    pub async fn inspect(&self, path: &Path) -> Result<RepoInfo, GitError> {
        let path = path.to_path_buf();
        self.guarded(move || inspect_sync(&path)).await
    }

    /// Creates (or reuses) `branch` from `base` and a linked worktree for it at `dest`.
    /// Returns whether the branch was created. Nothing is left behind on failure.
    pub async fn create_worktree(
        &self,
        repo: &Path,
        branch: &str,
        base: &str,
        dest: &Path,
    ) -> Result<bool, GitError> {
        let (repo, branch, base, dest) = (
            repo.to_path_buf(),
            branch.to_string(),
            base.to_string(),
            dest.to_path_buf(),
        );
        self.guarded(move || create_worktree_sync(&repo, &branch, &base, &dest))
            .await
    }

    /// Removes the linked worktree at `dest` (its branch stays). A missing directory is pruned instead.
    pub async fn remove_worktree(
        &self,
        repo: &Path,
        dest: &Path,
        force: bool,
    ) -> Result<(), GitError> {
        let (repo, dest) = (repo.to_path_buf(), dest.to_path_buf());
        self.guarded(move || remove_worktree_sync(&repo, &dest, force))
            .await
    }

    pub async fn delete_branch(&self, repo: &Path, branch: &str) -> Result<(), GitError> {
        let (repo, branch) = (repo.to_path_buf(), branch.to_string());
        self.guarded(move || delete_branch_sync(&repo, &branch))
            .await
    }

    /// Moves `branch` from `expected` to commit `to` (a job's commits made in its sandbox), only if
    /// the branch is still at `expected` and `to` is a commit of this repository.
    pub async fn adopt_branch(
        &self,
        repo: &Path,
        branch: &str,
        expected: Option<&str>,
        to: &str,
    ) -> Result<(), GitError> {
        let (repo, branch, expected, to) = (
            repo.to_path_buf(),
            branch.to_string(),
            expected.map(str::to_string),
            to.to_string(),
        );
        self.guarded(move || adopt_branch_sync(&repo, &branch, expected.as_deref(), &to))
            .await
    }

    /// Points the worktree's HEAD back at `branch` if a job moved it; true if it did.
    pub async fn reattach_head(
        &self,
        repo: &Path,
        worktree: &Path,
        branch: &str,
    ) -> Result<bool, GitError> {
        let (repo, wt, branch) = (
            repo.to_path_buf(),
            worktree.to_path_buf(),
            branch.to_string(),
        );
        self.guarded(move || reattach_head_sync(&repo, &wt, &branch))
            .await
    }

    /// Brings the objects a sandboxed job wrote (its private object directory) into the repository,
    /// each checked; returns how many.
    pub async fn import_objects(&self, repo: &Path, private: &Path) -> Result<usize, GitError> {
        let (repo, private) = (repo.to_path_buf(), private.to_path_buf());
        self.guarded(move || import_objects_sync(&repo, &private))
            .await
    }

    /// Uncommitted changes, untracked files included.
    pub async fn is_dirty(&self, worktree: &Path) -> Result<bool, GitError> {
        let wt = worktree.to_path_buf();
        self.guarded(move || is_dirty_sync(&wt)).await
    }

    /// Like `git worktree prune`: forgets linked worktrees whose directories are gone.
    pub async fn prune(&self, repo: &Path) -> Result<usize, GitError> {
        let repo = repo.to_path_buf();
        self.guarded(move || prune_sync(&repo)).await
    }

    /// The commit a worktree's HEAD points at (None for an unborn branch).
    pub async fn head_commit(&self, worktree: &Path) -> Result<Option<String>, GitError> {
        let wt = worktree.to_path_buf();
        self.guarded(move || {
            let repo = open_existing(&wt)?;
            Ok(repo.head_id().ok().map(|id| id.to_string()))
        })
        .await
    }

    /// Files changed in a worktree since `base` (commits and uncommitted changes, untracked files
    /// included) and git's short diff stat. Uses the git CLI (by argv): gix has no diff stat.
    pub async fn changes(
        &self,
        worktree: &Path,
        base: Option<&str>,
    ) -> Result<(Vec<String>, Option<String>), GitError> {
        let (wt, base) = (worktree.to_path_buf(), base.map(str::to_string));
        self.guarded(move || changes_sync(&wt, base.as_deref()))
            .await
    }

    /// `git diff <base>` of a worktree (working tree included) plus its untracked files.
    pub async fn diff(&self, worktree: &Path, base: &str) -> Result<String, GitError> {
        let (wt, base) = (worktree.to_path_buf(), base.to_string());
        self.guarded(move || {
            validate_revision(&base)?;
            let mut out = git_cli_capped(&wt, &["diff", "--end-of-options", &base], MAX_DIFF)
                .map_err(|e| match e {
                    GitError::Failed(m) if m.contains("bytes; it was stopped") => GitError::TooLarge(format!(
                        "the diff is larger than {} MiB; read it in the worktree with git diff {base}",
                        MAX_DIFF >> 20
                    )),
                    e => e,
                })?;
            let untracked = git_cli(&wt, &["ls-files", "--others", "--exclude-standard"])?;
            if !untracked.trim().is_empty() {
                out.push_str("\n# untracked files\n");
                out.push_str(&untracked);
            }
            Ok(out)
        })
        .await
    }

    /// The local branch names of a repository (without `refs/heads/`).
    pub async fn branches(&self, repo: &Path) -> Result<Vec<String>, GitError> {
        let repo = repo.to_path_buf();
        self.guarded(move || {
            let repo = open_existing(&repo)?;
            let refs = repo.references().map_err(failed)?;
            let mut out = Vec::new();
            for r in refs.local_branches().map_err(failed)? {
                let r = r.map_err(|e| failed(e.to_string()))?;
                out.push(r.name().shorten().to_string());
            }
            Ok(out)
        })
        .await
    }

    /// The linked worktrees git lists for a repository (directories that are gone included).
    pub async fn worktrees(&self, repo: &Path) -> Result<Vec<WorktreeInfo>, GitError> {
        let repo = repo.to_path_buf();
        self.guarded(move || worktrees_sync(&repo)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::BreakerSettings;
    use crate::breaker::BreakerState;
    use crate::telemetry::Metrics;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-C"])
            .arg(dir)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn repo(dir: &Path) -> PathBuf {
        let r = dir.join("repo");
        std::fs::create_dir_all(&r).unwrap();
        git(&r, &["init", "-q", "-b", "main"]);
        std::fs::write(r.join("README"), "hello\n").unwrap();
        git(&r, &["add", "README"]);
        git(&r, &["commit", "-q", "-m", "init"]);
        r
    }

    fn setup() -> (Git, Arc<Metrics>, Arc<Breakers>) {
        let metrics = Arc::new(Metrics::new());
        let s = |f, t| BreakerSettings {
            failure_threshold: f,
            success_threshold: 1,
            timeout: Duration::from_secs(t),
            half_open_requests: 1,
        };
        let breakers = Arc::new(Breakers::new(
            &[
                (BreakerName::ClaudeCode, s(5, 300)),
                (BreakerName::TelegramApi, s(3, 60)),
                (BreakerName::GitOperations, s(3, 30)),
            ],
            metrics.clone(),
        ));
        (
            Git::new(
                breakers.clone(),
                Duration::from_secs(60),
                Duration::from_secs(600),
            ),
            metrics,
            breakers,
        )
    }

    #[tokio::test]
    async fn worktree_lifecycle_matches_git_cli() {
        let tmp = tempfile::tempdir().unwrap();
        let r = repo(tmp.path());
        let (g, _, _) = setup();
        let info = g.inspect(&r).await.unwrap();
        assert_eq!(info.default_branch, "main");
        let wt = tmp.path().join("ws/S1");
        assert!(
            g.create_worktree(&r, "feature/x", "main", &wt)
                .await
                .unwrap(),
            "branch created"
        );
        let list = git(&r, &["worktree", "list", "--porcelain"]);
        assert!(
            list.contains(&format!("worktree {}", wt.display())),
            "{list}"
        );
        assert!(list.contains("branch refs/heads/feature/x"), "{list}");
        assert!(!g.is_dirty(&wt).await.unwrap());
        std::fs::write(wt.join("new.txt"), "x").unwrap();
        assert!(g.is_dirty(&wt).await.unwrap(), "untracked files count");
        assert!(matches!(
            g.remove_worktree(&r, &wt, false).await,
            Err(GitError::Dirty(_))
        ));
        // The branch is checked out there, so a second worktree on it is refused.
        let other = tmp.path().join("ws/S2");
        assert!(matches!(
            g.create_worktree(&r, "feature/x", "main", &other).await,
            Err(GitError::BranchCheckedOut { .. })
        ));
        assert!(matches!(
            g.create_worktree(&r, "main", "main", &other).await,
            Err(GitError::BranchCheckedOut { .. })
        ));
        assert!(!other.exists());
        g.remove_worktree(&r, &wt, true).await.unwrap();
        assert!(!wt.exists());
        assert!(!git(&r, &["worktree", "list"]).contains("ws/S1"));
        // The branch stays and is reused by the next worktree.
        assert!(
            !g.create_worktree(&r, "feature/x", "main", &other)
                .await
                .unwrap(),
            "existing branch reused"
        );
        g.remove_worktree(&r, &other, false).await.unwrap();
        g.delete_branch(&r, "feature/x").await.unwrap();
        assert!(!git(&r, &["branch", "--list"]).contains("feature/x"));
        assert!(matches!(
            g.create_worktree(&r, "y", "nope", &other).await,
            Err(GitError::BranchMissing(_))
        ));
        assert!(matches!(
            g.create_worktree(&r, "-x", "main", &other).await,
            Err(GitError::InvalidBranch(_))
        ));
        assert!(matches!(
            g.inspect(tmp.path()).await,
            Err(GitError::NotARepository(_))
        ));
    }

    #[tokio::test]
    async fn a_diff_past_its_cap_is_refused_not_read_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let r = repo(tmp.path());
        let (g, metrics, _) = setup();
        let wt = tmp.path().join("ws/S1");
        g.create_worktree(&r, "big", "main", &wt).await.unwrap();
        // A change whose diff is larger than the daemon reads (as a job could leave).
        let line = "x".repeat(99) + "\n";
        std::fs::write(wt.join("README"), line.repeat(MAX_DIFF / 100 + 1000)).unwrap();
        match g.diff(&wt, "main").await {
            Err(GitError::TooLarge(m)) => assert!(m.contains("larger than 8 MiB"), "{m}"),
            other => panic!("{other:?}"),
        }
        // Not a git failure: the breaker counts nothing.
        assert!(
            metrics
                .encode()
                .contains("televibe_circuit_breaker_failures_total{name=\"git_operations\"} 0")
        );
        // A small change is read as before.
        std::fs::write(wt.join("README"), "changed\n").unwrap();
        assert!(g.diff(&wt, "main").await.unwrap().contains("+changed"));
    }

    #[tokio::test]
    async fn prune_forgets_deleted_worktrees() {
        let tmp = tempfile::tempdir().unwrap();
        let r = repo(tmp.path());
        let (g, _, _) = setup();
        let wt = tmp.path().join("ws/S1");
        g.create_worktree(&r, "b1", "main", &wt).await.unwrap();
        std::fs::remove_dir_all(&wt).unwrap();
        assert_eq!(g.prune(&r).await.unwrap(), 1);
        assert!(!git(&r, &["worktree", "list"]).contains("ws/S1"));
        assert!(g.worktrees(&r).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn three_failures_open_the_breaker_and_a_probe_closes_it() {
        let tmp = tempfile::tempdir().unwrap();
        let r = repo(tmp.path());
        let (g, metrics, breakers) = setup();
        let gauge = || metrics.breaker_gauge(BreakerName::GitOperations);
        assert_eq!(gauge(), 1.0);
        // As root, permissions do not stop reads; a configuration git cannot parse does.
        let head = std::fs::read(r.join(".git/config")).unwrap();
        std::fs::write(r.join(".git/config"), b"[core\n\tbroken = = =\n").unwrap();
        let wt = tmp.path().join("ws/S1");
        for _ in 0..3 {
            let r = g.create_worktree(&r, "b", "main", &wt).await;
            assert!(matches!(r, Err(GitError::Failed(_))), "{r:?}");
        }
        assert_eq!(gauge(), 0.0);
        assert!(
            metrics
                .encode()
                .contains("televibe_circuit_breaker_failures_total{name=\"git_operations\"} 3")
        );
        assert!(matches!(
            g.create_worktree(&r, "b", "main", &wt).await,
            Err(GitError::BreakerOpen(_))
        ));
        std::fs::write(r.join(".git/config"), &head).unwrap();
        // Still open until the timeout has passed, even with the repository repaired.
        assert!(matches!(g.inspect(&r).await, Err(GitError::BreakerOpen(_))));
        tokio::time::pause();
        tokio::time::advance(Duration::from_secs(30)).await;
        breakers.refresh();
        assert_eq!(gauge(), 0.5);
        assert_eq!(
            breakers.get(BreakerName::GitOperations).state(),
            BreakerState::HalfOpen
        );
        tokio::time::resume();
        g.create_worktree(&r, "b", "main", &wt).await.unwrap();
        assert_eq!(gauge(), 1.0);
    }
}
