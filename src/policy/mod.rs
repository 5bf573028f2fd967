//! The approval policy, evaluated before anyone is asked: auto-deny rules, auto-allow rules, session grants.
//!
//! A Bash command is read the way bash reads it: quotes, backslash escapes, comments, control operators
//! (`; & && | || ( )`, newline) and redirections are parsed into simple commands, each a list of words.
//! Anything not fully modelled here (`$` expansions, command and process substitution, globs, braces, `~`,
//! `!`, redirections, subshells, unterminated quotes, any character other than printable ASCII, tab and
//! newline) makes the command opaque: it is never auto-allowed, though auto-deny still inspects its words.
//!
//! Evaluation order: an auto-deny rule matching any simple command denies; otherwise an auto-allow rule
//! accounting for the whole command allows; otherwise a session grant for exactly this request allows;
//! otherwise a person is asked. The daemon's own push request ([`PUSH_TOOL`]) is always asked.
//!
//! # Auto-allow entries (`approvals.auto_allow`)
//!
//! An entry is a list of words, e.g. `git log --oneline -n= --stat`. A command is allowed only when it is a
//! single simple command, not opaque, and the entry accounts for every word of it:
//! - the leading words not starting with `-` are the program and its subcommands, matched exactly (for
//!   `git`, `--no-pager` or `-P` may precede the subcommand; any other git global option is asked);
//! - words starting with `-` are the options allowed, in any order; clustered short options in the command
//!   (`-la`) must each be listed. `-n=` allows `-n VALUE` and `-nVALUE`; `--name=` allows `--name=VALUE`
//!   with the value attached. Values are not checked, so list only options whose values are inert;
//! - a last word `*` allows any further words, options included (an explicit choice, e.g. `cargo test *`);
//! - a last word `$` allows no operands at all (for `git branch`, whose operands create branches);
//! - otherwise every operand (a word not starting with `-`, or any word after `--`) must be a path inside
//!   the worktree: after lexical normalisation, and, as far as it exists, after resolving symlinks.
//!
//! An allow entry with a non-option word after its options matches nothing.
//!
//! # Auto-deny entries (`approvals.auto_deny`)
//!
//! An entry such as `rm -rf /` is a program, then optional subcommands (plain words right after the program,
//! like `push` in `git push --force`), options and operands. It matches every simple command of the command
//! line (after `;`, `&&`, pipes, inside `bash -c '…'`, `eval` and `"$(…)"`, behind wrappers such as
//! `sudo`, `env VAR=x`, `command`, `nohup`, `nice`, `time`, `exec`, `xargs`) when:
//! - the program's basename is the entry's program, or starts with it followed by `.` (`mkfs.ext4`);
//! - the subcommands are the command's first operands (git's global options such as `-C dir` skipped);
//! - every option of the entry is among the command's, regardless of order, clustering, `--` and long or
//!   abbreviated forms: for `rm`, `-R` and `--recursive` are `-r` and `--force` is `-f`; for `git push`,
//!   `-f`, `--force-with-lease`, `--force-if-includes`, `--mirror` and a `+refspec` are `--force`, while
//!   `-d`, `--prune`, `--mirror` and a `:refspec` are `--delete`;
//! - every operand of the entry is among the command's operands, compared as targets: `/`, `//`, `/.` and
//!   `/*` are `/`; `~`, `~/` and `$HOME` are `~`; `./*` is `*`. An entry operand ending in `=` (`dd of=`)
//!   matches any operand starting with it.

use serde_json::Value;
use std::path::Path;

use crate::agents::{ToolKind, tool_kind};
use shell::lex;

/// What the policy decides for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow(String),
    Deny(String),
    Ask,
}

/// Auto-deny rules by default: destroying the root, the home directory or the worktree, force or delete
/// pushes, making file systems, and writing with `dd`.
pub const DEFAULT_DENY: &[&str] = &[
    "rm -rf /",
    "rm -rf ~",
    "rm -rf *",
    "git push --force",
    "git push --delete",
    "mkfs",
    "dd of=",
];

/// Auto-allow rules by default: read-only commands with read-only options, reading inside the worktree.
pub const DEFAULT_ALLOW: &[&str] = &[
    "git status -s --short -b --branch --porcelain --long",
    "git diff --stat --name-only --name-status --cached --staged --no-color --numstat --shortstat",
    "git log --oneline -n= --max-count= --stat --graph --decorate --no-color -p --format= --pretty= --all \
     --reverse --name-only --name-status",
    "git show --stat --name-only --name-status --no-color --oneline --format= --pretty=",
    "git branch --list -l --show-current -a --all -r --remotes -v --verbose --no-color $",
    "ls -l -a -A -h -1 -R -t -r -S -d -F",
    "pwd $",
    "cat -n",
    "head -n= -c=",
    "tail -n= -c=",
    "wc -l -w -c -m",
];

/// Programs that reach the network, for the `network` scope.
const NETWORK: &[&str] = &[
    "curl", "wget", "ssh", "scp", "rsync", "nc", "ncat", "ftp", "sftp", "telnet", "socat",
];

/// The daemon's own request to push a session's branch (a push job asks it; no agent may). Its scope is
/// `git_push`, and only a person decides it: no rule allows or denies it, no session grant covers it.
pub const PUSH_TOOL: &str = "git_push";

/// The action category of a request (the `scope` label): shell, write, git_push, network, mcp, other.
/// A compound command takes the riskiest category among its simple commands. What a tool does is its
/// agent's word ([`tool_kind`]).
pub fn scope(tool: &str, input: &Value) -> &'static str {
    if tool == PUSH_TOOL {
        return "git_push";
    }
    match tool_kind(tool) {
        ToolKind::Shell => {
            let rank = commands(&lex(raw_command(input)))
                .iter()
                .map(|c| match c.program.as_str() {
                    "git" if c.args.first().is_some_and(|s| s == "push") => 2,
                    p if NETWORK.contains(&p) => 1,
                    _ => 0,
                })
                .max()
                .unwrap_or(0);
            ["shell", "network", "git_push"][rank]
        }
        ToolKind::Write => "write",
        ToolKind::Fetch | ToolKind::WebSearch => "network",
        ToolKind::Mcp => "mcp",
        ToolKind::Read | ToolKind::Search | ToolKind::Other => "other",
    }
}

/// The command exactly as the shell will get it (a shell tool's `command`).
fn raw_command(input: &Value) -> &str {
    input.get("command").and_then(Value::as_str).unwrap_or("")
}

/// What "approve for this session" remembers, later matched exactly: the command as the shell gets it, the
/// file path, the URL, or for a tool without a target its whole input as canonical JSON, so that a grant
/// covers only that very request.
pub fn grant_pattern(tool: &str, input: &Value) -> String {
    let target = match tool_kind(tool) {
        ToolKind::Shell => return raw_command(input).to_string(),
        ToolKind::Write | ToolKind::Fetch => crate::agents::tools::subject(tool, input),
        _ => None,
    };
    target.map_or_else(|| input.to_string(), str::to_string)
}

/// Checks one configured allow or deny entry, so that configuration loading can refuse a bad one.
pub fn check_rule(rule: &str) -> Result<(), String> {
    let words: Vec<&str> = rule.split_whitespace().collect();
    let Some(first) = words.first() else {
        return Err("an approval rule must not be empty".into());
    };
    if let Some(c) = rule.chars().find(|c| !matches!(c, ' '..='~')) {
        return Err(format!("rule {rule:?}: {c:?} is not printable ASCII"));
    }
    if let Some(c) = rule.chars().find(|c| ";&|<>()`'\"\\{}[]?!#".contains(*c)) {
        return Err(format!(
            "rule {rule:?}: {c:?} is shell syntax; a rule is plain words"
        ));
    }
    if !is_plain(first) {
        return Err(format!("rule {rule:?} must start with a program name"));
    }
    for (i, w) in words.iter().enumerate() {
        if matches!(*w, "-" | "--") {
            return Err(format!("rule {rule:?}: {w:?} has no meaning in a rule"));
        }
        if matches!(*w, "*" | "$") && i + 1 < words.len() {
            return Err(format!("rule {rule:?}: {w:?} may only be the last word"));
        }
        if w.contains('$') && *w != "$" && !w.starts_with("$HOME") {
            return Err(format!(
                "rule {rule:?}: \"$\" is only allowed as the last word or in $HOME"
            ));
        }
    }
    Ok(())
}

/// A program or subcommand name: no path, no pattern, no `=`.
fn is_plain(w: &str) -> bool {
    w.starts_with(|c: char| c.is_ascii_alphanumeric())
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The configured rules: `approvals.auto_allow` and `approvals.auto_deny` entries in the forms above.
#[derive(Debug, Clone)]
pub struct Policy {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

impl Policy {
    /// Decides a request: deny rules on every simple command first, then allow rules on a lone simple
    /// command, then session grants matched exactly, else ask. `worktree` is the directory the command
    /// runs in, which operands of allowed commands must stay inside.
    pub fn evaluate(
        &self,
        tool: &str,
        input: &Value,
        grants: &[(String, String)],
        worktree: &Path,
    ) -> Verdict {
        // A push is always a person's decision.
        if tool == PUSH_TOOL {
            return Verdict::Ask;
        }
        if tool_kind(tool) == ToolKind::Shell {
            let lexed = lex(raw_command(input));
            let cmds = commands(&lexed);
            if let Some(rule) = self
                .deny
                .iter()
                .find(|r| parse_deny(r).is_some_and(|d| cmds.iter().any(|c| denies(&d, c))))
            {
                return Verdict::Deny(format!("denied by policy: matches {rule:?}"));
            }
            if let [words] = lexed.segments.as_slice()
                && !lexed.opaque
                && !lexed.compound
                && let Some(rule) = self
                    .allow
                    .iter()
                    .find(|r| parse_allow(r).is_some_and(|a| allows(&a, words, worktree)))
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

mod commands;
mod describe;
mod rules;
pub mod shell;

pub use commands::{Part, PartKind, parts, quoted};
pub use describe::{Danger, Description, describe};

use commands::*;
use rules::*;

#[cfg(test)]
mod tests;
