//! Outbox rows into things to send: each event is matched once, job events fold into their tracker
//! (a view of the job that one message shows and edits), the rest become notices or approval messages.

use super::*;
use crate::core::events::ReplyBody;
use crate::telegram::render::mention::session_html;

impl Notifier {
    pub(super) async fn on_event(&self, st: &mut NotifierState, row: OutboxEvent) {
        let core = &self.core;
        if row.event_type == "chat.reply"
            && let Some(Event::Reply { chat_id, body }) = Event::from_row(&row)
        {
            return self.on_reply(st, row, chat_id, body);
        }
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
            | Event::JobRequeued { .. }
            | Event::JobCompleted(_)
            | Event::JobFailed(_)
            | Event::JobCanceled(_) => return self.on_job_event(st, chat, row, &event).await,
            Event::ApprovalRequested { approval_id } => {
                let approval_id = approval_id.clone();
                return self.push(
                    st,
                    Outgoing::Approval {
                        approval_id,
                        chat_id: chat,
                        events: vec![row],
                        again: false,
                    },
                );
            }
            Event::ApprovalDecided { approval_id } | Event::ApprovalExpired { approval_id } => {
                if matches!(event, Event::ApprovalExpired { .. }) {
                    // Silent: the job's result (canceled) follows and notifies.
                    self.enqueue(
                        st,
                        Outgoing::Text {
                            chat_id: chat,
                            html: "⏰ An approval request expired: the job was canceled.".into(),
                            buttons: Vec::new(),
                            events: Vec::new(),
                            silent: true,
                        },
                    );
                }
                let approval_id = approval_id.clone();
                return self.push(
                    st,
                    Outgoing::ApprovalDecided {
                        approval_id,
                        chat_id: chat,
                        events: vec![row],
                    },
                );
            }
            Event::ApprovalReminded { approval_id } => {
                let approval_id = approval_id.clone();
                return self.push(
                    st,
                    Outgoing::Reminder {
                        approval_id,
                        chat_id: chat,
                        events: vec![row],
                    },
                );
            }
            // Handled above; a reply row that does not read as one is skipped there.
            Event::Reply { .. } => {
                let _ = core.mark_delivered(&[row.id]).await;
                return;
            }
            Event::SessionCreated { .. } | Event::SessionClosed { .. } => {
                // The person who created or closed it got the answer already.
                let _ = core.mark_delivered(&[row.id]).await;
                return;
            }
            Event::ClaudeUnavailable { message, .. } => {
                let message = message.clone();
                return self.on_claude_notice(st, chat, row, &message).await;
            }
            Event::UsageLimited {
                agent,
                until,
                message,
            } => {
                let (agent, until, message) = (agent.clone(), *until, message.clone());
                return self
                    .on_usage_notice(st, chat, row, &agent, until, &message)
                    .await;
            }
            // Every other event is a plain notice.
            other => notice_html(other, &row),
        };
        let target = if row.session_id.is_none() {
            routes::notice_chats(core)
                .into_iter()
                .next()
                .unwrap_or(chat)
        } else {
            chat
        };
        // Alerts for the operator (a breaker, a backup, the database, a worktree) notify.
        self.enqueue(
            st,
            Outgoing::Text {
                chat_id: target,
                html,
                buttons: Vec::new(),
                events: vec![row],
                silent: false,
            },
        );
    }

    fn push(&self, st: &mut NotifierState, out: Outgoing) {
        self.enqueue(st, out);
    }

    /// A front's reply, read back from the outbox: delivered (and its row marked) like a notice. It answers
    /// what the person just did, so it notifies as any message does.
    fn on_reply(&self, st: &mut NotifierState, row: OutboxEvent, chat_id: i64, body: ReplyBody) {
        let out = match body {
            ReplyBody::Text { html, buttons } => Outgoing::Text {
                chat_id,
                html,
                buttons,
                events: vec![row],
                silent: false,
            },
            ReplyBody::Document {
                filename,
                text,
                caption,
            } => Outgoing::Document {
                chat_id,
                filename,
                bytes: text.into_bytes(),
                caption,
                events: vec![row],
                silent: false,
            },
            ReplyBody::Approval { approval_id } => Outgoing::Approval {
                approval_id,
                chat_id,
                events: vec![row],
                again: true,
            },
            ReplyBody::WorktreeFile {
                session_id,
                path,
                caption,
            } => Outgoing::WorktreeFile {
                chat_id,
                session_id,
                path,
                caption,
                events: vec![row],
            },
        };
        self.enqueue(st, out);
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
                agent: job.as_ref().map(|j| j.agent.clone()).unwrap_or_default(),
                status: Some(JobStatus::Queued),
                // The daemon stopped during this tracker's first send: that message may exist, and
                // without its id it cannot be edited. The new one says so (see README, "Crash windows").
                resent: matches!(known, Some((_, None))),
                ..Default::default()
            };
            if view.resent {
                tracing::warn!(target: "televibe.notifier", job_id = %job_id, "a tracker send was cut short by a restart: it is sent again (an earlier copy may exist)");
            }
            st.trackers.insert(
                job_id.clone(),
                TrackerState {
                    chat_id: known.map(|k| k.0).unwrap_or(chat),
                    message_id: known.and_then(|k| k.1),
                    view,
                    unsent: Vec::new(),
                    progress_unsent: false,
                    last_edit: None,
                    queued: false,
                    result_file_sent: false,
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
        let tracker_chat = t.chat_id;
        let mode = self.verbosity_of(st, tracker_chat).await;
        let t = st.trackers.get_mut(&job_id).expect("inserted above");
        // A chat that chose `final` sees nothing of the job before its end (its rows wait in `unsent`).
        if !t.queued && modes::shown(mode, t) {
            t.queued = true;
            self.enqueue(st, Outgoing::Tracker { job_id });
        }
    }
}

/// The text of a plain notice (an alert or a session's news), delivered as one message.
fn notice_html(event: &Event, row: &OutboxEvent) -> String {
    match event {
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
        Event::ScheduleRemoved {
            schedule_id,
            cron,
            instruction_preview,
            reason,
        } => format!(
            "🗓 Schedule <b>{}</b> ({} UTC: {}) was removed: {}.",
            escape(schedule_id),
            render::code(cron),
            escape(instruction_preview),
            escape(reason)
        ),
        Event::ScheduleSkipped {
            schedule_id,
            occurrence,
            reason,
        } => format!(
            "⚠️ Schedule <b>{}</b> queued nothing for {}: {}",
            escape(schedule_id),
            escape(&crate::telegram::render::schedule::utc_minute_of(
                occurrence
            )),
            escape(reason)
        ),
        Event::WorktreeMissing { path } => format!(
            "⚠️ {} lost its worktree {}",
            session_html(row.session_id.as_deref().unwrap_or("?")),
            render::code(path)
        ),
        // The rest are handled by `on_event` before it asks for a notice's text.
        _ => escape(event.kind()),
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
            view.waiting_until = None;
            view.api_retry = None;
        }
        Event::JobRequeued { reason, not_before } => {
            view.status = Some(JobStatus::Queued);
            view.api_retry = None;
            if reason == crate::core::events::REQUEUED_RESTART {
                view.rerun_after_restart = true;
            } else {
                view.waiting_until = *not_before;
            }
        }
        // A usage limit the agent waits out itself.
        Event::ApiRetry {
            error_status: Some(429),
            retry_delay_ms: Some(delay),
            ..
        } if *delay >= crate::core::jobs::usage::SELF_WAIT_NOTICE_MS => {
            let delay = (*delay).min(crate::core::jobs::usage::MAX_SELF_WAIT_MS);
            view.waiting_until = Some((at.timestamp_millis() + delay + 999) / 1000);
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
            view.waiting_until = None;
            view.steps += 1;
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
            if *is_error {
                view.steps_failed += 1;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::events::JobEnd;

    #[test]
    fn a_model_api_retry_shows_on_the_tracker_until_the_agent_moves_on() {
        let mut view = Tracker {
            job_id: "0123456789abcdef".into(),
            status: Some(JobStatus::Running),
            ..Default::default()
        };
        let now = chrono::Utc::now();
        let retry = |attempt, error_status| Event::ApiRetry {
            retry_delay_ms: None,
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
