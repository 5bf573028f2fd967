//! The Telegram front: allowlist, commands and buttons, all through the core API; replies go out through
//! the notifier (the only sender).

use crate::audit::Audited;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::buttons::ButtonAction;
use super::client::Incoming;
use super::gate::{Access, Allowlist, Denials, Origin};
use super::notifier::Outgoing;
use super::render::mention::session_in_text;
use super::render::{self, code, escape};
use super::{Link, routes};
use crate::audit::AuditSubject;
use crate::core::Core;
use crate::core::approvals::Choice;
use crate::core::events::{Event, ReplyBody, Scope};
use crate::domain::SessionId;
use crate::errors::{CoreError, ErrorCode};

const HELP: &str = "<b>TeleVibeCode</b>\n\
/projects · /register &lt;path|url&gt; · /scan\n\
/new &lt;project&gt; [branch] · /sessions · /use S3 · /close S3 [force]\n\
/run [S3] &lt;text&gt; — or just write: plain text runs in the active session, a reply runs in that message's session\n\
/claude &lt;text&gt; · /codex &lt;text&gt; — one instruction with that agent · /agent &lt;name&gt; — the active session's agent\n\
/jobs · /job &lt;id&gt; · /tail [job] · /cancel [job] · /diff [S3]\n\
/get [S3] &lt;path&gt; — a file of the worktree as a document · /pr [S3] [title] — a pull request on GitHub\n\
/push [S3] — push the session's branch to origin once you approve\n\
/every &lt;m h dom mon dow&gt; &lt;text&gt; — run it in the active session on a UTC cron · /schedules · /unschedule SC3\n\
/approvals · /status · /health · /usage\n\
/verbosity full|compact|final — how much of a running job this chat sees (approvals and results always come)\n\
A voice note runs as the instruction it says (with [voice] set up); a photo or file is saved in the session's .televibe/inbox/ and its caption runs with it";

pub struct Front {
    pub(super) core: Arc<Core>,
    pub(super) link: Arc<Link>,
    denied: Mutex<Denials>,
    /// The transcription endpoint of voice notes (`None`: voice notes are off).
    pub(super) voice: Option<super::voice::Transcriber>,
}

impl Front {
    pub fn new(core: Arc<Core>, link: Arc<Link>) -> Front {
        let voice = super::voice::Transcriber::new(&core.config().voice, core.breakers().clone());
        Front {
            core,
            link,
            denied: Mutex::new(Denials::default()),
            voice,
        }
    }

    /// Hands a reply over for sending. Messages, documents and approvals shown again go into the outbox
    /// first, so a full queue or a restarted notifier loses none; a callback answer (worth nothing after
    /// Telegram's 15 s) and anything the store refuses (read-only mode) go to the notifier's memory queue.
    pub(super) async fn send(&self, out: Outgoing) {
        let body = match &out {
            Outgoing::Text { html, buttons, .. } => Some(ReplyBody::Text {
                html: html.clone(),
                buttons: buttons.clone(),
            }),
            Outgoing::Document {
                filename,
                bytes,
                caption,
                ..
            } => Some(ReplyBody::Document {
                filename: filename.clone(),
                text: String::from_utf8_lossy(bytes).into_owned(),
                caption: caption.clone(),
            }),
            Outgoing::Approval { approval_id, .. } => Some(ReplyBody::Approval {
                approval_id: approval_id.clone(),
            }),
            Outgoing::WorktreeFile {
                session_id,
                path,
                caption,
                ..
            } => Some(ReplyBody::WorktreeFile {
                session_id: session_id.clone(),
                path: path.clone(),
                caption: caption.clone(),
            }),
            _ => None,
        };
        let chat = match &out {
            Outgoing::Text { chat_id, .. }
            | Outgoing::Document { chat_id, .. }
            | Outgoing::WorktreeFile { chat_id, .. }
            | Outgoing::Approval { chat_id, .. } => *chat_id,
            _ => 0,
        };
        if let Some(body) = body
            && self
                .core
                .events()
                .try_emit(
                    Scope::daemon(),
                    Event::Reply {
                        chat_id: chat,
                        body,
                    },
                )
                .await
                .is_ok()
        {
            return;
        }
        self.link.send(out);
    }

    pub(super) async fn reply(&self, chat_id: i64, html: String) {
        self.send(Outgoing::text(chat_id, html, Vec::new())).await;
    }

    fn access(&self, chat_id: i64, user_id: i64, private: bool) -> Access {
        let t = &self.core.config().telegram;
        Allowlist {
            users: &t.allowed_users,
            chats: &t.allowed_chats,
            admin_chat: t.admin_chat_id,
        }
        .check(Origin {
            chat_id,
            user_id,
            private,
        })
    }

    /// A refused update: at most one answer and one audit row per user a minute (see `gate`), so a flood
    /// costs neither messages nor audit rows. A stranger is told "access denied"; an allowed user writing in
    /// a chat that is not served is told how to have it served.
    async fn deny(
        &self,
        access: Access,
        chat_id: i64,
        user_id: i64,
        callback: Option<&str>,
        what: &str,
    ) {
        let due = self
            .denied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .due(user_id, Instant::now());
        if !due {
            return;
        }
        let attempt = render::cut(what, 100);
        let (audited, short, long) = match access {
            Access::UnlistedChat => (
                Audited::TelegramChatRefused { chat_id, attempt },
                "this chat is not served".to_string(),
                format!(
                    "⛔ This chat is not served. Write to me in a private chat, or add {} to telegram.allowed_chats.",
                    code(&chat_id.to_string())
                ),
            ),
            _ => (
                Audited::TelegramAccessDenied { chat_id, attempt },
                "access denied".to_string(),
                "⛔ access denied".to_string(),
            ),
        };
        self.core
            .events()
            .audit(
                &format!("telegram:{user_id}"),
                AuditSubject::default(),
                audited,
            )
            .await;
        match callback {
            Some(id) => {
                self.send(Outgoing::Answer {
                    callback_id: id.to_string(),
                    text: short,
                })
                .await
            }
            None => self.reply(chat_id, long).await,
        }
    }

    pub async fn handle(&self, update: Incoming) {
        match update {
            Incoming::Text {
                chat_id,
                private,
                user_id,
                text,
                reply_to,
                ..
            } => match self.access(chat_id, user_id, private) {
                Access::Serve => self.on_text(chat_id, user_id, &text, reply_to).await,
                refused => self.deny(refused, chat_id, user_id, None, &text).await,
            },
            // A file is gated as text is: a refused one is never downloaded.
            Incoming::Media {
                chat_id,
                private,
                user_id,
                message_id,
                media,
                caption,
                reply_to,
            } => match self.access(chat_id, user_id, private) {
                Access::Serve => {
                    self.on_media(chat_id, message_id, media, caption, reply_to)
                        .await
                }
                refused => {
                    let what = media.label(caption.as_deref());
                    self.deny(refused, chat_id, user_id, None, &what).await
                }
            },
            Incoming::Callback {
                id,
                user_id,
                chat_id,
                private,
                data,
                ..
            } => match self.access(chat_id, user_id, private) {
                Access::Serve => self.on_button(&id, chat_id, user_id, &data).await,
                refused => self.deny(refused, chat_id, user_id, Some(&id), &data).await,
            },
            Incoming::Ignored => {}
        }
    }

    pub(super) async fn active_session(&self, chat_id: i64) -> Option<String> {
        routes::active_session(&self.core, chat_id).await
    }

    pub(super) async fn set_active(&self, chat_id: i64, session_id: &str) {
        routes::set_active_session(&self.core, chat_id, session_id).await;
    }

    async fn on_text(
        &self,
        chat_id: i64,
        user_id: i64,
        text: &str,
        reply_to: Option<(i64, String)>,
    ) {
        let actor = format!("telegram:{user_id}");
        let text = text.trim();
        let (cmd, rest) = if let Some(body) = text.strip_prefix('/') {
            let (c, r) = body.split_once(char::is_whitespace).unwrap_or((body, ""));
            // `/run@televibe_bot` in groups.
            (c.split('@').next().unwrap_or(c).to_lowercase(), r.trim())
        } else {
            (String::new(), text)
        };
        let result: Result<(), CoreError> = match cmd.as_str() {
            "" => {
                // A reply to a bot message about a session runs there; else the active session.
                let target = reply_to
                    .and_then(|(_, t)| session_in_text(&t))
                    .map(|s| s.to_string());
                self.run(chat_id, target, rest, None).await
            }
            "start" | "help" => {
                self.reply(chat_id, HELP.into()).await;
                Ok(())
            }
            "projects" => self.projects(chat_id).await,
            "register" => self.register(chat_id, &actor, rest).await,
            "scan" => self.scan(chat_id, &actor).await,
            "new" => self.new_session(chat_id, &actor, rest).await,
            "sessions" => self.sessions(chat_id).await,
            "use" => self.use_session(chat_id, rest).await,
            "close" => self.close(chat_id, &actor, rest).await,
            "status" => self.status(chat_id).await,
            "run" => {
                let (first, tail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                match SessionId::parse(first).filter(|_| first.to_uppercase().starts_with('S')) {
                    Some(s) => {
                        self.run(chat_id, Some(s.to_string()), tail.trim(), None)
                            .await
                    }
                    None => self.run(chat_id, None, rest, None).await,
                }
            }
            "agent" => self.agent(chat_id, &actor, rest).await,
            name if crate::agents::by_name(name).is_some() => {
                self.run(chat_id, None, rest, Some(name)).await
            }
            "jobs" => self.jobs(chat_id).await,
            "job" => self.job(chat_id, rest).await,
            "tail" => self.tail(chat_id, rest).await,
            "cancel" => self.cancel(chat_id, &actor, rest).await,
            "diff" => self.diff(chat_id, rest).await,
            "get" => self.get(chat_id, rest).await,
            "pr" => self.pull_request(chat_id, &actor, rest).await,
            "push" => self.push(chat_id, rest).await,
            "every" => self.every(chat_id, &actor, rest).await,
            "schedules" => self.schedules(chat_id).await,
            "unschedule" => self.unschedule(chat_id, &actor, rest).await,
            "health" => self.health(chat_id).await,
            "usage" => self.usage(chat_id).await,
            "approvals" => self.approvals(chat_id).await,
            "verbosity" => self.verbosity(chat_id, rest).await,
            other => {
                self.reply(
                    chat_id,
                    format!("Unknown command /{}. /help lists them.", escape(other)),
                )
                .await;
                Ok(())
            }
        };
        if let Err(e) = result {
            self.reply(chat_id, render::error(&e)).await;
        }
    }

    async fn on_button(&self, callback_id: &str, chat_id: i64, user_id: i64, data: &str) {
        let actor = format!("telegram:{user_id}");
        let answer = match ButtonAction::decode(data) {
            Some(ButtonAction::Cancel { job_id }) => {
                match self.core.jobs().get_job(&job_id).await {
                    Ok(j) if j.status.is_final() => format!("Job already {}", j.status.as_str()),
                    Ok(j) => match self.core.sessions().cancel_job(&actor, &j.id).await {
                        Ok(_) => "Canceling…".to_string(),
                        Err(e) => e.message,
                    },
                    Err(_) => UNKNOWN_BUTTON.to_string(),
                }
            }
            Some(ButtonAction::Decide {
                approval_id,
                choice,
            }) => self.decide(&approval_id, choice, &actor).await,
            Some(ButtonAction::Log { job_id }) => match self.core.jobs().get_job(&job_id).await {
                Ok(j) => {
                    let _ = self.tail(chat_id, &j.id).await;
                    "Log sent".to_string()
                }
                Err(_) => UNKNOWN_BUTTON.to_string(),
            },
            Some(ButtonAction::Diff { job_id }) => match self.core.jobs().get_job(&job_id).await {
                Ok(j) => {
                    if let Err(e) = self.diff(chat_id, &j.session_id).await {
                        self.reply(chat_id, render::error(&e)).await;
                    }
                    "Diff sent".to_string()
                }
                Err(_) => UNKNOWN_BUTTON.to_string(),
            },
            None => UNKNOWN_BUTTON.to_string(),
        };
        self.send(Outgoing::Answer {
            callback_id: callback_id.to_string(),
            text: answer,
        })
        .await;
    }

    /// An approval button: the decision is recorded, or the answer says why not.
    async fn decide(&self, approval_id: &str, choice: Choice, actor: &str) -> String {
        match self
            .core
            .approvals()
            .decide_approval(approval_id, choice, actor)
            .await
        {
            Ok(a) => format!("{} ✓", a.state.as_str()),
            Err(e) if e.code == ErrorCode::ApprovalAlreadyDecided => {
                format!("Already decided: {}", e.message)
            }
            // Not recorded, so not applied: the request is still open for a later tap.
            Err(e) if e.code == ErrorCode::ReadOnly => format!(
                "{}. Not recorded: tap again once writes work",
                crate::domain::READ_ONLY_MESSAGE.trim_end_matches('.')
            ),
            Err(_) => UNKNOWN_BUTTON.to_string(),
        }
    }
}

/// The answer to a button whose data we did not write or whose subject is gone.
const UNKNOWN_BUTTON: &str = "Unknown or expired button";

pub(super) fn usage(text: &str) -> CoreError {
    CoreError::new(
        ErrorCode::InternalError,
        format!("usage: {text}"),
        "see /help",
    )
}
