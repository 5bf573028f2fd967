//! What needs the person rings their phone, progress does not. A job's tracker is sent and edited
//! silently while the job runs (as the chat's verbosity shows it); edits never notify, so its result goes
//! out as a new message that does, and the progress message is edited into a pointer to it: one message
//! per job shows its final state. A pending approval's reminder is a notifying reply to the request.

use super::*;
use crate::domain::{Approval, ApprovalState};
use crate::telegram::buttons::tracker_buttons;
use crate::telegram::render::mention::session_html;

impl Notifier {
    /// Shows a job's tracker; false when there was nothing to show (the tracker is gone, or the chat chose
    /// `final` after the item was queued: it waits for the job's end).
    pub(super) async fn show_tracker(
        &self,
        st: &mut NotifierState,
        job_id: &str,
    ) -> Result<bool, TgError> {
        let c = &self.link.client;
        let Some(t) = st.trackers.get(job_id) else {
            return Ok(false);
        };
        let mode = st.verbosity.get(&t.chat_id).copied().unwrap_or_default();
        if !modes::shown(mode, t) {
            if let Some(t) = st.trackers.get_mut(job_id) {
                t.queued = false;
            }
            return Ok(false);
        }
        let html = t.view.render_for(mode);
        let status = t.view.status.unwrap_or(JobStatus::Queued);
        let buttons = tracker_buttons(job_id, status);
        let chat = t.chat_id;
        if t.view.is_final() {
            if let Some(progress) = t.message_id {
                // Retired first: a crash after it leaves only the result to send.
                match c.edit_html(chat, progress, &t.view.pointer(), &[]).await {
                    // Gone (deleted by the user): nothing to retire.
                    Ok(()) | Err(TgError::Rejected { .. }) => {}
                    Err(e) => return Err(e),
                }
                if let Some(t) = st.trackers.get_mut(job_id) {
                    t.message_id = None;
                }
            }
            // A long result goes whole as a document first (silently: the message right after it
            // notifies), once, even when the message is sent again.
            self.send_result_file(st, job_id).await?;
            // The intent without an id: a restart before this send is answered sends the result again,
            // saying an earlier copy may exist. Its id is not kept: the result is never edited.
            routes::tracker_sending(&self.core, job_id, chat).await;
            if let Err(e) = c.send_html(chat, &html, &buttons, false, None).await {
                // Telegram may have applied it with its answer lost: the copy sent again says so.
                if let Some(t) = st.trackers.get_mut(job_id) {
                    t.view.resent = true;
                }
                return Err(e);
            }
            return Ok(true);
        }
        let edited = match t.message_id {
            Some(mid) => match c.edit_html(chat, mid, &html, &buttons).await {
                Ok(()) => true,
                // The message is gone (deleted by the user): the tracker starts a new one.
                Err(TgError::Rejected { .. }) => false,
                Err(e) => return Err(e),
            },
            None => false,
        };
        if !edited {
            // The intent goes first: a crash before the answer is recorded leaves it, and the next start
            // knows this message may exist (it cannot be edited without its id).
            routes::tracker_sending(&self.core, job_id, chat).await;
            let mid = c.send_html(chat, &html, &buttons, true, None).await?;
            if let Some(t) = st.trackers.get_mut(job_id) {
                t.message_id = Some(mid);
            }
            routes::remember_tracker(&self.core, job_id, chat, mid).await;
        }
        Ok(true)
    }

    /// Sends a finished job's long result whole as a document (`<job>-result.md`), unless it went out
    /// already: in this run (a retry of its message) or before a restart (a mark kept in the store once
    /// Telegram took it). The whole text comes from the job's row (the event carries a cut one).
    async fn send_result_file(&self, st: &mut NotifierState, job_id: &str) -> Result<(), TgError> {
        let Some(t) = st.trackers.get(job_id) else {
            return Ok(());
        };
        let Some(cut) = t
            .view
            .result
            .as_deref()
            .filter(|r| render::result::is_long(r))
        else {
            return Ok(());
        };
        if t.result_file_sent || routes::result_file_sent(&self.core, job_id).await {
            if let Some(t) = st.trackers.get_mut(job_id) {
                t.result_file_sent = true;
            }
            return Ok(());
        }
        let whole = self
            .core
            .job_by_id(job_id)
            .await
            .and_then(|j| j.result_text)
            .filter(|w| w.len() >= cut.len())
            .unwrap_or_else(|| cut.to_string());
        let caption = format!(
            "📄 Whole result of job {} · {} ({})",
            render::code(&t.view.job_id.chars().take(8).collect::<String>()),
            session_html(&t.view.session_id),
            escape(&render::result::size_of(&whole))
        );
        let chat = t.chat_id;
        self.link
            .client
            .send_document(
                chat,
                &render::result::file_name(job_id),
                whole.as_bytes(),
                &caption,
                true,
            )
            .await?;
        if let Some(t) = st.trackers.get_mut(job_id) {
            t.result_file_sent = true;
        }
        routes::remember_result_file(&self.core, job_id).await;
        Ok(())
    }

    /// The one reminder of a request that still waits: a notifying reply to the request's message (which
    /// carries the buttons and the whole input); nothing once the request was decided or expired.
    pub(super) async fn remind(&self, approval_id: &str, chat_id: i64) -> Result<(), TgError> {
        let Some(a) = self.core.approval(approval_id).await else {
            return Ok(());
        };
        if a.state != ApprovalState::Pending {
            return Ok(());
        }
        let original = a
            .telegram_message_id
            .filter(|_| a.telegram_chat_id == Some(chat_id));
        let html = reminder_html(&a, original.is_some(), chrono::Utc::now());
        self.link
            .client
            .send_html(chat_id, &html, &[], false, original)
            .await?;
        Ok(())
    }
}

/// "⏰ Still waiting for your decision": the tool and what it would run (a preview: the decision is
/// made on the request, which shows the whole input), how long ago it was asked and when it expires.
fn reminder_html(a: &Approval, replies: bool, now: chrono::DateTime<chrono::Utc>) -> String {
    let preview = crate::core::approvals::render_input(&a.tool_name, &a.tool_input);
    let asked = (now - a.requested_at).num_minutes().max(0);
    let left = (a.expires_at - now).num_minutes().max(0);
    let decide = if replies {
        "Decide on the request this message replies to."
    } else {
        "/approvals shows it again with its buttons."
    };
    format!(
        "⏰ <b>Still waiting for your decision</b> · {}\nTool: <b>{}</b> {}\nAsked {asked} min ago; \
         it expires at {} UTC (in {left} min), and then the job is canceled. {decide}",
        session_html(&a.session_id),
        escape(&render::visible(&a.tool_name)),
        render::code(&render::cut(&preview, 200)),
        a.expires_at.format("%H:%M"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reminder_names_the_request_and_its_expiry_and_escapes_what_it_shows() {
        let asked = chrono::Utc::now() - chrono::Duration::minutes(10);
        let a = Approval {
            id: "a".into(),
            job_id: "j".into(),
            session_id: "S4".into(),
            tool_name: "Bash".into(),
            tool_input: serde_json::json!({"command": "echo <x> && rm -r build\u{202e}"}),
            tool_use_id: None,
            scope: "shell".into(),
            state: ApprovalState::Pending,
            decision: None,
            decided_by: None,
            requested_at: asked,
            decided_at: None,
            expires_at: asked + chrono::Duration::minutes(60),
            telegram_chat_id: Some(1),
            telegram_message_id: Some(2),
        };
        let html = reminder_html(&a, true, asked + chrono::Duration::minutes(10));
        assert!(html.contains("Still waiting for your decision"), "{html}");
        assert!(html.contains("Session S4"), "{html}");
        assert!(
            html.contains("<code>echo &lt;x&gt; &amp;&amp; rm -r build⟨U+202E⟩</code>"),
            "{html}"
        );
        assert!(html.contains("Asked 10 min ago"), "{html}");
        assert!(html.contains("(in 50 min)"), "{html}");
        assert!(html.contains("replies to"), "{html}");
        let lost = reminder_html(&a, false, asked);
        assert!(lost.contains("/approvals"), "{lost}");
    }
}
