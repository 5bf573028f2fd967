//! Where the configuration comes from — built-in defaults, then `config.toml` (`--config`,
//! `TELEVIBE_CONFIG` or `./config.toml`), then `TELEVIBE_*` variables — the bot token's file, and the
//! masked rendering `config show` prints.

use std::path::PathBuf;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};

use super::raw::{RawConfig, RawTelegram};
use super::{Config, ConfigError, invalid};

/// Environment variables with the `TELEVIBE_` prefix that are not configuration keys.
/// They are set for agents and bridges (and `TELEVIBE_CONFIG` names the file), so the env provider skips them.
const NON_CONFIG_ENV: &[&str] = &[
    "CONFIG",
    "PROJECT_ID",
    "SESSION_ID",
    "JOB_ID",
    "BRANCH",
    "WORKSPACE",
    "JOB_TOKEN",
];

/// Where the configuration comes from.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// `--config` or `TELEVIBE_CONFIG`: must exist. Without it `./config.toml` is read when present.
    pub explicit: Option<PathBuf>,
}

impl ConfigSource {
    fn file(&self) -> Result<Option<PathBuf>, ConfigError> {
        match &self.explicit {
            Some(p) if p.is_file() => Ok(Some(p.clone())),
            Some(p) => Err(ConfigError::MissingFile { path: p.clone() }),
            None => {
                let local = PathBuf::from("config.toml");
                Ok(local.is_file().then_some(local))
            }
        }
    }

    /// Merges defaults, the file and the environment into a raw config.
    pub fn load_raw(&self) -> Result<(RawConfig, Option<PathBuf>), ConfigError> {
        let file = self.file()?;
        let mut fig = Figment::from(Serialized::defaults(RawConfig::default()));
        if let Some(path) = &file {
            fig = fig.merge(Toml::file_exact(path));
        }
        let env = Env::prefixed("TELEVIBE_")
            .filter(|key| {
                !NON_CONFIG_ENV
                    .iter()
                    .any(|skip| key.as_str().eq_ignore_ascii_case(skip))
            })
            .split("__");
        fig = fig.merge(env);
        let raw: RawConfig = fig
            .extract()
            .map_err(|e| ConfigError::Parse(describe_figment_error(e)))?;
        Ok((raw, file))
    }

    /// Loads and validates.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let (raw, file) = self.load_raw()?;
        let mut cfg = Config::validate(raw)?;
        cfg.file = file;
        Ok(cfg)
    }
}

/// Renders every figment error with the key path it concerns and where the value came from.
pub(super) fn describe_figment_error(err: figment::Error) -> String {
    err.into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let origin = e
                .metadata
                .as_ref()
                .and_then(|m| m.source.as_ref().map(|s| format!(" (from {s})")))
                .unwrap_or_default();
            if key.is_empty() {
                format!("{}{origin}", e.kind)
            } else {
                format!("key `{key}`: {}{origin}", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl Config {
    /// The effective configuration as TOML, with every secret masked: any string under a key whose name looks
    /// secret (see [`secret_looking`]), `agent.env` entries included, and the password of any URL.
    pub fn to_masked_toml(&self) -> String {
        let mut raw = self.raw.clone();
        raw.root = self.root.clone();
        // Masking walks the generic TOML value so that a key added later is covered without a list to keep;
        // the masked value is read back into the typed struct so the output keeps the file's key order.
        let masked = toml::Value::try_from(&raw)
            .map_err(|e| e.to_string())
            .and_then(|mut v| {
                mask_value(&mut v, false);
                v.try_into::<RawConfig>().map_err(|e| e.to_string())
            });
        match masked {
            Ok(raw) => toml_string(&raw),
            // Never fall back to the unmasked text.
            Err(e) => format!("# cannot render the masked configuration: {e}\n"),
        }
    }
}

/// What a masked value is printed as.
pub const MASK: &str = "********";

/// Whether a key names a secret: it contains TOKEN, KEY, SECRET, PASSWORD, PASSWD or CREDENTIAL in any case.
/// A key ending in `_file` or `_path` holds where a secret lives, not the secret, and is shown.
pub fn secret_looking(key: &str) -> bool {
    let k = key.to_ascii_uppercase();
    if k.ends_with("_FILE") || k.ends_with("_PATH") {
        return false;
    }
    ["TOKEN", "KEY", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL"]
        .iter()
        .any(|w| k.contains(w))
}

/// Masks every non-empty string below a secret-looking key, and the user information of URLs anywhere.
fn mask_value(v: &mut toml::Value, secret: bool) {
    match v {
        toml::Value::String(s) if secret && !s.is_empty() => *s = MASK.into(),
        toml::Value::String(s) => {
            if let Some(m) = mask_url_credentials(s) {
                *s = m;
            }
        }
        toml::Value::Array(items) => items.iter_mut().for_each(|i| mask_value(i, secret)),
        toml::Value::Table(t) => {
            for (k, item) in t.iter_mut() {
                mask_value(item, secret || secret_looking(k));
            }
        }
        _ => {}
    }
}

/// `scheme://user:password@host/…` → `scheme://********@host/…`; `None` when there is nothing to hide.
fn mask_url_credentials(s: &str) -> Option<String> {
    let (scheme, rest) = s.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    Some(format!("{scheme}://{MASK}{}", &rest[at..]))
}

pub(super) fn toml_string(raw: &RawConfig) -> String {
    toml::to_string_pretty(raw).unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
}

pub(super) fn read_token(t: &RawTelegram) -> Result<Option<String>, ConfigError> {
    if !t.token.trim().is_empty() {
        return Ok(Some(t.token.trim().to_string()));
    }
    if t.token_file.is_empty() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&t.token_file)
        .map_err(|e| invalid("telegram.token_file", format!("{}: {e}", t.token_file)))?;
    let token = text.trim().to_string();
    Ok((!token.is_empty()).then_some(token))
}
