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
    mut output: W,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let (tx, mut from_client) = mpsc::channel::<String>(256);
    tokio::spawn(async move {
        let mut lines = BufReader::new(input).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).await.is_err() {
                break;
            }
        }
    });
    let mut initialize: Option<Value> = None;
    let mut initialized: Option<String> = None;
    let mut in_flight: HashSet<String> = HashSet::new();
    let mut pending: Vec<(String, Instant)> = Vec::new();
    let mut link: Option<Link> = None;
    let mut backoff = Duration::from_millis(50);
    let mut next_attempt = Instant::now();
    let mut client_open = true;
    let mut replaying = false;

    loop {
        // The client hung up: leave once nothing it asked for is still owed an answer.
        if !client_open && pending.is_empty() && in_flight.is_empty() {
            return Ok(());
        }
        if link.is_none() && Instant::now() >= next_attempt {
            match connect(&socket, preamble.as_deref()).await {
                Ok(mut l) => {
                    if let Some(init) = &initialize {
                        let mut replay = init.clone();
                        replay["id"] = json!(REPLAY_ID);
                        // A daemon that drops us right away is just not back yet.
                        if l.writer
                            .write_all(format!("{replay}\n").as_bytes())
                            .await
                            .is_err()
                        {
                            next_attempt = Instant::now() + backoff;
                            backoff = (backoff * 2).min(Duration::from_secs(2));
                            continue;
                        }
                        replaying = true;
                    } else {
                        if flush_pending(&mut l, &mut pending, &mut in_flight)
                            .await
                            .is_err()
                        {
                            lost(&mut link, &mut in_flight, &mut output).await?;
                            next_attempt = Instant::now() + backoff;
                            backoff = (backoff * 2).min(Duration::from_secs(2));
                            continue;
                        }
                    }
                    link = Some(l);
                }
                Err(e) => {
                    if backoff >= Duration::from_secs(1) {
                        tracing::warn!(
                            "daemon socket {} unavailable: {e}; retrying",
                            socket.display()
                        );
                    }
                    next_attempt = Instant::now() + backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        // Requests that waited too long for a daemon get an error instead of hanging the client.
        if link.is_none() {
            let now = Instant::now();
            let mut kept = Vec::new();
            for (line, since) in pending.drain(..) {
                if now.duration_since(since) >= UNAVAILABLE_AFTER {
                    if let Some(id) = serde_json::from_str::<Value>(&line)
                        .ok()
                        .as_ref()
                        .and_then(request_id)
                    {
                        output
                            .write_all(
                                format!(
                                    "{}\n",
                                    error_reply(
                                        &id,
                                        "televibe daemon unavailable: is `televibe serve` running?"
                                    )
                                )
                                .as_bytes(),
                            )
                            .await?;
                        output.flush().await?;
                    }
                } else {
                    kept.push((line, since));
                }
            }
            pending = kept;
        }
        let wait = if link.is_none() {
            next_attempt
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(10))
        } else {
            Duration::from_secs(3600)
        };
        tokio::select! {
            line = from_client.recv(), if client_open => {
                let Some(line) = line else {
                    client_open = false;
                    continue;
                };
                if line.trim().is_empty() { continue; }
                let parsed: Option<Value> = serde_json::from_str(&line).ok();
                if let Some(msg) = &parsed {
                    match msg.get("method").and_then(Value::as_str) {
                        Some("initialize") => initialize = Some(msg.clone()),
                        Some("notifications/initialized") => initialized = Some(line.clone()),
                        _ => {}
                    }
                }
                pending.push((line, Instant::now()));
                if let Some(l) = link.as_mut() && !replaying
                    && flush_pending(l, &mut pending, &mut in_flight).await.is_err()
                {
                    lost(&mut link, &mut in_flight, &mut output).await?;
                    next_attempt = Instant::now();
                }
            }
            line = next_daemon_line(&mut link), if link.is_some() => {
                match line {
                    Ok(Some(line)) => {
                        // The daemon answers: it is back for real.
                        backoff = Duration::from_millis(50);
                        let parsed: Option<Value> = serde_json::from_str(&line).ok();
                        let id = parsed.as_ref().and_then(|m| m.get("id")).cloned();
                        if replaying && id == Some(json!(REPLAY_ID)) {
                            replaying = false;
                            let l = link.as_mut().expect("link present");
                            let mut ok = true;
                            if let Some(n) = &initialized {
                                ok = l.writer.write_all(format!("{n}\n").as_bytes()).await.is_ok();
                            }
                            if !ok || flush_pending(l, &mut pending, &mut in_flight).await.is_err() {
                                lost(&mut link, &mut in_flight, &mut output).await?;
                                next_attempt = Instant::now();
                            }
                            continue;
                        }
                        if let Some(id) = &id && parsed.as_ref().is_some_and(|m| m.get("method").is_none()) {
                            in_flight.remove(&id.to_string());
                        }
                        output.write_all(format!("{line}\n").as_bytes()).await?;
                        output.flush().await?;
                    }
                    _ => {
                        lost(&mut link, &mut in_flight, &mut output).await?;
                        next_attempt = Instant::now() + backoff;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
            _ = tokio::time::sleep(wait) => {}
        }
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

/// The daemon connection dropped: answer what was in flight, forget the link.
async fn lost<W: AsyncWrite + Unpin>(
    link: &mut Option<Link>,
    in_flight: &mut HashSet<String>,
    output: &mut W,
) -> std::io::Result<()> {
    *link = None;
    for id in in_flight.drain() {
        let id: Value = serde_json::from_str(&id).unwrap_or(Value::Null);
        output
            .write_all(format!("{}\n", error_reply(&id, "televibe daemon connection lost before the answer; the request may not have completed, retry it")).as_bytes())
            .await?;
    }
    output.flush().await
}
