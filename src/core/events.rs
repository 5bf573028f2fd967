//! The domain events, typed: one enum, and one place (`Events::emit`) that records each — its outbox row
//! (what the notifier delivers), its count in `televibe_events_total` and its log line. The notifier reads
//! the rows back as the same enum ([`Event::from_row`]), so a new event is a new variant, matched by the
//! compiler everywhere it matters.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::core::Core;
use crate::domain::{ErrorType, Job, JobStatus, OutboxEvent, Session};
use crate::errors::CoreError;
use crate::telemetry::EventTypeLabel;

/// What happened. The serde names are the event types of the outbox rows and of
/// `televibe_events_total{event_type}`; the fields are the row's payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload")]
pub enum Event {
    #[serde(rename = "job.queued")]
    JobQueued {
        instruction_preview: String,
        position: usize,
    },
    #[serde(rename = "job.started")]
    JobStarted {
        pid: i32,
        instruction_preview: String,
    },
    #[serde(rename = "job.tool_started")]
    ToolStarted {
        tool: String,
        target: String,
        tool_use_id: String,
    },
    #[serde(rename = "job.tool_completed")]
    ToolCompleted {
        tool: String,
        target: String,
        tool_use_id: String,
        is_error: bool,
    },
    /// The agent's CLI retries the model API (429, 529, …): the job waits, it is not stuck.
    #[serde(rename = "job.api_retry")]
    ApiRetry {
        attempt: i64,
        max_retries: i64,
        error_status: Option<i64>,
        error: Option<String>,
        /// How long the agent waits before it retries (Claude Code says).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_delay_ms: Option<i64>,
    },
    /// A running job went back to the head of its session's queue: for its agent's usage limit
    /// ([`REQUEUED_USAGE_LIMIT`], until `not_before`, Unix seconds) or because a daemon restart cut it
    /// ([`REQUEUED_RESTART`]). Its tracker says so.
    #[serde(rename = "job.requeued")]
    JobRequeued {
        reason: String,
        #[serde(default)]
        not_before: Option<i64>,
    },
    #[serde(rename = "job.completed")]
    JobCompleted(JobEnd),
    #[serde(rename = "job.failed")]
    JobFailed(JobEnd),
    #[serde(rename = "job.canceled")]
    JobCanceled(JobEnd),
    #[serde(rename = "approval.requested")]
    ApprovalRequested { approval_id: String },
    #[serde(rename = "approval.decided")]
    ApprovalDecided { approval_id: String },
    #[serde(rename = "approval.expired")]
    ApprovalExpired { approval_id: String },
    /// A request still waits for a person after `approvals.remind_after_secs`: they are reminded once.
    #[serde(rename = "approval.reminded")]
    ApprovalReminded { approval_id: String },
    /// Jobs wait for the Claude API. One row per session told; `since` (unix ms) names the period, so a
    /// chat that follows several sessions is told once per period.
    #[serde(rename = "claude.unavailable")]
    ClaudeUnavailable {
        message: String,
        #[serde(default)]
        since: i64,
    },
    /// A session's jobs wait for `agent`'s usage limit until `until` (Unix seconds). One row per session
    /// and limit; a chat is told once per limit.
    #[serde(rename = "usage.limited")]
    UsageLimited {
        agent: String,
        until: i64,
        message: String,
    },
    #[serde(rename = "session.created")]
    SessionCreated { branch: String },
    #[serde(rename = "session.closed")]
    SessionClosed { branch_deleted: bool },
    #[serde(rename = "session.worktree_missing")]
    WorktreeMissing { path: String },
    #[serde(rename = "breaker.opened")]
    BreakerOpened { breaker: String },
    /// `stage` is `local` (no new backup) or `remote` (the upload failed; the local backup is kept).
    #[serde(rename = "backup.failed")]
    BackupFailed {
        stage: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file: Option<String>,
        error: String,
    },
    #[serde(rename = "database.corrupted")]
    DatabaseCorrupted { detail: String },
    /// A schedule of the session was removed because the session closed (or is gone): its chat is told.
    #[serde(rename = "schedule.removed")]
    ScheduleRemoved {
        schedule_id: String,
        cron: String,
        instruction_preview: String,
        reason: String,
    },
    /// A scheduled occurrence queued nothing (the queue was full, the agent is no longer configured…);
    /// the schedule goes on.
    #[serde(rename = "schedule.skipped")]
    ScheduleSkipped {
        schedule_id: String,
        occurrence: String,
        reason: String,
    },
    /// A front's answer to a person (a command's reply), kept in the outbox like any notice so that a
    /// full queue or a restart of the sender loses none.
    #[serde(rename = "chat.reply")]
    Reply { chat_id: i64, body: ReplyBody },
}

/// [`Event::JobRequeued`]'s reason: the agent's usage limit.
pub const REQUEUED_USAGE_LIMIT: &str = "usage_limit";
/// [`Event::JobRequeued`]'s reason: a daemon restart cut the job.
pub const REQUEUED_RESTART: &str = "restart";

/// What a reply carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReplyBody {
    /// A message (HTML) with inline buttons (label, callback data).
    Text {
        html: String,
        #[serde(default)]
        buttons: Vec<(String, String)>,
    },
    /// A text sent as a file.
    Document {
        filename: String,
        text: String,
        caption: String,
    },
    /// A pending approval request shown again, with its buttons.
    Approval { approval_id: String },
    /// A file of a session's worktree (`/get`), read when it is sent: the row stays small, and the file
    /// is read under the same rules as when it was asked for.
    WorktreeFile {
        session_id: String,
        path: String,
        caption: String,
    },
}

/// How a job ended, as its tracker shows it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct JobEnd {
    pub status: Option<JobStatus>,
    #[serde(default)]
    pub error_type: Option<ErrorType>,
    #[serde(default)]
    pub error: Option<String>,
    /// The agent's final text, cut to 3,000 characters.
    #[serde(default)]
    pub result: Option<String>,
    #[serde(default)]
    pub num_turns: Option<i64>,
    #[serde(default)]
    pub total_cost_usd: Option<f64>,
    #[serde(default)]
    pub files_changed: Vec<String>,
    #[serde(default)]
    pub diff_stat: Option<String>,
    #[serde(default)]
    pub duration_secs: Option<f64>,
    /// Shown instead of the error when set (a job terminated after it got stuck).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What an event is about: the ids its outbox row carries (the notifier routes by session).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scope {
    pub project_id: Option<String>,
    pub session_id: Option<String>,
    pub job_id: Option<String>,
}

impl Scope {
    /// A daemon-wide event (breakers, backups, the database): it goes to the notice chat.
    pub fn daemon() -> Scope {
        Scope::default()
    }

    pub fn session(s: &Session) -> Scope {
        Scope {
            project_id: Some(s.project_id.clone()),
            session_id: Some(s.id.clone()),
            job_id: None,
        }
    }

    pub fn job(job: &Job, session: &Session) -> Scope {
        Scope {
            job_id: Some(job.id.clone()),
            ..Scope::session(session)
        }
    }
}

impl Event {
    /// The event type: the outbox row's `event_type` and the metric's label.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::JobQueued { .. } => "job.queued",
            Event::JobStarted { .. } => "job.started",
            Event::ToolStarted { .. } => "job.tool_started",
            Event::ToolCompleted { .. } => "job.tool_completed",
            Event::ApiRetry { .. } => "job.api_retry",
            Event::JobRequeued { .. } => "job.requeued",
            Event::UsageLimited { .. } => "usage.limited",
            Event::JobCompleted(_) => "job.completed",
            Event::JobFailed(_) => "job.failed",
            Event::JobCanceled(_) => "job.canceled",
            Event::ApprovalRequested { .. } => "approval.requested",
            Event::ApprovalDecided { .. } => "approval.decided",
            Event::ApprovalExpired { .. } => "approval.expired",
            Event::ApprovalReminded { .. } => "approval.reminded",
            Event::ClaudeUnavailable { .. } => "claude.unavailable",
            Event::SessionCreated { .. } => "session.created",
            Event::SessionClosed { .. } => "session.closed",
            Event::WorktreeMissing { .. } => "session.worktree_missing",
            Event::BreakerOpened { .. } => "breaker.opened",
            Event::BackupFailed { .. } => "backup.failed",
            Event::DatabaseCorrupted { .. } => "database.corrupted",
            Event::ScheduleRemoved { .. } => "schedule.removed",
            Event::ScheduleSkipped { .. } => "schedule.skipped",
            Event::Reply { .. } => "chat.reply",
        }
    }

    /// The ending event of a job that ended with `status`.
    pub fn ending(status: JobStatus, end: JobEnd) -> Event {
        match status {
            JobStatus::Done => Event::JobCompleted(end),
            JobStatus::Canceled => Event::JobCanceled(end),
            _ => Event::JobFailed(end),
        }
    }

    /// Progress of a running job: may be coalesced or dropped under pressure, never a result.
    pub fn is_progress(&self) -> bool {
        matches!(
            self,
            Event::JobQueued { .. }
                | Event::JobStarted { .. }
                | Event::ToolStarted { .. }
                | Event::ToolCompleted { .. }
                | Event::ApiRetry { .. }
        )
    }

    /// The payload of its outbox row.
    pub fn payload(&self) -> Value {
        serde_json::to_value(self)
            .ok()
            .and_then(|mut v| v.get_mut("payload").map(Value::take))
            .unwrap_or(Value::Null)
    }

    /// The event an outbox row holds; `None` for a type this daemon does not know or a payload that does
    /// not fit it (such a row is marked delivered and skipped).
    pub fn from_row(row: &OutboxEvent) -> Option<Event> {
        serde_json::from_value(serde_json::json!({
            "event_type": row.event_type,
            "payload": row.payload,
        }))
        .ok()
    }

    /// How it is logged: progress at debug, failures as warnings, the rest at info.
    fn level(&self) -> tracing::Level {
        match self {
            e if e.is_progress() => tracing::Level::DEBUG,
            Event::Reply { .. } => tracing::Level::DEBUG,
            Event::JobFailed(_)
            | Event::ApprovalExpired { .. }
            | Event::ClaudeUnavailable { .. }
            | Event::UsageLimited { .. }
            | Event::WorktreeMissing { .. }
            | Event::BreakerOpened { .. }
            | Event::BackupFailed { .. }
            | Event::ScheduleSkipped { .. } => tracing::Level::WARN,
            Event::DatabaseCorrupted { .. } => tracing::Level::ERROR,
            _ => tracing::Level::INFO,
        }
    }
}

/// The emitter: every typed event is logged, counted and recorded (outbox row) in one place.
pub struct Events<'a> {
    pub(super) core: &'a Core,
}

/// What the emitter owns: a counter of outbox rows written, so whoever delivers or waits for them is woken
/// instead of polling.
pub struct State {
    outbox_seq: tokio::sync::watch::Sender<u64>,
}

impl Default for State {
    fn default() -> Self {
        State {
            outbox_seq: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Events<'_> {
    /// Records what `by` did in the audit log (file and table) and logs it: the one way to audit.
    pub async fn audit(
        &self,
        by: &str,
        subject: crate::audit::AuditSubject,
        what: crate::audit::Audited,
    ) {
        self.core
            .audit()
            .record(self.core.store(), &what, by, subject)
            .await;
    }

    /// Changes whenever an outbox row is written (see `emit`).
    pub fn outbox_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.core.events_state.outbox_seq.subscribe()
    }

    /// Another node wrote outbox rows (its wake-up, or the sweep): the notifier reads them.
    pub fn outbox_written_elsewhere(&self) {
        self.outbox_written();
    }

    fn outbox_written(&self) {
        self.core
            .events_state
            .outbox_seq
            .send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Records an event: its outbox row, its count in `televibe_events_total`, its log line.
    pub async fn emit(&self, scope: Scope, event: Event) {
        let _ = self.try_emit(scope, event).await;
    }

    /// Like `Events::emit`, and says whether the row was written (not in read-only mode, say).
    pub async fn try_emit(&self, scope: Scope, event: Event) -> Result<(), CoreError> {
        let kind = event.kind();
        self.core
            .metrics()
            .events_total
            .get_or_create(&EventTypeLabel {
                event_type: kind.to_string(),
            })
            .inc();
        let payload = event.payload();
        // A reply's text (a document may be megabytes) is not logged, only where it goes.
        let details = match &event {
            Event::Reply { chat_id, body } => serde_json::json!({
                "chat_id": chat_id,
                "kind": match body {
                    ReplyBody::Text { .. } => "text",
                    ReplyBody::Document { .. } => "document",
                    ReplyBody::Approval { .. } => "approval",
                    ReplyBody::WorktreeFile { .. } => "worktree_file",
                },
            }),
            _ => payload.clone(),
        };
        let (p, s, j) = (
            scope.project_id.as_deref().unwrap_or(""),
            scope.session_id.as_deref().unwrap_or(""),
            scope.job_id.as_deref().unwrap_or(""),
        );
        macro_rules! log {
            ($level:ident) => {
                tracing::$level!(target: "televibe.events", event_type = kind, project_id = p, session_id = s, job_id = j, details = %details, "Event {kind}")
            };
        }
        match event.level() {
            tracing::Level::ERROR => log!(error),
            tracing::Level::WARN => log!(warn),
            tracing::Level::INFO => log!(info),
            _ => log!(debug),
        }
        let written = self
            .core
            .store()
            .insert_event(
                kind,
                scope.project_id.as_deref(),
                scope.session_id.as_deref(),
                scope.job_id.as_deref(),
                payload,
            )
            .await;
        if let Err(e) = &written {
            tracing::warn!(target: "televibe.events", event_type = kind, error = %e, "event not recorded");
        }
        self.outbox_written();
        // The leader's notifier sends it: on another node, it is told.
        if written.is_ok() && !self.core.cluster().is_leader() {
            self.core.cluster().wake("outbox").await;
        }
        written.map(|_| ()).map_err(CoreError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(event_type: &str, payload: Value) -> OutboxEvent {
        OutboxEvent {
            id: 1,
            event_type: event_type.into(),
            project_id: None,
            session_id: None,
            job_id: None,
            payload,
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn every_event_goes_through_its_row_and_back() {
        let end = JobEnd {
            status: Some(JobStatus::Failed),
            error_type: Some(ErrorType::Hung),
            error: Some("no output".into()),
            files_changed: vec!["a.rs".into()],
            duration_secs: Some(1.5),
            ..Default::default()
        };
        let all = [
            Event::JobQueued {
                instruction_preview: "fix".into(),
                position: 2,
            },
            Event::JobStarted {
                pid: 7,
                instruction_preview: "fix".into(),
            },
            Event::ToolStarted {
                tool: "Bash".into(),
                target: "ls".into(),
                tool_use_id: "t1".into(),
            },
            Event::ToolCompleted {
                tool: "Bash".into(),
                target: "ls".into(),
                tool_use_id: "t1".into(),
                is_error: true,
            },
            Event::ApiRetry {
                attempt: 1,
                max_retries: 10,
                error_status: Some(529),
                error: None,
                retry_delay_ms: Some(41_000),
            },
            Event::JobRequeued {
                reason: REQUEUED_USAGE_LIMIT.into(),
                not_before: Some(1_800_000_000),
            },
            Event::JobCompleted(JobEnd::default()),
            Event::JobFailed(end.clone()),
            Event::JobCanceled(end),
            Event::ApprovalRequested {
                approval_id: "a".into(),
            },
            Event::ApprovalDecided {
                approval_id: "a".into(),
            },
            Event::ApprovalExpired {
                approval_id: "a".into(),
            },
            Event::ApprovalReminded {
                approval_id: "a".into(),
            },
            Event::ClaudeUnavailable {
                message: "m".into(),
                since: 1,
            },
            Event::UsageLimited {
                agent: "claude".into(),
                until: 1_800_000_000,
                message: "m".into(),
            },
            Event::SessionCreated { branch: "b".into() },
            Event::SessionClosed {
                branch_deleted: true,
            },
            Event::WorktreeMissing { path: "/p".into() },
            Event::BreakerOpened {
                breaker: "claude_code".into(),
            },
            Event::BackupFailed {
                stage: "remote".into(),
                file: Some("f".into()),
                error: "e".into(),
            },
            Event::DatabaseCorrupted { detail: "d".into() },
            Event::ScheduleRemoved {
                schedule_id: "SC1".into(),
                cron: "* * * * *".into(),
                instruction_preview: "fix".into(),
                reason: "its session S1 was closed".into(),
            },
            Event::ScheduleSkipped {
                schedule_id: "SC1".into(),
                occurrence: "2026-12-07T10:00:00Z".into(),
                reason: "queue full".into(),
            },
            Event::Reply {
                chat_id: 7,
                body: ReplyBody::Text {
                    html: "<b>x</b>".into(),
                    buttons: vec![("a".into(), "b".into())],
                },
            },
        ];
        let file = Event::Reply {
            chat_id: 7,
            body: ReplyBody::WorktreeFile {
                session_id: "S1".into(),
                path: "src/main.rs".into(),
                caption: "c".into(),
            },
        };
        assert_eq!(
            Event::from_row(&row(file.kind(), file.payload())).as_ref(),
            Some(&file)
        );
        let kinds: std::collections::HashSet<_> = all.iter().map(Event::kind).collect();
        assert_eq!(kinds.len(), all.len(), "each variant has its own type");
        for e in all {
            let back = Event::from_row(&row(e.kind(), e.payload()));
            assert_eq!(back.as_ref(), Some(&e), "{}", e.kind());
        }
    }

    #[test]
    fn payloads_keep_their_field_names_and_unknown_rows_are_refused() {
        let e = Event::ApiRetry {
            attempt: 2,
            max_retries: 10,
            error_status: Some(429),
            error: Some("rate_limit".into()),
            retry_delay_ms: None,
        };
        assert_eq!(
            e.payload(),
            serde_json::json!({"attempt": 2, "max_retries": 10, "error_status": 429, "error": "rate_limit"})
        );
        assert_eq!(
            Event::ending(JobStatus::Done, JobEnd::default()).kind(),
            "job.completed"
        );
        assert_eq!(
            Event::ending(JobStatus::Canceled, JobEnd::default()).kind(),
            "job.canceled"
        );
        assert_eq!(
            Event::ending(JobStatus::Failed, JobEnd::default()).kind(),
            "job.failed"
        );
        assert!(Event::from_row(&row("job.unheard_of", serde_json::json!({}))).is_none());
        assert!(
            Event::from_row(&row("job.queued", serde_json::json!({"position": "x"}))).is_none()
        );
        assert!(e.is_progress());
        assert!(!Event::JobCompleted(JobEnd::default()).is_progress());
    }
}
