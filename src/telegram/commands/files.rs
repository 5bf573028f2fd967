//! `/get [S3] <path>`: a file of a session's worktree, sent as a document. The core checks the path
//! (inside the worktree, no link, a regular file within `files.max_bytes`); the file is read when it is
//! sent.

use crate::domain::SessionId;
use crate::errors::CoreError;
use crate::telegram::front::{Front, usage};
use crate::telegram::notifier::Outgoing;
use crate::telegram::render::{code, escape};

/// A leading `S3` names the session when more follows it; else the chat's active session.
pub(super) fn session_and_rest(args: &str) -> (Option<String>, &str) {
    let args = args.trim();
    match args.split_once(char::is_whitespace) {
        Some((first, rest))
            if first.to_uppercase().starts_with('S') && SessionId::parse(first).is_some() =>
        {
            (SessionId::parse(first).map(|s| s.to_string()), rest.trim())
        }
        _ => (None, args),
    }
}

impl Front {
    /// `/get [S3] <path>`: checked now (a refusal is answered at once, nothing read), sent as a document
    /// named as the file.
    pub(in crate::telegram) async fn get(&self, chat_id: i64, args: &str) -> Result<(), CoreError> {
        let (session, path) = session_and_rest(args);
        if path.is_empty() {
            return Err(usage("/get [S3] <path inside the worktree>"));
        }
        let session = match session {
            Some(s) => s,
            None => self.require_active(chat_id).await?,
        };
        let f = self.core.sessions().worktree_file(&session, path).await?;
        let caption = format!(
            "📄 {} · Session {} ({})",
            // A caption holds at most 1024 characters: a long path is shown cut (the document keeps its name).
            code(&crate::text::cut(&f.path, 300)),
            escape(&f.session_id),
            escape(&crate::core::sessions::human_size(f.size))
        );
        self.send(Outgoing::WorktreeFile {
            chat_id,
            session_id: f.session_id,
            path: f.path,
            caption,
            events: Vec::new(),
        })
        .await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leading_session_id_names_the_session_only_when_a_path_follows() {
        assert_eq!(
            session_and_rest("S3 src/main.rs"),
            (Some("S3".into()), "src/main.rs")
        );
        assert_eq!(
            session_and_rest("s12  a b.txt"),
            (Some("S12".into()), "a b.txt")
        );
        assert_eq!(session_and_rest("README.md"), (None, "README.md"));
        assert_eq!(session_and_rest("S3"), (None, "S3"));
        assert_eq!(session_and_rest("12 x"), (None, "12 x"));
        assert_eq!(session_and_rest("Src/x y"), (None, "Src/x y"));
    }
}
