//! Pacing to Telegram's flood limits: a token bucket per chat (a short burst, then about one message or
//! edit a second), a sliding minute of 20 sends per group chat, a sliding second of 30 sends overall, and
//! pauses from `retry_after` (one chat, or everything). Pure bookkeeping on instants given by the caller.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Messages a chat may take in a burst after a quiet moment: a person's quick exchange (a command every
/// second or faster for a while) is answered at once; a longer stream settles to the sustained rate.
pub const CHAT_BURST: f64 = 10.0;
/// Sustained sends a second in one chat. A little under one, so clock differences between us and
/// Telegram never make a send look early there.
pub const CHAT_RATE: f64 = 0.95;
/// Sends a group chat may take in any minute.
pub const GROUP_PER_MINUTE: usize = 20;
/// Sends over all chats in any second.
pub const GLOBAL_PER_SECOND: usize = 30;

struct ChatAccount {
    tokens: f64,
    at: Instant,
    minute: VecDeque<Instant>,
    paused_until: Option<Instant>,
}

/// Where each chat and the whole bot stand against the limits.
pub struct Pacer {
    chats: HashMap<i64, ChatAccount>,
    second: VecDeque<Instant>,
    paused_until: Option<Instant>,
    /// The backoff while Telegram is unreachable, apart from `retry_after` pauses.
    outage_until: Option<Instant>,
    /// When this account began: Telegram may still count what an earlier process sent, so a chat's
    /// bucket is assumed to hold one send then (a restart takes at least that long: systemd waits
    /// `RestartSec=2`) and to fill from there.
    born: Instant,
}

impl Pacer {
    pub fn new(now: Instant) -> Pacer {
        Pacer {
            chats: HashMap::new(),
            second: VecDeque::new(),
            paused_until: None,
            outage_until: None,
            born: now,
        }
    }

    /// When `cost` sends to `chat` (None: a call without a chat, e.g. a callback answer) may go: `now` or
    /// later. Never earlier than `now`.
    pub fn ready_at(&mut self, chat: Option<i64>, cost: f64, now: Instant) -> Instant {
        let mut at = now;
        for p in [self.paused_until, self.outage_until].into_iter().flatten() {
            at = at.max(p);
        }
        while self
            .second
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            self.second.pop_front();
        }
        if self.second.len() >= GLOBAL_PER_SECOND {
            let oldest = self.second[self.second.len() - GLOBAL_PER_SECOND];
            at = at.max(oldest + Duration::from_secs(1));
        }
        let Some(chat) = chat else {
            return at;
        };
        let acc = self.account(chat, now);
        if let Some(p) = acc.paused_until {
            at = at.max(p);
        }
        let need = cost.min(CHAT_BURST);
        if acc.tokens < need {
            at = at.max(now + Duration::from_secs_f64((need - acc.tokens) / CHAT_RATE));
        }
        if chat < 0 && acc.minute.len() >= GROUP_PER_MINUTE {
            let oldest = acc.minute[acc.minute.len() - GROUP_PER_MINUTE];
            at = at.max(oldest + Duration::from_secs(60));
        }
        at
    }

    /// Records `cost` sends to `chat` made by `now` (stamped when Telegram answered, which is never
    /// earlier than when it counted them).
    pub fn spent(&mut self, chat: Option<i64>, cost: f64, now: Instant) {
        for _ in 0..cost.ceil() as usize {
            self.second.push_back(now);
        }
        if let Some(chat) = chat {
            let acc = self.account(chat, now);
            acc.tokens -= cost;
            if chat < 0 {
                for _ in 0..cost.ceil() as usize {
                    acc.minute.push_back(now);
                }
            }
        }
    }

    /// Telegram unreachable: everything waits until `until` (a backoff), unless it answers earlier.
    pub fn pause_outage(&mut self, until: Instant) {
        self.outage_until = Some(self.outage_until.map_or(until, |p| p.max(until)));
    }

    /// Telegram answers again: the outage pause ends now (a `retry_after` pause stays).
    pub fn end_outage(&mut self) {
        self.outage_until = None;
    }

    /// A 429: `retry_after` pauses the chat it concerns, or everything when it concerns no chat.
    pub fn pause(&mut self, chat: Option<i64>, until: Instant) {
        match chat {
            Some(c) => {
                let acc = self.account(c, until);
                acc.paused_until = Some(acc.paused_until.map_or(until, |p| p.max(until)));
                // After the pause the chat starts with one send, not a burst.
                acc.tokens = acc.tokens.min(1.0);
                acc.at = until;
            }
            None => self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until))),
        }
    }

    /// Whether everything is paused at `now` (a global `retry_after`, or an outage's backoff).
    pub fn all_paused(&self, now: Instant) -> bool {
        [self.paused_until, self.outage_until]
            .into_iter()
            .flatten()
            .any(|p| now < p)
    }

    /// Whether `chat` is paused at `now` by a `retry_after`.
    pub fn chat_paused(&self, chat: i64, now: Instant) -> bool {
        self.chats
            .get(&chat)
            .and_then(|a| a.paused_until)
            .is_some_and(|p| now < p)
    }

    /// Chats with nothing left to remember are forgotten (a full bucket, no recent group sends).
    pub fn forget_idle(&mut self, now: Instant) {
        self.chats.retain(|_, a| {
            let refilled = a.tokens + now.saturating_duration_since(a.at).as_secs_f64() * CHAT_RATE;
            refilled < CHAT_BURST
                || a.paused_until.is_some_and(|p| now < p)
                || a.minute
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < Duration::from_secs(60))
        });
    }

    fn account(&mut self, chat: i64, now: Instant) -> &mut ChatAccount {
        let born = self.born;
        let acc = self.chats.entry(chat).or_insert_with(|| ChatAccount {
            tokens: 1.0,
            at: born,
            minute: VecDeque::new(),
            paused_until: None,
        });
        if now > acc.at {
            acc.tokens =
                (acc.tokens + now.duration_since(acc.at).as_secs_f64() * CHAT_RATE).min(CHAT_BURST);
            acc.at = now;
        }
        while acc
            .minute
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            acc.minute.pop_front();
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_quiet_chat_gets_a_burst_then_about_one_a_second() {
        let mut p = Pacer::new(Instant::now() - Duration::from_secs(10));
        let t0 = Instant::now();
        for _ in 0..CHAT_BURST as usize {
            assert_eq!(p.ready_at(Some(7), 1.0, t0), t0, "the burst goes at once");
            p.spent(Some(7), 1.0, t0);
        }
        let next = p.ready_at(Some(7), 1.0, t0);
        let wait = next - t0;
        assert!(wait > ms(1000) && wait < ms(1100), "{wait:?}");
        // Another chat is not held back by this one.
        assert_eq!(p.ready_at(Some(8), 1.0, t0), t0);
        // A second later one more may go; after a quiet while the burst is back, never more.
        p.spent(Some(7), 1.0, next);
        let later = next + Duration::from_secs(60);
        for _ in 0..CHAT_BURST as usize {
            assert_eq!(p.ready_at(Some(7), 1.0, later), later);
            p.spent(Some(7), 1.0, later);
        }
        assert!(p.ready_at(Some(7), 1.0, later) > later);
    }

    #[test]
    fn right_after_a_start_the_buckets_are_still_filling() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        assert_eq!(
            p.ready_at(Some(7), 1.0, t0),
            t0,
            "the first reply goes at once"
        );
        assert!(p.ready_at(Some(7), 2.0, t0) > t0 + ms(1000));
        let later = t0 + ms(1100);
        assert_eq!(p.ready_at(Some(7), 2.0, later), later);
        assert!(p.ready_at(Some(7), 3.0, later) > later);
    }

    #[test]
    fn a_send_that_costs_two_waits_for_two_tokens() {
        let mut p = Pacer::new(Instant::now() - Duration::from_secs(10));
        let t0 = Instant::now();
        p.spent(Some(1), CHAT_BURST - 1.0, t0);
        assert_eq!(p.ready_at(Some(1), 1.0, t0), t0);
        let two = p.ready_at(Some(1), 2.0, t0) - t0;
        assert!(two > ms(1000) && two < ms(1100), "{two:?}");
    }

    #[test]
    fn a_group_takes_twenty_a_minute() {
        let mut p = Pacer::new(Instant::now() - Duration::from_secs(10));
        let t0 = Instant::now();
        let mut now = t0;
        for _ in 0..20 {
            now = p.ready_at(Some(-100), 1.0, now);
            p.spent(Some(-100), 1.0, now);
        }
        assert!(now - t0 < Duration::from_secs(20), "{:?}", now - t0);
        let next = p.ready_at(Some(-100), 1.0, now);
        assert!(next >= t0 + Duration::from_secs(60), "{:?}", next - t0);
        // A private chat keeps its own pace.
        assert_eq!(p.ready_at(Some(100), 1.0, now), now);
    }

    #[test]
    fn thirty_a_second_overall() {
        let mut p = Pacer::new(Instant::now() - Duration::from_secs(10));
        let t0 = Instant::now();
        for chat in 0..30 {
            assert_eq!(p.ready_at(Some(chat), 1.0, t0), t0);
            p.spent(Some(chat), 1.0, t0);
        }
        assert_eq!(p.ready_at(Some(31), 1.0, t0), t0 + ms(1000));
        assert_eq!(p.ready_at(None, 1.0, t0), t0 + ms(1000));
        assert_eq!(p.ready_at(None, 1.0, t0 + ms(1000)), t0 + ms(1000));
    }

    #[test]
    fn retry_after_pauses_its_chat_or_everything() {
        let mut p = Pacer::new(Instant::now() - Duration::from_secs(10));
        let t0 = Instant::now();
        p.pause(Some(5), t0 + ms(3000));
        assert!(p.chat_paused(5, t0) && !p.chat_paused(6, t0) && !p.all_paused(t0));
        assert_eq!(p.ready_at(Some(5), 1.0, t0), t0 + ms(3000));
        assert_eq!(p.ready_at(Some(6), 1.0, t0), t0);
        // After the pause: one send, then the sustained rate (no burst).
        let after = t0 + ms(3000);
        assert_eq!(p.ready_at(Some(5), 1.0, after), after);
        p.spent(Some(5), 1.0, after);
        assert!(p.ready_at(Some(5), 1.0, after) > after + ms(1000));
        p.pause(None, t0 + ms(2000));
        assert!(p.all_paused(t0) && !p.all_paused(t0 + ms(2000)));
        assert_eq!(p.ready_at(Some(6), 1.0, t0), t0 + ms(2000));
        assert_eq!(p.ready_at(None, 1.0, t0), t0 + ms(2000));
    }

    #[test]
    fn idle_chats_are_forgotten() {
        let mut p = Pacer::new(Instant::now() - Duration::from_secs(10));
        let t0 = Instant::now();
        p.spent(Some(1), 1.0, t0);
        p.spent(Some(-2), 1.0, t0);
        p.forget_idle(t0);
        assert_eq!(p.chats.len(), 2);
        p.forget_idle(t0 + Duration::from_secs(5));
        assert_eq!(p.chats.len(), 1, "the group remembers its minute");
        p.forget_idle(t0 + Duration::from_secs(61));
        assert!(p.chats.is_empty());
    }
}
