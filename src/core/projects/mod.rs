//! Projects: register a git repository by path or clone one from a URL, scan `<root>/repos`, list and get.
//!
//! A path is canonicalised (symlinks resolved) before the allowed-roots check, so a symlink inside
//! `repos/` that points elsewhere is refused like the path it points to.
//!
//! A project registered by URL lives in `<root>/repos/<id>` of every node that hosts its sessions (see
//! `clone.rs`).

use crate::audit::Audited;
use std::path::{Path, PathBuf};

mod clone;

use serde::Serialize;

use crate::audit::AuditSubject;
use crate::core::Core;
use crate::domain::Project;
use crate::domain::{is_project_id, slugify};
use crate::errors::{CoreError, ErrorCode};

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
