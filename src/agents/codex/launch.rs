//! Codex's command line and opening: `codex app-server`, the daemon's model provider when it points Codex
//! at its model API, `[agents.codex] extra_args`; on stdin `initialize`, `initialized`, then the thread
//! (a new one, or the session's to resume). `turn/start` follows once the thread is known
//! (`app_server.rs`).

use serde_json::{Value, json};

use crate::agents::{Launch, LaunchSpec};

/// The model provider the daemon defines when it gives Codex its model API's address.
pub const PROVIDER: &str = "televibe";

/// The request ids of the conversation: the daemon sends one request of each.
pub const ID_INITIALIZE: i64 = 1;
pub const ID_THREAD: i64 = 2;
pub const ID_TURN: i64 = 3;
/// A new thread, when the one to resume cannot be.
pub const ID_NEW_THREAD: i64 = 4;

/// The approval policy: Codex asks for every command that is not read-only and for every file change
/// (`untrusted`, settable only per thread in 0.169.0). Codex's own sandbox is off
/// (`danger-full-access`): the job's bubblewrap sandbox is the wall, and Codex's, a second bubblewrap
/// inside it, cannot build its namespaces there without privileges.
pub const APPROVAL_POLICY: &str = "untrusted";
pub const SANDBOX: &str = "danger-full-access";

pub fn launch(job: &LaunchSpec<'_>) -> Launch {
    // No MCP servers from the operator's `config.toml`: their tool calls would not come to the daemon's
    // approval wall, and their `env` would be readable in the job.
    let mut args = ["app-server", "-c", "mcp_servers={}"]
        .map(String::from)
        .to_vec();
    if let Some(url) = job.model_base_url {
        let toml_string = |s: &str| Value::from(s).to_string();
        for (key, value) in [
            ("model_provider", toml_string(PROVIDER)),
            ("model_providers.televibe.name", toml_string(PROVIDER)),
            ("model_providers.televibe.base_url", toml_string(url)),
            (
                "model_providers.televibe.wire_api",
                toml_string("responses"),
            ),
            (
                "model_providers.televibe.env_key",
                toml_string("OPENAI_API_KEY"),
            ),
        ] {
            args.extend(["-c".to_string(), format!("{key}={value}")]);
        }
    }
    // The operator's own provider address (`-c model_providers.<name>.base_url=…`) becomes the daemon's
    // too: inside an isolated sandbox that address is only reachable through the relay.
    args.extend(job.extra_args.iter().map(|a| {
        job.model_base_url
            .and_then(|url| with_base_url(a, url))
            .unwrap_or_else(|| a.clone())
    }));
    let mut stdin = String::new();
    for msg in [
        json!({"jsonrpc": "2.0", "id": ID_INITIALIZE, "method": "initialize",
               "params": {"clientInfo": {"name": "televibe", "version": env!("CARGO_PKG_VERSION")}}}),
        json!({"jsonrpc": "2.0", "method": "initialized"}),
        thread_request(job.cwd, job.resume, ID_THREAD),
    ] {
        stdin.push_str(&msg.to_string());
        stdin.push('\n');
    }
    Launch {
        args,
        env: Vec::new(),
        stdin,
        keep_stdin_open: true,
    }
}

/// The configuration overrides (`-c key=value`, `--config key=value`, `-ckey=value`) among `args`.
fn overrides(args: &[String]) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let kv = match a.as_str() {
            "-c" | "--config" => it.next().map(String::as_str),
            other => other
                .strip_prefix("--config=")
                .or_else(|| other.strip_prefix("-c").filter(|r| !r.is_empty())),
        };
        if let Some((k, v)) = kv.and_then(|kv| kv.split_once('=')) {
            out.push((k.trim(), v.trim()));
        }
    }
    out
}

/// `arg` with its provider base URL replaced by `url`, when it is a `model_providers.<name>.base_url=…`
/// override (alone after `-c`, or as `--config=…`).
fn with_base_url(arg: &str, url: &str) -> Option<String> {
    let (prefix, kv) = match arg.strip_prefix("--config=") {
        Some(kv) => ("--config=", kv),
        None => ("", arg),
    };
    let (key, _) = kv.split_once('=')?;
    key.trim()
        .strip_prefix("model_providers.")?
        .strip_suffix(".base_url")?;
    Some(format!("{prefix}{key}={}", Value::from(url)))
}

/// The base URL of the model provider the operator's arguments choose (`model_provider = "<name>"` and
/// `model_providers.<name>.base_url`; the only provider given a base URL when none is chosen).
pub fn provider_base_url(args: &[String]) -> Option<String> {
    let all = overrides(args);
    let unquote = |v: &str| {
        toml_string(v).unwrap_or_else(|| v.trim_matches(|c| c == '"' || c == '\'').to_string())
    };
    let chosen = all
        .iter()
        .rev()
        .find(|(k, _)| *k == "model_provider")
        .map(|(_, v)| unquote(v));
    let urls: Vec<(&str, String)> = all
        .iter()
        .filter_map(|(k, v)| {
            let name = k
                .strip_prefix("model_providers.")?
                .strip_suffix(".base_url")?;
            Some((name, unquote(v)))
        })
        .collect();
    match chosen {
        Some(name) => urls
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, u)| u.clone()),
        None if urls.len() == 1 => Some(urls[0].1.clone()),
        None => None,
    }
}

/// A TOML basic string's value (`"…"`), as `-c` values are written.
fn toml_string(v: &str) -> Option<String> {
    serde_json::from_str::<String>(v).ok()
}

/// `thread/resume` of `resume`, else `thread/start`, in working directory `cwd` under the daemon's
/// approval policy and sandbox mode.
pub fn thread_request(cwd: &str, resume: Option<&str>, id: i64) -> Value {
    let mut params = json!({"cwd": cwd, "approvalPolicy": APPROVAL_POLICY, "sandbox": SANDBOX});
    let method = match resume {
        Some(thread) => {
            params["threadId"] = json!(thread);
            "thread/resume"
        }
        None => "thread/start",
    };
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// `turn/start` of the instruction on thread `thread`.
pub fn turn_request(thread: &str, instruction: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": ID_TURN, "method": "turn/start",
           "params": {"threadId": thread, "input": [{"type": "text", "text": instruction}]}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(
        resume: Option<&'a str>,
        url: Option<&'a str>,
        extra: &'a [String],
    ) -> LaunchSpec<'a> {
        LaunchSpec {
            job_id: "j",
            instruction: "do it",
            resume,
            approvals: None,
            trusted: false,
            extra_args: extra,
            model_base_url: url,
            cwd: "/w/S1",
        }
    }

    #[test]
    fn app_server_with_the_daemons_provider_and_the_operators_arguments_last() {
        let extra = vec!["-c".to_string(), "model=\"gpt-5.5\"".to_string()];
        let l = launch(&spec(None, Some("http://127.0.0.1:9/v1"), &extra));
        assert_eq!(l.args[..3], ["app-server", "-c", "mcp_servers={}"]);
        assert!(
            l.args.contains(
                &"model_providers.televibe.base_url=\"http://127.0.0.1:9/v1\"".to_string()
            )
        );
        assert_eq!(&l.args[l.args.len() - 2..], &extra[..]);
        assert!(l.keep_stdin_open);
        let lines: Vec<Value> = l
            .stdin
            .lines()
            .map(|x| serde_json::from_str(x).unwrap())
            .collect();
        assert_eq!(lines[0]["method"], "initialize");
        assert_eq!(lines[1]["method"], "initialized");
        assert_eq!(lines[2]["method"], "thread/start");
        assert_eq!(lines[2]["params"]["approvalPolicy"], "untrusted");
        assert_eq!(lines[2]["params"]["cwd"], "/w/S1");
        // No address given: Codex's own provider, nothing added.
        assert_eq!(launch(&spec(None, None, &[])).args.len(), 3);
    }

    #[test]
    fn the_operators_provider_address_is_read_and_stood_in_for() {
        let extra: Vec<String> = [
            "-c",
            "model_provider=\"fake\"",
            "-c",
            "model_providers.fake.base_url=\"http://127.0.0.1:9/v1\"",
            "--config=model=\"gpt-5.5\"",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            provider_base_url(&extra).as_deref(),
            Some("http://127.0.0.1:9/v1")
        );
        let l = launch(&spec(None, Some("http://127.0.0.1:4319"), &extra));
        assert!(
            l.args
                .contains(&"model_providers.fake.base_url=\"http://127.0.0.1:4319\"".to_string()),
            "{:?}",
            l.args
        );
        assert!(!l.args.iter().any(|a| a.contains("127.0.0.1:9")));
        // Another provider chosen than the one given an address: none.
        let other: Vec<String> = [
            "-c",
            "model_provider=\"openai\"",
            "-c",
            "model_providers.fake.base_url=\"u\"",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(provider_base_url(&other), None);
        assert_eq!(provider_base_url(&[]), None);
    }

    #[test]
    fn a_known_thread_is_resumed() {
        let l = launch(&spec(Some("t-1"), None, &[]));
        let third: Value = serde_json::from_str(l.stdin.lines().nth(2).unwrap()).unwrap();
        assert_eq!(third["method"], "thread/resume");
        assert_eq!(third["params"]["threadId"], "t-1");
    }
}
