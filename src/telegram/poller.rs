//! The `telegram` actor: getUpdates long polling with the offset kept in SQLite (an update is never
//! handled twice, even across restarts), reconnect with exponential backoff and jitter, `deleteWebhook`
//! and `setMyCommands` at start. Updates are handled one at a time, in order, by the front.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio_util::task::AbortOnDropHandle;

use super::Link;
use super::client::{Incoming, TgError};
use super::commands::COMMANDS;
use super::front::Front;
use crate::core::Core;
use crate::supervisor::ChildMessage;

const OFFSET_KEY: &str = "telegram.offset";
/// The longest wait between reconnect attempts: well inside the spec's 60 s RTO.
const MAX_BACKOFF: Duration = Duration::from_secs(20);
/// The longest wait between reachability checks while the `telegram_api` breaker is open: delivery
/// resumes within about this long after the network comes back.
const OPEN_PROBE_MAX: Duration = Duration::from_secs(4);

pub struct Poller {
    pub core: Arc<Core>,
    pub link: Arc<Link>,
}

pub enum PollerMsg {
    Handle(Incoming, RpcReplyPort<()>),
    Panic,
}

impl ChildMessage for PollerMsg {
    fn injected_panic() -> Self {
        PollerMsg::Panic
    }
}

pub struct PollerState {
    front: Arc<Front>,
    _task: AbortOnDropHandle<()>,
}

impl Actor for Poller {
    type Msg = PollerMsg;
    type State = PollerState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<PollerMsg>,
        _: (),
    ) -> Result<PollerState, ActorProcessingErr> {
        let task = tokio::spawn(poll_loop(self.core.clone(), self.link.clone(), myself));
        Ok(PollerState {
            front: Arc::new(Front::new(self.core.clone(), self.link.clone())),
            _task: AbortOnDropHandle::new(task),
        })
    }

    async fn handle(
        &self,
        _: ActorRef<PollerMsg>,
        msg: PollerMsg,
        st: &mut PollerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            // Button taps (approvals, cancel) are quick and independent: they do not wait behind a slow
            // command. Commands run one at a time, in order.
            PollerMsg::Handle(update @ Incoming::Callback { .. }, reply) => {
                let front = st.front.clone();
                tokio::spawn(async move { front.handle(update).await });
                let _ = reply.send(());
            }
            PollerMsg::Handle(update, reply) => {
                st.front.handle(update).await;
                let _ = reply.send(());
            }
            PollerMsg::Panic => panic!("injected panic in telegram poller"),
        }
        Ok(())
    }
}

fn jittered(d: Duration) -> Duration {
    let ms = d.as_millis() as u64;
    Duration::from_millis(ms / 2 + rand::random_range(0..=ms / 2))
}

async fn poll_loop(core: Arc<Core>, link: Arc<Link>, me: ActorRef<PollerMsg>) {
    let client = &link.client;
    let mut backoff = Duration::from_millis(500);
    // Start-up calls, retried until they work.
    loop {
        match (
            client.delete_webhook().await,
            client.set_commands(COMMANDS).await,
        ) {
            (Ok(()), Ok(())) => break,
            (a, b) => {
                let mut wait = backoff;
                if matches!(a, Err(TgError::BreakerOpen)) || matches!(b, Err(TgError::BreakerOpen))
                {
                    if client.reachable().await.is_ok() {
                        continue;
                    }
                    wait = wait.min(OPEN_PROBE_MAX);
                }
                let e = a
                    .err()
                    .or(b.err())
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                tracing::warn!(target: "televibe.telegram", error = %e, "Telegram start-up calls failed; retrying");
                tokio::time::sleep(jittered(wait)).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    tracing::info!(target: "televibe.telegram", "Telegram connected: polling for updates");
    backoff = Duration::from_millis(500);
    let mut offset: i64 = core
        .front_value(OFFSET_KEY)
        .await
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let shutdown = core.shutdown_token();
    // A call failed since the last good poll: the next good one tells the notifier.
    let mut down = false;
    loop {
        // A half-open breaker is probed with a short getMe, never with a long poll that would hold the
        // probe slot (and every send behind it) for the length of the poll.
        let polled = if client.breaker_closed() {
            tokio::select! {
                // Shutdown: no new update is taken; one cut short is confirmed by nobody and comes again.
                _ = shutdown.cancelled() => return,
                polled = client.get_updates(offset) => polled,
            }
        } else {
            Err(TgError::BreakerOpen)
        };
        match polled {
            Ok(updates) => {
                if std::mem::take(&mut down) {
                    tracing::info!(target: "televibe.telegram", "Telegram reachable again");
                    link.reachable_again();
                }
                backoff = Duration::from_millis(500);
                for (id, update) in updates {
                    // The offset is stored before the update is handled: a crash can lose it, never repeat it.
                    offset = id + 1;
                    if let Err(e) = core.set_front_value(OFFSET_KEY, &offset.to_string()).await {
                        tracing::error!(target: "televibe.telegram", error = %e, "update offset not stored");
                    }
                    if update != Incoming::Ignored {
                        let _ = ractor::call_t!(me, PollerMsg::Handle, 300_000, update);
                    }
                }
            }
            Err(TgError::BreakerOpen) => {
                down = true;
                // The breaker stops guarded calls; a getMe probe at a time, backing off to
                // OPEN_PROBE_MAX, finds Telegram again well before the breaker's own timeout.
                match client.reachable().await {
                    Ok(()) => {
                        tracing::info!(target: "televibe.telegram", "Telegram reachable again");
                        down = false;
                        link.reachable_again();
                        backoff = Duration::from_millis(500);
                    }
                    Err(_) => {
                        tokio::time::sleep(jittered(backoff.min(OPEN_PROBE_MAX))).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            Err(TgError::Rejected { code: 409, .. }) => {
                // Telegram serves one poller per token: another process polls with ours.
                tracing::warn!(target: "televibe.telegram", backoff_ms = backoff.as_millis() as u64, "getUpdates conflict (409): another process is polling with this bot token; stop it (only one daemon may use a token)");
                tokio::time::sleep(jittered(backoff)).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(e) => {
                down = true;
                tracing::warn!(target: "televibe.telegram", error = %e, backoff_ms = backoff.as_millis() as u64, "getUpdates failed; reconnecting");
                tokio::time::sleep(jittered(backoff)).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
