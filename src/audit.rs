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

/// What the audit log records, one kind each with its own fields: `name` is the record's `event`, `details`
/// its `details`. Every record goes through `core.events().audit` (the one emitter).
#[derive(Debug, Clone)]
pub enum Audited {
    ProjectRegistered {
        path: String,
        default_branch: String,
        trusted: bool,
        /// The URL the repository was cloned from (`register_project {url}`), credentials taken out.
        url: Option<String>,
    },
    /// A node cloned a URL project it hosts a session of and had no clone of (`ensure_clone`).
    ProjectCloned {
        url: String,
        path: String,
    },
    /// A registered project was registered again with `trust`.
    ProjectTrusted {
        path: String,
    },
    SessionCreated {
        branch: String,
        base: String,
        branch_created: bool,
        worktree: String,
    },
    SessionClosed {
        force: bool,
        branch: String,
        branch_deleted: bool,
    },
    /// Recovery closed a session whose worktree could not be re-created (a new one replaces it).
    SessionReplaced {
        branch: String,
        error: String,
    },
    SessionRecovered {
        action: Value,
        session: String,
        branch: String,
        worktree: String,
        jobs_canceled: usize,
    },
    /// A job's agent asks a person.
    ApprovalNeeded {
        approval_id: String,
        tool: String,
        input: String,
        scope: String,
    },
    /// A person decided a request.
    ApprovalDecided {
        approved: bool,
        approval_id: String,
        tool: String,
        decision: String,
    },
    /// The policy decided without asking.
    PolicyDecided {
        approved: bool,
        tool: String,
        input: String,
        scope: String,
        reason: String,
    },
    /// Nobody decided in time.
    ApprovalExpired {
        approval_id: String,
        tool: String,
    },
    JobKilled {
        status: String,
    },
    BreakerReset {
        breaker: String,
    },
    BackupNow {
        outcome: Value,
    },
    /// `televibe reconstruct` rebuilt the state database from the disk (what it found).
    StateReconstructed {
        details: Value,
    },
    /// A listed user wrote in a chat that is not served.
    TelegramChatRefused {
        chat_id: i64,
        attempt: String,
    },
    TelegramAccessDenied {
        chat_id: i64,
        attempt: String,
    },
    /// A session's default agent changed (`/agent <name>`).
    SessionAgentSet {
        agent: String,
    },
    /// An instruction was scheduled (`/every`, `schedule_instruction`).
    ScheduleCreated {
        schedule_id: String,
        cron: String,
        instruction: String,
        next_run_at: String,
    },
    /// A scheduled run queued its job (the actor is `scheduler`).
    ScheduleRan {
        schedule_id: String,
        occurrence: String,
        created_by: String,
    },
    /// A schedule was canceled by a person.
    ScheduleCanceled {
        schedule_id: String,
    },
    /// A schedule was removed because its session closed (or is gone).
    ScheduleRemoved {
        schedule_id: String,
        reason: String,
    },
    /// A pull request was opened for a session's branch (`/pr`, `open_pull_request`).
    PullRequestOpened {
        repository: String,
        number: u64,
        url: String,
        head: String,
        base: String,
    },
}

impl Audited {
    /// The record's `event`.
    pub fn name(&self) -> &'static str {
        match self {
            Audited::ProjectRegistered { .. } => "project.registered",
            Audited::ProjectTrusted { .. } => "project.trusted",
            Audited::ProjectCloned { .. } => "project.cloned",
            Audited::SessionCreated { .. } => "session.created",
            Audited::SessionClosed { .. } | Audited::SessionReplaced { .. } => "session.closed",
            Audited::SessionRecovered { .. } => "session.recovered",
            Audited::ApprovalNeeded { .. } => "job.approval_needed",
            Audited::ApprovalDecided { approved, .. } | Audited::PolicyDecided { approved, .. } => {
                if *approved {
                    "job.approved"
                } else {
                    "job.denied"
                }
            }
            Audited::ApprovalExpired { .. } => "job.denied",
            Audited::JobKilled { .. } => "admin.job_kill",
            Audited::BreakerReset { .. } => "admin.breaker_reset",
            Audited::BackupNow { .. } => "admin.backup_now",
            Audited::StateReconstructed { .. } => "state.reconstructed",
            Audited::TelegramChatRefused { .. } => "telegram.chat_refused",
            Audited::TelegramAccessDenied { .. } => "telegram.access_denied",
            Audited::SessionAgentSet { .. } => "session.agent_set",
            Audited::ScheduleCreated { .. } => "schedule.created",
            Audited::ScheduleRan { .. } => "schedule.ran",
            Audited::ScheduleCanceled { .. } => "schedule.canceled",
            Audited::ScheduleRemoved { .. } => "schedule.removed",
            Audited::PullRequestOpened { .. } => "session.pull_request",
        }
    }

    /// The record's `details`.
    pub fn details(&self) -> Value {
        match self {
            Audited::ProjectRegistered {
                path,
                default_branch,
                trusted,
                url: None,
            } => json!({"path": path, "default_branch": default_branch, "trusted": trusted}),
            Audited::ProjectRegistered {
                path,
                default_branch,
                trusted,
                url: Some(url),
            } => {
                json!({"path": path, "default_branch": default_branch, "trusted": trusted, "url": url})
            }
            Audited::ProjectCloned { url, path } => json!({"url": url, "path": path}),
            Audited::ProjectTrusted { path } => json!({ "path": path }),
            Audited::SessionCreated {
                branch,
                base,
                branch_created,
                worktree,
            } => {
                json!({"branch": branch, "base": base, "branch_created": branch_created, "worktree": worktree})
            }
            Audited::SessionClosed {
                force,
                branch,
                branch_deleted,
            } => json!({"force": force, "branch": branch, "branch_deleted": branch_deleted}),
            Audited::SessionReplaced { branch, error } => {
                json!({"reason": "worktree lost; replaced by recovery", "branch": branch, "error": error})
            }
            Audited::SessionRecovered {
                action,
                session,
                branch,
                worktree,
                jobs_canceled,
            } => json!({
                "action": action,
                "session": session,
                "branch": branch,
                "worktree": worktree,
                "jobs_canceled": jobs_canceled,
            }),
            Audited::ApprovalNeeded {
                approval_id,
                tool,
                input,
                scope,
            } => json!({"approval_id": approval_id, "tool": tool, "input": input, "scope": scope}),
            Audited::ApprovalDecided {
                approval_id,
                tool,
                decision,
                ..
            } => json!({"approval_id": approval_id, "tool": tool, "decision": decision}),
            Audited::PolicyDecided {
                tool,
                input,
                scope,
                reason,
                ..
            } => json!({"tool": tool, "input": input, "scope": scope, "reason": reason}),
            Audited::ApprovalExpired { approval_id, tool } => {
                json!({"approval_id": approval_id, "tool": tool, "reason": "approval timed out"})
            }
            Audited::JobKilled { status } => json!({ "status": status }),
            Audited::BreakerReset { breaker } => json!({ "breaker": breaker }),
            Audited::BackupNow { outcome } => outcome.clone(),
            Audited::StateReconstructed { details } => details.clone(),
            Audited::TelegramChatRefused { chat_id, attempt }
            | Audited::TelegramAccessDenied { chat_id, attempt } => {
                json!({"chat_id": chat_id, "attempt": attempt})
            }
            Audited::SessionAgentSet { agent } => json!({ "agent": agent }),
            Audited::ScheduleCreated {
                schedule_id,
                cron,
                instruction,
                next_run_at,
            } => json!({
                "schedule_id": schedule_id,
                "cron": cron,
                "instruction": crate::text::preview(instruction),
                "next_run_at": next_run_at,
            }),
            Audited::ScheduleRan {
                schedule_id,
                occurrence,
                created_by,
            } => {
                json!({"schedule_id": schedule_id, "occurrence": occurrence, "created_by": created_by})
            }
            Audited::ScheduleCanceled { schedule_id } => json!({ "schedule_id": schedule_id }),
            Audited::ScheduleRemoved {
                schedule_id,
                reason,
            } => json!({"schedule_id": schedule_id, "reason": reason}),
            Audited::PullRequestOpened {
                repository,
                number,
                url,
                head,
                base,
            } => json!({
                "repository": repository,
                "number": number,
                "url": url,
                "head": head,
                "base": base,
            }),
        }
    }
}

/// The ids an audit record refers to.
#[derive(Debug, Clone, Default)]
pub struct AuditSubject {
    pub project_id: Option<String>,
    pub session_id: Option<String>,
    pub job_id: Option<String>,
    /// The agent of the job or session the record is about (added to its details as `agent`).
    pub agent: Option<String>,
}

impl AuditSubject {
    /// A job and its session, and the job's agent.
    pub fn job(job: &crate::domain::Job) -> AuditSubject {
        AuditSubject {
            session_id: Some(job.session_id.clone()),
            job_id: Some(job.id.clone()),
            agent: Some(job.agent.clone()),
            ..Default::default()
        }
    }

    /// A session, its project, and its default agent.
    pub fn session(session: &crate::domain::Session) -> AuditSubject {
        AuditSubject {
            project_id: Some(session.project_id.clone()),
            session_id: Some(session.id.clone()),
            agent: Some(session.agent.clone()),
            ..Default::default()
        }
    }
}

impl Audit {
    pub fn new(path: PathBuf) -> Audit {
        Audit {
            path,
            file_lock: Mutex::new(()),
        }
    }

    /// Writes the record to the file first (it survives a read-only database), then to the table.
    pub async fn record(&self, store: &Store, what: &Audited, by: &str, subject: AuditSubject) {
        let event = what.name();
        let mut details = what.details();
        if let (Some(agent), Some(d)) = (&subject.agent, details.as_object_mut()) {
            d.entry("agent").or_insert_with(|| json!(agent));
        }
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
