//! Git remote addresses: which URLs the daemon clones from (`register_project {url}`), the project name a
//! URL gives, and credentials taken out of any address before it is shown.

/// Why a clone URL or a name derived from it was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidUrl(pub String);

fn refuse(message: impl Into<String>) -> Result<(), InvalidUrl> {
    Err(InvalidUrl(message.into()))
}

/// The forms of URL `register_project {url}` accepts, for messages.
pub const CLONE_URL_FORMS: &str =
    "https://host/path, ssh://[user@]host/path, [user@]host:path, file:///path or an absolute path";

/// Whether git may be handed `url` to clone from: `https://`, `ssh://`, scp-like `[user@]host:path`,
/// `file://` and absolute local paths. Refused: remote helpers (`<transport>::<address>`, `ext::` among
/// them, which runs a command), anything git could read as an option (a leading `-`, a host or user
/// starting with `-`), control characters, other schemes (`http://`, `git://`), relative paths.
pub fn check_clone_url(url: &str) -> Result<(), InvalidUrl> {
    if url.is_empty() {
        return refuse("the URL is empty");
    }
    if url.chars().any(char::is_control) {
        return refuse("the URL contains control characters");
    }
    if url.starts_with('-') {
        return refuse("a URL cannot start with '-' (git would read it as an option)");
    }
    if let Some(at) = url.find("::") {
        let transport = &url[..at];
        if !transport.is_empty()
            && transport
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+.-_".contains(c))
        {
            return refuse(format!(
                "{transport}:: names a git remote helper, which is refused (ext:: runs a command)"
            ));
        }
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        return match scheme.to_ascii_lowercase().as_str() {
            "file" if rest.starts_with('/') => Ok(()),
            "file" => refuse("a file:// URL needs an absolute path: file:///path"),
            "https" | "ssh" => check_authority(rest.split('/').next().unwrap_or("")),
            other => refuse(format!("{other}:// is not accepted; use {CLONE_URL_FORMS}")),
        };
    }
    if url.starts_with('/') {
        return Ok(());
    }
    // scp-like: a ':' before any '/' (git's own rule).
    if let Some(colon) = url.find(':')
        && !url[..colon].contains('/')
    {
        check_authority(&url[..colon])?;
        let path = &url[colon + 1..];
        if path.is_empty() || path.starts_with('-') {
            return refuse(format!("{url:?} names no repository path after the ':'"));
        }
        return Ok(());
    }
    refuse(format!(
        "{url:?} is not a URL the daemon clones from; use {CLONE_URL_FORMS}"
    ))
}

/// Whether what a person typed (`/register <path|url>`) is meant as a URL rather than a path:
/// `scheme://…`, `transport::…` (refused later, but as a URL), or scp-like `[user@]host:path`.
pub fn looks_like_url(typed: &str) -> bool {
    typed.contains("://")
        || typed.contains("::")
        || (!typed.starts_with('/')
            && typed
                .find(':')
                .is_some_and(|colon| !typed[..colon].contains('/')))
}

/// `[user[:password]@]host[:port]`: a host, and no part git would hand ssh as an option.
fn check_authority(authority: &str) -> Result<(), InvalidUrl> {
    let (user, host) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) if !n.contains(']') || host.ends_with(']') => (n, Some(p)),
        _ => (host, None),
    };
    if name.is_empty() {
        return refuse("the URL names no host");
    }
    if user.is_some_and(|u| u.starts_with('-'))
        || name.starts_with('-')
        || port.is_some_and(|p| p.starts_with('-'))
    {
        return refuse(
            "a user, host or port starting with '-' is refused (ssh would read it as an option)",
        );
    }
    Ok(())
}

/// The project name a clone URL gives: its last path component without `.git`
/// (`https://host/org/app.git` → `app`, `git@host:org/app` → `app`, `/srv/git/app.git/` → `app`).
/// `None` when the URL has no path component to name it by.
pub fn clone_name(url: &str) -> Option<String> {
    let path = if let Some((scheme, rest)) = url.split_once("://") {
        let path = rest.find('/').map(|i| &rest[i..]).unwrap_or("");
        if scheme.eq_ignore_ascii_case("file") {
            path
        } else {
            path.split(['?', '#']).next().unwrap_or("")
        }
    } else if url.starts_with('/') {
        url
    } else {
        url.split_once(':').map(|(_, p)| p).unwrap_or("")
    };
    let last = path.trim_end_matches('/').rsplit('/').next()?;
    let last = last.strip_suffix(".git").unwrap_or(last);
    (!last.is_empty()).then(|| last.to_string())
}

/// A project name that also names a directory under `<root>/repos`: not empty, not `.` or `..`, no
/// slashes, no control characters.
pub fn check_clone_dir_name(name: &str) -> Result<(), InvalidUrl> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return refuse("the project name is empty");
    }
    if trimmed == "." || trimmed == ".." {
        return refuse(format!("{trimmed:?} cannot name a project's directory"));
    }
    if trimmed.contains(['/', '\\']) {
        return refuse(format!("the project name {trimmed:?} contains a slash"));
    }
    if trimmed.chars().any(char::is_control) {
        return refuse("the project name contains control characters");
    }
    Ok(())
}

/// `scheme://user:secret@host/…` → `scheme://***@host/…`, wherever it appears in `text`.
pub fn redact_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '\'' || c == '"')
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(user_end) => {
                out.push_str("***");
                out.push_str(&tail[user_end..end]);
            }
            None => out.push_str(&tail[..end]),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Serialises an optional remote address with its credentials taken out (a project's `remote_url`).
pub(super) fn serialize_redacted<S: serde::Serializer>(
    url: &Option<String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match url {
        Some(u) => s.serialize_some(&redact_credentials(u)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_addresses_are_taken_out() {
        assert_eq!(
            redact_credentials(
                "fatal: unable to access 'https://bob:ghp_secret@example.com/a.git/': 403"
            ),
            "fatal: unable to access 'https://***@example.com/a.git/': 403"
        );
        assert_eq!(
            redact_credentials("https://example.com/a.git"),
            "https://example.com/a.git"
        );
        assert_eq!(
            redact_credentials("git@example.com:a.git"),
            "git@example.com:a.git"
        );
        assert_eq!(
            redact_credentials("ssh://git@h/x and http://t@h"),
            "ssh://***@h/x and http://***@h"
        );
    }

    #[test]
    fn a_url_names_its_project_by_its_last_component() {
        for (url, name) in [
            ("https://github.com/org/app.git", Some("app")),
            ("https://github.com/org/app", Some("app")),
            ("https://github.com/org/app.git/", Some("app")),
            ("https://u:p@host/org/My.Repo.git?x=1#y", Some("My.Repo")),
            ("ssh://git@host:22/srv/app.git", Some("app")),
            ("git@github.com:org/app.git", Some("app")),
            ("git@github.com:app.git", Some("app")),
            ("file:///srv/git/lib.git", Some("lib")),
            ("/srv/git/tool/", Some("tool")),
            ("https://host", None),
            ("https://host/", None),
            ("/srv/x/.git", None),
        ] {
            assert_eq!(clone_name(url).as_deref(), name, "{url}");
        }
        // What a URL gives is checked like a typed name before it names a directory.
        assert!(check_clone_dir_name(&clone_name("https://h/org/..").unwrap()).is_err());
        assert!(check_clone_dir_name("app").is_ok());
        assert!(check_clone_dir_name("My App").is_ok());
        for bad in ["", "  ", ".", "..", "a/b", "a\\b", "a\nb", "a\u{7}"] {
            assert!(check_clone_dir_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn typed_urls_are_told_from_paths() {
        for url in [
            "https://h/a.git",
            "git@github.com:org/a.git",
            "file:///srv/a",
            "ext::sh",
        ] {
            assert!(looks_like_url(url), "{url}");
        }
        for path in [
            "app",
            "/srv/repos/app",
            "repos/app",
            "/srv/a:b",
            "sub/dir:x",
        ] {
            assert!(!looks_like_url(path), "{path}");
        }
    }

    #[test]
    fn only_plain_transports_are_cloned_from() {
        for good in [
            "https://github.com/org/app.git",
            "https://user:token@github.com/org/app.git",
            "ssh://git@host/srv/app.git",
            "ssh://git@host:2222/srv/app.git",
            "git@github.com:org/app.git",
            "host:app.git",
            "file:///srv/git/app.git",
            "/srv/git/app.git",
        ] {
            assert_eq!(check_clone_url(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("ext::sh -c touch% /tmp/pwned", "remote helper"),
            ("fd::17", "remote helper"),
            ("-uoption", "start with '-'"),
            ("--upload-pack=touch /tmp/x", "start with '-'"),
            ("ssh://-oProxyCommand=x/app", "starting with '-'"),
            ("ssh://-o@host/app", "starting with '-'"),
            ("ssh://host:-p/app", "starting with '-'"),
            ("-oProxyCommand=x:app", "start with '-'"),
            ("git@-oProxyCommand=x:app", "starting with '-'"),
            ("http://host/app.git", "not accepted"),
            ("git://host/app.git", "not accepted"),
            ("file://relative/app", "absolute path"),
            ("relative/app", "not a URL"),
            ("https://host/a\nb", "control"),
            ("host:", "no repository path"),
            ("host:-x", "no repository path"),
            ("https:///app", "no host"),
        ] {
            let e = check_clone_url(bad).expect_err(bad);
            assert!(e.0.contains(why), "{bad}: {e}");
        }
    }
}
