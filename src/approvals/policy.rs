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
//! otherwise a person is asked.
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
use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use super::shell::{Lexed, lex};

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

/// Programs that run their operands as a command, with those of their options that take a separate value.
const WRAPPERS: &[(&str, &str)] = &[
    ("sudo", "-u -g -C -D -h -p -r -t -T -U -R"),
    ("doas", "-u -C"),
    ("env", "-u -C --unset --chdir"),
    ("nice", "-n --adjustment"),
    ("xargs", "-I -n -P -L -s -d -E -a --max-args --max-procs"),
    ("timeout", "-s -k --signal --kill-after"),
    ("stdbuf", "-i -o -e"),
    ("exec", "-a"),
    ("command", ""),
    ("builtin", ""),
    ("nohup", ""),
    ("time", ""),
];

/// Shell keywords that may precede a command.
const KEYWORDS: &[&str] = &[
    "!", "{", "if", "then", "elif", "else", "do", "while", "until",
];

/// Git's global options that take a separate value; they come before the subcommand.
const GIT_VALUED: &str =
    "-C -c --git-dir --work-tree --namespace --config-env --super-prefix --attr-source";

/// Option spellings a deny rule treats as one: (program or `git <subcommand>`, spelling, meaning).
const ALIASES: &[(&str, &str, &str)] = &[
    ("rm", "-R", "-r"),
    ("rm", "--recursive", "-r"),
    ("rm", "--force", "-f"),
    ("git push", "-f", "--force"),
    ("git push", "--force", "--force"),
    ("git push", "--force-with-lease", "--force"),
    ("git push", "--force-if-includes", "--force"),
    ("git push", "--mirror", "--force"),
    ("git push", "--mirror", "--delete"),
    ("git push", "-d", "--delete"),
    ("git push", "--delete", "--delete"),
    ("git push", "--prune", "--delete"),
];

/// The action category of a request (the `scope` label): shell, write, git_push, network, mcp, other.
/// A compound command takes the riskiest category among its simple commands.
pub fn scope(tool: &str, input: &Value) -> &'static str {
    match tool {
        "Bash" => {
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
        "Write" | "Edit" | "MultiEdit" | "NotebookEdit" => "write",
        "WebFetch" | "WebSearch" => "network",
        t if t.starts_with("mcp__") => "mcp",
        _ => "other",
    }
}

/// The command exactly as the shell will get it.
fn raw_command(input: &Value) -> &str {
    input.get("command").and_then(Value::as_str).unwrap_or("")
}

/// What "approve for this session" remembers, later matched exactly: the command as the shell gets it, the
/// file path, the URL, or for a tool without a target its whole input as canonical JSON, so that a grant
/// covers only that very request.
pub fn grant_pattern(tool: &str, input: &Value) -> String {
    let target = match tool {
        "Bash" => return raw_command(input).to_string(),
        "Write" | "Edit" | "MultiEdit" | "NotebookEdit" => input
            .get("file_path")
            .or_else(|| input.get("notebook_path")),
        "WebFetch" => input.get("url"),
        _ => None,
    };
    target
        .and_then(Value::as_str)
        .map_or_else(|| input.to_string(), str::to_string)
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

/// One simple command with wrappers removed: the program's basename and its arguments (for git, after its
/// global options).
struct Cmd {
    program: String,
    args: Vec<String>,
}

/// Every simple command of a command line, including those run through `bash -c`, `eval` and `"$(…)"`.
fn commands(lexed: &Lexed) -> Vec<Cmd> {
    let mut out = Vec::new();
    collect(lexed, 0, &mut out);
    out
}

fn collect(lexed: &Lexed, depth: usize, out: &mut Vec<Cmd>) {
    // Nesting is bounded so that a hostile command cannot make evaluation expensive.
    if depth > 4 {
        return;
    }
    for seg in &lexed.segments {
        simple_command(seg, depth, out);
    }
    for text in &lexed.nested {
        collect(&lex(text), depth + 1, out);
    }
}

fn simple_command(words: &[String], depth: usize, out: &mut Vec<Cmd>) {
    let mut i = 0;
    while let Some(w) = words.get(i) {
        if is_assignment(w) || KEYWORDS.contains(&w.as_str()) {
            i += 1;
            continue;
        }
        let Some((name, valued)) = WRAPPERS.iter().find(|(n, _)| *n == basename(w)) else {
            break;
        };
        i += 1;
        while let Some(o) = words.get(i).filter(|o| o.starts_with('-')) {
            i += 1 + usize::from(valued.split(' ').any(|v| v == o));
            if o == "--" {
                break;
            }
        }
        if *name == "timeout" {
            i += 1;
        }
    }
    let Some(first) = words.get(i) else { return };
    let program = basename(first).to_string();
    let mut args = words[i + 1..].to_vec();
    match program.as_str() {
        "bash" | "sh" | "dash" | "zsh" | "ksh" | "mksh" | "ash" => {
            if let Some(script) = shell_script(&args) {
                collect(&lex(script), depth + 1, out);
            }
        }
        "eval" => collect(&lex(&args.join(" ")), depth + 1, out),
        "git" => {
            let mut k = 0;
            while let Some(a) = args.get(k).filter(|a| a.starts_with('-')) {
                k += 1 + usize::from(GIT_VALUED.split(' ').any(|v| v == a));
            }
            args.drain(..k.min(args.len()));
        }
        _ => {}
    }
    out.push(Cmd { program, args });
}

/// The script of `sh -c SCRIPT`, if the shell is given one.
fn shell_script(args: &[String]) -> Option<&str> {
    let (mut has_c, mut i) = (false, 0);
    while let Some(a) = args.get(i) {
        i += 1;
        if matches!(
            a.as_str(),
            "-o" | "+o" | "-O" | "+O" | "--rcfile" | "--init-file"
        ) {
            i += 1;
        } else if a.starts_with(['-', '+']) {
            has_c |= !a.starts_with("--") && a.contains('c');
        } else {
            return has_c.then_some(a.as_str());
        }
    }
    None
}

fn basename(w: &str) -> &str {
    w.rsplit('/').next().unwrap_or(w)
}

/// A `NAME=value` word before the program, which sets a variable rather than naming a program.
fn is_assignment(w: &str) -> bool {
    w.split_once('=').is_some_and(|(n, _)| {
        n.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// Splits arguments into options (clusters split, `=value` dropped) and operands, honouring `--`.
fn split_args<S: AsRef<str>>(words: &[S]) -> (Vec<String>, Vec<String>) {
    let (mut options, mut operands, mut ended) = (Vec::new(), Vec::new(), false);
    for w in words.iter().map(AsRef::as_ref) {
        if ended || w == "-" || !w.starts_with('-') {
            operands.push(w.to_string());
        } else if w == "--" {
            ended = true;
        } else if w.starts_with("--") {
            options.push(w.split('=').next().unwrap_or(w).to_string());
        } else {
            options.extend(w.chars().skip(1).map(|c| format!("-{c}")));
        }
    }
    (options, operands)
}

/// The meanings of an option for a program: alias rows it spells exactly or abbreviates (a long option may
/// be abbreviated by GNU tools and git).
fn aliases(key: &str, opt: &str) -> Vec<&'static str> {
    ALIASES
        .iter()
        .filter(|(k, from, _)| {
            *k == key
                && (opt == *from
                    || (opt.len() > 2 && opt.starts_with("--") && from.starts_with(opt)))
        })
        .map(|r| r.2)
        .collect()
}

fn alias_key(program: &str, first_operand: Option<&String>) -> String {
    match (program, first_operand) {
        ("git", Some(sub)) => format!("git {sub}"),
        _ => program.to_string(),
    }
}

/// A path word reduced to what it designates: `/`-rooted, `~`-rooted or relative, normalised lexically, with
/// a trailing `*` under the root or home standing for that directory.
fn target(w: &str) -> String {
    let home = ["~", "$HOME"].iter().find_map(|h| {
        w.strip_prefix(h)
            .filter(|r| r.is_empty() || r.starts_with('/'))
    });
    let (base, rest) = match home {
        Some(rest) => ("~", rest),
        None if w.starts_with('/') => ("/", w),
        None => ("", w),
    };
    let mut parts: Vec<&str> = Vec::new();
    for p in rest.split('/') {
        match p {
            "" | "." => {}
            ".." if !base.is_empty() || parts.last().is_some_and(|l| *l != "..") => {
                parts.pop();
            }
            _ => parts.push(p),
        }
    }
    if !base.is_empty() && parts.last() == Some(&"*") {
        parts.pop();
    }
    match base {
        "~" if parts.is_empty() => "~".into(),
        "~" => format!("~/{}", parts.join("/")),
        "/" => format!("/{}", parts.join("/")),
        _ if parts.is_empty() => ".".into(),
        _ => parts.join("/"),
    }
}

struct DenyRule {
    program: String,
    subs: Vec<String>,
    options: BTreeSet<String>,
    operands: Vec<String>,
}

fn parse_deny(rule: &str) -> Option<DenyRule> {
    check_rule(rule).ok()?;
    let words: Vec<&str> = rule.split_whitespace().collect();
    let n = 1 + words[1..].iter().take_while(|w| is_plain(w)).count();
    let subs: Vec<String> = words[1..n].iter().map(|s| s.to_string()).collect();
    let key = alias_key(words[0], subs.first());
    let (opts, operands) = split_args(&words[n..]);
    let options = opts
        .iter()
        .flat_map(|o| match aliases(&key, o) {
            a if a.is_empty() => vec![o.clone()],
            a => a.into_iter().map(String::from).collect(),
        })
        .collect();
    Some(DenyRule {
        program: words[0].to_string(),
        subs,
        options,
        operands,
    })
}

fn denies(rule: &DenyRule, cmd: &Cmd) -> bool {
    let p = cmd.program.as_str();
    if p != rule.program
        && !p
            .strip_prefix(rule.program.as_str())
            .is_some_and(|r| r.starts_with('.'))
    {
        return false;
    }
    let (opts, operands) = split_args(&cmd.args);
    if rule
        .subs
        .iter()
        .enumerate()
        .any(|(i, s)| operands.get(i) != Some(s))
    {
        return false;
    }
    let key = alias_key(p, operands.first());
    let mut have: BTreeSet<String> = BTreeSet::new();
    for o in opts {
        have.extend(aliases(&key, &o).into_iter().map(String::from));
        have.insert(o);
    }
    if key == "git push" {
        for refspec in &operands[1..] {
            if refspec.starts_with('+') {
                have.insert("--force".into());
            }
            if refspec.starts_with(':') {
                have.insert("--delete".into());
            }
        }
    }
    rule.options.is_subset(&have)
        && rule.operands.iter().all(|r| {
            operands.iter().any(|o| match r.strip_suffix('=') {
                Some(_) => o.starts_with(r.as_str()),
                None => target(r) == target(o),
            })
        })
}

/// What an allow rule permits after its program and subcommands.
enum Operands {
    Paths,
    Any,
    None,
}

struct AllowRule<'a> {
    prefix: Vec<&'a str>,
    /// Allowed options, each with whether it takes a value.
    options: Vec<(String, bool)>,
    operands: Operands,
}

fn parse_allow(rule: &str) -> Option<AllowRule<'_>> {
    check_rule(rule).ok()?;
    let mut words: Vec<&str> = rule.split_whitespace().collect();
    let operands = match words.last() {
        Some(&"*") => Operands::Any,
        Some(&"$") => Operands::None,
        _ => Operands::Paths,
    };
    if !matches!(operands, Operands::Paths) {
        words.pop();
    }
    let n = words.iter().take_while(|w| !w.starts_with('-')).count();
    let mut options = Vec::new();
    for o in &words[n..] {
        let (name, valued) = o.strip_suffix('=').map_or((*o, false), |n| (n, true));
        match name.strip_prefix('-') {
            _ if name.contains('=') => return None,
            Some(long) if long.starts_with('-') => options.push((name.to_string(), valued)),
            Some(short) if valued && short.len() == 1 => options.push((name.to_string(), true)),
            Some(short) if !valued => {
                options.extend(short.chars().map(|c| (format!("-{c}"), false)))
            }
            _ => return None,
        }
    }
    Some(AllowRule {
        prefix: words[..n].to_vec(),
        options,
        operands,
    })
}

fn allows(rule: &AllowRule, words: &[String], worktree: &Path) -> bool {
    let word = |i: usize| words.get(i).map(String::as_str);
    if word(0) != Some(rule.prefix[0]) {
        return false;
    }
    let mut i = 1;
    // `--no-pager` only changes where output goes; every other git global option can redirect or
    // reconfigure git (`-c core.pager=…`, `-C /elsewhere`), so it is left to a person.
    while rule.prefix[0] == "git" && matches!(word(i), Some("--no-pager" | "-P")) {
        i += 1;
    }
    for sub in &rule.prefix[1..] {
        if word(i) != Some(sub) {
            return false;
        }
        i += 1;
    }
    if matches!(rule.operands, Operands::Any) {
        return true;
    }
    let has =
        |name: &str, valued: bool| rule.options.iter().any(|(n, v)| n == name && *v == valued);
    let (mut operands, mut ended) = (Vec::new(), false);
    while let Some(w) = word(i) {
        i += 1;
        if ended || w == "-" || !w.starts_with('-') {
            operands.push(w);
        } else if w == "--" {
            ended = true;
        } else if w.starts_with("--") {
            let (name, attached) = w.split_once('=').map_or((w, false), |(n, _)| (n, true));
            if !has(name, attached) {
                return false;
            }
        } else {
            let cluster: Vec<char> = w.chars().skip(1).collect();
            for (j, c) in cluster.iter().enumerate() {
                let name = format!("-{c}");
                if has(&name, true) {
                    // The value is the rest of the cluster, or else the next word.
                    if j + 1 == cluster.len() {
                        if word(i).is_none() {
                            return false;
                        }
                        i += 1;
                    }
                    break;
                }
                if !has(&name, false) {
                    return false;
                }
            }
        }
    }
    match rule.operands {
        Operands::None => operands.is_empty(),
        _ => operands.iter().all(|o| inside(worktree, o)),
    }
}

/// Whether a path operand, relative to the worktree, stays inside it. Components are resolved the way the
/// kernel does, following symlinks as long as the path exists, so `link/..` goes where the link points;
/// beyond the existing part the path is normalised lexically.
fn inside(worktree: &Path, operand: &str) -> bool {
    let real_root = worktree.canonicalize().ok();
    let root = real_root.clone().unwrap_or_else(|| {
        worktree.components().fold(PathBuf::new(), |mut p, c| {
            match c {
                Component::ParentDir => _ = p.pop(),
                Component::CurDir => {}
                c => p.push(c),
            }
            p
        })
    });
    let (mut cur, mut resolving) = (root.clone(), real_root.is_some());
    for comp in Path::new(operand).components() {
        match comp {
            Component::RootDir | Component::Prefix(_) => cur = PathBuf::from("/"),
            Component::CurDir => {}
            Component::ParentDir => _ = cur.pop(),
            Component::Normal(name) => {
                cur.push(name);
                if resolving {
                    match cur.canonicalize() {
                        Ok(real) => cur = real,
                        // A dangling symlink could be pointed anywhere later.
                        Err(_) if cur.symlink_metadata().is_ok() => return false,
                        Err(_) => resolving = false,
                    }
                }
            }
        }
    }
    cur.starts_with(&root)
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
        if tool == "Bash" {
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

#[cfg(test)]
mod tests;
