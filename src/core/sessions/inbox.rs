//! A session's inbox: files sent from the phone, saved into its worktree under `.televibe/inbox/` for its
//! jobs to read.
//!
//! The worktree is the job's: `.televibe` or `inbox` may be a link, a FIFO or a file a job planted. The
//! inbox is reached through `safe_fs` (nothing followed; a planted thing is refused and left alone), each
//! file is staged and linked to a name nothing stands at (never overwritten, never half-written), and its
//! name is made safe here. `.televibe/.gitignore` ignores everything in the folder, itself included, so a
//! job that commits all its changes does not commit what was sent to it, and the session's changes and
//! diff do not list it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Sessions;
use crate::domain::Session;
use crate::errors::{CoreError, ErrorCode};

/// Where files sent to a session land, relative to its worktree.
pub const INBOX: &str = ".televibe/inbox";
/// The daemon's folder in a worktree, and the ignore file that keeps it out of the job's changes.
const FOLDER: &str = ".televibe";
const IGNORE_ALL: &[u8] =
    b"# Files the phone sent to this session; never part of its changes.\n*\n";
/// The longest name a saved file gets, in bytes (its extension kept).
pub const MAX_NAME_BYTES: usize = 100;
/// A save that takes longer (a stuck disk) is given up.
const SAVE_TIMEOUT: Duration = Duration::from_secs(60);

/// A file saved into a session's inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    pub session_id: String,
    /// Relative to the worktree: `.televibe/inbox/<name>`.
    pub path: String,
    pub bytes: u64,
}

/// A name safe to save under: the last part of `wanted` only (`/` and `\` separate parts), control and
/// invisible characters and `..` removed, no leading dot or space, at most [`MAX_NAME_BYTES`] bytes with the
/// extension kept; `file` when nothing is left.
pub fn safe_name(wanted: &str) -> String {
    let last = wanted.rsplit(['/', '\\']).next().unwrap_or("");
    // Control characters, and the invisible ones that would make a name read otherwise (a right-to-left
    // override turning `fdp.exe` around).
    let mut name: String = last
        .chars()
        .filter(|c| !c.is_control() && !crate::text::hidden_char(*c))
        .collect();
    while name.contains("..") {
        name = name.replace("..", ".");
    }
    let name = name.trim_start_matches(['.', ' ']).trim_end();
    if name.is_empty() {
        return "file".into();
    }
    if name.len() <= MAX_NAME_BYTES {
        return name.to_string();
    }
    let (stem, ext) = split_extension(name);
    let keep = MAX_NAME_BYTES.saturating_sub(ext.len());
    let mut end = keep.min(stem.len());
    while !stem.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ext}", &stem[..end])
}

/// `report.pdf` → (`report`, `.pdf`); an extension is at most 16 bytes, else there is none.
fn split_extension(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 && name.len() - i <= 16 => name.split_at(i),
        _ => (name, ""),
    }
}

/// The names tried in turn: `report.pdf`, `report-1.pdf`, `report-2.pdf`…
fn candidates(name: &str) -> impl Iterator<Item = String> + use<> {
    let (stem, ext) = split_extension(name);
    let (stem, ext, whole) = (stem.to_string(), ext.to_string(), name.to_string());
    std::iter::once(whole).chain((1..).map(move |n| format!("{stem}-{n}{ext}")))
}

/// Writes `contents` into `worktree`'s inbox under a free name derived from `name`; answers the name.
fn save(worktree: &Path, name: &str, contents: &[u8]) -> Result<String, crate::safe_fs::Unsafe> {
    let inbox = Path::new(INBOX);
    crate::safe_fs::make_dirs(worktree, inbox, 0o755)?;
    crate::safe_fs::replace(
        worktree,
        &Path::new(FOLDER).join(".gitignore"),
        IGNORE_ALL,
        0o644,
    )?;
    crate::safe_fs::create_new(worktree, inbox, candidates(name), contents, 0o644, 0o755)
}

impl Sessions<'_> {
    /// Session `id` if files can be saved into its inbox now: open, with its worktree on disk. The
    /// front asks before it downloads anything.
    pub async fn inbox_session(&self, id: &str) -> Result<Session, CoreError> {
        let session = self.get_session(id).await?;
        if !session.state.is_open() {
            return Err(CoreError::new(
                ErrorCode::SessionClosing,
                format!("session {} is closed", session.id),
                "open a new one with /new, then send the file again",
            ));
        }
        self.core
            .cluster()
            .on_this_node(&session, "saving a file into its worktree")?;
        if session.worktree_missing || !Path::new(&session.worktree_path).is_dir() {
            return Err(CoreError::new(
                ErrorCode::GitError,
                format!("the worktree of {} is missing", session.id),
                format!(
                    "recover it with televibe admin session recover {}",
                    session.id
                ),
            ));
        }
        Ok(session)
    }

    /// Saves a file sent to session `id` into its inbox, as `wanted` made safe (a number added when the
    /// name is taken). A file larger than `files.max_bytes`, a session [`Sessions::inbox_session`]
    /// refuses, or anything planted on the way is refused, and nothing is saved.
    pub async fn save_to_inbox(
        &self,
        id: &str,
        wanted: &str,
        contents: Vec<u8>,
    ) -> Result<Saved, CoreError> {
        let session = self.inbox_session(id).await?;
        let max = self.core.config().files.max_bytes;
        if contents.len() as u64 > max {
            return Err(CoreError::new(
                ErrorCode::InvalidPath,
                format!(
                    "the file is {} bytes, more than files.max_bytes ({max})",
                    contents.len()
                ),
                "send a smaller file, or raise files.max_bytes",
            ));
        }
        let worktree = PathBuf::from(&session.worktree_path);
        let name = safe_name(wanted);
        let bytes = contents.len() as u64;
        let saved = crate::safe_fs::blocking(SAVE_TIMEOUT, "saving into the inbox", move || {
            save(&worktree, &name, &contents)
        })
        .await
        .map_err(CoreError::internal)?
        .map_err(|e| {
            CoreError::new(
                ErrorCode::InvalidPath,
                format!("not saved: {e}"),
                format!("remove what stands in the way of {INBOX}/ in the worktree (or ask the agent to), then send the file again"),
            )
        })?;
        let path = format!("{INBOX}/{saved}");
        tracing::info!(target: "televibe.sessions", session_id = %session.id, path = %path, bytes, "File saved into the session's inbox");
        Ok(Saved {
            session_id: session.id,
            path,
            bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_their_last_part_only_and_lose_what_could_escape() {
        for (wanted, safe) in [
            ("report.pdf", "report.pdf"),
            ("../../evil", "evil"),
            ("..\\..\\evil.txt", "evil.txt"),
            ("/etc/passwd", "passwd"),
            ("..", "file"),
            ("", "file"),
            ("...", "file"),
            (".bashrc", "bashrc"),
            ("  .hidden", "hidden"),
            ("a\u{0}b\nc\u{7f}.txt", "abc.txt"),
            ("a..b", "a.b"),
            ("dir/", "file"),
            ("name with spaces .md", "name with spaces .md"),
        ] {
            assert_eq!(safe_name(wanted), safe, "{wanted:?}");
        }
        let long = format!("{}.tar.gz", "é".repeat(200));
        let cut = safe_name(&long);
        assert!(cut.len() <= MAX_NAME_BYTES, "{}", cut.len());
        assert!(cut.ends_with("é.gz"), "{cut}");
    }

    #[test]
    fn a_taken_name_gets_a_number_before_its_extension() {
        let c: Vec<String> = candidates("report.pdf").take(3).collect();
        assert_eq!(c, ["report.pdf", "report-1.pdf", "report-2.pdf"]);
        let c: Vec<String> = candidates("Makefile").take(2).collect();
        assert_eq!(c, ["Makefile", "Makefile-1"]);
    }

    #[test]
    fn saved_files_are_ignored_by_git_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let wt = dir.path();
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .arg("-C")
                .arg(wt)
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "{args:?}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        git(&["init", "-q"]);
        assert_eq!(save(wt, "a.txt", b"one").unwrap(), "a.txt");
        assert_eq!(save(wt, "a.txt", b"two").unwrap(), "a-1.txt");
        assert_eq!(std::fs::read(wt.join(INBOX).join("a.txt")).unwrap(), b"one");
        assert_eq!(git(&["status", "--porcelain", "-uall"]), "");
        git(&["add", "-A"]);
        assert_eq!(git(&["diff", "--cached", "--name-only"]), "");
    }
}
