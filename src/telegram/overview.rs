//! The Telegram commands that show the daemon's state: `/status`, `/health` and `/usage`.

use crate::errors::CoreError;
use crate::telegram::front::Front;
use crate::telegram::render::{self, escape};

impl Front {
    pub(super) async fn status(&self, chat_id: i64) -> Result<(), CoreError> {
        let r = self.core.readiness().await;
        let active = self
            .active_session(chat_id)
            .await
            .unwrap_or_else(|| "none".into());
        let running = self
            .core
            .jobs()
            .list_jobs(None, Some("running"), Some(20))
            .await?;
        let queued = self
            .core
            .jobs()
            .list_jobs(None, Some("queued"), Some(100))
            .await?;
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
        // Sessions whose queue waits for a usage limit.
        for s in self.core.sessions().list_sessions(None, false).await? {
            if let Some(w) = &s.waiting {
                out.push_str(&format!("⏸ <b>{}</b> {}\n", escape(&s.id), escape(w)));
            }
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
        self.reply(chat_id, out).await;
        Ok(())
    }

    pub(super) async fn health(&self, chat_id: i64) -> Result<(), CoreError> {
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
        )
        .await;
        Ok(())
    }

    /// Each configured agent's known limit windows and resets.
    pub(super) async fn usage(&self, chat_id: i64) -> Result<(), CoreError> {
        let config = self.core.config();
        let usage = self.core.jobs().usage(&config.agent.names());
        self.reply(chat_id, render::usage(&usage)).await;
        Ok(())
    }
}
