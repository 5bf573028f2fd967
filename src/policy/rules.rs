//! The rules of `approvals.auto_allow` and `approvals.auto_deny`: parsed once, then matched against each
//! command (a deny rule anywhere in the line wins; an allow rule must cover every command).

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use super::*;

pub(super) struct DenyRule {
    pub(super) program: String,
    pub(super) subs: Vec<String>,
    pub(super) options: BTreeSet<String>,
    pub(super) operands: Vec<String>,
}

pub(super) fn parse_deny(rule: &str) -> Option<DenyRule> {
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

pub(super) fn denies(rule: &DenyRule, cmd: &Cmd) -> bool {
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
pub(super) enum Operands {
    Paths,
    Any,
    None,
}

pub(super) struct AllowRule<'a> {
    pub(super) prefix: Vec<&'a str>,
    /// Allowed options, each with whether it takes a value.
    pub(super) options: Vec<(String, bool)>,
    pub(super) operands: Operands,
}

pub(super) fn parse_allow(rule: &str) -> Option<AllowRule<'_>> {
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

pub(super) fn allows(rule: &AllowRule, words: &[String], worktree: &Path) -> bool {
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
pub(super) fn inside(worktree: &Path, operand: &str) -> bool {
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
