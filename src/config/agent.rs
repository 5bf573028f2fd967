//! `[agent]` checks: the agent's home, the sandbox's paths, the network allowlist and the job user.

use super::raw::RawAgent;
use super::settings::AgentSettings;
use super::{ConfigError, invalid};

/// `[agent]`, checked and typed: a command to run, an environment that cannot set `TELEVIBE_*`.
pub(super) fn section(a: &RawAgent) -> Result<AgentSettings, ConfigError> {
    check(a)?;
    if a.command.trim().is_empty() {
        return Err(invalid("agent.command", "must not be empty"));
    }
    if let Some(k) = a
        .env
        .keys()
        .find(|k| k.starts_with("TELEVIBE_") || k.is_empty() || k.contains('='))
    {
        return Err(invalid(
            "agent.env",
            format!("{k:?} cannot be set for agents"),
        ));
    }
    Ok(AgentSettings {
        command: a.command.clone(),
        extra_args: a.extra_args.clone(),
        env: a.env.clone(),
        sandboxed: a.sandbox != "none",
        sandbox_hide: a.sandbox_hide.clone(),
        sandbox_write: a.sandbox_write.clone(),
        network_allowlist: a.network != "open",
        network_allow: a
            .network_allow
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        run_as: a.run_as.clone(),
        oauth_token_url: a.oauth_token_url.clone(),
    })
}

fn check(agent: &RawAgent) -> Result<(), ConfigError> {
    if let Some(home) = agent.env.get("HOME")
        && !home.starts_with('/')
    {
        return Err(invalid(
            "agent.env",
            format!("HOME = {home:?} is not an absolute path"),
        ));
    }
    for (key, paths) in [
        ("agent.sandbox_hide", &agent.sandbox_hide),
        ("agent.sandbox_write", &agent.sandbox_write),
    ] {
        if let Some(p) = paths
            .iter()
            .find(|p| !(p.starts_with('/') || p.starts_with("~/")) || p.contains('\0'))
        {
            return Err(invalid(
                key,
                format!("{p:?} is not an absolute path or a path under ~/"),
            ));
        }
    }
    if !matches!(agent.sandbox.as_str(), "bwrap" | "none") {
        return Err(invalid(
            "agent.sandbox",
            format!("{:?} is not \"bwrap\" or \"none\"", agent.sandbox),
        ));
    }
    if !matches!(agent.network.as_str(), "allowlist" | "open") {
        return Err(invalid(
            "agent.network",
            format!("{:?} is not \"allowlist\" or \"open\"", agent.network),
        ));
    }
    if let Some(h) = agent.network_allow.iter().find(|h| !valid_host_pattern(h)) {
        return Err(invalid(
            "agent.network_allow",
            format!("{h:?} is not a host name, host:port or *.domain"),
        ));
    }
    if agent.run_as.trim().is_empty() {
        return Err(invalid(
            "agent.run_as",
            "empty: name the unprivileged user jobs run as when the daemon is root",
        ));
    }
    if !(agent.oauth_token_url.starts_with("https://")
        || agent.oauth_token_url.starts_with("http://"))
    {
        return Err(invalid(
            "agent.oauth_token_url",
            format!("{:?} is not an http(s) URL", agent.oauth_token_url),
        ));
    }
    Ok(())
}

/// A host the egress proxy may let jobs reach: `host`, `host:port` or `*.domain` (letters, digits, dots,
/// dashes; an IPv4 address is a host too).
pub fn valid_host_pattern(pattern: &str) -> bool {
    let (host, port) = match pattern.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (pattern, None),
    };
    if port.is_some_and(|p| p.parse::<u16>().map_or(true, |p| p == 0)) {
        return false;
    }
    let host = host.strip_prefix("*.").unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}
