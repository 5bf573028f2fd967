//! Claude Code's command line: print mode with `stream-json` output, the job's approval bridge as its only
//! MCP server and permission prompt tool, the conversation to resume, then `agent.extra_args`.

use crate::agents::{BridgeCommand, Launch, LaunchSpec};

/// The tool name Claude Code calls for permissions: tool `approval_prompt` of MCP server `televibe`.
pub const PERMISSION_TOOL: &str = "mcp__televibe__approval_prompt";

/// The MCP configuration a job's Claude starts: the daemon's stdio bridge (`televibe mcp --job <id>` with
/// the job's secret), which sees exactly one tool, `approval_prompt`, for this job only.
pub fn mcp_config(bridge: &BridgeCommand) -> String {
    let env: serde_json::Map<String, serde_json::Value> = bridge
        .env
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
        .collect();
    serde_json::json!({"mcpServers": {"televibe": {
        "type": "stdio",
        "command": bridge.program,
        "args": bridge.args,
        "env": env,
    }}})
    .to_string()
}

/// The argv after the program. Unless the project is trusted, repository settings are not loaded: no
/// hooks or MCP servers from `.claude/` or `.mcp.json` (CLAUDE.md, being text, still is). The
/// instruction goes to stdin, which then closes.
pub fn launch(job: &LaunchSpec<'_>) -> Launch {
    let mut args: Vec<String> = ["-p", "--output-format", "stream-json", "--verbose"]
        .map(String::from)
        .to_vec();
    if let Some(bridge) = job.approvals {
        args.extend(["--mcp-config".to_string(), mcp_config(bridge)]);
    }
    if !job.trusted {
        args.extend(["--strict-mcp-config", "--setting-sources", "user"].map(String::from));
    }
    if job.approvals.is_some() {
        args.extend([
            "--permission-prompt-tool".to_string(),
            PERMISSION_TOOL.to_string(),
        ]);
    }
    if let Some(conv) = job.resume {
        args.push("--resume".into());
        args.push(conv.to_string());
    }
    args.extend(job.extra_args.iter().cloned());
    Launch {
        args,
        env: Vec::new(),
        stdin: job.instruction.to_string(),
        keep_stdin_open: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_wires_the_bridge_resume_and_extra_args() {
        let bridge = BridgeCommand {
            program: "/usr/bin/televibe".into(),
            args: vec!["mcp".into(), "--job".into(), "j1".into()],
            env: vec![("TELEVIBE_JOB_TOKEN".into(), "s3cret".into())],
        };
        let extra = vec!["--model".to_string(), "opus".to_string()];
        let spec = LaunchSpec {
            job_id: "j1",
            instruction: "do it",
            resume: Some("conv-1"),
            approvals: Some(&bridge),
            trusted: false,
            extra_args: &extra,
            model_base_url: None,
            cwd: "/w",
        };
        let l = launch(&spec);
        assert_eq!(
            &l.args[..4],
            ["-p", "--output-format", "stream-json", "--verbose"]
        );
        let config: serde_json::Value = serde_json::from_str(&l.args[5]).unwrap();
        assert_eq!(
            config["mcpServers"]["televibe"]["env"]["TELEVIBE_JOB_TOKEN"],
            "s3cret"
        );
        assert_eq!(config["mcpServers"]["televibe"]["args"][2], "j1");
        assert!(l.args.contains(&"--strict-mcp-config".to_string()));
        let tool = l
            .args
            .iter()
            .position(|a| a == "--permission-prompt-tool")
            .unwrap();
        assert_eq!(l.args[tool + 1], PERMISSION_TOOL);
        assert_eq!(
            l.args[l.args.len() - 4..],
            ["--resume", "conv-1", "--model", "opus"]
        );
        assert_eq!((l.stdin.as_str(), l.keep_stdin_open), ("do it", false));
        let trusted = launch(&LaunchSpec {
            trusted: true,
            resume: None,
            ..spec
        });
        assert!(!trusted.args.contains(&"--strict-mcp-config".to_string()));
        assert!(!trusted.args.contains(&"--resume".to_string()));
    }
}
