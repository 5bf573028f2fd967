//! The directory layout under `root`: `repos/`, `workspaces/`, `orchestrator/{state.db, backups/, logs/{orchestrator.log, audit.log, jobs/}}`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Paths derived from the configured root.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
        }
    }
    pub fn repos(&self) -> PathBuf {
        self.root.join("repos")
    }
    pub fn workspaces(&self) -> PathBuf {
        self.root.join("workspaces")
    }
    pub fn orchestrator(&self) -> PathBuf {
        self.root.join("orchestrator")
    }
    pub fn state_db(&self) -> PathBuf {
        self.orchestrator().join("state.db")
    }
    pub fn backups(&self) -> PathBuf {
        self.orchestrator().join("backups")
    }
    pub fn logs(&self) -> PathBuf {
        self.orchestrator().join("logs")
    }
    pub fn job_logs(&self) -> PathBuf {
        self.logs().join("jobs")
    }
    pub fn audit_log(&self) -> PathBuf {
        self.logs().join("audit.log")
    }
    /// Where the daemon writes the address its HTTP server actually bound (useful with port 0).
    pub fn http_addr_file(&self) -> PathBuf {
        self.orchestrator().join("http.addr")
    }

    /// Creates the directories; `orchestrator/` is private to the daemon's user (0700).
    pub fn create(&self) -> std::io::Result<()> {
        for dir in [
            self.repos(),
            self.workspaces(),
            self.orchestrator(),
            self.backups(),
            self.job_logs(),
        ] {
            std::fs::create_dir_all(&dir).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        std::fs::set_permissions(self.orchestrator(), std::fs::Permissions::from_mode(0o700))?;
        Ok(())
    }
}
