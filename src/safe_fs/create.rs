//! New files in a directory a job can write (a session's inbox): every directory on the way made or entered
//! without following links, the file written under a private staged name and then linked to a name that
//! nothing stands at. What is already there is never replaced or written through, and nobody sees the file
//! half-written; a failed write leaves nothing behind.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Result, components, io_reason, kind_name, lstat_at, open_anchor, unsafe_at};

/// At most this many of the names offered are tried before the write is given up.
pub const MAX_NAME_TRIES: usize = 1000;

/// Makes `anchor/rel` a directory: each missing part is made with `mode` (whatever the umask), each
/// existing part must be a directory and is entered without following a link.
pub fn make_dirs(anchor: &Path, rel: &Path, mode: u32) -> Result<()> {
    open_dirs(anchor, rel, mode).map(|_| ())
}

/// Writes `contents` into a new file of `anchor/dir` (made as [`make_dirs`] does, with `dir_mode`) under
/// the first of `names` at which nothing stands, with `mode`; answers that name. Each name must be a plain
/// file name. At most [`MAX_NAME_TRIES`] names are tried.
pub fn create_new(
    anchor: &Path,
    dir: &Path,
    names: impl IntoIterator<Item = String>,
    contents: &[u8],
    mode: u32,
    dir_mode: u32,
) -> Result<String> {
    let full = anchor.join(dir);
    let d = open_dirs(anchor, dir, dir_mode)?;
    let (staged, file) = stage(&d, &full, mode)?;
    let linked =
        fill(file, contents, mode, &full).and_then(|()| link_free_name(&d, &staged, &full, names));
    // Linked or not, the staged name goes: a failed write leaves nothing behind.
    // SAFETY: a directory descriptor we own and a valid C string; unlinkat never follows a link.
    unsafe { libc::unlinkat(d.as_raw_fd(), staged.as_ptr(), 0) };
    linked
}

/// Opens `anchor/rel` as a directory, making what is missing.
fn open_dirs(anchor: &Path, rel: &Path, mode: u32) -> Result<OwnedFd> {
    let full = anchor.join(rel);
    let mut dir = open_anchor(anchor)?;
    let mut at = anchor.to_path_buf();
    for part in components(rel, &full)? {
        at.push(OsStr::from_bytes(part.as_bytes()));
        dir = enter(&dir, &part, mode, &at)?;
    }
    Ok(dir)
}

/// Enters `name` of `dir` as a directory, making it first when it is missing. A link, FIFO or file there
/// is refused and left as it is.
fn enter(dir: &OwnedFd, name: &CString, mode: u32, full: &Path) -> Result<OwnedFd> {
    // SAFETY: a directory descriptor we own and a valid C string; mkdirat never follows a link.
    let made = unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) } == 0;
    if !made {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(unsafe_at(full, format!("cannot make it: {e}")));
        }
    }
    // SAFETY: as above. `O_DIRECTORY | O_NOFOLLOW` refuses a link and anything but a directory without
    // opening it, so a FIFO never blocks.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY
                | libc::O_DIRECTORY
                | libc::O_NOFOLLOW
                | libc::O_NONBLOCK
                | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        let reason = match lstat_at(dir, name) {
            Ok(st) if st.st_mode & libc::S_IFMT != libc::S_IFDIR => format!(
                "is {}, not a directory (not followed)",
                kind_name(st.st_mode)
            ),
            _ => io_reason(&e),
        };
        return Err(unsafe_at(full, reason));
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // The umask does not decide who may read what the daemon made for a job.
    // SAFETY: a descriptor we own.
    if made && unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) } < 0 {
        let e = std::io::Error::last_os_error();
        return Err(unsafe_at(full, format!("cannot set its mode: {e}")));
    }
    Ok(fd)
}

/// Makes a fresh staged file in `dir` (`O_CREAT | O_EXCL | O_NOFOLLOW`, under a name starting with a dot,
/// which no offered name has).
fn stage(dir: &OwnedFd, full: &Path, mode: u32) -> Result<(CString, File)> {
    static STAGED: AtomicU64 = AtomicU64::new(0);
    let mut tries = 0;
    loop {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = CString::new(format!(
            ".incoming-{}-{}-{nanos}",
            std::process::id(),
            STAGED.fetch_add(1, Ordering::Relaxed)
        ))
        .expect("no NUL in numbers");
        // SAFETY: a directory descriptor we own and a valid C string.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        };
        if fd >= 0 {
            // SAFETY: a fresh descriptor nobody else owns.
            return Ok((name, File::from(unsafe { OwnedFd::from_raw_fd(fd) })));
        }
        let e = std::io::Error::last_os_error();
        tries += 1;
        if e.raw_os_error() != Some(libc::EEXIST) || tries >= 10 {
            return Err(unsafe_at(full, format!("cannot stage a write: {e}")));
        }
    }
}

/// Gives the staged file its mode (whatever the umask) and its contents, on disk.
fn fill(mut file: File, contents: &[u8], mode: u32, full: &Path) -> Result<()> {
    // SAFETY: a descriptor we own.
    if unsafe { libc::fchmod(file.as_raw_fd(), mode as libc::mode_t) } < 0 {
        let e = std::io::Error::last_os_error();
        return Err(unsafe_at(full, format!("cannot set a mode: {e}")));
    }
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| unsafe_at(full, format!("cannot write: {e}")))
}

/// Links the staged file to the first offered name nothing stands at (`linkat` never replaces).
fn link_free_name(
    dir: &OwnedFd,
    staged: &CString,
    full: &Path,
    names: impl IntoIterator<Item = String>,
) -> Result<String> {
    for name in names.into_iter().take(MAX_NAME_TRIES) {
        let at: PathBuf = full.join(&name);
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            return Err(unsafe_at(&at, "is not a plain file name"));
        }
        let c = CString::new(name.as_bytes()).map_err(|_| unsafe_at(&at, "holds a NUL byte"))?;
        // SAFETY: a directory descriptor we own and valid C strings; flags 0: the staged name is not
        // followed, and an existing target (a link included) fails with EEXIST.
        let r = unsafe {
            libc::linkat(
                dir.as_raw_fd(),
                staged.as_ptr(),
                dir.as_raw_fd(),
                c.as_ptr(),
                0,
            )
        };
        if r == 0 {
            return Ok(name);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(unsafe_at(&at, format!("cannot write: {e}")));
        }
    }
    Err(unsafe_at(
        full,
        format!("every name tried is taken ({MAX_NAME_TRIES} at most)"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn names(base: &str) -> impl Iterator<Item = String> {
        let base = base.to_string();
        std::iter::once(base.clone()).chain((1..).map(move |n| format!("{base}-{n}")))
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn makes_the_directories_and_never_replaces_a_name() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let rel = Path::new(".televibe/inbox");
        let first = create_new(d, rel, names("a.txt"), b"one", 0o644, 0o755).unwrap();
        let second = create_new(d, rel, names("a.txt"), b"two", 0o644, 0o755).unwrap();
        assert_eq!((first.as_str(), second.as_str()), ("a.txt", "a.txt-1"));
        let inbox = d.join(rel);
        assert_eq!(std::fs::read(inbox.join("a.txt")).unwrap(), b"one");
        assert_eq!(std::fs::read(inbox.join("a.txt-1")).unwrap(), b"two");
        assert_eq!(
            listing(&inbox),
            vec!["a.txt", "a.txt-1"],
            "no staged file left"
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&inbox), 0o755);
        assert_eq!(mode(&d.join(".televibe")), 0o755);
        assert_eq!(mode(&inbox.join("a.txt")), 0o644);
        // A link planted at a name counts as taken and is left alone.
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path().join("x"), inbox.join("b")).unwrap();
        assert_eq!(
            create_new(d, rel, names("b"), b"three", 0o644, 0o755).unwrap(),
            "b-1"
        );
        assert!(!outside.path().join("x").exists());
        assert!(create_new(d, rel, ["../x".to_string()], b"", 0o644, 0o755).is_err());
        assert_eq!(listing(&inbox), vec!["a.txt", "a.txt-1", "b", "b-1"]);
    }

    #[test]
    fn a_link_fifo_or_file_on_the_way_is_refused_and_left_alone() {
        let outside = tempfile::tempdir().unwrap();
        for planted in ["link", "fifo", "file"] {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            std::fs::create_dir(d.join(".televibe")).unwrap();
            let at = d.join(".televibe/inbox");
            match planted {
                "link" => std::os::unix::fs::symlink(outside.path(), &at).unwrap(),
                "fifo" => {
                    let c = CString::new(at.as_os_str().as_bytes()).unwrap();
                    // SAFETY: a valid C string.
                    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
                }
                _ => std::fs::write(&at, "x").unwrap(),
            }
            let e = create_new(
                d,
                Path::new(".televibe/inbox"),
                names("f"),
                b"data",
                0o644,
                0o755,
            )
            .unwrap_err();
            assert!(e.reason.contains("not a directory"), "{planted}: {e}");
            assert!(
                std::fs::read_dir(outside.path()).unwrap().next().is_none(),
                "{planted}: nothing written outside"
            );
            assert_eq!(listing(&d.join(".televibe")), vec!["inbox"], "{planted}");
        }
    }
}
