//! The `notifier` actor: the only sender to Telegram. It reads the events outbox, keeps job tracker
//! messages up to date (edited in place, at most once a second, changes coalesced), and sends replies.
//!
//! Its memory queue holds at most 1000 items; when full, progress items go first (counted in
//! `televibe_notifications_dropped_total`), and results, failures and notices wait in the outbox instead.
//! Pacing: about one message a second per chat and 30 a second overall; a 429 pauses everything for its
//! `retry_after`; while Telegram is unreachable the queue is kept and flushed when it is back. An outbox
//! row is marked delivered once the message carrying it went out, so after a restart it is sent once.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::buttons::tracker_buttons;
use super::client::{Button, TgError};
use super::render::{self, ToolLine, Tracker, escape};
use super::{Link, routes};
use crate::core::Core;
use crate::domain::READ_ONLY_MESSAGE;
use crate::domain::{JobStatus, OutboxEvent};
use crate::events::Event;
use crate::supervisor::ChildMessage;
use crate::telemetry::EventTypeLabel;

/// The spec's cap on queued notifications.
pub const QUEUE_CAP: usize = 1000;
/// Telegram's limits: about one message a second in a chat (edits count) ...
const PER_CHAT_GAP: Duration = Duration::from_millis(1000);
/// ... and 20 a minute in a group (group and channel chat ids are negative).
const GROUP_GAP: Duration = Duration::from_millis(3000);
const GLOBAL_PER_SECOND: usize = 30;
const TRACKER_EDIT_GAP: Duration = Duration::from_millis(1000);

/// Something to send.
#[derive(Debug, Clone)]
pub enum Outgoing {
    Text {
        chat_id: i64,
        html: String,
        buttons: Vec<Button>,
        /// Outbox rows this message delivers (marked delivered once it is sent).
        events: Vec<OutboxEvent>,
    },
    Document {
        chat_id: i64,
        filename: String,
        bytes: Vec<u8>,
        caption: String,
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
    pub fn text(chat_id: i64, html: String, buttons: Vec<Button>) -> Outgoing {
        Outgoing::Text {
            chat_id,
            html,
            buttons,
            events: Vec::new(),
        }
    }
}

pub enum NotifierMsg {
    Send(Outgoing),
    Tick,
    Panic,
}

impl ChildMessage for NotifierMsg {
    fn injected_panic() -> Self {
        NotifierMsg::Panic
    }
}

/// A job's tracker: what it shows and where.
struct TrackerState {
    chat_id: i64,
    message_id: Option<i64>,
    view: Tracker,
    /// Events folded into the view but not yet shown.
    unsent: Vec<OutboxEvent>,
    /// Whether a progress event is among the unsent ones (a newer one replaces it, counted as dropped).
    progress_unsent: bool,
    last_edit: Option<Instant>,
    queued: bool,
}

pub struct Notifier {
    pub core: Arc<Core>,
    pub link: Arc<Link>,
}

pub struct NotifierState {
    queue: VecDeque<Outgoing>,
    trackers: HashMap<String, TrackerState>,
    cursor: i64,
    paused_until: Option<Instant>,
    backoff: Duration,
    chat_next: HashMap<i64, Instant>,
    sent_window: VecDeque<Instant>,
    read_only_told: bool,
}

impl Actor for Notifier {
    type Msg = NotifierMsg;
    type State = NotifierState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<NotifierMsg>,
        _: (),
    ) -> Result<NotifierState, ActorProcessingErr> {
        self.link.set_notifier(Some(myself.clone()));
        myself.send_interval(Duration::from_millis(100), || NotifierMsg::Tick);
        Ok(NotifierState {
            queue: VecDeque::new(),
            trackers: HashMap::new(),
            cursor: 0,
            paused_until: None,
            backoff: Duration::from_millis(500),
            chat_next: HashMap::new(),
            sent_window: VecDeque::new(),
            read_only_told: false,
        })
    }

    async fn post_stop(
        &self,
        _: ActorRef<NotifierMsg>,
        _: &mut NotifierState,
    ) -> Result<(), ActorProcessingErr> {
        self.link.set_notifier(None);
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<NotifierMsg>,
        msg: NotifierMsg,
        st: &mut NotifierState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NotifierMsg::Send(out) => self.enqueue(st, out),
            NotifierMsg::Tick => self.tick(st).await,
            NotifierMsg::Panic => panic!("injected panic in notifier"),
        }
        Ok(())
    }
}

impl Notifier {
    fn enqueue(&self, st: &mut NotifierState, out: Outgoing) {
        if st.queue.len() >= QUEUE_CAP {
            // Progress goes first; a tracker keeps its state, so dropping its item loses only an edit.
            if let Some(pos) = st.queue.iter().position(|o| matches!(o, Outgoing::Tracker { job_id } if !st.trackers.get(job_id).is_some_and(|t| t.view.is_final()))) {
                if let Some(Outgoing::Tracker { job_id }) = st.queue.remove(pos)
                    && let Some(t) = st.trackers.get_mut(&job_id)
                {
                    t.queued = false;
                }
                self.core.metrics().notifications_dropped_total.inc();
            }
        }
        st.queue.push_back(out);
    }

    async fn tick(&self, st: &mut NotifierState) {
        self.tell_read_only(st);
        self.read_outbox(st).await;
        self.flush(st).await;
    }

    fn tell_read_only(&self, st: &mut NotifierState) {
        let ro = self.core.is_read_only();
        if ro && !st.read_only_told {
            st.read_only_told = true;
            for chat in routes::notice_chats(&self.core) {
                self.enqueue(
                    st,
                    Outgoing::text(chat, escape(READ_ONLY_MESSAGE), Vec::new()),
                );
            }
        } else if !ro {
            st.read_only_told = false;
        }
    }

    /// Reads new outbox rows, unless the queue is full: then they wait in SQLite.
    async fn read_outbox(&self, st: &mut NotifierState) {
        if st.queue.len() >= QUEUE_CAP {
            return;
        }
        let Ok(events) = self.core.undelivered_events(st.cursor, 200).await else {
            return;
        };
        for ev in events {
            st.cursor = ev.id;
            self.on_event(st, ev).await;
        }
    }

    async fn on_event(&self, st: &mut NotifierState, row: OutboxEvent) {
        let core = &self.core;
        let chat = match &row.session_id {
            Some(s) => routes::session_chat(core, s).await,
            None => routes::notice_chats(core).into_iter().next(),
        };
        let Some(chat) = chat else {
            // Nobody to tell: done.
            let _ = core.mark_delivered(&[row.id]).await;
            return;
        };
        let Some(event) = Event::from_row(&row) else {
            tracing::warn!(target: "televibe.notifier", event_type = %row.event_type, "outbox row of an unknown type or shape; skipped");
            let _ = core.mark_delivered(&[row.id]).await;
            return;
        };
        let html = match &event {
            Event::JobQueued { .. }
            | Event::JobStarted { .. }
            | Event::ToolStarted { .. }
            | Event::ToolCompleted { .. }
            | Event::ApiRetry { .. }
            | Event::JobCompleted(_)
            | Event::JobFailed(_)
            | Event::JobCanceled(_) => return self.on_job_event(st, chat, row, &event).await,
            Event::ApprovalRequested { approval_id } => {
                let approval_id = approval_id.clone();
                return self.enqueue(
                    st,
                    Outgoing::Approval {
                        approval_id,
                        chat_id: chat,
                        events: vec![row],
                    },
                );
            }
            Event::ApprovalDecided { approval_id } | Event::ApprovalExpired { approval_id } => {
                if matches!(event, Event::ApprovalExpired { .. }) {
                    self.enqueue(
                        st,
                        Outgoing::text(
                            chat,
                            "⏰ An approval request expired: the job was canceled.".into(),
                            Vec::new(),
                        ),
                    );
                }
                let approval_id = approval_id.clone();
                return self.enqueue(
                    st,
                    Outgoing::ApprovalDecided {
                        approval_id,
                        chat_id: chat,
                        events: vec![row],
                    },
                );
            }
            Event::SessionCreated { .. } | Event::SessionClosed { .. } => {
                // The person who created or closed it got the answer already.
                let _ = core.mark_delivered(&[row.id]).await;
                return;
            }
            Event::ClaudeUnavailable { message } => escape(message),
            Event::BreakerOpened { breaker } => {
                format!("⚠️ Circuit breaker <b>{}</b> opened", escape(breaker))
            }
            Event::BackupFailed { stage, error, .. } => format!(
                "⚠️ Backup failed ({}): {}",
                if stage == "remote" {
                    "upload; the local backup is kept"
                } else {
                    "no new backup was written; earlier ones are untouched"
                },
                escape(error)
            ),
            Event::DatabaseCorrupted { detail } => format!(
                "🚨 The state database failed its integrity check: {}. Writes are disabled; \
                 stop the daemon and run <code>televibe backup restore latest</code>",
                escape(detail)
            ),
            Event::WorktreeMissing { path } => format!(
                "⚠️ Session {} lost its worktree {}",
                escape(row.session_id.as_deref().unwrap_or("?")),
                render::code(path)
            ),
        };
        let target = if row.session_id.is_none() {
            routes::notice_chats(core)
                .into_iter()
                .next()
                .unwrap_or(chat)
        } else {
            chat
        };
        self.enqueue(
            st,
            Outgoing::Text {
                chat_id: target,
                html,
                buttons: Vec::new(),
                events: vec![row],
            },
        );
    }

    async fn on_job_event(
        &self,
        st: &mut NotifierState,
        chat: i64,
        row: OutboxEvent,
        event: &Event,
    ) {
        let Some(job_id) = row.job_id.clone() else {
            let _ = self.core.mark_delivered(&[row.id]).await;
            return;
        };
        if !st.trackers.contains_key(&job_id) {
            let known = routes::tracker_message(&self.core, &job_id).await;
            let job = self.core.job_by_id(&job_id).await;
            let view = Tracker {
                job_id: job_id.clone(),
                session_id: row.session_id.clone().unwrap_or_default(),
                project_id: row.project_id.clone().unwrap_or_default(),
                instruction: job
                    .as_ref()
                    .map(|j| j.instruction.clone())
                    .unwrap_or_default(),
                status: Some(JobStatus::Queued),
                ..Default::default()
            };
            st.trackers.insert(
                job_id.clone(),
                TrackerState {
                    chat_id: known.map(|k| k.0).unwrap_or(chat),
                    message_id: known.map(|k| k.1),
                    view,
                    unsent: Vec::new(),
                    progress_unsent: false,
                    last_edit: None,
                    queued: false,
                },
            );
        }
        let t = st.trackers.get_mut(&job_id).expect("inserted above");
        apply(&mut t.view, event, row.created_at);
        if event.is_progress() {
            if t.progress_unsent {
                // Coalesced: an earlier progress change is replaced before it was shown.
                self.core.metrics().notifications_dropped_total.inc();
            }
            t.progress_unsent = true;
        }
        t.unsent.push(row);
        if !t.queued {
            t.queued = true;
            self.enqueue(st, Outgoing::Tracker { job_id });
        }
    }

    /// Sends what pacing allows, in order per chat.
    async fn flush(&self, st: &mut NotifierState) {
        let now = Instant::now();
        if st.paused_until.is_some_and(|p| now < p) {
            return;
        }
        let mut skipped_chats: Vec<i64> = Vec::new();
        let mut i = 0;
        while i < st.queue.len() {
            while st
                .sent_window
                .front()
                .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
            {
                st.sent_window.pop_front();
            }
            if st.sent_window.len() >= GLOBAL_PER_SECOND {
                return;
            }
            let chat = self.chat_of(st, &st.queue[i]);
            let paced = chat.is_some_and(|c| {
                skipped_chats.contains(&c) || st.chat_next.get(&c).is_some_and(|n| now < *n)
            });
            let tracker_wait = match &st.queue[i] {
                Outgoing::Tracker { job_id } => st
                    .trackers
                    .get(job_id)
                    .and_then(|t| t.last_edit)
                    .is_some_and(|l| now.duration_since(l) < TRACKER_EDIT_GAP),
                _ => false,
            };
            if paced || tracker_wait {
                if let Some(c) = chat {
                    skipped_chats.push(c);
                }
                i += 1;
                continue;
            }
            let item = st.queue.remove(i).expect("index checked");
            match self.deliver(st, &item).await {
                Ok(()) => {
                    st.backoff = Duration::from_millis(500);
                    st.sent_window.push_back(Instant::now());
                    if let Some(c) = chat {
                        st.chat_next.insert(c, Instant::now() + chat_gap(c));
                    }
                }
                Err(TgError::RetryAfter(secs)) => {
                    st.queue.insert(i, item);
                    st.paused_until = Some(Instant::now() + Duration::from_secs(secs));
                    tracing::warn!(target: "televibe.notifier", retry_after = secs, "Telegram rate limit: pausing");
                    return;
                }
                Err(TgError::Unavailable(_) | TgError::BreakerOpen) => {
                    st.queue.insert(i, item);
                    st.paused_until = Some(Instant::now() + st.backoff);
                    st.backoff = (st.backoff * 2).min(Duration::from_secs(5));
                    return;
                }
                Err(e) => {
                    // Telegram refused this message for good: drop it, but never retry it forever.
                    tracing::error!(target: "televibe.notifier", error = %e, "message refused by Telegram; dropped");
                    self.settle(st, &item).await;
                }
            }
        }
    }

    fn chat_of(&self, st: &NotifierState, item: &Outgoing) -> Option<i64> {
        match item {
            Outgoing::Text { chat_id, .. } | Outgoing::Document { chat_id, .. } => Some(*chat_id),
            Outgoing::Tracker { job_id } => st.trackers.get(job_id).map(|t| t.chat_id),
            Outgoing::Approval { chat_id, .. } | Outgoing::ApprovalDecided { chat_id, .. } => {
                Some(*chat_id)
            }
            Outgoing::Answer { .. } => None,
        }
    }

    async fn deliver(&self, st: &mut NotifierState, item: &Outgoing) -> Result<(), TgError> {
        let c = &self.link.client;
        match item {
            Outgoing::Text {
                chat_id,
                html,
                buttons,
                ..
            } => c.send_html(*chat_id, html, buttons).await.map(|_| ())?,
            Outgoing::Document {
                chat_id,
                filename,
                bytes,
                caption,
            } => c.send_document(*chat_id, filename, bytes, caption).await?,
            Outgoing::Answer { callback_id, text } => {
                // A stale query cannot be answered; that is not worth a retry.
                match c.answer_callback(callback_id, text).await {
                    Err(TgError::Rejected { .. }) | Ok(()) => {}
                    Err(e) => return Err(e),
                }
            }
            Outgoing::Approval {
                approval_id,
                chat_id,
                events,
            } => {
                if let Some(a) = self.core.approval(approval_id).await {
                    let view = self.render_approval(&a).await;
                    // Sent before a restart that came before its outbox row was marked delivered: that message
                    // is brought up to date instead of a second one being sent (`/approvals`, with no outbox
                    // row, sends it again on purpose).
                    if !events.is_empty()
                        && let (Some(chat), Some(mid)) = (a.telegram_chat_id, a.telegram_message_id)
                    {
                        let buttons = if a.state == crate::domain::ApprovalState::Pending {
                            super::buttons::approval_buttons(&a.id)
                        } else {
                            Vec::new()
                        };
                        match c.edit_html(chat, mid, &view.html, &buttons).await {
                            Ok(()) => return Ok(()),
                            Err(e) if e.not_modified() => return Ok(()),
                            // The message is gone (deleted by the user): it is sent again below.
                            Err(TgError::Rejected { .. }) => {}
                            Err(e) => return Err(e),
                        }
                    }
                    // The whole input goes first, so it is there before anyone can tap a button.
                    if let Some((filename, text)) = &view.attachment {
                        let caption = format!(
                            "Whole input of the approval request for {} in Session {}",
                            escape(&a.tool_name),
                            escape(&a.session_id)
                        );
                        c.send_document(*chat_id, filename, text.as_bytes(), &caption)
                            .await?;
                    }
                    let html = view.html;
                    let buttons = if a.state == crate::domain::ApprovalState::Pending {
                        super::buttons::approval_buttons(&a.id)
                    } else {
                        Vec::new()
                    };
                    let mid = c.send_html(*chat_id, &html, &buttons).await?;
                    self.core.set_approval_message(&a.id, *chat_id, mid).await;
                }
            }
            Outgoing::ApprovalDecided { approval_id, .. } => {
                if let Some(a) = self.core.approval(approval_id).await
                    && let (Some(chat), Some(mid)) = (a.telegram_chat_id, a.telegram_message_id)
                {
                    let html = self.render_approval(&a).await.html;
                    match c.edit_html(chat, mid, &html, &[]).await {
                        // Already shows the decision (brought up to date after a restart).
                        Err(e) if e.not_modified() => {}
                        other => other?,
                    }
                }
            }
            Outgoing::Tracker { job_id } => {
                let Some(t) = st.trackers.get(job_id) else {
                    return Ok(());
                };
                let html = t.view.render();
                let status = t.view.status.unwrap_or(JobStatus::Queued);
                let buttons = tracker_buttons(job_id, status);
                let edited = match t.message_id {
                    Some(mid) => match c.edit_html(t.chat_id, mid, &html, &buttons).await {
                        Ok(()) => true,
                        // The message is gone (deleted by the user): the tracker starts a new one.
                        Err(TgError::Rejected { .. }) => false,
                        Err(e) => return Err(e),
                    },
                    None => false,
                };
                if !edited {
                    {
                        let mid = c.send_html(t.chat_id, &html, &buttons).await?;
                        let chat = t.chat_id;
                        if let Some(t) = st.trackers.get_mut(job_id) {
                            t.message_id = Some(mid);
                        }
                        routes::remember_tracker(&self.core, job_id, chat, mid).await;
                    }
                }
            }
        }
        self.settle(st, item).await;
        Ok(())
    }

    /// An approval request for people: tool, session, project, branch and the whole input (a file when it
    /// does not fit, see `render::approval_view`), and once decided, who decided and when.
    async fn render_approval(&self, a: &crate::domain::Approval) -> render::ApprovalView {
        let session = self.core.get_session(&a.session_id).await.ok();
        let (project, branch) = session
            .map(|s| (s.project_id, s.branch))
            .unwrap_or_default();
        let header = format!(
            "✋ <b>Approval needed</b> · Session {} · {} · {}\nTool: <b>{}</b> ({})",
            escape(&a.session_id),
            escape(&project),
            render::code(&branch),
            escape(&render::visible(&a.tool_name)),
            escape(&a.scope),
        );
        let footer = match a.state {
            crate::domain::ApprovalState::Pending => String::new(),
            crate::domain::ApprovalState::Expired => {
                "\n⏰ <b>Expired</b>: denied, job canceled".to_string()
            }
            state => {
                let icon = if state == crate::domain::ApprovalState::Approved {
                    "✅"
                } else {
                    "❌"
                };
                let when = a
                    .decided_at
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                    .unwrap_or_default();
                format!(
                    "\n{icon} <b>{}</b> ({}) by {} at {}",
                    escape(state.as_str()),
                    escape(a.decision.as_deref().unwrap_or("")),
                    escape(&render::cut(a.decided_by.as_deref().unwrap_or("?"), 100)),
                    escape(&when)
                )
            }
        };
        render::approval_view(&header, &footer, &a.id, &a.tool_name, &a.tool_input)
    }

    /// The item is done (sent, or refused for good): its outbox rows are delivered.
    async fn settle(&self, st: &mut NotifierState, item: &Outgoing) {
        let events: Vec<OutboxEvent> = match item {
            Outgoing::Text { events, .. }
            | Outgoing::Approval { events, .. }
            | Outgoing::ApprovalDecided { events, .. } => events.clone(),
            Outgoing::Tracker { job_id } => match st.trackers.get_mut(job_id) {
                Some(t) => {
                    t.queued = false;
                    t.last_edit = Some(Instant::now());
                    t.progress_unsent = false;
                    std::mem::take(&mut t.unsent)
                }
                None => Vec::new(),
            },
            _ => Vec::new(),
        };
        if let Outgoing::Tracker { job_id } = item
            && st
                .trackers
                .get(job_id)
                .is_some_and(|t| t.view.is_final() && t.unsent.is_empty())
        {
            st.trackers.remove(job_id);
        }
        if events.is_empty() {
            return;
        }
        let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
        if let Err(e) = self.core.mark_delivered(&ids).await {
            tracing::warn!(target: "televibe.notifier", error = %e, "delivery not recorded");
        }
        let now = chrono::Utc::now();
        for e in events {
            let secs = (now - e.created_at).num_milliseconds().max(0) as f64 / 1000.0;
            self.core
                .metrics()
                .event_delivery_seconds
                .get_or_create(&EventTypeLabel {
                    event_type: e.event_type.clone(),
                })
                .observe(secs);
        }
    }
}

/// Folds one job event into a tracker's view (`at`: when the event happened).
fn apply(view: &mut Tracker, event: &Event, at: chrono::DateTime<chrono::Utc>) {
    match event {
        Event::JobQueued {
            instruction_preview,
            ..
        } if view.instruction.is_empty() => {
            view.instruction = instruction_preview.clone();
        }
        Event::JobStarted { .. } => {
            view.status = Some(JobStatus::Running);
            view.started_unix = Some(at.timestamp());
        }
        Event::ApiRetry {
            attempt,
            max_retries,
            error_status,
            ..
        } => {
            view.api_retry = Some(format!(
                "{attempt}/{max_retries}{}",
                error_status
                    .map(|c| format!(" (HTTP {c})"))
                    .unwrap_or_default()
            ));
        }
        Event::ToolStarted { tool, target, .. } => {
            view.api_retry = None;
            view.tools.push(ToolLine {
                tool: tool.clone(),
                target: target.clone(),
                done: false,
                failed: false,
            });
            // Only recent tools are shown; older ones need not be kept.
            if view.tools.len() > 50 {
                view.tools.drain(..view.tools.len() - render::TRACKER_TOOLS);
            }
        }
        Event::ToolCompleted {
            tool,
            target,
            is_error,
            ..
        } => {
            if let Some(t) = view
                .tools
                .iter_mut()
                .rev()
                .find(|t| !t.done && &t.tool == tool && &t.target == target)
            {
                t.done = true;
                t.failed = *is_error;
            }
        }
        Event::JobCompleted(end) | Event::JobFailed(end) | Event::JobCanceled(end) => {
            view.status = end.status.or(Some(match event {
                Event::JobCompleted(_) => JobStatus::Done,
                Event::JobCanceled(_) => JobStatus::Canceled,
                _ => JobStatus::Failed,
            }));
            view.error = end.message.clone().or_else(|| end.error.clone());
            view.result = end.result.clone();
            view.turns = end.num_turns;
            view.cost = end.total_cost_usd;
            view.finished_secs = end.duration_secs;
            view.files = end.files_changed.clone();
            view.diff_stat = end.diff_stat.clone();
        }
        _ => {}
    }
}

/// The least time between two messages (or edits) in a chat.
pub fn chat_gap(chat_id: i64) -> Duration {
    if chat_id < 0 { GROUP_GAP } else { PER_CHAT_GAP }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::JobEnd;

    #[test]
    fn a_model_api_retry_shows_on_the_tracker_until_the_agent_moves_on() {
        let mut view = Tracker {
            job_id: "0123456789abcdef".into(),
            status: Some(JobStatus::Running),
            ..Default::default()
        };
        let now = chrono::Utc::now();
        let retry = |attempt, error_status| Event::ApiRetry {
            attempt,
            max_retries: 10,
            error_status,
            error: None,
        };
        apply(&mut view, &retry(2, Some(529)), now);
        assert!(
            view.render()
                .contains("⏳ model API busy, retry 2/10 (HTTP 529)"),
            "{}",
            view.render()
        );
        assert!(
            retry(2, None).is_progress(),
            "coalesced like other progress"
        );
        apply(
            &mut view,
            &Event::ToolStarted {
                tool: "Bash".into(),
                target: "ls".into(),
                tool_use_id: "t1".into(),
            },
            now,
        );
        assert!(
            !view.render().contains("model API busy"),
            "{}",
            view.render()
        );
        // A retry without a status (network error) still shows; a finished job no longer does.
        apply(&mut view, &retry(1, None), now);
        assert!(view.render().contains("retry 1/10\n"), "{}", view.render());
        apply(
            &mut view,
            &Event::JobCompleted(JobEnd {
                status: Some(JobStatus::Done),
                ..Default::default()
            }),
            now,
        );
        assert!(
            !view.render().contains("model API busy"),
            "{}",
            view.render()
        );
    }
}
