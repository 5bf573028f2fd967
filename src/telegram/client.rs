//! The Bot API client (frankenstein) behind the `telegram_api` breaker, with errors sorted for callers.
//!
//! Breaker failures are the spec's: HTTP 500/502/503/504, timeouts and connection errors, and 429.
//! A 400 such as "message is not modified" is Telegram working correctly and counts as a success.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use frankenstein::AsyncTelegramApi;
use frankenstein::client_reqwest::Bot;
use frankenstein::methods::{
    AnswerCallbackQueryParams, DeleteWebhookParams, EditMessageTextParams, GetUpdatesParams,
    SendDocumentParams, SendMessageParams, SetMyCommandsParams,
};
use frankenstein::types::{
    AllowedUpdate, BotCommand, InlineKeyboardButton, InlineKeyboardMarkup, LinkPreviewOptions,
    ReplyMarkup, ReplyParameters,
};
use frankenstein::{Error, ParseMode};

use crate::breaker::{BreakerName, Breakers};

mod files;
mod updates;
pub use files::FileError;
use updates::incoming;
pub use updates::{Media, RemoteFile};

/// How long a reachability probe waits for `getMe` (a lost network may swallow packets silently).
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What went wrong with a Bot API call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TgError {
    #[error("telegram_api breaker is open")]
    BreakerOpen,
    #[error("rate limited: retry after {0} s")]
    RetryAfter(u64),
    /// Network loss, timeouts, 5xx: worth retrying later.
    #[error("Telegram unavailable: {0}")]
    Unavailable(String),
    /// Telegram refused this request (4xx other than 429); retrying it unchanged will not help.
    #[error("Telegram refused: {code} {description}")]
    Rejected { code: u64, description: String },
}

impl TgError {
    pub fn not_modified(&self) -> bool {
        matches!(self, TgError::Rejected { description, .. } if description.contains("message is not modified"))
    }
}

/// An inline button: label and callback data (at most 64 bytes).
pub type Button = (String, String);

/// One incoming update the bot understands.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Text {
        chat_id: i64,
        /// The chat is the user's private chat with the bot (not a group or channel).
        private: bool,
        user_id: i64,
        message_id: i64,
        text: String,
        reply_to: Option<(i64, String)>,
    },
    /// A voice note, photo or document, with its caption (none when blank).
    Media {
        chat_id: i64,
        private: bool,
        user_id: i64,
        message_id: i64,
        media: Media,
        caption: Option<String>,
        reply_to: Option<(i64, String)>,
    },
    Callback {
        id: String,
        user_id: i64,
        chat_id: i64,
        /// The button's message is in a private chat.
        private: bool,
        message_id: i64,
        data: String,
    },
    Ignored,
}

#[derive(Clone)]
pub struct TelegramClient {
    /// Long polls (the client's timeout is longer than the poll).
    poll_bot: Bot,
    /// Uploads documents (up to `files.max_bytes`, 20 MB by default: minutes on a slow line).
    upload_bot: Bot,
    /// Every other call: a connection that accepts and never answers is given up after
    /// [`CALL_TIMEOUT`], so one black-holed send cannot hold the notifier for the length of a poll.
    bot: Bot,
    breakers: Arc<Breakers>,
    live: Arc<Liveness>,
    /// Downloads of files sent to the bot (their address holds the token).
    files: files::Download,
}

/// How long a call other than a long poll may take, connection included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a failed call (no answer, or a 5xx) makes readiness report Telegram as failed when no call
/// has succeeded since; while the `telegram_api` breaker is not closed it stays failed regardless.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(10);

/// What Telegram answered lately, as the poller and the notifier saw it: readiness reads this instead of
/// calling Telegram itself.
#[derive(Default)]
pub struct Liveness {
    inner: std::sync::Mutex<LiveInner>,
}

#[derive(Default)]
struct LiveInner {
    ok: Option<Instant>,
    failed: Option<(Instant, String)>,
    /// When the long poll in flight began: one that outlasts its own server-side wait by more than
    /// `POLL_GRACE` is a connection that accepts and never answers, failed before the client gives up.
    polling: Option<Instant>,
}

/// How long past `LONG_POLL_SECS` a poll may stay unanswered before readiness calls Telegram failed.
pub const POLL_GRACE: Duration = Duration::from_secs(3);

/// What readiness concludes from the live state.
#[derive(Debug, Clone, PartialEq)]
pub enum Live {
    /// No call has ended yet (the daemon just started).
    Unknown,
    Ok,
    Failed(String),
}

impl Liveness {
    fn lock(&self) -> std::sync::MutexGuard<'_, LiveInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn answered(&self) {
        self.lock().ok = Some(Instant::now());
    }

    pub fn failed(&self, why: &str) {
        self.lock().failed = Some((Instant::now(), why.to_string()));
    }

    fn poll(&self, started: Option<Instant>) {
        self.lock().polling = started;
    }

    /// Failed when the latest outcome is a failure that is recent or while the breaker is not closed.
    pub fn state(&self, now: Instant, breaker_closed: bool) -> Live {
        let inner = self.lock();
        let overdue = Duration::from_secs(u64::from(LONG_POLL_SECS)) + POLL_GRACE;
        if let Some(at) = inner.polling
            && now.duration_since(at) > overdue
        {
            return Live::Failed(format!(
                "getUpdates unanswered for {} s (its wait is {LONG_POLL_SECS} s)",
                now.duration_since(at).as_secs()
            ));
        }
        match (&inner.failed, inner.ok) {
            (Some((at, why)), ok)
                if ok.is_none_or(|ok| ok < *at)
                    && (!breaker_closed || now.duration_since(*at) < FAILURE_WINDOW) =>
            {
                Live::Failed(why.clone())
            }
            (_, Some(_)) | (Some(_), None) => Live::Ok,
            (None, None) => Live::Unknown,
        }
    }
}

/// How long one document upload may take: 20 MB at about 35 KB/s.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// Seconds a getUpdates call waits on the server.
pub const LONG_POLL_SECS: u32 = 25;

impl TelegramClient {
    pub fn new(api_url: &str, token: &str, breakers: Arc<Breakers>) -> TelegramClient {
        let url = format!("{}/bot{token}", api_url.trim_end_matches('/'));
        let bot = |timeout: Duration| {
            let client = frankenstein::reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .timeout(timeout)
                .build()
                .unwrap_or_default();
            Bot::builder().api_url(url.clone()).client(client).build()
        };
        TelegramClient {
            // Longer than the long poll, so an idle poll is not a timeout.
            poll_bot: bot(Duration::from_secs(u64::from(LONG_POLL_SECS) + 15)),
            upload_bot: bot(UPLOAD_TIMEOUT),
            bot: bot(CALL_TIMEOUT),
            breakers,
            live: Arc::default(),
            files: files::Download::new(api_url, token),
        }
    }

    /// What Telegram answered lately (readiness).
    pub fn liveness(&self) -> Arc<Liveness> {
        self.live.clone()
    }

    /// Runs one call through the breaker and sorts its error.
    async fn guarded<T>(&self, call: impl Future<Output = Result<T, Error>>) -> Result<T, TgError> {
        let permit = self
            .breakers
            .acquire(BreakerName::TelegramApi)
            .map_err(|_| TgError::BreakerOpen)?;
        match call.await {
            Ok(v) => {
                permit.success();
                self.live.answered();
                Ok(v)
            }
            Err(e) => {
                let err = classify(e);
                match &err {
                    TgError::Unavailable(why) => {
                        permit.failure();
                        self.live.failed(why);
                    }
                    TgError::RetryAfter(_) => {
                        permit.failure();
                        self.live.answered();
                    }
                    _ => {
                        permit.success();
                        self.live.answered();
                    }
                }
                Err(err)
            }
        }
    }

    /// Whether `telegram_api` is closed (a half-open or open breaker is probed with `reachable`).
    pub fn breaker_closed(&self) -> bool {
        self.breakers.get(BreakerName::TelegramApi).state() == crate::breaker::BreakerState::Closed
    }

    /// While `telegram_api` is open: whether Telegram answers again, without waiting out the breaker's
    /// timeout. An unguarded `getMe` asks first, so an outage keeps the breaker open (one "opened" notice,
    /// a steady gauge); when it answers, the breaker probes at once with a guarded `getMe`, whose
    /// success closes it. Both calls are bounded by PROBE_TIMEOUT, and a probe that times out counts as
    /// a failure.
    pub async fn reachable(&self) -> Result<(), TgError> {
        let unreachable = match tokio::time::timeout(PROBE_TIMEOUT, self.bot.get_me()).await {
            Err(_) => Some(TgError::Unavailable("timeout".into())),
            Ok(Err(e)) => Some(classify(e)),
            Ok(Ok(_)) => None,
        };
        if let Some(e) = unreachable {
            if let TgError::Unavailable(why) = &e {
                self.live.failed(why);
            }
            // Half-open by its own timeout while still down: this check was its probe, and it failed.
            let breaker = self.breakers.get(BreakerName::TelegramApi);
            if breaker.state() == crate::breaker::BreakerState::HalfOpen
                && matches!(e, TgError::Unavailable(_) | TgError::RetryAfter(_))
            {
                breaker.record_failure();
            }
            return Err(e);
        }
        self.breakers.get(BreakerName::TelegramApi).probe_now();
        let permit = self
            .breakers
            .acquire(BreakerName::TelegramApi)
            .map_err(|_| TgError::BreakerOpen)?;
        match tokio::time::timeout(PROBE_TIMEOUT, self.bot.get_me()).await {
            Ok(Ok(_)) => {
                permit.success();
                self.live.answered();
                Ok(())
            }
            Ok(Err(e)) => {
                let err = classify(e);
                match &err {
                    TgError::RetryAfter(_) | TgError::Unavailable(_) => permit.failure(),
                    _ => permit.success(),
                }
                if let TgError::Unavailable(why) = &err {
                    self.live.failed(why);
                }
                Err(err)
            }
            Err(_) => {
                permit.failure();
                self.live.failed("timeout");
                Err(TgError::Unavailable("timeout".into()))
            }
        }
    }

    pub async fn delete_webhook(&self) -> Result<(), TgError> {
        let p = DeleteWebhookParams::builder()
            .drop_pending_updates(false)
            .build();
        self.guarded(self.bot.delete_webhook(&p)).await.map(|_| ())
    }

    pub async fn set_commands(&self, commands: &[(&str, &str)]) -> Result<(), TgError> {
        let p = SetMyCommandsParams::builder()
            .commands(
                commands
                    .iter()
                    .map(|(c, d)| BotCommand::builder().command(*c).description(*d).build())
                    .collect::<Vec<_>>(),
            )
            .build();
        self.guarded(self.bot.set_my_commands(&p)).await.map(|_| ())
    }

    /// Long-polls for updates from `offset`; returns (update id, update) pairs.
    pub async fn get_updates(&self, offset: i64) -> Result<Vec<(i64, Incoming)>, TgError> {
        let p = GetUpdatesParams::builder()
            .offset(offset)
            .timeout(LONG_POLL_SECS)
            .limit(100)
            .allowed_updates(vec![AllowedUpdate::Message, AllowedUpdate::CallbackQuery])
            .build();
        // Cleared however the poll ends, a dropped future (the poller stopping) included.
        struct Polling<'a>(&'a Liveness);
        impl Drop for Polling<'_> {
            fn drop(&mut self) {
                self.0.poll(None);
            }
        }
        self.live.poll(Some(Instant::now()));
        let _polling = Polling(&self.live);
        let resp = self.guarded(self.poll_bot.get_updates(&p)).await;
        Ok(resp?
            .result
            .into_iter()
            .map(|u| (i64::from(u.update_id), incoming(u.content)))
            .collect())
    }

    /// Sends a message; `silent` sends it without a notification (`disable_notification`, always given),
    /// `reply_to` as a reply to that message of the chat (sent all the same when it is gone).
    pub async fn send_html(
        &self,
        chat_id: i64,
        html: &str,
        buttons: &[Button],
        silent: bool,
        reply_to: Option<i64>,
    ) -> Result<i64, TgError> {
        let p = SendMessageParams::builder()
            .chat_id(chat_id)
            .text(html)
            .parse_mode(ParseMode::Html)
            .link_preview_options(LinkPreviewOptions::DISABLED)
            .disable_notification(silent)
            .maybe_reply_parameters(reply_to.map(|m| {
                ReplyParameters::builder()
                    .message_id(m as i32)
                    .allow_sending_without_reply(true)
                    .build()
            }))
            .maybe_reply_markup(
                (!buttons.is_empty()).then(|| ReplyMarkup::InlineKeyboardMarkup(keyboard(buttons))),
            )
            .build();
        let m = self.guarded(self.bot.send_message(&p)).await?;
        Ok(i64::from(m.result.message_id))
    }

    /// Edits a message; "message is not modified" counts as done.
    pub async fn edit_html(
        &self,
        chat_id: i64,
        message_id: i64,
        html: &str,
        buttons: &[Button],
    ) -> Result<(), TgError> {
        let p = EditMessageTextParams::builder()
            .chat_id(chat_id)
            .message_id(message_id as i32)
            .text(html)
            .parse_mode(ParseMode::Html)
            .link_preview_options(LinkPreviewOptions::DISABLED)
            .reply_markup(keyboard(buttons))
            .build();
        match self.guarded(self.bot.edit_message_text(&p)).await {
            Ok(_) => Ok(()),
            Err(e) if e.not_modified() => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn answer_callback(&self, id: &str, text: &str) -> Result<(), TgError> {
        let text: String = text.chars().take(200).collect();
        let p = AnswerCallbackQueryParams::builder()
            .callback_query_id(id)
            .text(text)
            .build();
        self.guarded(self.bot.answer_callback_query(&p))
            .await
            .map(|_| ())
    }

    /// Sends `bytes` as a document named `filename` (staged in a private temp file: the client uploads
    /// paths); `silent` as for [`TelegramClient::send_html`].
    pub async fn send_document(
        &self,
        chat_id: i64,
        filename: &str,
        bytes: &[u8],
        caption_html: &str,
        silent: bool,
    ) -> Result<(), TgError> {
        let dir = tempfile::Builder::new()
            .prefix("televibe-upload")
            .tempdir()
            .map_err(|e| TgError::Unavailable(format!("cannot stage the upload: {e}")))?;
        let path: PathBuf = dir.path().join(filename);
        std::fs::write(&path, bytes)
            .map_err(|e| TgError::Unavailable(format!("cannot stage the upload: {e}")))?;
        let p = SendDocumentParams::builder()
            .chat_id(chat_id)
            .document(path)
            .caption(caption_html)
            .parse_mode(ParseMode::Html)
            .disable_notification(silent)
            .build();
        // An upload of up to `files.max_bytes` may take minutes: it has a limit of its own.
        self.guarded(self.upload_bot.send_document(&p))
            .await
            .map(|_| ())
    }
}

fn keyboard(buttons: &[Button]) -> InlineKeyboardMarkup {
    let row: Vec<InlineKeyboardButton> = buttons
        .iter()
        .map(|(label, data)| {
            InlineKeyboardButton::builder()
                .text(label.as_str())
                .callback_data(data.as_str())
                .build()
        })
        .collect();
    let rows = if row.is_empty() {
        Vec::new()
    } else {
        vec![row]
    };
    InlineKeyboardMarkup::builder()
        .inline_keyboard(rows)
        .build()
}

fn classify(e: Error) -> TgError {
    match e {
        Error::Api(r) => match r.error_code {
            429 => TgError::RetryAfter(
                r.parameters
                    .and_then(|p| p.retry_after)
                    .map(u64::from)
                    .unwrap_or(1),
            ),
            500 | 502 | 503 | 504 => {
                TgError::Unavailable(format!("{} {}", r.error_code, r.description))
            }
            code => TgError::Rejected {
                code,
                description: r.description,
            },
        },
        Error::HttpReqwest(e) if e.is_timeout() => TgError::Unavailable("timeout".into()),
        Error::HttpReqwest(e) if e.is_connect() => {
            TgError::Unavailable("connection refused".into())
        }
        Error::HttpReqwest(e) => TgError::Unavailable(e.without_url().to_string()),
        Error::JsonDecode { .. } => TgError::Unavailable("unreadable answer".into()),
        other => TgError::Rejected {
            code: 0,
            description: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_reads_the_latest_outcome_and_the_breaker() {
        let live = Liveness::default();
        let now = Instant::now();
        assert_eq!(live.state(now, true), Live::Unknown);
        live.answered();
        assert_eq!(live.state(Instant::now(), true), Live::Ok);
        live.failed("timeout");
        let failed_at = Instant::now();
        assert_eq!(
            live.state(failed_at, true),
            Live::Failed("timeout".into()),
            "a failure after the last answer"
        );
        let later = failed_at + FAILURE_WINDOW + Duration::from_secs(1);
        assert_eq!(
            live.state(later, true),
            Live::Ok,
            "an old failure with the breaker closed"
        );
        assert_eq!(
            live.state(later, false),
            Live::Failed("timeout".into()),
            "while the breaker is not closed, at any age"
        );
        live.answered();
        assert_eq!(
            live.state(Instant::now(), false),
            Live::Ok,
            "answered since"
        );
        // A poll that outlasts its own wait: a connection that accepts and never answers.
        let started = Instant::now();
        live.poll(Some(started));
        let wait = Duration::from_secs(u64::from(LONG_POLL_SECS));
        assert_eq!(live.state(started + wait, true), Live::Ok, "still waiting");
        assert!(matches!(
            live.state(started + wait + POLL_GRACE + Duration::from_secs(1), true),
            Live::Failed(_)
        ));
        live.poll(None);
        assert_eq!(live.state(started + wait * 2, true), Live::Ok);
    }
}
