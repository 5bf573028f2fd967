//! How the daemon touches what a job could have written: never follow, never block, never read whole.
//!
//! A job writes its worktree, the worktree's git directory, its private refs and objects and its agent
//! state; everything there is hostile input. Every such file is reached from a trusted anchor (a
//! directory the daemon made or chose) through path components that must not be symbolic links, opened
//! with `O_NOFOLLOW | O_NONBLOCK`, checked to be a regular file of bounded size, and read off the async
//! workers under a timeout ([`blocking`]). Staged writes are created with `O_CREAT | O_EXCL |
//! O_NOFOLLOW` and renamed into place, so a link planted at either name is replaced, never written
//! through. Directory walks use `lstat` only. Subprocesses that read such places (git) run with a byte
//! cap on their output and a timeout, and are killed past either ([`run_capped`]).

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

mod create;
pub use create::{MAX_NAME_TRIES, create_new, make_dirs};

/// A file the daemon refused to touch: where, and why. Shown to the user as the job's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct Unsafe {
    pub path: PathBuf,
    pub reason: String,
}

pub type Result<T> = std::result::Result<T, Unsafe>;

/// The reason given when a file, or a directory on its way, does not exist.
const MISSING: &str = "does not exist";

impl Unsafe {
    /// Whether the file (or a directory on its way) is simply not there, rather than refused.
    pub fn is_missing(&self) -> bool {
        self.reason == MISSING
    }
}

fn unsafe_at(path: &Path, reason: impl Into<String>) -> Unsafe {
    Unsafe {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ELOOP) => "is a symbolic link (not followed)".into(),
        Some(libc::ENOTDIR) => "a part of the path is not a directory".into(),
        Some(libc::ENOENT) => MISSING.into(),
        _ => e.to_string(),
    }
}

fn cstr(name: &std::ffi::OsStr, full: &Path) -> Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| unsafe_at(full, "holds a NUL byte"))
}

/// The parts of `rel`: plain names only (no `..`, no root), at least one.
fn components(rel: &Path, full: &Path) -> Result<Vec<CString>> {
    let mut out = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => out.push(cstr(n, full)?),
            Component::CurDir => {}
            _ => return Err(unsafe_at(full, "leaves its directory")),
        }
    }
    if out.is_empty() {
        return Err(unsafe_at(full, "names no file"));
    }
    Ok(out)
}

fn open_anchor(anchor: &Path) -> Result<OwnedFd> {
    let c = CString::new(anchor.as_os_str().as_bytes()).map_err(|_| unsafe_at(anchor, "NUL"))?;
    // SAFETY: a valid C string; the returned descriptor is owned below.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(unsafe_at(anchor, io_reason(&e)));
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens the directory holding the last component of `rel` under `anchor`, following no link on the way.
fn open_parent(anchor: &Path, rel: &Path) -> Result<(OwnedFd, CString, PathBuf)> {
    let full = anchor.join(rel);
    let mut parts = components(rel, &full)?;
    let last = parts.pop().expect("at least one component");
    let mut dir = open_anchor(anchor)?;
    for part in parts {
        // SAFETY: a directory descriptor we own and a valid C string.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                part.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            // `O_DIRECTORY` on a link answers ENOTDIR: say what it really is.
            let reason = match lstat_at(&dir, &part) {
                Ok(st) if st.st_mode & libc::S_IFMT != libc::S_IFDIR => format!(
                    "{} on the way is {} (not followed)",
                    part.to_string_lossy(),
                    kind_name(st.st_mode)
                ),
                _ => io_reason(&e),
            };
            return Err(unsafe_at(&full, reason));
        }
        // SAFETY: fresh descriptor.
        dir = unsafe { OwnedFd::from_raw_fd(fd) };
    }
    Ok((dir, last, full))
}

fn lstat_at(dir: &OwnedFd, name: &CString) -> std::io::Result<libc::stat> {
    // SAFETY: an all-zero stat is a valid value to be overwritten by fstatat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, C string and out pointer.
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}

fn kind_name(mode: libc::mode_t) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFLNK => "a symbolic link",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFSOCK => "a socket",
        libc::S_IFCHR | libc::S_IFBLK => "a device",
        libc::S_IFDIR => "a directory",
        libc::S_IFREG => "a regular file",
        _ => "of an unknown kind",
    }
}

/// Opens `anchor/rel` for reading: no part of `rel` may be a link, the file must be a regular file of at
/// most `max` bytes, and opening never blocks (a FIFO is refused, not waited on).
pub fn open_file(anchor: &Path, rel: &Path, max: u64) -> Result<File> {
    let (dir, last, full) = open_parent(anchor, rel)?;
    let st = lstat_at(&dir, &last).map_err(|e| unsafe_at(&full, io_reason(&e)))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(unsafe_at(
            &full,
            format!("is {}, not a regular file", kind_name(st.st_mode)),
        ));
    }
    // SAFETY: valid descriptor and C string.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            last.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY,
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(unsafe_at(&full, io_reason(&e)));
    }
    // SAFETY: fresh descriptor.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let meta = file
        .metadata()
        .map_err(|e| unsafe_at(&full, e.to_string()))?;
    use std::os::unix::fs::MetadataExt;
    if !meta.is_file() || meta.ino() != st.st_ino || meta.dev() != st.st_dev {
        return Err(unsafe_at(&full, "changed while it was opened"));
    }
    if meta.len() > max {
        return Err(unsafe_at(
            &full,
            format!("is {} bytes, more than the {max} allowed", meta.len()),
        ));
    }
    Ok(file)
}

/// Reads `anchor/rel` whole under the rules of [`open_file`] (at most `max` bytes, whatever the file
/// grows to meanwhile).
pub fn read(anchor: &Path, rel: &Path, max: u64) -> Result<Vec<u8>> {
    let file = open_file(anchor, rel, max)?;
    let mut out = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut out)
        .map_err(|e| unsafe_at(&anchor.join(rel), e.to_string()))?;
    if out.len() as u64 > max {
        return Err(unsafe_at(
            &anchor.join(rel),
            format!("grew past the {max} bytes allowed"),
        ));
    }
    Ok(out)
}

/// [`read`] as UTF-8 text.
pub fn read_string(anchor: &Path, rel: &Path, max: u64) -> Result<String> {
    String::from_utf8(read(anchor, rel, max)?)
        .map_err(|_| unsafe_at(&anchor.join(rel), "is not UTF-8 text"))
}

/// Whether `anchor/rel` exists as anything at all (a link counts, and is not followed).
pub fn exists(anchor: &Path, rel: &Path) -> Result<bool> {
    let (dir, last, full) = open_parent(anchor, rel)?;
    match lstat_at(&dir, &last) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(unsafe_at(&full, io_reason(&e))),
    }
}

/// Puts `contents` at `anchor/rel`: written to a staged file beside it created with `O_CREAT | O_EXCL |
/// O_NOFOLLOW`, then renamed over the name. Whatever stood at either name (a link, a FIFO) is replaced,
/// never written through.
pub fn replace(anchor: &Path, rel: &Path, contents: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    let (dir, last, full) = open_parent(anchor, rel)?;
    let mut staged_name = b".".to_vec();
    staged_name.extend_from_slice(last.as_bytes());
    staged_name.extend_from_slice(format!(".televibe-{}", std::process::id()).as_bytes());
    let staged = CString::new(staged_name).expect("no NUL in a name built from a C string");
    // SAFETY: valid descriptor and C string; unlinkat never follows a link.
    unsafe { libc::unlinkat(dir.as_raw_fd(), staged.as_ptr(), 0) };
    // SAFETY: valid descriptor and C string.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            staged.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(unsafe_at(&full, format!("cannot stage a write: {e}")));
    }
    // SAFETY: fresh descriptor.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let written = file.write_all(contents).and_then(|_| file.sync_all());
    // SAFETY: valid descriptors and C strings; renameat replaces a link at `last` without following it.
    let renamed = written.and_then(|_| {
        let r = unsafe {
            libc::renameat(
                dir.as_raw_fd(),
                staged.as_ptr(),
                dir.as_raw_fd(),
                last.as_ptr(),
            )
        };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    });
    if let Err(e) = renamed {
        // SAFETY: as above.
        unsafe { libc::unlinkat(dir.as_raw_fd(), staged.as_ptr(), 0) };
        return Err(unsafe_at(&full, format!("cannot write: {e}")));
    }
    Ok(())
}

/// Removes `anchor/rel` if it is anything but a directory (a link is removed, not followed).
pub fn remove_file(anchor: &Path, rel: &Path) -> Result<()> {
    let (dir, last, full) = open_parent(anchor, rel)?;
    // SAFETY: valid descriptor and C string.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), last.as_ptr(), 0) } < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOENT) {
            return Err(unsafe_at(&full, io_reason(&e)));
        }
    }
    Ok(())
}

/// What a walk found at one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Dir,
    /// A regular file with its size and link count.
    File {
        len: u64,
        links: u64,
    },
    /// Anything else (a link, FIFO, socket or device): never followed or opened.
    Special(&'static str),
}

/// Walks `root` with `lstat` only, depth first, calling `visit` with each entry's path relative to
/// `root`; a directory is descended only if `visit` returns true for it. At most `max_entries`
/// entries, then it fails (a job can make millions of files).
pub fn walk(
    root: &Path,
    max_entries: usize,
    mut visit: impl FnMut(&Path, Entry) -> Result<bool>,
) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut stack = vec![PathBuf::new()];
    let mut seen = 0usize;
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let entries = std::fs::read_dir(&dir).map_err(|e| unsafe_at(&dir, e.to_string()))?;
        for entry in entries {
            let entry = entry.map_err(|e| unsafe_at(&dir, e.to_string()))?;
            seen += 1;
            if seen > max_entries {
                return Err(unsafe_at(
                    root,
                    format!("holds more than {max_entries} entries"),
                ));
            }
            let path = rel.join(entry.file_name());
            // `DirEntry::metadata` is lstat: a link is reported as a link.
            let meta = entry
                .metadata()
                .map_err(|e| unsafe_at(&root.join(&path), e.to_string()))?;
            let kind = meta.file_type();
            let found = if kind.is_dir() {
                Entry::Dir
            } else if kind.is_file() {
                Entry::File {
                    len: meta.len(),
                    links: meta.nlink(),
                }
            } else {
                Entry::Special(kind_name(meta.mode() as libc::mode_t))
            };
            if visit(&path, found)? && found == Entry::Dir {
                stack.push(path);
            }
        }
    }
    Ok(())
}

/// Runs `f` on the blocking pool under `timeout`; a file operation that hangs anyway (a stuck mount)
/// costs one pool thread, never an async worker.
pub async fn blocking<T, F>(timeout: Duration, what: &str, f: F) -> std::result::Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match tokio::time::timeout(timeout, tokio::task::spawn_blocking(f)).await {
        Err(_) => Err(format!(
            "{what} did not finish within {} s",
            timeout.as_secs()
        )),
        Ok(Err(e)) => Err(format!("{what} failed: {e}")),
        Ok(Ok(v)) => Ok(v),
    }
}

/// What [`run_capped`] collected.
#[derive(Debug)]
pub struct Capped {
    pub status: std::process::ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Why [`run_capped`] gave up on a command.
#[derive(Debug, thiserror::Error)]
pub enum CapError {
    #[error("cannot run it: {0}")]
    Spawn(std::io::Error),
    #[error("its output passed {0} bytes; it was stopped")]
    TooMuch(usize),
    #[error("it ran longer than {} s; it was stopped", .0.as_secs())]
    Timeout(Duration),
}

/// Runs `cmd` in a process group of its own with stdout and stderr read up to `max_stdout` (stderr:
/// 64 KiB) and a `timeout`; past either the whole group is killed and the run is an error.
pub fn run_capped(
    mut cmd: std::process::Command,
    max_stdout: usize,
    timeout: Duration,
) -> std::result::Result<Capped, CapError> {
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    use std::sync::mpsc;
    const MAX_STDERR: usize = 64 * 1024;
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().map_err(CapError::Spawn)?;
    let pgid = child.id() as i32;
    let (tx, rx) = mpsc::channel::<Option<usize>>();
    let reader =
        |pipe: Option<Box<dyn Read + Send>>, cap: usize, tx: mpsc::Sender<Option<usize>>| {
            std::thread::spawn(move || {
                let mut out = Vec::new();
                if let Some(mut pipe) = pipe {
                    let mut buf = [0u8; 64 * 1024];
                    loop {
                        match pipe.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) if out.len() + n > cap => {
                                let _ = tx.send(Some(cap));
                                return out;
                            }
                            Ok(n) => out.extend_from_slice(&buf[..n]),
                        }
                    }
                }
                let _ = tx.send(None);
                out
            })
        };
    let out = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        max_stdout,
        tx.clone(),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        MAX_STDERR,
        tx,
    );
    let kill = || {
        // SAFETY: kill(2) on the process group this function created.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    };
    let deadline = std::time::Instant::now() + timeout;
    let mut closed = 0;
    let mut failure = None;
    while closed < 2 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(None) => closed += 1,
            Ok(Some(cap)) => {
                // Only stdout's cap is an error; stderr past its cap is cut.
                if cap == max_stdout {
                    failure = Some(CapError::TooMuch(cap));
                    break;
                }
                closed += 1;
            }
            Err(_) => {
                failure = Some(CapError::Timeout(timeout));
                break;
            }
        }
    }
    if failure.is_none() {
        // Both pipes closed; the process is exiting or has closed them on purpose.
        while child.try_wait().map_err(CapError::Spawn)?.is_none() {
            if std::time::Instant::now() >= deadline {
                failure = Some(CapError::Timeout(timeout));
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    if failure.is_some() {
        kill();
    }
    let status = child.wait().map_err(CapError::Spawn)?;
    // On failure a reader may still be blocked on a pipe a grandchild holds: the group was killed above.
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    match failure {
        Some(f) => Err(f),
        None => Ok(Capped {
            status,
            stdout,
            stderr,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fifo(path: &Path) {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn links_fifos_and_big_files_are_refused_and_regular_files_read() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("refs/heads")).unwrap();
        std::fs::write(d.join("refs/heads/main"), "abc\n").unwrap();
        assert_eq!(
            read_string(d, Path::new("refs/heads/main"), 100).unwrap(),
            "abc\n"
        );
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "secret").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), d.join("link")).unwrap();
        let e = read(d, Path::new("link"), 100).unwrap_err();
        assert!(e.reason.contains("symbolic link"), "{e}");
        // A link on the way is refused too.
        std::os::unix::fs::symlink(outside.path(), d.join("refs/linked")).unwrap();
        let e = read(d, Path::new("refs/linked/secret"), 100).unwrap_err();
        assert!(e.reason.contains("symbolic link"), "{e}");
        fifo(&d.join("fifo"));
        let e = read(d, Path::new("fifo"), 100).unwrap_err();
        assert!(e.reason.contains("FIFO"), "{e}");
        std::fs::write(d.join("big"), vec![b'x'; 101]).unwrap();
        let e = read(d, Path::new("big"), 100).unwrap_err();
        assert!(e.reason.contains("101 bytes"), "{e}");
        assert!(read(d, Path::new("../x"), 100).is_err());
    }

    #[test]
    fn replace_never_writes_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let target = d.join("target");
        std::fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, d.join("HEAD")).unwrap();
        // A link planted at the staged name as well.
        std::os::unix::fs::symlink(
            &target,
            d.join(format!(".HEAD.televibe-{}", std::process::id())),
        )
        .unwrap();
        replace(d, Path::new("HEAD"), b"ref: refs/heads/x\n", 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert!(!d.join("HEAD").is_symlink());
        assert_eq!(
            std::fs::read_to_string(d.join("HEAD")).unwrap(),
            "ref: refs/heads/x\n"
        );
    }

    #[test]
    fn walk_reports_links_and_fifos_without_following() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("a/b")).unwrap();
        std::fs::write(d.join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", d.join("a/etc")).unwrap();
        fifo(&d.join("a/p"));
        let mut seen = Vec::new();
        walk(d, 100, |p, e| {
            seen.push((p.display().to_string(), e));
            Ok(true)
        })
        .unwrap();
        seen.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            seen,
            vec![
                ("a".into(), Entry::Dir),
                ("a/b".into(), Entry::Dir),
                ("a/b/f".into(), Entry::File { len: 1, links: 1 }),
                ("a/etc".into(), Entry::Special("a symbolic link")),
                ("a/p".into(), Entry::Special("a FIFO")),
            ]
        );
        assert!(walk(d, 2, |_, _| Ok(true)).is_err(), "the entry cap holds");
    }

    #[test]
    fn capped_commands_are_killed_past_their_cap_or_time() {
        let mut yes = std::process::Command::new("yes");
        yes.arg("x");
        assert!(matches!(
            run_capped(yes, 1 << 20, Duration::from_secs(30)),
            Err(CapError::TooMuch(_))
        ));
        let mut sleep = std::process::Command::new("sleep");
        sleep.arg("30");
        let began = std::time::Instant::now();
        assert!(matches!(
            run_capped(sleep, 100, Duration::from_millis(200)),
            Err(CapError::Timeout(_))
        ));
        assert!(began.elapsed() < Duration::from_secs(20));
        let mut echo = std::process::Command::new("echo");
        echo.arg("hello");
        let out = run_capped(echo, 100, Duration::from_secs(30)).unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"hello\n");
    }
}
