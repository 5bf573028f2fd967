//! Repository operations through gix (blocking; the `Git` handle runs them on the blocking pool): open,
//! inspect, worktrees, branches, prune.

use gix::bstr::BStr;
use gix::refs::transaction::PreviousValue;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use super::*;

/// Opens with a committer fallback, so reflogs can be written on machines without `user.name`.
pub(super) fn open_opts(path: &Path) -> Result<gix::Repository, gix::Error> {
    let opts = gix::open::Options::default().config_overrides([
        "gitoxide.committer.nameFallback=televibe",
        "gitoxide.committer.emailFallback=televibe@localhost",
    ]);
    gix::open_opts(path, opts)
}

/// Opens a repository that is supposed to exist: any error is a git failure.
pub(super) fn open_existing(path: &Path) -> Result<gix::Repository, GitError> {
    open_opts(path).map_err(|e| failed(format!("cannot open repository {}: {e}", path.display())))
}

pub(super) fn inspect_sync(path: &Path) -> Result<RepoInfo, GitError> {
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

pub(super) fn adopt_branch_sync(
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
    // The worktree is the job's: its `.git` link is read without following links or blocking.
    let text = crate::safe_fs::read_string(worktree, Path::new(".git"), 4096)
        .map_err(|e| format!("cannot read the worktree's git link: {e}"))?;
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
/// The worktree's git directory is the job's: HEAD is read without following links or blocking, and
/// written by a staged file renamed over it (a link planted at either name is replaced, not written
/// through).
pub(super) fn reattach_head_sync(
    repo: &Path,
    worktree: &Path,
    branch: &str,
) -> Result<bool, GitError> {
    validate_branch(branch)?;
    let (_, own) = worktree_git_dirs(repo, worktree).map_err(failed)?;
    let expected = format!("ref: refs/heads/{branch}\n");
    match crate::safe_fs::read_string(&own, Path::new("HEAD"), 4096) {
        Ok(text) if text == expected => return Ok(false),
        Ok(_) => {}
        // Whatever stands there (a link, a FIFO, a huge file) is replaced below.
        Err(e) => {
            tracing::warn!(target: "televibe.git", error = %e, "The worktree's HEAD is not a plain file")
        }
    }
    crate::safe_fs::replace(&own, Path::new("HEAD"), expected.as_bytes(), 0o644)
        .map_err(|e| GitError::Unsafe(e.to_string()))?;
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

pub(super) fn validate_branch(branch: &str) -> Result<(), GitError> {
    crate::domain::validate_branch(branch).map_err(|e| GitError::InvalidBranch(e.0))?;
    let full = format!("refs/heads/{branch}");
    gix::validate::reference::branch_name(BStr::new(full.as_bytes()))
        .map(|_| ())
        .map_err(|e| GitError::InvalidBranch(format!("invalid branch name {branch:?}: {e}")))
}

/// Where `refs/heads/<branch>` is checked out (main worktree or a linked one), if anywhere.
pub(super) fn checked_out_at(
    repo: &gix::Repository,
    full: &str,
) -> Result<Option<String>, GitError> {
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

pub(super) fn create_worktree_sync(
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

pub(super) fn remove_worktree_sync(
    repo_path: &Path,
    dest: &Path,
    force: bool,
) -> Result<(), GitError> {
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

pub(super) fn delete_branch_sync(repo_path: &Path, branch: &str) -> Result<(), GitError> {
    let mut repo = open_existing(repo_path)?;
    let full: gix::refs::FullName = format!("refs/heads/{branch}").try_into().map_err(failed)?;
    repo.delete_local_branches([full])
        .map(|_| ())
        .map_err(|e| failed(format!("cannot delete branch {branch}: {e}")))
}

pub(super) fn is_dirty_sync(wt: &Path) -> Result<bool, GitError> {
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

pub(super) fn prune_repo(repo: &gix::Repository) -> Result<usize, GitError> {
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

pub(super) fn prune_sync(repo_path: &Path) -> Result<usize, GitError> {
    prune_repo(&open_existing(repo_path)?)
}

pub(super) fn worktrees_sync(repo_path: &Path) -> Result<Vec<WorktreeInfo>, GitError> {
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
