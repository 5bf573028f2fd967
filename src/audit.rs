//! Audit records: one JSON line each in `<root>/orchestrator/logs/audit.log`, and a row in the `audit` table.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use serde_json::{Value, json};

use crate::domain::AuditRecord;
use crate::store::Store;

/// Who did something: `mcp`, `admin`, `telegram:<user id>`, `daemon`.
pub type Actor = String;

pub struct Audit {
    path: PathBuf,
    file_lock: Mutex<()>,
}

/// The ids an audit record refers to.
#[derive(Debug, Clone, Default)]
pub struct AuditSubject {
    pub project_id: Option<String>,
    pub session_id: Option<String>,
    pub job_id: Option<String>,
}

impl Audit {
    pub fn new(path: PathBuf) -> Audit {
        Audit {
            path,
            file_lock: Mutex::new(()),
        }
    }

    /// Writes the record to the file first (it survives a read-only database), then to the table.
    pub async fn record(
        &self,
        store: &Store,
        event: &str,
        by: &str,
        subject: AuditSubject,
        details: Value,
    ) {
        let rec = AuditRecord {
            event: event.to_string(),
            actor: by.to_string(),
            project_id: subject.project_id,
            session_id: subject.session_id,
            job_id: subject.job_id,
            details,
            timestamp: chrono::Utc::now(),
        };
        let line = json!({
            "timestamp": rec.timestamp.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            "event": rec.event,
            "actor": rec.actor,
            "project_id": rec.project_id,
            "session_id": rec.session_id,
            "job_id": rec.job_id,
            "details": rec.details,
        });
        if let Err(e) = self.append(&line.to_string()) {
            tracing::error!(target: "televibe.audit", error = %e, event, "cannot append to audit.log");
        }
        if let Err(e) = store.insert_audit(&rec).await {
            tracing::warn!(target: "televibe.audit", error = %e, event, "audit record kept in audit.log only");
        }
        tracing::info!(target: "televibe.audit", event, actor = by, "Audit record");
    }

    /// Drops the records of audit.log older than `cutoff` (`logging.audit_retention_days`). The file is
    /// rewritten beside itself and renamed over, under the lock every append takes, so no record is lost.
    /// A line without a readable timestamp is kept. Returns how many records went.
    pub fn prune(&self, cutoff: chrono::DateTime<chrono::Utc>) -> std::io::Result<usize> {
        let _g = self.file_lock.lock().unwrap_or_else(|p| p.into_inner());
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let (mut kept, mut dropped) = (String::with_capacity(text.len()), 0);
        for line in text.lines() {
            let at = serde_json::from_str::<Value>(line).ok().and_then(|v| {
                v["timestamp"]
                    .as_str()
                    .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
            });
            if at.is_some_and(|t| t < cutoff) {
                dropped += 1;
            } else {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        if dropped > 0 {
            let tmp = self.path.with_extension("log.prune");
            std::fs::write(&tmp, kept)?;
            std::fs::rename(&tmp, &self.path)?;
        }
        Ok(dropped)
    }

    fn append(&self, line: &str) -> std::io::Result<()> {
        let _g = self.file_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        f.write_all(format!("{line}\n").as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_drops_only_records_past_the_cutoff() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        std::fs::write(
            &path,
            concat!(
                "{\"timestamp\":\"2026-01-01T00:00:00.000Z\",\"event\":\"old\"}\n",
                "not json, kept\n",
                "{\"timestamp\":\"2026-03-01T00:00:00.000Z\",\"event\":\"new\"}\n",
            ),
        )
        .unwrap();
        let audit = Audit::new(path.clone());
        let cutoff = "2026-02-01T00:00:00Z".parse().unwrap();
        assert_eq!(audit.prune(cutoff).unwrap(), 1);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("\"old\""), "{text}");
        assert!(
            text.contains("not json, kept") && text.contains("\"new\""),
            "{text}"
        );
        assert_eq!(audit.prune(cutoff).unwrap(), 0, "nothing left to drop");
        audit.append("{\"event\":\"after\"}").unwrap();
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .ends_with("{\"event\":\"after\"}\n")
        );
        assert_eq!(
            Audit::new(dir.path().join("missing.log"))
                .prune(cutoff)
                .unwrap(),
            0
        );
    }
}
