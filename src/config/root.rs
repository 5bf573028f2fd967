//! The default root, and where a normal user's state goes when `/projects` is not theirs to write.

use std::path::{Path, PathBuf};

/// The documented default root.
pub const DEFAULT_ROOT: &str = "/projects";

/// The root when none is configured: `/projects` when this user can write it (or create it); otherwise
/// `$XDG_STATE_HOME/televibe` (else `~/.local/state/televibe`). Answers the root and whether it is the
/// fallback. A configured root is never replaced: it is used or refused.
pub fn default_root() -> (PathBuf, bool) {
    let root = PathBuf::from(DEFAULT_ROOT);
    if writable(&root) {
        return (root, false);
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")));
    match state {
        Some(dir) => (dir.join("televibe"), true),
        None => (root, false),
    }
}

/// Whether `dir` exists and this user may create files in it, or does not exist and its parent allows
/// creating it.
fn writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let target = if dir.exists() {
        dir
    } else {
        dir.parent().unwrap_or(dir)
    };
    let Ok(c) = std::ffi::CString::new(target.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access(2) only reads the NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}
