//! `/verbosity`: how much of a running job the chat sees (see `telegram::verbosity`).

use crate::errors::CoreError;
use crate::telegram::front::Front;
use crate::telegram::render::{code, cut, escape};
use crate::telegram::verbosity::{Verbosity, chat_verbosity, set_chat_verbosity};

/// The choices, one line each.
fn choices() -> String {
    Verbosity::ALL
        .iter()
        .map(|v| format!("• {} — {}", code(v.as_str()), escape(v.describe())))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Front {
    /// `/verbosity [full|compact|final]`: shows the chat's mode and the choices, or sets it. A value that
    /// is not one of the three changes nothing and says so.
    pub(in crate::telegram) async fn verbosity(
        &self,
        chat_id: i64,
        args: &str,
    ) -> Result<(), CoreError> {
        let current = chat_verbosity(&self.core, chat_id).await;
        let arg = args.trim();
        if arg.is_empty() {
            self.reply(
                chat_id,
                format!(
                    "🔈 Progress in this chat: <b>{}</b> ({}). Approval requests and results always come.\n{}\n\
                     Change it with /verbosity full|compact|final.",
                    current.as_str(),
                    escape(current.describe()),
                    choices()
                ),
            )
            .await;
            return Ok(());
        }
        let Some(v) = Verbosity::parse(arg) else {
            self.reply(
                chat_id,
                format!(
                    "❌ Unknown verbosity {}: choose full, compact or final. This chat stays <b>{}</b>.\n{}",
                    code(&cut(arg, 40)),
                    current.as_str(),
                    choices()
                ),
            )
            .await;
            return Ok(());
        };
        set_chat_verbosity(&self.core, chat_id, v).await?;
        self.link.verbosity_changed(chat_id, v);
        self.reply(
            chat_id,
            format!(
                "🔈 Progress in this chat is now <b>{}</b>: {}. Approval requests and results always come.",
                v.as_str(),
                escape(v.describe())
            ),
        )
        .await;
        Ok(())
    }
}
