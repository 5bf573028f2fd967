//! Who the bot serves, and how often it answers and audits those it refuses.
//!
//! The bot serves allowed users in their private chats and in the group chats the operator listed; anybody
//! else is refused. Refusals are rate-limited per user, answer and audit row alike, in a map with a fixed
//! cap, so a flood of strangers costs neither memory nor audit rows without bound.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What to do with an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Serve,
    /// The user is not in `telegram.allowed_users`.
    Stranger,
    /// An allowed user in a group chat that is neither listed in `telegram.allowed_chats` nor the admin chat.
    UnlistedChat,
}

/// The chat an update came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub chat_id: i64,
    pub user_id: i64,
    /// Telegram's chat type is `private`.
    pub private: bool,
}

/// The allowlist as configured.
pub struct Allowlist<'a> {
    pub users: &'a [i64],
    pub chats: &'a [i64],
    /// `telegram.admin_chat_id` (0: none). The bot posts notices and approvals there, so taps and commands
    /// there are served as in a listed chat.
    pub admin_chat: i64,
}

impl Allowlist<'_> {
    pub fn check(&self, o: Origin) -> Access {
        if !self.users.contains(&o.user_id) {
            return Access::Stranger;
        }
        // In a private chat Telegram uses the user's id as the chat id; both are checked so that a
        // private chat with somebody else can never be mistaken for the user's own.
        let own_private = o.private && o.chat_id == o.user_id;
        let listed =
            o.chat_id != 0 && (self.chats.contains(&o.chat_id) || o.chat_id == self.admin_chat);
        if own_private || listed {
            Access::Serve
        } else {
            Access::UnlistedChat
        }
    }
}

/// A refused user is answered and audited at most this often.
pub const DENIAL_INTERVAL: Duration = Duration::from_secs(60);
/// At most this many refused users are remembered at once.
pub const DENIAL_CAP: usize = 10_000;
/// While the map is full, expired entries are looked for at most this often.
const FULL_PRUNE_GAP: Duration = Duration::from_secs(1);

/// When each refused user was last answered and audited.
pub struct Denials {
    last: HashMap<i64, Instant>,
    cap: usize,
    pruned_at: Instant,
    full_warned_at: Option<Instant>,
}

impl Default for Denials {
    fn default() -> Self {
        Denials::with_cap(DENIAL_CAP)
    }
}

impl Denials {
    pub fn with_cap(cap: usize) -> Denials {
        Denials {
            last: HashMap::new(),
            cap,
            pruned_at: Instant::now(),
            full_warned_at: None,
        }
    }

    /// Whether a refusal of `user` at `now` is answered and audited (true at most once per interval).
    /// While `cap` users were refused within the last interval, further strangers get nothing at all.
    pub fn due(&mut self, user: i64, now: Instant) -> bool {
        let since_prune = now.saturating_duration_since(self.pruned_at);
        if since_prune >= DENIAL_INTERVAL
            || (self.last.len() >= self.cap && since_prune >= FULL_PRUNE_GAP)
        {
            self.last
                .retain(|_, t| now.saturating_duration_since(*t) < DENIAL_INTERVAL);
            self.pruned_at = now;
        }
        let full = self.last.len() >= self.cap;
        match self.last.get_mut(&user) {
            Some(t) if now.saturating_duration_since(*t) < DENIAL_INTERVAL => false,
            Some(t) => {
                *t = now;
                true
            }
            None if full => {
                if self
                    .full_warned_at
                    .is_none_or(|w| now.saturating_duration_since(w) >= DENIAL_INTERVAL)
                {
                    self.full_warned_at = Some(now);
                    tracing::warn!(target: "televibe.telegram", cap = self.cap, "Too many refused Telegram users this minute: further ones are neither answered nor audited");
                }
                false
            }
            None => {
                self.last.insert(user, now);
                true
            }
        }
    }

    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: i64 = 42;
    const GROUP: i64 = -100_123;
    const ADMIN: i64 = -100_777;

    fn list() -> Allowlist<'static> {
        Allowlist {
            users: &[ALICE],
            chats: &[GROUP],
            admin_chat: ADMIN,
        }
    }

    fn at(chat_id: i64, user_id: i64, private: bool) -> Origin {
        Origin {
            chat_id,
            user_id,
            private,
        }
    }

    #[test]
    fn allowed_users_are_served_in_their_private_chat_and_listed_chats_only() {
        let l = list();
        assert_eq!(l.check(at(ALICE, ALICE, true)), Access::Serve);
        assert_eq!(l.check(at(GROUP, ALICE, false)), Access::Serve);
        assert_eq!(l.check(at(ADMIN, ALICE, false)), Access::Serve);
        assert_eq!(l.check(at(-5, ALICE, false)), Access::UnlistedChat);
        // A "private" chat whose id is not the user's is nobody's own chat.
        assert_eq!(l.check(at(7, ALICE, true)), Access::UnlistedChat);
        // A button without its message has no chat.
        assert_eq!(l.check(at(0, ALICE, false)), Access::UnlistedChat);
        // A listed chat does not admit its other members.
        assert_eq!(l.check(at(GROUP, 666, false)), Access::Stranger);
        assert_eq!(l.check(at(666, 666, true)), Access::Stranger);
        let no_admin = Allowlist {
            users: &[ALICE],
            chats: &[],
            admin_chat: 0,
        };
        assert_eq!(no_admin.check(at(0, ALICE, false)), Access::UnlistedChat);
    }

    #[test]
    fn one_refusal_a_minute_per_user() {
        let mut d = Denials::default();
        let t0 = Instant::now();
        assert!(d.due(1, t0));
        for i in 1..100 {
            assert!(!d.due(1, t0 + Duration::from_millis(i * 100)));
        }
        assert!(d.due(2, t0 + Duration::from_secs(1)));
        assert!(d.due(1, t0 + DENIAL_INTERVAL));
        assert!(!d.due(1, t0 + DENIAL_INTERVAL + Duration::from_secs(1)));
    }

    #[test]
    fn a_flood_of_strangers_stays_bounded() {
        let mut d = Denials::with_cap(100);
        let t0 = Instant::now();
        let mut answered = 0;
        for user in 0..10_000 {
            if d.due(user, t0 + Duration::from_micros(user as u64)) {
                answered += 1;
            }
            assert!(d.len() <= 100);
        }
        assert_eq!(answered, 100, "only as many as the cap within a minute");
        // A minute later the old entries are pruned and new strangers are answered again.
        let later = t0 + DENIAL_INTERVAL + Duration::from_secs(1);
        assert!(d.due(20_000, later));
        assert_eq!(d.len(), 1, "expired entries are gone");
    }

    #[test]
    fn old_entries_are_pruned_without_a_full_map() {
        let mut d = Denials::default();
        let t0 = Instant::now();
        for user in 0..500 {
            assert!(d.due(user, t0));
        }
        assert_eq!(d.len(), 500);
        assert!(d.due(9999, t0 + DENIAL_INTERVAL * 2));
        assert_eq!(d.len(), 1);
    }
}
