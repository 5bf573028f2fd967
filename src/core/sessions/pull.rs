//! Pull requests (`/pr`, `open_pull_request`): a session's branch proposed against its base branch on the
//! forge its project's `origin` names (GitHub), with the daemon's token (`github.token`), which no job ever
//! sees. Whether the branch is on the remote is not checked here: the forge says so, and is told as it is.

use std::path::Path;

use serde::Serialize;

use super::Sessions;
use crate::audit::{AuditSubject, Audited};
use crate::domain::{Job, Session};
use crate::errors::{CoreError, ErrorCode};
use crate::forge::{Forge, ForgeError, PullRequestAsk, github::GitHub};

/// The longest title made from an instruction (GitHub takes 256; a phone shows less).
const TITLE_MAX: usize = 72;

/// A pull request opened for a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PullRequestOpened {
    pub session_id: String,
    /// `owner/repo`.
    pub repository: String,
    pub number: u64,
    pub url: String,
    pub head: String,
    pub base: String,
    pub title: String,
}

impl Sessions<'_> {
    /// Opens a pull request of the session's branch into its base branch; `title` defaults to the first
    /// line of the session's first instruction, else the branch. Audited as `session.pull_request`.
    pub async fn open_pull_request(
        &self,
        actor: &str,
        session_id: &str,
        title: Option<&str>,
    ) -> Result<PullRequestOpened, CoreError> {
        let s = self.get_session(session_id).await?;
        self.core
            .cluster()
            .on_this_node(&s, "opening a pull request")?;
        let settings = &self.core.config().github;
        let Some(token) = settings.token.as_deref() else {
            return Err(forge_error(
                "no GitHub token is set: pull requests cannot be opened".into(),
                "set TELEVIBE_GITHUB__TOKEN (or github.token in config.toml) to a token that may open pull \
                 requests on the repository, then restart the daemon",
            ));
        };
        let project = self.core.projects().get_project(&s.project_id).await?;
        let origin = self
            .core
            .git()
            .inspect(Path::new(&project.repo_path))
            .await?
            .remote_url
            .ok_or_else(|| {
                forge_error(
                    format!("project {} has no origin remote", project.id),
                    "add one in the project's repository (git remote add origin git@github.com:owner/repo.git)",
                )
            })?;
        let forge = GitHub::new(&settings.api_url, token);
        let repo = forge.repo_of(&origin).map_err(|e| told(e, &s))?;
        let jobs = self
            .core
            .jobs()
            .list_jobs(Some(&s.id), None, Some(500))
            .await?;
        let title = match title.map(str::trim).filter(|t| !t.is_empty()) {
            Some(t) => crate::text::cut(t, 256),
            None => default_title(&s, &jobs),
        };
        let body = self.body(&s, &jobs).await;
        let ask = PullRequestAsk {
            repo: &repo,
            head: &s.branch,
            base: &s.base_branch,
            title: &title,
            body: &body,
        };
        let pr = forge
            .open_pull_request(&ask)
            .await
            .map_err(|e| told(e, &s))?;
        let opened = PullRequestOpened {
            session_id: s.id.clone(),
            repository: repo.to_string(),
            number: pr.number,
            url: pr.url,
            head: s.branch.clone(),
            base: s.base_branch.clone(),
            title,
        };
        self.core
            .events()
            .audit(
                actor,
                AuditSubject::session(&s),
                Audited::PullRequestOpened {
                    repository: opened.repository.clone(),
                    number: opened.number,
                    url: opened.url.clone(),
                    head: opened.head.clone(),
                    base: opened.base.clone(),
                },
            )
            .await;
        Ok(opened)
    }

    /// What the pull request says: where it comes from, the session's instructions, the change's size.
    async fn body(&self, s: &Session, jobs: &[Job]) -> String {
        let mut out = format!(
            "Opened from TeleVibeCode session {} (project {}): branch `{}` into `{}`.\n",
            s.id, s.project_id, s.branch, s.base_branch
        );
        // The agents' instructions only: a push job's is the command the daemon ran.
        let jobs: Vec<&Job> = jobs
            .iter()
            .filter(|j| j.kind != crate::domain::JobKind::Push)
            .collect();
        if !jobs.is_empty() {
            out.push_str("\nInstructions, oldest first:\n");
            for j in jobs.iter().rev().take(20) {
                out.push_str(&format!(
                    "- {} ({})\n",
                    crate::text::cut(first_line(&j.instruction), 120),
                    j.status.as_str()
                ));
            }
            if jobs.len() > 20 {
                out.push_str(&format!("- … and {} more\n", jobs.len() - 20));
            }
        }
        let wt = Path::new(&s.worktree_path);
        if wt.is_dir()
            && let Ok((_, Some(stat))) = self.core.git().changes(wt, Some(&s.base_branch)).await
        {
            out.push_str(&format!("\n```\n{}\n```\n", stat.trim()));
        }
        out
    }
}

fn first_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

/// The first line of the session's first instruction, cut; the branch when there is none.
fn default_title(s: &Session, jobs: &[Job]) -> String {
    jobs.last()
        .map(|j| first_line(&j.instruction))
        .filter(|l| !l.is_empty())
        .map(|l| crate::text::cut(l, TITLE_MAX))
        .unwrap_or_else(|| s.branch.clone())
}

fn forge_error(message: String, suggestion: &str) -> CoreError {
    CoreError::new(ErrorCode::ForgeError, message, suggestion)
}

/// A forge's refusal for people: its words, and what to do.
fn told(e: ForgeError, s: &Session) -> CoreError {
    let suggestion = match &e {
        ForgeError::NotItsRepository(_) => {
            "pull requests are opened on GitHub only; point the project's origin at a GitHub repository, \
             or set github.api_url for a GitHub Enterprise server"
                .to_string()
        }
        ForgeError::BadToken(_) => {
            "set a valid token in TELEVIBE_GITHUB__TOKEN and restart the daemon".to_string()
        }
        ForgeError::NoAccess(_) | ForgeError::RepositoryNotFound(_) => {
            "give the token access to the repository (pull requests: read and write)".to_string()
        }
        ForgeError::Refused(m) if m.contains("already exists") => {
            "the branch has an open pull request already; new commits pushed to it join that one".to_string()
        }
        ForgeError::Refused(_) => format!(
            "push the branch first with /push {} (push_session), then try again",
            s.id
        ),
        ForgeError::Unavailable(_) | ForgeError::Unexpected(_) => {
            "retry later; check github.api_url and the network".to_string()
        }
    };
    forge_error(e.to_string(), &suggestion)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_title_comes_from_the_first_line_that_says_something() {
        assert_eq!(
            first_line("\n  fix the login page  \nand more"),
            "fix the login page"
        );
        assert_eq!(first_line(""), "");
    }
}
