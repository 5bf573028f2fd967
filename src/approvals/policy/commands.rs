//! The commands a shell line runs, as the policy sees them: each simple command of a pipeline, list or
//! substitution, with wrappers (`env`, `sudo`, `bash -c` …) unwrapped, and its program's options normalised.

use crate::approvals::shell::{Lexed, lex};

/// Programs that run their operands as a command, with those of their options that take a separate value.
pub(super) const WRAPPERS: &[(&str, &str)] = &[
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
pub(super) const KEYWORDS: &[&str] = &[
    "!", "{", "if", "then", "elif", "else", "do", "while", "until",
];

/// Git's global options that take a separate value; they come before the subcommand.
pub(super) const GIT_VALUED: &str =
    "-C -c --git-dir --work-tree --namespace --config-env --super-prefix --attr-source";

/// Option spellings a deny rule treats as one: (program or `git <subcommand>`, spelling, meaning).
pub(super) const ALIASES: &[(&str, &str, &str)] = &[
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

/// One simple command with wrappers removed: the program's basename and its arguments (for git, after its
/// global options).
pub(super) struct Cmd {
    pub(super) program: String,
    pub(super) args: Vec<String>,
}

/// Every simple command of a command line, including those run through `bash -c`, `eval` and `"$(…)"`.
pub(super) fn commands(lexed: &Lexed) -> Vec<Cmd> {
    let mut out = Vec::new();
    collect(lexed, 0, &mut out);
    out
}

pub(super) fn collect(lexed: &Lexed, depth: usize, out: &mut Vec<Cmd>) {
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

pub(super) fn simple_command(words: &[String], depth: usize, out: &mut Vec<Cmd>) {
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
pub(super) fn shell_script(args: &[String]) -> Option<&str> {
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

pub(super) fn basename(w: &str) -> &str {
    w.rsplit('/').next().unwrap_or(w)
}

/// A `NAME=value` word before the program, which sets a variable rather than naming a program.
pub(super) fn is_assignment(w: &str) -> bool {
    w.split_once('=').is_some_and(|(n, _)| {
        n.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// Splits arguments into options (clusters split, `=value` dropped) and operands, honouring `--`.
pub(super) fn split_args<S: AsRef<str>>(words: &[S]) -> (Vec<String>, Vec<String>) {
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
pub(super) fn aliases(key: &str, opt: &str) -> Vec<&'static str> {
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

pub(super) fn alias_key(program: &str, first_operand: Option<&String>) -> String {
    match (program, first_operand) {
        ("git", Some(sub)) => format!("git {sub}"),
        _ => program.to_string(),
    }
}

/// A path word reduced to what it designates: `/`-rooted, `~`-rooted or relative, normalised lexically, with
/// a trailing `*` under the root or home standing for that directory.
pub(super) fn target(w: &str) -> String {
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
