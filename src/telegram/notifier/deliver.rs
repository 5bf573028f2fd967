//! One item out to Telegram: sends, edits (re-sending when the message is gone), documents, callback
//! answers, and approval messages rendered from the request's current state.

use super::*;
use crate::telegram::render::mention::session_html;

impl Notifier {
    pub(super) async fn deliver(
        &self,
        st: &mut NotifierState,
        item: &Outgoing,
    ) -> Result<(), TgError> {
        let c = &self.link.client;
        match item {
            Outgoing::Text {
                chat_id,
                html,
                buttons,
                silent,
                ..
            } => c
                .send_html(*chat_id, html, buttons, *silent, None)
                .await
                .map(|_| ())?,
            Outgoing::Document {
                chat_id,
                filename,
                bytes,
                caption,
                silent,
                ..
            } => {
                c.send_document(*chat_id, filename, bytes, caption, *silent)
                    .await?
            }
            Outgoing::WorktreeFile {
                chat_id,
                session_id,
                path,
                caption,
                ..
            } => {
                // Read now, under the same rules as when it was asked for: what the worktree holds now
                // is sent, or why it cannot be.
                match self
                    .core
                    .sessions()
                    .read_worktree_file(session_id, path)
                    .await
                {
                    Ok((name, bytes)) => {
                        c.send_document(*chat_id, &name, &bytes, caption, false)
                            .await?
                    }
                    Err(e) => c
                        .send_html(*chat_id, &render::error(&e), &[], false, None)
                        .await
                        .map(|_| ())?,
                }
            }
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
                again,
            } => {
                if let Some(a) = self.core.approval(approval_id).await {
                    let view = self.render_approval(&a).await;
                    // Sent before a restart that came before its outbox row was marked delivered: that message
                    // is brought up to date instead of a second one being sent (`/approvals`, with no outbox
                    // row, sends it again on purpose).
                    if !events.is_empty()
                        && !again
                        && let (Some(chat), Some(mid)) = (a.telegram_chat_id, a.telegram_message_id)
                    {
                        let buttons = if a.state == crate::domain::ApprovalState::Pending {
                            crate::telegram::buttons::approval_buttons(&a.id, &a.tool_name)
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
                    // The whole input goes first, so it is there before anyone can tap a button; silently,
                    // as the message with the buttons right after it notifies.
                    if let Some((filename, text)) = &view.attachment {
                        let caption = format!(
                            "Whole input of the approval request for {} in {}",
                            escape(&a.tool_name),
                            session_html(&a.session_id)
                        );
                        c.send_document(*chat_id, filename, text.as_bytes(), &caption, true)
                            .await?;
                    }
                    let html = view.html;
                    let buttons = if a.state == crate::domain::ApprovalState::Pending {
                        crate::telegram::buttons::approval_buttons(&a.id, &a.tool_name)
                    } else {
                        Vec::new()
                    };
                    let mid = c.send_html(*chat_id, &html, &buttons, false, None).await?;
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
            Outgoing::Reminder {
                approval_id,
                chat_id,
                ..
            } => self.remind(approval_id, *chat_id).await?,
            Outgoing::Tracker { job_id } => {
                if !self.show_tracker(st, job_id).await? {
                    return Ok(());
                }
            }
        }
        self.settle(st, item).await;
        Ok(())
    }

    /// An approval request for people: tool, session, project, branch, what the request does (danger labels,
    /// a command's parts, writes judged against the session's worktree) and the whole input (a file when it
    /// does not fit, see `render::approval_view`), and once decided, who decided and when.
    async fn render_approval(&self, a: &crate::domain::Approval) -> render::ApprovalView {
        let session = self.core.sessions().get_session(&a.session_id).await.ok();
        let (project, branch, worktree) = session
            .map(|s| {
                let worktree = std::path::PathBuf::from(s.worktree_path);
                (s.project_id, s.branch, Some(worktree))
            })
            .unwrap_or_default();
        let header = format!(
            "✋ <b>Approval needed</b> · {} · {} · {}\nTool: <b>{}</b> ({})",
            session_html(&a.session_id),
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
        render::approval_view(
            &header,
            &footer,
            &a.id,
            &a.tool_name,
            &a.tool_input,
            worktree.as_deref(),
        )
    }
}
