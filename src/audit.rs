//! Audit records: one JSON line each in `<root>/orchestrator/logs/audit.log`, and a row in the `audit` table.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use serde_json::{Value, json};

use crate::store::{AuditRecord, Store};

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
        actor: &str,
        subject: AuditSubject,
        details: Value,
    ) {
        let rec = AuditRecord {
            event: event.to_string(),
            actor: actor.to_string(),
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
        tracing::info!(target: "televibe.audit", event, actor, "Audit record");
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
