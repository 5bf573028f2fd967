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
        ]);
    cmd
}

pub(super) fn run_checked(mut cmd: std::process::Command, what: &str) -> Result<Vec<u8>, GitError> {
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
pub(super) fn import_objects_sync(repo_path: &Path, private: &Path) -> Result<usize, GitError> {
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

pub(super) fn git_cli(wt: &Path, args: &[&str]) -> Result<String, GitError> {
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
