//! Projects cloned from a git URL: `register_project {url}`, the clone staged and renamed into
//! `<root>/repos/<id>`, and the clone each node makes on first use ([`Projects::ensure_clone`]). A repository
//! on the daemon's own disk is cloned only from an allowed root.
//!
//! Which project is a clone: on a store several nodes share, one without a node of its own (a project
//! registered by path names its node); on one node, one with a `remote_url` whose `repo_path` is
//! `<root>/repos/<id>` ([`Projects::clone_path`]).

use std::path::{Path, PathBuf};

use super::*;
use crate::domain::{
    check_clone_dir_name, check_clone_url, clone_name, redact_credentials, slugify,
};
use crate::git::Cloned;

fn invalid_url(message: String) -> CoreError {
    CoreError::new(
        ErrorCode::InvalidPath,
        message,
        format!(
            "give the url of a git repository ({}) and, if its last component is no usable name, a name",
            crate::domain::CLONE_URL_FORMS
        ),
    )
}

fn project_exists(message: String) -> CoreError {
    CoreError::new(
        ErrorCode::ProjectExists,
        message,
        "give another name (register_project {url, name}); a repository already in <root>/repos is registered by path",
    )
}

impl Projects<'_> {
    /// A repository cloned from this machine's disk (`file://…` or an absolute path) must live where a
    /// project may be registered by path: in `<root>/repos` or a `projects.allowed_roots` entry. Cloning it
    /// from elsewhere would hand any repository the daemon can read to the agents.
    fn local_source_allowed(&self, url: &str) -> Result<(), CoreError> {
        let local = match url.strip_prefix("file://") {
            Some(rest) => rest,
            None if url.starts_with('/') => url,
            None => return Ok(()),
        };
        let canonical = Path::new(local)
            .canonicalize()
            .map_err(|e| invalid_path(format!("{local}: {e}")))?;
        if self
            .allowed_project_roots()
            .iter()
            .any(|root| canonical.starts_with(root) && canonical != *root)
        {
            Ok(())
        } else {
            Err(invalid_path(format!(
                "{} is outside the allowed roots: a repository on this machine is cloned only from \
                 <root>/repos or a projects.allowed_roots entry",
                canonical.display()
            )))
        }
    }

    /// Registers a project by cloning `url` into `<root>/repos/<id>`, `id` the slug of `name` (default:
    /// the URL's last path component without `.git`). The same URL registered under that id already is
    /// answered as registered (cloned first if this node has no clone); anything else holding the id or
    /// the directory is refused (PROJECT_EXISTS). A failed or cut clone leaves nothing in `<root>/repos`.
    pub async fn register_project_url(
        &self,
        by: &str,
        url: &str,
        name: Option<&str>,
        trusted: bool,
    ) -> Result<Registration, CoreError> {
        let url = url.trim();
        check_clone_url(url).map_err(|e| invalid_url(e.0))?;
        self.local_source_allowed(url)?;
        let shown = redact_credentials(url);
        let display_name = match name.map(str::trim).filter(|n| !n.is_empty()) {
            Some(n) => n.to_string(),
            None => clone_name(url).ok_or_else(|| {
                invalid_url(format!(
                    "{shown} has no path component to name the project by"
                ))
            })?,
        };
        check_clone_dir_name(&display_name).map_err(|e| invalid_url(e.0))?;
        let id = slugify(&display_name);
        let repos = self.core.layout().repos();
        let dest = repos.canonicalize().unwrap_or(repos).join(&id);
        if let Some(existing) = self.core.store().project(&id).await? {
            if existing.remote_url.as_deref() == Some(url) && self.clone_path(&existing).is_some() {
                self.ensure_clone(&existing).await?;
                return self.registered_again(by, existing, trusted).await;
            }
            return Err(project_exists(format!(
                "project {id} exists already ({}, {})",
                existing.repo_path,
                existing
                    .remote_url
                    .as_deref()
                    .map(redact_credentials)
                    .unwrap_or_else(|| "no remote".into())
            )));
        }
        let taken = || project_exists(format!("{} exists already", dest.display()));
        if dest.symlink_metadata().is_ok() {
            return Err(taken());
        }
        tracing::info!(target: "televibe.projects", project_id = %id, url = %shown, path = %dest.display(), "cloning");
        let started = std::time::Instant::now();
        match self.core.git().clone_repository(url, &dest).await {
            Ok(Cloned::Placed) => {}
            Ok(Cloned::TargetTaken) => return Err(taken()),
            Err(e) => {
                tracing::warn!(target: "televibe.projects", project_id = %id, url = %shown, error = %e, "clone failed");
                return Err(e.into());
            }
        }
        // From here the clone is this call's: any refusal removes it, so a retry starts clean.
        let undo = |e: CoreError| {
            if let Err(rm) = std::fs::remove_dir_all(&dest) {
                tracing::warn!(target: "televibe.projects", path = %dest.display(), error = %rm, "clone not removed");
            }
            e
        };
        let info = self
            .core
            .git()
            .inspect(&dest)
            .await
            .map_err(|e| undo(e.into()))?;
        let project = Project {
            id,
            name: display_name,
            repo_path: dest.display().to_string(),
            default_branch: info.default_branch,
            remote_url: Some(url.to_string()),
            created_at: chrono::Utc::now(),
            trusted,
            // Every node has its own clone.
            node: None,
        };
        self.core
            .store()
            .insert_project(&project)
            .await
            .map_err(|e| undo(e.into()))?;
        tracing::info!(target: "televibe.projects", project_id = %project.id, url = %shown, secs = started.elapsed().as_secs(), "cloned");
        self.registered(by, &project, Some(shown)).await;
        Ok(Registration {
            project,
            already_registered: false,
        })
    }

    /// Where this node keeps the clone of a project registered by URL: `<root>/repos/<id>`. `None` for a
    /// project registered by path. The rule, read from the row alone: the project has a `remote_url`, and
    /// its `repo_path` is `<root>/repos/<id>` (this node's root; every node has the same `root` path). A
    /// repository registered by path at `<root>/repos/<id>` with an `origin` is therefore one too: its
    /// clone path is its own path, and a node without it clones it from its origin.
    pub fn clone_path(&self, project: &Project) -> Option<PathBuf> {
        project.remote_url.as_ref()?;
        let repos = self.core.layout().repos();
        let canonical = repos.canonicalize().unwrap_or_else(|_| repos.clone());
        // Nodes sharing a store: a project without a node of its own was registered by URL, and each node
        // keeps its clone under its own root.
        if self.core.cluster().shared() {
            return project.node.is_none().then(|| canonical.join(&project.id));
        }
        let path = Path::new(&project.repo_path);
        let directly_under = |dir: &Path| {
            path.parent() == Some(dir)
                && path.file_name() == Some(std::ffi::OsStr::new(&project.id))
        };
        (directly_under(&canonical) || directly_under(&repos)).then(|| canonical.join(&project.id))
    }

    /// The repository this node works in for `project`: its `repo_path` for a project registered by path;
    /// for one registered by URL, this node's clone ([`Projects::clone_path`]), cloned from the project's
    /// URL first when it is missing (audited `project.cloned`).
    pub async fn ensure_clone(&self, project: &Project) -> Result<PathBuf, CoreError> {
        let (Some(url), Some(local)) = (project.remote_url.as_deref(), self.clone_path(project))
        else {
            return Ok(PathBuf::from(&project.repo_path));
        };
        if local.symlink_metadata().is_ok() {
            return Ok(local);
        }
        let shown = redact_credentials(url);
        check_clone_url(url).map_err(|e| {
            CoreError::new(
                ErrorCode::GitError,
                format!(
                    "{} is missing on this node and its remote {shown} cannot be cloned: {e}",
                    local.display()
                ),
                "clone the repository there by hand, or register it again by url",
            )
        })?;
        tracing::info!(target: "televibe.projects", project_id = %project.id, url = %shown, path = %local.display(), "cloning a project missing on this node");
        match self.core.git().clone_repository(url, &local).await {
            Ok(Cloned::Placed) => {
                tracing::info!(target: "televibe.projects", project_id = %project.id, url = %shown, "cloned");
                self.core
                    .events()
                    .audit(
                        "daemon",
                        AuditSubject {
                            project_id: Some(project.id.clone()),
                            ..Default::default()
                        },
                        Audited::ProjectCloned {
                            url: shown,
                            path: local.display().to_string(),
                        },
                    )
                    .await;
            }
            // Another call cloned it meanwhile.
            Ok(Cloned::TargetTaken) => {}
            Err(e) => {
                tracing::warn!(target: "televibe.projects", project_id = %project.id, url = %shown, error = %e, "clone failed");
                return Err(e.into());
            }
        }
        Ok(local)
    }
}
