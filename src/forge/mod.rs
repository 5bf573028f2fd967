//! Forges, the code hosts a session's branch is proposed on: one small trait, [`Forge`], and one module per
//! forge (GitHub today, `github.rs`), so that another host is one more module. A forge knows which origin
//! URLs are its repositories and how to open a pull request; it never sees a job, and its token never
//! leaves it (not in errors, not in logs).

use std::future::Future;
use std::pin::Pin;

pub mod github;

/// A repository on a forge, as its origin URL names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRepo {
    pub host: String,
    pub owner: String,
    pub name: String,
}

impl std::fmt::Display for RemoteRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

/// What a pull request proposes: `head` into `base` of `repo`.
#[derive(Debug, Clone)]
pub struct PullRequestAsk<'a> {
    pub repo: &'a RemoteRepo,
    pub head: &'a str,
    pub base: &'a str,
    pub title: &'a str,
    pub body: &'a str,
}

/// A pull request the forge opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub number: u64,
    pub url: String,
}

/// Why a forge did not open a pull request. The texts are the forge's own words where it gave some.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForgeError {
    /// The origin URL is not a repository of this forge.
    #[error("{0}")]
    NotItsRepository(String),
    /// The forge refused the token (HTTP 401).
    #[error("{0}")]
    BadToken(String),
    /// The token may not do this (HTTP 403).
    #[error("{0}")]
    NoAccess(String),
    /// No such repository, or the token cannot see it (HTTP 404).
    #[error("{0}")]
    RepositoryNotFound(String),
    /// The forge refused the request as it stands (HTTP 422: already open, no commits, no such branch…).
    #[error("{0}")]
    Refused(String),
    /// The forge could not be reached or did not answer in time, or answered with a server error.
    #[error("{0}")]
    Unavailable(String),
    /// An answer this client does not understand.
    #[error("{0}")]
    Unexpected(String),
}

/// A boxed future, so that the trait can be used as `dyn Forge`.
pub type ForgeFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ForgeError>> + Send + 'a>>;

/// A code host the daemon opens pull requests on.
pub trait Forge: Send + Sync {
    /// The forge's name for people (`GitHub`).
    fn name(&self) -> &'static str;

    /// The repository an origin URL names, when it is one of this forge's.
    fn repo_of(&self, origin_url: &str) -> Result<RemoteRepo, ForgeError>;

    /// Opens a pull request of `ask.head` into `ask.base`.
    fn open_pull_request<'a>(&'a self, ask: &'a PullRequestAsk<'a>)
    -> ForgeFuture<'a, PullRequest>;
}

/// Host, owner and repository of a git remote URL in one of the usual shapes: `git@host:owner/repo.git`,
/// `ssh://git@host[:port]/owner/repo.git`, `https://[user@]host[:port]/owner/repo[.git]`. `None` for any
/// other shape (a local path, a file URL, more or fewer path parts).
pub fn parse_remote(url: &str) -> Option<RemoteRepo> {
    let url = url.trim();
    let (host, path) = if let Some((scheme, rest)) = url.split_once("://") {
        if !matches!(scheme, "https" | "http" | "ssh" | "git") {
            return None;
        }
        let (authority, path) = rest.split_once('/')?;
        let host = authority.rsplit('@').next()?;
        let host = host.split(':').next()?;
        (host, path)
    } else {
        // scp-like: `[user@]host:owner/repo`; a path with a slash before the colon is a local path.
        let (authority, path) = url.split_once(':')?;
        if authority.contains('/') {
            return None;
        }
        (authority.rsplit('@').next()?, path)
    };
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let (owner, name) = path.split_once('/')?;
    let plain = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'));
    (host_ok && plain(owner) && plain(name)).then(|| RemoteRepo {
        host: host.to_ascii_lowercase(),
        owner: owner.to_string(),
        name: name.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(host: &str, owner: &str, name: &str) -> Option<RemoteRepo> {
        Some(RemoteRepo {
            host: host.into(),
            owner: owner.into(),
            name: name.into(),
        })
    }

    #[test]
    fn the_usual_remote_shapes_name_their_repository() {
        let acme = repo("github.com", "acme", "widget");
        for url in [
            "git@github.com:acme/widget.git",
            "git@github.com:acme/widget",
            "https://github.com/acme/widget.git",
            "https://github.com/acme/widget",
            "https://github.com/acme/widget/",
            "https://someone@GitHub.com/acme/widget.git",
            "ssh://git@github.com/acme/widget.git",
            "ssh://git@github.com:22/acme/widget.git",
        ] {
            assert_eq!(parse_remote(url), acme, "{url}");
        }
        assert_eq!(
            parse_remote("https://git.example.com/team/app.js.git"),
            repo("git.example.com", "team", "app.js")
        );
    }

    #[test]
    fn other_shapes_name_no_repository() {
        for url in [
            "/srv/git/widget.git",
            "./widget",
            "file:///srv/git/acme/widget.git",
            "https://github.com/acme",
            "https://github.com/acme/widget/tree/main",
            "git@github.com:acme/../widget",
            "https://github.com/acme/wid get",
            "",
        ] {
            assert_eq!(parse_remote(url), None, "{url}");
        }
    }
}
