//! Who a job runs as (checked by starting an empty sandbox as that user), and the places it writes handed to that user for the job and taken back after it.

use std::path::{Path, PathBuf};

use super::{ISOLATION, SandboxPlan, approval_dir, egress_dir, login_copy, objects_dir, refs_dir};
use crate::config::Config;

/// The user a job runs as: the daemon's own, or `agent.run_as` when the daemon is root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobUser {
    pub uid: u32,
    pub gid: u32,
}

/// Whom jobs run as: `None` when the daemon is not root (jobs keep its user, in a user namespace with
/// no capabilities); the resolved `agent.run_as` when it is.
pub fn job_user(config: &Config) -> Result<Option<JobUser>, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    resolve_user(&config.agent.run_as).map(Some)
}

/// A user name or numeric uid from the password database.
pub fn resolve_user(name: &str) -> Result<JobUser, String> {
    let c = std::ffi::CString::new(name).map_err(|_| format!("{name:?} holds a NUL byte"))?;
    // SAFETY: getpwnam/getpwuid return a pointer into static storage or null; read at once.
    let pw = unsafe {
        match name.parse::<u32>() {
            Ok(uid) => libc::getpwuid(uid),
            Err(_) => libc::getpwnam(c.as_ptr()),
        }
    };
    if pw.is_null() {
        return Err(format!(
            "agent.run_as {name:?} is not a user on this machine (useradd --system televibe-agent)"
        ));
    }
    // SAFETY: non-null pointer from getpw*.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    if uid == 0 {
        return Err(format!(
            "agent.run_as {name:?} is root: name an unprivileged user"
        ));
    }
    Ok(JobUser { uid, gid })
}

impl SandboxPlan {
    /// The places the job writes, handed to its user (when the daemon is root) for the job.
    fn owned_places(&self) -> Vec<PathBuf> {
        let mut places = vec![
            self.worktree.clone(),
            self.git_worktree.clone(),
            refs_dir(&self.run_dir),
            self.run_dir.join("reflogs"),
            objects_dir(&self.run_dir),
            approval_dir(&self.run_dir),
            self.state.clone(),
        ];
        if self.isolate_network {
            places.push(egress_dir(&self.run_dir));
        }
        places
    }

    /// Hands the places the job writes to its user (when it has one of its own): every entry with one
    /// link, without following any. The worktree's `.git` link and the pointers held read-only stay the
    /// daemon's.
    pub fn hand_over(&self) -> Result<(), String> {
        let Some(user) = self.user else {
            return Ok(());
        };
        for place in self.owned_places() {
            self.let_walk_to(&place)?;
            chown_tree(&place, user.uid, user.gid)?;
        }
        self.let_walk_to(&self.git_common)?;
        for keep in ["commondir", "gitdir", "config.worktree"] {
            lchown(&self.git_worktree.join(keep), 0, 0)?;
        }
        lchown(&self.worktree.join(".git"), 0, 0)?;
        for (name, _) in self.agent.files().settings {
            lchown(&self.state.join(name), 0, 0)?;
        }
        // Its read-only copy of the login (0600) must be readable by it.
        lchown(&login_copy(&self.run_dir), user.uid, user.gid)?;
        Ok(())
    }

    /// Takes the places back from the job's user after the job (its processes are gone with its PID
    /// namespace): the daemon's own git commands and later jobs find them as before. An entry with more
    /// than one link is left as it is (it could be another file's name).
    pub fn take_back(&self) -> Result<(), String> {
        if self.user.is_none() {
            return Ok(());
        }
        // SAFETY: getuid/getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        for place in self.owned_places() {
            chown_tree(&place, uid, gid)?;
        }
        Ok(())
    }
}

impl SandboxPlan {
    /// Lets others walk (not list: `o+x`) through each directory above `place` that lies in a
    /// `walkable` directory, that directory included. `orchestrator/` is never on the way.
    fn let_walk_to(&self, place: &Path) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let Some(top) = self.walkable.iter().find(|w| place.starts_with(w)) else {
            return Ok(());
        };
        let mut dir = place.parent();
        while let Some(d) = dir {
            if !d.starts_with(top) {
                break;
            }
            let meta = std::fs::symlink_metadata(d)
                .map_err(|e| format!("cannot open the way to {}: {e}", place.display()))?;
            if meta.is_dir() && meta.permissions().mode() & 0o001 == 0 {
                let mode = meta.permissions().mode() | 0o001;
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| format!("cannot open the way to {}: {e}", place.display()))?;
            }
            dir = d.parent();
        }
        Ok(())
    }
}

/// Whether `user` may walk down to `path`: every directory above it lets others (or that user) pass.
pub(super) fn walkable_by(path: &Path, user: JobUser) -> bool {
    path.ancestors()
        .skip(1)
        .all(|d| std::fs::metadata(d).is_ok_and(|m| may_execute(&m, user)))
}

/// Whether `user` can start the program at `path` (links resolved): every directory on the way lets it
/// pass and the file lets it execute. Checked before a job as `agent.run_as` starts, and by `doctor`.
pub fn runnable_by(path: &Path, user: JobUser) -> bool {
    let Ok(real) = path.canonicalize() else {
        return false;
    };
    walkable_by(&real, user) && std::fs::metadata(&real).is_ok_and(|m| may_execute(&m, user))
}

/// Whether `user` has the execute (for a directory: search) bit on a file with these metadata.
fn may_execute(m: &std::fs::Metadata, user: JobUser) -> bool {
    use std::os::unix::fs::MetadataExt;
    m.mode() & 0o001 != 0
        || (m.uid() == user.uid && m.mode() & 0o100 != 0)
        || (m.gid() == user.gid && m.mode() & 0o010 != 0)
}

fn lchown(path: &Path, uid: u32, gid: u32) -> Result<(), String> {
    match std::os::unix::fs::lchown(path, Some(uid), Some(gid)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot hand {} over: {e}", path.display())),
    }
}

/// `lchown` of `root` and everything under it with one link; nothing is followed.
fn chown_tree(root: &Path, uid: u32, gid: u32) -> Result<(), String> {
    if !root.exists() {
        return Ok(());
    }
    lchown(root, uid, gid)?;
    crate::safe_fs::walk(root, 5_000_000, |rel, entry| {
        if !matches!(entry, crate::safe_fs::Entry::File { links, .. } if links > 1) {
            lchown(&root.join(rel), uid, gid).map_err(|reason| crate::safe_fs::Unsafe {
                path: root.join(rel),
                reason,
            })?;
        }
        Ok(true)
    })
    .map_err(|e| e.to_string())
}

/// Whether bubblewrap can start a sandbox here with the isolation every job gets (as the job's user
/// when the daemon is root): the readiness and `doctor` check.
pub fn check(bwrap: Option<&Path>, config: &Config) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let bwrap = bwrap.ok_or("bwrap not found on PATH (Debian package bubblewrap)")?;
    let mut cmd = std::process::Command::new(bwrap);
    cmd.args(ISOLATION);
    if config.agent.network_allowlist {
        cmd.arg("--unshare-net");
    }
    cmd.args([
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
    .stdin(std::process::Stdio::null());
    if let Some(user) = job_user(config)? {
        cmd.uid(user.uid).gid(user.gid);
    }
    let out = cmd
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
