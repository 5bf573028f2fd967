//! Codex's state directory and login: where the operator's is (`CODEX_HOME`, else `~/.codex`), what a
//! session's holds (`config.toml`, `auth.json`, its threads under `sessions/`), and the copy of the login
//! a job may see.

use std::path::{Path, PathBuf};

use crate::agents::{AgentFiles, ModelApi};

/// The variable naming Codex's state directory (it must exist when set).
pub const STATE_ENV: &str = "CODEX_HOME";

/// The login file of a state directory (`codex login` writes it).
pub const CREDENTIALS: &str = "auth.json";

/// The settings file, held read-only in a job's state.
pub const SETTINGS: &str = "config.toml";

pub static FILES: AgentFiles = AgentFiles {
    state_env: STATE_ENV,
    settings: &[(SETTINGS, "")],
    credentials: Some(CREDENTIALS),
    // Execution-policy rules (`decision = "allow"` runs a command without asking) and hooks.
    locked_dirs: &["rules", "hooks"],
};

/// The model API: the Responses API at `OPENAI_BASE_URL` of `[agents.codex] env` (Codex 0.169.0 itself
/// ignores that variable; the daemon passes it as the base URL of its model provider), with the key in
/// `OPENAI_API_KEY`.
pub static MODEL_API: ModelApi = ModelApi {
    base_url_env: "OPENAI_BASE_URL",
    default_upstream: "https://api.openai.com/v1",
    secrets: &["OPENAI_API_KEY"],
    oauth: None,
};

/// The operator's own state: `CODEX_HOME` of the daemon, else `.codex` in the agent's home.
pub fn operator_state(home: &Path) -> PathBuf {
    std::env::var_os(STATE_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".codex"))
}

/// The operator's login as a job may see it: never the refresh token (a job could keep or spend it). With
/// `placeholder` (the job's network goes through the egress proxy) no API key either: an isolated job's
/// key comes from `OPENAI_API_KEY` as a placeholder the proxy replaces; an account login (`codex login`)
/// keeps its access token, which Codex sends itself through a `CONNECT` tunnel the proxy cannot read into.
/// None when it is not the expected JSON.
pub fn login_copy(text: &[u8], placeholder: Option<&str>) -> Option<Vec<u8>> {
    let mut login: serde_json::Value = serde_json::from_slice(text).ok()?;
    let o = login.as_object_mut()?;
    if placeholder.is_some() {
        o.remove("OPENAI_API_KEY");
    }
    if let Some(tokens) = o.get_mut("tokens").and_then(|t| t.as_object_mut()) {
        tokens.remove("refresh_token");
    }
    serde_json::to_vec(&login).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_copy_never_holds_the_refresh_token() {
        let login = br#"{"OPENAI_API_KEY":"sk-real","tokens":{"access_token":"a","refresh_token":"r","id_token":"i"}}"#;
        let copy: serde_json::Value =
            serde_json::from_slice(&login_copy(login, None).unwrap()).unwrap();
        assert!(copy["tokens"].get("refresh_token").is_none());
        assert_eq!(copy["tokens"]["access_token"], "a");
        assert_eq!(copy["OPENAI_API_KEY"], "sk-real");
        let isolated: serde_json::Value =
            serde_json::from_slice(&login_copy(login, Some("ph")).unwrap()).unwrap();
        assert!(isolated.get("OPENAI_API_KEY").is_none(), "{isolated}");
        assert!(isolated["tokens"].get("refresh_token").is_none());
        assert!(login_copy(b"not json", None).is_none());
    }
}
