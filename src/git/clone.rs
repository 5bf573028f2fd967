//! Cloning a repository from a URL into `<root>/repos` (`register_project {url}`, and a node that hosts a
//! session of a project it has no clone of yet).
//!
//! The clone talks to the remote like a push does ([`super::push::remote_command`]): the daemon's own
//! credentials, no hook, no submodule, no prompt, bounded output, `git.remote_timeout_secs`. More for a
//! clone: no askpass program (`GIT_ASKPASS`, `SSH_ASKPASS`, `core.askPass`), no `ext::` transport, no
//! template (so no hook is installed), `--no-local` (a local path goes through git's transport like
//! `file://`, its files are not copied or hard-linked), and `--` before the URL. It clones into a hidden
//! staging directory beside the target (`.clone-<random>`) and renames that into place, so a failed, cut or
//! killed clone never leaves a directory at the target; the staging directory is removed on failure.

use super::push::{remote_command, run_remote, words};
use super::*;
use crate::domain::redact_credentials as redact;

/// The prefix of a clone's staging directory beside its target.
const STAGING_PREFIX: &str = ".clone-";

/// How a clone ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloned {
    /// The repository is at the target now.
    Placed,
    /// Something was at the target already (before the clone, or put there while it ran): left as it
    /// was, nothing cloned is kept.
    TargetTaken,
}

impl Git {
    /// Clones `url` (checked with [`crate::domain::check_clone_url`] by the caller) into `dest`, whose
    /// parent must exist. Errors carry no credentials of the URL.
    pub async fn clone_repository(&self, url: &str, dest: &Path) -> Result<Cloned, GitError> {
        crate::domain::check_clone_url(url).map_err(|e| GitError::Remote(e.0))?;
        let (url, dest, limit) = (url.to_string(), dest.to_path_buf(), self.remote_timeout);
        self.guarded_for(limit + std::time::Duration::from_secs(60), move || {
            clone_sync(&url, &dest, limit)
        })
        .await
    }
}

fn clone_sync(url: &str, dest: &Path, limit: Duration) -> Result<Cloned, GitError> {
    if dest.symlink_metadata().is_ok() {
        return Ok(Cloned::TargetTaken);
    }
    let parent = dest
        .parent()
        .ok_or_else(|| failed(format!("{} has no parent directory", dest.display())))?;
    let staging = parent.join(format!("{STAGING_PREFIX}{}", uuid::Uuid::new_v4().simple()));
    let outcome = clone_into_staging(url, &staging, limit).and_then(|()| {
        match std::fs::rename(&staging, dest) {
            Ok(()) => Ok(Cloned::Placed),
            // Another clone (or a person) put something there meanwhile: theirs stays.
            Err(_) if dest.symlink_metadata().is_ok() => Ok(Cloned::TargetTaken),
            Err(e) => Err(failed(format!(
                "cannot move the clone into {}: {e}",
                dest.display()
            ))),
        }
    });
    if !matches!(outcome, Ok(Cloned::Placed))
        && staging.symlink_metadata().is_ok()
        && let Err(e) = std::fs::remove_dir_all(&staging)
    {
        tracing::warn!(target: "televibe.git", staging = %staging.display(), error = %e, "clone staging directory not removed");
    }
    outcome
}

fn clone_into_staging(url: &str, staging: &Path, limit: Duration) -> Result<(), GitError> {
    let mut clone = remote_command();
    clone
        .env_remove("GIT_ASKPASS")
        .env_remove("SSH_ASKPASS")
        .args([
            "-c",
            "core.askPass=",
            "-c",
            "protocol.ext.allow=never",
            "clone",
            "--quiet",
            "--no-local",
            "--no-recurse-submodules",
            "--template=",
            "--",
            url,
        ])
        .arg(staging);
    let shown = redact(url);
    let (ok, _, err) = run_remote(clone, "clone", &shown, limit)?;
    if !ok {
        return Err(GitError::Remote(format!(
            "git clone {shown} failed: {}",
            words(None, &err)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-C"])
            .arg(dir)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}");
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_clone_lands_whole_or_not_at_all() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir(&src).unwrap();
        git(&src, &["init", "-q", "-b", "main"]);
        std::fs::write(src.join("a.txt"), "a\n").unwrap();
        git(&src, &["add", "a.txt"]);
        git(&src, &["commit", "-q", "-m", "one"]);
        let repos = tmp.path().join("repos");
        std::fs::create_dir(&repos).unwrap();
        let limit = Duration::from_secs(60);

        let url = format!("file://{}", src.display());
        assert_eq!(
            clone_sync(&url, &repos.join("app"), limit).unwrap(),
            Cloned::Placed
        );
        assert!(repos.join("app/a.txt").is_file());
        assert!(
            !repos.join("app/.git/hooks").exists(),
            "no template: no hooks"
        );
        // A second clone to the same place keeps what is there.
        assert_eq!(
            clone_sync(&url, &repos.join("app"), limit).unwrap(),
            Cloned::TargetTaken
        );
        assert_eq!(leftovers(&repos), ["app"]);

        // A failing clone leaves neither target nor staging directory, and says so without the password.
        let missing = "https://bob:s3cret@127.0.0.1:9/none.git";
        let e = clone_sync(missing, &repos.join("none"), limit).unwrap_err();
        assert!(matches!(e, GitError::Remote(_)), "{e:?}");
        assert!(!e.to_string().contains("s3cret"), "{e}");
        assert!(e.to_string().contains("***@127.0.0.1"), "{e}");
        assert_eq!(leftovers(&repos), ["app"]);
        let e = clone_sync(
            &format!("file://{}", tmp.path().join("nope").display()),
            &repos.join("nope"),
            limit,
        )
        .unwrap_err();
        assert!(e.to_string().contains("git clone file://"), "{e}");
        assert_eq!(leftovers(&repos), ["app"]);
    }
}
