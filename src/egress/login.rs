//! The operator's refreshable agent login (the credentials file an agent's `/login` writes, named by its
//! driver), kept fresh by the daemon.
//!
//! A sandboxed job never holds it: its copy carries a placeholder, and the model route asks
//! [`OAuthLogin::access_token`] for the real access token at each request. When that token is within five
//! minutes of its expiry the daemon refreshes it (OAuth `refresh_token` grant at `agent.oauth_token_url`)
//! and writes the new tokens back to the operator's file, so the operator's own CLI keeps working too.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};

/// How long before its expiry a token is refreshed.
const MARGIN_MS: i64 = 5 * 60 * 1000;

/// The operator's login file and where its tokens are refreshed.
pub struct OAuthLogin {
    path: PathBuf,
    token_url: String,
    /// The agent's public OAuth client id (the one its `/login` uses).
    client_id: String,
    /// The key of the login's entry in the file.
    entry: String,
    /// One refresh at a time: a refresh token may be good for one use only.
    lock: tokio::sync::Mutex<()>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl OAuthLogin {
    pub fn new(path: &Path, token_url: &str, client_id: &str, entry: &str) -> Arc<OAuthLogin> {
        Arc::new(OAuthLogin {
            path: path.to_path_buf(),
            token_url: token_url.to_string(),
            client_id: client_id.to_string(),
            entry: entry.to_string(),
            lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The current access token, refreshed first when it is about to expire. A failed refresh is logged
    /// and the old token returned (the model API then says what is wrong).
    pub async fn access_token(&self) -> Option<String> {
        let _one = self.lock.lock().await;
        let text = tokio::fs::read(&self.path).await.ok()?;
        let mut login: Value = serde_json::from_slice(&text).ok()?;
        let oauth = login.get_mut(&self.entry)?.as_object_mut()?;
        let current = oauth.get("accessToken")?.as_str()?.to_string();
        let expires = oauth
            .get("expiresAt")
            .and_then(Value::as_i64)
            .unwrap_or(i64::MAX);
        if expires - now_ms() > MARGIN_MS {
            return Some(current);
        }
        let Some(refresh) = oauth.get("refreshToken").and_then(Value::as_str) else {
            return Some(current);
        };
        match self.refresh(refresh).await {
            Ok(fresh) => {
                oauth.insert("accessToken".into(), json!(fresh.access));
                if let Some(r) = &fresh.refresh {
                    oauth.insert("refreshToken".into(), json!(r));
                }
                oauth.insert(
                    "expiresAt".into(),
                    json!(now_ms() + fresh.expires_in * 1000),
                );
                let bytes = serde_json::to_vec(&login).ok()?;
                let (dir, name) = (self.path.parent()?, self.path.file_name()?);
                if let Err(e) = crate::safe_fs::replace(dir, Path::new(name), &bytes, 0o600) {
                    tracing::warn!(target: "televibe.egress", error = %e, "The refreshed agent login could not be saved");
                }
                tracing::info!(target: "televibe.egress", "Refreshed the operator's agent login");
                Some(fresh.access)
            }
            Err(e) => {
                tracing::warn!(target: "televibe.egress", error = %e, "The operator's agent login could not be refreshed");
                Some(current)
            }
        }
    }

    async fn refresh(&self, refresh_token: &str) -> Result<Fresh, String> {
        let client = frankenstein::reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        let resp = client
            .post(&self.token_url)
            .header("content-type", "application/json")
            .body(
                json!({
                    "grant_type": "refresh_token",
                    "refresh_token": refresh_token,
                    "client_id": self.client_id,
                })
                .to_string(),
            )
            .send()
            .await
            .map_err(|e| format!("{}: {}", self.token_url, e.without_url()))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| format!("{}: {}", self.token_url, e.without_url()))?;
        let body: Value = serde_json::from_slice(&bytes)
            .map_err(|_| format!("{}: the answer is not JSON", self.token_url))?;
        if !status.is_success() {
            return Err(format!("{}: HTTP {status}", self.token_url));
        }
        Ok(Fresh {
            access: body["access_token"]
                .as_str()
                .ok_or("the answer has no access_token")?
                .to_string(),
            refresh: body["refresh_token"].as_str().map(str::to_string),
            expires_in: body["expires_in"].as_i64().unwrap_or(3600),
        })
    }
}

struct Fresh {
    access: String,
    refresh: Option<String>,
    expires_in: i64,
}
