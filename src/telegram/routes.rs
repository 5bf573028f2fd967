//! Chat routing, kept across restarts as front values: which chat follows a session, which session a chat
//! uses, where a job's tracker message is, and where notices without a session go.

use crate::core::Core;

/// Where notices without a session go: `telegram.admin_chat_id`, else each allowed user's private chat.
pub fn notice_chats(core: &Core) -> Vec<i64> {
    let t = &core.config().telegram;
    if t.admin_chat_id != 0 {
        vec![t.admin_chat_id]
    } else {
        t.allowed_users.clone()
    }
}

/// The chat that follows a session: the last one that used it, else the notice chat.
pub async fn session_chat(core: &Core, session_id: &str) -> Option<i64> {
    core.front_value(&format!("telegram.chat.{session_id}"))
        .await
        .and_then(|v| v.parse().ok())
        .or_else(|| notice_chats(core).into_iter().next())
}

/// The session a chat works in (`/use`, `/new`), and the chat that follows that session from now on.
pub async fn set_active_session(core: &Core, chat_id: i64, session_id: &str) {
    let _ = core
        .set_front_value(&format!("telegram.active.{chat_id}"), session_id)
        .await;
    set_session_chat(core, session_id, chat_id).await;
}

pub async fn active_session(core: &Core, chat_id: i64) -> Option<String> {
    core.front_value(&format!("telegram.active.{chat_id}"))
        .await
}

pub async fn set_session_chat(core: &Core, session_id: &str, chat_id: i64) {
    let _ = core
        .set_front_value(&format!("telegram.chat.{session_id}"), &chat_id.to_string())
        .await;
}

/// The tracker message of a job: its chat, and its message id once Telegram answered the send (`None`: a
/// send was begun and its answer never recorded, so a message may exist that nobody can edit). Kept so
/// edits continue after a restart.
pub async fn tracker_message(core: &Core, job_id: &str) -> Option<(i64, Option<i64>)> {
    let v = core.front_value(&tracker_key(job_id)).await?;
    let (c, m) = v.split_once(':')?;
    Some((c.parse().ok()?, m.parse().ok()))
}

/// Written before a tracker's first `sendMessage`: a crash before its answer is recorded leaves this mark.
pub async fn tracker_sending(core: &Core, job_id: &str, chat_id: i64) {
    let _ = core
        .set_front_value(&tracker_key(job_id), &format!("{chat_id}:"))
        .await;
}

pub async fn remember_tracker(core: &Core, job_id: &str, chat_id: i64, message_id: i64) {
    let _ = core
        .set_front_value(&tracker_key(job_id), &format!("{chat_id}:{message_id}"))
        .await;
}

/// A tracker shown in its final state is not edited again: its row goes (the janitor prunes what a
/// crash left, with the job).
pub async fn forget_tracker(core: &Core, job_id: &str) {
    let _ = core.forget_front_value(&tracker_key(job_id)).await;
}

/// Whether a job's long result already went out as a document (kept so that a result sent again after a
/// restart does not send its document twice).
pub async fn result_file_sent(core: &Core, job_id: &str) -> bool {
    core.front_value(&result_file_key(job_id)).await.is_some()
}

pub async fn remember_result_file(core: &Core, job_id: &str) {
    let _ = core.set_front_value(&result_file_key(job_id), "sent").await;
}

/// The job's result is shown for good: the mark goes (the janitor prunes what a crash left, with the job).
pub async fn forget_result_file(core: &Core, job_id: &str) {
    let _ = core.forget_front_value(&result_file_key(job_id)).await;
}

fn result_file_key(job_id: &str) -> String {
    format!("telegram.result_file.{job_id}")
}

fn tracker_key(job_id: &str) -> String {
    format!("telegram.tracker.{job_id}")
}
