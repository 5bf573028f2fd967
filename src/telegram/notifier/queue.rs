//! The memory queue's hard cap: room is made by dropping queued progress edits (a tracker keeps its state,
//! so its next edit shows everything), never results, notices or replies, which wait in the outbox; and the
//! queue's size and peak as gauges.

use super::*;

impl Notifier {
    /// Makes room for `need` more items by dropping queued progress edits (a tracker keeps its state, so
    /// its next item shows everything: coalesced, counted as dropped). False when the rest is final.
    pub(super) fn make_room(&self, st: &mut NotifierState, need: usize) -> bool {
        while st.queue.len() + need > QUEUE_CAP {
            let progress = st.queue.iter().position(|o| matches!(o, Outgoing::Tracker { job_id } if !st.trackers.get(job_id).is_some_and(|t| t.view.is_final())));
            let Some(pos) = progress else {
                return false;
            };
            if let Some(Outgoing::Tracker { job_id }) = st.queue.remove(pos)
                && let Some(t) = st.trackers.get_mut(&job_id)
            {
                t.queued = false;
            }
            self.core.metrics().notifications_dropped_total.inc();
        }
        true
    }

    /// Queues an item unless the queue is at its cap with nothing droppable. Items from outbox rows always
    /// find room (rows are read only when there is); what comes from memory alone (a callback answer, a
    /// reply while the store is read-only) is dropped then, logged and counted.
    pub(super) fn enqueue(&self, st: &mut NotifierState, out: Outgoing) -> bool {
        if !self.make_room(st, 1) {
            tracing::warn!(target: "televibe.notifier", queued = st.queue.len(), "notification queue full of results and notices: an item kept only in memory is dropped");
            self.core.metrics().notifications_dropped_total.inc();
            return false;
        }
        st.queue.push_back(out);
        self.gauge(st);
        true
    }

    /// `televibe_notification_queue_size` and its peak.
    pub(super) fn gauge(&self, st: &NotifierState) {
        let m = self.core.metrics();
        let n = st.queue.len() as i64;
        m.notification_queue_size.set(n);
        if n > m.notification_queue_peak.get() {
            m.notification_queue_peak.set(n);
        }
    }
}
