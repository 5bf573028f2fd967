//! A person's decision, and the approval calls waiting for one (by approval id, with their job). The core
//! holds the map; a decision from Telegram or MCP wakes exactly the call it answers.

use std::collections::HashMap;

use tokio::sync::oneshot;

/// A person's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    ApproveOnce,
    ApproveSession,
    Deny,
    DenyStop,
}

impl Choice {
    pub fn as_str(self) -> &'static str {
        match self {
            Choice::ApproveOnce => "approve_once",
            Choice::ApproveSession => "approve_session",
            Choice::Deny => "deny",
            Choice::DenyStop => "deny_stop",
        }
    }

    pub fn approves(self) -> bool {
        matches!(self, Choice::ApproveOnce | Choice::ApproveSession)
    }
}

/// Waiting approval calls, by approval id.
#[derive(Default)]
pub struct Waiters {
    pub(super) map: HashMap<String, (String, oneshot::Sender<(Choice, String)>)>,
}
