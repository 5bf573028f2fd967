//! What the notifier sends: one item of its queue, and whether it makes the phone ring. Progress goes
//! silently (`disable_notification`); what needs the person (an approval request, its reminder, a job's
//! result, an alert, the answer to a command) notifies.

use super::{Button, OutboxEvent};

/// Something to send.
#[derive(Debug, Clone)]
pub enum Outgoing {
    Text {
        chat_id: i64,
        html: String,
        buttons: Vec<Button>,
        /// Outbox rows this message delivers (marked delivered once it is sent).
        events: Vec<OutboxEvent>,
        /// Sent without a notification (`disable_notification`): progress, not something that needs the
        /// person.
        silent: bool,
    },
    Document {
        chat_id: i64,
        filename: String,
        bytes: Vec<u8>,
        caption: String,
        events: Vec<OutboxEvent>,
        silent: bool,
    },
    /// A file of a session's worktree (`/get`), read through the core when it is sent; a file that can
    /// no longer be read is told instead.
    WorktreeFile {
        chat_id: i64,
        session_id: String,
        path: String,
        caption: String,
        events: Vec<OutboxEvent>,
    },
    Answer {
        callback_id: String,
        text: String,
    },
    /// Create or edit the tracker message of a job from its current state.
    Tracker {
        job_id: String,
    },
    /// Send an approval request (with its buttons while it is pending).
    Approval {
        approval_id: String,
        chat_id: i64,
        events: Vec<OutboxEvent>,
        /// Shown again on request (`/approvals`): a new message, even when one was sent before.
        again: bool,
    },
    /// Remind the person of a request that still waits (`approvals.remind_after_secs`): a notifying reply
    /// to the request's message, unless it was decided meanwhile.
    Reminder {
        approval_id: String,
        chat_id: i64,
        events: Vec<OutboxEvent>,
    },
    /// Show an approval's decision in its message, buttons removed.
    ApprovalDecided {
        approval_id: String,
        /// The chat the edit is paced in (the session's chat).
        chat_id: i64,
        events: Vec<OutboxEvent>,
    },
}

impl Outgoing {
    /// The job this item is about, for its log lines (the job's trace id follows from it).
    pub(super) fn job_id(&self) -> Option<&str> {
        match self {
            Outgoing::Tracker { job_id } => Some(job_id),
            Outgoing::Text { events, .. }
            | Outgoing::Document { events, .. }
            | Outgoing::WorktreeFile { events, .. }
            | Outgoing::Approval { events, .. }
            | Outgoing::Reminder { events, .. }
            | Outgoing::ApprovalDecided { events, .. } => {
                events.iter().find_map(|e| e.job_id.as_deref())
            }
            Outgoing::Answer { .. } => None,
        }
    }

    /// A message that notifies (the answer to a command, an alert).
    pub fn text(chat_id: i64, html: String, buttons: Vec<Button>) -> Outgoing {
        Outgoing::Text {
            chat_id,
            html,
            buttons,
            events: Vec::new(),
            silent: false,
        }
    }
}
