//! The phone's input and output: `[voice]` (transcribing voice notes), `[files]` (files sent in and fetched
//! out) and `[github]` (pull requests), as written and validated.

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// `[voice]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVoice {
    /// An OpenAI-compatible `…/audio/transcriptions` endpoint; empty: voice notes are off.
    pub transcription_url: String,
    pub model: String,
    /// A voice note larger than this is refused before it is downloaded.
    pub max_bytes: u64,
    /// The endpoint's key; normally from `TELEVIBE_VOICE__API_KEY`. Never printed, never given to a job.
    pub api_key: String,
}

impl Default for RawVoice {
    fn default() -> Self {
        RawVoice {
            transcription_url: String::new(),
            model: "whisper-1".into(),
            max_bytes: 10 * 1024 * 1024,
            api_key: String::new(),
        }
    }
}

/// `[files]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFiles {
    /// The largest photo or document saved into a session's inbox, and the largest file `/get` sends.
    pub max_bytes: u64,
}

impl Default for RawFiles {
    fn default() -> Self {
        RawFiles {
            max_bytes: 20 * 1024 * 1024,
        }
    }
}

/// `[github]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGithub {
    /// The REST API's base address.
    pub api_url: String,
    /// A token allowed to open pull requests; normally from `TELEVIBE_GITHUB__TOKEN`. Never printed, never
    /// given to a job.
    pub token: String,
}

impl Default for RawGithub {
    fn default() -> Self {
        RawGithub {
            api_url: "https://api.github.com".into(),
            token: String::new(),
        }
    }
}

/// `[voice]`, validated.
#[derive(Debug, Clone)]
pub struct VoiceSettings {
    /// `None`: voice notes are off (the user is told how to turn them on).
    pub transcription_url: Option<String>,
    pub model: String,
    pub max_bytes: u64,
    pub api_key: Option<String>,
}

/// `[files]`, validated.
#[derive(Debug, Clone)]
pub struct FilesSettings {
    pub max_bytes: u64,
}

/// `[github]`, validated.
#[derive(Debug, Clone)]
pub struct GithubSettings {
    pub api_url: String,
    pub token: Option<String>,
}

/// The most any of the size caps may be: Telegram's bots download at most 20 MB and upload at most 50 MB.
const MAX_CAP: u64 = 50 * 1024 * 1024;

fn http_url(key: &'static str, url: &str) -> Result<(), ConfigError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(()),
        _ => Err(invalid(
            key,
            format!("{url:?} is not an http:// or https:// address"),
        )),
    }
}

fn cap(key: &'static str, bytes: u64) -> Result<u64, ConfigError> {
    if bytes == 0 || bytes > MAX_CAP {
        return Err(invalid(
            key,
            format!("must be between 1 and {MAX_CAP} bytes"),
        ));
    }
    Ok(bytes)
}

fn secret(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// `[voice]`: an http(s) endpoint or none, a model, a cap.
pub(super) fn voice(v: &RawVoice) -> Result<VoiceSettings, ConfigError> {
    let url = v.transcription_url.trim();
    if !url.is_empty() {
        http_url("voice.transcription_url", url)?;
    }
    if v.model.trim().is_empty() {
        return Err(invalid("voice.model", "must not be empty"));
    }
    Ok(VoiceSettings {
        transcription_url: (!url.is_empty()).then(|| url.to_string()),
        model: v.model.trim().to_string(),
        max_bytes: cap("voice.max_bytes", v.max_bytes)?,
        api_key: secret(&v.api_key),
    })
}

/// `[files]`: a cap.
pub(super) fn files(f: &RawFiles) -> Result<FilesSettings, ConfigError> {
    Ok(FilesSettings {
        max_bytes: cap("files.max_bytes", f.max_bytes)?,
    })
}

/// `[github]`: an http(s) API address.
pub(super) fn github(g: &RawGithub) -> Result<GithubSettings, ConfigError> {
    let url = g.api_url.trim().trim_end_matches('/');
    http_url("github.api_url", url)?;
    Ok(GithubSettings {
        api_url: url.to_string(),
        token: secret(&g.token),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_leave_voice_off_and_cap_files_at_20_mb() {
        let v = voice(&RawVoice::default()).unwrap();
        assert_eq!(v.transcription_url, None);
        assert_eq!((v.model.as_str(), v.max_bytes), ("whisper-1", 10_485_760));
        assert_eq!(files(&RawFiles::default()).unwrap().max_bytes, 20_971_520);
        let g = github(&RawGithub::default()).unwrap();
        assert_eq!(
            (g.api_url.as_str(), g.token),
            ("https://api.github.com", None)
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let bad_url = RawVoice {
            transcription_url: "file:///etc/passwd".into(),
            ..RawVoice::default()
        };
        let e = voice(&bad_url).unwrap_err().to_string();
        assert!(e.contains("voice.transcription_url"), "{e}");
        let e = files(&RawFiles { max_bytes: 0 }).unwrap_err().to_string();
        assert!(e.contains("files.max_bytes"), "{e}");
        let e = github(&RawGithub {
            api_url: "api.github.com".into(),
            token: String::new(),
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("github.api_url"), "{e}");
    }
}
