//! The job sandbox: the bubblewrap command line that confines one agent run to its worktree.
//!
//! Inside, the whole filesystem is read-only; the daemon's state (`<root>/orchestrator`), every other
//! worktree and repository, the config file, the token file and the operator's credential directories
//! are hidden behind empty mounts. Writable: the session's worktree, the objects and the worktree's own
//! git directory, a private copy of the branch refs (the session's branch is copied back after the
//! job), the agent's state (`~/.claude`, `~/.claude.json`), a private `/tmp`, and the paths the operator
//! listed in `agent.sandbox_write`. The job's approval endpoint is bound in at its host path. The job
//! gets its own PID namespace, so every process it starts, whatever session or group it moves to, ends
//! with it; the network stays (the agent needs its model API).

use std::path::{Path, PathBuf};

use crate::config::Config;

/// The agent's user-level settings, read-only inside the sandbox.
const USER_SETTINGS: &str = ".claude/settings.json";

/// How readiness and `doctor` show `agent.sandbox = "none"`.
pub const UNCONFINED: &str = "none (agents run unconfined)";

/// Credential places hidden by default (`agent.sandbox_hide`): the agent keeps the network, so what
/// it can read it can send away.
pub const DEFAULT_HIDDEN: &[&str] = &[
    "~/.ssh",
    "~/.gnupg",
    "~/.aws",
    "~/.azure",
    "~/.config/gcloud",
    "~/.config/gh",
    "~/.kube",
    "~/.docker",
    "~/.netrc",
    "~/.git-credentials",
    "~/.npmrc",
    "~/.pypirc",
    "~/.cargo/credentials.toml",
];

/// The home directory the agent sees: `HOME` from `agent.env`, else the daemon's.
pub fn agent_home(config: &Config) -> PathBuf {
    config
        .raw
        .agent
        .env
        .get("HOME")
        .cloned()
        .or_else(|| std::env::var("HOME").ok())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

fn expand(path: &str, home: &Path) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None if path == "~" => home.to_path_buf(),
        None => PathBuf::from(path),
    }
}

/// What one job's sandbox is made of, from the config and where its session lives.
pub fn plan_for(
    config: &Config,
    bwrap: PathBuf,
    repo: &Path,
    worktree: &Path,
    run_dir: PathBuf,
    program: &Path,
) -> Result<SandboxPlan, String> {
    let (git_common, git_worktree) = git_dirs(repo, worktree)?;
    let home = agent_home(config);
    let root = &config.root;
    let mut hidden_dirs = vec![
        root.join("orchestrator"),
        root.join("workspaces"),
        root.join("repos"),
    ];
    hidden_dirs.extend(config.allowed_roots.iter().cloned());
    let mut hidden_files = vec![config.socket_path.clone()];
    hidden_files.extend(
        config
            .file
            .iter()
            .filter_map(|f| std::path::absolute(f).ok()),
    );
    if !config.raw.telegram.token_file.is_empty() {
        hidden_files.extend(std::path::absolute(&config.raw.telegram.token_file).ok());
    }
    for p in &config.raw.agent.sandbox_hide {
        let p = expand(p, &home);
        if p.is_dir() {
            hidden_dirs.push(p);
        } else {
            hidden_files.push(p);
        }
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the daemon binary: {e}"))?;
    Ok(SandboxPlan {
        bwrap,
        hidden_dirs,
        hidden_files,
        worktree: worktree.to_path_buf(),
        git_common,
        git_worktree,
        run_dir,
        writable: config
            .raw
            .agent
            .sandbox_write
            .iter()
            .map(|p| expand(p, &home))
            .collect(),
        home,
        executables: vec![exe, program.to_path_buf()],
    })
}

/// Everything the command line is built from; paths are absolute.
#[derive(Debug, Clone)]
pub struct SandboxPlan {
    pub bwrap: PathBuf,
    /// Directories hidden wholesale: `<root>/orchestrator`, `<root>/workspaces`, `<root>/repos`, the
    /// allowed project roots, the operator's credential directories.
    pub hidden_dirs: Vec<PathBuf>,
    /// Files hidden behind an empty file: the config file, the token file.
    pub hidden_files: Vec<PathBuf>,
    pub worktree: PathBuf,
    /// The repository's common git directory (`<repo>/.git`).
    pub git_common: PathBuf,
    /// The worktree's own git directory (`<repo>/.git/worktrees/<name>`).
    pub git_worktree: PathBuf,
    /// The job's private run directory on the host: `refs/heads` copy, reflogs, approval socket.
    pub run_dir: PathBuf,
    pub home: PathBuf,
    /// Extra writable paths from `agent.sandbox_write`.
    pub writable: Vec<PathBuf>,
    /// Executables the job must be able to start even if they live under a hidden directory.
    pub executables: Vec<PathBuf>,
}

/// Where the job's copy of `refs/heads` lives on the host.
pub fn heads_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("heads")
}

/// The directory holding the job's approval socket (bound into the sandbox at the same path).
pub fn approval_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("approval")
}

fn arg(args: &mut Vec<String>, words: &[&str]) {
    args.extend(words.iter().map(|w| w.to_string()));
}

fn path_arg(args: &mut Vec<String>, flag: &str, from: &Path, to: &Path) {
    args.push(flag.to_string());
    args.push(from.display().to_string());
    args.push(to.display().to_string());
}

impl SandboxPlan {
    /// The argv for bubblewrap, ending with `--` and the agent's own argv. Later mounts go on top of
    /// earlier ones, so the order is: the read-only world, the hidden places, then what is let back in.
    pub fn argv(&self, program: &Path, program_args: &[String]) -> Vec<String> {
        let mut a = Vec::new();
        arg(
            &mut a,
            &[
                "--die-with-parent",
                "--unshare-pid",
                "--unshare-ipc",
                "--unshare-uts",
                "--ro-bind",
                "/",
                "/",
                "--dev",
                "/dev",
                "--proc",
                "/proc",
                "--tmpfs",
                "/tmp",
                "--tmpfs",
                "/var/tmp",
            ],
        );
        for dir in self.hidden_dirs.iter().filter(|d| d.is_dir()) {
            a.push("--tmpfs".into());
            a.push(dir.display().to_string());
        }
        for file in self
            .hidden_files
            .iter()
            .filter(|f| f.exists() && !f.is_dir())
        {
            path_arg(&mut a, "--ro-bind", Path::new("/dev/null"), file);
        }
        for exe in self.executables.iter().filter(|e| e.is_file()) {
            path_arg(&mut a, "--ro-bind", exe, exe);
        }
        let common = &self.git_common;
        path_arg(&mut a, "--ro-bind", common, common);
        path_arg(
            &mut a,
            "--bind",
            &common.join("objects"),
            &common.join("objects"),
        );
        path_arg(
            &mut a,
            "--bind",
            &heads_dir(&self.run_dir),
            &common.join("refs/heads"),
        );
        path_arg(
            &mut a,
            "--bind",
            &self.run_dir.join("reflogs"),
            &common.join("logs"),
        );
        path_arg(&mut a, "--bind", &self.git_worktree, &self.git_worktree);
        // Which repository the worktree belongs to stays as the daemon wrote it: a rewritten pointer
        // would send the daemon's own git commands to a configuration of the agent's choosing.
        for pointer in ["commondir", "gitdir"] {
            let p = self.git_worktree.join(pointer);
            if p.is_file() {
                path_arg(&mut a, "--ro-bind", &p, &p);
            }
        }
        path_arg(&mut a, "--bind", &self.worktree, &self.worktree);
        let dotgit = self.worktree.join(".git");
        path_arg(&mut a, "--ro-bind", &dotgit, &dotgit);
        for state in [".claude", ".claude.json"] {
            let p = self.home.join(state);
            path_arg(&mut a, "--bind", &p, &p);
        }
        // The user-level settings (hooks, plugins) stay as the operator wrote them: a job must not
        // leave hooks behind for later jobs of other projects.
        let settings = self.home.join(USER_SETTINGS);
        path_arg(&mut a, "--ro-bind", &settings, &settings);
        for w in self.writable.iter().filter(|w| w.exists()) {
            path_arg(&mut a, "--bind", w, w);
        }
        let approval = approval_dir(&self.run_dir);
        path_arg(&mut a, "--bind", &approval, &approval);
        a.push("--chdir".into());
        a.push(self.worktree.display().to_string());
        a.push("--".into());
        a.push(program.display().to_string());
        a.extend(program_args.iter().cloned());
        a
    }

    /// Makes the host side ready: the run directory with a copy of `refs/heads` (the session's branch
    /// included even when it is only packed), an empty reflog directory, the approval directory, and
    /// the agent's state paths, which must exist to be bound.
    pub fn prepare(&self, branch: &str, head: Option<&str>) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.run_dir)?;
        let heads = heads_dir(&self.run_dir);
        copy_tree(&self.git_common.join("refs/heads"), &heads)?;
        let own = heads.join(branch);
        if !own.exists()
            && let Some(commit) = head
        {
            if let Some(parent) = own.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&own, format!("{commit}\n"))?;
        }
        std::fs::create_dir_all(self.run_dir.join("reflogs"))?;
        std::fs::create_dir_all(self.git_common.join("logs"))?;
        std::fs::create_dir_all(approval_dir(&self.run_dir))?;
        std::fs::create_dir_all(self.home.join(".claude"))?;
        let settings = self.home.join(USER_SETTINGS);
        if !settings.exists() {
            std::fs::write(&settings, "{}\n")?;
        }
        let state = self.home.join(".claude.json");
        if !state.exists() {
            std::fs::write(&state, "{}\n")?;
        }
        Ok(())
    }
}

/// The commit the job left its branch at, from its private copy of the refs (None: unchanged or not a
/// plain commit id).
pub fn branch_after(run_dir: &Path, branch: &str) -> Option<String> {
    let text = std::fs::read_to_string(heads_dir(run_dir).join(branch)).ok()?;
    let id = text.trim();
    (id.len() == 40 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let dest = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &dest)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}

/// The repository's common git directory and the worktree's own, from the worktree's `.git` file,
/// accepted only when they are where the daemon put them: `<repo>/.git/worktrees/<name>`.
pub fn git_dirs(repo: &Path, worktree: &Path) -> Result<(PathBuf, PathBuf), String> {
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

/// Whether bubblewrap can start a sandbox here: the readiness and `doctor` check.
pub fn check(bwrap: Option<&Path>) -> Result<(), String> {
    let bwrap = bwrap.ok_or("bwrap not found on PATH (Debian package bubblewrap)")?;
    let out = std::process::Command::new(bwrap)
        .args([
            "--die-with-parent",
            "--unshare-pid",
            "--ro-bind",
            "/",
            "/",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--",
            "/bin/true",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bwrap.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "bwrap cannot create a sandbox: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worktree_links_outside_the_repository_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let admin = repo.join(".git/worktrees/S1");
        std::fs::create_dir_all(&admin).unwrap();
        let wt = dir.path().join("wt");
        std::fs::create_dir_all(&wt).unwrap();
        std::fs::write(wt.join(".git"), format!("gitdir: {}\n", admin.display())).unwrap();
        let (common, own) = git_dirs(&repo, &wt).unwrap();
        assert_eq!(own, admin.canonicalize().unwrap());
        assert_eq!(common, repo.join(".git").canonicalize().unwrap());
        std::fs::write(
            wt.join(".git"),
            format!("gitdir: {}\n", repo.join(".git").display()),
        )
        .unwrap();
        assert!(git_dirs(&repo, &wt).is_err());
    }

    #[test]
    fn the_branch_after_the_job_must_be_a_commit_id() {
        let dir = tempfile::tempdir().unwrap();
        let heads = heads_dir(dir.path());
        std::fs::create_dir_all(heads.join("feature")).unwrap();
        std::fs::write(heads.join("feature/x"), format!("{}\n", "a".repeat(40))).unwrap();
        std::fs::write(heads.join("bad"), "ref: refs/heads/main\n").unwrap();
        assert_eq!(branch_after(dir.path(), "feature/x"), Some("a".repeat(40)));
        assert_eq!(branch_after(dir.path(), "bad"), None);
        assert_eq!(branch_after(dir.path(), "missing"), None);
    }
}
