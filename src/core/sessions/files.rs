//! Files out of a session's worktree (`/get`): a path inside the worktree only, read under the
//! safe file rules (no link followed anywhere on the way, only a regular file, never a blocking open) and
//! at most `files.max_bytes`.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::Sessions;
use crate::domain::Session;
use crate::errors::{CoreError, ErrorCode};
use crate::safe_fs;

/// How long reading one file may take (a stuck mount costs a pool thread, never the caller).
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// A file of a worktree that may be sent: its name (the last part of its path), its path inside the
/// worktree as checked, and its size when it was checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorktreeFile {
    pub session_id: String,
    pub path: String,
    pub name: String,
    pub size: u64,
}

impl Sessions<'_> {
    /// Checks that `path` names a regular file of the session's worktree within the size cap, without
    /// reading it (the file is opened and closed, nothing more).
    pub async fn worktree_file(
        &self,
        session_id: &str,
        path: &str,
    ) -> Result<WorktreeFile, CoreError> {
        let (s, rel) = self.file_of(session_id, path).await?;
        self.core
            .cluster()
            .on_this_node(&s, "sending a worktree file")?;
        let max = self.core.config().files.max_bytes;
        let wt = PathBuf::from(&s.worktree_path);
        let shown = rel.display().to_string();
        let size = safe_fs::blocking(READ_TIMEOUT, "checking the file", move || {
            check(&wt, &rel, max).map(|(_, size)| size)
        })
        .await
        .map_err(CoreError::internal)??;
        Ok(WorktreeFile {
            session_id: s.id,
            name: file_name(&shown),
            path: shown,
            size,
        })
    }

    /// Reads a file of the session's worktree whole, under the rules of [`Sessions::worktree_file`]:
    /// its name and its bytes.
    pub async fn read_worktree_file(
        &self,
        session_id: &str,
        path: &str,
    ) -> Result<(String, Vec<u8>), CoreError> {
        let (s, rel) = self.file_of(session_id, path).await?;
        self.core
            .cluster()
            .on_this_node(&s, "sending a worktree file")?;
        let max = self.core.config().files.max_bytes;
        let wt = PathBuf::from(&s.worktree_path);
        let name = file_name(&rel.display().to_string());
        let bytes = safe_fs::blocking(READ_TIMEOUT, "reading the file", move || {
            let (file, _) = check(&wt, &rel, max)?;
            read_capped(file, &rel, max)
        })
        .await
        .map_err(CoreError::internal)??;
        Ok((name, bytes))
    }

    /// The open session and the path made relative to its worktree (refused when it leaves it).
    async fn file_of(&self, session_id: &str, path: &str) -> Result<(Session, PathBuf), CoreError> {
        let rel = inside(path)?;
        let s = self.get_session(session_id).await?;
        if !s.state.is_open() {
            return Err(CoreError::new(
                ErrorCode::SessionClosing,
                format!("session {} is closed: its worktree is gone", s.id),
                "open a new session on its branch with /new",
            ));
        }
        if s.worktree_missing || !Path::new(&s.worktree_path).is_dir() {
            return Err(CoreError::new(
                ErrorCode::GitError,
                format!("the worktree of {} is missing", s.id),
                "recover the session (recover_session) or open a new one on its branch",
            ));
        }
        Ok((s, rel))
    }
}

/// `path` as a path inside a worktree: relative, and no `..` that climbs out of it. A `..` that stays
/// inside is resolved by name (no link is ever followed, so the name is what is read).
pub fn inside(path: &str) -> Result<PathBuf, CoreError> {
    let path = path.trim();
    let invalid = |why: &str| {
        CoreError::new(
            ErrorCode::InvalidPath,
            format!("{path:?} {why}"),
            "give a path inside the session's worktree, e.g. README.md or src/main.rs",
        )
    };
    if path.is_empty() {
        return Err(invalid("names no file"));
    }
    if path.contains('\0') {
        return Err(invalid("holds a NUL byte"));
    }
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err(invalid("leaves the worktree"));
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(invalid(
                    "is an absolute path: only paths inside the worktree are sent",
                ));
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(invalid("names the worktree itself, not a file"));
    }
    Ok(out)
}

fn file_name(rel: &str) -> String {
    Path::new(rel)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into())
}

/// Opens the file under the safe rules and checks its size against `max`: the open file and its size.
fn check(wt: &Path, rel: &Path, max: u64) -> Result<(std::fs::File, u64), CoreError> {
    // The size is checked here rather than by `open_file`, so that the answer can name it.
    let file = safe_fs::open_file(wt, rel, u64::MAX).map_err(|e| refused(rel, &e))?;
    let meta = file
        .metadata()
        .map_err(|e| CoreError::internal(format!("{}: {e}", rel.display())))?;
    // A file with a second name may be a link a job made to a file it could not read itself: never sent.
    if std::os::unix::fs::MetadataExt::nlink(&meta) != 1 {
        return Err(CoreError::new(
            ErrorCode::InvalidPath,
            format!(
                "{} has {} names (a hard link): not sent",
                rel.display(),
                std::os::unix::fs::MetadataExt::nlink(&meta)
            ),
            "copy the file to a new name in the worktree and ask for that",
        ));
    }
    let size = meta.len();
    if size > max {
        return Err(too_large(rel, size, max));
    }
    // Telegram takes no empty document: said now rather than lost at the upload.
    if size == 0 {
        return Err(CoreError::new(
            ErrorCode::InvalidPath,
            format!("{} is empty: there is nothing to send", rel.display()),
            "ask for a file with content",
        ));
    }
    Ok((file, size))
}

/// Reads at most `max` bytes; a file that grew past it meanwhile is refused.
fn read_capped(file: std::fs::File, rel: &Path, max: u64) -> Result<Vec<u8>, CoreError> {
    use std::io::Read;
    let mut out = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut out)
        .map_err(|e| CoreError::internal(format!("{}: {e}", rel.display())))?;
    if out.len() as u64 > max {
        return Err(too_large(rel, out.len() as u64, max));
    }
    Ok(out)
}

fn too_large(rel: &Path, size: u64, max: u64) -> CoreError {
    CoreError::new(
        ErrorCode::FileTooLarge,
        format!(
            "{} is {} ({size} bytes), more than the {} ({max} bytes) allowed",
            rel.display(),
            human_size(size),
            human_size(max)
        ),
        "raise files.max_bytes (at most 50 MB, Telegram's upload limit), or send a smaller file",
    )
}

/// Why the safe file rules refused a path, as an error for people.
fn refused(rel: &Path, e: &safe_fs::Unsafe) -> CoreError {
    if e.is_missing() {
        return CoreError::new(
            ErrorCode::FileNotFound,
            format!("{} not found in the worktree", rel.display()),
            "check the path (relative to the worktree); /diff lists the files the jobs changed",
        );
    }
    CoreError::new(
        ErrorCode::InvalidPath,
        format!("{} is refused: {}", rel.display(), e.reason),
        "only regular files inside the worktree are sent; links, directories, FIFOs and devices are not",
    )
}

/// `1.5 MB`, `20 MB`, `812 bytes`: sizes for people (1 MB = 1024 × 1024 bytes).
pub fn human_size(bytes: u64) -> String {
    const KB: f64 = 1024.0;
    let b = bytes as f64;
    if b >= KB * KB {
        format!("{:.1} MB", b / KB / KB).replace(".0 MB", " MB")
    } else if b >= KB {
        format!("{:.1} KB", b / KB).replace(".0 KB", " KB")
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_worktree() {
        assert_eq!(inside("README.md").unwrap(), PathBuf::from("README.md"));
        assert_eq!(inside(" ./src/../a.rs ").unwrap(), PathBuf::from("a.rs"));
        for bad in [
            "../../../etc/passwd",
            "/etc/passwd",
            "a/../../b",
            "",
            ".",
            "a/..",
        ] {
            let e = inside(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidPath, "{bad}: {e:?}");
        }
        assert!(
            inside("/etc/passwd")
                .unwrap_err()
                .message
                .contains("absolute")
        );
        assert!(
            inside("../x")
                .unwrap_err()
                .message
                .contains("leaves the worktree")
        );
    }

    #[test]
    fn links_fifos_directories_and_big_files_are_refused_by_kind() {
        let dir = tempfile::tempdir().unwrap();
        let wt = dir.path();
        std::fs::write(wt.join("ok.txt"), b"hello").unwrap();
        std::fs::create_dir(wt.join("sub")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", wt.join("link")).unwrap();
        std::os::unix::fs::symlink("/etc", wt.join("dirlink")).unwrap();
        let fifo = std::ffi::CString::new(wt.join("fifo").to_str().unwrap()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let (_, size) = check(wt, Path::new("ok.txt"), 5).unwrap();
        assert_eq!(size, 5);
        let code = |rel: &str, max| check(wt, Path::new(rel), max).unwrap_err().code;
        assert_eq!(code("ok.txt", 4), ErrorCode::FileTooLarge);
        assert_eq!(code("missing.txt", 9), ErrorCode::FileNotFound);
        assert_eq!(code("sub/missing.txt", 9), ErrorCode::FileNotFound);
        for refused in ["link", "dirlink/passwd", "fifo", "sub"] {
            let Err(e) = check(wt, Path::new(refused), 9) else {
                panic!("{refused} was accepted")
            };
            assert_eq!(e.code, ErrorCode::InvalidPath, "{refused}: {e:?}");
        }
        let e = too_large(Path::new("big.bin"), 21 * 1024 * 1024, 20 * 1024 * 1024);
        assert!(
            e.message.contains("21 MB") && e.message.contains("20 MB"),
            "{}",
            e.message
        );
    }

    #[test]
    fn sizes_read_as_people_say_them() {
        assert_eq!(human_size(812), "812 bytes");
        assert_eq!(human_size(1536), "1.5 KB");
        assert_eq!(human_size(20 * 1024 * 1024), "20 MB");
    }
}
