//! A loopback fake of an OpenAI-compatible `/v1/audio/transcriptions` endpoint: `multipart/form-data` in
//! (`file`, `model`, `response_format`), `{"text": …}` out, as OpenAI, Groq and local servers answer. It is
//! strict where the daemon relies on it: the upload must be multipart with the voice note as `file`
//! (`voice.ogg`, `audio/ogg`), and the bearer key when the test names one; what it finds wrong is recorded
//! and answered 400 with an OpenAI-style error. It answers the texts the test queues, and fails on command
//! (5xx, a body that is not a transcription).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::json;

use crate::fake_telegram::multipart;

/// What the fake answers to one upload.
#[derive(Debug, Clone)]
pub enum Answer {
    /// 200 `{"text": …}`.
    Text(String),
    /// This status with an OpenAI-style error body.
    Status(u16),
    /// 200 with a body that is not a transcription.
    Garbage,
}

/// One upload as the fake read it.
#[derive(Debug, Clone, Default)]
pub struct Upload {
    pub authorization: Option<String>,
    pub model: Option<String>,
    pub response_format: Option<String>,
    pub file_name: Option<String>,
    pub file_type: Option<String>,
    pub file: Vec<u8>,
    /// What the fake found wrong (empty: a well-formed upload).
    pub problems: Vec<String>,
}

#[derive(Default)]
struct State {
    answers: VecDeque<Answer>,
    /// Answered once the queue is empty.
    otherwise: Option<Answer>,
    uploads: Vec<Upload>,
    key: Option<String>,
    expected: Option<Vec<u8>>,
}

pub struct FakeTranscriber {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeTranscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeTranscriber {
    /// A fake that wants `key` as the bearer token (`None`: no Authorization header at all) and
    /// `expected` as the uploaded file.
    pub async fn start(key: Option<&str>, expected: Vec<u8>) -> FakeTranscriber {
        let state = Arc::new(Mutex::new(State {
            key: key.map(str::to_string),
            expected: Some(expected),
            ..State::default()
        }));
        let (addr, task) = crate::fake_http::serve(state.clone(), handle).await;
        FakeTranscriber { addr, state, task }
    }

    /// The endpoint's address as `voice.transcription_url` takes it.
    pub fn url(&self) -> String {
        format!("http://{}/v1/audio/transcriptions", self.addr)
    }

    /// The next upload is answered so (in the order queued).
    pub fn answer(&self, a: Answer) {
        self.state.lock().unwrap().answers.push_back(a);
    }

    /// Every upload past the queued answers is answered so.
    pub fn always(&self, a: Answer) {
        self.state.lock().unwrap().otherwise = Some(a);
    }

    pub fn uploads(&self) -> Vec<Upload> {
        self.state.lock().unwrap().uploads.clone()
    }
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let path = req.uri().path().to_string();
    let post = req.method() == hyper::Method::POST;
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (content_type, authorization) = (header("content-type"), header("authorization"));
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if !post || path != "/v1/audio/transcriptions" {
        return Ok(reply(404, json!({"error": {"message": "Not found"}})));
    }
    let mut upload = Upload {
        authorization,
        ..Upload::default()
    };
    match content_type
        .as_deref()
        .and_then(|t| t.strip_prefix("multipart/form-data; boundary="))
    {
        Some(boundary) => {
            for part in multipart(&body, boundary.trim_matches('"')) {
                match part.name.as_str() {
                    "model" => upload.model = Some(String::from_utf8_lossy(&part.data).into()),
                    "response_format" => {
                        upload.response_format = Some(String::from_utf8_lossy(&part.data).into())
                    }
                    "file" => {
                        upload.file_name = part.file_name;
                        upload.file_type = part.content_type;
                        upload.file = part.data;
                    }
                    other => upload.problems.push(format!("unexpected field {other}")),
                }
            }
        }
        None => upload
            .problems
            .push(format!("not multipart/form-data: {content_type:?}")),
    }
    let mut st = state.lock().unwrap();
    let wanted_auth = st.key.as_ref().map(|k| format!("Bearer {k}"));
    if upload.authorization != wanted_auth {
        upload
            .problems
            .push(format!("authorization {:?}", upload.authorization));
    }
    if upload.model.as_deref().is_none_or(str::is_empty) {
        upload.problems.push("no model".into());
    }
    if upload.response_format.as_deref() != Some("json") {
        upload.problems.push("response_format is not json".into());
    }
    if upload.file_name.as_deref() != Some("voice.ogg")
        || upload.file_type.as_deref() != Some("audio/ogg")
    {
        upload.problems.push(format!(
            "file {:?} of type {:?}",
            upload.file_name, upload.file_type
        ));
    }
    if st.expected.as_ref().is_some_and(|e| *e != upload.file) {
        upload.problems.push(format!(
            "the file is not the voice note ({} bytes)",
            upload.file.len()
        ));
    }
    let problems = upload.problems.join("; ");
    st.uploads.push(upload);
    if !problems.is_empty() {
        return Ok(reply(
            400,
            json!({"error": {"message": problems, "type": "invalid_request_error"}}),
        ));
    }
    let answer = st
        .answers
        .pop_front()
        .or_else(|| st.otherwise.clone())
        .unwrap_or(Answer::Status(500));
    Ok(match answer {
        Answer::Text(text) => reply(200, json!({ "text": text })),
        Answer::Status(code) => reply(
            code,
            json!({"error": {"message": format!("The server had an error ({code})"), "type": "server_error"}}),
        ),
        Answer::Garbage => Response::builder()
            .status(200)
            .header("content-type", "text/html")
            .body(Full::new(Bytes::from_static(b"<html>it works</html>")))
            .unwrap(),
    })
}

fn reply(status: u16, body: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}
