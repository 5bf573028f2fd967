//! The job log `logs/jobs/<job_id>.log`: every stdout and stderr line, tagged, capped with a final marker.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The line written once when the cap is reached.
pub const TRUNCATION_MARKER: &str =
    "[televibe] log truncated: size limit reached, further output discarded";

pub struct JobLog {
    path: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    file: Option<File>,
    written: u64,
    cap: u64,
    truncated: bool,
}

impl JobLog {
    pub fn create(path: &Path, cap: u64) -> std::io::Result<JobLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        // A job run again (after a usage limit or a restart) goes on in its log: each run may add up to
        // the cap, all of them together at most twice the cap.
        let written = file.metadata()?.len();
        let cap = written.saturating_add(cap).min(cap.saturating_mul(2));
        Ok(JobLog {
            path: path.to_path_buf(),
            inner: Mutex::new(Inner {
                file: Some(file),
                written,
                cap,
                truncated: false,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `<time> <stream> <line>`; past the cap, writes the marker once and drops the rest.
    pub fn line(&self, stream: &str, line: &str) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.truncated {
            return;
        }
        let text = format!(
            "{} {stream} {line}\n",
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ")
        );
        let marker = format!("{TRUNCATION_MARKER}\n");
        let over = g.written + text.len() as u64 + marker.len() as u64 > g.cap;
        let (bytes, truncated) = if over { (marker, true) } else { (text, false) };
        let n = bytes.len() as u64;
        if let Some(f) = g.file.as_mut() {
            let _ = f.write_all(bytes.as_bytes());
        }
        g.written += n;
        g.truncated = truncated;
    }

    pub fn bytes(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).written
    }

    pub fn truncated(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .truncated
    }
}

/// The last `n` lines of a log file and whether earlier lines exist.
pub fn tail(path: &Path, n: usize) -> std::io::Result<(Vec<String>, bool)> {
    let mut f = File::open(path)?;
    let len = f.seek(SeekFrom::End(0))?;
    // Read backwards in chunks until enough newlines are seen; logs can be 100 MB.
    let mut start = len;
    let mut newlines = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while start > 0 && newlines <= n {
        let step = (buf.len() as u64).min(start);
        start -= step;
        f.seek(SeekFrom::Start(start))?;
        let chunk = &mut buf[..step as usize];
        std::io::Read::read_exact(&mut f, chunk)?;
        newlines += chunk.iter().filter(|b| **b == b'\n').count();
    }
    f.seek(SeekFrom::Start(start))?;
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut raw)?;
    // Split raw bytes first: a chunk boundary may cut a multi-byte character, and agents print anything.
    let mut parts: Vec<&[u8]> = raw.split(|b| *b == b'\n').collect();
    if parts.last().is_some_and(|p| p.is_empty()) {
        parts.pop();
    }
    // The first piece may be partial when reading did not start at the beginning.
    if start > 0 && !parts.is_empty() {
        parts.remove(0);
    }
    let lines: Vec<String> = parts
        .iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let more = start > 0 || lines.len() > n;
    let skip = lines.len().saturating_sub(n);
    Ok((lines[skip..].to_vec(), more))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_writes_one_marker_then_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = JobLog::create(&dir.path().join("j.log"), 500).unwrap();
        for i in 0..100 {
            log.line("stdout", &format!("line {i}"));
        }
        assert!(log.truncated());
        let text = std::fs::read_to_string(log.path()).unwrap();
        assert!(text.len() <= 500, "{}", text.len());
        assert!(text.ends_with(&format!("{TRUNCATION_MARKER}\n")));
        assert_eq!(text.matches(TRUNCATION_MARKER).count(), 1);
        let (last, more) = tail(log.path(), 2).unwrap();
        assert_eq!(last.len(), 2);
        assert!(more);
        assert_eq!(last[1], TRUNCATION_MARKER);
    }

    #[test]
    fn tail_of_a_short_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = JobLog::create(&dir.path().join("j.log"), 1 << 20).unwrap();
        log.line("stdout", "a");
        log.line("stderr", "b");
        let (lines, more) = tail(log.path(), 10).unwrap();
        assert_eq!(lines.len(), 2);
        assert!(!more);
        assert!(lines[1].ends_with(" stderr b"));
    }
}
