//! Voice notes to text: an OpenAI-compatible `…/audio/transcriptions` endpoint (`[voice]`), behind the
//! `voice_transcription` breaker.
//!
//! The upload is `multipart/form-data` with the note as `file` (`voice.ogg`, `audio/ogg`), `model` and
//! `response_format=json`, and `Authorization: Bearer <key>` when a key is set; the answer is `{"text": …}`.
//! The breaker counts what says the endpoint is not working: 5xx, 429, timeouts, connection errors and
//! answers that are not a transcription. Another 4xx (a wrong key, a refused file) is the endpoint working,
//! and its reason is told. The key is never logged or shown: every text taken from an answer is cut short
//! and has the key removed.

use std::sync::Arc;
use std::time::Duration;

use frankenstein::reqwest;

use crate::breaker::{BreakerName, BreakerPermit, Breakers};
use crate::config::VoiceSettings;

/// How long one transcription may take, upload and connection included.
const TRANSCRIBE_TIMEOUT: Duration = Duration::from_secs(120);
/// At most this much of an answer is read.
const MAX_ANSWER: usize = 64 * 1024;
/// At most this much of an error answer is shown.
const MAX_REASON: usize = 200;

/// Why a voice note was not transcribed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoiceError {
    #[error(
        "transcription is unavailable: the voice_transcription breaker is open (retry in {0} s)"
    )]
    BreakerOpen(u64),
    #[error("the transcription endpoint failed: {0}")]
    Unavailable(String),
    #[error("the transcription endpoint refused the voice note: {0}")]
    Refused(String),
    #[error("the transcription endpoint's answer is not a transcription: {0}")]
    Malformed(String),
}

/// The configured transcription endpoint.
pub struct Transcriber {
    client: reqwest::Client,
    url: String,
    model: String,
    key: Option<String>,
    breakers: Arc<Breakers>,
}

impl Transcriber {
    /// `None` while `voice.transcription_url` is empty (voice notes are off).
    pub fn new(settings: &VoiceSettings, breakers: Arc<Breakers>) -> Option<Transcriber> {
        let url = settings.transcription_url.clone()?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(TRANSCRIBE_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Some(Transcriber {
            client,
            url,
            model: settings.model.clone(),
            key: settings.api_key.clone(),
            breakers,
        })
    }

    /// Asks the breaker first, before the note is downloaded: while it is open nothing is fetched or sent.
    pub fn permit(&self) -> Result<BreakerPermit, VoiceError> {
        self.breakers
            .acquire(BreakerName::VoiceTranscription)
            .map_err(|e| VoiceError::BreakerOpen(e.retry_in_secs))
    }

    /// Transcribes an OGG/Opus voice note under `permit`; answers its text, trimmed.
    pub async fn transcribe(
        &self,
        permit: BreakerPermit,
        audio: Vec<u8>,
    ) -> Result<String, VoiceError> {
        let outcome = self.post(audio).await;
        match &outcome {
            Ok(_) | Err(VoiceError::Refused(_)) => permit.success(),
            Err(_) => permit.failure(),
        }
        outcome.map_err(|e| match e {
            VoiceError::Unavailable(t) => VoiceError::Unavailable(self.redact(&t)),
            VoiceError::Refused(t) => VoiceError::Refused(self.redact(&t)),
            VoiceError::Malformed(t) => VoiceError::Malformed(self.redact(&t)),
            other => other,
        })
    }

    async fn post(&self, audio: Vec<u8>) -> Result<String, VoiceError> {
        let part = reqwest::multipart::Part::bytes(audio)
            .file_name("voice.ogg")
            .mime_str("audio/ogg")
            .map_err(|e| VoiceError::Unavailable(e.without_url().to_string()))?;
        let form = reqwest::multipart::Form::new()
            .part("file", part)
            .text("model", self.model.clone())
            .text("response_format", "json");
        let mut req = self.client.post(&self.url).multipart(form);
        if let Some(key) = &self.key {
            req = req.bearer_auth(key);
        }
        let mut resp = req.send().await.map_err(unavailable)?;
        let status = resp.status();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(unavailable)? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_ANSWER {
                if status.is_success() {
                    return Err(VoiceError::Malformed(format!(
                        "longer than {MAX_ANSWER} bytes"
                    )));
                }
                break;
            }
        }
        // The key is taken out of the whole answer before it is cut (a cut could keep part of it).
        let said = reason(self.redact(&String::from_utf8_lossy(&body)).as_bytes());
        if status.as_u16() == 429 || status.is_server_error() {
            return Err(VoiceError::Unavailable(format!(
                "HTTP {}{}",
                status.as_u16(),
                said
            )));
        }
        if !status.is_success() {
            return Err(VoiceError::Refused(format!(
                "HTTP {}{}",
                status.as_u16(),
                said
            )));
        }
        let answer: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| VoiceError::Malformed(format!("not JSON{said}")))?;
        match answer.get("text") {
            Some(serde_json::Value::String(text)) => Ok(text.trim().to_string()),
            _ => Err(VoiceError::Malformed(
                "no \"text\" in its JSON answer".into(),
            )),
        }
    }

    /// `text` without the key.
    fn redact(&self, text: &str) -> String {
        match &self.key {
            Some(key) => text.replace(key.as_str(), "<redacted>"),
            None => text.to_string(),
        }
    }
}

fn unavailable(e: reqwest::Error) -> VoiceError {
    VoiceError::Unavailable(if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connection refused".into()
    } else {
        e.without_url().to_string()
    })
}

/// `: <what the answer says>`, from an OpenAI-style `{"error": {"message": …}}` or the text itself, on one
/// line and cut short.
fn reason(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let said = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            let e = v.get("error")?;
            e.get("message")
                .and_then(|m| m.as_str())
                .or(e.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| text.into_owned());
    let line = said.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.is_empty() {
        String::new()
    } else {
        format!(": {}", crate::text::cut(&line, MAX_REASON))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_answers_are_read_for_their_reason_on_one_short_line() {
        assert_eq!(
            reason(br#"{"error": {"message": "Invalid file format.", "type": "invalid_request_error"}}"#),
            ": Invalid file format."
        );
        assert_eq!(
            reason(b"<html>\n<h1>502 Bad Gateway</h1>\n</html>"),
            ": <html> <h1>502 Bad Gateway</h1> </html>"
        );
        assert_eq!(reason(b""), "");
        assert!(reason(&[b'x'; 5000]).chars().count() < MAX_REASON + 10);
    }

    #[test]
    fn the_key_never_leaves_in_a_reason() {
        let t = Transcriber {
            client: reqwest::Client::new(),
            url: "http://127.0.0.1:9/v1/audio/transcriptions".into(),
            model: "whisper-1".into(),
            key: Some("sk-secret-key".into()),
            breakers: Arc::new(Breakers::new(
                &[],
                Arc::new(crate::telemetry::Metrics::new()),
            )),
        };
        assert_eq!(
            t.redact("Incorrect API key provided: sk-secret-key."),
            "Incorrect API key provided: <redacted>."
        );
    }
}
