//! A loopback fake of the OpenAI Responses API (`POST /v1/responses`, `stream: true`), scripted per test,
//! speaking server-sent events as the real one does and as the OpenAI Codex CLI 0.169.0 parses them:
//! `response.created`, `response.output_item.added`, `response.output_text.delta` (or the function call's
//! arguments, or the custom tool call's input), `response.output_item.done`, `response.completed` with the
//! response's `id` and `usage`. Besides: HTTP error answers with any headers (`retry-after`, the
//! `x-codex-*` rate-limit headers Codex reads), a `response.failed` in the middle of a stream, and a stall
//! before the headers (the connection stays open and nothing is sent).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// What the fake answers to one `POST /v1/responses`.
#[derive(Debug, Clone)]
pub enum Reply {
    /// An assistant message.
    Text(String),
    /// A function call (`type: "function_call"`), e.g. Codex's shell tool `exec_command` with
    /// `{"cmd": "..."}`; `arguments` goes out as a JSON string, as the API sends it.
    Call { name: String, arguments: Value },
    /// An `apply_patch` call: in Codex 0.169.0 a freeform tool (`type: "custom_tool_call"`) whose `input` is
    /// the patch text itself (`*** Begin Patch` … `*** End Patch`).
    Patch(String),
    /// Several output items in one response (each a `Text`, `Call` or `Patch`).
    Items(Vec<Reply>),
    /// An HTTP error answer with a JSON body (OpenAI's is `{"error": {"type", "code", "message", "param"}}`).
    Error { status: u16, body: Value },
    /// `reply`, with these extra response headers (e.g. `retry-after`, `x-codex-primary-used-percent`).
    WithHeaders {
        headers: Vec<(String, String)>,
        reply: Box<Reply>,
    },
    /// The stream starts with an assistant message's `text`, then `response.failed` (code `server_error`)
    /// ends it without `response.completed`; Codex treats it as a retryable stream error.
    StreamError { text: String },
    /// Nothing is ever sent; the connection stays open until the client gives up.
    Stall,
}

impl Reply {
    pub fn text(text: &str) -> Reply {
        Reply::Text(text.into())
    }

    /// Codex's shell tool: `exec_command {"cmd": cmd}`.
    pub fn exec(cmd: &str) -> Reply {
        Reply::Call {
            name: "exec_command".into(),
            arguments: json!({ "cmd": cmd }),
        }
    }

    /// `exec_command` asking to run outside the sandbox (`sandbox_permissions: "require_escalated"`).
    pub fn exec_escalated(cmd: &str, justification: &str) -> Reply {
        Reply::Call {
            name: "exec_command".into(),
            arguments: json!({
                "cmd": cmd,
                "sandbox_permissions": "require_escalated",
                "justification": justification,
            }),
        }
    }

    /// An `apply_patch` that adds the file `path` (relative to the thread's cwd) holding `content`.
    pub fn add_file(path: &str, content: &str) -> Reply {
        Reply::Patch(add_file_patch(path, content))
    }

    /// An HTTP error with OpenAI's error body: `{"error": {"type", "code", "message", "param": null}}`.
    pub fn error(status: u16, code: &str, message: &str) -> Reply {
        let kind = match status {
            400 | 404 | 422 => "invalid_request_error",
            401 | 403 => "authentication_error",
            429 => "requests",
            _ => "server_error",
        };
        Reply::Error {
            status,
            body: json!({"error": {"type": kind, "code": code, "message": message, "param": null}}),
        }
    }

    /// A 429 `rate_limit_exceeded` with `retry-after: <retry_after>` (seconds) and the Codex rate-limit
    /// headers of a full primary window.
    pub fn rate_limited(retry_after: u64) -> Reply {
        let mut headers = vec![("retry-after".to_string(), retry_after.to_string())];
        headers.extend(codex_rate_limit_headers(100.0, 300, unix_in(retry_after)));
        Reply::error(
            429,
            "rate_limit_exceeded",
            &format!("Rate limit reached for gpt-5.5. Please try again in {retry_after}s."),
        )
        .with_headers(headers)
    }

    /// A 429 `usage_limit_reached` (the ChatGPT plan's usage is spent until `resets_at`, Unix seconds):
    /// Codex does not retry it and reports the rate-limit headers it carries.
    pub fn usage_limit_reached(resets_at: i64) -> Reply {
        Reply::Error {
            status: 429,
            body: json!({"error": {"type": "usage_limit_reached", "message": "The usage limit has been reached",
                                   "plan_type": "plus", "resets_at": resets_at}}),
        }
        .with_headers(codex_rate_limit_headers(100.0, 300, resets_at))
    }

    pub fn with_headers(self, headers: Vec<(String, String)>) -> Reply {
        Reply::WithHeaders {
            headers,
            reply: Box::new(self),
        }
    }
}

/// The Codex rate-limit headers of the primary window (Codex 0.169.0 reads `x-codex-primary-used-percent`,
/// `x-codex-primary-window-minutes`, `x-codex-primary-reset-at` (Unix seconds); the same with `secondary`;
/// `x-codex-active-limit` names the family a 429 refers to).
pub fn codex_rate_limit_headers(
    used_percent: f64,
    window_minutes: i64,
    reset_at: i64,
) -> Vec<(String, String)> {
    vec![
        (
            "x-codex-primary-used-percent".into(),
            used_percent.to_string(),
        ),
        (
            "x-codex-primary-window-minutes".into(),
            window_minutes.to_string(),
        ),
        ("x-codex-primary-reset-at".into(), reset_at.to_string()),
    ]
}

/// Unix seconds `after_secs` from now.
fn unix_in(after_secs: u64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    (now + after_secs) as i64
}

/// The `apply_patch` text that adds the file `path` holding `content` (each line prefixed with `+`).
pub fn add_file_patch(path: &str, content: &str) -> String {
    let mut patch = format!("*** Begin Patch\n*** Add File: {path}\n");
    for line in content.lines() {
        patch.push('+');
        patch.push_str(line);
        patch.push('\n');
    }
    patch.push_str("*** End Patch\n");
    patch
}

/// The usage every completed response reports (`response.completed`'s `response.usage`).
pub const INPUT_TOKENS: u64 = 10;
pub const CACHED_TOKENS: u64 = 0;
pub const OUTPUT_TOKENS: u64 = 5;
pub const REASONING_TOKENS: u64 = 0;

type Script = Arc<dyn Fn(&Value) -> Reply + Send + Sync>;

/// What the fake saw: every request's method and path; the Responses requests' bodies and credentials.
#[derive(Default)]
struct Seen {
    paths: Vec<String>,
    requests: Vec<Value>,
    auths: Vec<String>,
}

pub struct FakeOpenAi {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The request's input items.
fn input(req: &Value) -> &[Value] {
    req["input"].as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// Whether the request's last input item is a tool result (`function_call_output` or
/// `custom_tool_call_output`): the tool ran (or was refused) and the model should go on.
pub fn after_tool(req: &Value) -> bool {
    input(req).last().is_some_and(|i| {
        i["type"] == "function_call_output" || i["type"] == "custom_tool_call_output"
    })
}

/// The output of the request's last tool result (empty when the last item is not one).
pub fn tool_output(req: &Value) -> String {
    input(req)
        .last()
        .filter(|_| after_tool(req))
        .map(|i| match &i["output"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .unwrap_or_default()
}

/// The text of the request's last user message: the newest instruction (Codex also sends its environment
/// context as a user message, before the instruction; a resumed thread repeats the earlier turns).
pub fn last_user_text(req: &Value) -> String {
    input(req)
        .iter()
        .rev()
        .find(|i| {
            i["type"] == "message"
                && i["role"] == "user"
                && !message_text(i).starts_with("<environment_context>")
        })
        .map(message_text)
        .unwrap_or_default()
}

fn message_text(item: &Value) -> String {
    item["content"]
        .as_array()
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join("")
        })
        .unwrap_or_default()
}

/// All of the request's input, for matching on instructions.
pub fn text_of(req: &Value) -> String {
    req["input"].to_string()
}

impl FakeOpenAi {
    pub async fn start(script: impl Fn(&Value) -> Reply + Send + Sync + 'static) -> FakeOpenAi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let script: Script = Arc::new(script);
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (script, seen) = (script.clone(), seen2.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(req, script.clone(), seen.clone()));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FakeOpenAi { addr, seen, task }
    }

    /// The base URL a provider points at (`model_providers.<id>.base_url`): `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The bodies of the `POST /v1/responses` requests, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.seen.lock().unwrap().requests.clone()
    }

    /// The `authorization` header of each `POST /v1/responses` request (`Bearer <key>`; empty when absent).
    pub fn auths(&self) -> Vec<String> {
        self.seen.lock().unwrap().auths.clone()
    }

    /// Every request seen, as `METHOD /path`, including those the fake answers 404.
    pub fn paths(&self) -> Vec<String> {
        self.seen.lock().unwrap().paths.clone()
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn handle(
    req: Request<Incoming>,
    script: Script,
    seen: Arc<Mutex<Seen>>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let auth = req
        .headers()
        .get("authorization")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let json_body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    seen.lock().unwrap().paths.push(format!("{method} {path}"));
    if method != "POST" || path != "/v1/responses" {
        return Ok(json_response(
            404,
            &json!({"error": {"type": "invalid_request_error", "code": "not_found",
                              "message": format!("Invalid URL ({method} {path})"), "param": null}}),
        ));
    }
    {
        let mut s = seen.lock().unwrap();
        s.requests.push(json_body.clone());
        s.auths.push(auth);
    }
    let model = json_body["model"].as_str().unwrap_or("gpt-5.5").to_string();
    Ok(respond(script(&json_body), &model).await)
}

/// The answer to one Responses request, `WithHeaders` layers applied outermost last.
async fn respond(reply: Reply, model: &str) -> Response<Body> {
    let mut extra = Vec::new();
    let mut reply = reply;
    while let Reply::WithHeaders {
        headers,
        reply: inner,
    } = reply
    {
        extra.extend(headers);
        reply = *inner;
    }
    let mut response = match reply {
        Reply::Stall => {
            // The answer never comes; hyper drops this future when the client closes the connection.
            return std::future::pending().await;
        }
        Reply::Error { status, body } => json_response(status, &body),
        other => Response::builder()
            .status(200)
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .header("x-request-id", format!("req_{}", id()))
            .body(Full::new(Bytes::from(sse(&other, model))).boxed())
            .unwrap(),
    };
    for (k, v) in extra {
        response.headers_mut().insert(
            hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    response
}

fn json_response(status: u16, v: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-request-id", format!("req_{}", id()))
        .body(Full::new(Bytes::from(v.to_string())).boxed())
        .unwrap()
}

fn id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..20].to_string()
}

/// Server-sent events, numbered as the API numbers them (`sequence_number`).
struct Events {
    out: String,
    seq: u64,
}

impl Events {
    fn event(&mut self, kind: &str, mut data: Value) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        self.out
            .push_str(&format!("event: {kind}\ndata: {data}\n\n"));
    }
}

/// The `response` object of `response.created` / `.completed` / `.failed`.
fn response_object(id: &str, model: &str, status: &str, output: &[Value]) -> Value {
    let created_at = unix_in(0);
    json!({"id": id, "object": "response", "created_at": created_at, "status": status, "error": null,
           "incomplete_details": null, "model": model, "output": output, "parallel_tool_calls": true,
           "tool_choice": "auto", "tools": [], "usage": null})
}

/// One output item at `index`: its `added`, its deltas, its `done`; returns the finished item.
fn item(ev: &mut Events, index: usize, reply: &Reply) -> Value {
    match reply {
        Reply::Text(text) => {
            let item_id = format!("msg_{}", id());
            ev.event(
                "response.output_item.added",
                json!({"output_index": index, "item": {"id": item_id, "type": "message", "status": "in_progress",
                       "role": "assistant", "content": []}}),
            );
            ev.event(
                "response.content_part.added",
                json!({"item_id": item_id, "output_index": index, "content_index": 0,
                       "part": {"type": "output_text", "text": "", "annotations": []}}),
            );
            ev.event(
                "response.output_text.delta",
                json!({"item_id": item_id, "output_index": index, "content_index": 0, "delta": text, "logprobs": []}),
            );
            ev.event(
                "response.output_text.done",
                json!({"item_id": item_id, "output_index": index, "content_index": 0, "text": text, "logprobs": []}),
            );
            let part = json!({"type": "output_text", "text": text, "annotations": []});
            ev.event(
                "response.content_part.done",
                json!({"item_id": item_id, "output_index": index, "content_index": 0, "part": part}),
            );
            let done = json!({"id": item_id, "type": "message", "status": "completed", "role": "assistant",
                              "content": [part]});
            ev.event(
                "response.output_item.done",
                json!({"output_index": index, "item": done}),
            );
            done
        }
        Reply::Call { name, arguments } => {
            let (item_id, call_id) = (format!("fc_{}", id()), format!("call_{}", id()));
            let arguments = arguments.to_string();
            ev.event(
                "response.output_item.added",
                json!({"output_index": index, "item": {"id": item_id, "type": "function_call", "status": "in_progress",
                       "name": name, "call_id": call_id, "arguments": ""}}),
            );
            ev.event(
                "response.function_call_arguments.delta",
                json!({"item_id": item_id, "output_index": index, "delta": arguments}),
            );
            ev.event(
                "response.function_call_arguments.done",
                json!({"item_id": item_id, "output_index": index, "arguments": arguments}),
            );
            let done = json!({"id": item_id, "type": "function_call", "status": "completed", "name": name,
                              "call_id": call_id, "arguments": arguments});
            ev.event(
                "response.output_item.done",
                json!({"output_index": index, "item": done}),
            );
            done
        }
        Reply::Patch(patch) => {
            let (item_id, call_id) = (format!("ctc_{}", id()), format!("call_{}", id()));
            ev.event(
                "response.output_item.added",
                json!({"output_index": index, "item": {"id": item_id, "type": "custom_tool_call", "status": "in_progress",
                       "name": "apply_patch", "call_id": call_id, "input": ""}}),
            );
            ev.event(
                "response.custom_tool_call_input.delta",
                json!({"item_id": item_id, "output_index": index, "delta": patch}),
            );
            ev.event(
                "response.custom_tool_call_input.done",
                json!({"item_id": item_id, "output_index": index, "input": patch}),
            );
            let done = json!({"id": item_id, "type": "custom_tool_call", "status": "completed",
                              "name": "apply_patch", "call_id": call_id, "input": patch});
            ev.event(
                "response.output_item.done",
                json!({"output_index": index, "item": done}),
            );
            done
        }
        other => unreachable!("not an output item: {other:?}"),
    }
}

fn sse(reply: &Reply, model: &str) -> String {
    let mut ev = Events {
        out: String::new(),
        seq: 0,
    };
    let resp_id = format!("resp_{}", id());
    ev.event(
        "response.created",
        json!({"response": response_object(&resp_id, model, "in_progress", &[])}),
    );
    ev.event(
        "response.in_progress",
        json!({"response": response_object(&resp_id, model, "in_progress", &[])}),
    );
    let items: Vec<&Reply> = match reply {
        Reply::Items(items) => items.iter().collect(),
        Reply::StreamError { text } => {
            let item_id = format!("msg_{}", id());
            ev.event(
                "response.output_item.added",
                json!({"output_index": 0, "item": {"id": item_id, "type": "message", "status": "in_progress",
                       "role": "assistant", "content": []}}),
            );
            ev.event(
                "response.output_text.delta",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0, "delta": text, "logprobs": []}),
            );
            let mut failed = response_object(&resp_id, model, "failed", &[]);
            failed["error"] = json!({"code": "server_error",
                "message": "An error occurred while processing your request. Please include the request ID in your message."});
            ev.event("response.failed", json!({ "response": failed }));
            return ev.out;
        }
        other => vec![other],
    };
    let output: Vec<Value> = items
        .iter()
        .enumerate()
        .map(|(i, r)| item(&mut ev, i, r))
        .collect();
    let mut completed = response_object(&resp_id, model, "completed", &output);
    completed["usage"] = json!({
        "input_tokens": INPUT_TOKENS,
        "input_tokens_details": {"cached_tokens": CACHED_TOKENS},
        "output_tokens": OUTPUT_TOKENS,
        "output_tokens_details": {"reasoning_tokens": REASONING_TOKENS},
        "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS,
    });
    ev.event("response.completed", json!({ "response": completed }));
    ev.out
}
