//! The Telegram commands, one method each: what `/projects`, `/new`, `/run`, `/jobs`, `/diff`… do through the
//! core's API and answer in the chat. Parsing, access and buttons are in `front`.

use crate::errors::{CoreError, ErrorCode};
use crate::telegram::front::{Front, usage};
use crate::telegram::notifier::Outgoing;
use crate::telegram::render::{self, code, escape};
use crate::telegram::routes;

mod files;
mod pull;
mod push;
mod settings;

/// Commands as `setMyCommands` announces them.
pub const COMMANDS: &[(&str, &str)] = &[
    ("start", "Start and show help"),
    ("help", "Show the commands"),
    ("projects", "List projects"),
    (
        "register",
        "Register a repository: /register <path|url> [trusted]",
    ),
    ("scan", "Register every repository in repos/"),
    ("new", "Open a session: /new <project> [branch]"),
    ("sessions", "List open sessions"),
    ("use", "Make a session active: /use S3"),
    ("close", "Close a session: /close S3 [force]"),
    ("status", "Health, active session, running jobs"),
    ("run", "Run an instruction: /run [S3] <text>"),
    (
        "claude",
        "Run one instruction with Claude Code: /claude <text>",
    ),
    ("codex", "Run one instruction with Codex: /codex <text>"),
    ("agent", "The active session's agent: /agent <claude|codex>"),
    ("jobs", "Recent jobs"),
    ("job", "One job: /job <id>"),
    ("tail", "End of a job's log: /tail [job]"),
    ("cancel", "Cancel a job: /cancel [job]"),
    ("diff", "Changes of a session: /diff [S3]"),
    ("get", "Send a file of the worktree: /get [S3] <path>"),
    ("pr", "Open a pull request of the branch: /pr [S3] [title]"),
    (
        "push",
        "Push a session's branch to origin, after your approval: /push [S3]",
    ),
    (
        "every",
        "Schedule an instruction: /every <m h dom mon dow> <text> (UTC)",
    ),
    ("schedules", "List scheduled instructions"),
    ("unschedule", "Cancel a schedule: /unschedule SC3"),
    ("approvals", "Pending approval requests"),
    (
        "verbosity",
        "Progress in this chat: /verbosity full|compact|final",
    ),
    ("health", "Readiness checks"),
    ("usage", "Each agent's usage-limit windows and resets"),
];

impl Front {
    pub(super) async fn projects(&self, chat_id: i64) -> Result<(), CoreError> {
        let list = self.core.projects().list_projects().await?;
        let body = render::lines_or(
            &list,
            render::project_line,
            "No projects yet: /register &lt;path|url&gt; or /scan",
        );
        self.reply(chat_id, format!("<b>Projects</b>\n{body}"))
            .await;
        Ok(())
    }

    pub(super) async fn register(
        &self,
        chat_id: i64,
        actor: &str,
        path: &str,
    ) -> Result<(), CoreError> {
        // `/register <path|url> trusted` lets the agent load the repository's own settings.
        let (path, trusted) = match path.trim().rsplit_once(char::is_whitespace) {
            Some((p, "trusted")) => (p.trim(), true),
            _ => (path.trim(), false),
        };
        let projects = self.core.projects();
        let r = if crate::domain::looks_like_url(path) {
            self.reply(
                chat_id,
                format!(
                    "⏳ Cloning {}…",
                    code(&crate::domain::redact_credentials(path))
                ),
            )
            .await;
            projects
                .register_project_url(actor, path, None, trusted)
                .await?
        } else {
            projects
                .register_project(actor, path, None, trusted)
                .await?
        };
        let verb = if r.already_registered {
            "Already registered"
        } else {
            "Registered"
        };
        self.reply(
            chat_id,
            format!("✅ {verb}: {}", render::project_line(&r.project)),
        )
        .await;
        Ok(())
    }

    pub(super) async fn scan(&self, chat_id: i64, actor: &str) -> Result<(), CoreError> {
        let r = self.core.projects().scan_projects(actor).await?;
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
        self.reply(chat_id, render::cut_html(&out)).await;
        Ok(())
    }

    pub(super) async fn new_session(
        &self,
        chat_id: i64,
        actor: &str,
        args: &str,
    ) -> Result<(), CoreError> {
        let mut it = args.split_whitespace();
        let Some(project) = it.next() else {
            return Err(usage("/new <project> [branch]"));
        };
        let branch = it.next();
        let s = self
            .core
            .sessions()
            .create_session(actor, project, branch, None, None)
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
        )
        .await;
        Ok(())
    }

    pub(super) async fn sessions(&self, chat_id: i64) -> Result<(), CoreError> {
        let active = self.active_session(chat_id).await;
        let list = self.core.sessions().list_sessions(None, false).await?;
        let body = if list.is_empty() {
            "No open sessions: /new &lt;project&gt; [branch]".to_string()
        } else {
            list.iter()
                .map(|s| render::session_line(s, active.as_deref() == Some(&s.id)))
                .collect::<Vec<_>>()
                .join("\n")
        };
        self.reply(chat_id, format!("<b>Sessions</b>\n{body}"))
            .await;
        Ok(())
    }

    pub(super) async fn use_session(&self, chat_id: i64, arg: &str) -> Result<(), CoreError> {
        let s = self.core.sessions().get_session(arg).await?;
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
        )
        .await;
        Ok(())
    }

    pub(super) async fn close(
        &self,
        chat_id: i64,
        actor: &str,
        args: &str,
    ) -> Result<(), CoreError> {
        let mut it = args.split_whitespace();
        let id = match it.next() {
            Some(id) => id.to_string(),
            None => self
                .active_session(chat_id)
                .await
                .ok_or_else(|| usage("/close S3 [force]"))?,
        };
        let force = it.any(|w| w.eq_ignore_ascii_case("force"));
        let c = self
            .core
            .sessions()
            .close_session(actor, &id, force, false)
            .await?;
        self.reply(
            chat_id,
            format!(
                "🔒 Session <b>{}</b> closed; branch {} kept.",
                escape(&c.session.id),
                code(&c.session.branch)
            ),
        )
        .await;
        Ok(())
    }

    /// Pending approvals, each sent again with its buttons (a lost message can still be decided).
    pub(super) async fn approvals(&self, chat_id: i64) -> Result<(), CoreError> {
        let pending = self.core.approvals().list_pending_approvals().await?;
        if pending.is_empty() {
            self.reply(chat_id, "No pending approvals.".into()).await;
        }
        for a in pending {
            self.send(Outgoing::Approval {
                approval_id: a.id,
                chat_id,
                events: Vec::new(),
                again: true,
            })
            .await;
        }
        Ok(())
    }

    pub(super) async fn run(
        &self,
        chat_id: i64,
        session: Option<String>,
        text: &str,
        agent: Option<&str>,
    ) -> Result<(), CoreError> {
        let session = match session {
            Some(s) => s,
            None => self.require_active(chat_id).await?,
        };
        // The tracker message of the job goes to this chat.
        let s = self.core.sessions().get_session(&session).await?;
        routes::set_session_chat(&self.core, &s.id, chat_id).await;
        self.core
            .sessions()
            .run_instruction(&s.id, text, agent)
            .await?;
        Ok(())
    }

    pub(super) async fn require_active(&self, chat_id: i64) -> Result<String, CoreError> {
        self.active_session(chat_id).await.ok_or_else(|| {
            CoreError::new(
                ErrorCode::SessionNotFound,
                "no active session in this chat",
                "open one with /new <project>, or pick one with /use S3",
            )
        })
    }

    /// `/agent <name>`: the active session's agent from now on; `/agent` alone shows it and the others.
    pub(super) async fn agent(
        &self,
        chat_id: i64,
        actor: &str,
        args: &str,
    ) -> Result<(), CoreError> {
        let session = self.require_active(chat_id).await?;
        let configured = self.core.config().agent.names().join(", ");
        let name = args.trim();
        if name.is_empty() {
            let s = self.core.sessions().get_session(&session).await?;
            self.reply(
                chat_id,
                format!(
                    "🤖 Session <b>{}</b> runs {}. Agents: {}. Change it with /agent &lt;name&gt;.",
                    escape(&s.id),
                    code(&s.agent),
                    escape(&configured)
                ),
            )
            .await;
            return Ok(());
        }
        let s = self
            .core
            .sessions()
            .set_session_agent(actor, &session, name)
            .await?;
        self.reply(
            chat_id,
            format!(
                "🤖 Session <b>{}</b> now runs {}; /claude or /codex &lt;text&gt; runs one instruction with another.",
                escape(&s.id),
                code(&s.agent)
            ),
        )
        .await;
        Ok(())
    }

    pub(super) async fn jobs(&self, chat_id: i64) -> Result<(), CoreError> {
        let session = self.active_session(chat_id).await;
        let jobs = self
            .core
            .jobs()
            .list_jobs(session.as_deref(), None, Some(10))
            .await?;
        let body = render::lines_or(&jobs, render::job_line, "No jobs yet.");
        self.reply(
            chat_id,
            format!(
                "<b>Jobs</b>{}\n{body}",
                session
                    .map(|s| format!(" of {}", escape(&s)))
                    .unwrap_or_default()
            ),
        )
        .await;
        Ok(())
    }

    /// The job named, or the active session's latest.
    pub(super) async fn pick_job(
        &self,
        chat_id: i64,
        arg: &str,
    ) -> Result<crate::domain::Job, CoreError> {
        if !arg.is_empty() {
            return self.core.jobs().get_job(arg).await;
        }
        let session = self.active_session(chat_id).await;
        self.core
            .jobs()
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

    pub(super) async fn job(&self, chat_id: i64, arg: &str) -> Result<(), CoreError> {
        let j = self.pick_job(chat_id, arg).await?;
        let mut out = format!(
            "{}\nstatus: <b>{}</b>",
            render::job_line(&j),
            escape(j.status.as_str())
        );
        if let Some(e) = &j.error {
            out.push_str(&format!("\n⚠️ {}", escape(&render::cut(e, 500))));
        }
        match &j.result_text {
            Some(r) if render::result::is_long(r) => {
                out.push_str(&format!("\n\n{}", render::result::preview_html(r)));
                // The document goes first: the message says it is above.
                self.send(Outgoing::Document {
                    chat_id,
                    filename: render::result::file_name(&j.id),
                    bytes: r.as_bytes().to_vec(),
                    caption: format!(
                        "📄 Whole result of job {} ({})",
                        code(&j.id[..8.min(j.id.len())]),
                        escape(&render::result::size_of(r))
                    ),
                    events: Vec::new(),
                    silent: true,
                })
                .await;
            }
            Some(r) => out.push_str(&format!("\n\n{}", escape(r))),
            None => {}
        }
        self.reply(chat_id, out).await;
        Ok(())
    }

    pub(super) async fn tail(&self, chat_id: i64, arg: &str) -> Result<(), CoreError> {
        let j = self.pick_job(chat_id, arg).await?;
        let logs = self.core.jobs().job_logs(&j.id, Some(200)).await?;
        let text = logs.lines.join("\n");
        self.send_long(
            chat_id,
            &format!("{}.log", j.id),
            &text,
            &format!("Log of job {}", code(&j.id[..8.min(j.id.len())])),
        )
        .await;
        Ok(())
    }

    /// Short text inline (escaped in a <pre>); long text as a document whose caption shows its first
    /// lines and says that the whole is in the file (or, past what one upload carries, which part is).
    pub(super) async fn send_long(&self, chat_id: i64, filename: &str, text: &str, caption: &str) {
        if text.trim().is_empty() {
            self.reply(chat_id, format!("{caption}: empty")).await;
        } else if render::tg_len(text) <= 3500 {
            self.reply(chat_id, format!("{caption}\n<pre>{}</pre>", escape(text)))
                .await;
        } else {
            // Uploads stay small enough to go through; the end of a log or diff is what matters, and the
            // caption says when only the end is in the file.
            const MAX_DOCUMENT: usize = 5 * 1024 * 1024;
            let bytes = text.as_bytes();
            let from = bytes.len().saturating_sub(MAX_DOCUMENT);
            let note = (from > 0).then(|| {
                format!(
                    "The file holds the last {} of {}.",
                    crate::core::sessions::human_size(MAX_DOCUMENT as u64),
                    crate::core::sessions::human_size(bytes.len() as u64)
                )
            });
            self.send(Outgoing::Document {
                chat_id,
                filename: filename.to_string(),
                bytes: bytes[from..].to_vec(),
                caption: render::result::document_caption(caption, text, note.as_deref()),
                events: Vec::new(),
                silent: false,
            })
            .await;
        }
    }

    pub(super) async fn cancel(
        &self,
        chat_id: i64,
        actor: &str,
        arg: &str,
    ) -> Result<(), CoreError> {
        let j = self.pick_job(chat_id, arg).await?;
        let j = self.core.sessions().cancel_job(actor, &j.id).await?;
        self.reply(
            chat_id,
            format!("🚫 Cancel requested: {}", render::job_line(&j)),
        )
        .await;
        Ok(())
    }

    pub(super) async fn diff(&self, chat_id: i64, arg: &str) -> Result<(), CoreError> {
        let id = match arg.split_whitespace().next() {
            Some(s) => s.to_string(),
            None => self
                .active_session(chat_id)
                .await
                .ok_or_else(|| usage("/diff S3"))?,
        };
        let s = self.core.sessions().get_session(&id).await?;
        let diff = self.core.sessions().session_diff(&s).await?;
        self.send_long(
            chat_id,
            &format!("{}.diff", s.id),
            &diff,
            &format!(
                "Changes of {} against {}",
                escape(&s.id),
                code(&s.base_branch)
            ),
        )
        .await;
        Ok(())
    }
}
