//! The state lock: one `flock` on `orchestrator/daemon.lock`, held by the daemon for its whole life and by
//! the offline commands (`backup restore`, `reconstruct`, `backup now` without a daemon) while they work,
//! so none of them touches `state.db` while another has it open.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Held while alive; the kernel releases it when the process ends, however it ends.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

/// Where the lock lives.
pub fn path(orchestrator: &Path) -> PathBuf {
    orchestrator.join("daemon.lock")
}

impl StateLock {
    /// Takes the lock without waiting; `Err` says who is likely to hold it.
    pub fn acquire(orchestrator: &Path) -> Result<StateLock, String> {
        let path = path(orchestrator);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        // SAFETY: flock(2) on a descriptor this function owns; no memory effects.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            return Err(if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                format!(
                    "{} is held: the daemon is running (or starting), or another offline command is \
                     working on its state; stop it first (systemctl stop televibe)",
                    path.display()
                )
            } else {
                format!("cannot lock {}: {err}", path.display())
            });
        }
        Ok(StateLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path()).unwrap();
        let err = StateLock::acquire(dir.path()).unwrap_err();
        assert!(err.contains("daemon is running"), "{err}");
        drop(first);
        // Another test's process spawn may hold a copy of the lock's descriptor between its fork and its
        // exec (the lock goes with the last copy): a moment later it is free.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while let Err(e) = StateLock::acquire(dir.path()) {
            assert!(std::time::Instant::now() < deadline, "{e}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
