//! The job sandbox: the bubblewrap command line that confines one agent run to its worktree.
//!
//! Inside, the whole filesystem is read-only; `root` (the daemon's state, every worktree and
//! repository), the config file, the token file, `/run` (the user's bus, agent and container sockets)
//! and the operator's credential places are hidden behind empty mounts. Writable: the session's
//! worktree, the worktree's own git directory, a private copy of the refs (the session's branch is moved
//! after the job), a private object directory (imported into the repository after the job, each object
//! checked), the session's own agent state (named by its driver's state variable), a private `/tmp`, and the paths the
//! operator listed in `agent.sandbox_write`. The job's approval endpoint is bound in at its host path.
//! The job gets its own user namespace with every capability dropped and no nested user namespaces,
//! its own PID namespace (every process it starts ends with it), and with `agent.network = "allowlist"`
//! its own network namespace, whose only way out is the daemon's egress proxy. When the daemon is root
//! the job runs as the unprivileged `agent.run_as` user: the places it writes are handed to that user
//! for the job and taken back after it.

use std::path::{Path, PathBuf};

use crate::agents::AgentDriver;
use crate::config::Config;

mod host;
mod owner;

pub use host::branch_after;
use host::login_copy;
use owner::walkable_by;
pub use owner::{JobUser, check, job_user, resolve_user, runnable_by};

/// How readiness and `doctor` show `agent.sandbox = "none"`.
pub const UNCONFINED: &str = "none (agents run unconfined)";

/// A job's run directory: its approval socket, its copy of the refs, its private objects. Short, so
/// the socket path fits. Under `<root>/run`, not `orchestrator/` (which stays 0700): a job running as
/// `agent.run_as` must be able to walk down to it.
pub fn run_dir(root: &Path, job_id: &str) -> PathBuf {
    let short: String = job_id.chars().filter(|c| *c != '-').take(12).collect();
    root.join("run").join(short)
}

/// Where a session's agent keeps its state (conversations, settings): one per session and agent, so a
/// job sees neither other sessions' conversations nor instructions their jobs left behind, and two
/// agents' files never mix (Claude Code's in `<session>`, the name it always had; another agent's in
/// `<session>.<agent>`).
pub fn agent_state(root: &Path, project_id: &str, session_id: &str, agent: &str) -> PathBuf {
    let dir = root.join("agents").join(project_id);
    if agent == crate::agents::claude::Claude.name() {
        dir.join(session_id)
    } else {
        dir.join(format!("{session_id}.{agent}"))
    }
}

/// The home directory agent `agent` sees: `HOME` from its `env`, else the daemon's.
pub fn agent_home(config: &Config, agent: &str) -> PathBuf {
    config
        .agent
        .of(agent)
        .env
        .get("HOME")
        .cloned()
        .or_else(|| std::env::var("HOME").ok())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
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
    /// The job's agent: which state and credential files the sandbox provides.
    pub agent: &'static dyn AgentDriver,
    pub bwrap: PathBuf,
    /// Directories hidden wholesale (`root` first: everything the daemon keeps).
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
    /// The session's agent state directory (the driver's state variable names it inside).
    pub state: PathBuf,
    /// The project's agent state of earlier versions (one per project), from which a session's
    /// conversations are carried over once.
    pub legacy_state: PathBuf,
    /// The operator's agent state: its settings are copied in read-only, its login in a read-only copy
    /// that cannot refresh.
    pub operator_state: PathBuf,
    /// Extra writable paths from `agent.sandbox_write`.
    pub writable: Vec<PathBuf>,
    /// Executables the job must be able to start even if they live under a hidden directory.
    pub executables: Vec<PathBuf>,
    /// The unprivileged user the job runs as when the daemon is root.
    pub user: Option<JobUser>,
    /// Whether the job gets a network namespace of its own (`agent.network = "allowlist"`).
    pub isolate_network: bool,
    /// What the job's copy of the operator's login carries instead of its access token (isolated network).
    pub login_placeholder: String,
    /// Directories (`root`, the repository) under which the job's user may walk down to its places:
    /// bubblewrap, started as that user, resolves every bind's source on the host.
    pub walkable: Vec<PathBuf>,
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

/// The directory holding the job's egress proxy socket (bound into the sandbox at the same path).
pub fn egress_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("egress")
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
#[allow(clippy::too_many_arguments)]
pub fn plan_for(
    config: &Config,
    agent: &'static dyn AgentDriver,
    bwrap: PathBuf,
    project_id: &str,
    session_id: &str,
    repo: &Path,
    worktree: &Path,
    run_dir: PathBuf,
    program: &Path,
) -> Result<SandboxPlan, String> {
    let (git_common, git_worktree) = crate::git::worktree_git_dirs(repo, worktree)?;
    let mut homes = vec![agent_home(config, agent.name())];
    if let Some(own) = std::env::var_os("HOME").map(PathBuf::from)
        && !homes.contains(&own)
    {
        homes.push(own);
    }
    let root = &config.root;
    let orchestrator = root.join("orchestrator");
    let repo_dir = repo.to_path_buf();
    // All of `root`: the state, every worktree and repository. What the job needs is bound back in.
    let mut hidden_dirs = vec![root.clone()];
    hidden_dirs.extend(config.allowed_roots.iter().cloned());
    let mut hidden_files = vec![config.socket_path.clone()];
    hidden_files.extend(
        config
            .file
            .iter()
            .filter_map(|f| std::path::absolute(f).ok()),
    );
    hidden_files.extend(config.telegram.token_file.clone());
    hidden_files.extend(config.store.password_file.clone());
    // Every agent's own state and login (`~/.claude`, `~/.codex`, or where their variables point), in
    // every home the job might look in, whatever `agent.sandbox_hide` says: a job gets its session's
    // copy only.
    let operator_states: Vec<PathBuf> = crate::agents::all()
        .iter()
        .flat_map(|d| homes.iter().map(|h| d.operator_state(h)))
        .collect();
    for p in config
        .agent
        .sandbox_hide
        .iter()
        .flat_map(|p| expand(p, &homes))
        .chain(operator_states)
    {
        if hidden_dirs.contains(&p) || hidden_files.contains(&p) {
            continue;
        }
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
    let user = job_user(config)?;
    if let Some(u) = user
        && let Some(p) = [program, exe.as_path()]
            .into_iter()
            .find(|p| !runnable_by(p, u))
    {
        return Err(format!(
            "agent.run_as {:?} (uid {}) cannot run {}: install it where every user can run it \
             (e.g. npm install -g, under /usr), or let that user walk to it",
            config.agent.run_as,
            u.uid,
            p.display()
        ));
    }
    Ok(SandboxPlan {
        agent,
        bwrap,
        hidden_dirs,
        hidden_files,
        worktree: worktree.to_path_buf(),
        git_common,
        git_worktree,
        run_dir,
        state: agent_state(root, project_id, session_id, agent.name()),
        legacy_state: orchestrator.join("agents").join(project_id),
        operator_state: agent.operator_state(&agent_home(config, agent.name())),
        writable,
        // Real paths: a bind onto a path through a symbolic link cannot be made, and the link itself
        // resolves inside the sandbox to the same file.
        executables: [exe, program.to_path_buf()]
            .into_iter()
            .filter_map(|p| p.canonicalize().ok())
            .collect(),
        user,
        isolate_network: config.agent.network_allowlist,
        login_placeholder: format!("televibe-placeholder-{}", uuid::Uuid::new_v4().simple()),
        walkable: vec![root.clone(), repo_dir],
    })
}

/// The isolation every sandbox gets, also in the readiness check: no capabilities (bubblewrap drops
/// them only when it runs privileged, so they are dropped by name too), a user namespace the job cannot
/// nest another in, PID, IPC and UTS namespaces, and a session of its own.
pub(super) const ISOLATION: &[&str] = &[
    "--die-with-parent",
    "--unshare-user",
    "--disable-userns",
    "--cap-drop",
    "ALL",
    "--unshare-pid",
    "--unshare-ipc",
    "--unshare-uts",
];

/// A bind whose source the daemon opens itself (`O_NOFOLLOW`) and hands to bubblewrap as a descriptor,
/// so that what is mounted is what was opened.
#[derive(Debug)]
pub struct Bind {
    pub writable: bool,
    pub source: PathBuf,
    pub dest: PathBuf,
}

/// The sources of a plan's binds, opened (`O_PATH`); kept open until the sandbox has started.
pub struct OpenBinds {
    pub fds: Vec<std::os::fd::OwnedFd>,
    binds: Vec<Bind>,
}

impl OpenBinds {
    /// The descriptors bubblewrap must inherit.
    pub fn raw(&self) -> Vec<i32> {
        use std::os::fd::AsRawFd;
        self.fds.iter().map(|f| f.as_raw_fd()).collect()
    }
}

fn open_path(path: &Path) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("NUL in path"))?;
    // SAFETY: a valid C string; the descriptor is owned below. Not O_CLOEXEC: it is cleared for the
    // sandbox's start anyway, and closed with the OwnedFd.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::other(format!(
            "{}: {}",
            path.display(),
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: fresh descriptor.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

impl SandboxPlan {
    /// What is bound in, in mount order (later mounts go on top of earlier ones).
    fn binds(&self) -> Vec<Bind> {
        let mut b = Vec::new();
        let mut add = |writable: bool, source: PathBuf, dest: PathBuf| {
            b.push(Bind {
                writable,
                source,
                dest,
            })
        };
        let common = &self.git_common;
        add(false, common.clone(), common.clone());
        add(true, refs_dir(&self.run_dir), common.join("refs"));
        add(true, self.run_dir.join("reflogs"), common.join("logs"));
        let objects = objects_dir(&self.run_dir);
        add(true, objects.clone(), objects);
        add(true, self.git_worktree.clone(), self.git_worktree.clone());
        // Which repository the worktree belongs to, and its worktree-only config, stay as the daemon
        // wrote them: a rewritten pointer would send the daemon's own git commands to a configuration of
        // the agent's choosing, and a worktree config could name programs for git to run.
        for pointer in ["commondir", "gitdir", "config.worktree"] {
            let p = self.git_worktree.join(pointer);
            add(false, p.clone(), p);
        }
        add(true, self.worktree.clone(), self.worktree.clone());
        let dotgit = self.worktree.join(".git");
        add(false, dotgit.clone(), dotgit);
        add(true, self.state.clone(), self.state.clone());
        // The settings (hooks, plugins) stay as the operator wrote them: a job must not leave hooks
        // behind for later jobs.
        let files = self.agent.files();
        for (name, _) in files.settings {
            let settings = self.state.join(name);
            add(false, settings.clone(), settings);
        }
        // Places whose files would change what later jobs may do (rules that allow commands), empty and
        // read-only.
        for name in files.locked_dirs {
            let dir = self.state.join(name);
            add(false, dir.clone(), dir);
        }
        let login = login_copy(&self.run_dir);
        if let Some(credentials) = files.credentials
            && login.is_file()
        {
            add(false, login, self.state.join(credentials));
        }
        for w in self.writable.iter().filter(|w| w.exists()) {
            add(true, w.clone(), w.clone());
        }
        let approval = approval_dir(&self.run_dir);
        add(true, approval.clone(), approval);
        let egress = egress_dir(&self.run_dir);
        if self.isolate_network && egress.is_dir() {
            add(true, egress.clone(), egress);
        }
        b
    }

    /// Opens every bind's source without following a link at its last step.
    pub fn open_binds(&self) -> std::io::Result<OpenBinds> {
        let binds = self.binds();
        let fds = binds
            .iter()
            .map(|b| open_path(&b.source))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(OpenBinds { fds, binds })
    }

    /// The argv for bubblewrap, ending with `--` and the agent's own argv. Later mounts go on top of
    /// earlier ones, so the order is: the read-only world, the hidden places, then what is let back in
    /// (by descriptor, from `open`).
    pub fn argv(&self, program: &Path, program_args: &[String], open: &OpenBinds) -> Vec<String> {
        let mut a = Vec::new();
        arg(&mut a, ISOLATION);
        if self.isolate_network {
            arg(&mut a, &["--unshare-net"]);
        }
        arg(
            &mut a,
            &[
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
        if !self.isolate_network && Path::new("/run/systemd/resolve").is_dir() {
            let resolve = Path::new("/run/systemd/resolve");
            path_arg(&mut a, "--ro-bind", resolve, resolve);
        }
        if Path::new("/var/run").is_dir() && !Path::new("/var/run").is_symlink() {
            arg(&mut a, &["--tmpfs", "/var/run"]);
        }
        // A place the job's user cannot even walk to is out of its reach already (and bubblewrap,
        // running as that user, could not mount over it).
        let reachable = |p: &&PathBuf| self.user.is_none_or(|u| walkable_by(p, u));
        for dir in self
            .hidden_dirs
            .iter()
            .filter(|d| d.is_dir())
            .filter(reachable)
        {
            a.push("--tmpfs".into());
            a.push(dir.display().to_string());
        }
        for file in self
            .hidden_files
            .iter()
            .filter(|f| f.exists() && !f.is_dir())
            .filter(reachable)
        {
            path_arg(&mut a, "--ro-bind", Path::new("/dev/null"), file);
        }
        for exe in self.executables.iter().filter(|e| e.is_file()) {
            path_arg(&mut a, "--ro-bind", exe, exe);
        }
        for (bind, fd) in open.binds.iter().zip(open.raw()) {
            a.push(
                if bind.writable {
                    "--bind-fd"
                } else {
                    "--ro-bind-fd"
                }
                .into(),
            );
            a.push(fd.to_string());
            a.push(bind.dest.display().to_string());
        }
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
            (
                self.agent.files().state_env.into(),
                self.state.display().to_string(),
            ),
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
        assert_eq!(
            branch_after(dir.path(), "feature/x").unwrap(),
            Some("a".repeat(40))
        );
        assert_eq!(branch_after(dir.path(), "bad").unwrap(), None);
        assert_eq!(branch_after(dir.path(), "missing").unwrap(), None);
        // What the job planted instead of a ref is refused, not followed or waited on.
        std::os::unix::fs::symlink("/etc/hostname", heads.join("linked")).unwrap();
        assert!(branch_after(dir.path(), "linked").is_err());
        let fifo = std::ffi::CString::new(heads.join("fifo").display().to_string()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let e = branch_after(dir.path(), "fifo").unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
    }
}
