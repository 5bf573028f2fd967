//! The `notifier` actor: the only sender to Telegram. It reads the events outbox when woken by whoever
//! wrote a row (a slow sweep is only a safety net), keeps job tracker messages up to date as each chat's
//! verbosity asks (progress silent, edits at least a second apart and coalesced; the result at once, in a
//! new message that notifies: `show.rs`), and sends the front's replies, which are outbox rows too
//! (`chat.reply`), so a full queue or a restart loses none.
//!
//! Its memory queue holds at most 1000 items, a hard cap: rows are read only while what a row becomes fits,
//! making room by dropping queued progress edits (coalesced: the tracker keeps its state; counted in
//! `televibe_notifications_dropped_total`); results, failures, notices and replies wait in the outbox.
//! Only what exists in memory alone (callback answers, replies while the store is read-only) can be dropped
//! past the cap, logged and counted.
//! Pacing (`pace.rs`): token buckets per chat, 20 a minute per group, 30 a second overall; a 429 pauses the
//! chat it concerns for its `retry_after`; while Telegram is unreachable the queue is kept and flushed when it
//! is back. An outbox row is marked delivered once the message carrying it went out, so after a restart it
//! is sent once.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::client::{Button, TgError};
use super::render::{self, ToolLine, Tracker, escape};
use super::verbosity::{self, Verbosity};
use super::{Link, routes};
use crate::core::Core;
use crate::core::events::Event;
use crate::domain::READ_ONLY_MESSAGE;
use crate::domain::{JobStatus, OutboxEvent};
use crate::supervisor::ChildMessage;
use crate::telemetry::EventTypeLabel;

/// The spec's cap on queued notifications.
pub const QUEUE_CAP: usize = 1000;
/// Progress edits of one tracker message are at least this far apart.
const TRACKER_EDIT_GAP: Duration = Duration::from_millis(1000);

pub enum NotifierMsg {
    Send(Outgoing),
    Tick,
    /// A chat chose another verbosity (`/verbosity`).
    Verbosity(i64, Verbosity),
    /// Telegram answers again after an outage: the outage pause ends now, not at its backoff.
    Reachable,
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
    /// The job's long result went out as a document (a retry of its message does not send it again).
    result_file_sent: bool,
}

pub struct Notifier {
    pub core: Arc<Core>,
    pub link: Arc<Link>,
}

pub struct NotifierState {
    queue: VecDeque<Outgoing>,
    trackers: HashMap<String, TrackerState>,
    cursor: i64,
    pacer: pace::Pacer,
    backoff: Duration,
    /// Sending is paused because Telegram was unreachable (not because of a 429).
    outage: bool,
    read_only_told: bool,
    /// Chats told that the Claude API is unavailable, in the current period.
    claude: notices::ClaudeTold,
    /// The usage limits each chat was told of (chat, agent, reset).
    usage_told: Vec<(i64, String, i64)>,
    /// Each chat's verbosity, read from its front value the first time one of its jobs is shown.
    verbosity: HashMap<i64, Verbosity>,
    /// When a wake-up is already asked for.
    wake_at: Option<Instant>,
    myself: Option<ActorRef<NotifierMsg>>,
    /// Wakes the actor when an outbox row is written, and sweeps the outbox now and then.
    waker: Option<tokio::task::JoinHandle<()>>,
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
        let mut signal = self.core.events().outbox_watch();
        let me = myself.clone();
        let waker = tokio::spawn(async move {
            loop {
                // The first tick reads whatever the outbox kept while the notifier was down.
                if me.cast(NotifierMsg::Tick).is_err() {
                    return;
                }
                tokio::select! {
                    changed = signal.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep(SWEEP) => {}
                }
            }
        });
        Ok(NotifierState {
            queue: VecDeque::new(),
            trackers: HashMap::new(),
            cursor: 0,
            pacer: pace::Pacer::new(Instant::now()),
            backoff: Duration::from_millis(500),
            outage: false,
            read_only_told: false,
            claude: Default::default(),
            usage_told: Vec::new(),
            verbosity: HashMap::new(),
            wake_at: None,
            myself: Some(myself),
            waker: Some(waker),
        })
    }

    async fn post_stop(
        &self,
        _: ActorRef<NotifierMsg>,
        st: &mut NotifierState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(w) = st.waker.take() {
            w.abort();
        }
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
            NotifierMsg::Send(out) => {
                if self.enqueue(st, out) {
                    self.flush(st).await;
                }
            }
            NotifierMsg::Verbosity(chat, v) => {
                self.verbosity_changed(st, chat, v);
                self.flush(st).await;
            }
            NotifierMsg::Reachable => {
                if std::mem::take(&mut st.outage) {
                    st.pacer.end_outage();
                    st.backoff = Duration::from_millis(500);
                    self.flush(st).await;
                }
            }
            NotifierMsg::Tick => {
                if st.wake_at.is_some_and(|w| w <= Instant::now()) {
                    st.wake_at = None;
                }
                self.tick(st).await
            }
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
mod modes;
mod notices;
mod outgoing;
mod pace;
mod queue;
mod show;

pub use outgoing::Outgoing;

/// The most items one outbox row becomes (an expired approval: a notice and an edit of its message).
const ROW_ITEMS: usize = 2;

/// The outbox is read on every signal from whoever wrote it; this sweep is only a safety net.
const SWEEP: Duration = Duration::from_secs(5);

impl Notifier {
    /// Ticks until nothing is queued (the outbox read too), Telegram pauses us, or `limit` has passed;
    /// answers what is left, which stays in the outbox for the next start.
    async fn drain(&self, st: &mut NotifierState, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            self.tick(st).await;
            // Telegram paused us (429) or is unreachable: waiting would only delay the stop.
            let now = Instant::now();
            let paused = st.pacer.all_paused(now)
                || st.queue.iter().all(|item| {
                    self.chat_of(st, item)
                        .is_some_and(|c| st.pacer.chat_paused(c, now))
                });
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

    /// Reads new outbox rows while the queue has room for what a row becomes; the rest wait in SQLite
    /// (the cursor stays before them) until sends make room.
    async fn read_outbox(&self, st: &mut NotifierState) {
        while self.make_room(st, ROW_ITEMS) {
            let Ok(events) = self.core.undelivered_events(st.cursor, 200).await else {
                return;
            };
            let more = events.len() == 200;
            for ev in events {
                if !self.make_room(st, ROW_ITEMS) {
                    return;
                }
                st.cursor = ev.id;
                self.on_event(st, ev).await;
            }
            if !more {
                return;
            }
        }
    }

    /// Sends what pacing allows, in order per chat, and asks to be woken when the next held item may go.
    async fn flush(&self, st: &mut NotifierState) {
        let mut held_chats: Vec<i64> = Vec::new();
        let mut wake: Option<Instant> = None;
        let mut i = 0;
        while i < st.queue.len() {
            let now = Instant::now();
            if st.pacer.all_paused(now) {
                wake = st.pacer.ready_at(None, 0.0, now).into();
                break;
            }
            let chat = self.chat_of(st, &st.queue[i]);
            if chat.is_some_and(|c| held_chats.contains(&c)) {
                i += 1;
                continue;
            }
            let cost = cost_of(st, &st.queue[i]);
            let mut ready = st.pacer.ready_at(chat, cost, now);
            // Progress edits of one message stay a second apart; the final state goes as soon as the
            // chat's bucket allows.
            if let Outgoing::Tracker { job_id } = &st.queue[i]
                && let Some(t) = st.trackers.get(job_id)
                && !t.view.is_final()
                && let Some(last) = t.last_edit
            {
                ready = ready.max(last + TRACKER_EDIT_GAP);
            }
            if ready > now {
                wake = Some(wake.map_or(ready, |w| w.min(ready)));
                match chat {
                    Some(c) => held_chats.push(c),
                    // The overall limit holds everything.
                    None => break,
                }
                i += 1;
                continue;
            }
            let item = st.queue.remove(i).expect("index checked");
            match self.deliver(st, &item).await {
                Ok(()) => {
                    st.backoff = Duration::from_millis(500);
                    st.outage = false;
                    st.pacer.spent(chat, cost, Instant::now());
                }
                Err(TgError::RetryAfter(secs)) => {
                    let job = item.job_id().map(str::to_string);
                    st.queue.insert(i, item);
                    let until = Instant::now() + Duration::from_secs(secs);
                    st.pacer.pause(chat, until);
                    tracing::warn!(target: "televibe.notifier", retry_after = secs, chat_id = chat, job_id = job.as_deref(), "Telegram rate limit: pausing");
                }
                Err(TgError::Unavailable(_) | TgError::BreakerOpen) => {
                    st.queue.insert(i, item);
                    st.pacer.pause_outage(Instant::now() + st.backoff);
                    st.outage = true;
                    st.backoff = (st.backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    // Telegram refused this message for good: drop it, but never retry it forever.
                    tracing::error!(target: "televibe.notifier", error = %e, job_id = item.job_id(), "message refused by Telegram; dropped");
                    st.pacer.spent(chat, cost, Instant::now());
                    self.settle(st, &item).await;
                }
            }
        }
        st.pacer.forget_idle(Instant::now());
        self.gauge(st);
        if let Some(at) = wake
            && st.wake_at.is_none_or(|w| at < w || w <= Instant::now())
        {
            st.wake_at = Some(at);
            if let Some(me) = &st.myself {
                me.send_after(at.saturating_duration_since(Instant::now()), || {
                    NotifierMsg::Tick
                });
            }
        }
    }

    fn chat_of(&self, st: &NotifierState, item: &Outgoing) -> Option<i64> {
        match item {
            Outgoing::Text { chat_id, .. }
            | Outgoing::Document { chat_id, .. }
            | Outgoing::WorktreeFile { chat_id, .. } => Some(*chat_id),
            Outgoing::Tracker { job_id } => st.trackers.get(job_id).map(|t| t.chat_id),
            Outgoing::Approval { chat_id, .. }
            | Outgoing::Reminder { chat_id, .. }
            | Outgoing::ApprovalDecided { chat_id, .. } => Some(*chat_id),
            Outgoing::Answer { .. } => None,
        }
    }

    /// The item is done (sent, or refused for good): its outbox rows are delivered.
    async fn settle(&self, st: &mut NotifierState, item: &Outgoing) {
        if let Outgoing::Text {
            chat_id, events, ..
        } = item
        {
            self.told(st, *chat_id, events).await;
        }
        let events: Vec<OutboxEvent> = match item {
            Outgoing::Text { events, .. }
            | Outgoing::Document { events, .. }
            | Outgoing::WorktreeFile { events, .. }
            | Outgoing::Approval { events, .. }
            | Outgoing::Reminder { events, .. }
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
        let mut finished = None;
        if let Outgoing::Tracker { job_id } = item
            && st
                .trackers
                .get(job_id)
                .is_some_and(|t| t.view.is_final() && t.unsent.is_empty())
        {
            let t = st.trackers.remove(job_id);
            finished = Some((job_id, t.is_some_and(|t| t.result_file_sent)));
        }
        if !events.is_empty() {
            let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
            if let Err(e) = self.core.mark_delivered(&ids).await {
                tracing::warn!(target: "televibe.notifier", error = %e, "delivery not recorded");
            }
        }
        // Shown final and its rows delivered: the message is never edited again, its row goes.
        if let Some((job_id, file)) = finished {
            routes::forget_tracker(&self.core, job_id).await;
            if file {
                routes::forget_result_file(&self.core, job_id).await;
            }
        }
        if events.is_empty() {
            return;
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

/// Telegram calls an item makes: an approval may send its whole input as a file before the message, and a
/// job's result retires its progress message (an edit) and may send its whole text as a file before it
/// goes out in a new one.
fn cost_of(st: &NotifierState, item: &Outgoing) -> f64 {
    match item {
        Outgoing::Approval { .. } => 2.0,
        Outgoing::Tracker { job_id } => match st.trackers.get(job_id) {
            Some(t) if t.view.is_final() => {
                let retire = if t.message_id.is_some() { 1.0 } else { 0.0 };
                let file = t
                    .view
                    .result
                    .as_deref()
                    .is_some_and(|r| render::result::is_long(r) && !t.result_file_sent);
                1.0 + retire + if file { 1.0 } else { 0.0 }
            }
            _ => 1.0,
        },
        _ => 1.0,
    }
}
