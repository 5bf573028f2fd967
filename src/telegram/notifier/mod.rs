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
    /// Shutdown: send what is queued and in the outbox, for at most the given time; answers what is left.
    Drain(Duration, ractor::RpcReplyPort<usize>),
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
            NotifierMsg::Drain(limit, reply) => {
                let _ = reply.send(self.drain(st, limit).await);
            }
            NotifierMsg::Panic => panic!("injected panic in notifier"),
        }
        Ok(())
    }
}

mod deliver;
mod fold;

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

    /// Ticks until nothing is queued (the outbox read too), Telegram pauses us, or `limit` has passed;
    /// answers what is left, which stays in the outbox for the next start.
    async fn drain(&self, st: &mut NotifierState, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            self.tick(st).await;
            // Telegram paused us (429) or is unreachable: waiting would only delay the stop.
            let paused = st.paused_until.is_some_and(|p| Instant::now() < p);
            if st.queue.is_empty() || paused || Instant::now() >= deadline {
                return st.queue.len();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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

/// The least time between two messages (or edits) in a chat.
pub fn chat_gap(chat_id: i64) -> Duration {
    if chat_id < 0 { GROUP_GAP } else { PER_CHAT_GAP }
}
