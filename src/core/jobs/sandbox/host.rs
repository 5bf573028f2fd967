//! The host side of a sandbox before and after the job: the run directory, the session's agent state,
//! the read-only login copy, and what the job left (its branch, its git directory), read through `safe_fs`.

use std::path::{Path, PathBuf};

use super::{SandboxPlan, approval_dir, egress_dir, objects_dir, refs_dir};

/// The job's read-only copy of the operator's login, without its refresh token.
pub(super) fn login_copy(run_dir: &Path) -> PathBuf {
    run_dir.join("login.json")
}

impl SandboxPlan {
    /// Makes the host side ready: the run directory with a copy of `refs/` (the session's branch
    /// included even when it is only packed), empty reflog and object directories, the approval
    /// directory, the worktree-only config (empty, so it can be held read-only), the session's agent
    /// state with the operator's settings copied in, and a read-only copy of the operator's login.
    /// The agent state is the job's: nothing in it is followed, and files are replaced, not written
    /// through.
    pub fn prepare(&self, branch: &str, head: Option<&str>) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        let fresh_state = !self.state.exists();
        for dir in [&self.run_dir, &self.state] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        if fresh_state {
            self.carry_over_conversations();
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
        if self.isolate_network {
            std::fs::create_dir_all(egress_dir(&self.run_dir))?;
        }
        let unsafe_io = |e: crate::safe_fs::Unsafe| std::io::Error::other(e.to_string());
        if !crate::safe_fs::exists(&self.git_worktree, Path::new("config.worktree"))
            .map_err(unsafe_io)?
        {
            crate::safe_fs::replace(&self.git_worktree, Path::new("config.worktree"), b"", 0o644)
                .map_err(unsafe_io)?;
        }
        let files = self.agent.files();
        // What a job left where the agent finds rules and hooks goes with this job's run directory (a
        // rename, which follows no link); an empty directory, held read-only, takes its place.
        for name in files.locked_dirs {
            let at = self.state.join(name);
            if std::fs::symlink_metadata(&at).is_ok() {
                std::fs::rename(&at, self.run_dir.join(format!("left-{name}")))?;
            }
            std::fs::create_dir(&at)?;
        }
        for (name, empty) in files.settings {
            let settings = match std::fs::read(self.operator_state.join(name)) {
                Ok(text) => text,
                Err(_) => empty.as_bytes().to_vec(),
            };
            crate::safe_fs::replace(&self.state, Path::new(name), &settings, 0o644)
                .map_err(unsafe_io)?;
        }
        let Some(credentials) = files.credentials else {
            return Ok(());
        };
        // A login left from an earlier version (bound read-write then) goes; the copy below replaces it.
        crate::safe_fs::remove_file(&self.state, Path::new(credentials)).map_err(unsafe_io)?;
        if let Some(login) = std::fs::read(self.operator_state.join(credentials))
            .ok()
            .and_then(|text| {
                self.agent.login_copy(
                    &text,
                    self.isolate_network
                        .then_some(self.login_placeholder.as_str()),
                )
            })
        {
            crate::safe_fs::replace(&self.run_dir, Path::new("login.json"), &login, 0o600)
                .map_err(unsafe_io)?;
            crate::safe_fs::replace(&self.state, Path::new(credentials), b"", 0o600)
                .map_err(unsafe_io)?;
        }
        Ok(())
    }

    /// A session's conversations from the time agent state was kept per project (where in a state
    /// directory the agent keeps a working directory's conversations is its driver's word), copied once
    /// into the session's own state: regular files only, nothing followed.
    fn carry_over_conversations(&self) {
        let Some(conversations) = self.agent.conversations(&self.worktree) else {
            return;
        };
        let from = self.legacy_state.join(&conversations);
        if !from.is_dir() || from.is_symlink() {
            return;
        }
        let to = self.state.join(&conversations);
        let copied = crate::safe_fs::walk(&from, 10_000, |rel, entry| match entry {
            crate::safe_fs::Entry::Dir => {
                std::fs::create_dir_all(to.join(rel)).map_err(|e| crate::safe_fs::Unsafe {
                    path: to.join(rel),
                    reason: e.to_string(),
                })?;
                Ok(true)
            }
            crate::safe_fs::Entry::File { .. } => {
                let text = crate::safe_fs::read(&from, rel, 64 << 20)?;
                crate::safe_fs::replace(&to, rel, &text, 0o600)?;
                Ok(false)
            }
            crate::safe_fs::Entry::Special(_) => Ok(false),
        });
        if let Err(e) = copied {
            tracing::warn!(target: "televibe.runner", error = %e, "Could not carry the session's conversations over to its own agent state");
        }
    }
}

impl SandboxPlan {
    /// The worktree's git directory after a job: git and the daemon read it, so a link, FIFO, socket or
    /// device the job left there is removed (never followed or opened) and named as the job's error.
    pub fn check_git_dir(&self) -> Result<(), String> {
        let mut found = Vec::new();
        crate::safe_fs::walk(&self.git_worktree, 100_000, |rel, entry| {
            if let crate::safe_fs::Entry::Special(kind) = entry {
                found.push((rel.to_path_buf(), kind));
            }
            Ok(true)
        })
        .map_err(|e| e.to_string())?;
        for (rel, _) in &found {
            crate::safe_fs::remove_file(&self.git_worktree, rel).map_err(|e| e.to_string())?;
        }
        match found.first() {
            None => Ok(()),
            Some((rel, kind)) => Err(format!(
                "refused a file the job left: {} is {kind} where git keeps its data (removed, not followed)",
                self.git_worktree.join(rel).display()
            )),
        }
    }
}

/// The commit the job left its branch at, from its private copy of the refs (None: not a plain commit
/// id). The refs are the job's: the file is read without following links or blocking, 4 KiB at most;
/// anything else is the error.
pub fn branch_after(
    run_dir: &Path,
    branch: &str,
) -> Result<Option<String>, crate::safe_fs::Unsafe> {
    let rel = Path::new("heads").join(branch);
    let refs = refs_dir(run_dir);
    match crate::safe_fs::exists(&refs, &rel) {
        Ok(false) => return Ok(None),
        Ok(true) => {}
        Err(e) => return Err(e),
    }
    let text = crate::safe_fs::read_string(&refs, &rel, 4096)?;
    let id = text.trim();
    Ok(
        (id.len() == 40 && id.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| id.to_ascii_lowercase()),
    )
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
