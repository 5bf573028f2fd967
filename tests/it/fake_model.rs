//! A loopback fake of the Anthropic Messages API, scripted per test, speaking SSE like the real one: text and
//! tool-use blocks (several in one message), error answers with the real headers (`request-id`,
//! `x-should-retry`, `retry-after`, `anthropic-ratelimit-*`), an `event: error` in the middle of a stream, a
//! stall before the headers (the connection stays open and nothing is sent) and a stall in the middle of a
//! stream (some text, then only `ping` events, as the real API sends them while a message is on its way).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// What the fake answers to one streaming request.
#[derive(Debug, Clone)]
pub enum Reply {
    ToolUse {
        name: String,
        input: Value,
    },
    Text(String),
    Error {
        status: u16,
        kind: String,
        message: String,
    },
    /// Several content blocks in one message (each a `Text` or a `ToolUse`).
    Blocks(Vec<Reply>),
    /// The stream starts with `text`, then an `event: error` of `kind` ends it.
    StreamError {
        text: String,
        kind: String,
    },
    /// A 429 of a spent usage limit until `resets_at` (Unix seconds), as the real API sends it: the unified
    /// rate-limit headers (which Claude Code reads for a subscriber's login) and `retry-after`.
    UsageLimited {
        resets_at: i64,
    },
    /// Nothing is ever sent; the connection stays open until the client gives up.
    Stall,
    /// The stream starts (`message_start`, a text block with `text`), then only a `ping` event every
    /// `PING_EVERY`, forever: the model stalls mid-stream while the connection looks alive.
    StallMidStream {
        text: String,
    },
}

/// How often a stream stalled mid-way sends `event: ping`.
pub const PING_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

impl Reply {
    pub fn error(status: u16, kind: &str, message: &str) -> Reply {
        Reply::Error {
            status,
            kind: kind.into(),
            message: message.into(),
        }
    }
}

type Script = Arc<dyn Fn(&Value) -> Reply + Send + Sync>;

pub struct FakeModel {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Value>>>,
    keys: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether the request's last message carries a tool result (the tool ran; the model should finish).
pub fn after_tool(req: &Value) -> bool {
    req["messages"]
        .as_array()
        .and_then(|m| m.last())
        .is_some_and(|m| {
            m["content"]
                .as_array()
                .is_some_and(|c| c.iter().any(|b| b["type"] == "tool_result"))
        })
}

/// The text of the request's last message: the newest instruction (a resumed conversation repeats the
/// earlier ones).
pub fn last_text_of(req: &Value) -> String {
    req["messages"]
        .as_array()
        .and_then(|m| m.last())
        .map(|m| m["content"].to_string())
        .unwrap_or_default()
}

/// All text of the request's messages, for matching on instructions.
pub fn text_of(req: &Value) -> String {
    req["messages"].to_string()
}

impl FakeModel {
    pub async fn start(script: impl Fn(&Value) -> Reply + Send + Sync + 'static) -> FakeModel {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let keys = Arc::new(Mutex::new(Vec::new()));
        let script: Script = Arc::new(script);
        let reqs = (requests.clone(), keys.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (script, reqs) = (script.clone(), reqs.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(req, script.clone(), reqs.clone()));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FakeModel {
            addr,
            requests,
            keys,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }

    /// The credential each Messages request carried (`x-api-key`, else `authorization`).
    pub fn keys(&self) -> Vec<String> {
        self.keys.lock().unwrap().clone()
    }
}

type Seen = (Arc<Mutex<Vec<Value>>>, Arc<Mutex<Vec<String>>>);

async fn handle(
    req: Request<Incoming>,
    script: Script,
    (reqs, keys): Seen,
) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
    let path = req.uri().path().to_string();
    let key = ["x-api-key", "authorization"]
        .iter()
        .find_map(|h| req.headers().get(*h))
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let json_body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if path.ends_with("/count_tokens") {
        return Ok(json_response(200, json!({"input_tokens": 10})).map(|b| b.boxed()));
    }
    if !path.starts_with("/v1/messages") {
        return Ok(json_response(
            404,
            json!({"type": "error", "error": {"type": "not_found_error", "message": "not found"}}),
        )
        .map(|b| b.boxed()));
    }
    reqs.lock().unwrap().push(json_body.clone());
    keys.lock().unwrap().push(key);
    let reply = script(&json_body);
    if let Reply::Stall = reply {
        // The answer never comes; hyper drops this future when the client closes the connection.
        std::future::pending::<()>().await;
    }
    if let Reply::StallMidStream { text } = &reply {
        let (mut tx, body) = http_body_util::channel::Channel::<Bytes, Infallible>::new(4);
        let mut start = String::new();
        message_start(&mut start);
        event(
            &mut start,
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        );
        event(
            &mut start,
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
        );
        tokio::spawn(async move {
            if tx.send_data(Bytes::from(start)).await.is_err() {
                return;
            }
            // Pings until the client gives up and closes the connection.
            loop {
                tokio::time::sleep(PING_EVERY).await;
                let mut ping = String::new();
                event(&mut ping, "ping", json!({"type": "ping"}));
                if tx.send_data(Bytes::from(ping)).await.is_err() {
                    return;
                }
            }
        });
        return Ok(Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .header("request-id", "req_fake")
            .body(body.boxed())
            .unwrap());
    }
    if let Reply::UsageLimited { resets_at } = &reply {
        let mut r = json_response(
            429,
            json!({"type": "error", "error": {"type": "rate_limit_error",
                   "message": "This request would exceed your account's rate limit. Please try again later."}}),
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let (reset, week) = (resets_at.to_string(), (resets_at + 259_200).to_string());
        let h = r.headers_mut();
        for (k, v) in [
            ("anthropic-ratelimit-unified-status", "rejected"),
            ("anthropic-ratelimit-unified-reset", reset.as_str()),
            (
                "anthropic-ratelimit-unified-representative-claim",
                "five_hour",
            ),
            ("anthropic-ratelimit-unified-5h-status", "rejected"),
            ("anthropic-ratelimit-unified-5h-reset", reset.as_str()),
            ("anthropic-ratelimit-unified-5h-utilization", "1.0"),
            ("anthropic-ratelimit-unified-7d-status", "allowed"),
            ("anthropic-ratelimit-unified-7d-reset", week.as_str()),
            ("anthropic-ratelimit-unified-7d-utilization", "0.5"),
            ("anthropic-ratelimit-unified-fallback", "available"),
            ("anthropic-ratelimit-unified-overage-status", "rejected"),
            (
                "anthropic-ratelimit-unified-overage-disabled-reason",
                "org_level_disabled",
            ),
        ] {
            h.insert(k, v.parse().unwrap());
        }
        h.insert(
            "retry-after",
            (resets_at - now).max(1).to_string().parse().unwrap(),
        );
        return Ok(r.map(|b| b.boxed()));
    }
    if let Reply::Error {
        status,
        kind,
        message,
    } = &reply
    {
        let mut r = json_response(
            *status,
            json!({"type": "error", "error": {"type": kind, "message": message}}),
        );
        let h = r.headers_mut();
        // As the API sends them: whether a retry may help, and when to come back.
        let retry = matches!(*status, 408 | 409 | 429 | 500..=599);
        h.insert(
            "x-should-retry",
            if retry { "true" } else { "false" }.parse().unwrap(),
        );
        if *status == 429 {
            h.insert("retry-after", "1".parse().unwrap());
            for (k, v) in [
                ("anthropic-ratelimit-requests-limit", "50"),
                ("anthropic-ratelimit-requests-remaining", "0"),
                ("anthropic-ratelimit-requests-reset", "2026-01-01T00:00:01Z"),
                ("anthropic-ratelimit-tokens-limit", "40000"),
                ("anthropic-ratelimit-tokens-remaining", "0"),
            ] {
                h.insert(k, v.parse().unwrap());
            }
        }
        return Ok(r.map(|b| b.boxed()));
    }
    if json_body["stream"] != true {
        let text = match &reply {
            Reply::Text(t) => t.clone(),
            _ => "ok".into(),
        };
        return Ok(json_response(
            200,
            json!({"id": "msg_fake", "type": "message", "role": "assistant", "model": "claude-test",
                   "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": null,
                   "usage": {"input_tokens": 10, "output_tokens": 5}}),
        )
        .map(|b| b.boxed()));
    }
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Full::new(Bytes::from(sse(&reply))).boxed())
        .unwrap())
}

fn json_response(status: u16, v: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("request-id", "req_fake")
        .body(Full::new(Bytes::from(v.to_string())))
        .unwrap()
}

fn event(out: &mut String, name: &str, data: Value) {
    out.push_str(&format!("event: {name}\ndata: {data}\n\n"));
}

/// One content block at `index`; returns whether it was a tool use.
fn block(out: &mut String, index: usize, reply: &Reply) -> bool {
    let tool = match reply {
        Reply::ToolUse { name, input } => {
            event(
                out,
                "content_block_start",
                json!({"type": "content_block_start", "index": index,
                "content_block": {"type": "tool_use", "id": format!("toolu_{}", uuid::Uuid::new_v4().simple()), "name": name, "input": {}}}),
            );
            event(
                out,
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "input_json_delta", "partial_json": input.to_string()}}),
            );
            true
        }
        Reply::Text(t) => {
            event(
                out,
                "content_block_start",
                json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
            );
            event(
                out,
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": t}}),
            );
            false
        }
        other => unreachable!("not a content block: {other:?}"),
    };
    event(
        out,
        "content_block_stop",
        json!({"type": "content_block_stop", "index": index}),
    );
    tool
}

/// `message_start` and the `ping` the API sends right after it.
fn message_start(out: &mut String) {
    event(
        out,
        "message_start",
        json!({"type": "message_start", "message": {"id": format!("msg_{}", uuid::Uuid::new_v4().simple()), "type": "message", "role": "assistant",
            "model": "claude-test", "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 10, "output_tokens": 1}}}),
    );
    event(out, "ping", json!({"type": "ping"}));
}

fn sse(reply: &Reply) -> String {
    let mut out = String::new();
    message_start(&mut out);
    let blocks: Vec<&Reply> = match reply {
        Reply::Blocks(b) => b.iter().collect(),
        Reply::StreamError { text, kind } => {
            event(
                &mut out,
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            );
            event(
                &mut out,
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
            );
            event(
                &mut out,
                "error",
                json!({"type": "error", "error": {"type": kind, "message": "Overloaded"}}),
            );
            return out;
        }
        other => vec![other],
    };
    let mut tool = false;
    for (i, b) in blocks.iter().enumerate() {
        tool |= block(&mut out, i, b);
    }
    let stop = if tool { "tool_use" } else { "end_turn" };
    event(
        &mut out,
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": 12}}),
    );
    event(&mut out, "message_stop", json!({"type": "message_stop"}));
    out
}
