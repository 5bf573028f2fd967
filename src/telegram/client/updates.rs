//! What the poller makes of Telegram's updates: the texts, voice notes, photos, documents and button taps
//! the bot understands.

use frankenstein::types::{ChatType, MaybeInaccessibleMessage, Message};
use frankenstein::updates::UpdateContent;

use super::Incoming;

/// A file Telegram holds for the bot: its id for `getFile`, and its size when the message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    pub file_id: String,
    pub size: Option<u64>,
}

/// What a message carries besides text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Media {
    /// A voice note (OGG/Opus).
    Voice(RemoteFile),
    /// The sizes Telegram made of one photo, each with its area in pixels.
    Photo(Vec<(RemoteFile, u64)>),
    /// A file sent as a document, with the name it was sent under.
    Document {
        file: RemoteFile,
        name: Option<String>,
    },
}

impl Media {
    /// What a refusal to a stranger records of a message with a file: its caption, else its kind.
    pub fn label(&self, caption: Option<&str>) -> String {
        if let Some(c) = caption {
            return c.to_string();
        }
        match self {
            Media::Voice(_) => "[voice note]".into(),
            Media::Photo(_) => "[photo]".into(),
            Media::Document { name, .. } => {
                format!("[document {}]", name.as_deref().unwrap_or(""))
            }
        }
    }

    /// The size of a photo to fetch: the largest whose size fits `cap` (an unknown size is left to the
    /// download's own check), else the largest of all, which the caller then refuses as too big.
    pub fn photo_size(sizes: &[(RemoteFile, u64)], cap: u64) -> Option<&RemoteFile> {
        let by_area = |s: &&(RemoteFile, u64)| (s.1, s.0.size);
        sizes
            .iter()
            .filter(|(f, _)| f.size.is_none_or(|n| n <= cap))
            .max_by_key(by_area)
            .or_else(|| sizes.iter().max_by_key(by_area))
            .map(|(f, _)| f)
    }
}

fn media(m: &Message) -> Option<Media> {
    if let Some(v) = &m.voice {
        return Some(Media::Voice(RemoteFile {
            file_id: v.file_id.clone(),
            size: v.file_size,
        }));
    }
    if let Some(sizes) = m.photo.as_ref().filter(|p| !p.is_empty()) {
        return Some(Media::Photo(
            sizes
                .iter()
                .map(|p| {
                    let file = RemoteFile {
                        file_id: p.file_id.clone(),
                        size: p.file_size,
                    };
                    (file, u64::from(p.width) * u64::from(p.height))
                })
                .collect(),
        ));
    }
    // Audio files, videos and animations are files like any document (a name of their own when they
    // come without one).
    let mid = m.message_id;
    let file = |file_id: &str, size: Option<u64>, name: Option<&String>, default: String| {
        Media::Document {
            file: RemoteFile {
                file_id: file_id.to_string(),
                size,
            },
            name: Some(name.cloned().unwrap_or(default)),
        }
    };
    if let Some(d) = &m.document {
        return Some(Media::Document {
            file: RemoteFile {
                file_id: d.file_id.clone(),
                size: d.file_size,
            },
            name: d.file_name.clone(),
        });
    }
    if let Some(a) = &m.audio {
        let default = format!("audio-{mid}.mp3");
        return Some(file(&a.file_id, a.file_size, a.file_name.as_ref(), default));
    }
    if let Some(v) = &m.video {
        let default = format!("video-{mid}.mp4");
        return Some(file(&v.file_id, v.file_size, v.file_name.as_ref(), default));
    }
    if let Some(v) = &m.animation {
        let default = format!("animation-{mid}.mp4");
        return Some(file(&v.file_id, v.file_size, v.file_name.as_ref(), default));
    }
    m.video_note.as_ref().map(|v| {
        file(
            &v.file_id,
            v.file_size,
            None,
            format!("video-note-{mid}.mp4"),
        )
    })
}

pub(super) fn incoming(content: UpdateContent) -> Incoming {
    match content {
        UpdateContent::Message(m) => {
            let Some(from) = m.from.as_ref() else {
                return Incoming::Ignored;
            };
            let (chat_id, private) = (m.chat.id, m.chat.type_field == ChatType::Private);
            let (user_id, message_id) = (from.id as i64, i64::from(m.message_id));
            let reply_to = m
                .reply_to_message
                .as_ref()
                .map(|r| (i64::from(r.message_id), r.text.clone().unwrap_or_default()));
            match (m.text.clone(), media(&m)) {
                (Some(text), _) => Incoming::Text {
                    chat_id,
                    private,
                    user_id,
                    message_id,
                    text,
                    reply_to,
                },
                (None, Some(media)) => Incoming::Media {
                    chat_id,
                    private,
                    user_id,
                    message_id,
                    media,
                    caption: m.caption.clone().filter(|c| !c.trim().is_empty()),
                    reply_to,
                },
                (None, None) => Incoming::Ignored,
            }
        }
        UpdateContent::CallbackQuery(q) => {
            let (chat, message_id) = match &q.message {
                Some(MaybeInaccessibleMessage::Message(m)) => {
                    (Some(&*m.chat), i64::from(m.message_id))
                }
                Some(MaybeInaccessibleMessage::InaccessibleMessage(m)) => {
                    (Some(&m.chat), i64::from(m.message_id))
                }
                None => (None, 0),
            };
            Incoming::Callback {
                id: q.id.clone(),
                user_id: q.from.id as i64,
                chat_id: chat.map_or(0, |c| c.id),
                private: chat.is_some_and(|c| c.type_field == ChatType::Private),
                message_id,
                data: q.data.clone().unwrap_or_default(),
            }
        }
        _ => Incoming::Ignored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(message: serde_json::Value) -> Incoming {
        let u: frankenstein::updates::Update =
            serde_json::from_value(serde_json::json!({"update_id": 1, "message": message}))
                .unwrap();
        incoming(u.content)
    }

    fn message(extra: serde_json::Value) -> serde_json::Value {
        let mut m = serde_json::json!({
            "message_id": 7, "date": 0,
            "chat": {"id": 42, "type": "private", "first_name": "A"},
            "from": {"id": 42, "is_bot": false, "first_name": "A"},
        });
        m.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        m
    }

    #[test]
    fn voice_photo_and_document_messages_are_read_as_the_bot_api_sends_them() {
        let voice = update(message(serde_json::json!({"voice": {
            "duration": 2, "mime_type": "audio/ogg", "file_id": "AwAC", "file_unique_id": "u1", "file_size": 4629}})));
        assert!(
            matches!(&voice, Incoming::Media { media: Media::Voice(f), caption: None, user_id: 42, .. }
                if f.file_id == "AwAC" && f.size == Some(4629)),
            "{voice:?}"
        );
        let photo = update(message(
            serde_json::json!({"caption": "what is this", "photo": [
            {"file_id": "small", "file_unique_id": "s", "file_size": 1000, "width": 90, "height": 60},
            {"file_id": "big", "file_unique_id": "b", "file_size": 90000, "width": 1280, "height": 853}]}),
        ));
        let Incoming::Media {
            media: Media::Photo(sizes),
            caption,
            ..
        } = &photo
        else {
            panic!("{photo:?}");
        };
        assert_eq!(caption.as_deref(), Some("what is this"));
        assert_eq!(Media::photo_size(sizes, 100_000).unwrap().file_id, "big");
        assert_eq!(Media::photo_size(sizes, 5_000).unwrap().file_id, "small");
        assert_eq!(
            Media::photo_size(sizes, 10).unwrap().file_id,
            "big",
            "none fits: the largest, refused by the caller"
        );
        let doc = update(message(serde_json::json!({"caption": " ", "document": {
            "file_name": "../../evil", "mime_type": "text/plain", "file_id": "BQAC", "file_unique_id": "d", "file_size": 12}})));
        assert!(
            matches!(&doc, Incoming::Media { media: Media::Document { name: Some(n), .. }, caption: None, .. } if n == "../../evil"),
            "a blank caption is none: {doc:?}"
        );
        assert_eq!(
            update(message(serde_json::json!({"new_chat_title": "renamed"}))),
            Incoming::Ignored
        );
    }
}
