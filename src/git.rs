//! Git operations (gix): inspect repositories, create and remove linked worktrees, branches, dirtiness, prune.
//!
//! Every operation runs on the blocking pool under a timeout and through the `git_operations` breaker. Only
//! real git failures (errors reading or writing the repository, timeouts) count against the breaker; refusals
//! that git answered correctly (not a repository, branch checked out, dirty worktree) do not.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use gix::bstr::BStr;
use gix::refs::transaction::PreviousValue;

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
}

impl Git {
    pub fn new(breakers: Arc<Breakers>, timeout: Duration) -> Git {
        Git { breakers, timeout }
    }

    async fn guarded<T, F>(&self, op: F) -> Result<T, GitError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, GitError> + Send + 'static,
    {
        let permit = self.breakers.acquire(BreakerName::GitOperations)?;
        let outcome =
            match tokio::time::timeout(self.timeout, tokio::task::spawn_blocking(op)).await {
                Err(_) => Err(GitError::Timeout(self.timeout.as_secs())),
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
            let mut out = git_cli(&wt, &["diff", "--end-of-options", &base])?;
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

/// Opens with a committer fallback, so reflogs can be written on machines without `user.name`.
fn open_opts(path: &Path) -> Result<gix::Repository, gix::Error> {
    let opts = gix::open::Options::default().config_overrides([
        "gitoxide.committer.nameFallback=televibe",
        "gitoxide.committer.emailFallback=televibe@localhost",
    ]);
    gix::open_opts(path, opts)
}

/// Opens a repository that is supposed to exist: any error is a git failure.
fn open_existing(path: &Path) -> Result<gix::Repository, GitError> {
    open_opts(path).map_err(|e| failed(format!("cannot open repository {}: {e}", path.display())))
}

fn inspect_sync(path: &Path) -> Result<RepoInfo, GitError> {
    let repo = match open_opts(path) {
        Ok(r) => r,
        Err(e) if e.is_not_found() => {
            return Err(GitError::NotARepository(path.display().to_string()));
        }
        Err(e) => {
            return Err(failed(format!(
                "cannot open repository {}: {e}",
                path.display()
            )));
        }
    };
    // A `.git` directory or a subdirectory opens as some repository, but the project is its work tree.
    if let Some(workdir) = repo.workdir()
        && workdir.canonicalize().ok() != path.canonicalize().ok()
    {
        return Err(GitError::NotARepository(format!(
            "{} (the repository is {})",
            path.display(),
            workdir.display()
        )));
    }
    let default_branch = repo
        .head_name()
        .map_err(failed)?
        .map(|n| n.shorten().to_string())
        .unwrap_or_else(|| "main".to_string());
    let remote_url = match repo.try_find_remote("origin") {
        None => None,
        Some(r) => r.ok().and_then(|r| {
            r.url(gix::remote::Direction::Fetch)
                .map(|u| u.to_bstring().to_string())
        }),
    };
    Ok(RepoInfo {
        default_branch,
        remote_url,
    })
}

fn adopt_branch_sync(
    repo_path: &Path,
    branch: &str,
    expected: Option<&str>,
    to: &str,
) -> Result<(), GitError> {
    validate_branch(branch)?;
    let repo = open_existing(repo_path)?;
    let to = gix::ObjectId::from_hex(to.as_bytes()).map_err(failed)?;
    let commit = repo.find_object(to).map_err(|e| {
        failed(format!(
            "the job's commit {to} is not in the repository: {e}"
        ))
    })?;
    if commit.kind != gix::object::Kind::Commit {
        return Err(failed(format!("{to} is not a commit")));
    }
    let full = format!("refs/heads/{branch}");
    let current = repo
        .try_find_reference(full.as_str())
        .map_err(failed)?
        .and_then(|r| r.target().try_id().map(|id| id.to_owned()));
    let current_hex = current.map(|id| id.to_string());
    if current_hex.as_deref() != expected {
        return Err(failed(format!(
            "branch {branch} moved during the job (now {}); the job's commit {to} is left unreferenced",
            current_hex.as_deref().unwrap_or("missing")
        )));
    }
    // Every object the new tip reaches must be there: a job's object that failed its check would leave
    // the branch pointing at a history that cannot be read.
    let mut connected = hardened_git();
    connected
        .arg("--git-dir")
        .arg(repo_path.join(".git"))
        .args(["rev-list", "--objects", "--quiet", &to.to_string()]);
    if let Some(old) = expected {
        connected.arg("--not").arg(old);
    }
    run_checked(
        connected,
        "rev-list --objects (connectivity of the job's commit)",
    )?;
    let previous = match current {
        Some(id) => PreviousValue::MustExistAndMatch(gix::refs::Target::Object(id)),
        None => PreviousValue::MustNotExist,
    };
    repo.reference(full, to, previous, "televibe: commits of a sandboxed job")
        .map_err(failed)?;
    Ok(())
}

/// The repository's common git directory and the worktree's own, from the worktree's `.git` file,
/// accepted only when they are where the daemon put them: `<repo>/.git/worktrees/<name>`.
pub fn worktree_git_dirs(repo: &Path, worktree: &Path) -> Result<(PathBuf, PathBuf), String> {
    let common = repo
        .join(".git")
        .canonicalize()
        .map_err(|e| format!("cannot find {}/.git: {e}", repo.display()))?;
    let text = std::fs::read_to_string(worktree.join(".git"))
        .map_err(|e| format!("cannot read {}/.git: {e}", worktree.display()))?;
    let dir = text
        .trim()
        .strip_prefix("gitdir:")
        .map(|d| PathBuf::from(d.trim()))
        .ok_or_else(|| format!("{}/.git is not a worktree link", worktree.display()))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("cannot find {}: {e}", dir.display()))?;
    if dir.parent() != Some(common.join("worktrees").as_path()) {
        return Err(format!(
            "{}/.git points outside {}/worktrees",
            worktree.display(),
            common.display()
        ));
    }
    Ok((common, dir))
}

/// Points the worktree's HEAD back at its session's branch if a job moved it (a checkout of another
/// branch or a detached HEAD inside the sandbox, whose refs were a private copy). True if it was moved.
fn reattach_head_sync(repo: &Path, worktree: &Path, branch: &str) -> Result<bool, GitError> {
    validate_branch(branch)?;
    let (_, own) = worktree_git_dirs(repo, worktree).map_err(failed)?;
    let head = own.join("HEAD");
    let expected = format!("ref: refs/heads/{branch}\n");
    if std::fs::read_to_string(&head).ok().as_deref() == Some(expected.as_str()) {
        return Ok(false);
    }
    let staged = own.join("HEAD.televibe");
    std::fs::write(&staged, &expected).map_err(failed)?;
    std::fs::rename(&staged, &head).map_err(failed)?;
    Ok(true)
}

/// A revision typed by someone (a session's base): a valid branch name, or a full commit id. Never
/// anything git could read as an option.
pub fn validate_revision(rev: &str) -> Result<(), GitError> {
    if rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(());
    }
    validate_branch(rev)
}

fn validate_branch(branch: &str) -> Result<(), GitError> {
    crate::domain::validate_branch(branch).map_err(|e| GitError::InvalidBranch(e.0))?;
    let full = format!("refs/heads/{branch}");
    gix::validate::reference::branch_name(BStr::new(full.as_bytes()))
        .map(|_| ())
        .map_err(|e| GitError::InvalidBranch(format!("invalid branch name {branch:?}: {e}")))
}

/// Where `refs/heads/<branch>` is checked out (main worktree or a linked one), if anywhere.
fn checked_out_at(repo: &gix::Repository, full: &str) -> Result<Option<String>, GitError> {
    if let Some(head) = repo.head_name().map_err(failed)?
        && head.as_bstr() == full
        && let Some(dir) = repo.workdir()
    {
        return Ok(Some(dir.display().to_string()));
    }
    for proxy in repo.worktrees().map_err(failed)? {
        let base = proxy.base().map_err(failed)?;
        let wt = proxy
            .into_repo_with_possibly_inaccessible_worktree()
            .map_err(failed)?;
        if let Some(head) = wt.head_name().map_err(failed)?
            && head.as_bstr() == full
        {
            return Ok(Some(base.display().to_string()));
        }
    }
    Ok(None)
}

fn create_worktree_sync(
    repo_path: &Path,
    branch: &str,
    base: &str,
    dest: &Path,
) -> Result<bool, GitError> {
    validate_branch(branch)?;
    validate_revision(base)
        .map_err(|e| GitError::InvalidBranch(format!("invalid base {base:?}: {e}")))?;
    let repo = open_existing(repo_path)?;
    let full = format!("refs/heads/{branch}");
    let exists = repo
        .try_find_reference(full.as_str())
        .map_err(failed)?
        .is_some();
    if exists && let Some(at) = checked_out_at(&repo, &full)? {
        return Err(GitError::BranchCheckedOut {
            branch: branch.to_string(),
            at,
        });
    }
    if !exists {
        let base_full = format!("refs/heads/{base}");
        let mut base_ref = match repo
            .try_find_reference(base_full.as_str())
            .map_err(failed)?
        {
            Some(r) => r,
            None => return Err(GitError::BranchMissing(base.to_string())),
        };
        let target = base_ref
            .peel_to_commit()
            .map_err(|e| failed(format!("cannot read the commit of {base}: {e}")))?
            .id;
        repo.reference(
            full.clone(),
            target,
            PreviousValue::MustNotExist,
            format!("branch: Created from {base}"),
        )
        .map_err(failed)?;
    }
    let name: gix::refs::FullName = full.clone().try_into().map_err(failed)?;
    let interrupt = AtomicBool::new(false);
    match repo.add_worktree(
        dest,
        gix::worktree::add::Head::Attached(name),
        gix::progress::Discard,
        &interrupt,
    ) {
        Ok(_) => Ok(!exists),
        Err(e) => {
            if !exists {
                // Leave the repository as it was: the branch was ours.
                if let Ok(Some(r)) = repo.try_find_reference(full.as_str()) {
                    let _ = r.delete();
                }
            }
            if let Some(gix::worktree::add::Error::CheckedOut { worktree_dirs, .. }) =
                e.downcast_any_ref()
            {
                return Err(GitError::BranchCheckedOut {
                    branch: branch.to_string(),
                    at: worktree_dirs
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            Err(failed(format!(
                "cannot add worktree {}: {e}",
                dest.display()
            )))
        }
    }
}

fn remove_worktree_sync(repo_path: &Path, dest: &Path, force: bool) -> Result<(), GitError> {
    let repo = open_existing(repo_path)?;
    if !dest.exists() {
        prune_repo(&repo)?;
        return Ok(());
    }
    let how = if force {
        gix::worktree::remove::Force::DiscardChanges
    } else {
        gix::worktree::remove::Force::Never
    };
    let target = repo.prepare_remove_worktree(dest).map_err(|e| {
        failed(format!(
            "{} is not a worktree of {}: {e}",
            dest.display(),
            repo_path.display()
        ))
    })?;
    target.remove(how, gix::progress::Discard).map_err(|e| {
        if let Some(gix::worktree::remove::Error::Dirty { .. }) = e.downcast_any_ref() {
            GitError::Dirty(dest.display().to_string())
        } else {
            failed(format!("cannot remove worktree {}: {e}", dest.display()))
        }
    })
}

fn delete_branch_sync(repo_path: &Path, branch: &str) -> Result<(), GitError> {
    let mut repo = open_existing(repo_path)?;
    let full: gix::refs::FullName = format!("refs/heads/{branch}").try_into().map_err(failed)?;
    repo.delete_local_branches([full])
        .map(|_| ())
        .map_err(|e| failed(format!("cannot delete branch {branch}: {e}")))
}

fn is_dirty_sync(wt: &Path) -> Result<bool, GitError> {
    let repo = open_existing(wt)?;
    let dirwalk = repo.dirwalk_options().map_err(failed)?;
    let mut iter = repo
        .status(gix::progress::Discard)
        .map_err(failed)?
        .index_worktree_options_mut(|o| o.dirwalk_options = Some(dirwalk))
        .untracked_files(gix::status::UntrackedFiles::Files)
        // A nested repository is the agent's: looking inside it would honour its config (filter drivers).
        .index_worktree_submodules(gix::status::Submodule::Given {
            ignore: gix::submodule::config::Ignore::All,
            check_dirty: false,
        })
        .into_iter(None)
        .map_err(failed)?;
    Ok(iter.next().transpose().map_err(failed)?.is_some())
}

fn prune_repo(repo: &gix::Repository) -> Result<usize, GitError> {
    let mut pruned = 0;
    for proxy in repo.worktrees().map_err(failed)? {
        // Unlocked, and its `.git` link is gone (with or without the directory around it).
        if proxy.is_prunable() {
            // As `git worktree prune` does, only the repository's private record of the worktree goes;
            // a directory still at its path (files put back by hand) is somebody's data and stays.
            let record = proxy.git_dir();
            if record.parent().and_then(Path::file_name) != Some("worktrees".as_ref()) {
                return Err(failed(format!(
                    "unexpected worktree record {}",
                    record.display()
                )));
            }
            std::fs::remove_dir_all(record).map_err(|e| {
                failed(format!(
                    "cannot prune the stale worktree entry {}: {e}",
                    record.display()
                ))
            })?;
            pruned += 1;
        }
    }
    Ok(pruned)
}

fn prune_sync(repo_path: &Path) -> Result<usize, GitError> {
    prune_repo(&open_existing(repo_path)?)
}

/// Git's empty tree, as the source of attributes: no attribute applies.
const EMPTY_TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

/// Git with a clean environment and every config-driven command off: fsmonitor, hooks, external diff
/// and textconv, nested repositories (a submodule's own config could name a filter driver), and
/// `.gitattributes` (attributes come from the empty tree, so no filter or diff driver applies). The
/// repositories and worktrees it runs in hold what agents wrote.
fn hardened_git() -> std::process::Command {
    let mut cmd = std::process::Command::new("git");
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_OPTIONAL_LOCKS", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ATTR_SOURCE", EMPTY_TREE)
        .args([
            "-c",
            "core.fsmonitor=",
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "diff.external=",
            "-c",
            "core.pager=cat",
            "-c",
            "diff.ignoreSubmodules=all",
            "-c",
            "submodule.recurse=false",
            "-c",
            "status.submoduleSummary=false",
        ]);
    cmd
}

fn run_checked(mut cmd: std::process::Command, what: &str) -> Result<Vec<u8>, GitError> {
    let out = cmd
        .output()
        .map_err(|e| failed(format!("cannot run git: {e}")))?;
    if !out.status.success() {
        return Err(failed(format!(
            "git {what} exited with {}: {}",
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

/// Copies the objects a sandboxed job wrote into its private directory into the repository, through
/// `index-pack --strict`: every object is stored under the id its content hashes to and checked, so a
/// job cannot replace or shadow an object of the repository. Alternates the job may have planted are
/// removed first (they could pull in other repositories' objects).
fn import_objects_sync(repo_path: &Path, private: &Path) -> Result<usize, GitError> {
    let common = repo_path.join(".git");
    let _ = std::fs::remove_dir_all(private.join("info"));
    let private_git = || {
        let mut cmd = hardened_git();
        cmd.arg("--git-dir")
            .arg(&common)
            .env("GIT_OBJECT_DIRECTORY", private)
            .env("GIT_ALTERNATE_OBJECT_DIRECTORIES", "");
        cmd
    };
    let mut list = private_git();
    list.args([
        "cat-file",
        "--batch-all-objects",
        "--batch-check=%(objectname)",
    ]);
    let ids = run_checked(list, "cat-file --batch-all-objects")?;
    let count = ids.iter().filter(|b| **b == b'\n').count();
    if count == 0 {
        return Ok(0);
    }
    let pack_path = private.with_extension("pack");
    let ids_path = private.with_extension("ids");
    std::fs::write(&ids_path, &ids).map_err(failed)?;
    let mut pack = private_git();
    pack.args(["pack-objects", "--stdout"])
        .stdin(std::fs::File::open(&ids_path).map_err(failed)?)
        .stdout(std::fs::File::create(&pack_path).map_err(failed)?);
    let packed = pack
        .status()
        .map_err(|e| failed(format!("cannot run git: {e}")));
    let _ = std::fs::remove_file(&ids_path);
    if !packed?.success() {
        let _ = std::fs::remove_file(&pack_path);
        return Err(failed("git pack-objects of the job's objects failed"));
    }
    let mut index = hardened_git();
    index
        .arg("--git-dir")
        .arg(&common)
        .args(["index-pack", "--strict", "--stdin"])
        .stdin(std::fs::File::open(&pack_path).map_err(failed)?);
    let indexed = run_checked(index, "index-pack --strict");
    let _ = std::fs::remove_file(&pack_path);
    indexed.map(|_| count)
}

fn git_cli(wt: &Path, args: &[&str]) -> Result<String, GitError> {
    let mut cmd = hardened_git();
    cmd.arg("-C").arg(wt);
    match args.split_first() {
        // Options go before any `--end-of-options`, right after the subcommand.
        Some((&"diff", rest)) => {
            cmd.args([
                "diff",
                "--no-ext-diff",
                "--no-textconv",
                "--ignore-submodules=all",
            ])
            .args(rest);
        }
        Some((&"status", rest)) => {
            cmd.args(["status", "--ignore-submodules=all"]).args(rest);
        }
        _ => {
            cmd.args(args);
        }
    }
    let out = run_checked(cmd, &args.join(" "))?;
    Ok(String::from_utf8_lossy(&out).to_string())
}

fn changes_sync(wt: &Path, base: Option<&str>) -> Result<(Vec<String>, Option<String>), GitError> {
    let mut files: Vec<String> =
        git_cli(wt, &["status", "--porcelain=v1", "-uall", "--no-renames"])?
            .lines()
            .filter(|l| l.len() > 3)
            .map(|l| l[3..].trim_matches('"').to_string())
            .collect();
    let mut stat = None;
    if let Some(base) = base {
        validate_revision(base)?;
        let range = format!("{base}..HEAD");
        files.extend(
            git_cli(wt, &["diff", "--name-only", "--end-of-options", &range])?
                .lines()
                .map(str::to_string),
        );
        let short = git_cli(wt, &["diff", "--shortstat", "--end-of-options", base])?
            .trim()
            .to_string();
        stat = (!short.is_empty()).then_some(short);
    }
    let untracked = git_cli(wt, &["ls-files", "--others", "--exclude-standard"])?
        .lines()
        .count();
    if untracked > 0 {
        let extra = format!(
            "{untracked} untracked file{}",
            if untracked == 1 { "" } else { "s" }
        );
        stat = Some(match stat {
            Some(s) => format!("{s}, {extra}"),
            None => extra,
        });
    }
    files.sort();
    files.dedup();
    Ok((files, stat))
}

fn worktrees_sync(repo_path: &Path) -> Result<Vec<WorktreeInfo>, GitError> {
    let repo = open_existing(repo_path)?;
    let mut out = Vec::new();
    for proxy in repo.worktrees().map_err(failed)? {
        let path = proxy.base().map_err(failed)?;
        let branch = proxy
            .into_repo_with_possibly_inaccessible_worktree()
            .ok()
            .and_then(|r| r.head_name().ok().flatten())
            .map(|n| n.shorten().to_string());
        out.push(WorktreeInfo { path, branch });
    }
    Ok(out)
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
            Git::new(breakers.clone(), Duration::from_secs(60)),
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
