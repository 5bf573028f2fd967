//! The demo's agent: the real Claude Code CLI on the fake model API, or this program as a scripted stand-in.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, anyhow};
use serde_json::{Value, json};

use crate::fake_model::{Reply, after_tool};

/// What the user asks for on the phone.
pub const INSTRUCTION: &str =
    "Make greet.sh greet people by name (first argument, default world), then try it with Ada";
/// The Bash command the agent wants to run: it edits a tracked file, so it needs a person's approval.
pub const COMMAND: &str =
    "sed -i 's/Hello, world!/Hello, ${1:-world}!/' greet.sh && sh greet.sh Ada";
const DESCRIPTION: &str = "Take the name from the first argument, then run the script";
const PLAN: &str = "I'll make greet.sh take the name from its first argument and try it.";
/// The agent's last word once the command ran.
pub const DONE: &str = "Done: greet.sh now greets by name (`sh greet.sh Ada` prints \"Hello, Ada!\") \
                        and still says \"Hello, world!\" without an argument.";
/// The environment variable that makes this program the scripted agent.
pub const ROLE_VAR: &str = "TVDEMO_ROLE";

/// Which agent the daemon starts for each job.
pub enum Agent {
    /// The pinned Claude Code CLI: its path and version.
    Claude(PathBuf, String),
    /// This program in its agent role, and why the real CLI is not used.
    Scripted(PathBuf, &'static str),
}

impl Agent {
    /// The real CLI from `.claude-cli/` when it is there and runs (unless `TVDEMO_SCRIPTED=1`), else the
    /// scripted stand-in.
    pub fn choose() -> Result<Agent> {
        let cli = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(".claude-cli/node_modules/@anthropic-ai/claude-code-linux-x64/claude");
        let version = Command::new(&cli)
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| {
                let out = String::from_utf8_lossy(&o.stdout).into_owned();
                out.split_whitespace().next().unwrap_or("").to_string()
            });
        let reason = match version {
            Some(_) if std::env::var_os("TVDEMO_SCRIPTED").is_some() => "TVDEMO_SCRIPTED is set",
            Some(v) => return Ok(Agent::Claude(cli, v)),
            None => "the CLI is not installed: scripts/install-deps installs it into .claude-cli/",
        };
        let me = std::env::current_exe().context("the demo's own path")?;
        Ok(Agent::Scripted(me, reason))
    }

    pub fn describe(&self) -> String {
        match self {
            Agent::Claude(p, v) => format!(
                "the real Claude Code CLI {v} ({}) against the project's fake Anthropic API",
                p.display()
            ),
            Agent::Scripted(_, why) => format!("a scripted stand-in for Claude Code ({why})"),
        }
    }

    /// The `[agent]` section: the command, its environment (the fake model's URL, a home of its own) and
    /// the sandbox.
    pub fn config(&self, model_url: Option<&str>, home: &Path, sandbox: &str) -> String {
        let (command, env) = match self {
            Agent::Claude(p, _) => (
                p.display().to_string(),
                format!(
                    "ANTHROPIC_BASE_URL = \"{}\", ANTHROPIC_API_KEY = \"sk-demo\", \
                     CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = \"1\", HOME = \"{}\"",
                    model_url.unwrap_or_default(),
                    home.display()
                ),
            ),
            Agent::Scripted(p, _) => (p.display().to_string(), format!("{ROLE_VAR} = \"agent\"")),
        };
        format!(
            "[agent]\ncommand = \"{command}\"\nsandbox = \"{sandbox}\"\nenv = {{ {env} }}\n\
             [jobs]\nhard_timeout_secs = 120\n"
        )
    }
}

/// The fake model's script: plan and ask for the Bash command; once it ran, say what was done.
pub fn model_reply(req: &Value) -> Reply {
    if after_tool(req) {
        return Reply::Text(DONE.into());
    }
    Reply::Blocks(vec![
        Reply::Text(PLAN.into()),
        Reply::ToolUse {
            name: "Bash".into(),
            input: tool_input(),
        },
    ])
}

fn tool_input() -> Value {
    json!({"command": COMMAND, "description": DESCRIPTION})
}

fn emit(v: Value) {
    println!("{v}");
}

/// The scripted agent: reads the instruction, announces the tool use, asks for approval through the MCP
/// server of `--mcp-config`, runs the command when allowed, and ends with a `result` line.
pub fn run() {
    let mut instruction = String::new();
    let _ = std::io::stdin().read_line(&mut instruction);
    emit(
        json!({"type": "system", "subtype": "init", "session_id": format!("demo-{}", uuid::Uuid::new_v4()),
               "model": "scripted-demo-agent", "tools": ["Bash"]}),
    );
    let tool_use = "toolu_demo_1";
    emit(json!({"type": "assistant", "message": {"content": [
        {"type": "text", "text": PLAN},
        {"type": "tool_use", "id": tool_use, "name": "Bash", "input": tool_input()}]}}));
    let (ran, output) = decide_and_run(tool_use);
    emit(json!({"type": "user", "message": {"content": [
        {"type": "tool_result", "tool_use_id": tool_use, "is_error": !ran, "content": output}]}}));
    let text = if ran {
        DONE.to_string()
    } else {
        format!("Nothing changed ({output}).")
    };
    emit(json!({"type": "assistant", "message": {"content": [{"type": "text", "text": text}]}}));
    let denials: Vec<Value> = if ran { vec![] } else { vec![tool_input()] };
    emit(
        json!({"type": "result", "subtype": "success", "is_error": false, "num_turns": 2,
                "total_cost_usd": 0.0, "usage": {"input_tokens": 120, "output_tokens": 40},
                "result": text, "permission_denials": denials}),
    );
}

/// Asks through the MCP server of `--mcp-config` and runs the command when allowed: (ran, output).
fn decide_and_run(tool_use: &str) -> (bool, String) {
    let args: Vec<String> = std::env::args().collect();
    let decision = args
        .windows(2)
        .find(|w| w[0] == "--mcp-config")
        .ok_or_else(|| anyhow!("no --mcp-config"))
        .and_then(|w| ask(&w[1], tool_use));
    match decision {
        Ok(d) if d["behavior"] == "allow" => run_command(),
        Ok(d) => (
            false,
            format!("denied: {}", d["message"].as_str().unwrap_or("")),
        ),
        Err(e) => (false, format!("no decision: {e:#}")),
    }
}

fn run_command() -> (bool, String) {
    match Command::new("sh").args(["-c", COMMAND]).output() {
        Ok(o) => (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        ),
        Err(e) => (false, format!("sh: {e}")),
    }
}

/// Calls `approval_prompt` on the MCP server the daemon configured (`televibe mcp --job …`) and answers
/// its decision (`{"behavior": "allow" | "deny", …}`).
fn ask(mcp_config: &str, tool_use: &str) -> Result<Value> {
    let config: Value = serde_json::from_str(mcp_config)?;
    let server = &config["mcpServers"]["televibe"];
    let mut cmd = Command::new(server["command"].as_str().context("server command")?);
    for a in server["args"].as_array().into_iter().flatten() {
        cmd.arg(a.as_str().unwrap_or_default());
    }
    for (k, v) in server["env"].as_object().into_iter().flatten() {
        cmd.env(k, v.as_str().unwrap_or_default());
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", server["command"]))?;
    let mut to = child.stdin.take().context("stdin")?;
    let mut from = BufReader::new(child.stdout.take().context("stdout")?);
    let mut send = |v: Value| writeln!(to, "{v}");
    send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "scripted-demo-agent", "version": "1"}}}),
    )?;
    answer_to(&mut from, 1)?;
    send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))?;
    send(
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "approval_prompt",
        "arguments": {"tool_name": "Bash", "input": tool_input(), "tool_use_id": tool_use}}}),
    )?;
    let answer = answer_to(&mut from, 2)?;
    drop(to);
    let _ = child.wait();
    let text = answer["result"]["content"][0]["text"]
        .as_str()
        .ok_or_else(|| anyhow!("unexpected answer {answer}"))?;
    Ok(serde_json::from_str(text)?)
}

/// The next JSON-RPC message answering request `id` (notifications in between are skipped).
fn answer_to(from: &mut impl BufRead, id: i64) -> Result<Value> {
    let mut line = String::new();
    loop {
        line.clear();
        if from.read_line(&mut line)? == 0 {
            return Err(anyhow!("the approval server closed before answering"));
        }
        let v: Value = serde_json::from_str(line.trim()).unwrap_or(Value::Null);
        if v["id"] == id {
            return Ok(v);
        }
    }
}
