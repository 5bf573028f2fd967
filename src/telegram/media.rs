//! Voice notes, photos and documents from the phone. A voice note is transcribed, echoed as "🎤 <text>" and
//! then runs exactly as that text typed would; a photo or document is saved into the session's inbox
//! (`.televibe/inbox/`) and its caption runs with the saved path appended ("See the attached file <path>"
//! without one). Nothing is downloaded for a chat without a session to run in, past a size cap, or while
//! voice notes are off or their breaker is open.

use super::client::{FileError, Media, RemoteFile};
use super::front::Front;
use super::render::mention::session_in_text;
use super::render::{self, code, escape};
use crate::errors::CoreError;

/// The answer to a voice note while `[voice]` has no endpoint.
const VOICE_OFF: &str = "🎤 Voice notes are off. To turn them on, set <code>[voice] transcription_url</code> \
in the configuration to an OpenAI-compatible …/audio/transcriptions endpoint, put its key in \
<code>TELEVIBE_VOICE__API_KEY</code> and restart the daemon. Nothing was run.";
/// The longest transcript echoed whole.
const MAX_ECHO: usize = 3500;

/// What ended the handling of a file early: a refusal of the core, or a message of its own (HTML).
enum Stop {
    Core(CoreError),
    Told(String),
}

impl From<CoreError> for Stop {
    fn from(e: CoreError) -> Stop {
        Stop::Core(e)
    }
}

/// A size for people: bytes, and KiB or MiB past a thousand.
pub(super) fn size_text(n: u64) -> String {
    const KIB: f64 = 1024.0;
    match n {
        0..1024 => format!("{n} bytes"),
        1024..1_048_576 => format!("{:.1} KiB ({n} bytes)", n as f64 / KIB),
        _ => format!("{:.1} MiB ({n} bytes)", n as f64 / KIB / KIB),
    }
}

/// Why a file was not fetched, for people: `what` names it, `key` is the cap's setting, `nothing` says
/// what did not happen.
fn not_fetched(what: &str, key: &str, nothing: &str, e: FileError) -> Stop {
    tracing::warn!(target: "televibe.telegram", error = %e, "A file sent to the bot was not fetched");
    Stop::Told(match e {
        FileError::TooBig {
            size: Some(size),
            max,
        } => format!(
            "{what} is {}, more than the {} that {key} allows. {nothing}",
            size_text(size),
            size_text(max)
        ),
        FileError::TooBig { size: None, max } => format!(
            "{what} turned out larger than the {} that {key} allows while it was downloaded. {nothing}",
            size_text(max)
        ),
        FileError::Telegram(e) => format!(
            "{what} could not be fetched from Telegram: {}. {nothing}",
            escape(&e.to_string())
        ),
    })
}

impl Front {
    pub(super) async fn on_media(
        &self,
        chat_id: i64,
        message_id: i64,
        media: Media,
        caption: Option<String>,
        reply_to: Option<(i64, String)>,
    ) {
        // A reply to a bot message about a session goes there, as a typed reply does.
        let target = reply_to
            .and_then(|(_, t)| session_in_text(&t))
            .map(|s| s.to_string());
        let done = match media {
            Media::Voice(file) => self.voice_note(chat_id, target, &file).await,
            Media::Photo(sizes) => {
                let cap = self.core.config().files.max_bytes;
                match Media::photo_size(&sizes, cap) {
                    Some(file) => {
                        let name = format!("photo-{message_id}.jpg");
                        self.attachment(chat_id, target, file, &name, caption).await
                    }
                    None => Ok(()),
                }
            }
            Media::Document { file, name } => {
                let name = name.unwrap_or_default();
                self.attachment(chat_id, target, &file, &name, caption)
                    .await
            }
        };
        match done {
            Ok(()) => {}
            Err(Stop::Core(e)) => self.reply(chat_id, render::error(&e)).await,
            Err(Stop::Told(html)) => self.reply(chat_id, html).await,
        }
    }

    /// The session a file goes to: the one replied to, else the chat's active one (or the refusal a
    /// typed instruction gets).
    async fn media_session(&self, chat_id: i64, target: Option<String>) -> Result<String, Stop> {
        match target {
            Some(s) => Ok(s),
            None => Ok(self.require_active(chat_id).await?),
        }
    }

    async fn voice_note(
        &self,
        chat_id: i64,
        target: Option<String>,
        file: &RemoteFile,
    ) -> Result<(), Stop> {
        let Some(voice) = &self.voice else {
            return Err(Stop::Told(VOICE_OFF.into()));
        };
        let session = self.media_session(chat_id, target).await?;
        let permit = voice
            .permit()
            .map_err(|e| Stop::Told(format!("🎤 {}. Nothing was run.", escape(&e.to_string()))))?;
        let cap = self.core.config().voice.max_bytes;
        let audio = self.link.client.fetch_file(file, cap).await.map_err(|e| {
            not_fetched(
                "🎤 This voice note",
                "voice.max_bytes",
                "Nothing was run.",
                e,
            )
        })?;
        let text = voice.transcribe(permit, audio).await.map_err(|e| {
            tracing::warn!(target: "televibe.telegram", error = %e, "A voice note was not transcribed");
            Stop::Told(format!(
                "🎤 Not transcribed: {}. Nothing was run.",
                escape(&e.to_string())
            ))
        })?;
        if text.is_empty() {
            return Err(Stop::Told(
                "🎤 Nothing was heard in this voice note. Nothing was run.".into(),
            ));
        }
        self.reply(
            chat_id,
            format!("🎤 {}", escape(&render::cut(&text, MAX_ECHO))),
        )
        .await;
        self.run(chat_id, Some(session), &text, None).await?;
        Ok(())
    }

    /// A photo or document: fetched within `files.max_bytes`, saved into the session's inbox as `name`
    /// made safe, then its caption (or "See the attached file …") runs with the saved path.
    async fn attachment(
        &self,
        chat_id: i64,
        target: Option<String>,
        file: &RemoteFile,
        name: &str,
        caption: Option<String>,
    ) -> Result<(), Stop> {
        let session = self.media_session(chat_id, target).await?;
        // Nothing is downloaded for a session that cannot take it.
        let session = self.core.sessions().inbox_session(&session).await?.id;
        let cap = self.core.config().files.max_bytes;
        let shown = if name.is_empty() { "The file" } else { name };
        let bytes = self.link.client.fetch_file(file, cap).await.map_err(|e| {
            let what = format!("📎 {}", code(shown));
            not_fetched(&what, "files.max_bytes", "Nothing was saved.", e)
        })?;
        let saved = self
            .core
            .sessions()
            .save_to_inbox(&session, name, bytes)
            .await?;
        self.reply(
            chat_id,
            format!(
                "📥 Saved as {} in session <b>{}</b> ({}).",
                code(&saved.path),
                escape(&saved.session_id),
                size_text(saved.bytes)
            ),
        )
        .await;
        let instruction = match caption {
            Some(c) => format!("{}\n\nAttached file: {}", c.trim(), saved.path),
            None => format!("See the attached file {}", saved.path),
        };
        self.run(chat_id, Some(saved.session_id), &instruction, None)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_say_them() {
        assert_eq!(size_text(1000), "1000 bytes");
        assert_eq!(size_text(5000), "4.9 KiB (5000 bytes)");
        assert_eq!(size_text(20 * 1024 * 1024), "20.0 MiB (20971520 bytes)");
    }
}
