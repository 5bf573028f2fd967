//! Backups of `state.db`: the schedule, the naming, one verified run (copy, check, gzip, fsync, rename),
//! the listing, and the optional upload to an object store behind the `backup_remote` breaker.
//!
//! A run never replaces or deletes a backup: it writes temporary files in `backups/` (removed whatever
//! happens) and hard-links the finished file to its final name, which fails instead of overwriting.
//! Deleting old backups is the janitor's job alone (`backup.retention_days`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::breaker::Breakers;

use crate::layout::Layout;
use crate::store::Store;
use crate::store::backup::Contents;
use crate::telemetry::Metrics;

pub mod remote;
pub mod schedule;
pub use remote::Remote;
pub use schedule::{LocalBackup, Schedule, file_name, list_local, missed, parse_name};

/// What a successful run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub file: String,
    pub path: PathBuf,
    pub time: DateTime<Utc>,
    pub bytes: u64,
    pub duration_secs: f64,
    pub verified: bool,
    pub contents: Contents,
    /// `None` without `backup.remote`; otherwise where the copy went, or why it did not.
    pub remote: Option<RemoteOutcome>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RemoteOutcome {
    pub ok: bool,
    /// The object's URL when uploaded, the error otherwise.
    pub detail: String,
}

/// Temporary files of one run, removed when the run ends, whatever its outcome.
struct TempFiles(Vec<PathBuf>);

impl Drop for TempFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Everything a run needs; the daemon passes its own, offline commands build one.
pub struct Runner<'a> {
    pub store: &'a Store,
    pub layout: &'a Layout,
    /// Where each backup is also uploaded (`backup.remote`).
    pub remote: Option<&'a Remote>,
    pub breakers: &'a Arc<Breakers>,
    pub metrics: &'a Metrics,
}

impl Runner<'_> {
    /// One backup: the local file (verified before it gets its name), then the upload when configured.
    /// Metrics count the outcome; the caller logs and reports it.
    pub async fn run(&self, now: DateTime<Utc>) -> Result<Outcome, String> {
        if self.store.is_postgres() {
            return Err(crate::store::OPERATOR_BACKUPS.to_string());
        }
        let started = Instant::now();
        let result = self.local(now).await;
        let duration = started.elapsed().as_secs_f64();
        let mut outcome = match result {
            Ok(o) => o,
            Err(e) => {
                self.metrics.backup_result("failure");
                self.metrics.backup_duration_seconds.observe(duration);
                return Err(e);
            }
        };
        self.metrics.backup_result("success");
        self.metrics
            .backup_last_success_timestamp
            .set(outcome.time.timestamp());
        self.metrics
            .backup_bytes
            .set(i64::try_from(outcome.bytes).unwrap_or(i64::MAX));
        if let Some(remote) = self.remote {
            let r = remote
                .upload_guarded(self.breakers, &outcome.path, &outcome.file)
                .await;
            if r.is_err() {
                self.metrics.backup_result("remote_failure");
            }
            outcome.remote = Some(match r {
                Ok(url) => RemoteOutcome {
                    ok: true,
                    detail: url,
                },
                Err(e) => RemoteOutcome {
                    ok: false,
                    detail: e,
                },
            });
        }
        outcome.duration_secs = started.elapsed().as_secs_f64();
        self.metrics
            .backup_duration_seconds
            .observe(outcome.duration_secs);
        Ok(outcome)
    }

    async fn local(&self, mut now: DateTime<Utc>) -> Result<Outcome, String> {
        let dir = self.layout.backups();
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        // Two runs within one second would want the same name; the later one takes the next second
        // rather than replacing the earlier backup.
        while dir.join(file_name(now)).exists() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            now = now.max(Utc::now());
            if dir.join(file_name(now)).exists() {
                now += chrono::Duration::seconds(1);
            }
        }
        let file = file_name(now);
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let copy = dir.join(format!(".tmp-{tag}.db"));
        let packed = dir.join(format!(".tmp-{tag}.db.gz"));
        let _temp = TempFiles(vec![copy.clone(), packed.clone()]);
        self.store
            .vacuum_into(&copy)
            .await
            .map_err(|e| format!("copy failed: {e}"))?;
        let contents = crate::store::backup::check_file(&copy)
            .await
            .map_err(|e| format!("the copy failed its integrity check: {e}"))?;
        let final_path = dir.join(&file);
        let (c, p, f, d) = (
            copy.clone(),
            packed.clone(),
            final_path.clone(),
            dir.clone(),
        );
        let bytes = tokio::task::spawn_blocking(move || compress_and_publish(&c, &p, &f, &d))
            .await
            .map_err(|e| format!("compression task failed: {e}"))??;
        Ok(Outcome {
            file,
            path: final_path,
            time: now,
            bytes,
            duration_secs: 0.0,
            verified: true,
            contents,
            remote: None,
        })
    }
}

/// gzip `copy` into `packed`, read it back (the gzip trailer's CRC checks every byte), fsync it, link it
/// to `final_path` (failing rather than replacing an existing file) and fsync the directory.
fn compress_and_publish(
    copy: &Path,
    packed: &Path,
    final_path: &Path,
    dir: &Path,
) -> Result<u64, String> {
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    {
        let mut input = std::fs::File::open(copy).map_err(|e| io("open copy", e))?;
        let out = std::fs::File::create_new(packed).map_err(|e| io("create temp file", e))?;
        let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
        std::io::copy(&mut input, &mut gz).map_err(|e| io("compress", e))?;
        let out = gz.finish().map_err(|e| io("compress", e))?;
        out.sync_all().map_err(|e| io("fsync", e))?;
    }
    let mut check = flate2::read::GzDecoder::new(
        std::fs::File::open(packed).map_err(|e| io("reopen compressed file", e))?,
    );
    let mut first = [0u8; 16];
    check
        .read_exact(&mut first)
        .map_err(|e| io("read back", e))?;
    if &first != b"SQLite format 3\0" {
        return Err("the compressed file does not hold a SQLite database".into());
    }
    std::io::copy(&mut check, &mut std::io::sink()).map_err(|e| io("read back", e))?;
    std::fs::hard_link(packed, final_path)
        .map_err(|e| io(&format!("publish {}", final_path.display()), e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("fsync backups directory", e))?;
    std::fs::metadata(final_path)
        .map(|m| m.len())
        .map_err(|e| io("stat", e))
}

/// Decompresses a backup into `dest` (which must not exist) and fsyncs it.
pub fn decompress(src: &Path, dest: &Path) -> Result<(), String> {
    let input =
        std::fs::File::open(src).map_err(|e| format!("cannot open {}: {e}", src.display()))?;
    let mut gz = flate2::read::GzDecoder::new(input);
    let mut out = std::fs::File::create_new(dest)
        .map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
    std::io::copy(&mut gz, &mut out)
        .map_err(|e| format!("cannot decompress {}: {e}", src.display()))?;
    out.flush()
        .and_then(|_| out.sync_all())
        .map_err(|e| format!("fsync {}: {e}", dest.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    #[test]
    fn names_follow_the_spec_and_round_trip() {
        let t = at(2025, 12, 13, 6, 0, 0);
        assert_eq!(file_name(t), "state-2025-12-13T06-00-00.db.gz");
        assert_eq!(parse_name("state-2025-12-13T06-00-00.db.gz"), Some(t));
        for other in [
            "state.db",
            ".tmp-abc.db.gz",
            "state-2025-12-13T06-00-00.db",
            "state-2025-13-13T06-00-00.db.gz",
        ] {
            assert_eq!(parse_name(other), None, "{other}");
        }
    }

    #[test]
    fn schedule_is_five_field_cron_in_utc() {
        let s = Schedule::parse("0 */6 * * *").unwrap();
        assert_eq!(
            s.next_after(at(2025, 12, 13, 6, 0, 0)),
            Some(at(2025, 12, 13, 12, 0, 0))
        );
        assert_eq!(
            s.next_after(at(2025, 12, 13, 23, 59, 30)),
            Some(at(2025, 12, 14, 0, 0, 0))
        );
        assert_eq!(
            s.previous(at(2025, 12, 13, 11, 59, 0)),
            Some(at(2025, 12, 13, 6, 0, 0))
        );
        // 2025-12-14 is a Sunday; 7 means Sunday as well as 0.
        let sunday = Schedule::parse("30 2 * * 7").unwrap();
        assert_eq!(
            sunday.next_after(at(2025, 12, 13, 0, 0, 0)),
            Some(at(2025, 12, 14, 2, 30, 0))
        );
        for bad in ["", "* * * *", "0 * * * * *", "61 * * * *", "a * * * *"] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn missed_run_decision() {
        let s = Schedule::parse("0 */6 * * *").unwrap();
        let now = at(2025, 12, 13, 13, 0, 0);
        // Nothing at all: run now.
        assert!(missed(&s, None, now));
        // The 12:00 run happened: nothing missed.
        assert!(!missed(&s, Some(at(2025, 12, 13, 12, 0, 0)), now));
        assert!(!missed(&s, Some(at(2025, 12, 13, 12, 30, 0)), now));
        // The daemon was down at 12:00: the newest backup is from 06:00.
        assert!(missed(&s, Some(at(2025, 12, 13, 6, 0, 0)), now));
    }

    #[test]
    fn remote_urls_refuse_credentials() {
        assert_eq!(Remote::parse("").unwrap(), None);
        assert_eq!(
            Remote::parse("s3://bucket/televibe/backups/").unwrap(),
            Some(Remote::S3 {
                bucket: "bucket".into(),
                prefix: "televibe/backups".into()
            })
        );
        assert_eq!(
            Remote::parse("file:///srv/b").unwrap(),
            Some(Remote::File {
                dir: "/srv/b".into()
            })
        );
        for bad in [
            "s3://AKIA:secret@bucket/x",
            "s3://user@bucket",
            "http://bucket/x",
            "file://relative",
            "s3:///x",
        ] {
            let e = Remote::parse(bad).unwrap_err().to_string();
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[tokio::test]
    async fn a_failed_run_keeps_earlier_backups_and_leaves_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let raw = crate::config::RawConfig {
            root: dir.path().join("root"),
            ..Default::default()
        };
        let config = Config::validate(raw).unwrap();
        let layout = Layout::new(&config.root);
        let metrics = Arc::new(Metrics::new());
        let store = Store::open(&layout.state_db(), Default::default(), metrics.clone())
            .await
            .unwrap();
        store.kv_set("k", "v").await.unwrap();
        let breakers = Arc::new(Breakers::new(&config.breakers, metrics.clone()));
        let runner = Runner {
            store: &store,
            layout: &layout,
            remote: config.backup.remote.as_ref(),
            breakers: &breakers,
            metrics: &metrics,
        };
        let good = runner.run(at(2025, 12, 13, 6, 0, 0)).await.unwrap();
        assert_eq!(good.file, "state-2025-12-13T06-00-00.db.gz");
        assert_eq!(good.contents.rows["kv"], 1);
        let before = std::fs::read(&good.path).unwrap();
        // A second run in the same second takes the next name instead of replacing the first.
        let second = runner.run(at(2025, 12, 13, 6, 0, 0)).await.unwrap();
        assert_ne!(second.file, good.file);
        // With the database gone from under it, the copy fails.
        store.clone().close().await;
        let err = runner.run(at(2025, 12, 13, 12, 0, 0)).await.unwrap_err();
        assert!(err.contains("copy failed"), "{err}");
        assert_eq!(std::fs::read(&good.path).unwrap(), before);
        let names: Vec<String> = std::fs::read_dir(layout.backups())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names.iter().all(|n| parse_name(n).is_some()), "{names:?}");
        let text = metrics.encode();
        assert!(
            text.contains("televibe_backups_total{result=\"failure\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("televibe_backups_total{result=\"success\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn local_listing_ignores_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        for n in [
            "state-2025-12-13T12-00-00.db.gz",
            "state-2025-12-13T06-00-00.db.gz",
            ".tmp-1234.db.gz",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        let l = list_local(dir.path());
        assert_eq!(
            l.iter().map(|b| b.file.as_str()).collect::<Vec<_>>(),
            [
                "state-2025-12-13T06-00-00.db.gz",
                "state-2025-12-13T12-00-00.db.gz"
            ]
        );
    }
}
