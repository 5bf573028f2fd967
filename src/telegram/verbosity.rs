//! How much of a running job a chat sees (`/verbosity full|compact|final`), kept per chat as a front value
//! (`telegram.verbosity.<chat>`) so that it outlives restarts. Approval requests and results come in every
//! mode; the mode only chooses what the job's tracker shows while the job runs.

use crate::core::Core;
use crate::errors::CoreError;

/// What a chat sees of a running job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verbosity {
    /// The tracker with the last tool uses, one line each (the default).
    #[default]
    Full,
    /// The tracker with its status, how many steps ran (and failed) and the last step, no list of tools.
    Compact,
    /// No tracker while the job runs: nothing is sent or edited until the job ends, then its result.
    Final,
}

impl Verbosity {
    pub const ALL: [Verbosity; 3] = [Verbosity::Full, Verbosity::Compact, Verbosity::Final];

    pub fn as_str(self) -> &'static str {
        match self {
            Verbosity::Full => "full",
            Verbosity::Compact => "compact",
            Verbosity::Final => "final",
        }
    }

    /// `full`, `compact` or `final`, in any case; anything else is `None`.
    pub fn parse(text: &str) -> Option<Verbosity> {
        Verbosity::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(text.trim()))
    }

    /// What the mode shows, for people.
    pub fn describe(self) -> &'static str {
        match self {
            Verbosity::Full => "the job's tracker with each tool use",
            Verbosity::Compact => "the job's tracker with its status, step count and last step",
            Verbosity::Final => "no tracker while the job runs, only its result",
        }
    }
}

fn key(chat_id: i64) -> String {
    format!("telegram.verbosity.{chat_id}")
}

/// The chat's mode: what `/verbosity` set, else `full`.
pub async fn chat_verbosity(core: &Core, chat_id: i64) -> Verbosity {
    core.front_value(&key(chat_id))
        .await
        .and_then(|v| Verbosity::parse(&v))
        .unwrap_or_default()
}

pub async fn set_chat_verbosity(core: &Core, chat_id: i64, v: Verbosity) -> Result<(), CoreError> {
    core.set_front_value(&key(chat_id), v.as_str()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_modes_parse_in_any_case_and_nothing_else_does() {
        for v in Verbosity::ALL {
            assert_eq!(Verbosity::parse(v.as_str()), Some(v));
            assert_eq!(Verbosity::parse(&v.as_str().to_uppercase()), Some(v));
        }
        assert_eq!(Verbosity::parse(" compact "), Some(Verbosity::Compact));
        for bad in ["", "loud", "fulll", "full compact", "0"] {
            assert_eq!(Verbosity::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Verbosity::default(), Verbosity::Full);
    }
}
