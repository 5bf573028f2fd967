//! `/pr [S3] [title]`: a pull request of a session's branch into its base branch, opened by the core on
//! the forge the project's origin names; its address, or the forge's refusal in its own words.

use crate::domain::SessionId;
use crate::errors::CoreError;
use crate::telegram::front::Front;
use crate::telegram::render::{code, escape};

/// A leading `S3` names the session (alone or before a title); the rest is the title.
fn session_and_title(args: &str) -> (Option<String>, &str) {
    let args = args.trim();
    let (first, rest) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
    match SessionId::parse(first).filter(|_| first.to_uppercase().starts_with('S')) {
        Some(s) => (Some(s.to_string()), rest.trim()),
        None => (None, args),
    }
}

impl Front {
    pub(in crate::telegram) async fn pull_request(
        &self,
        chat_id: i64,
        actor: &str,
        args: &str,
    ) -> Result<(), CoreError> {
        let (session, title) = session_and_title(args);
        let session = match session {
            Some(s) => s,
            None => self.require_active(chat_id).await?,
        };
        let title = (!title.is_empty()).then_some(title);
        let pr = self
            .core
            .sessions()
            .open_pull_request(actor, &session, title)
            .await?;
        self.reply(
            chat_id,
            format!(
                "🔀 Pull request <b>#{}</b> opened on {}: {} → {}\n<i>{}</i>\n{}",
                pr.number,
                escape(&pr.repository),
                code(&pr.head),
                code(&pr.base),
                escape(&pr.title),
                escape(&pr.url)
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
    fn a_leading_session_id_names_the_session_and_the_rest_is_the_title() {
        assert_eq!(session_and_title("S3"), (Some("S3".into()), ""));
        assert_eq!(
            session_and_title("s3 Fix the login"),
            (Some("S3".into()), "Fix the login")
        );
        assert_eq!(session_and_title("Fix it"), (None, "Fix it"));
        assert_eq!(session_and_title(""), (None, ""));
    }
}
