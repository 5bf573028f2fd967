//! The Telegram front: allowlist, commands and buttons, all through the core API; replies go out through
//! the notifier (the only sender).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::json;

use super::client::Incoming;
use super::gate::{Access, Allowlist, Denials, Origin};
use super::notifier::Outgoing;
use super::render::{self, code, escape};
use super::{Link, routes};
use crate::audit::AuditSubject;
use crate::core::Core;
use crate::domain::SessionId;
use crate::errors::{CoreError, ErrorCode};

/// Commands as `setMyCommands` announces them.
pub const COMMANDS: &[(&str, &str)] = &[
    ("start", "Start and show help"),
    ("help", "Show the commands"),
    ("projects", "List projects"),
    (
        "register",
        "Register a repository: /register <path> [trusted]",
    ),
    ("scan", "Register every repository in repos/"),
    ("new", "Open a session: /new <project> [branch]"),
    ("sessions", "List open sessions"),
    ("use", "Make a session active: /use S3"),
    ("close", "Close a session: /close S3 [force]"),
    ("status", "Health, active session, running jobs"),
    ("run", "Run an instruction: /run [S3] <text>"),
    ("jobs", "Recent jobs"),
    ("job", "One job: /job <id>"),
    ("tail", "End of a job's log: /tail [job]"),
    ("cancel", "Cancel a job: /cancel [job]"),
    ("diff", "Changes of a session: /diff [S3]"),
    ("approvals", "Pending approval requests"),
    ("health", "Readiness checks"),
];

const HELP: &str = "<b>TeleVibeCode</b>\n\
/projects · /register &lt;path&gt; · /scan\n\
/new &lt;project&gt; [branch] · /sessions · /use S3 · /close S3 [force]\n\
/run [S3] &lt;text&gt; — or just write: plain text runs in the active session, a reply runs in that message's session\n\
/jobs · /job &lt;id&gt; · /tail [job] · /cancel [job] · /diff [S3]\n\
/approvals · /status · /health";

pub struct Front {
    core: Arc<Core>,
    link: Arc<Link>,
    denied: Mutex<Denials>,
}

impl Front {
    pub fn new(core: Arc<Core>, link: Arc<Link>) -> Front {
        Front {
            core,
            link,
            denied: Mutex::new(Denials::default()),
        }
    }

    fn send(&self, out: Outgoing) {
        self.link.send(out);
    }

    fn reply(&self, chat_id: i64, html: String) {
        self.send(Outgoing::text(chat_id, html, Vec::new()));
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
        let (event, short, long) = match access {
            Access::UnlistedChat => (
                "telegram.chat_refused",
                "this chat is not served".to_string(),
                format!(
                    "⛔ This chat is not served. Write to me in a private chat, or add {} to telegram.allowed_chats.",
                    code(&chat_id.to_string())
                ),
            ),
            _ => (
                "telegram.access_denied",
                "access denied".to_string(),
                "⛔ access denied".to_string(),
            ),
        };
        self.core
            .record_audit(
                event,
                &format!("telegram:{user_id}"),
                AuditSubject::default(),
                json!({"chat_id": chat_id, "attempt": render::cut(what, 100)}),
            )
            .await;
        match callback {
            Some(id) => self.send(Outgoing::Answer {
                callback_id: id.to_string(),
                text: short,
            }),
            None => self.reply(chat_id, long),
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

    async fn active_session(&self, chat_id: i64) -> Option<String> {
        routes::active_session(&self.core, chat_id).await
    }

    async fn set_active(&self, chat_id: i64, session_id: &str) {
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
                let target = reply_to.and_then(|(_, t)| session_in_text(&t));
                self.run(chat_id, target, rest).await
            }
            "start" | "help" => {
                self.reply(chat_id, HELP.into());
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
                    Some(s) => self.run(chat_id, Some(s.to_string()), tail.trim()).await,
                    None => self.run(chat_id, None, rest).await,
                }
            }
            "jobs" => self.jobs(chat_id).await,
            "job" => self.job(chat_id, rest).await,
            "tail" => self.tail(chat_id, rest).await,
            "cancel" => self.cancel(chat_id, &actor, rest).await,
            "diff" => self.diff(chat_id, rest).await,
            "health" => self.health(chat_id).await,
            "approvals" => self.approvals(chat_id).await,
            other => {
                self.reply(
                    chat_id,
                    format!("Unknown command /{}. /help lists them.", escape(other)),
                );
                Ok(())
            }
        };
        if let Err(e) = result {
            self.reply(chat_id, render::error(&e));
        }
    }

    async fn projects(&self, chat_id: i64) -> Result<(), CoreError> {
        let list = self.core.list_projects().await?;
        let body = if list.is_empty() {
            "No projects yet: /register &lt;path&gt; or /scan".to_string()
        } else {
            list.iter()
                .map(render::project_line)
                .collect::<Vec<_>>()
                .join("\n")
        };
        self.reply(chat_id, format!("<b>Projects</b>\n{body}"));
        Ok(())
    }

    async fn register(&self, chat_id: i64, actor: &str, path: &str) -> Result<(), CoreError> {
        // `/register <path> trusted` lets the agent load the repository's own settings.
        let (path, trusted) = match path.trim().rsplit_once(char::is_whitespace) {
            Some((p, "trusted")) => (p.trim(), true),
            _ => (path.trim(), false),
        };
        let r = self
            .core
            .register_project(actor, path, None, trusted)
            .await?;
        let verb = if r.already_registered {
            "Already registered"
        } else {
            "Registered"
        };
        self.reply(
            chat_id,
            format!("✅ {verb}: {}", render::project_line(&r.project)),
        );
        Ok(())
    }

    async fn scan(&self, chat_id: i64, actor: &str) -> Result<(), CoreError> {
        let r = self.core.scan_projects(actor).await?;
        let mut out = format!(
            "<b>Scan</b>: {} registered, {} known, {} skipped\n",
            r.registered.len(),
            r.already_registered.len(),
            r.skipped.len()
        );
        for p in &r.registered {
            out.push_str(&render::project_line(p));
            out.push('\n');
        }
        for s in &r.skipped {
            out.push_str(&format!(
                "• skipped {}: {}\n",
                code(&s.path),
                escape(&s.reason)
            ));
        }
        self.reply(chat_id, render::cut_html(&out));
        Ok(())
    }

    async fn new_session(&self, chat_id: i64, actor: &str, args: &str) -> Result<(), CoreError> {
        let mut it = args.split_whitespace();
        let Some(project) = it.next() else {
            return Err(usage("/new <project> [branch]"));
        };
        let branch = it.next();
        let s = self
            .core
            .create_session(actor, project, branch, None)
            .await?;
        self.set_active(chat_id, &s.id).await;
        self.reply(
            chat_id,
            format!(
                "🆕 Session <b>{}</b> on {} of {} (now active)\n{}",
                escape(&s.id),
                code(&s.branch),
                escape(&s.project_id),
                code(&s.worktree_path)
            ),
        );
        Ok(())
    }

    async fn sessions(&self, chat_id: i64) -> Result<(), CoreError> {
        let active = self.active_session(chat_id).await;
        let list = self.core.list_sessions(None, false).await?;
        let body = if list.is_empty() {
            "No open sessions: /new &lt;project&gt; [branch]".to_string()
        } else {
            list.iter()
                .map(|s| render::session_line(s, active.as_deref() == Some(&s.id)))
                .collect::<Vec<_>>()
                .join("\n")
        };
        self.reply(chat_id, format!("<b>Sessions</b>\n{body}"));
        Ok(())
    }

    async fn use_session(&self, chat_id: i64, arg: &str) -> Result<(), CoreError> {
        let s = self.core.get_session(arg).await?;
        if !s.state.is_open() {
            return Err(CoreError::new(
                ErrorCode::SessionClosing,
                format!("session {} is closed", s.id),
                "open a new one with /new",
            ));
        }
        self.set_active(chat_id, &s.id).await;
        self.reply(
            chat_id,
            format!(
                "▶️ Active session: <b>{}</b> ({} on {})",
                escape(&s.id),
                escape(&s.project_id),
                code(&s.branch)
            ),
        );
        Ok(())
    }

    async fn close(&self, chat_id: i64, actor: &str, args: &str) -> Result<(), CoreError> {
        let mut it = args.split_whitespace();
        let id = match it.next() {
            Some(id) => id.to_string(),
            None => self
                .active_session(chat_id)
                .await
                .ok_or_else(|| usage("/close S3 [force]"))?,
        };
        let force = it.any(|w| w.eq_ignore_ascii_case("force"));
        let c = self.core.close_session(actor, &id, force, false).await?;
        self.reply(
            chat_id,
            format!(
                "🔒 Session <b>{}</b> closed; branch {} kept.",
                escape(&c.session.id),
                code(&c.session.branch)
            ),
        );
        Ok(())
    }

    async fn status(&self, chat_id: i64) -> Result<(), CoreError> {
        let r = self.core.readiness().await;
        let active = self
            .active_session(chat_id)
            .await
            .unwrap_or_else(|| "none".into());
        let running = self.core.list_jobs(None, Some("running"), Some(20)).await?;
        let queued = self.core.list_jobs(None, Some("queued"), Some(100)).await?;
        let mut out = format!(
            "<b>Status</b>: {}\nActive session: <b>{}</b>\nRunning: {} · queued: {}\n",
            escape(r.status),
            escape(&active),
            running.len(),
            queued.len()
        );
        for j in &running {
            out.push_str(&render::job_line(j));
            out.push('\n');
        }
        for b in self.core.breakers().statuses() {
            if b.state != crate::breaker::BreakerState::Closed {
                out.push_str(&format!(
                    "⚠️ breaker {} is {:?}\n",
                    escape(b.name.as_str()),
                    b.state
                ));
            }
        }
        self.reply(chat_id, out);
        Ok(())
    }

    /// Pending approvals, each sent again with its buttons (a lost message can still be decided).
    async fn approvals(&self, chat_id: i64) -> Result<(), CoreError> {
        let pending = self.core.list_pending_approvals().await?;
        if pending.is_empty() {
            self.reply(chat_id, "No pending approvals.".into());
        }
        for a in pending {
            self.send(Outgoing::Approval {
                approval_id: a.id,
                chat_id,
                events: Vec::new(),
            });
        }
        Ok(())
    }

    async fn health(&self, chat_id: i64) -> Result<(), CoreError> {
        let r = self.core.readiness().await;
        self.reply(
            chat_id,
            format!(
                "<b>Health</b>: {}\ndatabase: {}\ntelegram: {}\nrepos: {}",
                escape(r.status),
                escape(&r.checks.database),
                escape(&r.checks.telegram),
                escape(&r.checks.repos)
            ),
        );
        Ok(())
    }

    async fn run(
        &self,
        chat_id: i64,
        session: Option<String>,
        text: &str,
    ) -> Result<(), CoreError> {
        let session = match session {
            Some(s) => s,
            None => self.active_session(chat_id).await.ok_or_else(|| {
                CoreError::new(
                    ErrorCode::SessionNotFound,
                    "no active session in this chat",
                    "open one with /new <project>, or pick one with /use S3",
                )
            })?,
        };
        // The tracker message of the job goes to this chat.
        let s = self.core.get_session(&session).await?;
        routes::set_session_chat(&self.core, &s.id, chat_id).await;
        self.core.run_instruction(&s.id, text).await?;
        Ok(())
    }

    async fn jobs(&self, chat_id: i64) -> Result<(), CoreError> {
        let session = self.active_session(chat_id).await;
        let jobs = self
            .core
            .list_jobs(session.as_deref(), None, Some(10))
            .await?;
        let body = if jobs.is_empty() {
            "No jobs yet.".to_string()
        } else {
            jobs.iter()
                .map(render::job_line)
                .collect::<Vec<_>>()
                .join("\n")
        };
        self.reply(
            chat_id,
            format!(
                "<b>Jobs</b>{}\n{body}",
                session
                    .map(|s| format!(" of {}", escape(&s)))
                    .unwrap_or_default()
            ),
        );
        Ok(())
    }

    /// The job named, or the active session's latest.
    async fn pick_job(&self, chat_id: i64, arg: &str) -> Result<crate::domain::Job, CoreError> {
        if !arg.is_empty() {
            return self.core.get_job(arg).await;
        }
        let session = self.active_session(chat_id).await;
        self.core
            .list_jobs(session.as_deref(), None, Some(1))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| {
                CoreError::new(
                    ErrorCode::JobNotFound,
                    "no job yet",
                    "run one with /run <text>",
                )
            })
    }

    async fn job(&self, chat_id: i64, arg: &str) -> Result<(), CoreError> {
        let j = self.pick_job(chat_id, arg).await?;
        let mut out = format!(
            "{}\nstatus: <b>{}</b>",
            render::job_line(&j),
            escape(j.status.as_str())
        );
        if let Some(e) = &j.error {
            out.push_str(&format!("\n⚠️ {}", escape(&render::cut(e, 500))));
        }
        if let Some(r) = &j.result_text {
            out.push_str(&format!("\n\n{}", escape(&render::cut(r, 2500))));
        }
        self.reply(chat_id, out);
        Ok(())
    }

    async fn tail(&self, chat_id: i64, arg: &str) -> Result<(), CoreError> {
        let j = self.pick_job(chat_id, arg).await?;
        let logs = self.core.job_logs(&j.id, Some(200)).await?;
        let text = logs.lines.join("\n");
        self.send_long(
            chat_id,
            &format!("{}.log", j.id),
            &text,
            &format!("Log of job {}", code(&j.id[..8.min(j.id.len())])),
        );
        Ok(())
    }

    /// Short text inline (escaped in a <pre>), long text as a document.
    fn send_long(&self, chat_id: i64, filename: &str, text: &str, caption: &str) {
        if text.trim().is_empty() {
            self.reply(chat_id, format!("{caption}: empty"));
        } else if render::tg_len(text) <= 3500 {
            self.reply(chat_id, format!("{caption}\n<pre>{}</pre>", escape(text)));
        } else {
            // Uploads stay small enough to go through; the end of a log or diff is what matters.
            const MAX_DOCUMENT: usize = 5 * 1024 * 1024;
            let bytes = text.as_bytes();
            let bytes = &bytes[bytes.len().saturating_sub(MAX_DOCUMENT)..];
            self.send(Outgoing::Document {
                chat_id,
                filename: filename.to_string(),
                bytes: bytes.to_vec(),
                caption: caption.to_string(),
            });
        }
    }

    async fn cancel(&self, chat_id: i64, actor: &str, arg: &str) -> Result<(), CoreError> {
        let j = self.pick_job(chat_id, arg).await?;
        let j = self.core.cancel_job(actor, &j.id).await?;
        self.reply(
            chat_id,
            format!("🚫 Cancel requested: {}", render::job_line(&j)),
        );
        Ok(())
    }

    async fn diff(&self, chat_id: i64, arg: &str) -> Result<(), CoreError> {
        let id = match arg.split_whitespace().next() {
            Some(s) => s.to_string(),
            None => self
                .active_session(chat_id)
                .await
                .ok_or_else(|| usage("/diff S3"))?,
        };
        let s = self.core.get_session(&id).await?;
        let diff = self.core.session_diff(&s).await?;
        self.send_long(
            chat_id,
            &format!("{}.diff", s.id),
            &diff,
            &format!(
                "Changes of {} against {}",
                escape(&s.id),
                code(&s.base_branch)
            ),
        );
        Ok(())
    }

    async fn on_button(&self, callback_id: &str, chat_id: i64, user_id: i64, data: &str) {
        let actor = format!("telegram:{user_id}");
        let (action, arg) = data.split_once(':').unwrap_or((data, ""));
        let answer = match action {
            "cancel" => match self.core.get_job(arg).await {
                Ok(j) if j.status.is_final() => format!("Job already {}", j.status.as_str()),
                Ok(j) => match self.core.cancel_job(&actor, &j.id).await {
                    Ok(_) => "Canceling…".to_string(),
                    Err(e) => e.message,
                },
                Err(_) => "Unknown or expired button".to_string(),
            },
            "ap" => {
                let (id, code) = arg.split_once(':').unwrap_or((arg, ""));
                match super::buttons::choice(code) {
                    Some(choice) => match self.core.decide_approval(id, choice, &actor).await {
                        Ok(a) => format!("{} ✓", a.state.as_str()),
                        Err(e) if e.code == ErrorCode::ApprovalAlreadyDecided => {
                            format!("Already decided: {}", e.message)
                        }
                        Err(_) => "Unknown or expired button".to_string(),
                    },
                    None => "Unknown or expired button".to_string(),
                }
            }
            "log" => match self.core.get_job(arg).await {
                Ok(j) => {
                    let _ = self.tail(chat_id, &j.id).await;
                    "Log sent".to_string()
                }
                Err(_) => "Unknown or expired button".to_string(),
            },
            "diff" => match self.core.get_job(arg).await {
                Ok(j) => {
                    if let Err(e) = self.diff(chat_id, &j.session_id).await {
                        self.reply(chat_id, render::error(&e));
                    }
                    "Diff sent".to_string()
                }
                Err(_) => "Unknown or expired button".to_string(),
            },
            _ => "Unknown or expired button".to_string(),
        };
        self.send(Outgoing::Answer {
            callback_id: callback_id.to_string(),
            text: answer,
        });
    }
}

fn usage(text: &str) -> CoreError {
    CoreError::new(
        ErrorCode::InternalError,
        format!("usage: {text}"),
        "see /help",
    )
}

/// `Session S12` in a bot message's text names the session a reply is about.
pub fn session_in_text(text: &str) -> Option<String> {
    let i = text.find("Session S")?;
    let digits: String = text[i + "Session S".len()..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    (!digits.is_empty()).then(|| format!("S{digits}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_from_reply_text() {
        assert_eq!(
            session_in_text("⚙️ Job 1234 · Session S12 · app").as_deref(),
            Some("S12")
        );
        assert_eq!(session_in_text("nothing"), None);
    }
}
