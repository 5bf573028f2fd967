//! Claude Code's state directory and login: where the operator's is (`CLAUDE_CONFIG_DIR`, else
//! `~/.claude`), what a session's holds (`settings.json`, `.credentials.json`, `projects/`), and the
//! read-only copy of the login a job may see.

use std::path::{Path, PathBuf};

use crate::agents::{AgentFiles, ModelApi, OAuthClient};

/// The variable naming Claude Code's state directory.
pub const STATE_ENV: &str = "CLAUDE_CONFIG_DIR";

/// The login file of a state directory (`/login` writes it).
pub const CREDENTIALS: &str = ".credentials.json";

/// The settings file (hooks, plugins), held read-only in a job's state.
pub const SETTINGS: &str = "settings.json";

pub static FILES: AgentFiles = AgentFiles {
    state_env: STATE_ENV,
    settings: &[(SETTINGS, "{}\n")],
    credentials: Some(CREDENTIALS),
    locked_dirs: &[],
};

/// Claude Code's public OAuth client id (the one its `/login` uses), and its login's entry.
const OAUTH: OAuthClient = OAuthClient {
    client_id: "9d1c250a-e61b-44d9-88ed-5944d1962f5e",
    entry: "claudeAiOauth",
};

pub static MODEL_API: ModelApi = ModelApi {
    base_url_env: "ANTHROPIC_BASE_URL",
    default_upstream: "https://api.anthropic.com",
    secrets: &[
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "CLAUDE_CODE_OAUTH_TOKEN",
    ],
    oauth: Some(OAUTH),
};

/// The operator's own state: `CLAUDE_CONFIG_DIR` of the daemon, else `.claude` in the agent's home.
pub fn operator_state(home: &Path) -> PathBuf {
    std::env::var_os(STATE_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".claude"))
}

/// The operator's login as a job may see it: never the refresh token (a job could keep or spend it), so
/// the job can neither change nor prolong the login. With `placeholder` (the job's network goes through
/// the egress proxy) not the access token either: the placeholder instead, good "forever" so the agent
/// never tries to refresh it, and the proxy puts the real, fresh token into each request. None when it is
/// not the expected JSON.
pub fn login_copy(text: &[u8], placeholder: Option<&str>) -> Option<Vec<u8>> {
    let mut login: serde_json::Value = serde_json::from_slice(text).ok()?;
    for entry in login.as_object_mut()?.values_mut() {
        if let Some(o) = entry.as_object_mut() {
            o.remove("refreshToken");
            if let Some(p) = placeholder
                && o.contains_key("accessToken")
            {
                o.insert("accessToken".into(), serde_json::json!(p));
                o.insert("expiresAt".into(), serde_json::json!(4_102_444_800_000i64));
            }
        }
    }
    serde_json::to_vec(&login).ok()
}

/// Claude Code keeps the conversations of a working directory under `projects/<the directory, each other
/// character than an ASCII letter or digit a dash>`.
pub fn conversations(cwd: &Path) -> PathBuf {
    let encoded: String = cwd
        .display()
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    Path::new("projects").join(encoded)
}
