//! Projects: register a git repository by path or clone one from a URL, scan `<root>/repos`, list and get.
//!
//! A path is canonicalised (symlinks resolved) before the allowed-roots check, so a symlink inside
//! `repos/` that points elsewhere is refused like the path it points to.
//!
//! A project registered by URL lives in `<root>/repos/<id>` of every node that hosts its sessions: the row
//! keeps the URL in `remote_url`, and a node without the clone makes it on first use ([`Projects::ensure_clone`]).
//! Which project is such a clone is read from the row (no column says it): a `remote_url`, and a
//! `repo_path` that is `<root>/repos/<id>` ([`Projects::clone_path`]).

use crate::audit::Audited;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::audit::AuditSubject;
use crate::core::Core;
use crate::domain::Project;
use crate::domain::{
    check_clone_dir_name, check_clone_url, clone_name, is_project_id, redact_credentials, slugify,
};
use crate::errors::{CoreError, ErrorCode};
use crate::git::Cloned;

/// The answer of `register_project`.
#[derive(Debug, Clone, Serialize)]
pub struct Registration {
    #[serde(flatten)]
    pub project: Project,
    /// True when the path was registered before; the existing project is returned unchanged.
    pub already_registered: bool,
}

/// The answer of `scan_projects`.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ScanReport {
    pub registered: Vec<Project>,
    pub already_registered: Vec<String>,
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

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

fn invalid_path(message: String) -> CoreError {
    CoreError::new(
        ErrorCode::InvalidPath,
        message,
        "give a git repository inside <root>/repos (or a directory listed in projects.allowed_roots)",
    )
}

/// The projects service: registration, scanning and lookups of the repositories jobs work in.
pub struct Projects<'a> {
    pub(super) core: &'a Core,
}

impl Projects<'_> {
    /// Directories where projects may live, canonicalised.
    fn allowed_project_roots(&self) -> Vec<PathBuf> {
        std::iter::once(self.core.layout().repos())
            .chain(self.core.config().allowed_roots.iter().cloned())
            .filter_map(|p| p.canonicalize().ok())
            .collect()
    }

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

    /// Resolves what a user typed to a canonical directory inside an allowed root.
    pub fn resolve_project_path(&self, typed: &str) -> Result<PathBuf, CoreError> {
        let typed = typed.trim();
        if typed.is_empty() {
            return Err(invalid_path("the path is empty".into()));
        }
        let raw = Path::new(typed);
        let candidate = if raw.is_absolute() {
            raw.to_path_buf()
        } else {
            self.core.layout().repos().join(raw)
        };
        let canonical = candidate
            .canonicalize()
            .map_err(|e| invalid_path(format!("{}: {e}", candidate.display())))?;
        if !canonical.is_dir() {
            return Err(invalid_path(format!(
                "{} is not a directory",
                canonical.display()
            )));
        }
        let inside = self
            .allowed_project_roots()
            .iter()
            .any(|root| canonical.starts_with(root) && canonical != *root);
        if !inside {
            return Err(invalid_path(format!(
                "{} (resolved from {}) is outside the allowed roots",
                canonical.display(),
                candidate.display()
            )));
        }
        Ok(canonical)
    }

    pub async fn list_projects(&self) -> Result<Vec<Project>, CoreError> {
        let mut all = self.core.store().projects().await?;
        for p in &mut all {
            self.localize(p);
        }
        Ok(all)
    }

    /// A project cloned by URL, as this node sees it: its repository is this node's clone.
    fn localize(&self, p: &mut Project) {
        if self.core.cluster().shared()
            && let Some(local) = self.clone_path(p)
        {
            p.repo_path = local.display().to_string();
        }
    }

    pub async fn get_project(&self, id: &str) -> Result<Project, CoreError> {
        let mut p = self.core.store().project(id).await?.ok_or_else(|| {
            CoreError::new(
                ErrorCode::ProjectNotFound,
                format!("no project {id:?}"),
                "list projects with list_projects, or register one with register_project",
            )
        })?;
        self.localize(&mut p);
        Ok(p)
    }

    /// `register_project` with exactly one of `path` (see [`Projects::register_project`]) and `url`
    /// (see [`Projects::register_project_url`]); both or neither is refused (INVALID_PATH).
    pub async fn register_path_or_url(
        &self,
        by: &str,
        path: Option<&str>,
        url: Option<&str>,
        name: Option<&str>,
        trusted: bool,
    ) -> Result<Registration, CoreError> {
        match (path, url) {
            (Some(path), None) => self.register_project(by, path, name, trusted).await,
            (None, Some(url)) => self.register_project_url(by, url, name, trusted).await,
            (Some(_), Some(_)) => Err(CoreError::new(
                ErrorCode::InvalidPath,
                "give either path or url, not both",
                "path registers a repository already under <root>/repos; url clones one into it",
            )),
            (None, None) => Err(CoreError::new(
                ErrorCode::InvalidPath,
                "give path or url",
                "path registers a repository already under <root>/repos; url clones one into it",
            )),
        }
    }

    /// Registers the repository at `path` (absolute, or relative to `<root>/repos`).
    pub async fn register_project(
        &self,
        by: &str,
        path: &str,
        name: Option<&str>,
        trusted: bool,
    ) -> Result<Registration, CoreError> {
        let canonical = self.resolve_project_path(path)?;
        let repo_path = canonical.display().to_string();
        if let Some(existing) = self.core.store().project_by_path(&repo_path).await? {
            return self.registered_again(by, existing, trusted).await;
        }
        let info = self.core.git().inspect(&canonical).await?;
        let dir_name = canonical
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let display_name = name.map(str::to_string).unwrap_or(dir_name);
        let id = self.free_project_id(&slugify(&display_name)).await?;
        let project = Project {
            id,
            name: display_name,
            repo_path,
            default_branch: info.default_branch,
            remote_url: info.remote_url,
            created_at: chrono::Utc::now(),
            trusted,
            node: self.core.cluster().own_node(),
        };
        self.core.store().insert_project(&project).await?;
        self.registered(by, &project, None).await;
        Ok(Registration {
            project,
            already_registered: false,
        })
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

    /// A registration of a project registered before: the project unchanged, marked trusted if asked.
    async fn registered_again(
        &self,
        by: &str,
        mut existing: Project,
        trusted: bool,
    ) -> Result<Registration, CoreError> {
        if trusted && !existing.trusted {
            self.core
                .store()
                .set_project_trusted(&existing.id, true)
                .await?;
            existing.trusted = true;
            self.core
                .events()
                .audit(
                    by,
                    AuditSubject {
                        project_id: Some(existing.id.clone()),
                        ..Default::default()
                    },
                    Audited::ProjectTrusted {
                        path: existing.repo_path.clone(),
                    },
                )
                .await;
        }
        Ok(Registration {
            project: existing,
            already_registered: true,
        })
    }

    /// Metrics, audit (`project.registered`, with the URL cloned from if any) and log of a new project.
    async fn registered(&self, by: &str, project: &Project, url: Option<String>) {
        self.core.metrics().project_known(&project.id);
        self.core
            .events()
            .audit(
                by,
                AuditSubject {
                    project_id: Some(project.id.clone()),
                    ..Default::default()
                },
                Audited::ProjectRegistered {
                    path: project.repo_path.clone(),
                    default_branch: project.default_branch.clone(),
                    trusted: project.trusted,
                    url,
                },
            )
            .await;
        tracing::info!(target: "televibe.projects", project_id = %project.id, path = %project.repo_path, "Project registered");
    }

    /// `base`, or `base-2`, `base-3`… whichever is not taken.
    async fn free_project_id(&self, base: &str) -> Result<String, CoreError> {
        debug_assert!(is_project_id(base));
        for n in 1..1000 {
            let candidate = if n == 1 {
                base.to_string()
            } else {
                let suffix = format!("-{n}");
                let keep = 63 - suffix.len();
                format!(
                    "{}{suffix}",
                    base.chars()
                        .take(keep)
                        .collect::<String>()
                        .trim_end_matches('-')
                )
            };
            if self.core.store().project(&candidate).await?.is_none() {
                return Ok(candidate);
            }
        }
        Err(CoreError::internal(format!(
            "no free project id derived from {base}"
        )))
    }

    /// Registers every git repository one level below `<root>/repos` that is not registered yet.
    pub async fn scan_projects(&self, by: &str) -> Result<ScanReport, CoreError> {
        let repos = self.core.layout().repos();
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&repos)
            .map_err(|e| CoreError::internal(format!("cannot read {}: {e}", repos.display())))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        entries.sort();
        let mut report = ScanReport::default();
        for path in entries {
            let shown = path.display().to_string();
            if !path.is_dir() {
                continue;
            }
            match self.register_project(by, &shown, None, false).await {
                Ok(r) if r.already_registered => report.already_registered.push(r.project.id),
                Ok(r) => report.registered.push(r.project),
                Err(e) if matches!(e.code, ErrorCode::NotARepository | ErrorCode::InvalidPath) => {
                    report.skipped.push(Skipped {
                        path: shown,
                        reason: e.message,
                    })
                }
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }
}
