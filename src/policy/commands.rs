//! The commands a shell line runs, as the policy sees them: each simple command of a pipeline, list or
//! substitution, with wrappers (`env`, `sudo`, `bash -c` …) unwrapped, and its program's options normalised.

use crate::policy::shell::{Lexed, lex};

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

/// Shells that run a script given with `-c`.
pub(super) const SHELLS: &[&str] = &["bash", "sh", "dash", "zsh", "ksh", "mksh", "ash"];

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

/// The index of a simple command's program: after variable assignments, keywords and wrappers with their
/// options (the length of `words` when there is none).
pub(super) fn program_index(words: &[String]) -> usize {
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
    i
}

pub(super) fn simple_command(words: &[String], depth: usize, out: &mut Vec<Cmd>) {
    let i = program_index(words);
    let Some(first) = words.get(i) else { return };
    let program = basename(first).to_string();
    let mut args = words[i + 1..].to_vec();
    match program.as_str() {
        p if SHELLS.contains(&p) => {
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

/// Whether a program runs code it is given as text (a shell, `eval`, `source`, a scripting language), so
/// that feeding it a pipe or a substitution runs whatever that produces.
pub(super) fn interpreter(program: &str) -> bool {
    SHELLS.contains(&program)
        || matches!(
            program,
            "fish"
                | "csh"
                | "tcsh"
                | "busybox"
                | "eval"
                | "source"
                | "."
                | "ruby"
                | "irb"
                | "node"
                | "nodejs"
                | "deno"
                | "bun"
                | "php"
                | "tclsh"
                | "wish"
                | "pwsh"
                | "powershell"
                | "osascript"
                | "Rscript"
        )
        || ["python", "pypy", "perl", "lua"]
            .iter()
            .any(|p| program.starts_with(p))
}

/// One part of a command line, for the people asked about it, in the order bash meets it; what a command
/// runs itself (`bash -c '…'`, `eval …`, `"$(…)"`) follows it, one level deeper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// 0 for the command line itself, 1 inside a script or substitution of it, and so on.
    pub depth: usize,
    pub kind: PartKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartKind {
    /// A simple command.
    Command {
        /// Its words as bash splits them, quotes removed, wrappers (`sudo`, `env X=1` …) kept.
        words: Vec<String>,
        /// Its program's basename behind the wrappers (empty when there is none).
        program: String,
        /// It reads the previous command's output through a pipe.
        piped: bool,
        /// Its program reaches the network (`curl`, `wget`, `ssh` …).
        network: bool,
        /// Its program runs code (a shell, `eval`, `python`, `perl` …) and gets text from a pipe, a process
        /// substitution or a command substitution in its arguments: that text may be what runs.
        runs_input: bool,
    },
    /// A redirection of the command before it (or of none, when it stands alone).
    Redirect { op: String, target: String },
}

/// Every part of a command line, as the policy parses it: each simple command and each redirection, with
/// the commands its scripts and substitutions run (as deep as the deny rules look).
pub fn parts(command: &str) -> Vec<Part> {
    let mut out = Vec::new();
    parts_of(&lex(command), 0, &mut out);
    out
}

fn parts_of(lexed: &Lexed, depth: usize, out: &mut Vec<Part>) {
    if depth > 4 {
        return;
    }
    let redirects = |out: &mut Vec<Part>, segment: Option<usize>| {
        for r in lexed.redirects.iter().filter(|r| r.segment == segment) {
            out.push(Part {
                depth,
                kind: PartKind::Redirect {
                    op: r.op.clone(),
                    target: r.target.clone(),
                },
            });
        }
    };
    // A substitution that is also a shell's script is shown once.
    let mut scripts: Vec<String> = Vec::new();
    let nested = |out: &mut Vec<Part>, scripts: &[String], at: &dyn Fn(usize) -> bool| {
        for (text, _) in lexed
            .nested
            .iter()
            .zip(&lexed.nested_at)
            .filter(|(t, a)| at(**a) && !scripts.contains(t))
        {
            parts_of(&lex(text), depth + 1, out);
        }
    };
    for (k, words) in lexed.segments.iter().enumerate() {
        let i = program_index(words);
        let program = words.get(i).map_or("", |w| basename(w)).to_string();
        let args = words.get(i + 1..).unwrap_or_default();
        let piped = lexed.piped.get(k).copied().unwrap_or(false);
        let substituted = lexed
            .redirects
            .iter()
            .any(|r| r.segment == Some(k) && r.op.ends_with("<("))
            || args
                .iter()
                .any(|a| a.contains("$(") || a.contains('`') || a.ends_with('$'));
        out.push(Part {
            depth,
            kind: PartKind::Command {
                words: words.clone(),
                network: super::NETWORK.contains(&program.as_str()),
                runs_input: interpreter(&program) && (piped || substituted),
                piped,
                program: program.clone(),
            },
        });
        redirects(out, Some(k));
        let script = match program.as_str() {
            p if SHELLS.contains(&p) => shell_script(args).map(str::to_string),
            "eval" => Some(args.join(" ")),
            _ => None,
        };
        if let Some(script) = script {
            parts_of(&lex(&script), depth + 1, out);
            scripts.push(script);
        }
        nested(out, &scripts, &|a| a == k);
    }
    redirects(out, None);
    let n = lexed.segments.len();
    nested(out, &scripts, &|a| a >= n);
}

/// Words as a person can read them back: plain words bare, others single-quoted.
pub fn quoted<S: AsRef<str>>(words: &[S]) -> String {
    words
        .iter()
        .map(|w| {
            let w = w.as_ref();
            let plain = !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-$*?[]{}~^".contains(c));
            if plain {
                w.to_string()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
