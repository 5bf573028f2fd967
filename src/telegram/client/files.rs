//! Files sent to the bot: `getFile`, then the download from `<api_url>/file/bot<token>/<file_path>`, both
//! behind the `telegram_api` breaker like every other call. The size cap is checked before anything is
//! fetched (the message's size, then `getFile`'s) and held during the download: the body is read chunk by
//! chunk and given up as soon as it passes the cap, so no more than the cap is ever kept. The download's
//! address holds the bot token: it is never logged or shown, and errors are stripped of it.

use std::time::Duration;

use frankenstein::AsyncTelegramApi;
use frankenstein::methods::GetFileParams;
use frankenstein::reqwest;
use frankenstein::response::ErrorResponse;

use super::{RemoteFile, TelegramClient, TgError};

/// How long one download may take, connection included.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// At most this much of an error answer is read.
const MAX_ERROR_BODY: usize = 4096;

/// The client and address files are downloaded with.
#[derive(Clone)]
pub(super) struct Download {
    client: reqwest::Client,
    /// `<api_url>/file/bot<token>`: a secret.
    base: String,
}

impl Download {
    pub(super) fn new(api_url: &str, token: &str) -> Download {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(DOWNLOAD_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Download {
            client,
            base: format!("{}/file/bot{token}", api_url.trim_end_matches('/')),
        }
    }

    /// The address of a file Telegram named by its `file_path` (plain parts only, each encoded).
    fn url(&self, path: &str) -> Result<reqwest::Url, TgError> {
        let parts: Vec<&str> = path.split('/').collect();
        if parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
        {
            return Err(rejected("Telegram answered an unusable file_path"));
        }
        let mut url = reqwest::Url::parse(&self.base)
            .map_err(|_| rejected("telegram.api_url is not a usable address"))?;
        url.path_segments_mut()
            .map_err(|()| rejected("telegram.api_url is not a usable address"))?
            .extend(parts);
        Ok(url)
    }

    /// The body at `url`, or `None` once it passes `max` bytes. An answer other than 200 is an API error
    /// with Telegram's own code and description when it sent them.
    async fn body(
        &self,
        url: reqwest::Url,
        max: u64,
    ) -> Result<Option<Vec<u8>>, frankenstein::Error> {
        // `?` turns a reqwest error into frankenstein's, which drops the address (and the token with it).
        let mut resp = self.client.get(url).send().await?;
        let status = resp.status();
        if !status.is_success() {
            let mut text = Vec::new();
            while let Some(chunk) = resp.chunk().await? {
                text.extend_from_slice(&chunk);
                if text.len() > MAX_ERROR_BODY {
                    break;
                }
            }
            let answer = serde_json::from_slice::<ErrorResponse>(&text).ok();
            return Err(frankenstein::Error::Api(ErrorResponse {
                ok: false,
                description: answer.as_ref().map_or_else(
                    || format!("HTTP {}", status.as_u16()),
                    |a| a.description.clone(),
                ),
                error_code: u64::from(status.as_u16()),
                parameters: answer.and_then(|a| a.parameters),
            }));
        }
        if resp.content_length().is_some_and(|n| n > max) {
            return Ok(None);
        }
        let mut out = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            if (out.len() + chunk.len()) as u64 > max {
                return Ok(None);
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Some(out))
    }
}

/// Why a file sent to the bot was not fetched.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FileError {
    /// Larger than the cap: `size` as Telegram declared it, or `None` when the download passed the cap.
    #[error("{} more than the {max} bytes allowed", .size.map_or_else(|| "it is".to_string(), |s| format!("{s} bytes,")))]
    TooBig { size: Option<u64>, max: u64 },
    #[error(transparent)]
    Telegram(#[from] TgError),
}

fn rejected(description: &str) -> TgError {
    TgError::Rejected {
        code: 0,
        description: description.to_string(),
    }
}

fn too_big(size: Option<u64>, max: u64) -> Result<(), FileError> {
    match size {
        Some(size) if size > max => Err(FileError::TooBig {
            size: Some(size),
            max,
        }),
        _ => Ok(()),
    }
}

impl TelegramClient {
    /// Fetches a file sent to the bot, whole, when it is at most `max` bytes: refused before `getFile`
    /// when the message says it is larger, before the download when `getFile` says so, and during the
    /// download as soon as the body passes `max` (a declared size may be wrong).
    pub async fn fetch_file(&self, file: &RemoteFile, max: u64) -> Result<Vec<u8>, FileError> {
        too_big(file.size, max)?;
        let params = GetFileParams::builder()
            .file_id(file.file_id.clone())
            .build();
        let found = self.guarded(self.bot.get_file(&params)).await?.result;
        too_big(found.file_size, max)?;
        let path = found
            .file_path
            .ok_or_else(|| rejected("Telegram answered no file_path for this file"))?;
        let url = self.files.url(&path)?;
        self.guarded(self.files.body(url, max))
            .await?
            .ok_or(FileError::TooBig { size: None, max })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_addresses_take_plain_parts_only_and_encode_them() {
        let d = Download::new("http://127.0.0.1:1/", "123:ABC");
        assert_eq!(
            d.url("voice/file_3.oga").unwrap().as_str(),
            "http://127.0.0.1:1/file/bot123:ABC/voice/file_3.oga"
        );
        assert_eq!(
            d.url("documents/a b?.pdf").unwrap().path(),
            "/file/bot123:ABC/documents/a%20b%3F.pdf"
        );
        for bad in ["../x", "a//b", "/etc/passwd", "a/./b", ""] {
            assert!(d.url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sizes_past_the_cap_are_refused_and_unknown_ones_left_to_the_download() {
        assert!(too_big(Some(11), 10).is_err());
        assert!(too_big(Some(10), 10).is_ok());
        assert!(too_big(None, 10).is_ok());
        let e = FileError::TooBig {
            size: Some(11),
            max: 10,
        };
        assert_eq!(e.to_string(), "11 bytes, more than the 10 bytes allowed");
        let e = FileError::TooBig {
            size: None,
            max: 10,
        };
        assert_eq!(e.to_string(), "it is more than the 10 bytes allowed");
    }
}
