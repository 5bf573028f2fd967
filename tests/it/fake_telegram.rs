//! A loopback fake of the Telegram Bot API, as strict as Telegram where the bot relies on it: the `{ok, result}`
//! envelope and error strings; getUpdates long polling where an update stays until a later call sends a higher
//! offset, and 409 for a second poller; Telegram's own flood limits (short bursts, then about one message a
//! second per chat with edits counted, 20 a minute per group, 30 a second overall) answered with 429 and
//! `retry_after`; lengths in UTF-16 units after entity parsing; HTML checked in texts and captions; "message is
//! not modified"; deleted messages; 403 for a chat that blocked the bot and 400 for a chat the bot cannot know;
//! replies and button messages that carry the visible text; voice, photo and document messages, `getFile` and file
//! downloads (see `files`). Faults are injected on demand, as unkind as the
//! world: 5xx, 429, slow answers, dropped connections, a call applied whose answer is lost, a connection
//! black-holed, a gateway's HTML 502, and flood limits the test chooses (`set_limits`). It records every call with a timestamp and can inject messages and taps.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

// By path: the examples and drills include this file by path too, and find its part beside it the same way.
#[path = "fake_telegram/files.rs"]
mod files;
pub use files::Served;

pub const TOKEN: &str = "123456:TEST-token";

/// How the next calls of a method fail.
#[derive(Debug, Clone)]
pub enum Fault {
    Status(u16),
    RetryAfter(u64),
    Slow(Duration),
    /// The call takes effect (a message is sent), then the connection closes before the answer: the
    /// commonest real cause of duplicates, since the bot cannot tell it from a call that never arrived.
    AnswerLost,
    /// The connection is accepted and never answered (nothing takes effect); only the client's own
    /// timeout ends the call.
    BlackHole,
    /// The call takes effect, then the answer never comes (the connection stays open): a daemon killed
    /// while it waits never learned the message id.
    ApplyThenHang,
    /// A gateway in front of the Bot API answers 502 with an HTML page instead of JSON.
    Html502,
}

/// Telegram's flood limits as the fake applies them, chosen by the test (never copied from the
/// product's constants): a chat's burst, its sustained rate, a group's minute and the overall second.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub burst: f64,
    pub per_second: f64,
    pub group_per_minute: usize,
    pub global_per_second: usize,
}

impl Default for Limits {
    /// What Telegram documents: short bursts, about one message a second per chat, 20 a minute per group,
    /// 30 a second overall.
    fn default() -> Limits {
        Limits {
            burst: BURST,
            per_second: 1.0,
            group_per_minute: GROUP_PER_MINUTE,
            global_per_second: GLOBAL_PER_SECOND,
        }
    }
}

/// One recorded call.
#[derive(Debug, Clone)]
pub struct Call {
    pub at: Instant,
    pub method: String,
    pub params: Value,
    /// The error code answered, if the call failed.
    pub error: Option<u16>,
    /// The `retry_after` of a 429.
    pub retry_after: Option<u64>,
}

impl Call {
    /// The call's `disable_notification` (a JSON boolean, or the text of a form field), if it has one.
    pub fn disable_notification(&self) -> Option<bool> {
        flag(&self.params, "disable_notification")
    }

    /// Whether the message rings the phone: `Some(true)` when sent with `disable_notification: false`,
    /// `Some(false)` when sent silently, `None` when the call does not say (Telegram then notifies).
    pub fn notifies(&self) -> Option<bool> {
        self.disable_notification().map(|silent| !silent)
    }

    /// The text of a message or the caption of a document.
    pub fn text(&self) -> &str {
        ["text", "caption"]
            .iter()
            .find_map(|k| self.params.get(*k).and_then(Value::as_str))
            .unwrap_or("")
    }

    /// The message this one replies to (`reply_parameters.message_id`).
    pub fn reply_to(&self) -> Option<i64> {
        let p = match self.params.get("reply_parameters")? {
            Value::String(s) => serde_json::from_str(s).ok()?,
            other => other.clone(),
        };
        p.get("message_id").and_then(num)
    }
}

/// A boolean parameter as JSON sends it, or as a form field's text.
fn flag(params: &Value, key: &str) -> Option<bool> {
    match params.get(key)? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[derive(Debug, Clone)]
pub struct Sent {
    pub chat_id: i64,
    pub message_id: i64,
    /// The text as the bot sent it (HTML source).
    pub text: String,
    /// What the user sees: the text after entity parsing.
    pub visible: String,
    pub markup: Value,
    pub edits: u32,
}

/// A chat's flood-limit account: a bucket of short-burst tokens refilled at one a second, and for groups the
/// sends of the last minute.
struct Flood {
    tokens: f64,
    at: Instant,
    minute: VecDeque<Instant>,
}

/// Messages a chat may send in a burst before the one-a-second rate applies.
pub const BURST: f64 = 10.0;
/// Messages a group chat may receive in a minute.
pub const GROUP_PER_MINUTE: usize = 20;
/// Messages the bot may send in a second over all chats.
pub const GLOBAL_PER_SECOND: usize = 30;

#[derive(Default)]
struct State {
    updates: VecDeque<Value>,
    next_update_id: i64,
    next_message_id: i64,
    messages: HashMap<(i64, i64), Sent>,
    documents: Vec<(i64, String, usize, String)>,
    /// Each sent document's name and whole content (files up to [`DOCUMENT_KEPT`] bytes), by chat.
    document_data: Vec<(i64, String, Option<Vec<u8>>)>,
    callbacks: HashMap<String, Instant>,
    answered: Vec<(String, String)>,
    calls: Vec<Call>,
    /// Per method: faults to inject, each for the next call whose text contains its needle (any call: None).
    faults: HashMap<String, VecDeque<(Option<String>, Fault)>>,
    limits: Limits,
    /// Every send and edit takes this long before it is answered (a slow Telegram).
    latency: Duration,
    /// The test chose its own limits: 429s are expected, not a failure of the bot's pacing.
    own_limits: bool,
    poll_generation: u64,
    /// Calls as they arrive (before any answer): method name lowercase, parameters.
    arrivals: Vec<(String, Value)>,
    /// getUpdates calls with at least this offset wait (unanswered, confirming nothing) until released.
    stall_from: Option<i64>,
    /// Chats the bot may write to: those that wrote to it.
    known_chats: HashSet<i64>,
    blocked: HashSet<i64>,
    flood: HashMap<i64, Flood>,
    global: VecDeque<Instant>,
    /// 429s Telegram itself would have answered (not injected faults): (method, chat).
    flood_limited: Vec<(String, i64)>,
    /// Files Telegram holds for the bot, and what was downloaded of them.
    files: Vec<files::FakeFile>,
    served: Served,
}

pub struct FakeTelegram {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    notify: Arc<tokio::sync::Notify>,
    down: Arc<AtomicBool>,
    callback_ids: AtomicU64,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeTelegram {
    fn drop(&mut self) {
        self.task.abort();
        // Every test that used the fake also checks that the bot kept to Telegram's limits on its own.
        if !std::thread::panicking() && !self.state.lock().unwrap().own_limits {
            self.assert_never_flood_limited();
            self.assert_edits_paced();
        }
        if !std::thread::panicking() {
            self.assert_every_send_says_whether_it_notifies();
        }
    }
}

impl FakeTelegram {
    pub async fn start() -> FakeTelegram {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            next_update_id: 1000,
            next_message_id: 1,
            limits: Limits::default(),
            ..Default::default()
        }));
        let notify = Arc::new(tokio::sync::Notify::new());
        let down = Arc::new(AtomicBool::new(false));
        let (st, nt, dn) = (state.clone(), notify.clone(), down.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                if dn.load(Ordering::SeqCst) {
                    // Network loss: the connection is dropped without an answer.
                    drop(stream);
                    continue;
                }
                let (st, nt, dn) = (st.clone(), nt.clone(), dn.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| serve(req, st.clone(), nt.clone(), dn.clone()));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FakeTelegram {
            addr,
            state,
            notify,
            down,
            callback_ids: AtomicU64::new(1),
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Network loss (true) or back (false): while down every connection is dropped.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        // Long polls in progress end as a lost connection would.
        self.notify.notify_waiters();
    }

    pub fn fail_next(&self, method: &str, n: usize, fault: Fault) {
        let mut st = self.state.lock().unwrap();
        let q = st.faults.entry(method.to_lowercase()).or_default();
        for _ in 0..n {
            q.push_back((None, fault.clone()));
        }
    }

    /// Like `fail_next`, for the next `n` calls of `method` whose text (or caption) contains `needle`.
    pub fn fail_next_matching(&self, method: &str, needle: &str, n: usize, fault: Fault) {
        let mut st = self.state.lock().unwrap();
        let q = st.faults.entry(method.to_lowercase()).or_default();
        for _ in 0..n {
            q.push_back((Some(needle.to_string()), fault.clone()));
        }
    }

    /// Every send and edit is answered `latency` later (zero: at once).
    pub fn set_latency(&self, latency: Duration) {
        self.state.lock().unwrap().latency = latency;
    }

    /// Faults not yet met are forgotten: Telegram is well again.
    pub fn clear_faults(&self) {
        self.state.lock().unwrap().faults.clear();
    }

    /// Injected faults not yet met by a call.
    pub fn faults_left(&self) -> usize {
        self.state
            .lock()
            .unwrap()
            .faults
            .values()
            .map(VecDeque::len)
            .sum()
    }

    /// Flood limits chosen by the test (stricter than Telegram's, say): 429s past them are expected, so
    /// the fake no longer asserts that none was earned; the test asserts what it promises instead.
    pub fn set_limits(&self, limits: Limits) {
        let mut st = self.state.lock().unwrap();
        st.limits = limits;
        st.own_limits = true;
        st.flood.clear();
    }

    fn push_update(&self, content: Value) {
        let mut st = self.state.lock().unwrap();
        let id = st.next_update_id;
        st.next_update_id += 1;
        let mut u = content;
        u["update_id"] = json!(id);
        st.updates.push_back(u);
        drop(st);
        self.notify.notify_waiters();
    }

    /// A user writes in their private chat (chat id = user id).
    pub fn send_text(&self, user_id: i64, text: &str) {
        self.send_text_reply(user_id, text, None);
    }

    /// `user_id` writes `text` and waits (at most `limit`) for a reply containing `expect`.
    pub async fn say(&self, user_id: i64, text: &str, expect: &str, limit: Duration) {
        let before = self.messages(user_id).len();
        self.send_text(user_id, text);
        let deadline = Instant::now() + limit;
        while !self
            .messages(user_id)
            .iter()
            .skip(before)
            .any(|m| m.text.contains(expect))
        {
            assert!(
                Instant::now() < deadline,
                "no reply to {text:?} containing {expect:?} within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A user writes in a group chat (`chat_id` negative, type `supergroup`).
    pub fn send_group_text(&self, chat_id: i64, user_id: i64, text: &str) {
        self.send_in_chat(
            json!({"id": chat_id, "type": "supergroup", "title": "Team"}),
            user_id,
            text,
            None,
        );
    }

    pub fn send_text_reply(&self, user_id: i64, text: &str, reply_to: Option<i64>) {
        self.send_in_chat(
            json!({"id": user_id, "type": "private", "first_name": "Tester"}),
            user_id,
            text,
            reply_to,
        );
    }

    fn send_in_chat(&self, chat: Value, user_id: i64, text: &str, reply_to: Option<i64>) {
        let chat_id = chat["id"].as_i64().unwrap_or(user_id);
        let message_id = {
            let mut st = self.state.lock().unwrap();
            st.known_chats.insert(chat_id);
            st.next_message_id += 1;
            st.next_message_id
        };
        let mut msg = json!({
            "message_id": message_id,
            "date": chrono::Utc::now().timestamp(),
            "chat": chat,
            "from": {"id": user_id, "is_bot": false, "first_name": "Tester"},
            "text": text,
        });
        if text.starts_with('/') {
            let len = text.split_whitespace().next().unwrap_or("").len();
            msg["entities"] = json!([{"type": "bot_command", "offset": 0, "length": len}]);
        }
        if let Some(r) = reply_to {
            msg["reply_to_message"] = json!({
                "message_id": r, "date": 0,
                "chat": {"id": user_id, "type": "private", "first_name": "Tester"},
                "from": {"id": 1, "is_bot": true, "first_name": "televibe"},
                "text": self.visible_text(user_id, r).unwrap_or_default(),
            });
        }
        self.push_update(json!({"message": msg}));
    }

    /// A user taps an inline button of a message; returns the callback query id.
    pub fn tap(&self, user_id: i64, chat_id: i64, message_id: i64, data: &str) -> String {
        let id = format!("cbq{}", self.callback_ids.fetch_add(1, Ordering::SeqCst));
        self.state
            .lock()
            .unwrap()
            .callbacks
            .insert(id.clone(), Instant::now());
        self.push_update(json!({"callback_query": {
            "id": id,
            "from": {"id": user_id, "is_bot": false, "first_name": "Tester"},
            "chat_instance": "ci",
            "data": data,
            "message": {
                "message_id": message_id, "date": 0,
                "chat": {"id": chat_id, "type": "private", "first_name": "Tester"},
                "from": {"id": 1, "is_bot": true, "first_name": "televibe"},
                "text": self.visible_text(chat_id, message_id).unwrap_or_default(),
            }
        }}));
        id
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn calls_of(&self, method: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method.eq_ignore_ascii_case(method))
            .collect()
    }

    /// Messages the bot sent to a chat, oldest first, with their current text.
    pub fn messages(&self, chat_id: i64) -> Vec<Sent> {
        let st = self.state.lock().unwrap();
        let mut v: Vec<Sent> = st
            .messages
            .values()
            .filter(|m| m.chat_id == chat_id)
            .cloned()
            .collect();
        v.sort_by_key(|m| m.message_id);
        v
    }

    pub fn message_text(&self, chat_id: i64, message_id: i64) -> Option<String> {
        self.state
            .lock()
            .unwrap()
            .messages
            .get(&(chat_id, message_id))
            .map(|m| m.text.clone())
    }

    pub fn documents(&self, chat_id: i64) -> Vec<(String, usize, String)> {
        self.state
            .lock()
            .unwrap()
            .documents
            .iter()
            .filter(|d| d.0 == chat_id)
            .map(|d| (d.1.clone(), d.2, d.3.clone()))
            .collect()
    }

    /// The documents sent to a chat, oldest first: name and whole content (`None` past [`DOCUMENT_KEPT`]
    /// bytes).
    pub fn document_bytes(&self, chat_id: i64) -> Vec<(String, Option<Vec<u8>>)> {
        self.state
            .lock()
            .unwrap()
            .document_data
            .iter()
            .filter(|d| d.0 == chat_id)
            .map(|d| (d.1.clone(), d.2.clone()))
            .collect()
    }

    /// What the user sees of a message: its text after entity parsing.
    pub fn visible_text(&self, chat_id: i64, message_id: i64) -> Option<String> {
        self.state
            .lock()
            .unwrap()
            .messages
            .get(&(chat_id, message_id))
            .map(|m| m.visible.clone())
    }

    /// The user deletes a message of the bot: editing it fails from now on, as in Telegram.
    pub fn delete_message(&self, chat_id: i64, message_id: i64) {
        self.state
            .lock()
            .unwrap()
            .messages
            .remove(&(chat_id, message_id));
    }

    /// The user blocks the bot: every send to their chat is answered 403.
    pub fn block(&self, chat_id: i64) {
        self.state.lock().unwrap().blocked.insert(chat_id);
    }

    /// The parameters of every call of `method` that arrived so far, answered or not, oldest first.
    pub fn arrived(&self, method: &str) -> Vec<Value> {
        let m = method.to_lowercase();
        self.state
            .lock()
            .unwrap()
            .arrivals
            .iter()
            .filter(|(x, _)| *x == m)
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// Another process polls with the bot's token: the long poll in progress ends with 409, as in Telegram.
    pub fn foreign_poll(&self) {
        self.state.lock().unwrap().poll_generation += 1;
        self.notify.notify_waiters();
    }

    /// The id the next injected update gets.
    pub fn next_update_id(&self) -> i64 {
        self.state.lock().unwrap().next_update_id
    }

    /// getUpdates calls with an offset of at least `offset` get no answer (and confirm nothing) until
    /// `release_polls`: the call that would confirm an update is held, as on a slow network.
    pub fn stall_polls_from(&self, offset: i64) {
        self.state.lock().unwrap().stall_from = Some(offset);
    }

    pub fn release_polls(&self) {
        self.state.lock().unwrap().stall_from = None;
        self.notify.notify_waiters();
    }

    /// The 429s Telegram's own flood limits earned (not injected faults), as (method, chat).
    pub fn flood_limited(&self) -> Vec<(String, i64)> {
        self.state.lock().unwrap().flood_limited.clone()
    }

    /// Progress edits of a message are at least a second apart; only its last edit (a tracker's final
    /// state) may follow the one before it sooner.
    pub fn assert_edits_paced(&self) {
        let mut edits: HashMap<(i64, i64), Vec<Instant>> = HashMap::new();
        for c in self.calls_of("editMessageText") {
            if c.error.is_some() {
                continue;
            }
            let key = (
                c.params.get("chat_id").and_then(num).unwrap_or(0),
                c.params.get("message_id").and_then(num).unwrap_or(0),
            );
            edits.entry(key).or_default().push(c.at);
        }
        for (key, at) in edits {
            let Some((_, progress)) = at.split_last() else {
                continue;
            };
            for pair in progress.windows(2) {
                let gap = pair[1].duration_since(pair[0]);
                assert!(
                    gap >= Duration::from_millis(950),
                    "message {key:?} edited {gap:?} after its previous edit"
                );
            }
        }
    }

    /// Every message and document the bot sends says whether it rings the phone (`disable_notification`):
    /// progress is silent, what needs the person notifies, and nothing is left to Telegram's default.
    pub fn assert_every_send_says_whether_it_notifies(&self) {
        let unsaid: Vec<String> = self
            .calls()
            .into_iter()
            .filter(|c| c.method == "sendmessage" || c.method == "senddocument")
            .filter(|c| c.disable_notification().is_none())
            .map(|c| format!("{} {:?}", c.method, c.text()))
            .collect();
        assert!(
            unsaid.is_empty(),
            "sent without saying whether it notifies: {unsaid:?}"
        );
    }

    /// Normal operation never earns a 429 from Telegram.
    pub fn assert_never_flood_limited(&self) {
        let limited = self.flood_limited();
        assert!(
            limited.is_empty(),
            "Telegram's flood limits were hit: {limited:?}"
        );
    }

    pub fn answered_callbacks(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().answered.clone()
    }

    /// Updates not yet confirmed by an offset.
    pub fn pending_updates(&self) -> usize {
        self.state.lock().unwrap().updates.len()
    }
}

/// A file download, or a method call.
async fn serve(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
    notify: Arc<tokio::sync::Notify>,
    down: Arc<AtomicBool>,
) -> Result<Response<files::Body>, std::io::Error> {
    if files::is_download(req.uri().path()) {
        return files::download(req, state, down).await;
    }
    let resp = handle(req, state, notify, down).await?;
    let (parts, body) = resp.into_parts();
    Ok(Response::from_parts(
        parts,
        body.map_err(|never| match never {}).boxed_unsync(),
    ))
}

fn envelope(result: Value) -> (u16, Value) {
    (200, json!({"ok": true, "result": result}))
}

fn error(code: u16, description: &str) -> (u16, Value) {
    (
        code,
        json!({"ok": false, "error_code": code, "description": description}),
    )
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
    notify: Arc<tokio::sync::Notify>,
    down: Arc<AtomicBool>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    // Network loss also cuts connections kept alive from before: no answer, the connection drops.
    if down.load(Ordering::SeqCst) {
        return Err(std::io::Error::other("network down"));
    }
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let Some(rest) = path.strip_prefix("/bot") else {
        return Ok(reply(error(404, "Not Found")));
    };
    let Some((token, method)) = rest.split_once('/') else {
        return Ok(reply(error(404, "Not Found")));
    };
    if token != TOKEN {
        return Ok(reply(error(401, "Unauthorized: invalid token specified")));
    }
    let method = method.to_lowercase();
    let mut params = parse_params(&content_type, &body, &query);
    state
        .lock()
        .unwrap()
        .arrivals
        .push((method.clone(), params.clone()));
    let fault = {
        let text = ["text", "caption"]
            .iter()
            .filter_map(|k| params.get(*k).and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n");
        let mut st = state.lock().unwrap();
        st.faults.get_mut(&method).and_then(|q| {
            let i = q
                .iter()
                .position(|(needle, _)| needle.as_ref().is_none_or(|n| text.contains(n)))?;
            q.remove(i).map(|(_, f)| f)
        })
    };
    if let Some(Fault::Slow(d)) = &fault {
        tokio::time::sleep(*d).await;
    }
    let latency = state.lock().unwrap().latency;
    if !latency.is_zero() && method != "getupdates" && method != "getme" {
        tokio::time::sleep(latency).await;
    }
    if down.load(Ordering::SeqCst) {
        return Err(std::io::Error::other("network down"));
    }
    match &fault {
        Some(Fault::BlackHole) => std::future::pending::<()>().await,
        Some(Fault::Html502) => {
            state.lock().unwrap().calls.push(Call {
                at: Instant::now(),
                method: method.clone(),
                params: params.clone(),
                error: Some(502),
                retry_after: None,
            });
            return Ok(Response::builder()
                .status(502)
                .header("content-type", "text/html")
                .body(Full::new(Bytes::from_static(
                    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.18.0</center>\r\n</body>\r\n</html>\r\n",
                )))
                .unwrap());
        }
        _ => {}
    }
    let (code, value) = match fault {
        Some(Fault::Status(code)) => error(code, &format!("Internal Server Error ({code})")),
        Some(Fault::RetryAfter(secs)) => (
            429,
            json!({"ok": false, "error_code": 429, "description": format!("Too Many Requests: retry after {secs}"),
                   "parameters": {"retry_after": secs}}),
        ),
        _ => dispatch(&method, &mut params, &state, &notify, &down).await,
    };
    state.lock().unwrap().calls.push(Call {
        at: Instant::now(),
        method: method.clone(),
        params: params.clone(),
        error: (code != 200).then_some(code),
        retry_after: value
            .get("parameters")
            .and_then(|p| p.get("retry_after"))
            .and_then(Value::as_u64),
    });
    match fault {
        // Applied; the answer is lost with the connection.
        Some(Fault::AnswerLost) => return Err(std::io::Error::other("connection reset")),
        Some(Fault::ApplyThenHang) => std::future::pending::<()>().await,
        _ => {}
    }
    let mut resp = reply((code, value.clone()));
    if let Some(secs) = value.get("parameters").and_then(|p| p.get("retry_after")) {
        resp.headers_mut()
            .insert("retry-after", secs.to_string().parse().unwrap());
    }
    Ok(resp)
}

fn reply((code, value): (u16, Value)) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .unwrap()
}

/// Documents up to this size are kept whole (as hex in the call's parameters) for byte-for-byte checks.
pub const DOCUMENT_KEPT: usize = 1 << 20;

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex written above"))
        .collect()
}

/// Query string, form, JSON or multipart parameters as one JSON object.
fn parse_params(content_type: &str, body: &[u8], query: &str) -> Value {
    let mut out = serde_json::Map::new();
    for (k, v) in form_pairs(query) {
        out.insert(k, Value::String(v));
    }
    if content_type.starts_with("application/json") {
        if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) {
            out.extend(m);
        }
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        for (k, v) in form_pairs(&String::from_utf8_lossy(body)) {
            out.insert(k, Value::String(v));
        }
    } else if let Some(boundary) = content_type.split("boundary=").nth(1) {
        for Part {
            name,
            file_name,
            data,
            ..
        } in multipart(body, boundary.trim_matches('"'))
        {
            match file_name {
                Some(f) => {
                    let hex = (data.len() <= DOCUMENT_KEPT)
                        .then(|| data.iter().map(|b| format!("{b:02x}")).collect::<String>());
                    out.insert(name, json!({"filename": f, "size": data.len(), "head": String::from_utf8_lossy(&data[..data.len().min(200)]), "hex": hex}));
                }
                None => {
                    let text = String::from_utf8_lossy(&data).to_string();
                    let v = serde_json::from_str::<Value>(&text)
                        .ok()
                        .filter(|v| v.is_object() || v.is_array());
                    out.insert(name, v.unwrap_or(Value::String(text)));
                }
            }
        }
    }
    Value::Object(out)
}

fn form_pairs(s: &str) -> Vec<(String, String)> {
    fn decode(x: &str) -> String {
        let bytes = x.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    match std::str::from_utf8(&bytes[i + 1..i + 3])
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                    {
                        Some(b) => {
                            out.push(b);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// One part of a `multipart/form-data` body: its name, file name and type, and its bytes.
pub struct Part {
    pub name: String,
    pub file_name: Option<String>,
    pub content_type: Option<String>,
    pub data: Vec<u8>,
}

/// The parts of a `multipart/form-data` body, each with its own headers (the fakes of uploads share it).
pub fn multipart(body: &[u8], boundary: &str) -> Vec<Part> {
    let sep = format!("--{boundary}");
    let at: Vec<usize> = body
        .windows(sep.len())
        .enumerate()
        .filter(|(_, w)| *w == sep.as_bytes())
        .map(|(i, _)| i)
        .collect();
    let mut out = Vec::new();
    for pair in at.windows(2) {
        let chunk = &body[pair[0] + sep.len()..pair[1]];
        let Some(split) = chunk.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&chunk[..split]).to_string();
        let mut data = chunk[split + 4..].to_vec();
        if data.ends_with(b"\r\n") {
            data.truncate(data.len() - 2);
        }
        let line = |name: &str| {
            head.split("\r\n").find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        // Names and file names are read from the disposition line only.
        let disposition = line("content-disposition").unwrap_or_default();
        let attr = |name: &str| {
            disposition.split(';').find_map(|p| {
                p.trim()
                    .strip_prefix(&format!("{name}="))
                    .map(|v| v.trim_matches('"').to_string())
            })
        };
        if let Some(name) = attr("name") {
            out.push(Part {
                name,
                file_name: attr("filename"),
                content_type: line("content-type"),
                data,
            });
        }
    }
    out
}

fn num(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

const HTML_TAGS: &[&str] = &[
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "code",
    "pre",
    "a",
    "tg-spoiler",
    "span",
    "blockquote",
    "tg-emoji",
];

/// Checks HTML the way the Bot API does and returns the visible text, or the error description.
pub fn parse_html(text: &str) -> Result<String, String> {
    let mut visible = String::new();
    let mut stack: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        match c {
            '<' => {
                let end = rest.find('>').ok_or_else(|| {
                    "Bad Request: can't parse entities: unclosed start tag".to_string()
                })?;
                let inner = &rest[1..end];
                if let Some(name) = inner.strip_prefix('/') {
                    let name = name.trim().to_lowercase();
                    match stack.pop() {
                        Some(open) if open == name => {}
                        _ => {
                            return Err(format!(
                                "Bad Request: can't parse entities: unexpected end tag \"{name}\""
                            ));
                        }
                    }
                } else {
                    let name = inner.split_whitespace().next().unwrap_or("").to_lowercase();
                    if !HTML_TAGS.contains(&name.as_str()) {
                        return Err(format!(
                            "Bad Request: can't parse entities: unsupported start tag \"{name}\""
                        ));
                    }
                    stack.push(name);
                }
                rest = &rest[end + 1..];
            }
            '&' => {
                let end = rest.find(';').filter(|e| *e <= 10).ok_or_else(|| {
                    "Bad Request: can't parse entities: character entity expected".to_string()
                })?;
                let entity = &rest[1..end];
                let ch = match entity {
                    "lt" => "<".to_string(),
                    "gt" => ">".to_string(),
                    "amp" => "&".to_string(),
                    "quot" => "\"".to_string(),
                    e if e.starts_with('#') => e[1..]
                        .parse::<u32>()
                        .ok()
                        .and_then(char::from_u32)
                        .map(String::from)
                        .ok_or("Bad Request: can't parse entities: bad numeric entity")?,
                    _ => {
                        return Err(format!(
                            "Bad Request: can't parse entities: unsupported entity \"&{entity};\""
                        ));
                    }
                };
                visible.push_str(&ch);
                rest = &rest[end + 1..];
            }
            _ => {
                visible.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    if let Some(open) = stack.pop() {
        return Err(format!(
            "Bad Request: can't parse entities: can't find end tag corresponding to start tag \"{open}\""
        ));
    }
    Ok(visible)
}

/// The text of `key` and what the user sees of it, checked as Telegram checks it: entities parsed when
/// `parse_mode` is HTML, and the length counted in UTF-16 units after parsing.
fn check_text(params: &Value, key: &str) -> Result<(String, String), (u16, Value)> {
    let text = params
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let visible = visible_of(params, &text)?;
    if visible.trim().is_empty() {
        return Err(error(400, "Bad Request: message text is empty"));
    }
    if visible.encode_utf16().count() > 4096 {
        return Err(error(400, "Bad Request: message is too long"));
    }
    Ok((text, visible))
}

fn visible_of(params: &Value, text: &str) -> Result<String, (u16, Value)> {
    if params
        .get("parse_mode")
        .and_then(Value::as_str)
        .is_some_and(|m| m.eq_ignore_ascii_case("html"))
    {
        parse_html(text).map_err(|e| error(400, &e))
    } else {
        Ok(text.to_string())
    }
}

/// Whether the bot may write to `chat` (403 when it was blocked, 400 when it cannot know the chat), and
/// whether Telegram's flood limits allow one more message there now (429 with `retry_after` when not).
fn admit(st: &mut State, method: &str, chat: i64) -> Result<(), (u16, Value)> {
    if st.blocked.contains(&chat) {
        return Err(error(403, "Forbidden: bot was blocked by the user"));
    }
    if !st.known_chats.contains(&chat) {
        return Err(error(400, "Bad Request: chat not found"));
    }
    let now = Instant::now();
    while st
        .global
        .front()
        .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
    {
        st.global.pop_front();
    }
    let limits = st.limits;
    let f = st.flood.entry(chat).or_insert(Flood {
        tokens: limits.burst,
        at: now,
        minute: VecDeque::new(),
    });
    f.tokens =
        (f.tokens + now.duration_since(f.at).as_secs_f64() * limits.per_second).min(limits.burst);
    f.at = now;
    while f
        .minute
        .front()
        .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
    {
        f.minute.pop_front();
    }
    let wait = if st.global.len() >= limits.global_per_second {
        Some(1)
    } else if chat < 0 && f.minute.len() >= limits.group_per_minute {
        let oldest = *f.minute.front().expect("non-empty");
        Some(
            60u64
                .saturating_sub(now.duration_since(oldest).as_secs())
                .max(1),
        )
    } else if f.tokens < 1.0 {
        Some((((1.0 - f.tokens) / limits.per_second).ceil() as u64).max(1))
    } else {
        None
    };
    if let Some(secs) = wait {
        st.flood_limited.push((method.to_string(), chat));
        return Err((
            429,
            json!({"ok": false, "error_code": 429, "description": format!("Too Many Requests: retry after {secs}"),
                   "parameters": {"retry_after": secs}}),
        ));
    }
    f.tokens -= 1.0;
    f.minute.push_back(now);
    st.global.push_back(now);
    Ok(())
}

fn check_markup(params: &Value) -> Result<Value, (u16, Value)> {
    let markup = params.get("reply_markup").cloned().unwrap_or(Value::Null);
    let markup = match markup {
        Value::String(s) => serde_json::from_str(&s).unwrap_or(Value::Null),
        other => other,
    };
    for row in markup
        .get("inline_keyboard")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for b in row.as_array().into_iter().flatten() {
            if let Some(d) = b.get("callback_data").and_then(Value::as_str)
                && (d.is_empty() || d.len() > 64)
            {
                return Err(error(400, "Bad Request: BUTTON_DATA_INVALID"));
            }
        }
    }
    Ok(markup)
}

async fn dispatch(
    method: &str,
    params: &mut Value,
    state: &Arc<Mutex<State>>,
    notify: &Arc<tokio::sync::Notify>,
    down: &Arc<AtomicBool>,
) -> (u16, Value) {
    match method {
        "getme" => envelope(
            json!({"id": 1, "is_bot": true, "first_name": "televibe", "username": "televibe_test_bot"}),
        ),
        "deletewebhook" | "setmycommands" => envelope(json!(true)),
        "getupdates" => get_updates(params, state, notify, down).await,
        "getfile" => files::get_file(params, state),
        "sendmessage" => {
            let Some(chat_id) = params.get("chat_id").and_then(num) else {
                return error(400, "Bad Request: chat_id is empty");
            };
            let (text, visible) = match check_text(params, "text") {
                Ok(t) => t,
                Err(e) => return e,
            };
            let markup = match check_markup(params) {
                Ok(m) => m,
                Err(e) => return e,
            };
            let mut st = state.lock().unwrap();
            // A reply to a message that is not there is refused unless the bot allows sending without it.
            let reply = match params.get("reply_parameters") {
                Some(Value::String(text)) => serde_json::from_str(text).unwrap_or(Value::Null),
                Some(other) => other.clone(),
                None => Value::Null,
            };
            if let Some(to) = reply.get("message_id").and_then(num)
                && !st.messages.contains_key(&(chat_id, to))
                && flag(&reply, "allow_sending_without_reply") != Some(true)
            {
                return error(400, "Bad Request: message to be replied not found");
            }
            if let Err(e) = admit(&mut st, method, chat_id) {
                return e;
            }
            st.next_message_id += 1;
            let message_id = st.next_message_id;
            st.messages.insert(
                (chat_id, message_id),
                Sent {
                    chat_id,
                    message_id,
                    text: text.clone(),
                    visible,
                    markup,
                    edits: 0,
                },
            );
            envelope(
                json!({"message_id": message_id, "date": chrono::Utc::now().timestamp(),
                "chat": {"id": chat_id, "type": "private", "first_name": "Tester"},
                "from": {"id": 1, "is_bot": true, "first_name": "televibe"}, "text": text}),
            )
        }
        "editmessagetext" => {
            let (Some(chat_id), Some(message_id)) = (
                params.get("chat_id").and_then(num),
                params.get("message_id").and_then(num),
            ) else {
                return error(400, "Bad Request: message to edit not found");
            };
            let (text, visible) = match check_text(params, "text") {
                Ok(t) => t,
                Err(e) => return e,
            };
            let markup = match check_markup(params) {
                Ok(m) => m,
                Err(e) => return e,
            };
            let mut st = state.lock().unwrap();
            if !st.messages.contains_key(&(chat_id, message_id)) {
                return error(400, "Bad Request: message to edit not found");
            }
            if let Err(e) = admit(&mut st, method, chat_id) {
                return e;
            }
            let m = st
                .messages
                .get_mut(&(chat_id, message_id))
                .expect("checked above");
            if m.text == text && m.markup == markup {
                return error(
                    400,
                    "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message",
                );
            }
            m.text = text.clone();
            m.visible = visible;
            m.markup = markup;
            m.edits += 1;
            envelope(
                json!({"message_id": message_id, "date": 0, "chat": {"id": chat_id, "type": "private", "first_name": "Tester"}, "text": text}),
            )
        }
        "answercallbackquery" => {
            let id = params
                .get("callback_query_id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let text = params
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if text.chars().count() > 200 {
                return error(400, "Bad Request: MESSAGE_TOO_LONG");
            }
            let mut st = state.lock().unwrap();
            match st.callbacks.remove(&id) {
                Some(at) if at.elapsed() < Duration::from_secs(15) => {
                    st.answered.push((id, text));
                    envelope(json!(true))
                }
                _ => error(
                    400,
                    "Bad Request: query is too old and response timeout expired or query ID is invalid",
                ),
            }
        }
        "senddocument" => {
            let Some(chat_id) = params.get("chat_id").and_then(num) else {
                return error(400, "Bad Request: chat_id is empty");
            };
            let doc = params.get("document").cloned().unwrap_or(Value::Null);
            let caption = params
                .get("caption")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let shown = match visible_of(params, &caption) {
                Ok(v) => v,
                Err(e) => return e,
            };
            if shown.encode_utf16().count() > 1024 {
                return error(400, "Bad Request: message caption is too long");
            }
            let name = doc
                .get("filename")
                .and_then(Value::as_str)
                .unwrap_or("file")
                .to_string();
            let size = doc.get("size").and_then(Value::as_u64).unwrap_or(0) as usize;
            let mut st = state.lock().unwrap();
            if let Err(e) = admit(&mut st, method, chat_id) {
                return e;
            }
            st.next_message_id += 1;
            let message_id = st.next_message_id;
            st.documents.push((chat_id, name.clone(), size, caption));
            let data = doc.get("hex").and_then(Value::as_str).map(unhex);
            st.document_data.push((chat_id, name.clone(), data));
            envelope(
                json!({"message_id": message_id, "date": 0, "chat": {"id": chat_id, "type": "private", "first_name": "Tester"},
                "document": {"file_id": "f", "file_unique_id": "u", "file_name": name}}),
            )
        }
        _ => error(404, "Not Found: method not found"),
    }
}

async fn get_updates(
    params: &Value,
    state: &Arc<Mutex<State>>,
    notify: &Arc<tokio::sync::Notify>,
    down: &Arc<AtomicBool>,
) -> (u16, Value) {
    let offset = params.get("offset").and_then(num).unwrap_or(0);
    let limit = params
        .get("limit")
        .and_then(num)
        .unwrap_or(100)
        .clamp(1, 100) as usize;
    let timeout = params
        .get("timeout")
        .and_then(num)
        .unwrap_or(0)
        .clamp(0, 50) as u64;
    loop {
        let released = notify.notified();
        if state
            .lock()
            .unwrap()
            .stall_from
            .is_none_or(|from| offset < from)
        {
            break;
        }
        released.await;
    }
    let generation = {
        let mut st = state.lock().unwrap();
        st.poll_generation += 1;
        st.poll_generation
    };
    // A newer poll ends this one with 409.
    notify.notify_waiters();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    loop {
        let notified = notify.notified();
        {
            let mut st = state.lock().unwrap();
            if st.poll_generation != generation {
                return error(
                    409,
                    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
                );
            }
            if offset > 0 {
                while st
                    .updates
                    .front()
                    .and_then(|u| u["update_id"].as_i64())
                    .is_some_and(|id| id < offset)
                {
                    st.updates.pop_front();
                }
            }
            let ready: Vec<Value> = st.updates.iter().take(limit).cloned().collect();
            if !ready.is_empty() || timeout == 0 {
                return envelope(Value::Array(ready));
            }
        }
        if down.load(Ordering::SeqCst) {
            return error(502, "Bad Gateway");
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return envelope(json!([]));
        }
    }
}
