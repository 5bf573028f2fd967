//! Pushing a session's branch to the project's `origin` with the daemon's own credentials.
//!
//! What is read locally (the branch, the commits to count) goes through gix and the hardened git command
//! line like every other operation. Only the two commands that talk to the remote, `ls-remote` and `push`,
//! get the daemon's own environment (its `HOME`, SSH agent, credential helpers and global configuration),
//! minus the daemon's own secrets, and never anything of a job's: they run in the project's repository
//! (`<repo>/.git`, which a sandboxed job cannot write), with every hook off (`core.hooksPath=/dev/null`,
//! `--no-verify`), no submodule recursion and no prompt. What is pushed is the commit shown in the approval
//! (`<commit>:refs/heads/<branch>`, never a name git would resolve again), and only if the branch is a plain
//! reference to a commit. The remote's answer is read with bounds and told with credentials taken out of
//! any URL in it.

use std::process::{Command, Stdio};

use super::*;
use crate::domain::redact_credentials as redact;

/// The remote a session's branch is pushed to.
pub const REMOTE: &str = "origin";

/// Git's variables that would point a command at another repository, object store or configuration than
/// the one named on its command line; the daemon's environment may carry them, a push must not.
const REPOSITORY_VARIABLES: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_COMMON_DIR",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_NAMESPACE",
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
];

/// At most this many of the remote's branch tips bound the count of commits to push.
const MAX_REMOTE_TIPS: usize = 5000;

/// The most of the remote's words told: lines, and characters.
const MAX_WORDS_LINES: usize = 20;
const MAX_WORDS_CHARS: usize = 1500;

/// What a push would do, shown in its approval request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushPlan {
    /// The remote's push address, credentials taken out.
    pub url: String,
    pub branch: String,
    /// The branch's commit in the project's repository: what is pushed.
    pub head: String,
    /// The branch's commit on the remote; `None`: the branch is new there.
    pub remote_head: Option<String>,
    /// Commits the remote has on none of its branches (as far as this repository knows them).
    pub commits: u64,
    /// The files those commits touch (at most [`MAX_PLAN_FILES`], sorted), so the person sees what goes.
    pub files: Vec<String>,
    /// How many files they touch in all.
    pub files_total: usize,
}

/// The most files of a push named in its approval request.
pub const MAX_PLAN_FILES: usize = 30;

/// Paths whose change runs code elsewhere once pushed: a forge's CI, git hooks managers.
const RUNS_ELSEWHERE: &[&str] = &[
    ".github/",
    ".gitlab-ci.yml",
    ".gitlab/",
    ".circleci/",
    ".buildkite/",
    ".travis.yml",
    "azure-pipelines.yml",
    "Jenkinsfile",
    ".husky/",
    ".pre-commit-config.yaml",
    ".woodpecker",
    ".drone.yml",
];

/// Whether a changed path is one that runs code elsewhere once pushed (CI, hooks).
pub fn runs_elsewhere(path: &str) -> bool {
    RUNS_ELSEWHERE
        .iter()
        .any(|p| path == p.trim_end_matches('/') || path.starts_with(p))
}

impl PushPlan {
    /// `0000000..abc1234` for a new branch, `abc1234..def5678` otherwise.
    pub fn range(&self) -> String {
        let from = self.remote_head.as_deref().unwrap_or("0000000");
        format!("{}..{}", short(from), short(&self.head))
    }
}

/// How a push ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// The remote took it: the range its branch moved (`0000000..abc1234` for a new branch).
    Updated { range: String, new_branch: bool },
    /// The remote's branch was there already.
    UpToDate,
    /// The remote, or git on the way to it, refused: its words, bounded, credentials taken out.
    Refused(String),
}

fn short(id: &str) -> &str {
    &id[..id.len().min(7)]
}

/// How long a whole plan, push or clone may take beyond its one remote command (`git.remote_timeout_secs`):
/// the local reads around it.
const LOCAL_SLACK: std::time::Duration = std::time::Duration::from_secs(60);

impl Git {
    /// What pushing `branch` of `repo` to `origin` would do: the branch's commit, the remote's, how many
    /// commits. Reads the remote with the daemon's credentials.
    pub async fn push_plan(&self, repo: &Path, branch: &str) -> Result<PushPlan, GitError> {
        let (repo, branch) = (repo.to_path_buf(), branch.to_string());
        let limit = self.remote_timeout;
        self.guarded_for(limit + LOCAL_SLACK, move || {
            push_plan_sync(&repo, &branch, limit)
        })
        .await
    }

    /// Pushes commit `head` to `refs/heads/<branch>` of `origin` (no force: the remote takes only what
    /// extends its branch). A refusal is an answer, not a failure of git.
    pub async fn push_branch(
        &self,
        repo: &Path,
        branch: &str,
        head: &str,
    ) -> Result<Pushed, GitError> {
        let (repo, branch, head) = (repo.to_path_buf(), branch.to_string(), head.to_string());
        let limit = self.remote_timeout;
        self.guarded_for(limit + LOCAL_SLACK, move || {
            push_sync(&repo, &branch, &head, limit)
        })
        .await
    }
}

/// The commit `refs/heads/<branch>` names, if it is a plain reference to a commit.
fn branch_head(repo_path: &Path, branch: &str) -> Result<String, GitError> {
    validate_branch(branch)?;
    let repo = open_existing(repo_path)?;
    let full = format!("refs/heads/{branch}");
    let reference = repo
        .try_find_reference(full.as_str())
        .map_err(failed)?
        .ok_or_else(|| GitError::BranchMissing(branch.to_string()))?;
    let id = match reference.target() {
        gix::refs::TargetRef::Object(id) => id.to_owned(),
        gix::refs::TargetRef::Symbolic(to) => {
            return Err(GitError::Unsafe(format!(
                "{full} is a symbolic reference (to {to}); only a branch naming a commit is pushed"
            )));
        }
    };
    let object = repo
        .find_object(id)
        .map_err(|e| GitError::Unsafe(format!("{full} names {id}, which cannot be read: {e}")))?;
    if object.kind != gix::object::Kind::Commit {
        return Err(GitError::Unsafe(format!(
            "{full} names a {}, not a commit",
            object.kind
        )));
    }
    Ok(id.to_string())
}

/// The remote's push address as the daemon's git resolves it (its `insteadOf` rules too), credentials
/// taken out; an error when there is no `origin`.
fn remote_url(repo_path: &Path, limit: Duration) -> Result<String, GitError> {
    let mut get = remote_git(repo_path);
    get.args(["remote", "get-url", "--push", REMOTE]);
    let (ok, out, err) = run_remote(get, "remote get-url", REMOTE, limit)?;
    if !ok {
        return Err(GitError::Remote(format!(
            "the project's repository has no usable remote {REMOTE} (git remote add {REMOTE} <url> in {}): {}",
            repo_path.display(),
            words(None, &err)
        )));
    }
    Ok(redact(out.trim()))
}

/// Git for the commands that talk to the remote, in the project's repository (see [`remote_command`]).
fn remote_git(repo_path: &Path) -> Command {
    let mut cmd = remote_command();
    cmd.arg("--git-dir").arg(repo_path.join(".git"));
    cmd
}

/// Git for the commands that talk to a remote (push, ls-remote, clone): the daemon's environment
/// (credentials), without the daemon's own variables (its secrets among them) and without anything that
/// would point git elsewhere; hooks and submodule recursion off, never a prompt.
pub(super) fn remote_command() -> Command {
    let mut cmd = Command::new("git");
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy();
        if n.starts_with("TELEVIBE_")
            || REPOSITORY_VARIABLES.contains(&n.as_ref())
            || n.starts_with("GIT_CONFIG_KEY_")
            || n.starts_with("GIT_CONFIG_VALUE_")
        {
            cmd.env_remove(&name);
        }
    }
    cmd.env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .args([
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "core.fsmonitor=",
            "-c",
            "submodule.recurse=false",
            "-c",
            "push.recurseSubmodules=no",
        ]);
    cmd
}

/// Runs a command that talks to the remote `who` for at most `limit` (killed past it): its output, or
/// what it said when it failed.
pub(super) fn run_remote(
    cmd: Command,
    what: &str,
    who: &str,
    limit: Duration,
) -> Result<(bool, String, String), GitError> {
    // A remote that does not answer is the remote's trouble, not the repository's: not counted by the
    // breaker (`GitError::Remote`), so a dead origin cannot keep local git work from running.
    let out = crate::safe_fs::run_capped(cmd, MAX_OUTPUT, limit).map_err(|e| match e {
        crate::safe_fs::CapError::Timeout(t) => GitError::Remote(format!(
            "{who} did not answer git {what} within {} s",
            t.as_secs()
        )),
        e => failed(format!("git {what}: {e}")),
    })?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

pub(super) fn push_plan_sync(
    repo_path: &Path,
    branch: &str,
    limit: Duration,
) -> Result<PushPlan, GitError> {
    let head = branch_head(repo_path, branch)?;
    let url = remote_url(repo_path, limit)?;
    let mut ls = remote_git(repo_path);
    ls.args(["ls-remote", "--heads", REMOTE]);
    let (ok, out, err) = run_remote(ls, "ls-remote", REMOTE, limit)?;
    if !ok {
        return Err(GitError::Remote(format!(
            "{REMOTE} cannot be read: {}",
            words(None, &err)
        )));
    }
    let full = format!("refs/heads/{branch}");
    let tips: Vec<(&str, &str)> = out
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(id, _)| id.len() == 40 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    let remote_head = tips
        .iter()
        .find(|(_, name)| *name == full)
        .map(|(id, _)| id.to_string());
    // What the remote has on any branch is not sent again; tips this repository does not know are left out.
    let mut count = hardened_git();
    count
        .arg("--git-dir")
        .arg(repo_path.join(".git"))
        .args(["rev-list", "--count", "--ignore-missing", &head, "--not"])
        .args(tips.iter().take(MAX_REMOTE_TIPS).map(|(id, _)| *id));
    let commits = run_checked(count, "rev-list --count")?;
    let commits = String::from_utf8_lossy(&commits)
        .trim()
        .parse()
        .unwrap_or(0);
    // The files the new commits touch (of the newest 1000 commits, names only, bounded output).
    let mut names = hardened_git();
    names
        .arg("--git-dir")
        .arg(repo_path.join(".git"))
        .args([
            "log",
            "--max-count=1000",
            "--no-renames",
            "--name-only",
            "--format=",
            "-z",
            "--ignore-missing",
            &head,
            "--not",
        ])
        .args(tips.iter().take(MAX_REMOTE_TIPS).map(|(id, _)| *id));
    // A history too large to list (a first push of a big project) is pushed all the same, unlisted.
    let names = run_checked_capped(names, "log --name-only", 4 << 20).unwrap_or_default();
    let mut files: Vec<String> = names
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| {
            String::from_utf8_lossy(n)
                .trim_start_matches('\n')
                .to_string()
        })
        .filter(|n| !n.is_empty())
        .collect();
    files.sort();
    files.dedup();
    let files_total = files.len();
    // Those that run code elsewhere come first, so a cut list never hides them.
    files.sort_by_key(|f| !runs_elsewhere(f));
    files.truncate(MAX_PLAN_FILES);
    Ok(PushPlan {
        url,
        branch: branch.to_string(),
        head,
        remote_head,
        commits,
        files,
        files_total,
    })
}

pub(super) fn push_sync(
    repo_path: &Path,
    branch: &str,
    head: &str,
    limit: Duration,
) -> Result<Pushed, GitError> {
    if head.len() != 40 || !head.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(failed(format!("{head:?} is not a commit id")));
    }
    // The branch must still be a plain reference to a commit; what is pushed is the commit approved.
    branch_head(repo_path, branch)?;
    let full = format!("refs/heads/{branch}");
    let mut push = remote_git(repo_path);
    push.args([
        "push",
        "--porcelain",
        "--no-verify",
        "--no-recurse-submodules",
        REMOTE,
        &format!("{head}:{full}"),
    ]);
    let (ok, out, err) = run_remote(push, "push", REMOTE, limit)?;
    // `<flag>\t<from>:<to>\t<summary>` for the one reference pushed.
    let line = out.lines().find_map(|l| {
        let mut f = l.splitn(3, '\t');
        let (flag, refs, summary) = (f.next()?, f.next()?, f.next().unwrap_or(""));
        refs.ends_with(&format!(":{full}"))
            .then(|| (flag.to_string(), summary.to_string()))
    });
    Ok(match line {
        Some((flag, _)) if flag == "*" => Pushed::Updated {
            range: format!("0000000..{}", short(head)),
            new_branch: true,
        },
        Some((flag, summary)) if flag == " " || flag == "+" => Pushed::Updated {
            range: summary.split_whitespace().next().unwrap_or("").to_string(),
            new_branch: false,
        },
        Some((flag, _)) if flag == "=" => Pushed::UpToDate,
        Some((flag, summary)) => Pushed::Refused(words(Some(&format!("{flag} {summary}")), &err)),
        None if ok => return Err(failed("git push reported nothing about the branch")),
        None => Pushed::Refused(words(None, &err)),
    })
}

/// What the remote (or git on the way to it) said: the reference's summary, then its `remote:`, `error:`
/// and `fatal:` lines (git's hints left out), bounded, with credentials taken out of any URL.
pub(super) fn words(summary: Option<&str>, stderr: &str) -> String {
    let lines: Vec<&str> = summary
        .into_iter()
        .chain(stderr.lines().map(str::trim_end).filter(|l| {
            l.starts_with("remote:") || l.starts_with("error:") || l.starts_with("fatal:")
        }))
        .filter(|l| !l.trim().is_empty())
        .take(MAX_WORDS_LINES)
        .collect();
    let text = if lines.is_empty() {
        "git gave no reason".to_string()
    } else {
        lines.join("\n")
    };
    let text = redact(&text);
    if text.chars().count() > MAX_WORDS_CHARS {
        format!(
            "{}…",
            text.chars().take(MAX_WORDS_CHARS).collect::<String>()
        )
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remote_words_leave_hints_out_and_stay_bounded() {
        let err = "remote: no pushes on Fridays\nhint: Updates were rejected\nerror: failed to push some refs to 'https://u:p@h/r'\n";
        assert_eq!(
            words(Some("! [remote rejected] (pre-receive hook declined)"), err),
            "! [remote rejected] (pre-receive hook declined)\nremote: no pushes on Fridays\nerror: failed to push some refs to 'https://***@h/r'"
        );
        let long = "remote: x\n".repeat(100);
        assert_eq!(words(None, &long).lines().count(), MAX_WORDS_LINES);
        assert_eq!(words(None, "hint: only hints"), "git gave no reason");
    }

    #[test]
    fn a_range_says_new_branches_with_zeros() {
        let plan = PushPlan {
            url: "u".into(),
            branch: "b".into(),
            head: "abcdef0123456789abcdef0123456789abcdef01".into(),
            remote_head: None,
            commits: 1,
            files: Vec::new(),
            files_total: 0,
        };
        assert_eq!(plan.range(), "0000000..abcdef0");
        let moved = PushPlan {
            remote_head: Some("1234567890123456789012345678901234567890".into()),
            ..plan
        };
        assert_eq!(moved.range(), "1234567..abcdef0");
    }
}
