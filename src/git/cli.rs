//! What gix does not do, through the git command line, hardened: diffs and change lists, and importing a
//! job's private objects. No repository setting runs a program from here (`hardened_git`).

use std::path::Path;

use super::*;

/// Git's empty tree, as the source of attributes: no attribute applies.
const EMPTY_TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

/// Git with a clean environment and every config-driven command off: fsmonitor, hooks, external diff
/// and textconv, nested repositories (a submodule's own config could name a filter driver), and
/// `.gitattributes` (attributes come from the empty tree, so no filter or diff driver applies). The
/// repositories and worktrees it runs in hold what agents wrote.
pub(super) fn hardened_git() -> std::process::Command {
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
            // A worktree may still belong to a job's user (`agent.run_as`) when a daemon died mid-job;
            // nothing above lets a repository's configuration run a program, so its owner does not matter.
            "-c",
            "safe.directory=*",
        ]);
    cmd
}

/// How long one git command may run (`git.timeout_secs`, set by `Git::new`); past it the command's
/// process group is killed.
static TIMEOUT_SECS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(60);

pub(super) fn set_timeout(timeout: std::time::Duration) {
    TIMEOUT_SECS.store(
        timeout.as_secs().max(1),
        std::sync::atomic::Ordering::Relaxed,
    );
}

pub(super) fn timeout() -> std::time::Duration {
    std::time::Duration::from_secs(TIMEOUT_SECS.load(std::sync::atomic::Ordering::Relaxed))
}

/// The most a git command's output may be: listings of a job's objects and files.
pub(super) const MAX_OUTPUT: usize = 64 << 20;
/// The most of a diff the daemon reads (`/diff`, MCP `get_diff`).
pub(super) const MAX_DIFF: usize = 8 << 20;

/// Runs git with its output capped at `max` bytes and the git timeout; killed past either.
pub(super) fn run_checked_capped(
    cmd: std::process::Command,
    what: &str,
    max: usize,
) -> Result<Vec<u8>, GitError> {
    let out = crate::safe_fs::run_capped(cmd, max, timeout()).map_err(|e| match e {
        crate::safe_fs::CapError::Timeout(t) => GitError::Timeout(t.as_secs()),
        e => failed(format!("git {what}: {e}")),
    })?;
    if !out.status.success() {
        return Err(failed(format!(
            "git {what} exited with {}: {}",
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

pub(super) fn run_checked(cmd: std::process::Command, what: &str) -> Result<Vec<u8>, GitError> {
    run_checked_capped(cmd, what, MAX_OUTPUT)
}

/// The most entries a job's private object directory may hold, and the most bytes.
const MAX_OBJECT_ENTRIES: usize = 1_000_000;
const MAX_OBJECT_BYTES: u64 = 8 << 30;

/// Checks the layout of a job's private object directory with `lstat` only: loose objects
/// (`xx/<38 hex>`), packs and git's own bookkeeping under `pack/` and `info/`, each a regular file with
/// one link. A link, FIFO, socket or device anywhere, a hard link, or a directory where none belongs
/// refuses the whole import: git would follow or block on it. `info/alternates` (which would pull in
/// other repositories' objects) is removed.
fn check_private_objects(private: &Path) -> Result<(), GitError> {
    for name in ["info/alternates", "info/http-alternates"] {
        match crate::safe_fs::remove_file(private, Path::new(name)) {
            // No `info/` at all is fine.
            Err(e) if e.reason == "does not exist" => {}
            r => r.map_err(|e| GitError::Unsafe(e.to_string()))?,
        }
    }
    let mut bytes = 0u64;
    crate::safe_fs::walk(private, MAX_OBJECT_ENTRIES, |rel, entry| {
        let parts: Vec<&str> = rel.iter().filter_map(|p| p.to_str()).collect();
        let at = |reason: String| crate::safe_fs::Unsafe {
            path: private.join(rel),
            reason,
        };
        let fanout = |p: &str| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit());
        match entry {
            crate::safe_fs::Entry::Special(kind) => Err(at(format!(
                "is {kind} in the job's object directory (not followed; the job's objects are not imported)"
            ))),
            crate::safe_fs::Entry::Dir => match parts.as_slice() {
                [d] if fanout(d) || *d == "pack" || *d == "info" => Ok(true),
                ["info", "commit-graphs"] => Ok(true),
                _ => Err(at("is a directory where git keeps none".into())),
            },
            crate::safe_fs::Entry::File { links, len } => {
                if links > 1 {
                    return Err(at(format!("has {links} hard links")));
                }
                bytes += len;
                if bytes > MAX_OBJECT_BYTES {
                    return Err(at(format!(
                        "the job's objects pass {MAX_OBJECT_BYTES} bytes"
                    )));
                }
                Ok(false)
            }
        }
    })
    .map_err(|e| GitError::Unsafe(e.to_string()))
}

/// Copies the objects a sandboxed job wrote into its private directory into the repository, through
/// `index-pack --strict`: every object is stored under the id its content hashes to and checked, so a
/// job cannot replace or shadow an object of the repository. The directory's layout is checked first
/// with `lstat` (`check_private_objects`): nothing in it is followed.
pub(super) fn import_objects_sync(repo_path: &Path, private: &Path) -> Result<usize, GitError> {
    let common = repo_path.join(".git");
    check_private_objects(private)?;
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
    // Beside the private directory, in the run directory no job can write.
    let staging = tempfile::Builder::new()
        .prefix("import")
        .tempdir_in(private.parent().unwrap_or(private))
        .map_err(failed)?;
    let ids_path = staging.path().join("ids");
    std::fs::write(&ids_path, &ids).map_err(failed)?;
    let mut pack = private_git();
    // Written to `<staging>/p-<hash>.pack`; git prints the hash.
    pack.arg("pack-objects")
        .arg(staging.path().join("p"))
        .stdin(std::fs::File::open(&ids_path).map_err(failed)?);
    let hash = run_checked(pack, "pack-objects")?;
    let hash = String::from_utf8_lossy(&hash).trim().to_string();
    if hash.is_empty() || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(failed(format!("git pack-objects printed {hash:?}")));
    }
    let pack_path = staging.path().join(format!("p-{hash}.pack"));
    let mut index = hardened_git();
    index
        .arg("--git-dir")
        .arg(&common)
        .args(["index-pack", "--strict", "--stdin"])
        .stdin(std::fs::File::open(&pack_path).map_err(failed)?);
    run_checked(index, "index-pack --strict").map(|_| count)
}

pub(super) fn git_cli(wt: &Path, args: &[&str]) -> Result<String, GitError> {
    git_cli_capped(wt, args, MAX_OUTPUT)
}

/// [`git_cli`] with its own output cap.
pub(super) fn git_cli_capped(wt: &Path, args: &[&str], max: usize) -> Result<String, GitError> {
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
    let out = run_checked_capped(cmd, &args.join(" "), max)?;
    Ok(String::from_utf8_lossy(&out).to_string())
}

pub(super) fn changes_sync(
    wt: &Path,
    base: Option<&str>,
) -> Result<(Vec<String>, Option<String>), GitError> {
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
