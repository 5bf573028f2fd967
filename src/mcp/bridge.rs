//! `televibe mcp`: a stdio ↔ Unix-socket bridge for MCP clients.
//!
//! Lines pass through unchanged. The bridge remembers the client's `initialize` request and `initialized`
//! notification; when the daemon goes away it answers the requests in flight with an error, reconnects with
//! backoff, replays `initialize` (swallowing the answer, which the client already has) and `initialized`,
//! then sends whatever the client wrote meanwhile. The client never sees the daemon restart.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The id the bridge gives a replayed `initialize`; its answer is not forwarded.
const REPLAY_ID: &str = "televibe-bridge-replay";
/// How long a request waits for the daemon before it is answered with an error.
const UNAVAILABLE_AFTER: Duration = Duration::from_secs(30);

/// Runs the bridge on the process's stdin and stdout until stdin closes.
pub async fn run_stdio(socket: PathBuf, preamble: Option<String>) -> std::io::Result<()> {
    run(socket, preamble, tokio::io::stdin(), tokio::io::stdout()).await
}

/// The first line a job's approval connection sends: its job id and secret.
pub fn job_preamble(job_id: &str, token: &str) -> String {
    json!({"televibe_job": job_id, "token": token}).to_string()
}

struct Link {
    writer: OwnedWriteHalf,
    lines: tokio::io::Lines<BufReader<OwnedReadHalf>>,
}

async fn connect(socket: &Path, preamble: Option<&str>) -> std::io::Result<Link> {
    let stream = UnixStream::connect(socket).await?;
    let (r, mut w) = stream.into_split();
    if let Some(p) = preamble {
        w.write_all(format!("{p}\n").as_bytes()).await?;
    }
    Ok(Link {
        writer: w,
        lines: BufReader::new(r).lines(),
    })
}

fn request_id(msg: &Value) -> Option<Value> {
    match (msg.get("method"), msg.get("id")) {
        (Some(_), Some(id)) if !id.is_null() => Some(id.clone()),
        _ => None,
    }
}

fn error_reply(id: &Value, message: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32000, "message": message}}).to_string()
}

/// The bridge loop over any reader and writer (tests drive it in-process).
pub async fn run<R, W>(
    socket: PathBuf,
    preamble: Option<String>,
    input: R,
    output: W,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let mut from_client = read_client(input);
    let mut b = Bridge::new(socket, preamble, output);
    loop {
        // The client hung up: leave once nothing it asked for is still owed an answer.
        if !b.client_open && b.pending.is_empty() && b.in_flight.is_empty() {
            return Ok(());
        }
        if b.link.is_none() && Instant::now() >= b.next_attempt && !b.connect().await? {
            continue;
        }
        if b.link.is_none() {
            b.expire_pending().await?;
        }
        let wait = if b.link.is_none() {
            b.next_attempt
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(10))
        } else {
            Duration::from_secs(3600)
        };
        tokio::select! {
            line = from_client.recv(), if b.client_open => b.client_line(line).await?,
            line = next_daemon_line(&mut b.link), if b.link.is_some() => b.daemon_line(line).await?,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// The client's lines, read by a task of their own so a slow daemon never blocks reading them.
fn read_client<R: AsyncRead + Unpin + Send + 'static>(input: R) -> mpsc::Receiver<String> {
    let (tx, from_client) = mpsc::channel::<String>(256);
    tokio::spawn(async move {
        let mut lines = BufReader::new(input).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).await.is_err() {
                break;
            }
        }
    });
    from_client
}

/// The bridge's state between the client and a daemon that may come and go.
struct Bridge<W> {
    socket: PathBuf,
    preamble: Option<String>,
    output: W,
    /// The client's `initialize` request and `initialized` notification, replayed on every reconnect.
    initialize: Option<Value>,
    initialized: Option<String>,
    /// Ids of the requests sent to the daemon and not answered yet.
    in_flight: HashSet<String>,
    /// Client lines not sent yet, with when they arrived.
    pending: Vec<(String, Instant)>,
    link: Option<Link>,
    backoff: Duration,
    next_attempt: Instant,
    client_open: bool,
    /// The replayed `initialize` is not answered yet: client lines wait.
    replaying: bool,
}

impl<W: AsyncWrite + Unpin> Bridge<W> {
    fn new(socket: PathBuf, preamble: Option<String>, output: W) -> Self {
        Bridge {
            socket,
            preamble,
            output,
            initialize: None,
            initialized: None,
            in_flight: HashSet::new(),
            pending: Vec::new(),
            link: None,
            backoff: Duration::from_millis(50),
            next_attempt: Instant::now(),
            client_open: true,
            replaying: false,
        }
    }

    /// The next attempt waits the backoff, which doubles up to 2 s.
    fn back_off(&mut self) {
        self.next_attempt = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(Duration::from_secs(2));
    }

    /// Connects to the daemon and replays `initialize`, or sends what waits. False when the new link failed
    /// at once (the loop starts over).
    async fn connect(&mut self) -> std::io::Result<bool> {
        let mut l = match connect(&self.socket, self.preamble.as_deref()).await {
            Ok(l) => l,
            Err(e) => {
                if self.backoff >= Duration::from_secs(1) {
                    tracing::warn!(
                        "daemon socket {} unavailable: {e}; retrying",
                        self.socket.display()
                    );
                }
                self.back_off();
                return Ok(true);
            }
        };
        if let Some(init) = &self.initialize {
            let mut replay = init.clone();
            replay["id"] = json!(REPLAY_ID);
            // A daemon that drops us right away is just not back yet.
            if l.writer
                .write_all(format!("{replay}\n").as_bytes())
                .await
                .is_err()
            {
                self.back_off();
                return Ok(false);
            }
            self.replaying = true;
        } else if flush_pending(&mut l, &mut self.pending, &mut self.in_flight)
            .await
            .is_err()
        {
            self.lost().await?;
            self.back_off();
            return Ok(false);
        }
        self.link = Some(l);
        Ok(true)
    }

    /// Requests that waited too long for a daemon get an error instead of hanging the client.
    async fn expire_pending(&mut self) -> std::io::Result<()> {
        let now = Instant::now();
        let mut kept = Vec::new();
        for (line, since) in std::mem::take(&mut self.pending) {
            if now.duration_since(since) < UNAVAILABLE_AFTER {
                kept.push((line, since));
            } else if let Some(id) = serde_json::from_str::<Value>(&line)
                .ok()
                .as_ref()
                .and_then(request_id)
            {
                let reply = error_reply(
                    &id,
                    "televibe daemon unavailable: is `televibe serve` running?",
                );
                self.output
                    .write_all(format!("{reply}\n").as_bytes())
                    .await?;
                self.output.flush().await?;
            }
        }
        self.pending = kept;
        Ok(())
    }

    /// A line from the client (`None`: it hung up): remembered if it initializes, queued, and sent unless
    /// the daemon is away or `initialize` is being replayed.
    async fn client_line(&mut self, line: Option<String>) -> std::io::Result<()> {
        let Some(line) = line else {
            self.client_open = false;
            return Ok(());
        };
        if line.trim().is_empty() {
            return Ok(());
        }
        let parsed: Option<Value> = serde_json::from_str(&line).ok();
        if let Some(msg) = &parsed {
            match msg.get("method").and_then(Value::as_str) {
                Some("initialize") => self.initialize = Some(msg.clone()),
                Some("notifications/initialized") => self.initialized = Some(line.clone()),
                _ => {}
            }
        }
        self.pending.push((line, Instant::now()));
        if let Some(l) = self.link.as_mut()
            && !self.replaying
            && flush_pending(l, &mut self.pending, &mut self.in_flight)
                .await
                .is_err()
        {
            self.lost().await?;
            self.next_attempt = Instant::now();
        }
        Ok(())
    }

    /// A line from the daemon: the answer to the replayed `initialize` is swallowed (then what waited is
    /// sent), anything else goes to the client. An error or end of stream is a lost link.
    async fn daemon_line(&mut self, line: std::io::Result<Option<String>>) -> std::io::Result<()> {
        let Ok(Some(line)) = line else {
            self.lost().await?;
            self.back_off();
            return Ok(());
        };
        // The daemon answers: it is back for real.
        self.backoff = Duration::from_millis(50);
        let parsed: Option<Value> = serde_json::from_str(&line).ok();
        let id = parsed.as_ref().and_then(|m| m.get("id")).cloned();
        if self.replaying && id == Some(json!(REPLAY_ID)) {
            self.replaying = false;
            let l = self.link.as_mut().expect("link present");
            let mut ok = true;
            if let Some(n) = &self.initialized {
                ok = l
                    .writer
                    .write_all(format!("{n}\n").as_bytes())
                    .await
                    .is_ok();
            }
            if !ok
                || flush_pending(l, &mut self.pending, &mut self.in_flight)
                    .await
                    .is_err()
            {
                self.lost().await?;
                self.next_attempt = Instant::now();
            }
            return Ok(());
        }
        if let Some(id) = &id
            && parsed.as_ref().is_some_and(|m| m.get("method").is_none())
        {
            self.in_flight.remove(&id.to_string());
        }
        self.output
            .write_all(format!("{line}\n").as_bytes())
            .await?;
        self.output.flush().await
    }

    /// The daemon connection dropped: answer what was in flight, forget the link.
    async fn lost(&mut self) -> std::io::Result<()> {
        self.link = None;
        for id in self.in_flight.drain() {
            let id: Value = serde_json::from_str(&id).unwrap_or(Value::Null);
            self.output
                .write_all(format!("{}\n", error_reply(&id, "televibe daemon connection lost before the answer; the request may not have completed, retry it")).as_bytes())
                .await?;
        }
        self.output.flush().await
    }
}

async fn next_daemon_line(link: &mut Option<Link>) -> std::io::Result<Option<String>> {
    match link.as_mut() {
        Some(l) => l.lines.next_line().await,
        None => std::future::pending().await,
    }
}

/// Sends the queued client lines; requests among them become in flight.
async fn flush_pending(
    l: &mut Link,
    pending: &mut Vec<(String, Instant)>,
    in_flight: &mut HashSet<String>,
) -> std::io::Result<()> {
    while !pending.is_empty() {
        let (line, _) = &pending[0];
        if let Some(id) = serde_json::from_str::<Value>(line)
            .ok()
            .as_ref()
            .and_then(request_id)
        {
            in_flight.insert(id.to_string());
        }
        l.writer.write_all(format!("{line}\n").as_bytes()).await?;
        pending.remove(0);
    }
    l.writer.flush().await
}
