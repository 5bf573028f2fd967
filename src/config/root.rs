//! The default root, and where a normal user's state goes when `/projects` is not theirs to write.

use std::path::{Path, PathBuf};

/// The documented default root.
const DEFAULT_ROOT: &str = "/projects";

/// `/projects` when this user can write it (or create it); otherwise, for a normal user without it,
/// `$XDG_STATE_HOME/televibe` (else `~/.local/state/televibe`). Any other root is kept as configured.
pub fn default_root_fallback(root: PathBuf) -> PathBuf {
    if root != Path::new(DEFAULT_ROOT) || writable(&root) {
        return root;
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")));
    match state {
        Some(dir) => dir.join("televibe"),
        None => root,
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
