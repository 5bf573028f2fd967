//! Each chat's verbosity as the notifier applies it: read once per chat from its front value, changed by
//! `/verbosity` through the link. `final` holds a running job's tracker back (its rows wait with it, and are
//! marked delivered with the result); a change applies from the next tracker item, and a chat that leaves
//! `final` sees its running jobs' trackers at once.

use super::*;

impl Notifier {
    /// The chat's verbosity, read from SQLite the first time.
    pub(super) async fn verbosity_of(&self, st: &mut NotifierState, chat: i64) -> Verbosity {
        if let Some(v) = st.verbosity.get(&chat) {
            return *v;
        }
        let v = verbosity::chat_verbosity(&self.core, chat).await;
        st.verbosity.insert(chat, v);
        v
    }

    pub(super) fn verbosity_changed(&self, st: &mut NotifierState, chat: i64, v: Verbosity) {
        st.verbosity.insert(chat, v);
        if v == Verbosity::Final {
            return;
        }
        let held: Vec<String> = st
            .trackers
            .iter()
            .filter(|(_, t)| t.chat_id == chat && !t.queued && !t.unsent.is_empty())
            .map(|(id, _)| id.clone())
            .collect();
        for job_id in held {
            // Marked queued only once it is: a full queue leaves it to the job's next event.
            if self.enqueue(
                st,
                Outgoing::Tracker {
                    job_id: job_id.clone(),
                },
            ) && let Some(t) = st.trackers.get_mut(&job_id)
            {
                t.queued = true;
            }
        }
    }
}

/// Whether a tracker in this state is shown now: always once the job ended, while it runs unless the chat
/// chose `final`.
pub(super) fn shown(v: Verbosity, t: &TrackerState) -> bool {
    v != Verbosity::Final || t.view.is_final()
}
