//! The domain: identifiers and their validation (project slugs, session ids, git branch names) and the
//! records (`records`) every layer passes around.

/// An enum stored and shown as a fixed lowercase word: `as_str`, `parse` and `ALL` from one list.
macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $word:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)+
                }
            }

            pub fn parse(word: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|v| v.as_str() == word)
            }
        }
    };
}

pub mod breaker;
mod records;
mod remote;

/// The spec's degraded-mode message.
pub const READ_ONLY_MESSAGE: &str = "⚠️ System in read-only mode. Writes disabled.";

pub use records::{
    Approval, ApprovalState, AuditRecord, CLAUDE, ErrorType, Job, JobKind, JobOutcome, JobStatus,
    NewSession, OutboxEvent, Project, ScheduledInstruction, Session, SessionState,
};
pub use remote::{
    CLONE_URL_FORMS, InvalidUrl, check_clone_dir_name, check_clone_url, clone_name, looks_like_url,
    redact_credentials,
};

use std::fmt;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidName(pub String);

/// Whether `id` is a project id: `^[a-z0-9][a-z0-9-]{0,62}$`.
pub fn is_project_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// The slug of a directory name: lowercase, runs of other characters become `-`, trimmed to 63.
pub fn slugify(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let mut s: String = out.trim_matches('-').chars().take(63).collect();
    while s.ends_with('-') {
        s.pop();
    }
    if s.is_empty() { "project".into() } else { s }
}

/// A session id `S<n>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub i64);

impl SessionId {
    /// Accepts `S12` and `s12` (people type on phones) and plain `12`.
    pub fn parse(s: &str) -> Option<SessionId> {
        let digits = s.strip_prefix(['S', 's']).unwrap_or(s);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 18 {
            return None;
        }
        digits.parse().ok().filter(|n| *n > 0).map(SessionId)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S{}", self.0)
    }
}

/// A schedule id `SC<n>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScheduleId(pub i64);

impl ScheduleId {
    /// Accepts `SC4` and `sc4` (people type on phones).
    pub fn parse(s: &str) -> Option<ScheduleId> {
        let digits = s
            .get(..2)
            .filter(|p| p.eq_ignore_ascii_case("sc"))
            .map(|_| &s[2..])?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 18 {
            return None;
        }
        digits.parse().ok().filter(|n| *n > 0).map(ScheduleId)
    }
}

impl fmt::Display for ScheduleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SC{}", self.0)
    }
}

/// Validates a branch name with the rules of `git check-ref-format --branch`, plus no leading `-`.
pub fn validate_branch(name: &str) -> Result<(), InvalidName> {
    let bad = |why: &str| Err(InvalidName(format!("invalid branch name {name:?}: {why}")));
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.starts_with('-') {
        return bad("it must not start with '-'");
    }
    if name == "@" {
        return bad("'@' alone is not a branch name");
    }
    if name.len() > 200 {
        return bad("it is longer than 200 bytes");
    }
    if name.starts_with('/') || name.ends_with('/') {
        return bad("it must not start or end with '/'");
    }
    if name.ends_with('.') {
        return bad("it must not end with '.'");
    }
    if name.contains("..") || name.contains("//") || name.contains("@{") {
        return bad("it must not contain '..', '//' or '@{'");
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\'))
    {
        return bad(&format!("it must not contain {c:?}"));
    }
    for part in name.split('/') {
        if part.starts_with('.') {
            return bad("no path component may start with '.'");
        }
        if part.ends_with(".lock") {
            return bad("no path component may end with '.lock'");
        }
    }
    if name == "HEAD" {
        return bad("HEAD is not a branch name");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_ids() {
        assert!(is_project_id("myapp"));
        assert!(is_project_id("0-a"));
        assert!(!is_project_id("-a"));
        assert!(!is_project_id("My"));
        assert!(!is_project_id(""));
        assert!(!is_project_id(&"a".repeat(64)));
        assert_eq!(slugify("My App_v2"), "my-app-v2");
        assert_eq!(slugify("---"), "project");
        assert!(is_project_id(&slugify(&"Z".repeat(100))));
    }

    #[test]
    fn session_ids() {
        assert_eq!(SessionId::parse("S12"), Some(SessionId(12)));
        assert_eq!(SessionId::parse("s3"), Some(SessionId(3)));
        assert_eq!(SessionId::parse("7"), Some(SessionId(7)));
        for bad in ["", "S", "S0", "S-1", "X1", "S1a"] {
            assert_eq!(SessionId::parse(bad), None, "{bad}");
        }
        assert_eq!(SessionId(4).to_string(), "S4");
    }

    #[test]
    fn schedule_ids() {
        assert_eq!(ScheduleId::parse("SC12"), Some(ScheduleId(12)));
        assert_eq!(ScheduleId::parse("sc3"), Some(ScheduleId(3)));
        assert_eq!(ScheduleId::parse("Sc3"), Some(ScheduleId(3)));
        for bad in ["", "SC", "SC0", "S1", "3", "SC-1", "SC1a", "é1", "SCé"] {
            assert_eq!(ScheduleId::parse(bad), None, "{bad}");
        }
        assert_eq!(ScheduleId(4).to_string(), "SC4");
    }

    #[test]
    fn branch_names_follow_check_ref_format() {
        for good in [
            "main",
            "feature/login",
            "fix-1.2",
            "a/b/c",
            "user@host",
            "ünïcode",
        ] {
            validate_branch(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in [
            "", "-x", "--force", "a..b", "a b", "a~1", "a^", "a:b", "a?", "a*", "a[", "a\\b", "/a",
            "a/", "a.", ".a", "a/.b", "a.lock", "a/b.lock", "a//b", "a@{1}", "@", "HEAD", "a\tb",
            "a\u{7f}",
        ] {
            assert!(validate_branch(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
