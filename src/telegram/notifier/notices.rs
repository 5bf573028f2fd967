//! "Claude API temporarily unavailable" reaches every chat with a queued or waiting job, once per chat and
//! period: the core writes one row per session, and rows whose session follows a chat already told (or
//! about to be) are delivered with that message. The chats told are kept in SQLite, so a restarted
//! notifier does not tell them again.

use std::collections::HashSet;

use super::*;

const TOLD_KEY: &str = "telegram.claude_notice";

/// The chats told in the current period of the Claude API being unavailable.
#[derive(Default)]
pub(super) struct ClaudeTold {
    loaded: bool,
    since: i64,
    chats: HashSet<i64>,
}

fn is_claude_row(e: &OutboxEvent) -> bool {
    e.event_type == "claude.unavailable"
}

fn since_of(e: &OutboxEvent) -> i64 {
    e.payload.get("since").and_then(|v| v.as_i64()).unwrap_or(0)
}

impl Notifier {
    async fn load_told(&self, st: &mut NotifierState) {
        if std::mem::replace(&mut st.claude.loaded, true) {
            return;
        }
        if let Some(v) = self.core.front_value(TOLD_KEY).await
            && let Some((since, chats)) = v.split_once(':')
            && let Ok(since) = since.parse()
        {
            st.claude.since = since;
            st.claude.chats = chats.split(',').filter_map(|c| c.parse().ok()).collect();
        }
    }

    pub(super) async fn on_claude_notice(
        &self,
        st: &mut NotifierState,
        chat: i64,
        row: OutboxEvent,
        message: &str,
    ) {
        self.load_told(st).await;
        let since = since_of(&row);
        if st.claude.since == since && st.claude.chats.contains(&chat) {
            let _ = self.core.mark_delivered(&[row.id]).await;
            return;
        }
        // Another session of the same chat is about to be told: one message carries both rows.
        let queued = st.queue.iter_mut().find_map(|o| match o {
            Outgoing::Text {
                chat_id, events, ..
            } if *chat_id == chat
                && events
                    .iter()
                    .any(|e| is_claude_row(e) && since_of(e) == since) =>
            {
                Some(events)
            }
            _ => None,
        });
        if let Some(events) = queued {
            events.push(row);
            return;
        }
        self.enqueue(
            st,
            // Silent: held jobs wait and no one need act; each job's result notifies when it comes.
            Outgoing::Text {
                chat_id: chat,
                html: escape(message),
                buttons: Vec::new(),
                events: vec![row],
                silent: true,
            },
        );
    }

    /// A notice went out to `chat`: the chat is told for its period, on disk before its rows are marked.
    pub(super) async fn told(&self, st: &mut NotifierState, chat: i64, events: &[OutboxEvent]) {
        let Some(since) = events.iter().find(|e| is_claude_row(e)).map(since_of) else {
            return;
        };
        self.load_told(st).await;
        if st.claude.since != since {
            st.claude.since = since;
            st.claude.chats.clear();
        }
        st.claude.chats.insert(chat);
        let chats: Vec<String> = st.claude.chats.iter().map(i64::to_string).collect();
        let _ = self
            .core
            .set_front_value(TOLD_KEY, &format!("{since}:{}", chats.join(",")))
            .await;
    }
}

/// Two notices of the same agent's limit name resets this close (seconds) when they are one limit.
const SAME_LIMIT_SECS: i64 = 60;

impl Notifier {
    /// "⏸ … usage limit … resumes at HH:MM UTC": once per chat and limit, whichever of its sessions
    /// waits for it.
    pub(super) async fn on_usage_notice(
        &self,
        st: &mut NotifierState,
        chat: i64,
        row: OutboxEvent,
        agent: &str,
        until: i64,
        message: &str,
    ) {
        let now = chrono::Utc::now().timestamp();
        st.usage_told.retain(|(_, _, t)| *t + SAME_LIMIT_SECS > now);
        let told = st
            .usage_told
            .iter()
            .any(|(c, a, t)| *c == chat && a == agent && (t - until).abs() <= SAME_LIMIT_SECS);
        if told {
            let _ = self.core.mark_delivered(&[row.id]).await;
            return;
        }
        st.usage_told.push((chat, agent.to_string(), until));
        self.enqueue(
            st,
            Outgoing::Text {
                chat_id: chat,
                html: escape(message),
                buttons: Vec::new(),
                events: vec![row],
                // Work stops for hours maybe: the person is told, once.
                silent: false,
            },
        );
    }
}
