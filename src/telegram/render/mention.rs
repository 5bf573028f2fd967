//! The session a bot message is about, named in its text as `Session S12`: every message about a session
//! carries the mention ([`session_html`]), and a person's reply to such a message runs in the session it
//! names ([`session_in_text`]).

use super::escape;
use crate::domain::SessionId;

/// What precedes the session id in a message.
const MARK: &str = "Session ";

/// `Session S12`, for a message's HTML (the id escaped).
pub fn session_html(session_id: &str) -> String {
    format!("{MARK}{}", escape(session_id))
}

/// The session a bot message names, read from its text as Telegram hands it back (plain, without the
/// HTML): the first `Session S<n>`, also when the id was bold (`Session <b>S3</b>` reads `Session S3`).
/// `None` when the first mention names no session, or there is none.
pub fn session_in_text(text: &str) -> Option<SessionId> {
    let marked = format!("{MARK}S");
    let i = text.find(&marked)?;
    let rest = &text[i + marked.len()..];
    let digits = &rest[..rest.bytes().take_while(u8::is_ascii_digit).count()];
    SessionId::parse(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_from_reply_text() {
        assert_eq!(
            session_in_text("⚙️ Job 1234 · Session S12 · app"),
            Some(SessionId(12))
        );
        assert_eq!(session_in_text("nothing"), None);
    }

    /// What our messages carry today, as their plain text, names their session.
    #[test]
    fn every_message_about_a_session_round_trips() {
        for (text, want) in [
            (
                format!("✅ Job 01234567 · {} · app\nfix it", session_html("S1")),
                1,
            ),
            (
                format!(
                    "✋ Approval needed · {} · app · televibe/S7\nTool: Bash (network)",
                    session_html("S7")
                ),
                7,
            ),
            (
                format!(
                    "Whole input of the approval request for Bash in {}",
                    session_html("S3")
                ),
                3,
            ),
            (
                format!("⚠️ {} lost its worktree /w/x", session_html("S42")),
                42,
            ),
            // `/new`'s answer has the id in bold; Telegram's plain text drops the tag.
            ("🆕 Session S5 on main of app (now active)".to_string(), 5),
        ] {
            assert_eq!(session_in_text(&text), Some(SessionId(want)), "{text}");
            assert_eq!(
                session_in_text(&text).map(|s| s.to_string()),
                Some(format!("S{want}"))
            );
        }
    }

    #[test]
    fn text_naming_no_session_is_refused() {
        for text in [
            "",
            "Session",
            "Session S",
            "Session Sx12",
            "Session ?",
            "session S12",
            "Session S0",
            "Session S99999999999999999999",
            "S12",
            // Only the first mention counts.
            "Session Summary · Session S3",
        ] {
            assert_eq!(session_in_text(text), None, "{text:?}");
        }
    }
}
