//! The egress proxy: a job's only way out of its network namespace.
//!
//! A job runs with `bwrap --unshare-net` (only loopback inside). Its agent speaks HTTP(S)_PROXY to the relay
//! (`televibe sandbox-relay`, [`relay`]) on the sandbox's 127.0.0.1; the relay carries each connection
//! through a Unix socket bound into the sandbox to [`serve`] here, in the daemon, which applies the job's
//! [`EgressRules`]:
//! - `CONNECT host:port` opens a tunnel to an allowed destination;
//! - an absolute-form request (`GET http://host/path`) is forwarded to an allowed destination (plain http);
//! - an origin-form request (`POST /v1/messages`), or an absolute-form one addressed to loopback that is not
//!   listed literally, goes to the model route, with the placeholders of its header values replaced by the
//!   real secrets, so the agent never holds them.
//!
//! Everything else gets `403 Forbidden` and the caller's `refused` callback hears the host. Loopback,
//! link-local and unspecified destinations are refused unless listed literally. Header values are never
//! logged (they carry secrets).

mod connect;
pub mod login;
mod proxy;
pub mod relay;
mod rules;

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::UnixListener;
use tokio::task::JoinSet;

pub use rules::allowed;

/// A job's egress rules.
#[derive(Debug, Clone, Default)]
pub struct EgressRules {
    /// Allowed destinations: "host", "host:port", "*.domain" (lower case); a bare host allows any port.
    pub allow: Vec<String>,
    /// The model API route: requests in origin form (e.g. `POST /v1/messages` with a Host of the relay's own
    /// 127.0.0.1:port) or absolute form addressed to the relay's own loopback address go here.
    pub model: Option<ModelRoute>,
}

/// Where the model API requests of a job go, and the secrets they carry.
#[derive(Clone, Default)]
pub struct ModelRoute {
    /// e.g. "https://api.anthropic.com" or "http://127.0.0.1:4567" (a base URL, maybe with a path prefix)
    pub upstream: String,
    /// Placeholders the sandboxed agent sees instead of real secrets, and their real values: in every request
    /// header value, each placeholder is replaced by its secret before forwarding.
    pub secrets: Vec<(String, String)>,
    /// Placeholders whose real value is asked for at each request (a login the daemon refreshes).
    pub fresh: Vec<(String, Arc<login::OAuthLogin>)>,
    /// Where the reset of the model API's last 429 is kept (Unix seconds), for the job's runner: an API
    /// key's usage limit names its reset only in the answer's headers.
    pub limit_reset: LimitReset,
}

/// The reset of the last usage or rate limit a job's model API answered (Unix seconds).
pub type LimitReset = Arc<std::sync::Mutex<Option<i64>>>;

/// When a 429's limit resets (Unix seconds), from its headers: the unified reset of Claude's API, Codex's
/// used-up window's reset (the later of its primary and secondary when both are used up), else
/// `retry-after` (seconds or an HTTP date).
pub fn reset_of_429(headers: &hyper::HeaderMap, now: i64) -> Option<i64> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let number = |name: &str| {
        text(name)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite())
    };
    let epoch = |name: &str| number(name).map(|v| v as i64);
    if let Some(t) = epoch("anthropic-ratelimit-unified-reset") {
        return Some(t);
    }
    let codex: Vec<(bool, i64)> = ["primary", "secondary"]
        .iter()
        .filter_map(|w| {
            let reset = epoch(&format!("x-codex-{w}-reset-at"))?;
            let used_up = number(&format!("x-codex-{w}-used-percent")).is_some_and(|p| p >= 100.0);
            Some((used_up, reset))
        })
        .collect();
    let used_up = codex.iter().filter(|c| c.0).map(|c| c.1).max();
    if let Some(t) = used_up.or_else(|| codex.first().map(|c| c.1)) {
        return Some(t);
    }
    let after = text("retry-after")?.trim();
    match after.parse::<u64>() {
        Ok(secs) => Some(now + secs.min(366 * 86_400) as i64),
        Err(_) => chrono::DateTime::parse_from_rfc2822(after)
            .ok()
            .map(|t| t.timestamp()),
    }
}

impl std::fmt::Debug for ModelRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelRoute")
            .field("upstream", &self.upstream)
            .field("secrets", &format_args!("[{} masked]", self.secrets.len()))
            .finish()
    }
}

/// Called with the host of each refused destination.
pub type Refused = Arc<dyn Fn(&str) + Send + Sync>;

/// The most bytes a request head may take.
pub const MAX_HEAD: usize = 64 * 1024;
/// How long a client may take to send a request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long resolving and connecting to a destination may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one job's proxy socket until aborted (dropping the future closes every connection it carries).
/// `refused` is called with the host name of each refused destination (the caller counts and logs it).
pub async fn serve(listener: UnixListener, rules: Arc<EgressRules>, refused: Refused) {
    let proxy = Arc::new(proxy::Proxy::new(rules, refused));
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let proxy = proxy.clone();
                    conns.spawn(async move { connection(stream, proxy).await });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "egress: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// One client connection: HTTP/1.1 requests until it closes, or a tunnel once a CONNECT succeeds (the tunnel
/// runs here too, so aborting [`serve`] ends it).
async fn connection(stream: tokio::net::UnixStream, proxy: Arc<proxy::Proxy>) {
    let tunnel = proxy::TunnelSlot::default();
    let service = {
        let tunnel = tunnel.clone();
        hyper::service::service_fn(move |req| {
            let proxy = proxy.clone();
            let tunnel = tunnel.clone();
            async move { Ok::<_, std::convert::Infallible>(proxy.handle(req, &tunnel).await) }
        })
    };
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "egress: connection ended");
    }
    if let Some(open) = tunnel.take() {
        open.run().await;
    }
}

#[cfg(test)]
mod tests;
