//! The Telegram front. Only this module imports frankenstein: the Bot API client, the poller actor, the
//! command front and its button codec, chat routing, the HTML rendering and the notifier (the only sender).
//! It calls the core's API and never the store.

pub mod buttons;
pub mod client;
pub mod commands;
pub mod front;
pub mod gate;
pub mod notifier;
pub mod poller;
pub mod render;
pub mod routes;

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

    /// Hands a message to the notifier (dropped while the notifier restarts).
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

/// How long a `getMe` answer stands for the readiness check. Probes may come every second from several
/// monitors; Telegram limits bots, so they see the answer of the last 30 s instead of causing a call each.
pub const GET_ME_CACHE: Duration = Duration::from_secs(30);

/// Calls `getMe` for the readiness check.
#[derive(Clone)]
pub struct TelegramProbe {
    bot: Bot,
    /// The last answer and when it came. Held across the call, so concurrent probes wait for one `getMe`.
    last: Arc<tokio::sync::Mutex<Option<GetMeAnswer>>>,
}

/// A `getMe` result and when it came.
type GetMeAnswer = (Instant, Result<(), String>);

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
            last: Arc::default(),
        }
    }

    /// `getMe`, answered from the last result while it is younger than [`GET_ME_CACHE`]; failures are kept
    /// as long as successes, so a Telegram outage is not probed harder than a healthy Telegram.
    pub async fn cached_get_me(&self, timeout: Duration) -> Result<(), String> {
        let mut last = self.last.lock().await;
        if let Some((at, result)) = last.as_ref()
            && at.elapsed() < GET_ME_CACHE
        {
            return result.clone();
        }
        let result = self.get_me(timeout).await;
        *last = Some((Instant::now(), result.clone()));
        result
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

impl crate::core::FrontCheck for TelegramProbe {
    fn check(
        &self,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(self.cached_get_me(timeout))
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
