//! What the poller makes of Telegram's updates: the texts and button taps the bot understands.

use frankenstein::types::{ChatType, MaybeInaccessibleMessage};
use frankenstein::updates::UpdateContent;

use super::Incoming;

pub(super) fn incoming(content: UpdateContent) -> Incoming {
    match content {
        UpdateContent::Message(m) => {
            let (Some(text), Some(from)) = (m.text.clone(), m.from.as_ref()) else {
                return Incoming::Ignored;
            };
            Incoming::Text {
                chat_id: m.chat.id,
                private: m.chat.type_field == ChatType::Private,
                user_id: from.id as i64,
                message_id: i64::from(m.message_id),
                text,
                reply_to: m
                    .reply_to_message
                    .as_ref()
                    .map(|r| (i64::from(r.message_id), r.text.clone().unwrap_or_default())),
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
