//! `/push [S3]`: queues a push of a session's branch to the project's `origin` (the active session's
//! without an argument). The job's tracker, the approval with its buttons and the result come to this
//! chat as for any job.

use crate::errors::CoreError;
use crate::telegram::front::Front;
use crate::telegram::routes;

impl Front {
    pub(in crate::telegram) async fn push(
        &self,
        chat_id: i64,
        args: &str,
    ) -> Result<(), CoreError> {
        let session = match args.split_whitespace().next() {
            Some(s) => s.to_string(),
            None => self.require_active(chat_id).await?,
        };
        let s = self.core.sessions().get_session(&session).await?;
        // The push's tracker, its approval and its result go to this chat.
        routes::set_session_chat(&self.core, &s.id, chat_id).await;
        self.core.sessions().push_session(&s.id).await?;
        Ok(())
    }
}
