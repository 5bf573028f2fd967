//! How a schedule and its times are shown: to the minute, in UTC, as cron is read.

use chrono::{DateTime, Utc};

use super::{code, cut, escape};
use crate::domain::ScheduledInstruction;

/// `2026-12-07 09:00 UTC`.
pub fn utc_minute(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// [`utc_minute`] of a time written as RFC 3339 (an event's payload); the text itself when it is not one.
pub fn utc_minute_of(text: &str) -> String {
    DateTime::parse_from_rfc3339(text)
        .map(|t| utc_minute(t.with_timezone(&Utc)))
        .unwrap_or_else(|_| text.to_string())
}

/// One schedule in a list: id, session, cron, next run, the instruction's start.
pub fn schedule_line(s: &ScheduledInstruction) -> String {
    let agent = s
        .agent
        .as_deref()
        .map(|a| format!(" · {}", escape(a)))
        .unwrap_or_default();
    format!(
        "🗓 <b>{}</b> {} · {} · next {}{agent}\n   {}",
        escape(&s.id),
        escape(&s.session_id),
        code(&s.cron),
        escape(&utc_minute(s.next_run_at)),
        escape(&cut(&s.instruction, 120))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_show_to_the_minute_in_utc() {
        assert_eq!(
            utc_minute_of("2026-12-07T09:05:00+00:00"),
            "2026-12-07 09:05 UTC"
        );
        assert_eq!(
            utc_minute_of("2026-12-07T10:05:00+01:00"),
            "2026-12-07 09:05 UTC"
        );
        assert_eq!(utc_minute_of("soon"), "soon");
    }
}
