//! The job sandbox: the bubblewrap command line that confines one agent run to its worktree.
//!
//! Inside, the whole filesystem is read-only; the daemon's state (`<root>/orchestrator`), every other
//! worktree and repository, the config file, the token file, `/run` (the user's bus, agent and container
//! sockets) and the operator's credential places are hidden behind empty mounts. Writable: the session's
//! worktree, the worktree's own git directory, a private copy of the refs (the session's branch is moved
//! after the job), a private object directory (imported into the repository after the job, each object
//! checked), the project's agent state (`CLAUDE_CONFIG_DIR`), a private `/tmp`, and the paths the
//! operator listed in `agent.sandbox_write`. The job's approval endpoint is bound in at its host path.
//! The job gets its own PID namespace, so every process it starts, whatever session or group it moves
//! to, ends with it; the network stays (the agent needs its model API).

use std::path::{Path, PathBuf};

use crate::config::Config;

/// How readiness and `doctor` show `agent.sandbox = "none"`.
pub const UNCONFINED: &str = "none (agents run unconfined)";

/// A job's run directory: its approval socket, its copy of the refs, its private objects. Short, so
/// the socket path fits.
pub fn run_dir(orchestrator: &Path, job_id: &str) -> PathBuf {
    let short: String = job_id.chars().filter(|c| *c != '-').take(12).collect();
    orchestrator.join("run").join(short)
}

/// Where a project's agent keeps its state (conversations, settings): one per project, so a job sees
/// neither other projects' conversations nor state other projects' jobs left behind.
pub fn agent_state(orchestrator: &Path, project_id: &str) -> PathBuf {
    orchestrator.join("agents").join(project_id)
}

/// The home directory the agent sees: `HOME` from `agent.env`, else the daemon's.
pub fn agent_home(config: &Config) -> PathBuf {
    config
        .agent
        .env
        .get("HOME")
        .cloned()
        .or_else(|| std::env::var("HOME").ok())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

/// The operator's own agent state, whose credentials and settings a job may use.
fn operator_state(config: &Config) -> PathBuf {
    std::env::var_os("CLAUDE_CONFIG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| agent_home(config).join(".claude"))
}

fn expand(path: &str, homes: &[PathBuf]) -> Vec<PathBuf> {
    match path.strip_prefix("~/") {
        Some(rest) => homes.iter().map(|h| h.join(rest)).collect(),
        None => vec![PathBuf::from(path)],
    }
}

/// Everything the command line is built from; paths are absolute.
#[derive(Debug, Clone)]
pub struct SandboxPlan {
    pub bwrap: PathBuf,
    /// Directories hidden wholesale.
    pub hidden_dirs: Vec<PathBuf>,
    /// Files hidden behind an empty file.
    pub hidden_files: Vec<PathBuf>,
    pub worktree: PathBuf,
    /// The repository's common git directory (`<repo>/.git`).
    pub git_common: PathBuf,
    /// The worktree's own git directory (`<repo>/.git/worktrees/<name>`).
    pub git_worktree: PathBuf,
    /// The job's run directory on the host.
    pub run_dir: PathBuf,
    /// The project's agent state directory (`CLAUDE_CONFIG_DIR` inside).
    pub state: PathBuf,
    /// The operator's agent state: its credentials are shared, its settings copied in read-only.
    pub operator_state: PathBuf,
    /// Extra writable paths from `agent.sandbox_write`.
    pub writable: Vec<PathBuf>,
    /// Executables the job must be able to start even if they live under a hidden directory.
    pub executables: Vec<PathBuf>,
}

/// Where the job's copy of `refs/` lives on the host.
pub fn refs_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("refs")
}

/// The job's private object directory: new objects land here, the repository's are read through it.
pub fn objects_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("objects")
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

/// What one job's sandbox is made of, from the config and where its session lives.
pub fn plan_for(
    config: &Config,
    bwrap: PathBuf,
    project_id: &str,
    repo: &Path,
    worktree: &Path,
    run_dir: PathBuf,
    program: &Path,
) -> Result<SandboxPlan, String> {
    let (git_common, git_worktree) = crate::git::worktree_git_dirs(repo, worktree)?;
    let mut homes = vec![agent_home(config)];
    if let Some(own) = std::env::var_os("HOME").map(PathBuf::from)
        && !homes.contains(&own)
    {
        homes.push(own);
    }
    let root = &config.root;
    let orchestrator = root.join("orchestrator");
    let mut hidden_dirs = vec![
        orchestrator.clone(),
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
    hidden_files.extend(config.telegram.token_file.clone());
    for p in config
        .agent
        .sandbox_hide
        .iter()
        .flat_map(|p| expand(p, &homes))
    {
        if p.is_dir() {
            hidden_dirs.push(p);
        } else {
            hidden_files.push(p);
        }
    }
    let writable: Vec<PathBuf> = config
        .agent
        .sandbox_write
        .iter()
        .flat_map(|p| expand(p, &homes[..1]))
        .collect();
    // A writable path is mounted after the hidden ones: one that contains or lies inside a hidden place
    // would show it again.
    for w in &writable {
        if let Some(h) = hidden_dirs
            .iter()
            .chain(&hidden_files)
            .find(|h| h.starts_with(w) || w.starts_with(h))
        {
            return Err(format!(
                "agent.sandbox_write entry {} overlaps the hidden {}; list a narrower path",
                w.display(),
                h.display()
            ));
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
        state: agent_state(&orchestrator, project_id),
        operator_state: operator_state(config),
        writable,
        // Real paths: a bind onto a path through a symbolic link cannot be made, and the link itself
        // resolves inside the sandbox to the same file.
        executables: [exe, program.to_path_buf()]
            .into_iter()
            .filter_map(|p| p.canonicalize().ok())
            .collect(),
    })
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
                // Sockets of the user's bus, systemd, agents and container engines live here; a read-only
                // mount does not stop connect(2). DNS through systemd-resolved comes back below.
                "--tmpfs",
                "/run",
            ],
        );
        if Path::new("/run/systemd/resolve").is_dir() {
            let resolve = Path::new("/run/systemd/resolve");
            path_arg(&mut a, "--ro-bind", resolve, resolve);
        }
        if Path::new("/var/run").is_dir() && !Path::new("/var/run").is_symlink() {
            arg(&mut a, &["--tmpfs", "/var/run"]);
        }
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
            &refs_dir(&self.run_dir),
            &common.join("refs"),
        );
        path_arg(
            &mut a,
            "--bind",
            &self.run_dir.join("reflogs"),
            &common.join("logs"),
        );
        let objects = objects_dir(&self.run_dir);
        path_arg(&mut a, "--bind", &objects, &objects);
        path_arg(&mut a, "--bind", &self.git_worktree, &self.git_worktree);
        // Which repository the worktree belongs to, and its worktree-only config, stay as the daemon
        // wrote them: a rewritten pointer would send the daemon's own git commands to a configuration of
        // the agent's choosing, and a worktree config could name programs for git to run.
        for pointer in ["commondir", "gitdir", "config.worktree"] {
            let p = self.git_worktree.join(pointer);
            if p.is_file() {
                path_arg(&mut a, "--ro-bind", &p, &p);
            }
        }
        path_arg(&mut a, "--bind", &self.worktree, &self.worktree);
        let dotgit = self.worktree.join(".git");
        path_arg(&mut a, "--ro-bind", &dotgit, &dotgit);
        path_arg(&mut a, "--bind", &self.state, &self.state);
        // The settings (hooks, plugins) stay as the operator wrote them: a job must not leave hooks
        // behind for later jobs.
        let settings = self.state.join("settings.json");
        path_arg(&mut a, "--ro-bind", &settings, &settings);
        let credentials = self.operator_state.join(CREDENTIALS);
        if credentials.is_file() {
            path_arg(
                &mut a,
                "--bind",
                &credentials,
                &self.state.join(CREDENTIALS),
            );
        }
        for w in self.writable.iter().filter(|w| w.exists()) {
            path_arg(&mut a, "--bind", w, w);
        }
        let approval = approval_dir(&self.run_dir);
        path_arg(&mut a, "--bind", &approval, &approval);
        a.push("--chdir".into());
        a.push(self.worktree.display().to_string());
        a.push("--".into());
        // The real path: a link to it may live in a place the sandbox replaces (under /tmp).
        let program = program
            .canonicalize()
            .unwrap_or_else(|_| program.to_path_buf());
        a.push(program.display().to_string());
        a.extend(program_args.iter().cloned());
        a
    }

    /// Variables the agent needs inside: its state directory, and git's private object directory with
    /// the repository's objects as an alternate (read-only).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("CLAUDE_CONFIG_DIR".into(), self.state.display().to_string()),
            (
                "GIT_OBJECT_DIRECTORY".into(),
                objects_dir(&self.run_dir).display().to_string(),
            ),
            (
                "GIT_ALTERNATE_OBJECT_DIRECTORIES".into(),
                self.git_common.join("objects").display().to_string(),
            ),
        ]
    }

    /// Makes the host side ready: the run directory with a copy of `refs/` (the session's branch
    /// included even when it is only packed), empty reflog and object directories, the approval
    /// directory, the worktree-only config (empty, so it can be held read-only), and the project's
    /// agent state with the operator's settings copied in.
    pub fn prepare(&self, branch: &str, head: Option<&str>) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        for dir in [&self.run_dir, &self.state] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let refs = refs_dir(&self.run_dir);
        copy_tree(&self.git_common.join("refs"), &refs)?;
        let own = refs.join("heads").join(branch);
        if !own.exists()
            && let Some(commit) = head
        {
            if let Some(parent) = own.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&own, format!("{commit}\n"))?;
        }
        std::fs::create_dir_all(self.run_dir.join("reflogs"))?;
        std::fs::create_dir_all(objects_dir(&self.run_dir))?;
        std::fs::create_dir_all(self.git_common.join("logs"))?;
        std::fs::create_dir_all(approval_dir(&self.run_dir))?;
        let worktree_config = self.git_worktree.join("config.worktree");
        if !worktree_config.exists() {
            std::fs::write(&worktree_config, "")?;
        }
        let settings = self.state.join("settings.json");
        match std::fs::read(self.operator_state.join("settings.json")) {
            Ok(text) => std::fs::write(&settings, text)?,
            Err(_) if !settings.exists() => std::fs::write(&settings, "{}\n")?,
            Err(_) => {}
        }
        let credentials = self.state.join(CREDENTIALS);
        if self.operator_state.join(CREDENTIALS).is_file() && !credentials.exists() {
            std::fs::write(&credentials, "")?;
        }
        Ok(())
    }
}

/// The operator's login, shared with jobs (a refreshed token is written back in place).
const CREDENTIALS: &str = ".credentials.json";

/// The commit the job left its branch at, from its private copy of the refs (None: not a plain
/// commit id).
pub fn branch_after(run_dir: &Path, branch: &str) -> Option<String> {
    let text = std::fs::read_to_string(refs_dir(run_dir).join("heads").join(branch)).ok()?;
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
        let (common, own) = crate::git::worktree_git_dirs(&repo, &wt).unwrap();
        assert_eq!(own, admin.canonicalize().unwrap());
        assert_eq!(common, repo.join(".git").canonicalize().unwrap());
        std::fs::write(
            wt.join(".git"),
            format!("gitdir: {}\n", repo.join(".git").display()),
        )
        .unwrap();
        assert!(crate::git::worktree_git_dirs(&repo, &wt).is_err());
    }

    #[test]
    fn the_branch_after_the_job_must_be_a_commit_id() {
        let dir = tempfile::tempdir().unwrap();
        let heads = refs_dir(dir.path()).join("heads");
        std::fs::create_dir_all(heads.join("feature")).unwrap();
        std::fs::write(heads.join("feature/x"), format!("{}\n", "a".repeat(40))).unwrap();
        std::fs::write(heads.join("bad"), "ref: refs/heads/main\n").unwrap();
        assert_eq!(branch_after(dir.path(), "feature/x"), Some("a".repeat(40)));
        assert_eq!(branch_after(dir.path(), "bad"), None);
        assert_eq!(branch_after(dir.path(), "missing"), None);
    }
}
