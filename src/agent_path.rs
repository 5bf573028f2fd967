//! Finding the agent command: a path, or a name looked up on `PATH`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The executable `command` resolves to, if any.
pub fn find(command: &str) -> Option<PathBuf> {
    let is_exec = |p: &Path| {
        p.is_file()
            && p.metadata()
                .map(|m| m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
    };
    if command.contains('/') {
        // Absolute, so it means the same inside the worktree the agent starts in.
        let p = std::path::absolute(command).ok()?;
        return is_exec(&p).then_some(p);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .filter(|dir| dir.is_absolute())
            .map(|dir| dir.join(command))
            .find(|p| is_exec(p))
    })
}
