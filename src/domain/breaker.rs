//! The breakers' names, states and validated settings: plain values the configuration, the metrics and the
//! breakers themselves share (no logic here, so none of them depends on another through it).

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// The three breakers of the operations spec, one for Codex's model API as `claude_code` is Claude Code's,
/// one for uploads of backups, and one for the voice notes' transcription endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerName {
    ClaudeCode,
    Codex,
    TelegramApi,
    GitOperations,
    BackupRemote,
    VoiceTranscription,
}

impl BreakerName {
    pub const ALL: [BreakerName; 6] = [
        BreakerName::ClaudeCode,
        BreakerName::Codex,
        BreakerName::TelegramApi,
        BreakerName::GitOperations,
        BreakerName::BackupRemote,
        BreakerName::VoiceTranscription,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BreakerName::ClaudeCode => "claude_code",
            BreakerName::Codex => "codex",
            BreakerName::TelegramApi => "telegram_api",
            BreakerName::GitOperations => "git_operations",
            BreakerName::BackupRemote => "backup_remote",
            BreakerName::VoiceTranscription => "voice_transcription",
        }
    }

    /// The human name used in the `on_open` / `on_close` log lines.
    pub fn title(self) -> &'static str {
        match self {
            BreakerName::ClaudeCode => "Claude Code",
            BreakerName::Codex => "Codex",
            BreakerName::TelegramApi => "Telegram API",
            BreakerName::GitOperations => "Git Operations",
            BreakerName::BackupRemote => "Backup Remote",
            BreakerName::VoiceTranscription => "Voice Transcription",
        }
    }

    pub fn parse(s: &str) -> Option<BreakerName> {
        BreakerName::ALL.into_iter().find(|b| b.as_str() == s)
    }
}

impl fmt::Display for BreakerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state as reported to people and to the gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// The gauge value of the spec: 1 closed, 0.5 half-open, 0 open.
    pub fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 1.0,
            BreakerState::HalfOpen => 0.5,
            BreakerState::Open => 0.0,
        }
    }
}

/// One breaker's validated thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    pub failure_threshold: u32,
    pub success_threshold: u32,
    pub timeout: Duration,
    pub half_open_requests: u32,
}
