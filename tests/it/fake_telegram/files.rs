//! Files sent to the bot, as the Bot API serves them: voice, photo and document messages shaped as the real
//! ones, `getFile` (`file_path` and `file_size`; 400 "file is too big" past 20 MB and "invalid file_id" for
//! an unknown id) and `GET /file/bot<token>/<file_path>` (404 for an unknown path, the bytes otherwise). A
//! test can make it lie about a file's size: the messages and `getFile` then declare that size, and the
//! bytes go out as a stream without a length, so only the reader's own count can stop it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Value, json};

use super::{FakeTelegram, State, TOKEN, envelope, error};

/// The most a bot may download through the Bot API.
const BOT_DOWNLOAD_LIMIT: u64 = 20 * 1024 * 1024;
/// A lying file is streamed in chunks of this size.
const CHUNK: usize = 64 * 1024;

pub(super) type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// A file the fake holds for the bot.
#[derive(Debug, Clone)]
pub(super) struct FakeFile {
    id: String,
    path: String,
    bytes: Arc<Vec<u8>>,
    /// The size messages and getFile declare (the true one unless the test made it lie).
    declared: u64,
    lying: bool,
    /// Messages carry no `file_size` for it (the field is optional); getFile still declares one.
    unsized_messages: bool,
}

/// What the fake served of files.
#[derive(Debug, Clone, Default)]
pub struct Served {
    /// Every download that arrived: its file path (or what followed the token).
    pub downloads: Vec<String>,
    /// Bytes of lying files that went out before the reader stopped taking them.
    pub streamed: u64,
    /// Streams of lying files that have ended (the reader went away, or all was sent).
    pub streams_ended: u64,
}

impl FakeTelegram {
    /// Telegram holds `bytes` for the bot under a new file id (returned), at `<folder>/file_<n>.<ext>` as
    /// `getFile` names it (`voice`, `photos`, `documents`).
    pub fn add_file(&self, folder: &str, ext: &str, bytes: Vec<u8>) -> String {
        let mut st = self.state.lock().unwrap();
        let n = st.files.len() + 1;
        let f = FakeFile {
            id: format!("BQACAgIAAxkBAAI{n:04}"),
            path: format!("{folder}/file_{n}.{ext}"),
            declared: bytes.len() as u64,
            bytes: Arc::new(bytes),
            lying: false,
            unsized_messages: false,
        };
        let id = f.id.clone();
        st.files.push(f);
        id
    }

    /// Messages and getFile declare `size` for this file whatever its bytes; they are streamed without a
    /// length.
    pub fn lie_about_size(&self, file_id: &str, size: u64) {
        let mut st = self.state.lock().unwrap();
        let f = st.files.iter_mut().find(|f| f.id == file_id).unwrap();
        f.declared = size;
        f.lying = true;
    }

    /// Messages carrying this file leave out its size; only getFile tells it.
    pub fn leave_size_out_of_messages(&self, file_id: &str) {
        let mut st = self.state.lock().unwrap();
        st.files
            .iter_mut()
            .find(|f| f.id == file_id)
            .unwrap()
            .unsized_messages = true;
    }

    pub fn served(&self) -> Served {
        self.state.lock().unwrap().served.clone()
    }

    fn file(&self, file_id: &str) -> FakeFile {
        let st = self.state.lock().unwrap();
        st.files.iter().find(|f| f.id == file_id).unwrap().clone()
    }

    fn file_json(f: &FakeFile) -> Value {
        json!({"file_id": f.id, "file_unique_id": format!("u{}", f.id), "file_size": f.declared})
    }

    /// A file as a message carries it.
    fn message_file(&self, file_id: &str) -> Value {
        let f = self.file(file_id);
        let mut v = Self::file_json(&f);
        if f.unsized_messages {
            v.as_object_mut().unwrap().remove("file_size");
        }
        v
    }

    /// A message with a file from `user_id` in their private chat: `content` holds its voice, photo or
    /// document (and caption); `reply_to` makes it a reply to a message of the bot.
    fn send_file_message(&self, user_id: i64, content: Value, reply_to: Option<i64>) {
        let message_id = {
            let mut st = self.state.lock().unwrap();
            st.known_chats.insert(user_id);
            st.next_message_id += 1;
            st.next_message_id
        };
        let chat = json!({"id": user_id, "type": "private", "first_name": "Tester"});
        let mut msg = json!({
            "message_id": message_id,
            "date": chrono::Utc::now().timestamp(),
            "chat": chat,
            "from": {"id": user_id, "is_bot": false, "first_name": "Tester"},
        });
        msg.as_object_mut()
            .unwrap()
            .extend(content.as_object().unwrap().clone());
        if let Some(r) = reply_to {
            msg["reply_to_message"] = json!({
                "message_id": r, "date": 0, "chat": chat,
                "from": {"id": 1, "is_bot": true, "first_name": "televibe"},
                "text": self.visible_text(user_id, r).unwrap_or_default(),
            });
        }
        self.push_update(json!({ "message": msg }));
    }

    /// A voice note (OGG/Opus) as Telegram delivers it.
    pub fn send_voice(&self, user_id: i64, file_id: &str) {
        let mut voice = self.message_file(file_id);
        voice["duration"] = json!(2);
        voice["mime_type"] = json!("audio/ogg");
        self.send_file_message(user_id, json!({ "voice": voice }), None);
    }

    /// A photo: Telegram's sizes of it (file id, width, height), smallest first, and its caption.
    pub fn send_photo(&self, user_id: i64, sizes: &[(&str, u32, u32)], caption: Option<&str>) {
        let photo: Vec<Value> = sizes
            .iter()
            .map(|(id, w, h)| {
                let mut p = self.message_file(id);
                p["width"] = json!(w);
                p["height"] = json!(h);
                p
            })
            .collect();
        let mut content = json!({ "photo": photo });
        if let Some(c) = caption {
            content["caption"] = json!(c);
        }
        self.send_file_message(user_id, content, None);
    }

    /// A file sent as a document under `name`, with its caption.
    pub fn send_document(&self, user_id: i64, file_id: &str, name: &str, caption: Option<&str>) {
        let mut doc = self.message_file(file_id);
        doc["file_name"] = json!(name);
        doc["mime_type"] = json!("application/octet-stream");
        let mut content = json!({ "document": doc });
        if let Some(c) = caption {
            content["caption"] = json!(c);
        }
        self.send_file_message(user_id, content, None);
    }
}

/// `getFile`: the file's path and declared size, or Telegram's refusals.
pub(super) fn get_file(params: &Value, state: &Arc<Mutex<State>>) -> (u16, Value) {
    let id = params
        .get("file_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let st = state.lock().unwrap();
    let Some(f) = st.files.iter().find(|f| f.id == id) else {
        return error(400, "Bad Request: invalid file_id");
    };
    if f.declared > BOT_DOWNLOAD_LIMIT {
        return error(400, "Bad Request: file is too big");
    }
    let mut file = FakeTelegram::file_json(f);
    file["file_path"] = json!(f.path);
    envelope(file)
}

fn json_reply(code: u16, value: Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(full(Bytes::from(value.to_string())))
        .unwrap()
}

fn full(bytes: Bytes) -> Body {
    http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// `GET /file/bot<token>/<file_path>`.
pub(super) async fn download(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
    down: Arc<std::sync::atomic::AtomicBool>,
) -> Result<Response<Body>, std::io::Error> {
    if down.load(Ordering::SeqCst) {
        return Err(std::io::Error::other("network down"));
    }
    let rest = req
        .uri()
        .path()
        .strip_prefix("/file/bot")
        .unwrap_or_default()
        .to_string();
    let (token, path) = rest.split_once('/').unwrap_or((&rest, ""));
    if token != TOKEN {
        return Ok(json_reply(
            401,
            json!({"ok": false, "error_code": 401, "description": "Unauthorized"}),
        ));
    }
    let file = {
        let mut st = state.lock().unwrap();
        st.served.downloads.push(path.to_string());
        st.files.iter().find(|f| f.path == path).cloned()
    };
    let Some(f) = file else {
        return Ok(json_reply(
            404,
            json!({"ok": false, "error_code": 404, "description": "Not Found"}),
        ));
    };
    if !f.lying {
        return Ok(Response::builder()
            .status(200)
            .header("content-type", "application/octet-stream")
            .body(full(Bytes::from(f.bytes.to_vec())))
            .unwrap());
    }
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(1);
    tokio::spawn(async move {
        for chunk in f.bytes.chunks(CHUNK) {
            if tx.send_data(Bytes::copy_from_slice(chunk)).await.is_err() {
                break;
            }
            state.lock().unwrap().served.streamed += chunk.len() as u64;
        }
        state.lock().unwrap().served.streams_ended += 1;
    });
    Ok(Response::builder()
        .status(200)
        .header("content-type", "application/octet-stream")
        .body(body.boxed_unsync())
        .unwrap())
}

/// Whether a request is a file download rather than a method call.
pub(super) fn is_download(path: &str) -> bool {
    path.starts_with("/file/")
}
