//! `[agent]` checks: the agent's home, the sandbox's paths, the network allowlist and the job user.

use super::raw::{RawAgent, RawAgentCommand, RawAgents};
use super::settings::{AgentCommand, AgentSettings};
use super::{ConfigError, invalid};

/// An environment agents may get: no `TELEVIBE_*` (the daemon's own), no empty or `=` names.
fn check_env(
    key: &'static str,
    env: &std::collections::BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    if let Some(k) = env
        .keys()
        .find(|k| k.starts_with("TELEVIBE_") || k.is_empty() || k.contains('='))
    {
        return Err(invalid(key, format!("{k:?} cannot be set for agents")));
    }
    if let Some(home) = env.get("HOME")
        && !home.starts_with('/')
    {
        return Err(invalid(
            key,
            format!("HOME = {home:?} is not an absolute path"),
        ));
    }
    Ok(())
}

/// `[agents.<name>]` over its defaults (`base`): a non-empty command or argument list replaces the
/// default's, variables are added to it.
fn agent_command(
    env_key: &'static str,
    raw: Option<&RawAgentCommand>,
    base: AgentCommand,
) -> Result<AgentCommand, ConfigError> {
    let Some(raw) = raw else {
        return Ok(base);
    };
    check_env(env_key, &raw.env)?;
    let mut env = base.env;
    env.extend(raw.env.clone());
    Ok(AgentCommand {
        command: if raw.command.trim().is_empty() {
            base.command
        } else {
            raw.command.clone()
        },
        extra_args: if raw.extra_args.is_empty() {
            base.extra_args
        } else {
            raw.extra_args.clone()
        },
        env,
    })
}

/// `[agent]` and `[agents.*]`, checked and typed: commands to run, environments that cannot set
/// `TELEVIBE_*`, a default agent that is configured.
pub(super) fn section(a: &RawAgent, agents: &RawAgents) -> Result<AgentSettings, ConfigError> {
    check(a)?;
    if a.command.trim().is_empty() {
        return Err(invalid("agent.command", "must not be empty"));
    }
    check_env("agent.env", &a.env)?;
    let claude = agent_command(
        "agents.claude.env",
        agents.claude.as_ref(),
        AgentCommand {
            command: a.command.clone(),
            extra_args: a.extra_args.clone(),
            env: a.env.clone(),
        },
    )?;
    let codex = agent_command(
        "agents.codex.env",
        agents.codex.as_ref(),
        AgentCommand {
            command: "codex".into(),
            ..AgentCommand::default()
        },
    )?;
    // Claude Code is always configured; Codex with its section (or as the default).
    let mut configured: std::collections::BTreeMap<String, AgentCommand> =
        [("claude".to_string(), claude.clone())].into();
    if agents.codex.is_some() || a.default == "codex" {
        configured.insert("codex".to_string(), codex);
    }
    if !configured.contains_key(&a.default) {
        return Err(invalid(
            "agent.default",
            format!(
                "{:?} is not a configured agent (configured: {})",
                a.default,
                configured.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    Ok(AgentSettings {
        command: claude.command,
        extra_args: claude.extra_args,
        env: claude.env,
        agents: configured,
        default: a.default.clone(),
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
