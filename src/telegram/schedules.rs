//! Scheduled instructions from the phone: `/every <m h dom mon dow> <text>` in the active session,
//! `/schedules` to list them, `/unschedule <id>` to cancel one; and how a schedule is shown.

use crate::errors::CoreError;
use crate::telegram::front::{Front, usage};
use crate::telegram::render::mention::session_html;
use crate::telegram::render::schedule::{schedule_line, utc_minute};
use crate::telegram::render::{self, code, escape};
use crate::telegram::routes;

const EVERY_USAGE: &str = "/every <minute> <hour> <day of month> <month> <day of week> <text> \
     (UTC), e.g. /every 0 9 * * 1-5 run the tests and fix what fails";

/// `/every` splits into the five cron fields and the text; `None` when fewer than six words were given.
fn split_every(args: &str) -> Option<(String, &str)> {
    let mut rest = args.trim_start();
    let mut fields = Vec::with_capacity(5);
    for _ in 0..5 {
        let end = rest.find(char::is_whitespace)?;
        fields.push(&rest[..end]);
        rest = rest[end..].trim_start();
    }
    let text = rest.trim();
    (!text.is_empty()).then(|| (fields.join(" "), text))
}

impl Front {
    /// `/every <cron> <text>`: schedules the text in the active session.
    pub(super) async fn every(
        &self,
        chat_id: i64,
        actor: &str,
        args: &str,
    ) -> Result<(), CoreError> {
        let Some((cron, text)) = split_every(args) else {
            return Err(usage(EVERY_USAGE));
        };
        let session = self.require_active(chat_id).await?;
        let s = self
            .core
            .schedules()
            .schedule_instruction(actor, &session, &cron, text, None)
            .await?;
        // The runs' trackers come to this chat.
        routes::set_session_chat(&self.core, &s.session_id, chat_id).await;
        self.reply(
            chat_id,
            format!(
                "🗓 Scheduled <b>{}</b> in {}: {} (UTC)\nNext run: {}\n{}\nCancel with /unschedule {}",
                escape(&s.id),
                session_html(&s.session_id),
                code(&s.cron),
                escape(&utc_minute(s.next_run_at)),
                escape(&render::cut(&s.instruction, 300)),
                escape(&s.id)
            ),
        )
        .await;
        Ok(())
    }

    /// `/schedules`: every schedule, oldest first.
    pub(super) async fn schedules(&self, chat_id: i64) -> Result<(), CoreError> {
        let list = self.core.schedules().list_schedules(None).await?;
        let body = render::lines_or(
            &list,
            schedule_line,
            "No schedules: /every &lt;m h dom mon dow&gt; &lt;text&gt; adds one to the active session",
        );
        self.reply(
            chat_id,
            render::cut_html(&format!("<b>Schedules</b> (UTC)\n{body}")),
        )
        .await;
        Ok(())
    }

    /// `/unschedule <id>`: cancels a schedule.
    pub(super) async fn unschedule(
        &self,
        chat_id: i64,
        actor: &str,
        args: &str,
    ) -> Result<(), CoreError> {
        let Some(id) = args.split_whitespace().next() else {
            return Err(usage("/unschedule SC3 (ids from /schedules)"));
        };
        let s = self.core.schedules().cancel_schedule(actor, id).await?;
        let how = match s.removed_reason.as_deref() {
            Some("canceled") | None => "canceled".to_string(),
            Some(other) => format!("already removed: {other}"),
        };
        self.reply(
            chat_id,
            format!(
                "🗑 Schedule <b>{}</b> {} ({} in {}); nothing more runs from it.",
                escape(&s.id),
                escape(&how),
                code(&s.cron),
                escape(&s.session_id)
            ),
        )
        .await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_takes_five_fields_then_the_text() {
        assert_eq!(
            split_every("*/5 9-17 * * 1-5 run the tests\nand fix"),
            Some(("*/5 9-17 * * 1-5".to_string(), "run the tests\nand fix"))
        );
        assert_eq!(
            split_every("  0   9 * *  *   hi "),
            Some(("0 9 * * *".to_string(), "hi"))
        );
        for short in ["", "* * * * *", "* * * * * ", "* * * *", "hello"] {
            assert_eq!(split_every(short), None, "{short:?}");
        }
    }
}
