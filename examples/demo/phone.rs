//! The user's phone on the fake Bot API: writes, taps, waits, and prints the chat as the phone shows it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::Value;

use crate::fake_telegram::{FakeTelegram, Sent};

/// What the user did, and the newest bot message at that moment (so the chat can be put in order).
enum Action {
    Wrote(String),
    Tapped { label: String, callback: String },
}

pub struct Phone {
    pub tg: FakeTelegram,
    user: i64,
    actions: Vec<(i64, Action)>,
    /// Buttons of messages as they were when tapped (a decision takes them away).
    keyboards: HashMap<i64, Value>,
}

impl Phone {
    pub async fn start(user: i64) -> Phone {
        Phone {
            tg: FakeTelegram::start().await,
            user,
            actions: Vec::new(),
            keyboards: HashMap::new(),
        }
    }

    /// The bot's messages in this chat, oldest first, as they read now.
    pub fn messages(&self) -> Vec<Sent> {
        self.tg.messages(self.user)
    }

    fn newest_id(&self) -> i64 {
        self.messages().last().map_or(0, |m| m.message_id)
    }

    /// Writes `text` and waits for a new bot message whose visible text contains `expect`.
    pub async fn say(&mut self, text: &str, expect: &str) -> Result<Sent> {
        let what = format!("reply to {text:?} saying {expect:?}");
        self.say_until(text, &what, |m| m.visible.contains(expect))
            .await
    }

    /// Writes `text` and waits for a new bot message that passes `want`.
    pub async fn say_until(
        &mut self,
        text: &str,
        what: &str,
        want: impl Fn(&Sent) -> bool,
    ) -> Result<Sent> {
        let before = self.newest_id();
        self.actions.push((before, Action::Wrote(text.to_string())));
        self.tg.send_text(self.user, text);
        self.wait(what, |m| m.message_id > before && want(m)).await
    }

    /// Waits up to 60 s for a bot message that passes `want`.
    pub async fn wait(&self, what: &str, want: impl Fn(&Sent) -> bool) -> Result<Sent> {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(m) = self.messages().into_iter().find(&want) {
                return Ok(m);
            }
            if Instant::now() > end {
                bail!("no {what} within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Taps the button of `msg` whose label contains `label`; answers the pop-up text Telegram shows.
    pub async fn tap(&mut self, msg: &Sent, label: &str) -> Result<String> {
        let Some((shown, data)) = buttons(&msg.markup)
            .into_iter()
            .find(|(text, _)| text.contains(label))
        else {
            bail!("no {label:?} button under message {}", msg.message_id);
        };
        self.keyboards.insert(msg.message_id, msg.markup.clone());
        let callback = self.tg.tap(self.user, self.user, msg.message_id, &data);
        self.actions.push((
            self.newest_id(),
            Action::Tapped {
                label: shown,
                callback: callback.clone(),
            },
        ));
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some((_, text)) = self.answered(&callback) {
                return Ok(text);
            }
            if Instant::now() > end {
                bail!("the tap on {label:?} was not answered within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn answered(&self, callback: &str) -> Option<(String, String)> {
        self.tg
            .answered_callbacks()
            .into_iter()
            .find(|(id, _)| id == callback)
    }

    /// The chat so far: the user's lines and taps between the bot's messages, in the order they came.
    pub fn transcript(&self) -> String {
        let mut out = String::new();
        let mut actions = self.actions.iter().peekable();
        for m in self.messages() {
            while let Some((_, a)) = actions.next_if(|(before, _)| *before < m.message_id) {
                out.push_str(&self.action(a));
            }
            out.push_str(&self.bot(&m));
        }
        for (_, a) in actions {
            out.push_str(&self.action(a));
        }
        format!("{}\n", out.trim_end())
    }

    fn action(&self, a: &Action) -> String {
        match a {
            Action::Wrote(text) => format!("\n👤 {text}\n"),
            Action::Tapped { label, callback } => {
                let mut s = format!("\n👤 taps [ {label} ]\n");
                if let Some((_, toast)) = self.answered(callback) {
                    s.push_str(&format!("   💬 pop-up: {toast}\n"));
                }
                s
            }
        }
    }

    fn bot(&self, m: &Sent) -> String {
        let mut out = String::from("\n");
        for (i, line) in m.visible.trim_end().lines().enumerate() {
            let lead = if i == 0 { "🤖 " } else { "   " };
            out.push_str(format!("{lead}{line}").trim_end());
            out.push('\n');
        }
        let now = keyboard(&m.markup);
        if !now.is_empty() {
            out.push_str(&format!("   {now}\n"));
        } else if let Some(before) = self.keyboards.get(&m.message_id) {
            out.push_str(&format!(
                "   (buttons until the tap: {})\n",
                keyboard(before)
            ));
        }
        match m.edits {
            0 => {}
            1 => out.push_str("   (edited once; final state shown)\n"),
            n => out.push_str(&format!("   (edited {n} times; final state shown)\n")),
        }
        out
    }
}

/// The inline buttons of a reply markup, in order: (label, callback data).
fn buttons(markup: &Value) -> Vec<(String, String)> {
    markup["inline_keyboard"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|row| row.as_array().into_iter().flatten())
        .map(|b| {
            (
                b["text"].as_str().unwrap_or("").to_string(),
                b["callback_data"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// `[ ✅ Approve ] [ ❌ Deny ]`, one row per line.
fn keyboard(markup: &Value) -> String {
    markup["inline_keyboard"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| {
            row.as_array()
                .into_iter()
                .flatten()
                .map(|b| format!("[ {} ]", b["text"].as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|r| !r.is_empty())
        .collect::<Vec<_>>()
        .join("\n   ")
}
