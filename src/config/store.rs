//! `[store]`, validated: where the store lives (empty `url`: SQLite's file; a `postgres://` URL without a
//! password, the password from `TELEVIBE_STORE__PASSWORD` or `password_file`), the busy timeout, the check
//! intervals and the retentions.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, StoreSettings, invalid};

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// Empty: SQLite at `<root>/orchestrator/state.db`; `postgres://user@host:port/db`: that PostgreSQL
    /// database (never with a password in it).
    pub url: String,
    /// The PostgreSQL password; normally from `TELEVIBE_STORE__PASSWORD`. Never printed.
    pub password: String,
    /// A file whose first line is the PostgreSQL password (containers' and systemd's credentials).
    pub password_file: String,
    pub busy_timeout_ms: u64,
    pub integrity_check_interval_secs: u64,
    pub read_only_probe_secs: u64,
    /// Delivered outbox rows older than this many days are deleted by the janitor.
    pub events_retention_days: u32,
    /// Finished jobs older than this many days are deleted with their events and approvals.
    pub jobs_retention_days: u32,
}

/// Debug output never holds the password.
impl std::fmt::Debug for RawStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let masked = |s: &str| if s.is_empty() { "" } else { super::MASK };
        f.debug_struct("RawStore")
            .field("url", &self.url)
            .field("password", &masked(&self.password))
            .field("password_file", &self.password_file)
            .field("busy_timeout_ms", &self.busy_timeout_ms)
            .field(
                "integrity_check_interval_secs",
                &self.integrity_check_interval_secs,
            )
            .field("read_only_probe_secs", &self.read_only_probe_secs)
            .field("events_retention_days", &self.events_retention_days)
            .field("jobs_retention_days", &self.jobs_retention_days)
            .finish()
    }
}

/// `store.url`: empty (SQLite) or a PostgreSQL URL without a password.
fn store_url(url: &str) -> Result<Option<String>, ConfigError> {
    let url = url.trim();
    if url.is_empty() {
        return Ok(None);
    }
    let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    else {
        let scheme = url.split_once("://").map_or(url, |(s, _)| s);
        return Err(invalid(
            "store.url",
            format!(
                "{scheme:?} is not a store this daemon speaks to: leave store.url empty for SQLite \
                 (<root>/orchestrator/state.db), or give postgres://user@host:port/database"
            ),
        ));
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let user_info = authority.rfind('@').map(|at| &authority[..at]);
    let query = rest.split_once('?').map_or("", |(_, q)| q);
    if user_info.is_some_and(|u| u.contains(':'))
        || query
            .split('&')
            .any(|p| p.to_ascii_lowercase().starts_with("password="))
    {
        return Err(invalid(
            "store.url",
            "holds a password; write the URL without it (postgres://user@host:port/database) and give the \
             password in TELEVIBE_STORE__PASSWORD or in a file named by store.password_file",
        ));
    }
    if authority.rsplit('@').next().unwrap_or("").is_empty() {
        return Err(invalid(
            "store.url",
            "names no host (postgres://user@host:port/database)",
        ));
    }
    Ok(Some(url.to_string()))
}

/// The PostgreSQL password: `store.password` (`TELEVIBE_STORE__PASSWORD`) or the first line of
/// `store.password_file`, not both.
fn store_password(st: &RawStore) -> Result<Option<String>, ConfigError> {
    let direct = st.password.trim();
    let file = st.password_file.trim();
    match (direct.is_empty(), file.is_empty()) {
        (true, true) => Ok(None),
        (false, true) => Ok(Some(direct.to_string())),
        (true, false) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| invalid("store.password_file", format!("{file}: {e}")))?;
            let first = text.lines().next().unwrap_or("").trim_end_matches('\r');
            if first.is_empty() {
                return Err(invalid(
                    "store.password_file",
                    format!("{file}: its first line is empty"),
                ));
            }
            Ok(Some(first.to_string()))
        }
        (false, false) => Err(invalid(
            "store.password_file",
            "both TELEVIBE_STORE__PASSWORD (store.password) and store.password_file are set: keep one",
        )),
    }
}

/// `[store]`: where it lives, the busy timeout, the check intervals and the retentions.
pub(super) fn store(st: &RawStore) -> Result<StoreSettings, ConfigError> {
    let url = store_url(&st.url)?;
    let password = match &url {
        Some(_) => store_password(st)?,
        None => None,
    };
    if st.busy_timeout_ms == 0 {
        return Err(invalid("store.busy_timeout_ms", "must be at least 1"));
    }
    if st.integrity_check_interval_secs == 0 || st.read_only_probe_secs == 0 {
        return Err(invalid(
            "store.integrity_check_interval_secs",
            "store intervals must be at least 1 second",
        ));
    }
    if st.events_retention_days == 0 || st.jobs_retention_days == 0 {
        return Err(invalid(
            "store.jobs_retention_days",
            "retention must be at least 1 day (store.events_retention_days, store.jobs_retention_days)",
        ));
    }
    Ok(StoreSettings {
        url,
        password,
        password_file: (!st.password_file.trim().is_empty())
            .then(|| std::path::PathBuf::from(st.password_file.trim())),
        busy_timeout: Duration::from_millis(st.busy_timeout_ms),
        integrity_check_interval: Duration::from_secs(st.integrity_check_interval_secs),
        read_only_probe: Duration::from_secs(st.read_only_probe_secs),
        events_retention_days: st.events_retention_days,
        jobs_retention_days: st.jobs_retention_days,
    })
}
