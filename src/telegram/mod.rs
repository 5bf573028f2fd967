//! The Telegram front. Only this module imports frankenstein: the Bot API client, the poller actor, the
//! command front and its button codec, voice notes and files from the phone (and the transcription client
//! voice notes need), chat routing, the HTML rendering and the notifier (the only sender).
//! It calls the core's API and never the store.

pub mod buttons;
pub mod client;
pub mod commands;
pub mod front;
pub mod gate;
mod media;
pub mod notifier;
mod overview;
pub mod poller;
pub mod render;
pub mod routes;
pub mod schedules;
pub mod verbosity;
pub mod voice;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::ActorRef;

use frankenstein::AsyncTelegramApi;
use frankenstein::client_reqwest::Bot;

/// What the two Telegram actors share: the Bot API client, and the notifier's address while it runs (the
/// front hands its replies to it).
pub struct Link {
    pub client: client::TelegramClient,
    notifier: Mutex<Option<ActorRef<notifier::NotifierMsg>>>,
}

impl Link {
    pub fn new(client: client::TelegramClient) -> Arc<Link> {
        Arc::new(Link {
            client,
            notifier: Mutex::new(None),
        })
    }

    pub fn set_notifier(&self, n: Option<ActorRef<notifier::NotifierMsg>>) {
        *self.notifier.lock().unwrap_or_else(|p| p.into_inner()) = n;
    }

    /// Tells the notifier Telegram answers again, so queued messages go now.
    pub fn reachable_again(&self) {
        if let Some(n) = self
            .notifier
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            let _ = n.cast(notifier::NotifierMsg::Reachable);
        }
    }

    /// Tells the notifier a chat chose another verbosity (`/verbosity`), which it applies from its next
    /// tracker item; a notifier that restarts reads it again from the front values.
    pub fn verbosity_changed(&self, chat_id: i64, v: verbosity::Verbosity) {
        if let Some(n) = self
            .notifier
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            let _ = n.cast(notifier::NotifierMsg::Verbosity(chat_id, v));
        }
    }

    /// Hands an item to the notifier's memory queue: callback answers, and replies the store could not
    /// keep (read-only mode). Dropped while the notifier restarts; every other reply is an outbox row.
    pub fn send(&self, out: notifier::Outgoing) {
        if let Some(n) = self
            .notifier
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            let _ = n.cast(notifier::NotifierMsg::Send(out));
        }
    }
}

/// Calls `getMe` (doctor, and readiness before the daemon's first call to Telegram has ended).
#[derive(Clone)]
pub struct TelegramProbe {
    bot: Bot,
}

impl TelegramProbe {
    /// `api_url` is the Bot API base (`telegram.api_url`); the token is appended as `/bot<token>`.
    pub fn new(api_url: &str, token: &str) -> TelegramProbe {
        let client = frankenstein::reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        let url = format!("{}/bot{token}", api_url.trim_end_matches('/'));
        TelegramProbe {
            bot: Bot::builder().api_url(url).client(client).build(),
        }
    }

    /// `getMe` within `timeout`. Errors never include the token (it is part of the URL).
    pub async fn get_me(&self, timeout: Duration) -> Result<(), String> {
        match tokio::time::timeout(timeout, self.bot.get_me()).await {
            Err(_) => Err("timeout".into()),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(frankenstein::Error::Api(e))) => {
                Err(format!("{} {}", e.error_code, e.description))
            }
            Ok(Err(frankenstein::Error::HttpReqwest(e))) => Err(describe_reqwest(e)),
            Ok(Err(other)) => Err(redact(&other.to_string())),
        }
    }
}

/// Readiness from the live state of the poller and the notifier: Telegram is failed while their latest
/// call failed (no answer, a 5xx) within [`client::FAILURE_WINDOW`] or the `telegram_api` breaker is not
/// closed, so probes cost Telegram nothing and see an outage as soon as a poll or a send does. Only before
/// the first call of the daemon has ended does a probe ask `getMe` itself.
pub struct LiveCheck {
    client: client::TelegramClient,
    probe: TelegramProbe,
}

impl LiveCheck {
    pub fn new(client: client::TelegramClient, probe: TelegramProbe) -> LiveCheck {
        LiveCheck { client, probe }
    }
}

impl crate::core::FrontCheck for LiveCheck {
    fn check(
        &self,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            let live = self
                .client
                .liveness()
                .state(Instant::now(), self.client.breaker_closed());
            match live {
                client::Live::Ok => Ok(()),
                client::Live::Failed(why) => Err(why),
                client::Live::Unknown => self.probe.get_me(timeout).await,
            }
        })
    }
}

fn describe_reqwest(e: frankenstein::reqwest::Error) -> String {
    if e.is_connect() {
        "connection refused".into()
    } else if e.is_timeout() {
        "timeout".into()
    } else {
        redact(&e.without_url().to_string())
    }
}

/// Removes anything that looks like a bot token path segment from an error text.
fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_inclusive(['/', ' ']) {
        if word.starts_with("bot") && word.contains(':') {
            out.push_str("bot<redacted>");
            if word.ends_with('/') {
                out.push('/');
            }
        } else {
            out.push_str(word);
        }
    }
    out
}
